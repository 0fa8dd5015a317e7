//! Clients that misbehave are closed with a proper close code; everybody else is unaffected.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use keksbox::config::Config;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A room of two well-behaved clients and one that is about to misbehave.
async fn room(relay: &Relay) -> (Client, Client, Client) {
    let (mut a, mut b, mut bad) = (relay.client().await, relay.client().await, relay.client().await);
    for c in [&mut a, &mut b, &mut bad] {
        c.join(&hash('a')).await;
    }
    // Drain the join fan-out: 3 + 2 + 1 packets... a sees 3, b sees 3, bad sees 3.
    for c in [&mut a, &mut b, &mut bad] {
        for _ in 0..3 {
            assert!(c.recv().await.get("client_join").is_some());
        }
    }
    (a, b, bad)
}

/// The bystanders learn the offender left and can still talk to each other.
async fn unaffected(a: &mut Client, b: &mut Client, bad_id: u64) {
    assert_eq!(a.recv().await, leave_packet(bad_id));
    assert_eq!(b.recv().await, leave_packet(bad_id));
    a.relay(Some(b.id), "still here").await;
    assert_eq!(b.recv().await, message_packet(a.id, "still here"));
}

async fn misbehave(message: Message, expected_code: u16) {
    let mut config = Config::default();
    config.limits.max_message_size = 1 << 16;
    config.limits.max_frame_size = 1 << 16;
    config.limits.send_queue_bytes = 1 << 16;
    let relay = Relay::start(config).await;
    let (mut a, mut b, mut bad) = room(&relay).await;
    bad.send_raw(message).await;
    let frame = bad.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), expected_code, "reason: {}", frame.reason);
    unaffected(&mut a, &mut b, bad.id).await;
}

#[tokio::test]
async fn non_json_closes_with_policy() {
    misbehave(text("hello?"), 1008).await;
}

#[tokio::test]
async fn wrong_types_close_with_policy() {
    misbehave(text(r#"{"relay":{"recipient":"everyone","message":5}}"#), 1008).await;
}

#[tokio::test]
async fn unknown_packet_closes_with_policy() {
    misbehave(text(r#"{"make_me_admin":{}}"#), 1008).await;
}

#[tokio::test]
async fn malformed_room_hash_closes_with_policy() {
    misbehave(text(r#"{"join":{"hash":"../../etc/passwd"}}"#), 1008).await;
}

#[tokio::test]
async fn binary_frame_closes_with_unsupported() {
    misbehave(Message::Binary(vec![1, 2, 3].into()), 1003).await;
}

#[tokio::test]
async fn oversize_message_closes_with_too_big() {
    let big = format!(r#"{{"relay":{{"message":"{}"}}}}"#, "A".repeat(1 << 17));
    misbehave(text(&big), 1009).await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_invalid_data() {
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    misbehave(Message::Frame(frame), 1007).await;
}

#[tokio::test]
async fn oversize_frame_closes_with_too_big() {
    // One frame over max_frame_size, declared in the header.
    let frame = Frame::message(vec![b' '; (1 << 16) + 10], OpCode::Data(Data::Text), true);
    misbehave(Message::Frame(frame), 1009).await;
}

#[tokio::test]
async fn non_reading_client_is_evicted_and_others_keep_receiving() {
    let mut config = Config::default();
    config.limits.max_message_size = 1 << 16;
    config.limits.send_queue_messages = 16;
    config.limits.send_queue_bytes = 1 << 18;
    config.limits.write_timeout_secs = 2;
    let relay = Relay::start(config).await;
    let mut sender = relay.client().await;
    let mut reader = relay.client().await;
    // The slow client's socket has a tiny receive buffer and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(relay.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/signaling", relay.addr),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut slow = Client::from_ws(ws).await;
    for c in [&mut sender, &mut reader, &mut slow] {
        c.join(&hash('5')).await;
    }
    for c in [&mut sender, &mut reader] {
        for _ in 0..3 {
            c.recv().await;
        }
    }
    let payload = "x".repeat(60_000);
    let started = Instant::now();
    let mut received = 0;
    let mut left = false;
    for i in 0..400 {
        sender.relay(None, &payload).await;
        // The reader gets every message, in order, interleaved with the slow one's leave.
        loop {
            let p = reader.recv().await;
            if p == leave_packet(slow.id) {
                left = true;
                continue;
            }
            assert_eq!(p, message_packet(sender.id, &payload), "message {i}");
            received += 1;
            break;
        }
        if left {
            break;
        }
    }
    if !left {
        assert_eq!(reader.recv().await, leave_packet(slow.id));
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "evicted within seconds: {:?}",
        started.elapsed()
    );
    assert!(received > 0);
    assert_eq!(sender.recv().await, leave_packet(slow.id));
    // And the room goes on.
    sender.relay(None, "after").await;
    assert_eq!(reader.recv().await, message_packet(sender.id, "after"));
}

#[tokio::test]
async fn idle_client_is_closed() {
    let mut config = Config::default();
    config.limits.idle_timeout_secs = 1;
    let relay = Relay::start(config).await;
    let mut pinger = relay.client().await;
    let mut idle = relay.client().await;
    pinger.join(&hash('d')).await;
    idle.join(&hash('d')).await;
    let started = Instant::now();
    // The pinger stays, pinging well inside the timeout.
    let ping = tokio::spawn(async move {
        for _ in 0..6 {
            pinger.send(json!({"ping": null})).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        pinger
    });
    let frame = idle.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1000);
    assert_eq!(frame.reason.as_str(), "idle timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let mut pinger = ping.await.unwrap();
    assert_eq!(pinger.recv().await, join_packet(pinger.id));
    assert_eq!(pinger.recv().await, join_packet(idle.id));
    assert_eq!(pinger.recv().await, leave_packet(idle.id));
}

#[tokio::test]
async fn stalled_handshake_is_dropped() {
    let mut config = Config::default();
    config.limits.handshake_timeout_secs = 1;
    let relay = Relay::start(config).await;
    let mut tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    tcp.write_all(b"GET /signaling HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(read.is_ok() || buf.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connection_limit_refuses_extra_clients() {
    let mut config = Config::default();
    config.limits.max_connections = 2;
    let relay = Relay::start(config).await;
    let a = relay.client().await;
    let _b = relay.client().await;
    // The third connection is closed at accept, before any HTTP.
    tokio_tungstenite::connect_async(format!("ws://{}/signaling", relay.addr))
        .await
        .expect_err("refused");
    drop(a);
    // The permit comes back once the connection is gone.
    let mut retry = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(format!("ws://{}/signaling", relay.addr)).await {
            retry = Some(Client::from_ws(ws).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(retry.is_some(), "a slot frees up after a disconnect");
}

#[tokio::test]
async fn shutdown_says_going_away() {
    let relay = Relay::default().await;
    let mut a = relay.client().await;
    a.join(&hash('e')).await;
    a.recv().await;
    let stop = tokio::spawn(relay.shutdown());
    let frame = a.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1001);
    stop.await.unwrap();
}

#[tokio::test]
async fn client_config_limits_are_not_tungstenite_defaults() {
    let hub = keksbox::relay::Hub::new(Config::default().limits, "v".into());
    let c: WebSocketConfig = hub.websocket_config();
    assert_eq!(c.max_message_size, Some(8 << 20));
    assert!(c.read_buffer_size <= 8 << 10);
    assert!(c.max_write_buffer_size < 64 << 20);
}

#[tokio::test]
async fn flooding_member_is_paced_and_cannot_crowd_out_others() {
    let mut config = Config::default();
    config.limits.relay_bytes_per_sec = 100_000;
    config.limits.relay_burst_bytes = 100_000;
    let relay = Relay::start(config).await;
    let (mut flooder, mut quiet, mut reader) = (relay.client().await, relay.client().await, relay.client().await);
    for c in [&mut flooder, &mut quiet, &mut reader] {
        c.join(&hash('f')).await;
    }
    for c in [&mut flooder, &mut quiet, &mut reader] {
        for _ in 0..3 {
            c.recv().await;
        }
    }
    // Six 50 kB messages to one recipient: 300 kB against a 100 kB burst at 100 kB/s.
    let payload = "y".repeat(50_000);
    let started = Instant::now();
    for _ in 0..6 {
        flooder.relay(Some(reader.id), &payload).await;
    }
    quiet.relay(Some(reader.id), "me too").await;
    let mut order = Vec::new();
    while order.len() < 7 {
        let p = reader.recv().await;
        order.push(p["message"]["sender"].as_u64().unwrap());
    }
    let elapsed = started.elapsed();
    // Each message waits until the budget covers it (50 kB plus the packet cost): the first
    // two pass at once, messages 3 to 6 wait about 0.5 s each.
    assert!(
        elapsed >= Duration::from_millis(1400),
        "the flood was paced: {elapsed:?}"
    );
    let quiet_at = order.iter().position(|&s| s == quiet.id).unwrap();
    assert!(
        quiet_at < 6,
        "the quiet member was not queued behind the whole flood: {order:?}"
    );
    // The flooder was slowed down, not disconnected.
    flooder.relay(Some(reader.id), "still here").await;
    assert_eq!(reader.recv().await, message_packet(flooder.id, "still here"));
}

#[tokio::test]
async fn packets_that_deliver_nothing_are_paced_too() {
    // Pings make the relay read, parse and lock but deliver nothing: they cost nothing, so
    // a member could keep a core busy with them. Each now costs its size plus 256 bytes.
    let mut config = Config::default();
    config.limits.relay_bytes_per_sec = 25_600;
    config.limits.relay_burst_bytes = 25_600;
    let relay = Relay::start(config).await;
    let (mut pinger, mut other, mut witness) = (relay.client().await, relay.client().await, relay.client().await);
    for c in [&mut pinger, &mut other, &mut witness] {
        c.join(&hash('c')).await;
    }
    for c in [&mut pinger, &mut other, &mut witness] {
        for _ in 0..3 {
            c.recv().await;
        }
    }
    // 400 pings of about 270 bytes each: the 25.6 kB burst covers fewer than 100, the rest
    // go at about 95 a second.
    let started = Instant::now();
    for _ in 0..400 {
        pinger.send(json!({"ping": null})).await;
    }
    pinger.relay(Some(witness.id), "after the pings").await;
    // Another member is not slowed by it.
    other.relay(Some(witness.id), "meanwhile").await;
    assert_eq!(witness.recv().await, message_packet(other.id, "meanwhile"));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(witness.recv().await, message_packet(pinger.id, "after the pings"));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500),
        "the pings were paced: {elapsed:?}"
    );
}
