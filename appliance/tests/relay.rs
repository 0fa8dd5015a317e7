//! Black-box tests of the relay: real WebSocket clients against `keksbox::serve_plain_http` on
//! 127.0.0.1:0, covering docs/PROTOCOL.md's "What the server does".
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn init_ids_are_unique_and_js_safe() {
    let relay = Relay::default().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(relay.client().await.id);
    }
    assert!(ids.iter().all(|&id| id > 0 && id < (1 << 53)));
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids are unique");
    assert!(ids.windows(2).any(|w| w[1] != w[0] + 1), "ids are not sequential");
}

#[tokio::test]
async fn join_fan_out_relay_and_leave() {
    let relay = Relay::default().await;
    let (mut a, mut b, mut c) = (relay.client().await, relay.client().await, relay.client().await);
    a.join(&hash('a')).await;
    assert_eq!(a.recv().await, join_packet(a.id));
    b.join(&hash('a')).await;
    assert_eq!(a.recv().await, join_packet(b.id));
    assert_eq!(b.recv().await, join_packet(b.id));
    assert_eq!(b.recv().await, join_packet(a.id));
    c.join(&hash('a')).await;
    for x in [&mut a, &mut b] {
        assert_eq!(x.recv().await, join_packet(c.id));
    }
    assert_eq!(c.recv().await, join_packet(c.id));
    assert_eq!(c.recv().await, join_packet(a.id));
    assert_eq!(c.recv().await, join_packet(b.id));

    // Broadcast reaches the others, not the sender; a recipient gets it alone.
    a.relay(None, "to-all").await;
    assert_eq!(b.recv().await, message_packet(a.id, "to-all"));
    assert_eq!(c.recv().await, message_packet(a.id, "to-all"));
    a.relay(Some(c.id), "to-c").await;
    assert_eq!(c.recv().await, message_packet(a.id, "to-c"));
    // A null recipient is a broadcast too.
    b.send(json!({"relay": {"recipient": null, "message": "null"}})).await;
    assert_eq!(a.recv().await, message_packet(b.id, "null"));
    assert_eq!(c.recv().await, message_packet(b.id, "null"));
    a.silent(Duration::from_millis(200)).await;
    b.silent(Duration::from_millis(50)).await;

    // Disconnect is a leave.
    let c_id = c.id;
    drop(c);
    assert_eq!(a.recv().await, leave_packet(c_id));
    assert_eq!(b.recv().await, leave_packet(c_id));
    // An explicit leave with a null hash.
    b.send(json!({"join": {"hash": null}})).await;
    assert_eq!(a.recv().await, leave_packet(b.id));
    b.relay(Some(a.id), "from nowhere").await;
    a.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let relay = Relay::default().await;
    let (mut a, mut b) = (relay.client().await, relay.client().await);
    a.join(&hash('a')).await;
    a.recv().await;
    b.join(&hash('b')).await;
    b.recv().await;
    a.relay(None, "a only").await;
    a.relay(Some(b.id), "not across rooms").await;
    b.silent(Duration::from_millis(200)).await;
    // Switching rooms leaves the old one first.
    b.join(&hash('a')).await;
    assert_eq!(a.recv().await, join_packet(b.id));
    assert_eq!(b.recv().await, join_packet(b.id));
    assert_eq!(b.recv().await, join_packet(a.id));
}

#[tokio::test]
async fn watches_follow_member_counts() {
    let relay = Relay::default().await;
    let (mut w, mut a, mut b) = (relay.client().await, relay.client().await, relay.client().await);
    a.join(&hash('a')).await;
    a.recv().await;
    let info = |c, n| json!({"room_info": {"hash": hash(c), "user_count": n}});
    w.send(json!({"watch_rooms": [hash('a'), hash('b')]})).await;
    assert_eq!(w.recv().await, info('a', 1), "only existing rooms are reported at once");
    w.silent(Duration::from_millis(100)).await;
    b.join(&hash('b')).await;
    assert_eq!(w.recv().await, info('b', 1));
    b.join(&hash('a')).await;
    assert_eq!(w.recv().await, info('b', 0));
    assert_eq!(w.recv().await, info('a', 2));
    drop(a);
    assert_eq!(w.recv().await, info('a', 1));
    w.send(json!({"watch_rooms": []})).await;
    drop(b);
    w.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn too_many_watches_close_that_client_only() {
    let mut config = keksbox::config::Config::default();
    config.limits.max_watched_rooms = 2;
    let relay = Relay::start(config).await;
    let mut ok = relay.client().await;
    let mut greedy = relay.client().await;
    greedy
        .send(json!({"watch_rooms": [hash('1'), hash('2'), hash('3')]}))
        .await;
    let frame = greedy.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("watches 3 rooms"), "{}", frame.reason);
    ok.send(json!({"watch_rooms": [hash('1'), hash('2')]})).await;
    ok.send(json!({"ping": null})).await;
    ok.join(&hash('1')).await;
    assert_eq!(ok.recv().await, join_packet(ok.id));
    assert_eq!(
        ok.recv().await,
        json!({"room_info": {"hash": hash('1'), "user_count": 1}})
    );
}

#[tokio::test]
async fn thousand_clients_join_one_room_concurrently() {
    const N: usize = 1000;
    // All from 127.0.0.1: lift the per-address cap this test is not about.
    let mut config = keksbox::config::Config::default();
    config.limits.max_connections_per_address = N + 10;
    config.limits.max_connections = N + 10;
    let relay = Relay::start(config).await;
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(relay.client().await);
    }
    let room = hash('c');
    // Everyone joins at once; each must then see a client_join for all N members.
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let room = room.clone();
            tokio::spawn(async move {
                c.join(&room).await;
                let mut seen = std::collections::HashSet::new();
                while seen.len() < N {
                    let p = c.recv().await;
                    let id = p["client_join"]["id"].as_u64().expect("only joins so far");
                    assert!(seen.insert(id), "join for {id} twice");
                }
                assert!(seen.contains(&c.id));
                c
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(N);
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    // One broadcast reaches all 999 others.
    let sender = clients[0].id;
    clients[0].relay(None, "hello everyone").await;
    let tasks: Vec<_> = clients
        .into_iter()
        .skip(1)
        .map(|mut c| tokio::spawn(async move { c.recv().await }))
        .collect();
    let mut got = 0;
    for t in tasks {
        assert_eq!(t.await.unwrap(), message_packet(sender, "hello everyone"));
        got += 1;
    }
    assert_eq!(got, N - 1);
}
