//! TLS for the appliance: the certificate, its fingerprint, and the rustls server config.
//!
//! Browsers give camera and microphone only to a secure context, so the box serves HTTPS even
//! on a LAN without a public name. On first start it makes a self-signed ECDSA P-256
//! certificate whose names cover what a person types: the mDNS host name (`keksbox.local`),
//! the system host name with `.local`, `localhost` and the loopback addresses, plus the
//! box's LAN addresses only when `tls.include_ip_addresses` asks for them. Names, not
//! addresses, by default: a new DHCP lease must not change the fingerprint.
//!
//! A person accepts the certificate once after comparing its SHA-256 fingerprint (printed at
//! start and shown on the start page) with what the browser shows, so it must stay the same:
//! it is reused on every start and only made anew when asked (`keksbox regenerate-cert`), when
//! a name it must cover is missing from it, or when the stored set is unusable (truncated by a
//! power cut, partly missing, a symlink, in a directory others could write): then the old
//! files are moved aside into `tls/broken-<time>/` and the new fingerprint is logged as an
//! error, so the box comes back instead of failing at every start. A certificate and key
//! configured by the user (`tls.cert_file`, `tls.key_file`) replace the generated one, and a
//! problem with those stays a hard error: keksbox never replaces what a person chose.
//!
//! # Parts
//! - [`config`]: the `[tls]` section ([`TlsConfig`]).
//! - [`error`]: [`TlsError`] and the "what to do" [`Hint`].
//! - [`names`]: [`CertNames`], the name policy; [`probe`]: the host name and addresses.
//! - [`identity`]: [`Identity`] (certificate, key, fingerprint, where from) and the rustls
//!   config; [`store`]: the generated files in `<state dir>/tls/`, written atomically and
//!   synced, read without following symlinks.
//! - [`acceptor`]: [`Acceptor`], the handshake with a deadline.
//!
//! Data flow: [`CertNames::required`] → [`Identity::load`] (read, or generate and store) →
//! [`Identity::acceptor`] (rustls `ServerConfig`, TLS 1.2 and 1.3 only, handshake timeout).

pub mod acceptor;
pub mod config;
pub mod error;
pub mod identity;
pub mod names;
pub mod probe;
mod store;

pub use acceptor::{Acceptor, HandshakeError};
pub use config::TlsConfig;
pub use error::{Hint, TlsError};
pub use identity::{CertSource, Identity, Regenerate};
pub use keks_proto::advert::Fingerprint;
pub use names::CertNames;
pub use probe::{local_ip_addresses, system_hostname};
