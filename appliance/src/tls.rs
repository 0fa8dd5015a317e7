//! TLS for the appliance: the certificate, its fingerprint, and the rustls server config.
//!
//! Browsers give camera and microphone only to a secure context, so the box serves HTTPS even
//! on a LAN without a public name. On first start it makes a self-signed ECDSA P-256
//! certificate whose names cover everything a person may type: the mDNS host name
//! (`keksbox.local`), the system host name with `.local`, `localhost`, and the box's IP
//! addresses. Certificate, key and the list of names it was made for live in
//! `<state dir>/tls/`; the key is readable by its owner only.
//!
//! A person accepts the certificate once after comparing its SHA-256 fingerprint (printed at
//! start and shown on the start page) with what the browser shows, so it must stay the same:
//! it is reused on every start and only made anew when asked (`keksbox regenerate-cert`) or
//! when a name it must cover is missing from it (a new host name, a new address), which is
//! logged with the new fingerprint. A certificate and key configured by the user (`tls.cert_file`
//! and `tls.key_file`) replace the generated one.
//!
//! Data flow: [`CertNames::required`] → [`Identity::load`] (read, or generate and store) →
//! [`Identity::acceptor`] (rustls `ServerConfig`, TLS 1.2 and 1.3 only, handshake timeout).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

pub use keks_proto::advert::Fingerprint;

/// The `[tls]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve HTTPS. `false` serves plain HTTP, for a reverse proxy in front and for tests.
    pub enabled: bool,
    /// Run a plain-HTTP listener that redirects every request to HTTPS (only with TLS on).
    pub redirect: bool,
    /// Where that listener binds.
    pub redirect_bind: SocketAddr,
    /// A certificate chain (PEM, leaf first) to use instead of the generated one.
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// More DNS names or IP addresses the generated certificate must cover.
    pub extra_names: Vec<String>,
    /// Put the box's current IP addresses into the generated certificate.
    pub include_ip_addresses: bool,
    /// A client that has not finished its TLS handshake after this many seconds is dropped.
    pub handshake_timeout_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redirect: true,
            redirect_bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cert_file: None,
            key_file: None,
            extra_names: Vec::new(),
            include_ip_addresses: true,
            handshake_timeout_secs: 10,
        }
    }
}

impl TlsConfig {
    /// `handshake_timeout_secs` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// Checks what can be checked without touching files: the user certificate is configured
    /// completely or not at all, and every extra name can go into a certificate.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::HalfConfigured);
        }
        for name in &self.extra_names {
            normalize(name)?;
        }
        Ok(())
    }
}

/// Why the certificate could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The state directory cannot be created or is not a directory.
    #[error(
        "cannot use state directory {path}: {reason} (pass --state-dir DIR or set $STATE_DIRECTORY to a writable directory)"
    )]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}{hint}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
        /// What to do about it.
        hint: Hint,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path} holds no usable {what}: {detail}{hint}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// What the parser said.
        detail: String,
        /// What to do about it.
        hint: Hint,
    },
    /// Only one of `tls.cert_file` and `tls.key_file` is set.
    #[error("tls.cert_file and tls.key_file must be set together (or neither, to use the generated certificate)")]
    HalfConfigured,
    /// A name for the certificate is neither a DNS name nor an IP address.
    #[error("{name:?} cannot go into a certificate: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// rcgen could not make the certificate.
    #[error("cannot generate the TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the certificate or key (for example, they do not belong together).
    #[error("cannot use the certificate and key from {source_desc}: {error}{hint}")]
    Rustls {
        /// Where they came from.
        source_desc: String,
        /// What rustls said.
        error: rustls::Error,
        /// What to do about it.
        hint: Hint,
    },
}

/// The "what to do" part of an error message, which depends on where the file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// A file the user configured.
    UserFile,
    /// A file keksbox generated in its state directory.
    Generated,
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hint::UserFile => f.write_str(" (check tls.cert_file and tls.key_file in the config)"),
            Hint::Generated => f.write_str(
                " (run `keksbox regenerate-cert` to make a new certificate; browsers will then show a new fingerprint)",
            ),
        }
    }
}

/// The names (DNS names and IP addresses) a certificate covers, normalised: DNS names lower
/// case without a trailing dot, IP addresses in their canonical text form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames(BTreeSet<String>);

impl CertNames {
    /// The names the generated certificate must cover on this box.
    ///
    /// `mdns_host` is the announced host name (`keksbox.local`), `system_host` the kernel's host
    /// name (gets `.local` appended when it has no dot; skipped when it is not a valid DNS
    /// name, since it is not under our control), `ips` the box's addresses, `extra` the
    /// configured `tls.extra_names` (an invalid one is an error).
    pub fn required(
        mdns_host: &str,
        system_host: Option<&str>,
        ips: &[IpAddr],
        extra: &[String],
    ) -> Result<Self, TlsError> {
        let mut names = BTreeSet::new();
        names.insert(normalize(mdns_host)?);
        names.insert("localhost".to_owned());
        if let Some(host) = system_host {
            // avahi and systemd-resolved announce the first label of the host name under
            // .local; a fully qualified host name is covered as it is, too.
            let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
            let short = host.split('.').next().unwrap_or_default();
            let candidates = [
                Some(format!("{short}.local")),
                host.contains('.').then_some(host.clone()),
            ];
            for candidate in candidates.into_iter().flatten() {
                match normalize(&candidate) {
                    Ok(name) if host_is_useful(&name) => {
                        names.insert(name);
                    }
                    Ok(_) => {}
                    Err(e) => log::debug!("system host name left out of the certificate: {e}"),
                }
            }
        }
        names.extend(ips.iter().map(|ip| ip.to_string()));
        for name in extra {
            names.insert(normalize(name)?);
        }
        Ok(Self(names))
    }

    /// Whether every name in `other` is covered by `self`.
    pub fn covers(&self, other: &CertNames) -> bool {
        other.0.is_subset(&self.0)
    }

    /// The names in `self` that `other` lacks.
    pub fn missing_from<'a>(&'a self, other: &CertNames) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|n| !other.0.contains(*n))
            .map(String::as_str)
            .collect()
    }

    /// Whether the certificate covers this name (normalised first).
    pub fn contains(&self, name: &str) -> bool {
        normalize(name).is_ok_and(|n| self.0.contains(&n))
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Parses the `names` file written next to a generated certificate: one name a line.
    fn parse(text: &str) -> Result<Self, TlsError> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(normalize)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn render(&self) -> String {
        let mut out = String::from("# Names the generated certificate covers; written by keksbox.\n");
        for name in &self.0 {
            out.push_str(name);
            out.push('\n');
        }
        out
    }
}

/// The kernel's host name, if it has one worth putting into the certificate.
pub fn system_hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The box's IP addresses that a browser can put in a URL: every interface address except
/// IPv6 link-local ones (they need a zone id, which browsers do not accept).
pub fn local_ip_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            log::warn!("cannot list network interfaces, the certificate covers loopback only: {e}");
            Vec::new()
        }
    };
    ips.retain(|ip| match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(_) => true,
    });
    ips.extend([
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]);
    ips.sort();
    ips.dedup();
    ips
}

/// Where the certificate in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Generated by keksbox and stored in this directory.
    Generated(PathBuf),
    /// Configured by the user.
    User {
        /// `tls.cert_file`.
        cert: PathBuf,
        /// `tls.key_file`.
        key: PathBuf,
    },
}

impl fmt::Display for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSource::Generated(dir) => write!(f, "generated certificate in {}", dir.display()),
            CertSource::User { cert, key } => {
                write!(f, "configured certificate {} (key {})", cert.display(), key.display())
            }
        }
    }
}

/// A certificate chain with its key: what the HTTPS listener presents.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
    source: CertSource,
}

impl fmt::Debug for Identity {
    // The key stays out of debug output (and so out of logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What [`Identity::load`] should do with a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regenerate {
    /// Reuse it unless a required name is missing from it.
    IfNamesChanged,
    /// Make a new one (`keksbox regenerate-cert`).
    Always,
}

impl Identity {
    /// The user's certificate when configured, otherwise the generated one from
    /// `<state_dir>/tls/`, made first when there is none (or when `regenerate` says so).
    pub fn load(
        config: &TlsConfig,
        state_dir: &Path,
        required: &CertNames,
        regenerate: Regenerate,
    ) -> Result<Self, TlsError> {
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Self::from_user_files(cert, key),
            (None, None) => Self::generated(state_dir, required, regenerate),
            _ => Err(TlsError::HalfConfigured),
        }
    }

    /// The SHA-256 fingerprint of the leaf certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Where the certificate came from.
    pub fn source(&self) -> &CertSource {
        &self.source
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// A rustls server config for this identity: TLS 1.3 and 1.2 only, HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let hint = match self.source {
            CertSource::Generated(_) => Hint::Generated,
            CertSource::User { .. } => Hint::UserFile,
        };
        let rustls_err = |error| TlsError::Rustls {
            source_desc: self.source.to_string(),
            error,
            hint,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(rustls_err)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(rustls_err)?;
        // The relay speaks HTTP/1.1 only (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// An acceptor that drops handshakes taking longer than `handshake_timeout`.
    pub fn acceptor(&self, handshake_timeout: Duration) -> Result<Acceptor, TlsError> {
        Ok(Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(self.server_config()?),
            handshake_timeout,
            fingerprint: self.fingerprint,
        })
    }

    fn from_user_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let chain = read_chain(cert_path, Hint::UserFile)?;
        let key = read_key(key_path, Hint::UserFile)?;
        let identity = Self::new(
            chain,
            key,
            CertSource::User {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            },
        );
        // Catch a key that does not belong to the certificate now, with the file names.
        identity.server_config()?;
        Ok(identity)
    }

    fn generated(state_dir: &Path, required: &CertNames, regenerate: Regenerate) -> Result<Self, TlsError> {
        let store = Store::open(state_dir)?;
        let present = [&store.cert, &store.key, &store.names].map(|p| p.exists());
        let why = match (regenerate, present) {
            (Regenerate::Always, _) => Some("regeneration was asked for".to_owned()),
            (_, [false, false, false]) => None,
            (_, [true, true, true]) => {
                let stored = CertNames::parse(&read_text(&store.names, Hint::Generated)?)?;
                if stored.covers(required) {
                    let identity = store.load()?;
                    log::debug!("reusing {}", identity.source);
                    return Ok(identity);
                }
                Some(format!(
                    "it does not cover {}",
                    required.missing_from(&stored).join(", ")
                ))
            }
            _ => {
                let missing: Vec<String> = [&store.cert, &store.key, &store.names]
                    .iter()
                    .zip(present)
                    .filter(|(_, p)| !p)
                    .map(|(path, _)| path.display().to_string())
                    .collect();
                return Err(TlsError::Read {
                    path: PathBuf::from(missing.join(", ")),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "missing while the other certificate files exist",
                    ),
                    hint: Hint::Generated,
                });
            }
        };
        let identity = store.generate(required)?;
        match why {
            Some(why) => log::warn!(
                "made a new TLS certificate because {why}; its fingerprint is now SHA-256 {} (browsers will ask to accept it again)",
                identity.fingerprint
            ),
            None => log::info!(
                "made a TLS certificate for {} in {}",
                required.iter().collect::<Vec<_>>().join(", "),
                store.dir.display()
            ),
        }
        Ok(identity)
    }

    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, source: CertSource) -> Self {
        // read_chain never returns an empty chain; the fallback only keeps this total.
        let fingerprint = chain
            .first()
            .map_or(Fingerprint::from_bytes([0; 32]), |c| Fingerprint::of_der(c.as_ref()));
        Self {
            chain,
            key,
            fingerprint,
            source,
        }
    }
}

/// Accepts TLS connections with a deadline on the handshake.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    /// A client that opens a TCP connection and never finishes the handshake would hold a
    /// task and a socket forever without it.
    handshake_timeout: Duration,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The client did not finish in time.
    #[error("TLS handshake not finished after {0:?}")]
    Timeout(Duration),
    /// The client sent something that is not TLS, or an alert, or went away.
    #[error("TLS handshake failed: {0}")]
    Io(#[from] io::Error),
}

impl Acceptor {
    /// The fingerprint of the certificate this acceptor presents.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Runs the server side of the handshake on `io`.
    pub async fn accept<IO>(&self, io: IO) -> Result<tokio_rustls::server::TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_timeout, self.inner.accept(io)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(HandshakeError::Timeout(self.handshake_timeout)),
        }
    }
}

/// The files of the generated certificate in `<state dir>/tls/`.
struct Store {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    names: PathBuf,
}

impl Store {
    fn open(state_dir: &Path) -> Result<Self, TlsError> {
        let state_err = |reason: String| TlsError::StateDir {
            path: state_dir.to_owned(),
            reason,
        };
        match fs::metadata(state_dir) {
            Ok(meta) if !meta.is_dir() => return Err(state_err("it is not a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(state_dir).map_err(|e| state_err(format!("cannot create it: {e}")))?;
            }
            Err(e) => return Err(state_err(e.to_string())),
        }
        let dir = state_dir.join("tls");
        match fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(TlsError::StateDir {
                    path: dir,
                    reason: "it is not a directory".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| state_err(format!("cannot create {}: {e}", dir.display())))?;
            }
            Err(e) => return Err(state_err(format!("{}: {e}", dir.display()))),
        }
        Ok(Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            names: dir.join("names"),
            dir,
        })
    }

    fn load(&self) -> Result<Identity, TlsError> {
        let chain = read_chain(&self.cert, Hint::Generated)?;
        let key = read_key(&self.key, Hint::Generated)?;
        restrict_key_mode(&self.key)?;
        let identity = Identity::new(chain, key, CertSource::Generated(self.dir.clone()));
        identity.server_config()?;
        Ok(identity)
    }

    fn generate(&self, names: &CertNames) -> Result<Identity, TlsError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names.iter().map(str::to_owned).collect::<Vec<_>>())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "keksbox");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "keksbox appliance");
        let cert = params.self_signed(&key_pair)?;
        // Key first: a crash part-way leaves a set that `generated` reports as incomplete
        // rather than a certificate without its key silently in use.
        write_atomically(&self.key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        write_atomically(&self.cert, cert.pem().as_bytes(), 0o644)?;
        write_atomically(&self.names, names.render().as_bytes(), 0o644)?;
        let key = PrivateKeyDer::try_from(key_pair.serialize_der()).map_err(|detail| TlsError::BadPem {
            path: self.key.clone(),
            what: "private key",
            detail: detail.to_owned(),
            hint: Hint::Generated,
        })?;
        Ok(Identity::new(
            vec![cert.der().clone()],
            key,
            CertSource::Generated(self.dir.clone()),
        ))
    }
}

fn read_text(path: &Path, hint: Hint) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
        hint,
    })
}

fn read_chain(path: &Path, hint: Hint) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_text(path, hint)?;
    let bad = |detail: String| TlsError::BadPem {
        path: path.to_owned(),
        what: "certificate",
        detail,
        hint,
    };
    let chain = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no \"BEGIN CERTIFICATE\" section found".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path, hint: Hint) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_text(path, hint)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| TlsError::BadPem {
        path: path.to_owned(),
        what: "private key",
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no \"BEGIN ... PRIVATE KEY\" section found".into(),
            e => e.to_string(),
        },
        hint,
    })
}

/// A generated key must stay readable by its owner only; fix it if someone widened it.
fn restrict_key_mode(path: &Path) -> Result<(), TlsError> {
    let meta = fs::metadata(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
        hint: Hint::Generated,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!("{} had mode {mode:03o}; setting it to 600", path.display());
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Writes `path` through a temporary file and a rename, so a crash never leaves half a file,
/// with `mode` set at creation (a key is never readable by others, not even for a moment).
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    // A leftover from a crash may have another mode; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(write_err(e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(contents).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(write_err)
}

/// Lower-cases a DNS name, drops a trailing dot, and checks it (or parses an IP address).
fn normalize(name: &str) -> Result<String, TlsError> {
    let bad = |reason| TlsError::BadName {
        name: name.to_owned(),
        reason,
    };
    let trimmed = name.trim();
    if let Ok(ip) = trimmed.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let dns = trimmed.trim_end_matches('.').to_ascii_lowercase();
    if dns.is_empty() {
        return Err(bad("it is empty"));
    }
    if dns.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    for label in dns.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated part must have 1 to 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a part may not start or end with '-'"));
        }
    }
    Ok(dns)
}

/// A system host name like "localhost" or "(none)" adds nothing to the certificate.
fn host_is_useful(name: &str) -> bool {
    !matches!(name, "localhost.local" | "localhost" | "localhost.localdomain")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn normalize_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("keksbox.local", Some("keksbox.local")),
            ("KeksBox.Local.", Some("keksbox.local")),
            ("10.0.0.1", Some("10.0.0.1")),
            ("[::1]", Some("::1")),
            ("fd00:0:0::1", Some("fd00::1")),
            ("", None),
            ("a..b", None),
            ("bad_name.local", None),
            ("-x.local", None),
            ("room 2.local", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).ok().as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn required_names_cover_mdns_host_system_host_localhost_and_ips() {
        let ips = [IpAddr::from([10, 77, 0, 1]), IpAddr::from([127, 0, 0, 1])];
        let names = CertNames::required("keksbox.local", Some("pi4\n"), &ips, &["room2.lan".into()]).unwrap();
        let all: Vec<&str> = names.iter().collect();
        assert_eq!(
            all,
            [
                "10.77.0.1",
                "127.0.0.1",
                "keksbox.local",
                "localhost",
                "pi4.local",
                "room2.lan"
            ]
        );
    }

    #[test]
    fn a_qualified_system_host_name_is_covered_with_and_without_its_domain() {
        let names = CertNames::required("keksbox.local", Some("pi4.example.org"), &[], &[]).unwrap();
        assert!(
            names.contains("pi4.local") && names.contains("pi4.example.org"),
            "{names:?}"
        );
    }

    #[test]
    fn system_host_that_is_not_a_dns_name_is_left_out() {
        let names = CertNames::required("keksbox.local", Some("my_box"), &[], &[]).unwrap();
        assert!(!names.iter().any(|n| n.contains("my_box")));
        let names = CertNames::required("keksbox.local", Some("localhost"), &[], &[]).unwrap();
        assert_eq!(names.iter().collect::<Vec<_>>(), ["keksbox.local", "localhost"]);
    }

    #[test]
    fn bad_extra_name_is_an_error_naming_it() {
        let err = CertNames::required("keksbox.local", None, &[], &["no way".into()]).unwrap_err();
        assert!(err.to_string().contains("\"no way\""), "{err}");
    }

    #[test]
    fn names_file_round_trips_and_coverage_is_a_subset_check() {
        let a = CertNames::required("keksbox.local", None, &[IpAddr::from([10, 0, 0, 1])], &[]).unwrap();
        let parsed = CertNames::parse(&a.render()).unwrap();
        assert_eq!(parsed, a);
        let b = CertNames::required("keksbox.local", None, &[], &[]).unwrap();
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert_eq!(a.missing_from(&b), ["10.0.0.1"]);
    }

    #[test]
    fn tls_config_rejects_unknown_keys() {
        let err = toml::from_str::<TlsConfig>("enabeld = true").unwrap_err();
        assert!(err.to_string().contains("enabeld"), "{err}");
        let cfg: TlsConfig = toml::from_str("enabled = false").unwrap();
        assert!(!cfg.enabled);
        assert_eq!(cfg.handshake_timeout_secs, 10);
    }
}
