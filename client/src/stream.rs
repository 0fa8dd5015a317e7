//! TCP connections over data channels: the `port` resource (docs/PROTOCOL.md, "Ports").
//!
//! A member exposes a local TCP port as a resource of kind `port`. Each `request` for it is
//! one TCP connection: the provider opens a data channel labelled with the resource id and
//! connects to the port; the requester bridges the channel with a connection it accepted.
//! Binary messages carry the bytes; the text message `end` says that side will send nothing
//! more (TCP's half close); a channel that closes before both `end`s aborts the connection.
//! A finished connection's channel stays open (idle) until the peer connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

use crate::room::{Internal, NOT_OPENED, Progress, TransferKey};
use crate::transfer::max_message_size;

/// How long the provider waits for the exposed port to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The text message that ends one direction.
const END: &[u8] = b"end";

/// A byte stream a connection is bridged with: a TCP connection, or anything else that
/// reads and writes (tests use in-memory pipes).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> ByteStream for T {}

/// One bridged connection's identity: the resource, and a number unique in the room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The member on the other end and the port resource.
    pub transfer: TransferKey,
    /// Tells apart the connections of one resource.
    pub serial: u64,
}

/// Where the local end of a bridged connection comes from.
pub(crate) enum LocalEnd {
    /// The provider: connect to the exposed port once the channel opens.
    Connect(SocketAddr),
    /// The requester: a connection the application accepted.
    Given(Box<dyn ByteStream>),
}

/// Runs one connection to its end and reports it to the room task.
pub(crate) async fn bridge(
    key: StreamKey,
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    local: LocalEnd,
    report: mpsc::UnboundedSender<Internal>,
) {
    let outcome = match bridge_inner(&key, &pc, &dc, local, &report).await {
        Ok(n) => Progress::Done(n),
        Err(e) => {
            // A failed connection is closed so the other side stops too.
            let _ = dc.close().await;
            Progress::Failed(e)
        }
    };
    // A finished one is not: both `end`s went through, and with the webrtc crate a channel
    // closed while the member's next one was opening (on a reused stream id) closed that
    // one too. The room keeps the idle channel until the member's connection ends.
    let _ = report.send(Internal::Stream(key, outcome));
}

async fn bridge_inner(
    key: &StreamKey,
    pc: &Arc<dyn PeerConnection>,
    dc: &Arc<dyn DataChannel>,
    local: LocalEnd,
    report: &mpsc::UnboundedSender<Internal>,
) -> Result<u64, String> {
    let stream: Box<dyn ByteStream> = match local {
        LocalEnd::Given(stream) => stream,
        LocalEnd::Connect(addr) => {
            // Our own channel: wait until it opens before connecting.
            loop {
                match dc.poll().await {
                    Some(DataChannelEvent::OnOpen) => break,
                    Some(DataChannelEvent::OnClose) | None => return Err(NOT_OPENED.into()),
                    Some(_) => {}
                }
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    Box::new(tcp)
                }
                Ok(Err(e)) => return Err(format!("cannot connect to the exposed port {addr}: {e}")),
                Err(_) => return Err(format!("the exposed port {addr} did not accept within 5 s")),
            }
        }
    };
    let _ = report.send(Internal::Stream(key.clone(), Progress::Started));
    // The channel is open, so the SCTP transport knows the member's limit.
    let chunk = keks_proto::file::message_size(max_message_size(pc).await);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut moved = 0u64;
    // Local to channel: read, send, and `end` at the local end of file.
    let up = async {
        let mut sent = 0u64;
        loop {
            let mut buf = BytesMut::zeroed(chunk);
            let n = reader.read(&mut buf).await.map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                dc.send_text("end").await.map_err(|e| format!("sending failed: {e}"))?;
                return Ok::<u64, String>(sent);
            }
            buf.truncate(n);
            dc.send(buf).await.map_err(|e| format!("sending failed: {e}"))?;
            sent += n as u64;
        }
    };
    tokio::pin!(up);
    let mut up_done = false;
    let mut down_done = false;
    while !(up_done && down_done) {
        tokio::select! {
            sent = &mut up, if !up_done => {
                moved += sent?;
                up_done = true;
            }
            event = dc.poll() => match event {
                None | Some(DataChannelEvent::OnClose) => {
                    return Err("the other side closed the connection before its end".into());
                }
                Some(DataChannelEvent::OnMessage(msg)) if msg.is_string => {
                    if msg.data.as_ref() == END && !down_done {
                        down_done = true;
                        writer.shutdown().await.map_err(|e| format!("cannot write: {e}"))?;
                    } else {
                        log::debug!("ignoring an unexpected text message on {}", key.transfer.id);
                    }
                }
                Some(DataChannelEvent::OnMessage(msg)) => {
                    if down_done {
                        return Err("the other side sent bytes after its end".into());
                    }
                    writer.write_all(&msg.data).await.map_err(|e| format!("cannot write: {e}"))?;
                    moved += msg.data.len() as u64;
                }
                Some(_) => {}
            }
        }
    }
    Ok(moved)
}
