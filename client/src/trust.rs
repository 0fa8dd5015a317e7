//! Trusting a self-signed appliance: certificate pinning by SHA-256 fingerprint.
//!
//! A keksbox makes its own certificate, so no CA vouches for it. What a person can check is
//! the fingerprint (printed on the box's console, on its start page, in its mDNS advert). A
//! native client therefore trusts a server in one of two ways ([`Trust`]):
//! - **pinned**: a fingerprint given by flag, environment or the mDNS TXT record; anything
//!   else is refused;
//! - **trust on first use**: the first fingerprint seen for `host:port` is remembered in the
//!   [`KnownServers`] store under the user's config directory; a later connection that
//!   presents another one is refused, loudly, with both fingerprints, like ssh does.
//!
//! Either way the [`PinnedVerifier`] still checks the handshake signatures with the
//! certificate's key, so pinning proves possession of the key, not just of a copy of the
//! certificate.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keks_proto::advert::Fingerprint;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// How a TLS server is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only this certificate.
    Pinned(Fingerprint),
    /// Whatever the store remembers for the server, or the first one seen.
    FirstUse(KnownServers),
}

/// What the verifier saw, read after the handshake to explain a refusal or to remember a
/// first-use fingerprint.
#[derive(Debug, Default)]
pub struct Observed {
    /// The fingerprint of the certificate the server presented.
    pub presented: Option<Fingerprint>,
}

/// A rustls verifier that accepts exactly one certificate (by fingerprint), or any when
/// `expected` is `None` (first use), and checks handshake signatures against it.
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
    /// Written during the handshake, read by the connecting code: rustls calls the verifier
    /// from inside the handshake, so this is how the presented fingerprint gets out.
    observed: Arc<Mutex<Observed>>,
}

impl PinnedVerifier {
    /// A verifier for `expected` (`None`: accept and record any certificate).
    pub fn new(expected: Option<Fingerprint>, observed: Arc<Mutex<Observed>>) -> Self {
        PinnedVerifier {
            expected,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            observed,
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity.as_ref());
        if let Ok(mut observed) = self.observed.lock() {
            observed.presented = Some(presented);
        }
        match self.expected {
            Some(expected) if expected != presented => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client config that trusts exactly `expected` (or anything, recording it).
pub fn client_config(expected: Option<Fingerprint>, observed: Arc<Mutex<Observed>>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions; this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(expected, observed)))
        .with_no_client_auth()
}

/// Why the known-servers store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("known servers file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A line that is not `host:port FINGERPRINT`.
    #[error("known servers file {path}, line {line}: not \"host:port fingerprint\" (fix or delete the line)")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// The trust-on-first-use store: one `host:port FINGERPRINT` line per server, like ssh's
/// `known_hosts`. Lines starting with `#` are comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    /// The store at `path` (it need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        KnownServers { path: path.into() }
    }

    /// The user's store: `$KEKSBOX_KNOWN_SERVERS`, else
    /// `$XDG_CONFIG_HOME/keksbox/known_servers`, else `~/.config/keksbox/known_servers`.
    pub fn user() -> Option<Self> {
        if let Some(p) = std::env::var_os("KEKSBOX_KNOWN_SERVERS") {
            return Some(Self::at(p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(Self::at(base.join("keksbox").join("known_servers")))
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry.
    pub fn load(&self) -> Result<BTreeMap<String, Fingerprint>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut out = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = || StoreError::Syntax {
                path: self.path.clone(),
                line: i + 1,
            };
            let (server, fp) = line.split_once(char::is_whitespace).ok_or_else(syntax)?;
            out.insert(server.to_owned(), fp.parse().map_err(|_| syntax())?);
        }
        Ok(out)
    }

    /// The fingerprint remembered for `authority` (`host:port`).
    pub fn lookup(&self, authority: &str) -> Result<Option<Fingerprint>, StoreError> {
        Ok(self.load()?.get(authority).copied())
    }

    /// Remembers `fingerprint` for `authority`, replacing an older entry. Written to a
    /// temporary file and renamed, so a crash leaves the old store or the new one.
    pub fn remember(&self, authority: &str, fingerprint: Fingerprint) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut entries = self.load()?;
        entries.insert(authority.to_owned(), fingerprint);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // A temporary name of this writer's own: two rifts trusting the same box at once
        // must not rename each other's file away.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        let mut text = String::from("# keksbox servers trusted on first use: host:port SHA-256 fingerprint\n");
        for (server, fp) in &entries {
            text.push_str(&format!("{server} {fp}\n"));
        }
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = KnownServers::at(dir.path().join("sub/known_servers"));
        assert_eq!(store.lookup("a:443").unwrap(), None);
        store.remember("a:443", Fingerprint::from_bytes([1; 32])).unwrap();
        store.remember("[::1]:8443", Fingerprint::from_bytes([2; 32])).unwrap();
        store.remember("a:443", Fingerprint::from_bytes([3; 32])).unwrap();
        assert_eq!(store.lookup("a:443").unwrap(), Some(Fingerprint::from_bytes([3; 32])));
        assert_eq!(
            store.lookup("[::1]:8443").unwrap(),
            Some(Fingerprint::from_bytes([2; 32]))
        );
        assert_eq!(store.load().unwrap().len(), 2);
    }

    #[test]
    fn writers_at_the_same_time_do_not_fail_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = KnownServers::at(dir.path().join("known"));
        let fp = Fingerprint::from_bytes([7; 32]);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || store.remember(&format!("box{i}:8443"), fp))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        // Each wrote a whole file (the last one wins; none failed or left a torn store).
        assert!(!store.load().unwrap().is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files are left behind");
    }

    #[test]
    fn store_reports_a_bad_line_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known");
        std::fs::write(&path, "# comment\n\nhost:1 nonsense\n").unwrap();
        match KnownServers::at(&path).load() {
            Err(StoreError::Syntax { line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
