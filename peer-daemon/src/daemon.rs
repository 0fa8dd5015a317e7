//! The daemon's main loop: device pipelines on their own threads, one room at a time.
//!
//! ```text
//! camera thread: open ─▶ frames ─▶ H.264 ─▶ TrackFeed ─┐       ┌─▶ Room (keks-client)
//! mic thread:    open ─▶ 10 ms ─▶ Opus   ─▶ TrackFeed ─┤       │     provide_track / stop
//!        Up(feed) / Lost ──────────────────────────────┴─▶ run ┤
//! summon socket (optional) ─▶ invitations ───────────────────▶ └─▶ leaves a summoned room
//!                                                                   with no human left
//! ```
//!
//! A device that is missing, busy or unplugged gives one log line; its resource is withdrawn
//! (`provide_stop`) and the device is opened again every few seconds. When it is back, it is
//! provided again under a new id (ids are never reused). Nothing a device does ends the daemon.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keks_client::room::IceOptions;
use keks_client::{Codec, KnownServers, MediaSample, Room, RoomEvent, RoomOptions, Server, TrackFeed, Trust};
use keks_proto::packets::{ClientId, ProvideInfo, ResourceId, ResourceKind};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::encode::{EncodeError, H264Encoder, OpusEncoder};
use crate::source::{self, AUDIO_FRAME, DeviceError, VideoData, VideoFrame, VideoMode, VideoSource};

/// How long a lost device waits before it is opened again.
const RETRY: Duration = Duration::from_secs(2);
/// Device events waiting for the main loop (a handful per minute at most).
const DEVICE_QUEUE: usize = 16;

/// Which device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Camera,
    Microphone,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Camera => "camera",
            Device::Microphone => "microphone",
        }
    }
}

/// What a device thread tells the main loop.
#[derive(Debug)]
pub enum DeviceEvent {
    /// The device is open; its samples go into this feed.
    Up(Device, TrackFeed),
    /// The device is gone; it is retried.
    Lost(Device),
}

/// A room to be in: the configured one, or one a person summoned the daemon into.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The room secret. Never logged.
    pub secret: String,
    /// Summoned rooms are left when no human is in them for [`crate::config::SummonConfig::leave_after`].
    pub summoned: bool,
}

/// Starts the device threads. They run until `stop` is set.
pub fn start_devices(config: &Config, stop: Arc<AtomicBool>) -> mpsc::Receiver<DeviceEvent> {
    let (tx, rx) = mpsc::channel(DEVICE_QUEUE);
    if config.video.enabled {
        let (video, tx, stop) = (config.video.clone(), tx.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || camera_thread(video, tx, stop));
        if let Err(e) = spawned {
            log::error!("cannot start the camera thread: {e}");
        }
    }
    if config.audio.enabled {
        let (audio, stop) = (config.audio.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("microphone".into())
            .spawn(move || microphone_thread(audio, tx, stop));
        if let Err(e) = spawned {
            log::error!("cannot start the microphone thread: {e}");
        }
    }
    rx
}

/// Logs a device error once per distinct error, so a missing device does not flood the log.
struct Reporter {
    device: Device,
    last: Option<String>,
}

impl Reporter {
    fn failed(&mut self, e: &dyn std::fmt::Display, what: &str) {
        let msg = format!("{what}: {e}");
        if self.last.as_deref() != Some(&msg) {
            log::warn!("{}: {msg}; retrying every {} s", self.device.name(), RETRY.as_secs());
            self.last = Some(msg);
        }
    }
}

impl Reporter {
    /// A device that was working is gone: says so once, withdraws it and waits before
    /// opening it again. False when the daemon is going away.
    fn lost(&mut self, why: &DeviceError, tx: &mpsc::Sender<DeviceEvent>, stop: &AtomicBool) -> bool {
        log::warn!(
            "{}: {why}; withdrawing it and retrying every {} s",
            self.device.name(),
            RETRY.as_secs()
        );
        self.last = Some(why.to_string());
        if tx.blocking_send(DeviceEvent::Lost(self.device)).is_err() {
            return false;
        }
        sleep_unless_stopped(stop, RETRY);
        true
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn camera_thread(config: crate::config::VideoSection, tx: mpsc::Sender<DeviceEvent>, stop: Arc<AtomicBool>) {
    let mut report = Reporter {
        device: Device::Camera,
        last: None,
    };
    while !stop.load(Ordering::Relaxed) {
        let mut source = match source::open_video(&config.device) {
            Ok(s) => s,
            Err(e) => {
                report.failed(&e, "cannot open");
                sleep_unless_stopped(&stop, RETRY);
                continue;
            }
        };
        let mode = source.mode();
        let interval = Duration::from_secs(config.keyframe_interval_s.into());
        let mut pipeline = match CameraPipeline::new(mode, config.bitrate_kbps, interval) {
            Ok(p) => p,
            Err(e) => {
                report.failed(&e, "cannot encode");
                sleep_unless_stopped(&stop, RETRY);
                continue;
            }
        };
        report.last = None;
        log::info!("camera: {}x{} at {} fps", mode.width, mode.height, mode.fps);
        let feed = TrackFeed::new(Codec::H264);
        if tx.blocking_send(DeviceEvent::Up(Device::Camera, feed.clone())).is_err() {
            return;
        }
        let lost = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let frame = match source.next_frame() {
                Ok(f) => f,
                Err(e) => break e,
            };
            let watched = feed.subscribers() > 0;
            match pipeline.process(source.as_mut(), frame, watched, feed.take_keyframe_request()) {
                Ok(Some(s)) => feed.write(s),
                Ok(None) => {}
                Err(e) => break DeviceError::Format(e.to_string()),
            }
        };
        drop(source);
        if !report.lost(&lost, &tx, &stop) {
            return;
        }
    }
}

/// What the camera thread does with each frame: raw pictures are encoded (an IDR when a
/// receiver asks), H.264 from the camera is passed through (a request goes to the camera, whose
/// next IDR then comes with SPS and PPS, see [`crate::convert::H264Passthrough`]).
///
/// RTP time advances by the mode's frame period per sample, which keeps it smooth however the
/// capture times jitter; when it is more than half a period off the capture clock (frames a
/// busy machine skipped, a camera that slows down in the dark), the next sample's timestamp is
/// put back onto it. Otherwise the receiver's clock would fall behind for good, and it would
/// take every later frame for a late one.
#[derive(Debug)]
pub struct CameraPipeline {
    encoder: H264Encoder,
    /// The mode's frame period: what a sample lasts in RTP time while on time.
    period: Duration,
    /// RTP time against capture time; `None` while nobody watches.
    clock: Option<RtpClock>,
}

/// Where a track's RTP time stands against the capture clock.
#[derive(Debug, Clone, Copy)]
struct RtpClock {
    /// When the first sample sent was captured (RTP time 0).
    origin: Instant,
    /// The RTP time of the next sample: the durations handed out so far.
    next: Duration,
}

/// Longest gap a sample may span in RTP time: a longer stall is caught up over several samples.
const MAX_SAMPLE_GAP: Duration = Duration::from_secs(1);

impl CameraPipeline {
    /// For frames of `mode`; `bitrate_kbps` and `keyframe_interval` are the encoder's.
    pub fn new(mode: VideoMode, bitrate_kbps: u32, keyframe_interval: Duration) -> Result<Self, EncodeError> {
        Ok(Self {
            encoder: H264Encoder::new(mode, bitrate_kbps, keyframe_interval)?,
            period: Duration::from_secs(1) / mode.fps.max(1),
            clock: None,
        })
    }

    /// Takes one frame from `source`. `watched`: someone receives the track (else nothing is
    /// encoded, but the camera is still read so its buffers keep moving). `keyframe_wanted`:
    /// a receiver asked for a keyframe since the previous frame. Returns the sample to send.
    pub fn process(
        &mut self,
        source: &mut dyn VideoSource,
        frame: VideoFrame,
        watched: bool,
        keyframe_wanted: bool,
    ) -> Result<Option<MediaSample>, EncodeError> {
        if !watched {
            self.clock = None;
            return Ok(None);
        }
        // The first frame for a new audience starts with a keyframe too.
        let keyframe = keyframe_wanted || self.clock.is_none();
        let sample = match frame.data {
            VideoData::I420(ref pixels) => self.encoder.encode(&frame, pixels, keyframe)?,
            VideoData::H264(au) => {
                if keyframe {
                    source.request_keyframe();
                }
                Some(MediaSample {
                    data: au.into(),
                    duration: self.period,
                    keyframe: frame.keyframe,
                    captured: frame.captured,
                })
            }
        };
        let Some(sample) = sample else {
            return Ok(None);
        };
        let clock = self.clock.get_or_insert(RtpClock {
            origin: sample.captured,
            next: Duration::ZERO,
        });
        // This sample's RTP time is `clock.next`; where the capture clock puts it:
        let captured = sample.captured.saturating_duration_since(clock.origin);
        let duration = if captured.abs_diff(clock.next) > self.period / 2 {
            // Off by more than half a frame: the next sample goes where it belongs.
            (captured + self.period)
                .saturating_sub(clock.next)
                .clamp(Duration::from_millis(1), MAX_SAMPLE_GAP)
        } else {
            self.period
        };
        clock.next += duration;
        Ok(Some(MediaSample { duration, ..sample }))
    }
}

fn microphone_thread(config: crate::config::AudioSection, tx: mpsc::Sender<DeviceEvent>, stop: Arc<AtomicBool>) {
    let mut report = Reporter {
        device: Device::Microphone,
        last: None,
    };
    while !stop.load(Ordering::Relaxed) {
        let mut source = match source::open_audio(&config.device) {
            Ok(s) => s,
            Err(e) => {
                report.failed(&e, "cannot open");
                sleep_unless_stopped(&stop, RETRY);
                continue;
            }
        };
        let mut encoder = match OpusEncoder::new(config.bitrate_kbps) {
            Ok(e) => e,
            Err(e) => {
                report.failed(&e, "cannot encode");
                sleep_unless_stopped(&stop, RETRY);
                continue;
            }
        };
        report.last = None;
        log::info!("microphone: {} at 48 kHz", config.device.pcm);
        let feed = TrackFeed::new(Codec::Opus);
        if tx
            .blocking_send(DeviceEvent::Up(Device::Microphone, feed.clone()))
            .is_err()
        {
            return;
        }
        let mut pcm = [0i16; AUDIO_FRAME];
        let lost = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = source.read_frame(&mut pcm) {
                break e;
            }
            let captured = Instant::now();
            match encoder.push(&pcm, captured) {
                Ok(Some(s)) if feed.subscribers() > 0 => feed.write(s),
                Ok(_) => {}
                Err(e) => break DeviceError::Format(e.to_string()),
            }
        };
        drop(source);
        if !report.lost(&lost, &tx, &stop) {
            return;
        }
    }
}

/// The room we are in and what we provide there.
struct Current {
    room: Room,
    events: mpsc::Receiver<RoomEvent>,
    summoned: bool,
    /// Members other than us.
    others: HashMap<ClientId, Option<String>>,
    /// Since when nobody else has been in the room (summoned rooms are left after a while).
    empty_since: Option<tokio::time::Instant>,
    provided: HashMap<Device, ResourceId>,
}

/// Everything `run` needs besides the config.
#[derive(Debug)]
pub struct Inputs {
    /// The configured room, if any.
    pub room: Option<Invitation>,
    /// Invitations from the summon socket.
    pub invitations: mpsc::Receiver<Invitation>,
    /// Device events.
    pub devices: mpsc::Receiver<DeviceEvent>,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    config: Config,
    inputs: Inputs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let Inputs {
        room,
        mut invitations,
        mut devices,
    } = inputs;
    let options = base_options(&config).await?;
    let mut feeds: HashMap<Device, TrackFeed> = HashMap::new();
    let mut next_id = 0u64;
    let mut current: Option<Current> = None;
    // The configured room, gone back to when a summoned room is left.
    let home = room;
    if let Some(inv) = &home {
        current = Some(enter(&options, inv.clone()).await);
    }
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = devices.recv() => match event {
                Some(DeviceEvent::Up(device, feed)) => {
                    if let Some(c) = &mut current {
                        provide(&config, c, device, &feed, &mut next_id).await;
                    }
                    feeds.insert(device, feed);
                }
                Some(DeviceEvent::Lost(device)) => {
                    feeds.remove(&device);
                    if let Some(c) = &mut current {
                        if let Some(id) = c.provided.remove(&device) {
                            let _ = c.room.stop_providing(id).await;
                        }
                    }
                }
                None => {
                    // Every device thread ended (all disabled or failed to start): go on with none.
                    std::future::pending::<()>().await;
                }
            },
            Some(inv) = invitations.recv() => {
                log::info!("summoned into a room; leaving the current one");
                drop(current.take());
                let mut c = enter(&options, inv).await;
                for (device, feed) in &feeds {
                    provide(&config, &mut c, *device, feed, &mut next_id).await;
                }
                current = Some(c);
            }
            event = async { match &mut current { Some(c) => c.events.recv().await, None => std::future::pending().await } } => {
                let Some(event) = event else {
                    log::warn!("the room task ended");
                    current = None;
                    continue;
                };
                let Some(c) = &mut current else { continue };
                if on_room_event(c, event) {
                    for (device, feed) in &feeds {
                        if !c.provided.contains_key(device) {
                            provide(&config, c, *device, feed, &mut next_id).await;
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let leave = current.as_ref().is_some_and(|c| {
                    c.summoned && c.empty_since.is_some_and(|t| t.elapsed() >= config.summon.leave_after())
                });
                if leave {
                    log::info!(
                        "nobody else has been in the summoned room for {} s; leaving it",
                        config.summon.leave_after_s
                    );
                    drop(current.take());
                    if let Some(inv) = &home {
                        log::info!("back to the configured room");
                        let mut c = enter(&options, inv.clone()).await;
                        for (device, feed) in &feeds {
                            provide(&config, &mut c, *device, feed, &mut next_id).await;
                        }
                        current = Some(c);
                    }
                }
            }
        }
    }
    drop(current);
    Ok(())
}

/// Handles a room event; true when we (re)joined and must provide again.
fn on_room_event(c: &mut Current, event: RoomEvent) -> bool {
    match event {
        RoomEvent::Ready { id } => {
            log::info!("in the room as member {id}");
            // The session keeps what we provide across relay sessions and announces it to each
            // member it greets; what could not be provided before (not connected) is now.
            c.others.clear();
            c.empty_since = Some(tokio::time::Instant::now());
            return true;
        }
        RoomEvent::Joined(id) => {
            c.others.insert(id, None);
            c.empty_since = None;
        }
        RoomEvent::Identified { id, username } => {
            log::info!("member {id} is {username:?}");
            c.others.insert(id, Some(username));
        }
        RoomEvent::Left(id) => {
            if let Some(Some(name)) = c.others.remove(&id) {
                log::info!("{name:?} left");
            }
            if c.others.is_empty() {
                c.empty_since = Some(tokio::time::Instant::now());
            }
        }
        RoomEvent::Requested(key) => log::info!("member {} requested {}", key.peer, key.id),
        RoomEvent::Connected => log::info!("connected to the server"),
        RoomEvent::Disconnected { reason, .. } => log::warn!("disconnected from the server: {reason}; reconnecting"),
        RoomEvent::Fatal(e) => log::error!("cannot stay in the room: {e}"),
        RoomEvent::PeerConnection { peer, state } => log::debug!("connection to {peer}: {state}"),
        _ => {}
    }
    false
}

async fn provide(config: &Config, c: &mut Current, device: Device, feed: &TrackFeed, next_id: &mut u64) {
    *next_id += 1;
    let (label, prefix) = match device {
        Device::Camera => (config.video.label.clone(), "camera"),
        Device::Microphone => (config.audio.label.clone(), "microphone"),
    };
    let id = ResourceId(format!("{prefix}-{}-{}", std::process::id(), next_id));
    let info = ProvideInfo {
        id: id.clone(),
        kind: ResourceKind::Track,
        track_kind: Some(feed.codec().track_kind()),
        label: Some(label),
        size: None,
    };
    match c.room.provide_track(info, feed.clone()).await {
        Ok(()) => {
            log::info!("providing the {} as {id}", device.name());
            if let Some(old) = c.provided.insert(device, id) {
                let _ = c.room.stop_providing(old).await;
            }
        }
        // Not in the room yet: provided on `Ready`.
        Err(e) => log::debug!("not providing the {} yet: {e}", device.name()),
    }
}

async fn enter(options: &RoomOptions, inv: Invitation) -> Current {
    let mut options = options.clone();
    options.secret = inv.secret;
    let (room, events) = Room::join(options).await;
    Current {
        room,
        events,
        summoned: inv.summoned,
        others: HashMap::new(),
        empty_since: None,
        provided: HashMap::new(),
    }
}

/// Server, trust and name from the config (the secret is filled in per room).
async fn base_options(config: &Config) -> anyhow::Result<RoomOptions> {
    let pinned = if config.room.fingerprint.is_empty() {
        None
    } else {
        Some(
            config
                .room
                .fingerprint
                .parse()
                .map_err(|e| anyhow::anyhow!("[room] fingerprint: {e}"))?,
        )
    };
    let (server, advertised) = if config.room.server.is_empty() {
        let found = tokio::task::spawn_blocking(|| keks_client::discovery::discover(Duration::from_secs(3)))
            .await
            .context("discovery task failed")?
            .context("cannot look for a keksbox with mDNS (set [room] server)")?;
        let Some(f) = found.into_iter().next() else {
            anyhow::bail!("no keksbox answered on the LAN (mDNS); set [room] server in the config");
        };
        (f.server(), f.txt.fingerprint)
    } else {
        let s: Server = config
            .room
            .server
            .parse()
            .with_context(|| format!("[room] server = {:?}", config.room.server))?;
        (s, None)
    };
    let trust = match pinned.or(advertised) {
        Some(fp) => Trust::Pinned(fp),
        None => Trust::FirstUse(known_servers()?),
    };
    Ok(RoomOptions {
        server,
        trust,
        secret: String::new(),
        username: config.room.name.clone(),
        ice: IceOptions {
            bind: config.room.ice_bind.clone(),
            ..Default::default()
        },
    })
}

/// The trust-on-first-use store: systemd's state directory, else the user's.
fn known_servers() -> anyhow::Result<KnownServers> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        let first = std::env::split_paths(&dir)
            .next()
            .unwrap_or_else(|| PathBuf::from(&dir));
        return Ok(KnownServers::at(first.join("known-servers")));
    }
    KnownServers::user()
        .context("no STATE_DIRECTORY, HOME or XDG_CONFIG_HOME for the known-servers file; set [room] fingerprint")
}
