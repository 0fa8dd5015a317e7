//! Media tracks we send: a camera or a microphone the application feeds with encoded samples.
//!
//! The application makes a [`TrackFeed`] per track (H.264 or Opus), provides it with
//! [`crate::Room::provide_track`], and writes each encoded frame into it with
//! [`TrackFeed::write`] from any thread. Nothing is sent until a member requests the resource
//! (PROTOCOL.md, "nothing unasked"): then the room task adds a track to that member's peer
//! connection ([`Tracks::attach`]), the negotiator offers it, and a pump task forwards the
//! feed's samples to that one connection once it is connected and the track negotiated.
//!
//! ```text
//! encoder thread ──TrackFeed::write──▶ broadcast ──▶ pump (member A) ──▶ TrackLocalStaticSample ─▶ pc A
//!        ▲                                      └──▶ pump (member B) ──▶ TrackLocalStaticSample ─▶ pc B
//!        └── TrackFeed::take_keyframe_request ◀── new subscriber, PLI/FIR, a pump that fell behind
//! ```
//!
//! A webrtc local track binds to one peer connection, so each member gets a track of its own;
//! the samples are shared (`Arc`), and a member that falls behind loses samples rather than
//! growing memory (the broadcast channel is bounded). Video is forwarded from a keyframe on:
//! a pump that starts, or skipped samples, asks the application for one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keks_proto::packets::{ClientId, ResourceId, TrackKind};
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, Registry};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

/// Samples a member's pump may be behind before it skips to the next keyframe: two seconds
/// of 30 fps video, a second of 20 ms audio. Bounds memory per track, whatever the members do.
const FEED_DEPTH: usize = 64;
/// How often a pump looks whether its track has been negotiated and connected.
const NEGOTIATION_POLL: Duration = Duration::from_millis(20);
/// Where the keyframe-request interceptor sits: after every built-in interceptor (they all
/// read inbound RTCP first), nearest the application.
const KEYFRAME_SLOT: usize = 14_000;

/// The codec a track carries; the application encodes, the track only packetizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 constrained baseline, packetization mode 1 (what every browser decodes). Samples
    /// are Annex-B access units; keyframes carry SPS and PPS first.
    H264,
    /// Opus at 48 kHz; one sample is one Opus packet (20 ms in keksbox).
    Opus,
}

impl Codec {
    /// The media kind announced in `provide`.
    pub fn track_kind(self) -> TrackKind {
        match self {
            Codec::H264 => TrackKind::Video,
            Codec::Opus => TrackKind::Audio,
        }
    }

    fn rtp_kind(self) -> RtpCodecKind {
        match self {
            Codec::H264 => RtpCodecKind::Video,
            Codec::Opus => RtpCodecKind::Audio,
        }
    }

    /// The codec exactly as the default media engine registers it (payload type included), so
    /// it is the only one offered for the track.
    fn parameters(self) -> RTCRtpCodecParameters {
        let feedback = |typ: &str, parameter: &str| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        };
        match self {
            Codec::H264 => RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/H264".to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".to_owned(),
                    // PLI and FIR are how receivers ask for keyframes.
                    rtcp_feedback: vec![
                        feedback("goog-remb", ""),
                        feedback("ccm", "fir"),
                        feedback("nack", ""),
                        feedback("nack", "pli"),
                    ],
                },
                payload_type: 125,
            },
            Codec::Opus => RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "audio/opus".to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct MediaSample {
    /// An Annex-B access unit (H.264) or one Opus packet.
    pub data: Bytes,
    /// How much media it holds (the RTP timestamp advances by it).
    pub duration: Duration,
    /// An IDR picture with SPS and PPS (always true for audio).
    pub keyframe: bool,
    /// When it was captured.
    pub captured: Instant,
}

/// What the feed and the pumps of its subscribers share.
#[derive(Debug)]
struct Shared {
    codec: Codec,
    /// Bounded: a subscriber that falls behind loses samples (and then waits for a keyframe).
    samples: broadcast::Sender<Arc<MediaSample>>,
    /// Set by pumps (new subscriber, PLI/FIR, skipped samples); taken by the encoder.
    keyframe_wanted: AtomicBool,
    /// Keyframe requests so far, for logs and tests.
    keyframe_requests: AtomicU64,
    /// Members whose track is negotiated and receiving samples.
    subscribers: AtomicUsize,
    /// Samples handed to the webrtc stack, over all members.
    sent: AtomicU64,
}

impl Shared {
    fn request_keyframe(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }
}

/// The application's end of a track: encoded samples in, keyframe requests out. Cheap to
/// clone; every clone feeds the same track.
#[derive(Debug, Clone)]
pub struct TrackFeed {
    shared: Arc<Shared>,
}

impl TrackFeed {
    /// A feed for a track of `codec`.
    pub fn new(codec: Codec) -> TrackFeed {
        let (samples, _) = broadcast::channel(FEED_DEPTH);
        TrackFeed {
            shared: Arc::new(Shared {
                codec,
                samples,
                keyframe_wanted: AtomicBool::new(false),
                keyframe_requests: AtomicU64::new(0),
                subscribers: AtomicUsize::new(0),
                sent: AtomicU64::new(0),
            }),
        }
    }

    /// The codec the samples must be in.
    pub fn codec(&self) -> Codec {
        self.shared.codec
    }

    /// Hands a sample to every member receiving this track. Never blocks; with nobody
    /// receiving, the sample is dropped.
    pub fn write(&self, sample: MediaSample) {
        let _ = self.shared.samples.send(Arc::new(sample));
    }

    /// Whether a keyframe was asked for since the last call (a new receiver, a PLI or FIR, a
    /// receiver that fell behind). An encoder checks this before each frame and makes an IDR
    /// when it is true.
    pub fn take_keyframe_request(&self) -> bool {
        self.shared.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// Keyframe requests since the feed was made.
    pub fn keyframe_requests(&self) -> u64 {
        self.shared.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Members currently receiving the track. An application may skip encoding while it is 0.
    pub fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    /// Samples handed to the WebRTC stack so far, over all members.
    pub fn samples_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }
}

/// A track sent to one member.
struct Attachment {
    pc: Arc<dyn PeerConnection>,
    sender: Arc<dyn RtpSender>,
    pump: AbortHandle,
}

/// The room task's media bookkeeping: the tracks we provide and who receives each. Owned by
/// the room task; every method is called from it.
#[derive(Default)]
pub(crate) struct Tracks {
    feeds: HashMap<ResourceId, (TrackFeed, String)>,
    attached: HashMap<(ClientId, ResourceId), Attachment>,
    /// Per member, whether its peer connection is connected: pumps wait for it before they
    /// write (samples written earlier are refused by the stack, noisily).
    connected: HashMap<ClientId, watch::Sender<bool>>,
}

impl Tracks {
    pub(crate) fn provide(&mut self, id: ResourceId, feed: TrackFeed, label: String) {
        self.feeds.insert(id, (feed, label));
    }

    pub(crate) fn is_track(&self, id: &ResourceId) -> bool {
        self.feeds.contains_key(id)
    }

    /// Starts sending track `id` to `peer` on `pc`: adds the track (which makes the connection
    /// ask for negotiation) and starts its pump. A second request while sending is ignored.
    pub(crate) async fn attach(
        &mut self,
        peer: ClientId,
        pc: Arc<dyn PeerConnection>,
        id: &ResourceId,
    ) -> Result<(), webrtc::error::Error> {
        let Some((feed, label)) = self.feeds.get(id) else {
            return Ok(());
        };
        let key = (peer, id.clone());
        if self.attached.contains_key(&key) {
            log::debug!("member {peer} requested {id} again while receiving it");
            return Ok(());
        }
        let codec = feed.codec();
        let params = codec.parameters();
        let ssrc = rand_ssrc();
        // The stream id is the resource id: that is how receivers match the track (PROTOCOL.md).
        let track = MediaStreamTrack::new(
            id.0.clone(),
            format!("{}-{}", id.0, ssrc),
            label.clone(),
            codec.rtp_kind(),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: params.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), track)?);
        let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let transceiver = transceiver_of(&pc, &sender).await;
        if let Some(t) = &transceiver {
            // Only our codec in the offer, so the negotiated payload type is the one we packetize.
            if let Err(e) = t.set_codec_preferences(vec![params.clone()]).await {
                log::warn!("cannot restrict {id} to {}: {e}", params.rtp_codec.mime_type);
            }
        }
        // webrtc 0.21 queues negotiation-needed in its core but does not wake the connection's
        // driver on add_track (it does for data channels): on a fresh connection nothing else
        // would, and no offer would ever be made. An empty RTCP batch wakes it and is dropped
        // unsent (the crate reserves it as a carrier of nothing).
        let _ = track.write_rtcp(Vec::new()).await;
        let connected = self
            .connected
            .entry(peer)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        let pump = tokio::spawn(pump(
            feed.shared.clone(),
            track,
            sender.clone(),
            transceiver,
            params.payload_type,
            ssrc,
            connected,
        ));
        self.attached.insert(
            key,
            Attachment {
                pc,
                sender,
                pump: pump.abort_handle(),
            },
        );
        Ok(())
    }

    /// Stops sending `id` to `peer` (a `request_stop`): the track is removed and the
    /// connection renegotiates.
    pub(crate) async fn detach(&mut self, peer: ClientId, id: &ResourceId) {
        if let Some(a) = self.attached.remove(&(peer, id.clone())) {
            a.pump.abort();
            if let Err(e) = a.pc.remove_track(&a.sender).await {
                log::debug!("removing {id} from {peer}: {e}");
            }
        }
    }

    /// Withdraws track `id` (`provide_stop`): it is removed from every member.
    pub(crate) async fn remove(&mut self, id: &ResourceId) {
        self.feeds.remove(id);
        let peers: Vec<ClientId> = self.attached.keys().filter(|(_, r)| r == id).map(|(p, _)| *p).collect();
        for peer in peers {
            self.detach(peer, id).await;
        }
    }

    /// The member's connection is gone: its pumps stop (the connection is closed by the caller).
    pub(crate) fn drop_peer(&mut self, peer: ClientId) {
        self.attached.retain(|(p, _), a| {
            if *p == peer {
                a.pump.abort();
            }
            *p != peer
        });
        self.connected.remove(&peer);
    }

    /// The member's connection changed state.
    pub(crate) fn connection_state(&mut self, peer: ClientId, state: RTCPeerConnectionState) {
        let up = state == RTCPeerConnectionState::Connected;
        self.connected
            .entry(peer)
            .or_insert_with(|| watch::channel(false).0)
            .send_replace(up);
    }
}

/// Adds the interceptor that hands receivers' keyframe requests (PLI, FIR) to the tracks.
pub(crate) fn with_keyframe_requests(registry: Registry) -> Registry {
    registry.with(Slot::from(KEYFRAME_SLOT), KeyframeRequests::default())
}

async fn transceiver_of(pc: &Arc<dyn PeerConnection>, sender: &Arc<dyn RtpSender>) -> Option<Arc<dyn RtpTransceiver>> {
    for t in pc.get_transceivers().await {
        if let Ok(Some(s)) = t.sender().await {
            if s.id() == sender.id() {
                return Some(t);
            }
        }
    }
    None
}

fn rand_ssrc() -> u32 {
    let mut b = [0u8; 4];
    // The OS random source does not fail on Linux; a fixed SSRC would still work per connection.
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b) | 1
}

/// Keeps a subscriber counted while its pump runs (an aborted pump is dropped, so this runs).
struct Subscribed(Arc<Shared>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Forwards a feed's samples to one member's track.
async fn pump(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    transceiver: Option<Arc<dyn RtpTransceiver>>,
    mut payload_type: u8,
    ssrc: u32,
    mut connected: watch::Receiver<bool>,
) {
    // Wait until the member is connected and has accepted the track (the answer is applied).
    loop {
        let negotiated = match &transceiver {
            Some(t) => matches!(
                t.current_direction().await,
                Ok(RTCRtpTransceiverDirection::Sendrecv | RTCRtpTransceiverDirection::Sendonly)
            ),
            None => true,
        };
        if negotiated && *connected.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(NEGOTIATION_POLL) => {}
            changed = connected.changed() => if changed.is_err() { return },
        }
    }
    if let Ok(params) = sender.get_parameters().await {
        if let Some(c) = params.rtp_parameters.codecs.first() {
            payload_type = c.payload_type;
        }
    }
    let mut samples = shared.samples.subscribe();
    shared.subscribers.fetch_add(1, Ordering::Relaxed);
    let _subscribed = Subscribed(shared.clone());
    let video = shared.codec == Codec::H264;
    // A new subscriber needs a keyframe before anything it receives can be decoded.
    let mut need_keyframe = video;
    if video {
        shared.request_keyframe();
    }
    let mut rtcp_open = true;
    loop {
        tokio::select! {
            sample = samples.recv() => match sample {
                Ok(s) => {
                    if need_keyframe && !s.keyframe {
                        continue;
                    }
                    need_keyframe = false;
                    let sample = rtc::media::Sample {
                        data: s.data.clone(),
                        duration: s.duration,
                        ..rtc::media::Sample::new(s.captured)
                    };
                    match track.write_sample(ssrc, payload_type, &sample, &[]).await {
                        Ok(()) => {
                            shared.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => log::debug!("a sample was not sent: {e}"),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::debug!("a receiver fell {n} samples behind");
                    if video {
                        need_keyframe = true;
                        shared.request_keyframe();
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            event = track.poll(), if rtcp_open => match event {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if video && packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        shared.request_keyframe();
                    }
                }
                Some(_) => {}
                None => rtcp_open = false,
            },
        }
    }
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Passes inbound PLI and FIR on to the local tracks and nothing else: the rest of the
/// inbound RTCP (reports, NACKs, bandwidth feedback) is for the interceptors before it.
#[derive(Default)]
struct KeyframeRequests {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            // Inbound RTCP ends with the chain unless marked for the application.
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_without_subscribers_drops_samples_and_keeps_requests() {
        let feed = TrackFeed::new(Codec::H264);
        feed.write(MediaSample {
            data: Bytes::from_static(b"\0\0\0\x01\x65"),
            duration: Duration::from_millis(33),
            keyframe: true,
            captured: Instant::now(),
        });
        assert_eq!(feed.subscribers(), 0);
        assert!(!feed.take_keyframe_request());
        feed.shared.request_keyframe();
        assert!(feed.take_keyframe_request());
        assert!(!feed.take_keyframe_request(), "a request is taken once");
        assert_eq!(feed.keyframe_requests(), 1);
    }

    #[test]
    fn codecs_match_what_is_announced() {
        assert_eq!(Codec::H264.track_kind(), TrackKind::Video);
        assert_eq!(Codec::Opus.track_kind(), TrackKind::Audio);
        assert!(
            Codec::H264
                .parameters()
                .rtp_codec
                .sdp_fmtp_line
                .contains("packetization-mode=1")
        );
        assert!(Codec::H264.parameters().rtp_codec.sdp_fmtp_line.contains("42e01f"));
    }
}
