//! The `[tls]` section of the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::TlsError;
use super::names::normalize;

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
    /// Put the box's LAN addresses into the generated certificate (loopback is always in).
    /// Off by default: an address that changes would change the fingerprint.
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
            include_ip_addresses: false,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tls_config_rejects_unknown_keys() {
        let err = toml::from_str::<TlsConfig>("enabeld = true").unwrap_err();
        assert!(err.to_string().contains("enabeld"), "{err}");
        let cfg: TlsConfig = toml::from_str("enabled = false").unwrap();
        assert!(!cfg.enabled);
        assert_eq!(cfg.handshake_timeout_secs, 10);
    }
}
