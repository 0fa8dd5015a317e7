//! Accepting TLS connections, with a deadline on the handshake.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Fingerprint;

/// Accepts TLS connections with a deadline on the handshake.
#[derive(Clone)]
pub struct Acceptor {
    pub(super) inner: tokio_rustls::TlsAcceptor,
    /// A client that opens a TCP connection and never finishes the handshake would hold a
    /// task and a socket forever without it.
    pub(super) handshake_timeout: Duration,
    pub(super) fingerprint: Fingerprint,
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
