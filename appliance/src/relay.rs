//! The signaling relay: one task per WebSocket connection around a shared [`Hub`].
//!
//! The hub holds the protocol's [`Registry`] (rooms, members, watches) and each client's
//! send queue behind one `std::sync::Mutex`. A connection task parses a packet, locks the
//! hub, feeds the packet to the registry and pushes the resulting packets into the
//! recipients' queues with `try_send`, all before unlocking: every client therefore sees
//! packets in the order the registry produced them, and nothing awaits under the lock.
//!
//! A client whose queue is full (by count or bytes) is evicted on the spot: its queue's
//! sender is dropped, which its task sees as the end of the queue and closes the socket,
//! and the registry tells its room that it left. A task whose socket write stalls for
//! longer than the write timeout, or whose client sends nothing for the idle timeout, closes
//! too. No slow or silent client can grow memory or stall a room.
//!
//! The other way round, a client that makes the relay deliver more than
//! `limits.relay_bytes_per_sec` (counted over all recipients, with a burst allowance) is
//! paced: its socket is not read until its budget has refilled, so TCP slows it down and a
//! member flooding the room cannot push the others' queues over their bounds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt as _, StreamExt as _};
use keks_proto::packets::{ClientId, ServerboundPacket};
use keks_proto::room::{self, Output, Registry, RegistryError};
use log::{debug, info, warn};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::config::Limits;

/// The relay's shared state.
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    /// Registry and queues change together under this lock, so that the order the registry
    /// decides is the order every queue receives. Held for a few lines, never across `.await`.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    clients: HashMap<ClientId, Queue>,
}

/// The sending half of one client's queue.
#[derive(Debug)]
struct Queue {
    /// Bounded by `send_queue_messages`; full means the client is too slow.
    tx: mpsc::Sender<Utf8Bytes>,
    /// Bytes in the queue, shared with the task that drains it; bounded by `send_queue_bytes`.
    bytes: Arc<AtomicUsize>,
}

/// Counts for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub clients: usize,
    pub rooms: usize,
}

impl Hub {
    pub fn new(limits: Limits, version: String) -> Self {
        let registry = Registry::new(
            version,
            room::Limits {
                max_watched_rooms: limits.max_watched_rooms,
            },
        );
        Hub {
            limits,
            inner: Mutex::new(Inner {
                registry,
                clients: HashMap::new(),
            }),
        }
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            clients: inner.registry.client_count(),
            rooms: inner.registry.room_count(),
        }
    }

    /// The tungstenite settings for relay connections: bounded messages, frames and write
    /// buffer, and small read buffers so an idle connection costs a few KiB. (The read buffer
    /// is allocated whole for every connection: 1 KiB instead of 4 KiB took an idle
    /// connection from 10.2 to 7.2 KiB of relay RSS, with throughput unchanged within noise
    /// in back-to-back `make bench` runs; signaling messages are small.)
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(1 << 10)
            .write_buffer_size(8 << 10)
            .max_write_buffer_size(self.limits.max_message_size + (64 << 10))
            .max_message_size(Some(self.limits.max_message_size))
            .max_frame_size(Some(self.limits.max_frame_size))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent enough to keep serving the other rooms, so recover the guard.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new client under a fresh random id and queues its `init`.
    fn connect(&self) -> (ClientId, mpsc::Receiver<Utf8Bytes>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::channel(self.limits.send_queue_messages);
        let bytes = Arc::new(AtomicUsize::new(0));
        let mut inner = self.lock();
        loop {
            let id = random_id();
            match inner.registry.connect(id) {
                Ok(outputs) => {
                    inner.clients.insert(
                        id,
                        Queue {
                            tx,
                            bytes: bytes.clone(),
                        },
                    );
                    self.deliver(&mut inner, outputs);
                    return (id, rx, bytes);
                }
                // 2^53 ids: a collision is rare, drawing again is enough.
                Err(_) => continue,
            }
        }
    }

    /// Feeds one packet to the registry and delivers the result; returns the bytes queued.
    fn handle(&self, id: ClientId, packet: ServerboundPacket) -> Result<usize, RegistryError> {
        let mut inner = self.lock();
        let outputs = inner.registry.handle(id, packet)?;
        Ok(self.deliver(&mut inner, outputs))
    }

    fn disconnect(&self, id: ClientId) {
        let mut inner = self.lock();
        inner.clients.remove(&id);
        let outputs = inner.registry.disconnect(id);
        self.deliver(&mut inner, outputs);
    }

    /// Pushes outputs into queues; evicts (and announces the leave of) clients whose queue
    /// is full. Evictions can cascade, hence the work list.
    fn deliver(&self, inner: &mut Inner, outputs: Vec<Output>) -> usize {
        let mut queued = 0;
        let mut work: VecDeque<Output> = outputs.into();
        while let Some(Output { to, packet }) = work.pop_front() {
            let text = match serde_json::to_string(&packet) {
                Ok(t) => Utf8Bytes::from(t),
                Err(e) => {
                    // Only `Unknown` values fail to serialise, and the registry never makes one.
                    log::error!("cannot serialise {packet:?}: {e}");
                    continue;
                }
            };
            for id in to {
                let Some(queue) = inner.clients.get(&id) else { continue };
                if queue.push(text.clone(), self.limits.send_queue_bytes) {
                    queued += text.len();
                    continue;
                }
                warn!("client {id} does not read its messages fast enough: disconnecting it");
                inner.clients.remove(&id);
                work.extend(inner.registry.disconnect(id));
            }
        }
        queued
    }
}

/// Paces what one client makes the relay deliver: a token bucket over queued bytes. Time is
/// an input, so the arithmetic is tested without clocks.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(limits: &Limits, now: Instant) -> Self {
        let burst = limits.relay_burst_bytes as f64;
        Pacer {
            rate: limits.relay_bytes_per_sec as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Charges `bytes` delivered at `now`; returns when the client may be read from again
    /// (`None`: at once).
    fn charge(&mut self, now: Instant, bytes: usize) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - bytes as f64;
        (self.tokens < 0.0).then(|| now + std::time::Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

impl Queue {
    /// Queues `text` unless that would exceed either bound.
    fn push(&self, text: Utf8Bytes, max_bytes: usize) -> bool {
        let len = text.len();
        let before = self.bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > max_bytes || self.tx.try_send(text).is_err() {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

fn random_id() -> ClientId {
    let mut buf = [0u8; 8];
    // Without an OS random source there is no secure way to run at all; fall back to the
    // clock only so that ids stay unique, and say so.
    if getrandom::fill(&mut buf).is_err() {
        log::error!("the OS random source failed: client ids are predictable");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        buf = nanos.to_le_bytes();
    }
    // Below 2^53 so JavaScript numbers hold it exactly; never 0.
    ClientId((u64::from_le_bytes(buf) & ClientId::MAX_SAFE).max(1))
}

/// Why a connection ended, and the close frame it gets.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    Idle,
    Evicted,
    WriteStalled,
    Protocol(CloseCode, String),
    Io(String),
}

/// Serves one upgraded WebSocket connection until it ends.
pub async fn serve<S>(hub: Arc<Hub>, mut ws: WebSocketStream<S>, peer: String, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (id, mut queue, queued_bytes) = hub.connect();
    debug!("client {id} connected from {peer}");
    let idle = hub.limits.idle_timeout();
    let write_timeout = hub.limits.write_timeout();
    let mut deadline = Instant::now() + idle;
    let mut pacer = Pacer::new(&hub.limits, Instant::now());
    // Set while the client has used up its delivery budget: its socket is not read until then.
    let mut resume: Option<Instant> = None;

    let end = loop {
        tokio::select! {
            frame = ws.next(), if resume.is_none() => {
                deadline = Instant::now() + idle;
                match frame {
                    None => break End::ClientClosed,
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<ServerboundPacket>(&text) {
                            Ok(packet) => {
                                if let ServerboundPacket::Join { hash } = &packet {
                                    match hash {
                                        Some(hash) => debug!("client {id} joins room {hash}"),
                                        None => debug!("client {id} leaves its room"),
                                    }
                                }
                                match hub.handle(id, packet) {
                                    Ok(queued) => {
                                        resume = pacer.charge(Instant::now(), queued);
                                        // Time spent paused by us is not the client's silence.
                                        if let Some(at) = resume {
                                            deadline = deadline.max(at + idle);
                                        }
                                    }
                                    Err(e) => break End::Protocol(CloseCode::Policy, e.to_string()),
                                }
                            }
                            Err(e) => break End::Protocol(CloseCode::Policy, format!("malformed packet: {e}")),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        break End::Protocol(CloseCode::Unsupported, "binary frames are not used".into());
                    }
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    // Pings are answered by tungstenite; pongs and raw frames need nothing.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break classify(e),
                }
            }
            next = queue.recv() => {
                let Some(text) = next else { break End::Evicted };
                match timeout(write_timeout, write_batch(&mut ws, text, &mut queue, &queued_bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break End::Io(e.to_string()),
                    Err(_) => break End::WriteStalled,
                }
            }
            () = tokio::time::sleep_until(resume.unwrap_or(deadline)), if resume.is_some() => resume = None,
            () = tokio::time::sleep_until(deadline) => break End::Idle,
            _ = shutdown.changed() => break End::Shutdown,
        }
    };

    hub.disconnect(id);
    let close = match &end {
        End::ClientClosed | End::Io(_) | End::WriteStalled => None,
        End::Shutdown => Some((CloseCode::Away, "server shutting down")),
        End::Idle => Some((CloseCode::Normal, "idle timeout")),
        End::Evicted => Some((CloseCode::Policy, "too slow: send queue full")),
        End::Protocol(code, reason) => Some((*code, reason.as_str())),
    };
    match &end {
        End::ClientClosed => debug!("client {id} disconnected"),
        End::Shutdown | End::Idle => debug!("client {id} closed: {end:?}"),
        End::Io(e) => debug!("client {id} connection error: {e}"),
        End::Evicted | End::WriteStalled => warn!("client {id} ({peer}) dropped: {end:?}"),
        End::Protocol(code, reason) => warn!("client {id} ({peer}) closed with {code}: {reason}"),
    }
    if let Some((code, reason)) = close {
        // Close frame reasons are limited to 123 bytes.
        let reason = truncate(reason, 120);
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(
            write_timeout.min(std::time::Duration::from_secs(2)),
            ws.close(Some(frame)),
        )
        .await;
    }
    if matches!(end, End::Shutdown) {
        info!("closed client {id} for shutdown");
    }
}

/// Writes `first` and whatever else is already queued (up to a batch), then flushes once:
/// a burst of small packets (a join into a big room) costs one syscall, not hundreds.
async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    first: Utf8Bytes,
    queue: &mut mpsc::Receiver<Utf8Bytes>,
    queued_bytes: &AtomicUsize,
) -> Result<(), tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    let mut batch = 0;
    while let Some(text) = next.take() {
        queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
        ws.feed(Message::Text(text)).await?;
        batch += 1;
        if batch < 256 {
            next = queue.try_recv().ok();
        }
    }
    ws.flush().await
}

fn classify(e: tungstenite::Error) -> End {
    use tungstenite::Error as E;
    match e {
        E::Capacity(c) => End::Protocol(CloseCode::Size, format!("too big: {c}")),
        E::Utf8(_) => End::Protocol(CloseCode::Invalid, "invalid UTF-8 in a text frame".into()),
        // A browser tab closed or a Wi-Fi blip: ordinary, not misbehaviour.
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => End::ClientClosed,
        E::Protocol(p) => End::Protocol(CloseCode::Protocol, p.to_string()),
        E::ConnectionClosed | E::AlreadyClosed => End::ClientClosed,
        other => End::Io(other.to_string()),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_js_safe_and_not_sequential() {
        let ids: Vec<u64> = (0..100).map(|_| random_id().0).collect();
        assert!(ids.iter().all(|&id| (1..=ClientId::MAX_SAFE).contains(&id)));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 100);
        assert!(ids.windows(2).any(|w| w[1] != w[0] + 1));
    }

    #[test]
    fn queue_respects_both_bounds() {
        let (tx, _rx) = mpsc::channel(2);
        let q = Queue {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
        };
        assert!(q.push("12345".into(), 8));
        assert!(!q.push("12345".into(), 8), "byte bound");
        assert!(q.push("123".into(), 8));
        assert!(!q.push("".into(), 8), "count bound");
        assert_eq!(q.bytes.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn pacer_allows_a_burst_then_the_rate() {
        let limits = Limits {
            relay_bytes_per_sec: 1000,
            relay_burst_bytes: 5000,
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut p = Pacer::new(&limits, t0);
        assert_eq!(p.charge(t0, 5000), None, "a full burst passes");
        let wait = p.charge(t0, 500).expect("over budget");
        assert_eq!(wait - t0, std::time::Duration::from_millis(500));
        // After a second the rate has refilled 1000 bytes: 500 owed, 500 left.
        assert_eq!(p.charge(t0 + std::time::Duration::from_secs(1), 500), None);
        // Refill never exceeds the burst.
        let later = t0 + std::time::Duration::from_secs(3600);
        assert_eq!(p.charge(later, 5000), None);
        assert!(p.charge(later, 1).is_some());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
