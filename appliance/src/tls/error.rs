//! Why a certificate could not be loaded, made or used, and what a person should do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
    /// The state directory belongs to another user, so keksbox cannot trust or fix it.
    #[error("{path} belongs to uid {owner}, but keksbox runs as uid {uid}: give it to that user (chown) or remove it")]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Who keksbox runs as.
        uid: u32,
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
