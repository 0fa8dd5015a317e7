//! One room: a task that owns the [`Session`], a [`Negotiator`] and a WebRTC peer
//! connection per member, and the transfers running over them.
//!
//! The application holds a [`Room`] handle (commands in) and a receiver of [`RoomEvent`]s
//! (events out). WebRTC callbacks never touch state: each only sends an [`Internal`] event
//! into the task's channel, and the task decides. Per-transfer tasks move the bytes between
//! a data channel and a file and report progress the same way.
//!
//! ```text
//! Room::provide_file / download / chat ──Command──▶ room task ◀──Internal── webrtc callbacks
//!                                                      │                    transfer tasks
//!        RoomEvent (members, offers, progress) ◀───────┘
//! ```
//!
//! Resources flow only on request (docs/PROTOCOL.md): a file we provide gets one data channel,
//! labelled with its id, per member that requests it (a port one per connection); a data
//! channel a member opens to us is accepted only when its label is a file or port we
//! requested from that member. Who requested what is keks-proto's bookkeeping alone:
//! [`RemoteResources`] (what we requested, what arrived, what ended) and [`LocalResources`]
//! (who receives each of ours, and the teardowns of a `request_stop`, a `provide_stop` or a
//! departure). Beside them the task keeps only runtime handles, keyed the same way
//! ([`TransferKey`]): sources, sinks, abort handles, the upload queue, forwarded connections
//! waiting for their channel.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keks_proto::crypto::{RoomKey, room_hash};
use keks_proto::negotiation::{Action, Input, Negotiator, SignalingState};
use keks_proto::packets::{
    ChatMessage, ClientId, ClientboundPacket, IceCandidate, ProvideInfo, RelayMessage, ResourceId, ResourceKind,
    ServerboundPacket,
};
use keks_proto::resources::{Incoming, LocalResources, MAX_WAITING_CHANNELS, RemoteResources, ResourceError, Teardown};
use keks_proto::session::{Event, Output, Session};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::config::IceServer;
use crate::media::{TrackFeed, Tracks};
use crate::server::Server;
use crate::signaling::{Signaling, SignalingEvent};
use crate::stream::{ByteStream, LocalEnd, StreamKey, bridge};
use crate::transfer::{download, upload};
use crate::trust::Trust;

/// Bytes a sender keeps in flight per data channel before `send` waits (the window): proto's
/// high watermark. The crate's send waits below it, so the window needs no polling here.
pub const SEND_WINDOW: usize = keks_proto::file::HIGH_WATERMARK;
/// Why an upload whose channel never opened failed (the member refused it, or left).
pub(crate) const NOT_OPENED: &str = "the data channel closed before it opened";
/// Times an upload whose channel closed before it opened is given a new channel: the webrtc
/// crate reuses the stream id of a channel we closed before SCTP finished resetting it, and
/// the reset then closes the new channel (the member never saw it).
const OPEN_RETRIES: u8 = 3;
/// Requests one member may have waiting for a channel.
const MAX_QUEUED_UPLOADS: usize = 4096;
/// Bridged connections at once, in and out, in one room.
const MAX_STREAMS: usize = 256;
/// Commands waiting for the room task.
const COMMAND_QUEUE: usize = 64;
/// Events waiting for the application; when it does not read them the room task waits.
const EVENT_QUEUE: usize = 1024;
/// How long the sender waits for SCTP to report the last bytes acknowledged.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an application keeps the connection open after its last upload finished, for
/// the receiver to read the tail, unless the receiver leaves first.
pub const LINGER: Duration = Duration::from_secs(10);

/// How a room is joined.
#[derive(Debug, Clone)]
pub struct RoomOptions {
    /// The relay.
    pub server: Server,
    /// How its certificate is trusted.
    pub trust: Trust,
    /// The room secret (the part after `#` in the browser's URL). Never logged.
    pub secret: String,
    /// The name other members see.
    pub username: String,
    /// WebRTC settings.
    pub ice: IceOptions,
}

/// WebRTC network settings.
#[derive(Debug, Clone, Default)]
pub struct IceOptions {
    /// Local addresses to gather host candidates on; empty means every interface. A
    /// loopback address here is used as given (tests in a namespace with only `lo`).
    pub bind: Vec<IpAddr>,
    /// ICE servers to use in addition to the server's `/config.json`.
    pub extra_servers: Vec<IceServer>,
    /// Do not fetch `/config.json` (no STUN/TURN unless `extra_servers`).
    pub skip_server_config: bool,
}

/// A transfer's identity: the member on the other end and the resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferKey {
    /// The other member.
    pub peer: ClientId,
    /// The file resource.
    pub id: ResourceId,
}

/// How a transfer is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The data channel opened.
    Started,
    /// Bytes moved so far.
    Bytes(u64),
    /// All bytes moved and the end marker was exchanged.
    Done(u64),
    /// It stopped before the end.
    Failed(String),
}

/// What happened in the room, for the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum RoomEvent {
    /// The signaling connection is up (again).
    Connected,
    /// The signaling connection dropped; it is retried.
    Disconnected {
        /// Why.
        reason: String,
        /// Whether a connection was ever made.
        ever_connected: bool,
    },
    /// The room cannot go on (a refused certificate); the task has ended.
    Fatal(String),
    /// We are in the room as `id`.
    Ready {
        /// Our id.
        id: ClientId,
    },
    /// A member appeared.
    Joined(ClientId),
    /// A member told its name.
    Identified {
        /// Who.
        id: ClientId,
        /// The name.
        username: String,
    },
    /// A member left.
    Left(ClientId),
    /// A member offers a resource.
    Provided {
        /// Who.
        from: ClientId,
        /// What.
        info: ProvideInfo,
    },
    /// A member changed the description of a resource it provides (same id).
    ProvideUpdated {
        /// Who.
        from: ClientId,
        /// The new description.
        info: ProvideInfo,
    },
    /// A member withdrew a resource.
    ProvideStopped {
        /// Who.
        from: ClientId,
        /// Which.
        id: ResourceId,
    },
    /// A chat message.
    Chat {
        /// Who.
        from: ClientId,
        /// What.
        message: ChatMessage,
    },
    /// A member requested one of our files; an upload follows.
    Requested(TransferKey),
    /// Progress of sending one of our files to a member.
    Upload(TransferKey, Progress),
    /// Progress of receiving a member's file.
    Download(TransferKey, Progress),
    /// A connection to a port: `outgoing` when a member connected to a port we expose,
    /// otherwise one we forwarded to a member's port. `Done` counts the bytes both ways.
    Stream {
        /// Which connection.
        key: StreamKey,
        /// Whether we are the exposing side.
        outgoing: bool,
        /// Started, then Done or Failed.
        progress: Progress,
    },
    /// The WebRTC connection to a member changed state.
    PeerConnection {
        /// Who.
        peer: ClientId,
        /// connected, failed, ...
        state: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The room task has ended.
    #[error("the room has been left")]
    Gone,
    /// The session refused (not connected yet, unknown resource...).
    #[error(transparent)]
    Session(#[from] keks_proto::session::SessionError),
    /// The member or resource does not exist.
    #[error("{0}")]
    Unknown(String),
    /// The resource bookkeeping refused (already requested, too many connections waiting...).
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

/// Where a provided resource's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, opened anew for each requester.
    Path(PathBuf),
    /// A TCP port (a resource of kind `port`): each request is a new connection to it.
    Port(SocketAddr),
}

/// A file being received: where the bytes go and how many are announced.
pub struct Sink {
    /// The destination.
    pub writer: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    /// The announced size, if any: more is a failure, and so is less at `end`.
    pub expected: Option<u64>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Command {
    Provide {
        info: ProvideInfo,
        source: Source,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    StopProviding(ResourceId),
    Download {
        key: TransferKey,
        sink: Sink,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    CancelDownload(TransferKey),
    Chat(ChatMessage),
    Forward {
        key: TransferKey,
        stream: Pending,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    ProvideTrack {
        info: ProvideInfo,
        feed: TrackFeed,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
}

/// A forwarded connection waiting for its channel.
struct Pending(Box<dyn ByteStream>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// The application's handle to a room. Dropping every clone leaves the room.
#[derive(Debug, Clone)]
pub struct Room {
    /// Bounded: an application that floods commands waits for the room task.
    tx: mpsc::Sender<Command>,
}

impl Room {
    /// Joins a room: derives the key and hash (a quarter second), connects and starts the
    /// room task.
    pub async fn join(options: RoomOptions) -> (Room, mpsc::Receiver<RoomEvent>) {
        let secret = options.secret.clone();
        // PBKDF2 with 250,000 rounds, twice: keep it off the async workers.
        let derived = tokio::task::spawn_blocking(move || (RoomKey::derive(&secret), room_hash(&secret))).await;
        let (key, hash) = match derived {
            Ok(kh) => kh,
            // spawn_blocking only fails if the derivation panicked, which it does not.
            Err(e) => panic!("room key derivation failed: {e}"),
        };
        let session = Session::with_key(key, hash, options.username.clone());
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(run(options, session, commands, events_tx));
        (Room { tx }, events)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RoomError>>) -> Command,
    ) -> Result<T, RoomError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| RoomError::Gone)?;
        rx.await.map_err(|_| RoomError::Gone)?
    }

    /// Offers a file to the room (and to everyone who joins later). `info.kind` should be
    /// [`ResourceKind::File`] with its size.
    pub async fn provide(&self, info: ProvideInfo, source: Source) -> Result<(), RoomError> {
        self.call(|reply| Command::Provide { info, source, reply }).await
    }

    /// Withdraws a resource; running uploads of it stop.
    pub async fn stop_providing(&self, id: ResourceId) -> Result<(), RoomError> {
        self.tx
            .send(Command::StopProviding(id))
            .await
            .map_err(|_| RoomError::Gone)
    }

    /// Requests a member's file into `sink`. Progress arrives as [`RoomEvent::Download`].
    pub async fn download(&self, key: TransferKey, sink: Sink) -> Result<(), RoomError> {
        self.call(|reply| Command::Download { key, sink, reply }).await
    }

    /// Stops a download (`request_stop`, channel closed).
    pub async fn cancel_download(&self, key: TransferKey) -> Result<(), RoomError> {
        self.tx
            .send(Command::CancelDownload(key))
            .await
            .map_err(|_| RoomError::Gone)
    }

    /// Sends a chat message to everyone.
    pub async fn chat(&self, message: ChatMessage) -> Result<(), RoomError> {
        self.tx.send(Command::Chat(message)).await.map_err(|_| RoomError::Gone)
    }

    /// Carries one connection to a member's exposed port: requests the port and bridges
    /// `stream` with the channel the member opens. Progress arrives as
    /// [`RoomEvent::Stream`].
    pub async fn forward(&self, key: TransferKey, stream: Box<dyn ByteStream>) -> Result<(), RoomError> {
        let (reply, rx) = oneshot::channel();
        let stream = Pending(stream);
        self.tx
            .send(Command::Forward { key, stream, reply })
            .await
            .map_err(|_| RoomError::Gone)?;
        rx.await.map_err(|_| RoomError::Gone)?
    }

    /// Offers a media track (camera, microphone) fed with encoded samples; see [`crate::media`].
    /// `info.kind` must be [`ResourceKind::Track`] with the feed codec's `track_kind`. It is
    /// sent to each member that requests it until [`Room::stop_providing`].
    pub async fn provide_track(&self, info: ProvideInfo, feed: TrackFeed) -> Result<(), RoomError> {
        self.call(|reply| Command::ProvideTrack { info, feed, reply }).await
    }
}

/// What callbacks and transfer tasks tell the room task.
pub(crate) enum Internal {
    NegotiationNeeded(ClientId),
    LocalCandidate(ClientId, IceCandidate),
    ConnectionState(ClientId, RTCPeerConnectionState),
    DataChannel(ClientId, Arc<dyn DataChannel>),
    Upload(TransferKey, Progress),
    /// Every byte and `end` were handed to the channel: a receiver that leaves from now on
    /// has what it needs (it finishes on `end`).
    EndSent(TransferKey, u64),
    Download(TransferKey, Progress),
    Stream(StreamKey, Progress),
}

/// The webrtc callbacks of one member's peer connection: each only forwards an event.
struct Handler {
    peer: ClientId,
    /// Unbounded on purpose: the webrtc driver awaits these callbacks, and the room task
    /// awaits the driver (create_offer...). A bounded channel could deadlock the two. The
    /// events come from our own stack at negotiation pace, not at the rate of network bytes.
    tx: mpsc::UnboundedSender<Internal>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        let _ = self.tx.send(Internal::NegotiationNeeded(self.peer));
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let candidate = IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_m_line_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                let _ = self.tx.send(Internal::LocalCandidate(self.peer, candidate));
            }
            Err(e) => log::warn!("cannot encode a local ICE candidate: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Internal::ConnectionState(self.peer, state));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.tx.send(Internal::DataChannel(self.peer, data_channel));
    }
}

/// One member's WebRTC state.
struct Peer {
    pc: Arc<dyn PeerConnection>,
    negotiator: Negotiator,
}

/// A running upload's task.
struct Upload {
    abort: AbortHandle,
    /// Stops it before its end went out, closing the channel (see `transfer::upload`).
    stop: oneshot::Sender<()>,
}

/// A download we asked for and whose channel has not arrived yet, or is running.
enum Download {
    Waiting(Sink),
    Running(AbortHandle),
}

struct Task {
    options: RoomOptions,
    session: Session,
    signaling: Signaling,
    ice_servers: Vec<IceServer>,
    peers: HashMap<ClientId, Peer>,
    /// The resources others provide and where each we requested stands: the only record of
    /// what we asked for; a channel it refuses is closed.
    remote: RemoteResources,
    /// Our resources and who receives each: the only record of what we send to whom.
    local: LocalResources,
    /// Where the bytes of each file or port of ours come from (tracks are in `tracks`).
    sources: HashMap<ResourceId, Source>,
    uploads: HashMap<TransferKey, Upload>,
    /// Uploads stopped before their end that closed their channel: the member's upload slot
    /// (`opening`) stays theirs until the task reports, and that report, like any other of
    /// theirs, is not passed on (the stop was).
    stopping: HashMap<TransferKey, AbortHandle>,
    /// How often each upload's channel was opened again after it closed unopened.
    open_retries: HashMap<TransferKey, u8>,
    downloads: HashMap<TransferKey, Download>,
    events: mpsc::Sender<RoomEvent>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    /// Every data channel handle of each member's connection (see [`Task::keep_channel`]).
    channels: HashMap<ClientId, Vec<Arc<dyn DataChannel>>>,
    /// Uploads whose `end` went out and that wait for SCTP's acknowledgement, with their size.
    finishing: HashMap<TransferKey, u64>,
    /// Uploads requested and waiting for their channel, per member.
    queued_uploads: HashMap<ClientId, VecDeque<TransferKey>>,
    /// The upload running, per member (one at a time, see [`Task::on_requested`]).
    opening: HashMap<ClientId, TransferKey>,
    /// Connections of members that left while a download from them was still running.
    leaving: HashMap<ClientId, Arc<dyn PeerConnection>>,
    /// Whether peer connections resolve `.local` candidates; off after it failed once.
    mdns_queries: bool,
    /// Bridged port connections, and whether each is to a port we expose.
    streams: HashMap<StreamKey, (AbortHandle, bool)>,
    /// Forwarded connections waiting for the member's channel, oldest first.
    waiting_streams: HashMap<TransferKey, VecDeque<Box<dyn ByteStream>>>,
    next_stream: u64,
    /// Media tracks we provide and the members receiving them.
    tracks: Tracks,
}

async fn run(
    options: RoomOptions,
    session: Session,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<RoomEvent>,
) {
    let (signaling, mut signaling_events) = Signaling::spawn(options.server.clone(), options.trust.clone());
    let (internal_tx, mut internal) = mpsc::unbounded_channel();
    let mut task = Task {
        options,
        session,
        signaling,
        ice_servers: Vec::new(),
        peers: HashMap::new(),
        remote: RemoteResources::new(),
        local: LocalResources::new(),
        sources: HashMap::new(),
        uploads: HashMap::new(),
        stopping: HashMap::new(),
        open_retries: HashMap::new(),
        downloads: HashMap::new(),
        events,
        internal_tx,
        channels: HashMap::new(),
        finishing: HashMap::new(),
        queued_uploads: HashMap::new(),
        opening: HashMap::new(),
        leaving: HashMap::new(),
        mdns_queries: true,
        streams: HashMap::new(),
        waiting_streams: HashMap::new(),
        next_stream: 0,
        tracks: Tracks::default(),
    };
    loop {
        tokio::select! {
            event = signaling_events.recv() => {
                let Some(event) = event else { break };
                if !task.on_signaling(event).await {
                    break;
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                task.on_command(command).await;
            }
            Some(event) = internal.recv() => task.on_internal(event).await,
        }
        if task.events.is_closed() {
            break;
        }
    }
    task.close_all().await;
}

impl Task {
    async fn emit(&self, event: RoomEvent) {
        let _ = self.events.send(event).await;
    }

    async fn send(&self, packet: ServerboundPacket) {
        self.signaling.send(packet).await;
    }

    async fn relay(&self, to: ClientId, message: RelayMessage) {
        match self.session.send(Some(to), &message) {
            Ok(packet) => self.send(packet).await,
            Err(e) => log::warn!("cannot send to {to}: {e}"),
        }
    }

    /// False when the room must end.
    async fn on_signaling(&mut self, event: SignalingEvent) -> bool {
        match event {
            SignalingEvent::Connected { .. } => {
                if !self.options.ice.skip_server_config {
                    match crate::config::fetch_ice_servers(&self.options.server, &self.options.trust).await {
                        Ok(servers) => self.ice_servers = servers,
                        Err(e) => log::warn!("cannot read the server's /config.json ({e}); using no STUN/TURN servers"),
                    }
                }
                self.ice_servers.extend(self.options.ice.extra_servers.iter().cloned());
                self.emit(RoomEvent::Connected).await;
            }
            SignalingEvent::Disconnected {
                reason, ever_connected, ..
            } => {
                log::warn!("signaling: {reason}");
                self.emit(RoomEvent::Disconnected { reason, ever_connected }).await;
            }
            SignalingEvent::Failed(e) => {
                self.emit(RoomEvent::Fatal(e.to_string())).await;
                return false;
            }
            SignalingEvent::Packet(packet) => self.on_packet(packet).await,
        }
        true
    }

    async fn on_packet(&mut self, packet: ClientboundPacket) {
        let is_init = matches!(packet, ClientboundPacket::Init { .. });
        if is_init {
            // A new relay connection: every old peer is gone (ids are per connection).
            let old: Vec<ClientId> = self.peers.keys().copied().collect();
            for peer in old {
                self.drop_peer(peer, "the relay connection was renewed", true).await;
            }
        }
        for output in self.session.handle(packet) {
            match output {
                Output::Send(packet) => self.send(packet).await,
                Output::Event(event) => self.on_session_event(event).await,
            }
        }
    }

    async fn on_session_event(&mut self, event: Event) {
        match event {
            Event::Ready { id } => self.emit(RoomEvent::Ready { id }).await,
            Event::Joined { id } => self.emit(RoomEvent::Joined(id)).await,
            Event::Identified { id, username } => self.emit(RoomEvent::Identified { id, username }).await,
            Event::Left { id, .. } => {
                self.remote.member_left(id);
                self.local.member_left(id);
                self.drop_peer(id, "the member left", true).await;
                self.emit(RoomEvent::Left(id)).await;
            }
            Event::Provided { from, info } => {
                self.remember(from, &info);
                self.emit(RoomEvent::Provided { from, info }).await;
            }
            Event::ProvideUpdated { from, info } => {
                self.remember(from, &info);
                self.emit(RoomEvent::ProvideUpdated { from, info }).await;
            }
            Event::ProvideStopped { from, id } => {
                // A download whose channel arrived is not torn down: it finishes or fails on
                // its channel (keks-proto's rule: the sender withdraws a file right after
                // sending it, while its last bytes are still on the way).
                if let Some(teardown) = self.remote.provide_stopped(from, &id) {
                    self.stop_remote(teardown, "the member stopped providing it").await;
                }
                self.emit(RoomEvent::ProvideStopped { from, id }).await;
            }
            Event::Requested { from, id } => self.on_requested(from, id).await,
            Event::RequestStopped { from, id } => {
                if let Some(teardown) = self.local.request_stopped(from, &id) {
                    self.stop_local(teardown, "the member stopped the transfer").await;
                }
            }
            Event::Chat { from, message } => self.emit(RoomEvent::Chat { from, message }).await,
            Event::Offer { from, sdp } => self.negotiate(from, Input::RemoteOffer(sdp)).await,
            Event::Answer { from, sdp } => self.negotiate(from, Input::RemoteAnswer(sdp)).await,
            Event::IceCandidate { from, candidate } => self.negotiate(from, Input::RemoteCandidate(candidate)).await,
            Event::Ignored { from, reason } => log::debug!("ignored a message from {from:?}: {reason}"),
            // Previews and watched rooms are not ours to act on.
            Event::Preview { .. } | Event::RoomInfo { .. } => {}
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Provide { info, source, reply } => {
                let fits = matches!(
                    (&source, info.kind),
                    (Source::Path(_), ResourceKind::File) | (Source::Port(_), ResourceKind::Port)
                );
                let result = if fits {
                    let id = info.id.clone();
                    self.provide(info).await.map(|()| {
                        self.sources.insert(id, source);
                    })
                } else {
                    Err(RoomError::Unknown(format!(
                        "{} must be a file resource for a path, a port resource for a port",
                        info.id
                    )))
                };
                let _ = reply.send(result);
            }
            Command::StopProviding(id) => {
                match self.local.remove(&id) {
                    Ok(teardowns) => {
                        for teardown in teardowns {
                            self.stop_local(teardown, "it is no longer provided").await;
                        }
                    }
                    Err(e) => log::warn!("cannot stop providing {id}: {e}"),
                }
                self.tracks.remove(&id).await;
                self.sources.remove(&id);
                match self.session.provide_stop(&id) {
                    Ok(packet) => self.send(packet).await,
                    Err(e) => log::warn!("cannot stop providing {id}: {e}"),
                }
            }
            Command::Download { key, sink, reply } => {
                let result = if self.remote_kind(&key) != Some(ResourceKind::File) {
                    Err(RoomError::Unknown(format!(
                        "member {} offers no file {}",
                        key.peer, key.id
                    )))
                } else {
                    match self.remote.request(key.peer, &key.id) {
                        Ok(()) => {
                            self.downloads.insert(key.clone(), Download::Waiting(sink));
                            self.relay(key.peer, RelayMessage::Request { id: key.id.clone() }).await;
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    }
                };
                let _ = reply.send(result);
            }
            Command::CancelDownload(key) => match self.remote.request_stop(key.peer, &key.id) {
                Ok(teardown) => {
                    self.stop_remote(teardown, "cancelled").await;
                    self.relay(key.peer, RelayMessage::RequestStop { id: key.id.clone() })
                        .await;
                }
                // Withdrawn or its member left while it runs: only the runtime half is left.
                Err(e) => {
                    log::debug!("cancelling {}: {e}", key.id);
                    if let Some(Download::Running(h)) = self.downloads.remove(&key) {
                        h.abort();
                        self.emit(RoomEvent::Download(key.clone(), Progress::Failed("cancelled".into())))
                            .await;
                        self.reap(key.peer).await;
                    }
                }
            },
            Command::ProvideTrack { info, feed, reply } => {
                let result = if info.kind != ResourceKind::Track || info.track_kind != Some(feed.codec().track_kind()) {
                    Err(RoomError::Unknown(format!(
                        "{} must be a {:?} track resource",
                        info.id,
                        feed.codec().track_kind()
                    )))
                } else {
                    let (id, label) = (info.id.clone(), info.label.clone().unwrap_or_default());
                    self.provide(info).await.map(|()| self.tracks.provide(id, feed, label))
                };
                let _ = reply.send(result);
            }
            Command::Chat(message) => match self.session.send(None, &RelayMessage::Chat(message)) {
                Ok(packet) => self.send(packet).await,
                Err(e) => log::warn!("cannot send chat: {e}"),
            },
            Command::Forward { key, stream, reply } => {
                let too_many = || {
                    RoomError::Unknown(format!(
                        "too many connections to {} at once (at most {MAX_STREAMS}, {MAX_WAITING_CHANNELS} waiting)",
                        key.id
                    ))
                };
                let result = if self.remote_kind(&key) != Some(ResourceKind::Port) {
                    Err(RoomError::Unknown(format!(
                        "member {} exposes no port {}",
                        key.peer, key.id
                    )))
                } else if self.streams.len() >= MAX_STREAMS {
                    Err(too_many())
                } else {
                    // Each connection is one more request, and one more channel to wait for.
                    match self.remote.request(key.peer, &key.id) {
                        Ok(()) => {
                            self.waiting_streams.entry(key.clone()).or_default().push_back(stream.0);
                            self.relay(key.peer, RelayMessage::Request { id: key.id.clone() }).await;
                            Ok(())
                        }
                        Err(ResourceError::TooManyWaiting(_)) => Err(too_many()),
                        Err(e) => Err(e.into()),
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    async fn on_internal(&mut self, event: Internal) {
        match event {
            Internal::NegotiationNeeded(peer) => self.negotiate(peer, Input::NegotiationNeeded).await,
            Internal::LocalCandidate(peer, candidate) => {
                if self.peers.contains_key(&peer) {
                    self.relay(peer, RelayMessage::IceCandidate(candidate)).await;
                }
            }
            Internal::ConnectionState(peer, state) => {
                if self.peers.contains_key(&peer) {
                    self.tracks.connection_state(peer, state);
                    log::info!("connection to {peer}: {state}");
                    self.emit(RoomEvent::PeerConnection {
                        peer,
                        state: state.to_string(),
                    })
                    .await;
                }
            }
            Internal::DataChannel(peer, dc) => self.on_data_channel(peer, dc).await,
            Internal::Upload(key, progress) => {
                let ended = matches!(progress, Progress::Done(_) | Progress::Failed(_));
                if self.stopping.contains_key(&key) {
                    // Stopped and reported then; once it ends its channel is closed and the
                    // member's next upload may open.
                    if ended {
                        self.stopping.remove(&key);
                        if self.opening.get(&key.peer) == Some(&key) {
                            self.opening.remove(&key.peer);
                        }
                        self.open_next_upload(key.peer).await;
                    }
                    return;
                }
                let unopened = matches!(&progress, Progress::Failed(why) if why == NOT_OPENED);
                if unopened && self.uploads.contains_key(&key) {
                    let tries = self.open_retries.entry(key.clone()).or_default();
                    if *tries < OPEN_RETRIES {
                        *tries += 1;
                        log::debug!("the channel of {} closed before it opened; opening another", key.id);
                        self.uploads.remove(&key);
                        if self.opening.get(&key.peer) == Some(&key) {
                            self.opening.remove(&key.peer);
                        }
                        let peer = key.peer;
                        self.queued_uploads.entry(peer).or_default().push_front(key);
                        self.open_next_upload(peer).await;
                        return;
                    }
                }
                if ended {
                    self.open_retries.remove(&key);
                }
                // An upload torn down meanwhile (its handle is gone) was accounted for then.
                if ended && self.uploads.remove(&key).is_some() {
                    self.finishing.remove(&key);
                    self.local.ended(key.peer, &key.id);
                }
                let peer = key.peer;
                if ended && self.opening.get(&peer) == Some(&key) {
                    self.opening.remove(&peer);
                }
                self.emit(RoomEvent::Upload(key, progress)).await;
                self.open_next_upload(peer).await;
            }
            Internal::Stream(key, progress) => {
                let peer = key.transfer.peer;
                let ended = matches!(progress, Progress::Done(_) | Progress::Failed(_));
                let outgoing = self.streams.get(&key).is_some_and(|(_, outgoing)| *outgoing);
                if outgoing
                    && self.opening.get(&peer) == Some(&key.transfer)
                    && (ended || progress == Progress::Started)
                {
                    self.opening.remove(&peer);
                }
                if ended && self.streams.remove(&key).is_some() {
                    let TransferKey { peer, id } = &key.transfer;
                    if outgoing {
                        self.local.ended(*peer, id);
                    } else if let Err(e) = self.remote.ended(*peer, id) {
                        log::debug!("a connection to {id} ended: {e}");
                    }
                }
                self.emit(RoomEvent::Stream {
                    key,
                    outgoing,
                    progress,
                })
                .await;
                if outgoing {
                    self.open_next_upload(peer).await;
                }
            }
            Internal::EndSent(key, n) => {
                if !self.stopping.contains_key(&key) {
                    self.finishing.insert(key, n);
                }
            }
            Internal::Download(key, progress) => {
                let ended = matches!(progress, Progress::Done(_) | Progress::Failed(_));
                if ended && self.downloads.remove(&key).is_some() {
                    // Unknown when the member withdrew the file or left while it arrived.
                    if let Err(e) = self.remote.ended(key.peer, &key.id) {
                        log::debug!("download of {} ended: {e}", key.id);
                    }
                }
                let peer = key.peer;
                self.emit(RoomEvent::Download(key, progress)).await;
                if ended {
                    self.reap(peer).await;
                }
            }
        }
    }

    async fn on_requested(&mut self, from: ClientId, id: ResourceId) {
        let Some(kind) = self.local.get(&id).map(|info| info.kind) else {
            log::debug!("member {from} requested {id}, which is not a resource we provide");
            return;
        };
        // The caps are checked before the bookkeeping, so a refused request leaves no trace.
        if kind == ResourceKind::Port && self.streams.len() >= MAX_STREAMS {
            log::warn!("member {from} opened more than {MAX_STREAMS} connections to {id}; refusing one");
            return;
        }
        if kind != ResourceKind::Track && self.queued_uploads.get(&from).map_or(0, VecDeque::len) >= MAX_QUEUED_UPLOADS
        {
            log::warn!("member {from} requested more than {MAX_QUEUED_UPLOADS} files at once; ignoring {id}");
            return;
        }
        // A file or track is sent once at a time per member; each request of a port is
        // another connection.
        if let Err(e) = self.local.requested(from, &id) {
            log::debug!("member {from} requested {id}: {e}");
            return;
        }
        let key = TransferKey { peer: from, id };
        match kind {
            ResourceKind::Track => {
                let attached = if !self.tracks.is_track(&key.id) {
                    Err("it has no feed".to_owned())
                } else if let Some(pc) = self.peer(from).await.map(|p| p.pc.clone()) {
                    self.tracks.attach(from, pc, &key.id).await.map_err(|e| e.to_string())
                } else {
                    Err("no connection to the member".to_owned())
                };
                if let Err(e) = attached {
                    log::warn!("cannot send {} to {from}: {e}", key.id);
                    self.local.ended(from, &key.id);
                }
            }
            ResourceKind::File | ResourceKind::Port => {
                if kind == ResourceKind::File {
                    self.emit(RoomEvent::Requested(key.clone())).await;
                }
                // One upload at a time per member: the files share one SCTP association, so one
                // after the other brings the first file sooner at the same total rate.
                self.queued_uploads.entry(from).or_default().push_back(key);
                self.open_next_upload(from).await;
            }
            // LocalResources::add refuses unknown kinds, so none is ever requested.
            ResourceKind::Unknown => {
                self.local.ended(from, &key.id);
            }
        }
    }

    /// Announces one of our resources (after checking it is of a kind we can send).
    async fn provide(&mut self, info: ProvideInfo) -> Result<(), RoomError> {
        if info.kind == ResourceKind::Unknown {
            return Err(ResourceError::UnknownKind(info.id).into());
        }
        // The session refuses a reused id before anything is recorded; the bookkeeping then
        // cannot refuse it either.
        let packet = self.session.provide(info.clone())?;
        self.local.add(info)?;
        self.send(packet).await;
        Ok(())
    }

    /// Records a member's `provide` (new or updated) in the bookkeeping.
    fn remember(&mut self, from: ClientId, info: &ProvideInfo) {
        if let Err(e) = self.remote.provided(from, info.clone()) {
            log::warn!("member {from} provides {}: {e}", info.id);
        }
    }

    /// The kind of a resource a member provides, if it does.
    fn remote_kind(&self, key: &TransferKey) -> Option<ResourceKind> {
        self.remote.get(key.peer, &key.id).map(|r| r.info.kind)
    }

    /// Stops sending one of our resources to one member: the track is removed, the upload or
    /// the port's connections are aborted (queued ones dropped), and the member's next upload
    /// may open.
    async fn stop_local(&mut self, teardown: Teardown, why: &str) {
        let Teardown { peer, id, kind } = teardown;
        let key = TransferKey { peer, id };
        match kind {
            ResourceKind::Track => self.tracks.detach(peer, &key.id).await,
            ResourceKind::File | ResourceKind::Port => {
                let queue = self.queued_uploads.entry(peer).or_default();
                let queued = queue.len();
                queue.retain(|k| *k != key);
                let was_queued = queue.len() < queued;
                self.open_retries.remove(&key);
                // Whether the member's upload slot stays taken until a stopped upload's channel
                // is closed.
                let mut closing = false;
                if kind == ResourceKind::Port {
                    self.abort_streams(|k, outgoing| outgoing && k.transfer == key);
                } else if let Some(upload) = self.uploads.remove(&key) {
                    let progress = match self.finishing.remove(&key) {
                        // Its `end` went out: the member has the file, and its channel stays
                        // open like any finished one.
                        Some(n) => {
                            upload.abort.abort();
                            Progress::Done(n)
                        }
                        // The task closes the channel, so the member's download fails now
                        // rather than when we leave. (A task that ended meanwhile has its
                        // report queued, which frees the slot just the same.)
                        None => {
                            let _ = upload.stop.send(());
                            self.stopping.insert(key.clone(), upload.abort);
                            closing = true;
                            Progress::Failed(why.to_owned())
                        }
                    };
                    self.emit(RoomEvent::Upload(key.clone(), progress)).await;
                } else if was_queued {
                    self.emit(RoomEvent::Upload(key.clone(), Progress::Failed(why.to_owned())))
                        .await;
                }
                if !closing && self.opening.get(&peer) == Some(&key) {
                    self.opening.remove(&peer);
                }
                self.open_next_upload(peer).await;
            }
            ResourceKind::Unknown => {}
        }
    }

    /// Stops receiving a member's resource: a download not started fails and a running one
    /// is aborted; a port's waiting and open connections end.
    async fn stop_remote(&mut self, teardown: Teardown, why: &str) {
        let Teardown { peer, id, kind } = teardown;
        let key = TransferKey { peer, id };
        match kind {
            ResourceKind::File => {
                if let Some(d) = self.downloads.remove(&key) {
                    if let Download::Running(h) = d {
                        h.abort();
                    }
                    self.emit(RoomEvent::Download(key, Progress::Failed(why.to_owned())))
                        .await;
                    self.reap(peer).await;
                }
            }
            ResourceKind::Port => {
                self.waiting_streams.remove(&key);
                self.abort_streams(|k, outgoing| !outgoing && k.transfer == key);
            }
            // We do not receive tracks; nothing runs for one.
            ResourceKind::Track | ResourceKind::Unknown => {}
        }
    }

    /// Opens the channel of the member's next queued upload unless one is still opening.
    async fn open_next_upload(&mut self, peer: ClientId) {
        while !self.opening.contains_key(&peer) {
            let Some(key) = self.queued_uploads.get_mut(&peer).and_then(VecDeque::pop_front) else {
                return;
            };
            // A withdrawn resource's requests left the queue with its teardowns.
            let Some(source) = self.sources.get(&key.id).cloned() else {
                self.local.ended(peer, &key.id);
                continue;
            };
            let size = self.local.get(&key.id).and_then(|info| info.size);
            // Requests wait in the queue unbounded by MAX_STREAMS; the cap holds when they open.
            if matches!(source, Source::Port(_)) && self.streams.len() >= MAX_STREAMS {
                log::warn!("more than {MAX_STREAMS} port connections at once; refusing one from {peer}");
                self.local.ended(peer, &key.id);
                continue;
            }
            let Some(pc) = self.peer(peer).await.map(|p| p.pc.clone()) else {
                self.local.ended(peer, &key.id);
                return;
            };
            let dc = match pc.create_data_channel(&key.id.0, None).await {
                Ok(dc) => dc,
                Err(e) => {
                    log::warn!("cannot open a data channel to {peer}: {e}");
                    self.local.ended(peer, &key.id);
                    self.emit(RoomEvent::Upload(key, Progress::Failed(e.to_string()))).await;
                    continue;
                }
            };
            self.keep_channel(peer, &dc);
            let report = self.internal_tx.clone();
            if let Source::Port(addr) = source {
                let stream = self.stream_key(key.clone());
                let handle = tokio::spawn(bridge(stream.clone(), pc, dc, LocalEnd::Connect(addr), report));
                self.streams.insert(stream, (handle.abort_handle(), true));
            } else {
                let (stop, stopped) = oneshot::channel();
                let handle = tokio::spawn(upload(key.clone(), pc, dc, source, size, stopped, report));
                let abort = handle.abort_handle();
                self.uploads.insert(key.clone(), Upload { abort, stop });
            }
            self.opening.insert(peer, key);
        }
    }

    /// Keeps a channel's handle until its connection closes. The webrtc crate unregisters a
    /// channel's events by stream id when its handle drops, and SCTP reuses the stream ids of
    /// closed channels: dropping a finished channel's handle could silence a newer channel
    /// on the same id. One small handle per transfer, released with the member.
    fn keep_channel(&mut self, peer: ClientId, dc: &Arc<dyn DataChannel>) {
        self.channels.entry(peer).or_default().push(dc.clone());
    }

    async fn on_data_channel(&mut self, peer: ClientId, dc: Arc<dyn DataChannel>) {
        self.keep_channel(peer, &dc);
        let label = match dc.label().await {
            Ok(l) => l,
            Err(e) => {
                log::warn!("a data channel from {peer} has no label: {e}");
                return;
            }
        };
        let id = match self.remote.incoming_channel(peer, &label) {
            Incoming::Accept(id) => id,
            Incoming::Refuse(why) => {
                log::warn!("member {peer} opened a data channel {label:?} nobody requested ({why}); closing it");
                let _ = dc.close().await;
                return;
            }
        };
        let key = TransferKey { peer, id };
        let report = self.internal_tx.clone();
        match self.remote_kind(&key) {
            Some(ResourceKind::Port) => {
                let waiting = self.waiting_streams.get_mut(&key).and_then(VecDeque::pop_front);
                if self.waiting_streams.get(&key).is_some_and(VecDeque::is_empty) {
                    self.waiting_streams.remove(&key);
                }
                // The channel came over the member's connection, which is in `peers` while the
                // bookkeeping accepts its channels.
                let pc = self.peers.get(&peer).map(|p| p.pc.clone());
                if let (Some(stream), Some(pc)) = (waiting, pc) {
                    let stream_key = self.stream_key(key);
                    let handle = tokio::spawn(bridge(stream_key.clone(), pc, dc, LocalEnd::Given(stream), report));
                    self.streams.insert(stream_key, (handle.abort_handle(), false));
                    return;
                }
            }
            Some(ResourceKind::File) => {
                if let Some(Download::Waiting(sink)) = self.downloads.remove(&key) {
                    let handle = tokio::spawn(download(key.clone(), dc, sink, report));
                    self.downloads.insert(key, Download::Running(handle.abort_handle()));
                    return;
                }
            }
            _ => {}
        }
        // Accepted, but nothing here waits for it (cannot happen: the bookkeeping and the
        // handles change together). Close it and end it in the bookkeeping.
        log::warn!("no transfer waits for the data channel {label:?} from {peer}; closing it");
        let _ = self.remote.ended(peer, &key.id);
        let _ = dc.close().await;
    }

    fn stream_key(&mut self, transfer: TransferKey) -> StreamKey {
        self.next_stream += 1;
        StreamKey {
            transfer,
            serial: self.next_stream,
        }
    }

    /// Aborts the bridged connections `which` selects by key and whether each is to a port we
    /// expose (their channels close with them).
    fn abort_streams(&mut self, which: impl Fn(&StreamKey, bool) -> bool) {
        self.streams.retain(|k, (h, outgoing)| {
            let stop = which(k, *outgoing);
            if stop {
                h.abort();
            }
            !stop
        });
    }

    /// The member's peer connection, made on first use.
    async fn peer(&mut self, id: ClientId) -> Option<&mut Peer> {
        if !self.peers.contains_key(&id) {
            if !self.session.members().contains_key(&id) {
                log::debug!("not connecting to {id}: not a member");
                return None;
            }
            let pc = match self.new_peer_connection(id).await {
                Ok(pc) => pc,
                Err(e) => {
                    log::error!("cannot create a peer connection: {e}");
                    return None;
                }
            };
            let polite = self.session.is_polite_towards(id);
            self.peers.insert(
                id,
                Peer {
                    pc,
                    negotiator: Negotiator::new(polite),
                },
            );
        }
        self.peers.get_mut(&id)
    }

    async fn new_peer_connection(&mut self, peer: ClientId) -> Result<Arc<dyn PeerConnection>, webrtc::error::Error> {
        if self.mdns_queries {
            match self.build_peer_connection(peer, true).await {
                Ok(pc) => return Ok(pc),
                Err(e) => {
                    // No multicast-capable interface (a namespace with only loopback, say):
                    // go on without resolving `.local` candidates.
                    log::info!(
                        "mDNS candidate resolution unavailable ({e}); peers that hide their addresses behind .local names may not connect"
                    );
                    self.mdns_queries = false;
                }
            }
        }
        self.build_peer_connection(peer, false).await
    }

    async fn build_peer_connection(
        &self,
        peer: ClientId,
        mdns: bool,
    ) -> Result<Arc<dyn PeerConnection>, webrtc::error::Error> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry =
            crate::media::with_keyframe_requests(register_default_interceptors(Registry::new(), &mut media)?);
        let ice_servers = self
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        use rtc_ice::mdns::MulticastDnsMode;
        // Browsers that granted no camera hide their addresses behind `.local` names: resolve
        // those with mDNS queries (without hiding our own addresses).
        let mode = if mdns {
            MulticastDnsMode::QueryOnly
        } else {
            MulticastDnsMode::Disabled
        };
        let mut settings = SettingEngineBuilder::new().with_multicast_dns_mode(mode);
        let bind: Vec<String> = if self.options.ice.bind.is_empty() {
            vec!["0.0.0.0:0".to_owned()]
        } else {
            if self.options.ice.bind.iter().any(IpAddr::is_loopback) {
                settings = settings.with_include_loopback_candidate(true);
            }
            self.options
                .ice
                .bind
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0).to_string())
                .collect()
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings.build())
            .with_handler(Arc::new(Handler {
                peer,
                tx: self.internal_tx.clone(),
            }))
            .with_runtime(crate::udp::BufferedRuntime::shared())
            .with_udp_addrs(bind)
            .with_data_channel_send_buffer_limit(SEND_WINDOW)
            .build()
            .await?;
        Ok(Arc::new(pc))
    }

    /// Feeds the member's negotiator and performs what it asks, until it has nothing left.
    async fn negotiate(&mut self, peer: ClientId, input: Input) {
        let needs_pc = !matches!(input, Input::RemoteAnswer(_));
        if needs_pc && self.peer(peer).await.is_none() {
            return;
        }
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let Some(p) = self.peers.get_mut(&peer) else { return };
            let pc = p.pc.clone();
            let actions = p.negotiator.handle(input);
            for action in actions {
                match self.perform(peer, &pc, action).await {
                    Ok(Some(next)) => inputs.push_back(next),
                    Ok(None) => {}
                    Err(reason) => {
                        log::warn!("negotiation with {peer}: {reason}");
                        let state = signaling_state(&pc).await;
                        inputs.push_back(Input::OperationFailed { state, reason });
                        break;
                    }
                }
            }
        }
    }

    async fn perform(
        &mut self,
        peer: ClientId,
        pc: &Arc<dyn PeerConnection>,
        action: Action,
    ) -> Result<Option<Input>, String> {
        let e = |e: webrtc::error::Error| e.to_string();
        Ok(match action {
            Action::CreateOffer => {
                let offer = pc.create_offer(None).await.map_err(e)?;
                let sdp = offer.sdp.clone();
                pc.set_local_description(offer).await.map_err(e)?;
                Some(Input::LocalOfferReady(sdp))
            }
            Action::Rollback => {
                let rollback = RTCSessionDescription::rollback(None).map_err(e)?;
                pc.set_local_description(rollback).await.map_err(e)?;
                None
            }
            Action::SetRemoteOffer(sdp) => {
                pc.set_remote_description(RTCSessionDescription::offer(sdp).map_err(e)?)
                    .await
                    .map_err(e)?;
                Some(Input::RemoteDescriptionSet)
            }
            Action::CreateAnswer => {
                let answer = pc.create_answer(None).await.map_err(e)?;
                let sdp = answer.sdp.clone();
                pc.set_local_description(answer).await.map_err(e)?;
                Some(Input::LocalAnswerReady(sdp))
            }
            Action::SetRemoteAnswer(sdp) => {
                pc.set_remote_description(RTCSessionDescription::answer(sdp).map_err(e)?)
                    .await
                    .map_err(e)?;
                Some(Input::RemoteDescriptionSet)
            }
            Action::AddCandidate(c) => {
                if c.candidate.is_empty() {
                    return Ok(None);
                }
                let init = webrtc::peer_connection::RTCIceCandidateInit {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_m_line_index,
                    username_fragment: c.username_fragment,
                    ..Default::default()
                };
                if let Err(err) = pc.add_ice_candidate(init).await {
                    log::debug!("candidate from {peer} not added: {err}");
                }
                None
            }
            Action::SendOffer(sdp) => {
                self.relay(peer, RelayMessage::Offer(sdp)).await;
                None
            }
            Action::SendAnswer(sdp) => {
                self.relay(peer, RelayMessage::Answer(sdp)).await;
                None
            }
            Action::Ignore { reason } => {
                log::debug!("negotiation with {peer}: {reason}");
                None
            }
        })
    }

    /// Closes the member's peer connection and fails its transfers. Downloads already
    /// running go on when `graceful`: a sender leaves the room as soon as its last bytes are
    /// acknowledged, which can be before this side has read them from the connection.
    async fn drop_peer(&mut self, peer: ClientId, why: &str, graceful: bool) {
        self.tracks.drop_peer(peer);
        self.queued_uploads.remove(&peer);
        self.opening.remove(&peer);
        self.abort_streams(|k, _| k.transfer.peer == peer);
        self.waiting_streams.retain(|k, _| k.peer != peer);
        self.open_retries.retain(|k, _| k.peer != peer);
        // Stopped uploads end with the connection.
        self.stopping.retain(|k, h| {
            if k.peer == peer {
                h.abort();
            }
            k.peer != peer
        });
        let uploads: Vec<TransferKey> = self.uploads.keys().filter(|k| k.peer == peer).cloned().collect();
        for key in uploads {
            if let Some(upload) = self.uploads.remove(&key) {
                upload.abort.abort();
                // A receiver that leaves after `end` went out was served, not abandoned.
                let progress = match self.finishing.remove(&key) {
                    Some(n) => Progress::Done(n),
                    None => Progress::Failed(why.to_owned()),
                };
                self.emit(RoomEvent::Upload(key, progress)).await;
            }
        }
        let downloads: Vec<TransferKey> = self.downloads.keys().filter(|k| k.peer == peer).cloned().collect();
        let mut running = false;
        for key in downloads {
            match self.downloads.remove(&key) {
                Some(Download::Running(h)) if graceful => {
                    running = true;
                    self.downloads.insert(key, Download::Running(h));
                }
                Some(d) => {
                    if let Download::Running(h) = d {
                        h.abort();
                    }
                    self.emit(RoomEvent::Download(key, Progress::Failed(why.to_owned())))
                        .await;
                }
                None => {}
            }
        }
        if let Some(p) = self.peers.remove(&peer) {
            if running {
                self.leaving.insert(peer, p.pc);
            } else {
                let _ = p.pc.close().await;
                self.channels.remove(&peer);
            }
        }
    }

    /// Closes the connection of a member that left once its last download has ended.
    async fn reap(&mut self, peer: ClientId) {
        if self.downloads.keys().any(|k| k.peer == peer) {
            return;
        }
        if let Some(pc) = self.leaving.remove(&peer) {
            let _ = pc.close().await;
            self.channels.remove(&peer);
        }
    }

    async fn close_all(&mut self) {
        let peers: Vec<ClientId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.drop_peer(peer, "the room was left", false).await;
        }
        for (_, pc) in self.leaving.drain() {
            let _ = pc.close().await;
        }
        let _ = self.signaling.send(ServerboundPacket::Join { hash: None }).await;
    }
}

/// The signaling state from the pending descriptions (the crate has no getter for it).
async fn signaling_state(pc: &Arc<dyn PeerConnection>) -> SignalingState {
    use webrtc::peer_connection::RTCSdpType;
    if let Some(d) = pc.pending_local_description().await {
        if d.sdp_type == RTCSdpType::Offer {
            return SignalingState::HaveLocalOffer;
        }
    }
    if let Some(d) = pc.pending_remote_description().await {
        if d.sdp_type == RTCSdpType::Offer {
            return SignalingState::HaveRemoteOffer;
        }
    }
    SignalingState::Stable
}
