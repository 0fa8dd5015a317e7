//! The signaling relay: one task per WebSocket connection around a shared [`Hub`].
//!
//! The hub holds the protocol's [`Registry`] (rooms, members, watches) and each client's
//! send queue behind one `std::sync::Mutex`. A connection task parses a packet, encodes a
//! relayed message (the only large packet) before it locks, then locks the hub, feeds the
//! packet to the registry and pushes the resulting packets into the recipients' queues with
//! `try_send`: every client therefore sees packets in the order the registry produced them,
//! and neither waiting nor megabytes of JSON happen under the lock.
//!
//! Memory: a packet is encoded once and its bytes are shared by every queue it goes to; a
//! large one is written as [`FRAGMENT`]-sized frames sliced from that one copy, so a
//! recipient that does not read holds a reference, not a copy. Every encoded packet and
//! every message being received is charged to the global [`Budget`]
//! (`limits.buffered_bytes`); a message that does not fit closes its sender with 1013 "try
//! again later" instead of growing the relay. A message must be finished within
//! `limits.message_timeout_secs` of its first byte.
//!
//! A client whose queue is full (by count or bytes) is evicted on the spot: its queue's
//! sender is dropped, which its task sees as the end of the queue and closes the socket,
//! and the registry tells its room that it left. A task whose socket write makes no progress
//! for the write timeout, or whose client sends nothing for the idle timeout, closes too.
//!
//! The other way round, each member is paced ([`Pacer`]): a packet costs its size plus
//! [`PACKET_COST`] (parsing is work too) plus what else it makes the relay queue, and is
//! delivered only once the member's budget covers it. Until then its socket is not read, so
//! TCP slows the member down. As the burst fits in a queue (checked at start), a member
//! flooding the room is slowed before a member who keeps reading can be evicted; one who
//! stops reading still is. `watch_rooms` is paced separately ([`WATCH_RATE`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use keks_proto::packets::{ClientId, ClientboundPacket, ServerboundPacket};
use keks_proto::room::{self, Output, Registry, RegistryError};
use log::{debug, info, warn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::admission::Receiving;
use crate::budget::{Budget, Charge, Share};
use crate::config::Limits;

/// What a packet costs its sender's pace beyond its size: reading, parsing and locking.
pub const PACKET_COST: usize = 256;
/// `watch_rooms` packets per second a client may send, after a burst of [`WATCH_BURST`]. A
/// start page sends one when its list of rooms changes.
pub const WATCH_RATE: f64 = 1.0;
/// See [`WATCH_RATE`].
pub const WATCH_BURST: f64 = 8.0;
/// Outgoing messages larger than this are written as fragments of this size, so a socket
/// that does not drain holds one fragment in its write buffer, not a copy of the message.
pub const FRAGMENT: usize = 16 << 10;
/// Bytes of a message being received that are not charged to the budget: small packets
/// never touch it (1,024 connections x 16 KiB = 16 MiB at most).
pub const UNCHARGED_RECEIVE: usize = 16 << 10;
/// How long a packet queued for a client waits for others to go out in the same write. In a
/// burst (a join, a round of ICE candidates, a room whose members answer together) the whole
/// burst costs one write per recipient. Most of the relay's CPU per delivered packet is the
/// write itself (loopback: about half in `send`), so fewer writes is what makes it cheaper.
/// Flushing the first packet of a burst at once and only the rest after this took twice the
/// writes in `keksbox-load`'s paced phase (a room's members sending together) for the same
/// deliveries.
///
/// One task for the whole hub keeps this time ([`Hub::start_flusher`]): a queue that gets its
/// first packet joins the hub's list of due queues, and every `COALESCE` after the list
/// became non-empty the flusher wakes each of them once. A client's task is therefore woken
/// once per write, not once for its first packet and again by a timer of its own.
pub const COALESCE: Duration = Duration::from_millis(2);
/// Bytes each encoded packet is charged beyond its length: the allocation and queue slots.
const PACKET_OVERHEAD: usize = 64;

/// The relay's shared state.
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    /// Bytes held for the network in all (see the module docs).
    budget: Arc<Budget>,
    /// Registry and queues change together under this lock, so that the order the registry
    /// decides is the order every queue receives. Held for a few lines, never across `.await`.
    inner: Mutex<Inner>,
    /// Wakes the flusher when the list of due queues becomes non-empty ([`COALESCE`]).
    flusher: Arc<Notify>,
    flusher_started: Once,
}

#[derive(Debug)]
pub(crate) struct Inner {
    registry: Registry,
    clients: HashMap<ClientId, Queue>,
    /// Queues that got packets since the flusher last woke their tasks.
    due: Vec<Arc<Outbox>>,
}

/// The sending half of one client's queue.
#[derive(Debug)]
struct Queue {
    /// Bounded by `send_queue_messages`; full means the client is too slow.
    tx: mpsc::Sender<Utf8Bytes>,
    outbox: Arc<Outbox>,
}

/// What the hub and a client's task share about its queue.
#[derive(Debug, Default)]
struct Outbox {
    /// Bytes in the queue; bounded by `send_queue_bytes`.
    bytes: AtomicUsize,
    /// On the hub's list of due queues, or woken and not yet draining: further packets need
    /// not put it there again. The task clears it before it drains, so a packet queued after
    /// that puts it back (at worst waking the task once for an empty queue).
    scheduled: AtomicBool,
    /// Wakes the task to write out its queue, or to see that it was evicted.
    wake: Notify,
}

/// Counts for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub clients: usize,
    pub rooms: usize,
    /// Bytes charged to the budget now.
    pub buffered_bytes: usize,
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
            budget: Budget::new(limits.buffered_bytes),
            limits,
            inner: Mutex::new(Inner {
                registry,
                clients: HashMap::new(),
                due: Vec::new(),
            }),
            flusher: Arc::new(Notify::new()),
            flusher_started: Once::new(),
        }
    }

    /// Starts the task that wakes due queues [`COALESCE`] after they got their first packet,
    /// once per hub; it ends when the hub is dropped. [`serve_websocket`] calls this before
    /// it connects a client.
    pub fn start_flusher(self: &Arc<Self>) {
        self.flusher_started.call_once(|| {
            tokio::spawn(flush_due_queues(Arc::downgrade(self), self.flusher.clone()));
        });
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            clients: inner.registry.client_count(),
            rooms: inner.registry.room_count(),
            buffered_bytes: self.budget.used(),
        }
    }

    /// The budget connections charge what they receive to.
    /// What the messages one address is still sending may hold of the budget: a quarter of
    /// what messages being received may take, and never less than one whole message.
    pub fn receive_cap_per_address(&self) -> usize {
        (self.budget.threshold(Share::Receive) / 4).max(self.limits.max_message_size + UNCHARGED_RECEIVE)
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Cheap proof that the hub is not wedged: takes the lock and reads a count. The systemd
    /// watchdog pings only after this returns, so a stuck lock stops the pings.
    pub fn alive(&self) -> usize {
        self.lock().registry.client_count()
    }

    /// The tungstenite settings for relay connections: bounded messages, frames and write
    /// buffer, and small read buffers so an idle connection costs a few KiB. (The read buffer
    /// is allocated whole for every connection: 1 KiB instead of 4 KiB took an idle
    /// connection from 10.2 to 7.2 KiB of relay RSS, with throughput unchanged within noise
    /// in back-to-back `make bench` runs; signaling messages are small.) Large messages are
    /// written in [`FRAGMENT`]s, so the write buffer never holds much more than one.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(1 << 10)
            .write_buffer_size(8 << 10)
            .max_write_buffer_size(FRAGMENT + (64 << 10))
            .max_message_size(Some(self.limits.max_message_size))
            .max_frame_size(Some(self.limits.max_frame_size))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent enough to keep serving the other rooms, so recover the guard.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new client under a fresh random id and queues its `init`.
    fn connect(&self) -> (ClientId, mpsc::Receiver<Utf8Bytes>, Arc<Outbox>) {
        let (tx, rx) = mpsc::channel(self.limits.send_queue_messages);
        let outbox = Arc::new(Outbox::default());
        let mut inner = self.lock();
        loop {
            let id = random_id();
            match inner.registry.connect(id) {
                Ok(outputs) => {
                    inner.clients.insert(
                        id,
                        Queue {
                            tx,
                            outbox: outbox.clone(),
                        },
                    );
                    self.deliver(&mut inner, outputs, None);
                    return (id, rx, outbox);
                }
                // 2^53 ids: a collision is rare, drawing again is enough.
                Err(_) => continue,
            }
        }
    }

    /// Feeds one packet to the registry and delivers the result; returns the bytes queued
    /// besides a relayed message itself (what a join or a watch fans out to).
    ///
    /// `receipt` is what receiving the packet was charged; a relayed message's encoded copy
    /// takes it over. Callers deliver only while the budget has room
    /// ([`Budget::has_room`]), so what a packet adds beyond its receipt exceeds the limit by
    /// at most one packet's worth.
    pub fn handle(&self, id: ClientId, packet: ServerboundPacket, receipt: Charge) -> Result<usize, RegistryError> {
        let (packet, relayed) = match packet {
            ServerboundPacket::WatchRooms(hashes) if hashes.len() > self.limits.max_watched_rooms => {
                // Refused by length before anything sorts or locks for it.
                return Err(RegistryError::TooManyWatches {
                    count: hashes.len(),
                    limit: self.limits.max_watched_rooms,
                });
            }
            ServerboundPacket::Relay { recipient, message } => {
                // Encoded (and charged) once, outside the lock, for every recipient.
                let encoded = encode(&ClientboundPacket::Message { sender: id, message });
                let text = self.charged(encoded, receipt);
                let stripped = ServerboundPacket::Relay {
                    recipient,
                    message: String::new(),
                };
                (stripped, Some(text))
            }
            other => (other, None),
        };
        let mut inner = self.lock();
        let outputs = inner.registry.handle(id, packet)?;
        Ok(self.deliver(&mut inner, outputs, relayed))
    }

    fn disconnect(&self, id: ClientId) {
        let mut inner = self.lock();
        inner.clients.remove(&id);
        let outputs = inner.registry.disconnect(id);
        self.deliver(&mut inner, outputs, None);
    }

    /// `text` as shared bytes that give their charge back when the last queue drops them:
    /// `charge` is made to cover the text (see [`Hub::handle`] for why it may exceed the limit).
    fn charged(&self, text: String, mut charge: Charge) -> Utf8Bytes {
        charge.resize(text.len() + PACKET_OVERHEAD);
        let bytes = Bytes::from_owner(Charged { text, _charge: charge });
        // The bytes came from a String, so they are UTF-8.
        Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static(""))
    }

    /// Pushes outputs into queues; evicts (and announces the leave of) clients whose queue
    /// is full. Evictions can cascade, hence the work list. `relayed` is the encoded form of
    /// the one `message` packet among `outputs`, if any. Returns the bytes queued besides it.
    fn deliver(&self, inner: &mut Inner, outputs: Vec<Output>, mut relayed: Option<Utf8Bytes>) -> usize {
        let mut queued = 0;
        let mut work: VecDeque<Output> = outputs.into();
        while let Some(Output { to, packet }) = work.pop_front() {
            let (text, fans_out) = match (&packet, relayed.take()) {
                (ClientboundPacket::Message { .. }, Some(text)) => (text, false),
                (_, other) => {
                    relayed = other;
                    // Small packets (joins, leaves, counts): charged, never refused. Those a
                    // packet causes are delivered only while the budget has room; those a
                    // disconnect causes are one per room.
                    (self.charged(encode(&packet), Charge::adopt(&self.budget, 0)), true)
                }
            };
            for id in to {
                let Inner { clients, due, .. } = &mut *inner;
                let Some(queue) = clients.get(&id) else { continue };
                if queue.push(text.clone(), self.limits.send_queue_bytes) {
                    if fans_out {
                        queued += text.len();
                    }
                    if !queue.outbox.scheduled.swap(true, Ordering::AcqRel) {
                        if due.is_empty() {
                            self.flusher.notify_one();
                        }
                        due.push(queue.outbox.clone());
                    }
                    continue;
                }
                warn!("client {id} does not read its messages fast enough: disconnecting it");
                if let Some(queue) = inner.clients.remove(&id) {
                    // Its task sees the closed queue once it has written what is queued.
                    drop(queue.tx);
                    queue.outbox.wake.notify_one();
                }
                work.extend(inner.registry.disconnect(id));
            }
        }
        queued
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The flusher finds the hub gone and ends.
        self.flusher.notify_one();
    }
}

/// The hub's flusher ([`COALESCE`]): waits for a queue to become due, lets the window pass,
/// then wakes the task of every queue that became due meanwhile.
async fn flush_due_queues(hub: Weak<Hub>, wake: Arc<Notify>) {
    let mut due = Vec::new();
    loop {
        wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let Some(hub) = hub.upgrade() else { return };
        std::mem::swap(&mut hub.lock().due, &mut due);
        drop(hub);
        for outbox in due.drain(..) {
            outbox.wake.notify_one();
        }
    }
}

/// The owner of a queued packet's bytes: the text and its charge, dropped together.
struct Charged {
    text: String,
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

fn encode(packet: &ClientboundPacket) -> String {
    // Sized for the packet at once (a relayed message plus its envelope, with room for some
    // escapes), so the text is not grown step by step while it is written.
    let size = match packet {
        ClientboundPacket::Message { message, .. } => 64 + message.len() + message.len() / 8,
        _ => 128,
    };
    let mut text = Vec::with_capacity(size);
    match serde_json::to_writer(&mut text, packet) {
        // serde_json writes UTF-8.
        Ok(()) => String::from_utf8(text).unwrap_or_default(),
        Err(e) => {
            // Only `Unknown` values fail to serialise, and the registry never makes one.
            log::error!("cannot serialise {packet:?}: {e}");
            String::new()
        }
    }
}

/// A token bucket: what one client may make the relay do. Time is an input, so the
/// arithmetic is tested without clocks.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Pacer {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn for_bytes(limits: &Limits, now: Instant) -> Self {
        Pacer::new(limits.relay_bytes_per_sec as f64, limits.relay_burst_bytes as f64, now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// When the bucket will cover `cost` (capped at the burst, so any cost passes
    /// eventually); `None`: now.
    fn ready_at(&mut self, now: Instant, cost: usize) -> Option<Instant> {
        self.refill(now);
        let need = (cost as f64).min(self.burst) - self.tokens;
        (need > 0.0).then(|| now + Duration::from_secs_f64(need / self.rate))
    }

    /// Takes `cost` at `now` (the balance may go below zero by what a packet fanned out).
    fn charge(&mut self, now: Instant, cost: usize) {
        self.refill(now);
        self.tokens -= cost as f64;
    }
}

impl Queue {
    /// Queues `text` unless that would exceed either bound.
    fn push(&self, text: Utf8Bytes, max_bytes: usize) -> bool {
        let len = text.len();
        let before = self.outbox.bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > max_bytes || self.tx.try_send(text).is_err() {
            self.outbox.bytes.fetch_sub(len, Ordering::Relaxed);
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

/// The socket of one WebSocket connection, metering what it receives: the bytes of the
/// message in progress are charged to the budget beyond [`UNCHARGED_RECEIVE`], and the time
/// its first byte came is kept for `limits.message_timeout_secs`.
///
/// It also follows the frame headers going by, for one reason: tungstenite keeps the receive
/// buffer a large frame was read into for the life of the connection (8 MiB per connection
/// that once sent a chat image). In a message with a large frame, reads never cross the end
/// of a frame, so when the message ends the buffer holds nothing else, and the connection
/// task can start a fresh `WebSocketStream` on the same socket
/// ([`Metered::at_clean_boundary`]).
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    budget: Arc<Budget>,
    /// What this connection's address holds in messages being received, and how much it may
    /// ([`Hub::receive_cap_per_address`]).
    address: Option<(Arc<Receiving>, usize)>,
    /// Bytes read since the last whole message.
    partial: usize,
    /// Bytes of `partial` charged to the budget.
    charged: usize,
    /// When the first byte of the message in progress arrived.
    started: Option<Instant>,
    /// Since when reading waits for room in the budget.
    budget_wait: Option<Instant>,
    frames: FrameTracker,
}

/// Where the byte stream is relative to WebSocket frames.
#[derive(Debug, Default)]
struct FrameTracker {
    /// Header bytes of the next frame seen so far.
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// Whether the current frame is a data frame with FIN set: the last of its message.
    ends_message: bool,
    /// Whether the message being received has a frame larger than [`LARGE_FRAME`]: from
    /// then on until the message ends, reads stop at every frame's end (and every header's),
    /// so that the read that ends the message ends exactly there, however it is fragmented.
    large: bool,
    /// The last read ended exactly at the end of a message that had a large frame.
    clean_after_large: bool,
}

/// Frames above this get a fresh receive buffer after their message (see [`Metered`]): the
/// same as [`UNCHARGED_RECEIVE`], so a connection keeps no more than that of what it was
/// sent once the budget no longer counts it.
const LARGE_FRAME: u64 = UNCHARGED_RECEIVE as u64;

impl FrameTracker {
    /// How much the next read may take so as not to cross the end of a frame (or a frame
    /// header) of a message with a large frame.
    fn read_limit(&self) -> Option<usize> {
        if !self.large {
            return None;
        }
        if self.remaining > 0 {
            return Some(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        }
        Some(self.header_needed())
    }

    /// Header bytes still to come for the next frame.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2 - self.header_len;
        }
        let b = self.header[1];
        let mask = if b & 0x80 != 0 { 4 } else { 0 };
        let ext = match b & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        (2 + ext + mask - self.header_len).max(1)
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        self.clean_after_large = false;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(bytes.len());
                self.remaining -= take as u64;
                bytes = &bytes[take..];
                if self.remaining == 0 {
                    self.frame_end(bytes.is_empty());
                }
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            let Some(len) = self.header_complete() else { continue };
            self.header_len = 0;
            let (fin, opcode) = (self.header[0] & 0x80 != 0, self.header[0] & 0x0f);
            // Opcodes 0-7 are data (continuation, text, binary); 8 and up are control frames,
            // which may come between the fragments of a message.
            let data = opcode < 8;
            self.ends_message = data && fin;
            self.large |= data && len > LARGE_FRAME;
            self.remaining = len;
            if len == 0 {
                self.frame_end(bytes.is_empty());
            }
        }
    }

    fn frame_end(&mut self, read_ended: bool) {
        if self.ends_message && self.large {
            self.large = false;
            self.clean_after_large = read_ended;
        }
    }

    /// The payload length once the header is complete.
    fn header_complete(&self) -> Option<u64> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        let (ext, len) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        if h.len() < 2 + ext + mask {
            return None;
        }
        Some(len.unwrap_or_else(|| h[2..2 + ext].iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))))
    }
}

impl<S> Metered<S> {
    pub fn new(inner: S, budget: Arc<Budget>) -> Self {
        Metered {
            inner,
            budget,
            address: None,
            partial: 0,
            charged: 0,
            started: None,
            budget_wait: None,
            frames: FrameTracker::default(),
        }
    }

    /// Counts what this connection's messages in progress hold toward its address's share
    /// (`receiving`), which may hold at most `cap`.
    pub fn with_address(mut self, receiving: Arc<Receiving>, cap: usize) -> Self {
        self.address = Some((receiving, cap));
        self
    }

    /// Gives back what the message in progress held of its address's share.
    fn release_address(&self) {
        if let Some((receiving, _)) = &self.address {
            receiving.sub(self.charged);
        }
    }

    /// Whether the last read ended a message with a large frame: the WebSocket's buffer then
    /// holds nothing unread, and the message just returned may be followed by a fresh
    /// `WebSocketStream`.
    pub fn at_clean_boundary(&self) -> bool {
        self.frames.clean_after_large
    }

    /// A whole message arrived: what was held for it is free again.
    fn message_done(&mut self) {
        self.release_address();
        self.budget.release(self.charged);
        self.charged = 0;
        self.partial = 0;
        self.started = None;
    }

    /// What receiving the message that just ended was charged, now carried by its packet
    /// until delivery.
    fn take_charge(&mut self) -> Charge {
        // The packet carries the budget's charge on; the address's share is free.
        self.release_address();
        let charge = Charge::adopt(&self.budget, self.charged);
        self.charged = 0;
        self.message_done();
        charge
    }

    /// Charges `n` bytes just read. They were read only once the budget had room
    /// ([`Share::Receive`]), so this exceeds it by at most one read.
    fn count(&mut self, n: usize) {
        if self.partial == 0 {
            self.started = Some(Instant::now());
        }
        self.partial += n;
        let owed = self.partial.saturating_sub(UNCHARGED_RECEIVE);
        if owed > self.charged {
            self.budget.force_reserve(owed - self.charged);
            if let Some((receiving, _)) = &self.address {
                receiving.add(owed - self.charged);
            }
            self.charged = owed;
        }
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.release_address();
        self.budget.release(self.charged);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.partial + buf.remaining() > UNCHARGED_RECEIVE {
            // This read may be charged: not while the budget is spent. The sender's TCP
            // window fills meanwhile, which slows it down.
            let address_full = this
                .address
                .as_ref()
                .is_some_and(|(receiving, cap)| receiving.poll_below(cx, *cap).is_pending());
            if address_full || this.budget.poll_room(cx, Share::Receive).is_pending() {
                this.budget_wait.get_or_insert_with(Instant::now);
                return Poll::Pending;
            }
            this.budget_wait = None;
        }
        let before = buf.filled().len();
        match this.frames.read_limit().filter(|&limit| limit < buf.remaining()) {
            // The end of a large frame is near: read no further than it, through a small
            // buffer of our own (tungstenite reads at most its 1 KiB read size anyway).
            Some(limit) => {
                let mut own = [0u8; 4096];
                let mut small = ReadBuf::new(&mut own[..limit.min(4096)]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut small))?;
                buf.put_slice(small.filled());
            }
            None => ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?,
        }
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.frames.feed(read);
            this.count(read.len());
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a connection ended, and the close frame it gets.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    Idle,
    Evicted,
    WriteStalled,
    /// A message was not finished within the message timeout.
    SlowMessage,
    /// The budget could not hold what the client sent.
    Busy,
    Protocol(CloseCode, String),
    Io(String),
}

/// Serves one upgraded WebSocket connection until it ends.
pub async fn serve_websocket<S>(
    hub: Arc<Hub>,
    mut ws: WebSocketStream<Metered<S>>,
    peer: String,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.start_flusher();
    let (id, mut queue, outbox) = hub.connect();
    debug!("client {id} connected from {peer}");
    let limits = &hub.limits;
    let idle = limits.idle_timeout();
    let message_timeout = limits.message_timeout();
    let write_timeout = limits.write_timeout();
    let now = Instant::now();
    let mut deadline = now + idle;
    let mut pacer = Pacer::for_bytes(limits, now);
    let mut watches = Pacer::new(WATCH_RATE, WATCH_BURST, now);
    // A packet read but not delivered yet: its sender is over its pace, or the budget has no
    // room for what it fans out. The socket is not read meanwhile.
    let mut held: Option<Held> = None;
    // One timer for every deadline. It is moved only to an earlier time, or once it has
    // fired: a deadline that moved later (the idle deadline, after every packet) costs one
    // early wake that finds nothing due, not a timer update per packet.
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    // Futures kept across iterations, so that their waiters stay registered instead of
    // being queued and unqueued (under shared locks) on every turn of the loop.
    let mut flush = std::pin::pin!(outbox.wake.notified());
    let mut shutdown = std::pin::pin!(shutdown.changed());

    let end = loop {
        let now = Instant::now();
        if let Some(h) = held.take() {
            if h.paced_until.is_some_and(|at| at > now) {
                held = Some(h);
            } else if !hub.budget.has_room(Share::Deliver) {
                held = Some(Held {
                    paced_until: None,
                    waiting_since: Some(h.waiting_since.unwrap_or(now)),
                    ..h
                });
            } else if let Err(end) = deliver(&hub, id, h, &mut pacer, &mut watches) {
                break end;
            }
        }
        // A message in progress must end in time; with none in progress, look again a
        // message timeout from now (a message that starts meanwhile gets at most twice it).
        // A packet waiting for room in the budget waits at most as long.
        let message_due = ws.get_ref().started.unwrap_or(now) + message_timeout;
        let wake = match &held {
            Some(Held {
                paced_until: Some(at), ..
            }) => *at,
            Some(Held {
                waiting_since: Some(since),
                ..
            }) => *since + message_timeout,
            _ => deadline.min(message_due),
        };
        if wake < timer.deadline() || timer.deadline() <= now {
            timer.as_mut().reset(wake);
        }
        let waiting_for_room = held.as_ref().is_some_and(|h| h.waiting_since.is_some());
        tokio::select! {
            frame = ws.next(), if held.is_none() => {
                let now = Instant::now();
                deadline = now + idle;
                let text = match frame {
                    None => break End::ClientClosed,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        break End::Protocol(CloseCode::Unsupported, "binary frames are not used".into());
                    }
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    // Pings are answered by tungstenite; pongs and raw frames need nothing.
                    Some(Ok(_)) => {
                        ws.get_mut().message_done();
                        continue;
                    }
                    Some(Err(e)) => break classify(e),
                };
                let cost = text.len() + PACKET_COST;
                let packet = match serde_json::from_str::<ServerboundPacket>(&text) {
                    Ok(packet) => packet,
                    Err(e) => break End::Protocol(CloseCode::Policy, format!("malformed packet: {e}")),
                };
                drop(text);
                // What receiving it cost stays charged until it is delivered.
                let receipt = ws.get_mut().take_charge();
                if ws.get_ref().at_clean_boundary() {
                    // Nothing unread is buffered: a fresh stream drops the large buffer.
                    let config = *ws.get_config();
                    ws = WebSocketStream::from_raw_socket(ws.into_inner(), Role::Server, Some(config)).await;
                }
                if let ServerboundPacket::Join { hash } = &packet {
                    // Room hashes stay out of logs: they name a meeting.
                    match hash {
                        Some(_) => debug!("client {id} joins a room"),
                        None => debug!("client {id} leaves its room"),
                    }
                }
                let mut at = pacer.ready_at(now, cost);
                if matches!(packet, ServerboundPacket::WatchRooms(_)) {
                    at = at.max(watches.ready_at(now, 1));
                }
                if let Some(at) = at {
                    // Time spent paused by us is not the client's silence.
                    deadline = deadline.max(at + idle);
                }
                // Delivered at the top of the loop when its pace and the budget allow.
                held = Some(Held { packet, cost, receipt, paced_until: at, waiting_since: None });
            }
            () = std::future::poll_fn(|cx| hub.budget.poll_room(cx, Share::Deliver)), if waiting_for_room => {
                // Delivered at the top of the loop. Time spent waiting is not silence.
                deadline = Instant::now() + idle;
            }
            () = &mut flush => {
                flush.set(outbox.wake.notified());
                // Cleared before draining: a packet queued from here on schedules it again.
                outbox.scheduled.store(false, Ordering::Release);
                match feed_queued(&mut ws, &mut queue, &outbox.bytes, write_timeout).await {
                    Ok(Drained::All) => {}
                    // A long queue is written a batch at a time, with the socket read between.
                    Ok(Drained::More) => outbox.wake.notify_one(),
                    Ok(Drained::Closed) => break End::Evicted,
                    Err(end) => break end,
                }
                if let Err(end) = step(write_timeout, ws.flush()).await {
                    break end;
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                let metered = ws.get_ref();
                if held.as_ref().and_then(|h| h.waiting_since).is_some_and(|t| t + message_timeout <= now) {
                    // Nobody made room for it in all that time: the relay is overloaded.
                    break End::Busy;
                } else if held.is_none() && metered.started.is_some_and(|t| t + message_timeout <= now) {
                    break match metered.budget_wait {
                        // Its sender was not slow: the relay did not read for want of room.
                        Some(_) => End::Busy,
                        None => End::SlowMessage,
                    };
                } else if held.is_none() && deadline <= now {
                    break End::Idle;
                }
            }
            _ = &mut shutdown => break End::Shutdown,
        }
    };

    hub.disconnect(id);
    let close = match &end {
        End::ClientClosed | End::Io(_) | End::WriteStalled => None,
        End::Shutdown => Some((CloseCode::Away, "server shutting down")),
        End::Idle => Some((CloseCode::Normal, "idle timeout")),
        End::Evicted => Some((CloseCode::Policy, "too slow: send queue full")),
        End::SlowMessage => Some((CloseCode::Policy, "message not finished in time")),
        End::Busy => Some((CloseCode::Again, "relay busy: try again later")),
        End::Protocol(code, reason) => Some((*code, reason.as_str())),
    };
    match &end {
        End::ClientClosed => debug!("client {id} disconnected"),
        End::Shutdown | End::Idle => debug!("client {id} closed: {end:?}"),
        End::Io(e) => debug!("client {id} connection error: {e}"),
        End::Evicted | End::WriteStalled | End::SlowMessage | End::Busy => {
            warn!("client {id} ({peer}) dropped: {end:?}")
        }
        End::Protocol(code, reason) => warn!("client {id} ({peer}) closed with {code}: {reason}"),
    }
    if let Some((code, reason)) = close {
        // Close frame reasons are limited to 123 bytes.
        let reason = truncate(reason, 120);
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(write_timeout.min(Duration::from_secs(2)), ws.close(Some(frame))).await;
    }
    if matches!(end, End::Shutdown) {
        info!("closed client {id} for shutdown");
    }
}

/// A packet read and not yet delivered.
#[derive(Debug)]
struct Held {
    packet: ServerboundPacket,
    /// What it costs its sender's pace.
    cost: usize,
    /// What receiving it was charged to the budget, carried until it is delivered.
    receipt: Charge,
    /// Its sender's pace lets it go at this time.
    paced_until: Option<Instant>,
    /// Since when it waits for room in the budget.
    waiting_since: Option<Instant>,
}

/// Hands a packet to the hub and charges its sender for it.
fn deliver(hub: &Hub, id: ClientId, held: Held, pacer: &mut Pacer, watches: &mut Pacer) -> Result<(), End> {
    let now = Instant::now();
    if matches!(held.packet, ServerboundPacket::WatchRooms(_)) {
        watches.charge(now, 1);
    }
    match hub.handle(id, held.packet, held.receipt) {
        Ok(fanned_out) => {
            pacer.charge(now, held.cost + fanned_out);
            Ok(())
        }
        Err(e) => Err(End::Protocol(CloseCode::Policy, e.to_string())),
    }
}

/// How far [`feed_queued`] got.
enum Drained {
    /// The queue is empty.
    All,
    /// A batch was fed and more is queued.
    More,
    /// The queue is empty and closed: the hub evicted the client.
    Closed,
}

/// Feeds what is queued (up to a batch) to the WebSocket, which writes to the socket only
/// when its buffer fills: the caller flushes once after, so a burst of small packets (a join
/// into a big room) costs one syscall, not hundreds. Each step may take the write timeout: a
/// slow reader gets a large message bit by bit, one that stopped reading is dropped.
async fn feed_queued<S>(
    ws: &mut WebSocketStream<S>,
    queue: &mut mpsc::Receiver<Utf8Bytes>,
    queued_bytes: &AtomicUsize,
    write_timeout: Duration,
) -> Result<Drained, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for _ in 0..256 {
        let text = match queue.try_recv() {
            Ok(text) => text,
            Err(mpsc::error::TryRecvError::Empty) => return Ok(Drained::All),
            Err(mpsc::error::TryRecvError::Disconnected) => return Ok(Drained::Closed),
        };
        queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
        write_text(ws, text, write_timeout).await?;
    }
    Ok(Drained::More)
}

/// Feeds one message; a large one as fragments sliced from its shared bytes.
async fn write_text<S>(ws: &mut WebSocketStream<S>, text: Utf8Bytes, write_timeout: Duration) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if text.len() <= FRAGMENT {
        return step(write_timeout, ws.feed(Message::Text(text))).await;
    }
    let bytes: &Bytes = text.as_ref();
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT).min(bytes.len());
        let opcode = match start {
            0 => OpCode::Data(Data::Text),
            _ => OpCode::Data(Data::Continue),
        };
        let frame = Frame::message(bytes.slice(start..end), opcode, end == bytes.len());
        step(write_timeout, ws.feed(Message::Frame(frame))).await?;
        start = end;
    }
    Ok(())
}

/// One write step with the write timeout. Most steps only fill the WebSocket's buffer and
/// are done when first polled, so the timeout (and its clock reading) is set up only for a
/// step that has to wait.
async fn step(write_timeout: Duration, write: impl Future<Output = Result<(), tungstenite::Error>>) -> Result<(), End> {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => timeout(write_timeout, write).await,
    };
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::Io(e.to_string())),
        Err(_) => Err(End::WriteStalled),
    }
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
            outbox: Arc::default(),
        };
        assert!(q.push("12345".into(), 8));
        assert!(!q.push("12345".into(), 8), "byte bound");
        assert!(q.push("123".into(), 8));
        assert!(!q.push("".into(), 8), "count bound");
        assert_eq!(q.outbox.bytes.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn pacer_allows_a_burst_then_the_rate_and_charges_before_delivery() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000.0, 5000.0, t0);
        assert_eq!(p.ready_at(t0, 5000), None, "a full burst passes");
        p.charge(t0, 5000);
        let wait = p.ready_at(t0, 500).expect("over budget");
        assert_eq!(wait - t0, Duration::from_millis(500), "waits before, not after");
        assert_eq!(p.ready_at(wait, 500), None);
        p.charge(wait, 500);
        // A cost above the burst waits for a full bucket, then overdraws.
        let full = p.ready_at(wait, 9000).expect("over budget");
        assert_eq!(full - wait, Duration::from_secs(5));
        p.charge(full, 9000);
        assert_eq!(p.ready_at(full, 1).map(|t| t - full), Some(Duration::from_millis(4001)));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(p.ready_at(later, 5000), None);
        p.charge(later, 5000);
        assert!(p.ready_at(later, 1).is_some());
    }

    #[test]
    fn relayed_messages_are_charged_once_and_released_by_the_last_reader() {
        let hub = Hub::new(
            Limits {
                buffered_bytes: 10_000,
                max_message_size: 10_000,
                ..Limits::default()
            },
            "v".into(),
        );
        // What receiving it cost (here 3,000 bytes) is taken over and topped up.
        let receipt = Charge::try_new(&hub.budget, 3000).expect("fits");
        let text = hub.charged("x".repeat(5000), receipt);
        let copies: Vec<Utf8Bytes> = (0..20).map(|_| text.clone()).collect();
        assert_eq!(
            hub.budget.used(),
            5000 + PACKET_OVERHEAD,
            "one charge for twenty recipients"
        );
        drop(text);
        drop(copies);
        assert_eq!(hub.budget.used(), 0);
    }

    #[test]
    fn metered_reads_charge_beyond_the_free_part_and_hand_the_charge_on() {
        let budget = Budget::new(1000);
        let mut m = Metered::new((), budget.clone());
        m.count(UNCHARGED_RECEIVE);
        assert_eq!(budget.used(), 0);
        assert!(m.started.is_some());
        m.count(600);
        assert_eq!(budget.used(), 600);
        let receipt = m.take_charge();
        assert_eq!((budget.used(), m.partial, m.charged, m.started), (600, 0, 0, None));
        drop(receipt);
        assert_eq!(budget.used(), 0);
        m.count(UNCHARGED_RECEIVE + 10);
        m.message_done();
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn frame_tracker_follows_headers_and_stops_reads_at_large_frame_ends() {
        let mut t = FrameTracker::default();
        // A small masked frame (5 bytes), then a large one (100 KiB) split across reads.
        let mut bytes = vec![0x81, 0x85, 0, 0, 0, 0];
        bytes.extend(b"hello");
        bytes.extend([0x81, 0x80 | 127]);
        bytes.extend((100u64 << 10).to_be_bytes());
        bytes.extend([0, 0, 0, 0]);
        t.feed(&bytes);
        assert!(t.large && t.remaining == 100 << 10);
        assert_eq!(t.read_limit(), Some(100 << 10));
        t.feed(&vec![b'x'; (100 << 10) - 10]);
        assert_eq!(t.read_limit(), Some(10));
        assert!(!t.at_end());
        t.feed(&[b'x'; 10]);
        assert!(t.at_end(), "the read ended with the large frame");
        assert_eq!(t.read_limit(), None);
        t.feed(&[0x81, 0x82, 0, 0]);
        assert!(!t.at_end());
        assert_eq!(t.read_limit(), None, "small messages are read freely");
        // A fragmented message: a large first frame, then a ping, then a small final frame.
        // Reads stop at every frame's (and header's) end until the message ends, so the read
        // that ends it cannot also take the start of the next one.
        let mut t = FrameTracker::default();
        let mut first = vec![0x01, 0x80 | 127];
        first.extend((70u64 << 10).to_be_bytes());
        first.extend([0, 0, 0, 0]);
        first.extend(vec![b'x'; 70 << 10]);
        t.feed(&first);
        assert!(!t.at_end(), "the message goes on");
        assert_eq!(t.read_limit(), Some(2), "the next header's first two bytes");
        t.feed(&[0x89, 0x80]);
        assert_eq!(t.read_limit(), Some(4), "the ping's mask");
        t.feed(&[0, 0, 0, 0]);
        t.feed(&[0x80, 0x83]);
        t.feed(&[0, 0, 0, 0]);
        assert_eq!(t.read_limit(), Some(3));
        t.feed(b"end");
        assert!(t.at_end(), "the read ended with the message");
        assert_eq!(t.read_limit(), None);
        // A 16-bit length.
        let mut t = FrameTracker::default();
        t.feed(&[0x81, 0x80 | 126, 0x01, 0x00, 0, 0, 0]);
        assert_eq!(t.header_len, 7);
        t.feed(&[0]);
        assert_eq!((t.remaining, t.large), (256, false));
    }

    impl FrameTracker {
        fn at_end(&self) -> bool {
            self.clean_after_large
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }

    /// A stream that counts the writes that reach it.
    struct CountWrites<S> {
        inner: S,
        writes: Arc<AtomicUsize>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for CountWrites<S> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for CountWrites<S> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let done = Pin::new(&mut self.inner).poll_write(cx, buf);
            if done.is_ready() {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            done
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    type TestClient = WebSocketStream<tokio::io::DuplexStream>;

    /// A client served by `hub` over an in-memory pipe, and the count of the relay's writes
    /// to it.
    async fn client(hub: &Arc<Hub>, shutdown: &watch::Receiver<bool>) -> (TestClient, Arc<AtomicUsize>) {
        let (near, far) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = CountWrites {
            inner: far,
            writes: writes.clone(),
        };
        let config = hub.websocket_config();
        let server =
            WebSocketStream::from_raw_socket(Metered::new(counted, hub.budget.clone()), Role::Server, Some(config))
                .await;
        tokio::spawn(serve_websocket(hub.clone(), server, "test".into(), shutdown.clone()));
        (WebSocketStream::from_raw_socket(near, Role::Client, None).await, writes)
    }

    async fn send(ws: &mut TestClient, packet: &ServerboundPacket) {
        let text = serde_json::to_string(packet).unwrap();
        ws.send(Message::text(text)).await.unwrap();
    }

    async fn receive(ws: &mut TestClient) -> serde_json::Value {
        loop {
            match ws.next().await.expect("open").expect("frame") {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                _ => continue,
            }
        }
    }

    /// Every client reads its `init`, joins the room `hash` (a byte repeated) and sees
    /// everyone's join.
    async fn join_all(clients: &mut [&mut TestClient], hash: &str) {
        let room: keks_proto::packets::RoomHash = hash.repeat(32).parse().unwrap();
        for ws in clients.iter_mut() {
            assert!(receive(ws).await.get("init").is_some());
            send(ws, &ServerboundPacket::Join { hash: Some(room) }).await;
        }
        let members = clients.len();
        for ws in clients.iter_mut() {
            for _ in 0..members {
                assert!(receive(ws).await.get("client_join").is_some());
            }
        }
    }

    /// Broadcasts `m0` .. `m{n-1}`, written together.
    async fn burst(ws: &mut TestClient, n: usize) {
        for i in 0..n {
            let relay = ServerboundPacket::Relay {
                recipient: None,
                message: format!("m{i}"),
            };
            ws.feed(Message::text(serde_json::to_string(&relay).unwrap()))
                .await
                .unwrap();
        }
        ws.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_burst_reaches_each_member_in_one_write_and_in_order() {
        let hub = Arc::new(Hub::new(Limits::default(), "v".into()));
        let (_stop, shutdown) = watch::channel(false);
        let (mut a, _) = client(&hub, &shutdown).await;
        let (mut b, b_writes) = client(&hub, &shutdown).await;
        let (mut c, c_writes) = client(&hub, &shutdown).await;
        join_all(&mut [&mut a, &mut b, &mut c], "ab").await;
        let before = (b_writes.load(Ordering::SeqCst), c_writes.load(Ordering::SeqCst));
        // Fifty messages in one go, as a burst of candidates would be.
        burst(&mut a, 50).await;
        for ws in [&mut b, &mut c] {
            for i in 0..50 {
                let got = receive(ws).await;
                assert_eq!(got["message"]["message"], format!("m{i}"), "in order");
            }
        }
        let writes = (
            b_writes.load(Ordering::SeqCst) - before.0,
            c_writes.load(Ordering::SeqCst) - before.1,
        );
        // The relay reads the burst as it comes (it may arrive in a few reads), so allow a
        // few writes; one per message would be fifty.
        assert!(writes.0 <= 3 && writes.1 <= 3, "writes for 50 messages: {writes:?}");
    }

    #[tokio::test]
    async fn an_evicted_member_is_closed_and_the_others_keep_their_messages() {
        let limits = Limits {
            send_queue_messages: 8,
            relay_burst_bytes: 1 << 20,
            ..Limits::default()
        };
        let hub = Arc::new(Hub::new(limits, "v".into()));
        let (_stop, shutdown) = watch::channel(false);
        let (mut a, _) = client(&hub, &shutdown).await;
        let (mut b, _) = client(&hub, &shutdown).await;
        join_all(&mut [&mut a, &mut b], "cd").await;
        // More than b's queue holds, within one coalescing window: b is evicted before its
        // task ever runs, and must still be told so.
        burst(&mut a, 100).await;
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match b.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("b is closed promptly");
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Policy));
        // a was told b left, and the room still works for it.
        let leave = receive(&mut a).await;
        assert!(leave.get("client_leave").is_some(), "a is told b left: {leave}");
    }
}
