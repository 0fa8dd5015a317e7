//! What a keksbox tells native clients about itself, and what they check it against: the
//! certificate [`Fingerprint`], the `_keksmeet._tcp` DNS-SD TXT record ([`ServiceTxt`]), the
//! signaling path and the keep-alive interval. The appliance writes these; `keks-client`
//! reads them. Nothing here does I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The DNS-SD service type native clients browse for.
pub const KEKSMEET_SERVICE: &str = "_keksmeet._tcp.local.";
/// Where the signaling WebSocket lives (the `path` TXT key; keks-meet uses the same path).
pub const SIGNALING_PATH: &str = "/signaling";
/// How often a client sends `{"ping":null}` so idle proxies keep the socket open.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// The SHA-256 fingerprint of a certificate (DER), as browsers show it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// A fingerprint from its 32 digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Upper-case hex pairs joined by colons, as Firefox and Chromium show it.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint or TXT record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertError {
    /// Not 32 bytes of hex (colons, spaces and a `sha-256` prefix are allowed).
    #[error("{0:?} is not a SHA-256 fingerprint (expected 64 hex digits, colons allowed, as the start page shows it)")]
    BadFingerprint(String),
    /// The `fp` TXT value names a digest other than SHA-256.
    #[error("unsupported fingerprint algorithm {0:?} (only sha-256 is known)")]
    UnknownAlgorithm(String),
    /// A TXT key that must be there is missing.
    #[error("the TXT record has no {0:?} key")]
    Missing(&'static str),
    /// A TXT value that could not be parsed.
    #[error("TXT key {key:?} has the unusable value {value:?}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
    },
}

/// Accepts `AB:CD:...` (what browsers show), plain hex in either case, and an optional
/// `sha-256 ` / `sha256:` prefix, so a fingerprint can be pasted from anywhere.
impl FromStr for Fingerprint {
    type Err = AdvertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let lower = trimmed.to_ascii_lowercase();
        let body = ["sha-256 ", "sha-256:", "sha256:", "sha256 "]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
            .unwrap_or(&lower);
        let hex: String = body.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        let bad = || AdvertError::BadFingerprint(s.to_owned());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// The TXT record of a `_keksmeet._tcp` service: `proto=1 path=/signaling tls=1
/// fp=sha-256 AB:CD:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTxt {
    /// The protocol version ([`crate::PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// The signaling WebSocket's path.
    pub path: String,
    /// Whether the port speaks TLS.
    pub tls: bool,
    /// The certificate's fingerprint, when TLS is on.
    pub fingerprint: Option<Fingerprint>,
}

impl ServiceTxt {
    /// The record this build of the appliance announces.
    pub fn current(tls: bool, fingerprint: Option<Fingerprint>) -> Self {
        ServiceTxt {
            protocol: crate::PROTOCOL_VERSION,
            path: SIGNALING_PATH.to_owned(),
            tls,
            fingerprint: fingerprint.filter(|_| tls),
        }
    }

    /// The key/value pairs, in the order they are announced.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("proto", self.protocol.to_string()),
            ("path", self.path.clone()),
            ("tls", if self.tls { "1" } else { "0" }.to_owned()),
        ];
        if let Some(fp) = self.fingerprint.filter(|_| self.tls) {
            pairs.push(("fp", format!("sha-256 {fp}")));
        }
        pairs
    }

    /// Reads a record through `get` (a TXT lookup by key). `proto` is required; a missing
    /// `path` means [`SIGNALING_PATH`] and a missing `tls` means no TLS. An `fp` that cannot
    /// be read is an error, not ignored: a client must not connect unpinned because an
    /// advert was garbled.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AdvertError> {
        let proto = get("proto").ok_or(AdvertError::Missing("proto"))?;
        let protocol = proto.trim().parse().map_err(|_| AdvertError::BadValue {
            key: "proto",
            value: proto.to_owned(),
        })?;
        let path = get("path").unwrap_or(SIGNALING_PATH);
        if !path.starts_with('/') {
            return Err(AdvertError::BadValue {
                key: "path",
                value: path.to_owned(),
            });
        }
        let tls = match get("tls").map(str::trim) {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(AdvertError::BadValue {
                    key: "tls",
                    value: other.to_owned(),
                });
            }
        };
        let fingerprint = match get("fp") {
            None => None,
            Some(fp) => {
                let (algo, digest) = fp.trim().split_once(' ').unwrap_or(("sha-256", fp));
                if !algo.eq_ignore_ascii_case("sha-256") {
                    return Err(AdvertError::UnknownAlgorithm(algo.to_owned()));
                }
                Some(digest.parse()?)
            }
        };
        Ok(ServiceTxt {
            protocol,
            path: path.to_owned(),
            tls,
            fingerprint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_display_is_colon_separated_upper_hex() {
        let fp = Fingerprint([0xab; 32]);
        let s = fp.to_string();
        assert_eq!(s.len(), 32 * 3 - 1);
        assert!(s.starts_with("AB:AB:"));
        assert_eq!(s.parse::<Fingerprint>(), Ok(fp));
    }

    #[test]
    fn fingerprint_parses_the_forms_people_paste() {
        let fp = Fingerprint::of_der(b"certificate");
        let plain = hex::encode(fp.as_bytes());
        for text in [
            fp.to_string(),
            fp.to_string().to_lowercase(),
            plain.clone(),
            plain.to_uppercase(),
            format!("sha-256 {fp}"),
            format!("SHA256:{plain}"),
            format!("  {fp}\n"),
        ] {
            assert_eq!(text.parse::<Fingerprint>(), Ok(fp), "{text:?}");
        }
    }

    #[test]
    fn fingerprint_rejects_garbage() {
        for text in ["", "AB:CD", &"zz".repeat(32), &"ab".repeat(33), &"é".repeat(32)] {
            assert!(
                matches!(text.parse::<Fingerprint>(), Err(AdvertError::BadFingerprint(_))),
                "{text:?}"
            );
        }
    }

    fn lookup<'a>(pairs: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn txt_round_trips() {
        let txt = ServiceTxt::current(true, Some(Fingerprint([7; 32])));
        let pairs = txt.to_pairs();
        assert_eq!(pairs[0], ("proto", crate::PROTOCOL_VERSION.to_string()));
        assert_eq!(ServiceTxt::from_lookup(lookup(&pairs)), Ok(txt));
        let plain = ServiceTxt::current(false, Some(Fingerprint([7; 32])));
        assert!(
            plain.to_pairs().iter().all(|(k, _)| *k != "fp"),
            "no fingerprint without TLS"
        );
        assert_eq!(ServiceTxt::from_lookup(lookup(&plain.to_pairs())), Ok(plain));
    }

    #[test]
    fn txt_refuses_what_it_cannot_trust() {
        let with = |k: &'static str, v: &str| {
            let mut pairs = ServiceTxt::current(true, Some(Fingerprint([1; 32]))).to_pairs();
            pairs.retain(|(key, _)| *key != k);
            pairs.push((k, v.to_owned()));
            ServiceTxt::from_lookup(lookup(&pairs))
        };
        assert!(matches!(
            with("fp", "sha-1 AB:CD"),
            Err(AdvertError::UnknownAlgorithm(_))
        ));
        assert!(matches!(
            with("fp", "sha-256 nope"),
            Err(AdvertError::BadFingerprint(_))
        ));
        assert!(matches!(
            with("tls", "yes"),
            Err(AdvertError::BadValue { key: "tls", .. })
        ));
        assert!(matches!(
            with("proto", "x"),
            Err(AdvertError::BadValue { key: "proto", .. })
        ));
        assert!(matches!(
            with("path", "signaling"),
            Err(AdvertError::BadValue { key: "path", .. })
        ));
        assert_eq!(ServiceTxt::from_lookup(|_| None), Err(AdvertError::Missing("proto")));
    }
}
