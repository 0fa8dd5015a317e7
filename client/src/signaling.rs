//! The signaling connection: one task owns the WebSocket to the relay, keeps it alive with a
//! ping every [`PING_INTERVAL`], and reconnects with backoff when it drops (a relay restart,
//! Wi-Fi roaming). The room task talks to it through two bounded channels: packets out
//! ([`Signaling::send`]) and [`SignalingEvent`]s in.
//!
//! After a reconnect the relay sends a new `init` with a new id; the session (in
//! `keks-proto`) rejoins the room on it. Packets queued while the socket was down are
//! dropped, not sent late: they were sealed under the old id and addressed to old ids.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use keks_proto::advert::{Fingerprint, PING_INTERVAL};
use keks_proto::packets::{ClientboundPacket, ServerboundPacket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::connect::{ConnectError, connect};
use crate::server::Server;
use crate::trust::Trust;

/// Largest signaling message accepted from the relay: a chat image is a data URL of up to
/// the relay's 8 MiB limit, sealed and base64-encoded once more.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Packets waiting to be written to the relay.
const OUTGOING_QUEUE: usize = 1024;
/// Events waiting for the room task; when it is busy the socket is not read (TCP pushes back).
const EVENT_QUEUE: usize = 1024;
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the signaling task reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignalingEvent {
    /// The WebSocket is open (again). The relay's `init` follows as a packet.
    Connected {
        /// The certificate's fingerprint, with TLS.
        fingerprint: Option<Fingerprint>,
    },
    /// A packet from the relay.
    Packet(ClientboundPacket),
    /// The connection dropped or could not be made; another attempt follows after `retry_in`.
    Disconnected {
        /// Why, for a person.
        reason: String,
        /// The wait before the next attempt.
        retry_in: Duration,
        /// Whether a connection was ever made (a first attempt that fails usually means a
        /// wrong address, which a CLI reports instead of retrying forever).
        ever_connected: bool,
    },
    /// A failure retrying cannot fix (a refused certificate). The task has ended.
    Failed(ConnectError),
}

/// The handle to the signaling task. Dropping it ends the task and closes the socket.
#[derive(Debug, Clone)]
pub struct Signaling {
    /// Bounded: a relay that stops reading fills it and [`Signaling::send`] waits.
    tx: mpsc::Sender<ServerboundPacket>,
}

impl Signaling {
    /// Starts the task for `server`.
    pub fn spawn(server: Server, trust: Trust) -> (Signaling, mpsc::Receiver<SignalingEvent>) {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(run(server, trust, rx, events_tx));
        (Signaling { tx }, events)
    }

    /// Queues a packet for the relay. Returns false when the task has ended.
    pub async fn send(&self, packet: ServerboundPacket) -> bool {
        self.tx.send(packet).await.is_ok()
    }
}

async fn run(
    server: Server,
    trust: Trust,
    mut outgoing: mpsc::Receiver<ServerboundPacket>,
    events: mpsc::Sender<SignalingEvent>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut ever_connected = false;
    loop {
        let reason = match open(&server, &trust).await {
            Ok((ws, fingerprint)) => {
                ever_connected = true;
                backoff = BACKOFF_MIN;
                log::info!("connected to {}", server.signaling_url());
                if events.send(SignalingEvent::Connected { fingerprint }).await.is_err() {
                    return;
                }
                match pump(ws, &mut outgoing, &events).await {
                    Some(reason) => reason,
                    None => return,
                }
            }
            Err(e) if !e.is_transient() => {
                let _ = events.send(SignalingEvent::Failed(e)).await;
                return;
            }
            Err(e) => e.to_string(),
        };
        // Whatever was queued for the old connection is stale now.
        while outgoing.try_recv().is_ok() {}
        let event = SignalingEvent::Disconnected {
            reason,
            retry_in: backoff,
            ever_connected,
        };
        if events.send(event).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = events.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn crate::connect::Io>>;

async fn open(server: &Server, trust: &Trust) -> Result<(Ws, Option<Fingerprint>), ConnectError> {
    let conn = connect(server, trust).await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let url = server.signaling_url();
    let handshake = tokio_tungstenite::client_async_with_config(url.as_str(), conn.io, Some(config));
    match tokio::time::timeout(crate::connect::CONNECT_TIMEOUT, handshake).await {
        Ok(Ok((ws, _response))) => Ok((ws, conn.fingerprint)),
        Ok(Err(e)) => Err(ConnectError::Tls {
            server: server.authority(),
            source: std::io::Error::other(format!("WebSocket handshake at {url} failed: {e}")),
        }),
        Err(_) => Err(ConnectError::Timeout(server.authority())),
    }
}

/// Moves packets both ways until the socket ends. `None` when the owner has gone away.
async fn pump(
    ws: Ws,
    outgoing: &mut mpsc::Receiver<ServerboundPacket>,
    events: &mpsc::Sender<SignalingEvent>,
) -> Option<String> {
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            packet = outgoing.recv() => {
                let Some(packet) = packet else {
                    let _ = sink.close().await;
                    return None;
                };
                let text = match serde_json::to_string(&packet) {
                    Ok(t) => t,
                    Err(e) => {
                        log::error!("cannot encode a packet: {e}");
                        continue;
                    }
                };
                if let Err(e) = sink.send(Message::text(text)).await {
                    return Some(format!("sending to the relay failed: {e}"));
                }
            }
            _ = ping.tick() => {
                if let Err(e) = sink.send(Message::text(r#"{"ping":null}"#)).await {
                    return Some(format!("sending to the relay failed: {e}"));
                }
            }
            message = stream.next() => {
                let text = match message {
                    None => return Some("the relay closed the connection".into()),
                    Some(Err(e)) => return Some(format!("the connection to the relay broke: {e}")),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        return Some(match frame {
                            Some(f) => format!("the relay closed the connection ({}: {})", u16::from(f.code), f.reason),
                            None => "the relay closed the connection".into(),
                        });
                    }
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ClientboundPacket>(&text) {
                    Ok(packet) => {
                        if events.send(SignalingEvent::Packet(packet)).await.is_err() {
                            return None;
                        }
                    }
                    Err(e) => log::warn!("ignoring a packet from the relay that does not parse: {e}"),
                }
            }
        }
    }
}
