//! Opening a byte stream to a [`Server`]: TCP, then TLS with the [`Trust`] policy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keks_proto::advert::Fingerprint;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::server::Server;
use crate::trust::{Observed, StoreError, Trust, client_config};

/// A plain or TLS stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a TCP connect plus TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed (nothing listening, unreachable, name not resolved).
    #[error("cannot connect to {server}: {source} (is the server running and the address right?)")]
    Tcp {
        /// The server.
        server: String,
        /// The error.
        source: std::io::Error,
    },
    /// Connect or handshake took too long.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The server presented a certificate other than the pinned one. Not retried.
    #[error(
        "REFUSED: {server} presented a certificate with fingerprint {presented}, but {expected} was expected{hint}. \
         Someone may be impersonating the server; if the box really got a new certificate, compare the fingerprint \
         on its console or start page and then pin the new one"
    )]
    FingerprintMismatch {
        /// The server.
        server: String,
        /// What it presented.
        presented: Fingerprint,
        /// What we trusted.
        expected: Fingerprint,
        /// Where the expectation came from.
        hint: String,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS with {server} failed: {source}")]
    Tls {
        /// The server.
        server: String,
        /// The error.
        source: std::io::Error,
    },
    /// The known-servers store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host is not a valid TLS server name.
    #[error("{0:?} cannot be used as a TLS server name")]
    ServerName(String),
}

impl ConnectError {
    /// Whether trying again later may help (a refused pin will not).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Tcp { .. } | ConnectError::Timeout(_) | ConnectError::Tls { .. }
        )
    }
}

/// An open stream and what was learnt while opening it.
pub struct Connection {
    /// The stream.
    pub io: Box<dyn Io>,
    /// The server certificate's fingerprint, with TLS.
    pub fingerprint: Option<Fingerprint>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Connects to `server` and, with TLS, checks its certificate against `trust`. A first-use
/// fingerprint is remembered only after the handshake succeeded.
pub async fn connect(server: &Server, trust: &Trust) -> Result<Connection, ConnectError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(server, trust))
        .await
        .map_err(|_| ConnectError::Timeout(server.authority()))?
}

async fn connect_inner(server: &Server, trust: &Trust) -> Result<Connection, ConnectError> {
    let tcp = match server.connect_to {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect((server.host.as_str(), server.port)).await,
    }
    .map_err(|source| ConnectError::Tcp {
        server: server.authority(),
        source,
    })?;
    // Signaling is many small messages: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    if !server.tls {
        return Ok(Connection {
            io: Box::new(tcp),
            fingerprint: None,
        });
    }
    let authority = server.authority();
    let (expected, hint) = match trust {
        Trust::Pinned(fp) => (Some(*fp), " (pinned)".to_owned()),
        Trust::FirstUse(store) => (
            store.lookup(&authority)?,
            format!(" (remembered in {} on first use)", store.path().display()),
        ),
    };
    let observed = Arc::new(Mutex::new(Observed::default()));
    let config = client_config(expected, observed.clone());
    let name = ServerName::try_from(server.host.clone()).map_err(|_| ConnectError::ServerName(server.host.clone()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = connector.connect(name, tcp).await;
    let presented = observed.lock().ok().and_then(|o| o.presented);
    let tls = match (result, presented, expected) {
        (Ok(tls), _, _) => tls,
        (Err(_), Some(presented), Some(expected)) if presented != expected => {
            return Err(ConnectError::FingerprintMismatch {
                server: authority,
                presented,
                expected,
                hint,
            });
        }
        (Err(source), _, _) => {
            return Err(ConnectError::Tls {
                server: authority,
                source,
            });
        }
    };
    if let (Trust::FirstUse(store), None, Some(fp)) = (trust, expected, presented) {
        log::warn!(
            "first connection to {authority}: trusting its certificate, SHA-256 {fp}. Compare it with the fingerprint \
             on the box's console or start page; it is remembered in {}",
            store.path().display()
        );
        store.remember(&authority, fp)?;
    }
    Ok(Connection {
        io: Box::new(tls),
        fingerprint: presented,
    })
}
