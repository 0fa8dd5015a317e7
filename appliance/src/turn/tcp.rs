//! TURN over TCP (RFC 5766 section 2.1), for networks that block UDP: each TCP connection
//! carries STUN messages and ChannelData (padded to four bytes) back to back, and gets a TURN
//! server of its own over a [`TcpConn`]; its allocations still relay over UDP. Bounded: at
//! most `turn.max_allocations` connections at once, a message at most 1,500 bytes, 10 s to
//! finish one once started, and a connection silent for longer than an allocation's
//! lifetime (10 minutes) is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::task::JoinSet;
use webrtc_util::Conn;

/// Largest message read: what the TURN crate reads from UDP too.
pub const MAX_MESSAGE: usize = 1500;
/// How long a connection may stay silent: longer than an allocation lives without a refresh.
const IDLE: Duration = Duration::from_secs(660);
/// How long the rest of a message may take once its header arrived.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One TURN-over-TCP connection as the TURN crate's `Conn`: `recv_from` yields one framed
/// message from the peer, `send_to` writes one. Usable on either end (the tests use it as the
/// client's transport).
pub struct TcpConn {
    /// The reading half; one `recv_from` at a time.
    reader: Mutex<OwnedReadHalf>,
    /// The writing half; whole messages at a time, so they never interleave.
    writer: Mutex<OwnedWriteHalf>,
    local: SocketAddr,
    peer: SocketAddr,
    /// Signalled once when the connection ends, so its server can be stopped.
    closed: Arc<Notify>,
}

impl std::fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl TcpConn {
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok(TcpConn {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            local,
            peer,
            closed: Arc::new(Notify::new()),
        })
    }

    /// Completes once the connection has ended.
    pub fn closed(&self) -> Arc<Notify> {
        self.closed.clone()
    }

    fn fail(&self, why: impl Into<String>) -> webrtc_util::Error {
        self.closed.notify_one();
        webrtc_util::Error::Other(why.into())
    }
}

/// The length of the message whose first four bytes are `header`, `None` if it is neither
/// STUN nor ChannelData.
pub fn framed_len(header: [u8; 4]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match header[0] >> 6 {
        0b00 if len % 4 == 0 => Some(20 + len),
        0b01 => Some(4 + len.div_ceil(4) * 4),
        _ => None,
    }
}

#[async_trait]
impl Conn for TcpConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut reader = self.reader.lock().await;
        let mut header = [0u8; 4];
        match tokio::time::timeout(IDLE, reader.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(self.fail(e.to_string())),
            Err(_) => return Err(self.fail("idle")),
        }
        let Some(total) = framed_len(header).filter(|&n| n <= MAX_MESSAGE.min(buf.len())) else {
            log::debug!(
                "TURN over TCP: closing {}: not a STUN or ChannelData frame, or too long",
                self.peer
            );
            return Err(self.fail("bad frame"));
        };
        buf[..4].copy_from_slice(&header);
        match tokio::time::timeout(MESSAGE_TIMEOUT, reader.read_exact(&mut buf[4..total])).await {
            Ok(Ok(_)) => Ok((total, self.peer)),
            Ok(Err(e)) => Err(self.fail(e.to_string())),
            Err(_) => Err(self.fail("a message took too long")),
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.send_to(buf, self.peer).await
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        let mut writer = self.writer.lock().await;
        // A peer that stops reading is dropped rather than stalling its server. A write to a
        // connection that ended is lost like a datagram (the reader reports the end): an
        // error here would be logged by the TURN crate as a fault of the box.
        match tokio::time::timeout(MESSAGE_TIMEOUT, writer.write_all(buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("TURN over TCP: {}: {e}", self.peer),
            Err(_) => {
                log::debug!("TURN over TCP: {}: write stalled; closing", self.peer);
                self.closed.notify_one();
            }
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.closed.notify_one();
        let _ = self.writer.lock().await.shutdown().await;
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Accepts TURN-over-TCP connections on `listener` and serves each with a server made by
/// `make_server`, at most `max` at once. The connections live in this future: dropping it
/// (aborting its task, when the box's address goes) ends them.
pub(super) async fn accept_loop<F, Fut>(listener: TcpListener, max: usize, make_server: F)
where
    F: Fn(Arc<TcpConn>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<webrtc_turn::server::Server>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let make_server = Arc::new(make_server);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Finished connections leave the set, so it holds only open ones.
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("TURN over TCP: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::debug!("TURN over TCP: refusing {peer}: turn.max_allocations connections open");
            continue;
        };
        let make_server = make_server.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn = match TcpConn::new(stream) {
                Ok(conn) => Arc::new(conn),
                Err(e) => return log::debug!("TURN over TCP: {peer}: {e}"),
            };
            let closed = conn.closed();
            match make_server(conn).await {
                Ok(server) => {
                    closed.notified().await;
                    let _ = server.close().await;
                }
                Err(e) => log::warn!("TURN over TCP: cannot serve {peer}: {e:#}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        // A STUN header with 8 bytes of attributes; ChannelData of 5 bytes padded to 8.
        assert_eq!(framed_len([0x00, 0x01, 0x00, 0x08]), Some(28));
        assert_eq!(framed_len([0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(framed_len([0x40, 0x00, 0x00, 0x08]), Some(12));
        // STUN lengths are multiples of 4; the first two bits 10 or 11 are neither.
        assert_eq!(framed_len([0x00, 0x01, 0x00, 0x07]), None);
        assert_eq!(framed_len([0x80, 0x00, 0x00, 0x04]), None);
        assert_eq!(framed_len([0xC0, 0x00, 0x00, 0x04]), None);
    }
}
