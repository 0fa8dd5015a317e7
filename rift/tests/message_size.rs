//! rift sending to a peer that announces a smaller maximum message size than rift's 64 KiB
//! (`a=max-message-size` in its SDP). The peer is written from docs/PROTOCOL.md: keks-proto's
//! session over a raw WebSocket for signaling, and a plain webrtc peer connection that only
//! answers, so it sees every message exactly as rift sent it.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ws, bytes, join, rift, send_packet, serve, setup, text, wait};
use futures_util::StreamExt as _;
use keks_proto::packets::{ClientId, ClientboundPacket, IceCandidate, RelayMessage, ResourceKind};
use keks_proto::session::{Event, Output, Session};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCSessionDescription, SettingEngineBuilder,
};

/// What the peer announces: a quarter of rift's 64 KiB.
const PEER_MAX: usize = 16 * 1024;

/// What the peer connection's callbacks tell the test's loop.
enum FromPeer {
    Candidate(IceCandidate),
    Channel(Arc<dyn DataChannel>),
    Received(Received),
}

struct Forward(mpsc::UnboundedSender<FromPeer>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Forward {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(FromPeer::Candidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            }));
        }
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.0.send(FromPeer::Channel(data_channel));
    }
}

/// What arrived on the file's data channel.
#[derive(Default)]
struct Received {
    data: Vec<u8>,
    messages: usize,
    largest: usize,
    /// Whether `end` came (otherwise the channel closed first).
    end: bool,
}

/// Reads one file's channel to its `end` or close.
async fn receive(dc: Arc<dyn DataChannel>, report: mpsc::UnboundedSender<FromPeer>) {
    let mut got = Received::default();
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnMessage(m) if m.is_string && m.data.as_ref() == b"end" => {
                got.end = true;
                break;
            }
            // Other text is ignored (PROTOCOL.md).
            DataChannelEvent::OnMessage(m) if m.is_string => {}
            DataChannelEvent::OnMessage(m) => {
                got.messages += 1;
                got.largest = got.largest.max(m.data.len());
                got.data.extend_from_slice(&m.data);
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = report.send(FromPeer::Received(got));
}

/// A peer connection on loopback that announces [`PEER_MAX`] as its maximum message size.
async fn peer_connection(events: mpsc::UnboundedSender<FromPeer>) -> Arc<dyn PeerConnection> {
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(PEER_MAX as u32))
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_handler(Arc::new(Forward(events)))
        .with_runtime(keks_client::udp::BufferedRuntime::shared())
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    Arc::new(pc)
}

/// Requests the first file offered, answers the provider's offer and reads the file. Returns
/// what arrived and the connection (kept open until the provider is done).
async fn download(ws: &mut Ws, session: &mut Session) -> (Received, Arc<dyn PeerConnection>) {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut pc: Option<Arc<dyn PeerConnection>> = None;
    let mut provider: Option<ClientId> = None;
    loop {
        tokio::select! {
            message = ws.next() => {
                let Some(Ok(Message::Text(t))) = message else { panic!("the relay closed") };
                let Ok(packet) = serde_json::from_str::<ClientboundPacket>(&t) else { continue };
                for out in session.handle(packet) {
                    match out {
                        Output::Send(p) => send_packet(ws, &p).await,
                        Output::Event(Event::Provided { from, info }) if info.kind == ResourceKind::File => {
                            if provider.is_none() {
                                provider = Some(from);
                                let request = session.send(Some(from), &RelayMessage::Request { id: info.id }).unwrap();
                                send_packet(ws, &request).await;
                            }
                        }
                        Output::Event(Event::Offer { from, sdp }) => {
                            if pc.is_none() {
                                pc = Some(peer_connection(tx.clone()).await);
                            }
                            let pc = pc.as_ref().unwrap();
                            pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.unwrap();
                            let answer = pc.create_answer(None).await.unwrap();
                            let sdp = answer.sdp.clone();
                            assert!(
                                sdp.contains(&format!("a=max-message-size:{PEER_MAX}")),
                                "the answer announces the limit: {sdp}"
                            );
                            pc.set_local_description(answer).await.unwrap();
                            send_packet(ws, &session.send(Some(from), &RelayMessage::Answer(sdp)).unwrap()).await;
                        }
                        Output::Event(Event::IceCandidate { candidate, .. }) if !candidate.candidate.is_empty() => {
                            if let Some(pc) = &pc {
                                let init = RTCIceCandidateInit {
                                    candidate: candidate.candidate,
                                    sdp_mid: candidate.sdp_mid,
                                    sdp_mline_index: candidate.sdp_m_line_index,
                                    username_fragment: candidate.username_fragment,
                                    ..Default::default()
                                };
                                let _ = pc.add_ice_candidate(init).await;
                            }
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            Some(event) = events.recv() => match event {
                FromPeer::Candidate(c) => {
                    if let Some(to) = provider {
                        send_packet(ws, &session.send(Some(to), &RelayMessage::IceCandidate(c)).unwrap()).await;
                    }
                }
                FromPeer::Channel(dc) => {
                    tokio::spawn(receive(dc, tx.clone()));
                }
                FromPeer::Received(got) => return (got, pc.unwrap()),
            },
        }
    }
}

/// The "messages up to the peer's max message size": rift cut every file into 64 KiB
/// messages whatever the peer announced. The webrtc crate refuses to send a message above the
/// negotiated size, so such a peer got a channel closed without `end`.
#[test]
fn a_peer_announcing_16_kib_messages_gets_none_larger_and_the_whole_file() {
    let Some((dir, relay)) = setup(
        "a_peer_announcing_16_kib_messages_gets_none_larger_and_the_whole_file",
        8080,
        &["--no-tls"],
    ) else {
        return;
    };
    let d = dir.path();
    let payload = bytes(3_000_000, 11);
    std::fs::write(d.join("payload.bin"), &payload).unwrap();
    let secret = "small messages";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ws, mut session) = rt.block_on(join(relay.port, secret));
    let mut sender = rift(d, &format!("http://127.0.0.1:{}", relay.port), secret)
        .current_dir(d)
        .args(["send", "payload.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let downloaded =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), download(&mut ws, &mut session)).await });
    let Ok((got, pc)) = downloaded else {
        let _ = sender.kill();
        panic!(
            "nothing arrived within 120 s: {}",
            text(&sender.wait_with_output().unwrap())
        );
    };
    let problem = if !got.end {
        Some(format!("the channel closed without end after {} bytes", got.data.len()))
    } else if got.largest > PEER_MAX {
        Some(format!(
            "a message of {} bytes, above the {PEER_MAX} the peer announced",
            got.largest
        ))
    } else if got.largest < PEER_MAX {
        Some(format!(
            "messages of at most {} bytes: up to the peer's {PEER_MAX} expected",
            got.largest
        ))
    } else if got.data != payload {
        Some(format!("the file differs ({} bytes arrived)", got.data.len()))
    } else {
        None
    };
    if let Some(problem) = problem {
        let _ = sender.kill();
        panic!("{problem}; rift send: {}", text(&sender.wait_with_output().unwrap()));
    }
    assert!(got.messages >= payload.len().div_ceil(PEER_MAX));
    // Stay (and keep the connection) until rift is done with the file, as a browser would.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.try_wait().unwrap().is_none() && Instant::now() < deadline {
        rt.block_on(serve(&mut ws, &mut session, Duration::from_millis(500)));
    }
    let s = wait(sender, Duration::from_secs(5), "rift send");
    drop(pc);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
}
