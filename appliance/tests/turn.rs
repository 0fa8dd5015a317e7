//! The TURN server against webrtc-rs's TURN client over loopback: relaying works with the
//! credentials /config.json hands out, and every refusal the appliance promises holds:
//! expired and forged credentials, peers outside the allowed prefixes, the box's own
//! non-relay ports, the allocation caps, the bandwidth cap, expiry of a running allocation.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keksbox::turn::{Addresses, Credentials, Secret, Turn, TurnConfig};
use tokio::net::UdpSocket;
use webrtc_turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A config for tests: any free port, a small relay range of its own per test.
fn config(relay_base: u16) -> TurnConfig {
    TurnConfig {
        port: 0,
        relay_port_min: relay_base,
        relay_port_max: relay_base + 40,
        ..TurnConfig::default()
    }
}

/// Listens on 127.0.0.1; peers may be anywhere in 127.0.0.0/8, the box is 127.0.0.1.
async fn start(config: &TurnConfig, secret: &Secret) -> Turn {
    let addresses = Addresses {
        listen: vec![LOOPBACK],
        own: vec![LOOPBACK],
        networks: vec!["127.0.0.0/8".parse().unwrap()],
    };
    Turn::start(config, &addresses, secret.clone()).await.unwrap()
}

async fn client(turn: &Turn, creds: &Credentials) -> Client {
    client_at(turn.listening()[0], creds).await
}

async fn client_at(server: SocketAddr, creds: &Credentials) -> Client {
    let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client_over(server, creds, Arc::new(conn)).await
}

/// A listening TURN client of `server` over `conn`.
async fn client_over(server: SocketAddr, creds: &Credentials, conn: Arc<dyn Conn + Send + Sync>) -> Client {
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: creds.username.clone(),
        password: creds.password.clone(),
        realm: keksbox::turn::REALM.to_owned(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

async fn allocate(turn: &Turn, creds: &Credentials) -> Result<(Client, impl Conn + use<>), webrtc_turn::Error> {
    let c = client(turn, creds).await;
    let relay = tokio::time::timeout(Duration::from_secs(10), c.allocate())
        .await
        .expect("an answer within 10 s")?;
    Ok((c, relay))
}

async fn allocate_at(server: SocketAddr, creds: &Credentials) -> (Client, impl Conn + use<>) {
    let c = client_at(server, creds).await;
    let relay = tokio::time::timeout(Duration::from_secs(10), c.allocate())
        .await
        .expect("an answer within 10 s")
        .unwrap();
    (c, relay)
}

async fn peer(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

/// Waits up to `limit` for one datagram.
async fn recv(socket: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(limit, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some((buf, from))
}

#[tokio::test]
async fn relays_both_ways_with_issued_credentials_and_answers_stun() {
    let secret = Secret::random().unwrap();
    let turn = start(&config(50000), &secret).await;
    let creds = turn.credentials().unwrap();
    let (c, relay) = allocate(&turn, &creds).await.unwrap();
    // STUN: the server tells the client its own address.
    let mapped = c.send_binding_request().await.unwrap();
    assert_eq!(mapped.ip(), LOOPBACK);

    let peer = peer("127.0.0.2").await;
    let relayed = relay.local_addr().unwrap();
    assert!((50000..=50040).contains(&relayed.port()), "{relayed}");
    relay
        .send_to(b"from the client", peer.local_addr().unwrap())
        .await
        .unwrap();
    let (got, from) = recv(&peer, Duration::from_secs(5)).await.expect("relayed to the peer");
    assert_eq!(got, b"from the client");
    assert_eq!(from.port(), relayed.port());
    peer.send_to(b"from the peer", from).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, src) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"from the peer");
    assert_eq!(src, peer.local_addr().unwrap());
    let stats = turn.stats();
    assert_eq!((stats.allocations, stats.live_allocations), (1, 1));
    assert!(stats.relayed_bytes >= 28, "{stats:?}");
    // Closing gives the place back.
    relay.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while turn.stats().live_allocations != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the allocation's place is given back");
    c.close().await.unwrap();
    turn.close().await;
}

#[tokio::test]
async fn expired_and_forged_credentials_are_refused() {
    let secret = Secret::random().unwrap();
    let turn = start(&config(50100), &secret).await;
    let past = SystemTime::now() - Duration::from_secs(3600);
    let expired = secret.issue(past, Duration::from_secs(60)).unwrap();
    assert!(allocate(&turn, &expired).await.is_err(), "expired credentials");
    let mut forged = turn.credentials().unwrap();
    forged.password = Secret::random().unwrap().password(&forged.username);
    assert!(
        allocate(&turn, &forged).await.is_err(),
        "a password from another secret"
    );
    let mut stretched = turn.credentials().unwrap();
    // A later expiry with the old password: the HMAC no longer matches.
    let (_, random) = stretched.username.split_once(':').unwrap();
    stretched.username = format!("{}:{random}", u64::MAX / 2);
    assert!(
        allocate(&turn, &stretched).await.is_err(),
        "a user name with its expiry changed"
    );
    let foreign = Credentials {
        username: "alice".into(),
        password: "secret".into(),
    };
    assert!(
        allocate(&turn, &foreign).await.is_err(),
        "a user name keksbox never issued"
    );
    let stats = turn.stats();
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert!(
        stats.refused_credentials >= 2,
        "expired and foreign names counted: {stats:?}"
    );
    // And the real thing still works.
    assert!(allocate(&turn, &turn.credentials().unwrap()).await.is_ok());
    turn.close().await;
}

#[tokio::test]
async fn peers_outside_the_allowed_prefixes_are_refused() {
    let secret = Secret::random().unwrap();
    let mut cfg = config(50200);
    cfg.allowed_prefixes = vec!["127.0.0.0/30".into()];
    let turn = start(&cfg, &secret).await;
    let (_c, relay) = allocate(&turn, &turn.credentials().unwrap()).await.unwrap();
    let outside = peer("127.0.0.9").await;
    let _ = relay.send_to(b"let me out", outside.local_addr().unwrap()).await;
    assert!(
        recv(&outside, Duration::from_millis(700)).await.is_none(),
        "nothing reaches 127.0.0.9"
    );
    assert!(turn.stats().refused_peer >= 1, "{:?}", turn.stats());
    let inside = peer("127.0.0.2").await;
    relay.send_to(b"fine", inside.local_addr().unwrap()).await.unwrap();
    assert_eq!(recv(&inside, Duration::from_secs(5)).await.unwrap().0, b"fine");
    turn.close().await;
}

#[tokio::test]
async fn listeners_and_allowed_networks_follow_the_boxs_addresses() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let secret = Secret::random().unwrap();
    // The box is 127.0.0.1 in 127.0.0.0/30; later it also gets 127.0.0.10 in 127.0.0.8/30.
    let before = Addresses {
        listen: vec![LOOPBACK],
        own: vec![LOOPBACK],
        networks: vec!["127.0.0.0/30".parse().unwrap()],
    };
    let after = Addresses {
        listen: vec![LOOPBACK, ip("127.0.0.10")],
        own: vec![LOOPBACK, ip("127.0.0.10")],
        networks: vec!["127.0.0.0/30".parse().unwrap(), "127.0.0.8/30".parse().unwrap()],
    };
    let turn = Turn::start(&config(51100), &before, secret).await.unwrap();
    let port = turn.listening()[0].port();
    assert_eq!(turn.listener_for(ip("127.0.0.10")), None);
    let (_c, relay) = allocate(&turn, &turn.credentials().unwrap()).await.unwrap();
    let far = peer("127.0.0.9").await;
    let far_addr = far.local_addr().unwrap();
    let _ = relay.send_to(b"before", far_addr).await;
    assert!(
        recv(&far, Duration::from_millis(700)).await.is_none(),
        "127.0.0.9 is not the box's network yet"
    );

    turn.refresh(&after).await;
    let new = SocketAddr::new(ip("127.0.0.10"), port);
    assert_eq!(
        turn.listener_for(ip("127.0.0.10")),
        Some(new),
        "a listener on the new address, same port"
    );
    assert_eq!(turn.allowed(), after.networks);
    // An allocation made through the new address relays from it, into the new network.
    let (_c2, relay2) = allocate_at(new, &turn.credentials().unwrap()).await;
    assert_eq!(relay2.local_addr().unwrap().ip(), ip("127.0.0.10"));
    relay2.send_to(b"through the new address", far_addr).await.unwrap();
    assert_eq!(
        recv(&far, Duration::from_secs(5)).await.unwrap().0,
        b"through the new address"
    );
    // The allocation made before the change follows the new policy too.
    relay.send_to(b"now allowed", far_addr).await.unwrap();
    assert_eq!(recv(&far, Duration::from_secs(5)).await.unwrap().0, b"now allowed");
    assert_eq!(turn.stats().live_allocations, 2);
    let mut tcp = tokio::net::TcpStream::connect(new).await.unwrap();
    binding_over_tcp(&mut tcp).await.unwrap();

    // The address goes: its listener, its allocation and its TCP connection end, and
    // 127.0.0.9 is outside again, even for the permission the first allocation holds.
    turn.refresh(&before).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while !closed_by_server(&mut tcp).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the TCP connection to the vanished address is closed");
    assert_eq!(turn.listening(), vec![SocketAddr::new(LOOPBACK, port)]);
    assert_eq!(turn.listener_for(ip("127.0.0.10")), None);
    assert_eq!(turn.allowed(), before.networks);
    tokio::time::timeout(Duration::from_secs(5), async {
        while turn.stats().live_allocations != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the allocation on the vanished address ends");
    let refused = turn.stats().refused_peer;
    relay.send_to(b"outside again", far_addr).await.unwrap();
    assert!(recv(&far, Duration::from_millis(700)).await.is_none());
    assert!(turn.stats().refused_peer > refused);
    turn.close().await;
}

#[tokio::test]
async fn the_box_itself_is_reachable_only_on_relay_ports() {
    let secret = Secret::random().unwrap();
    let turn = start(&config(50300), &secret).await;
    let (_c, relay) = allocate(&turn, &turn.credentials().unwrap()).await.unwrap();
    // A UDP service of the box (127.0.0.1 is the box here) outside the relay range.
    let service = peer("127.0.0.1").await;
    let before = turn.stats().refused_peer;
    relay.send_to(b"probe", service.local_addr().unwrap()).await.unwrap();
    assert!(recv(&service, Duration::from_millis(700)).await.is_none());
    assert!(turn.stats().refused_peer > before);
    // Another allocation's relayed address on the box: allowed (relay to relay).
    let (_c2, relay2) = allocate(&turn, &turn.credentials().unwrap()).await.unwrap();
    let to = relay2.local_addr().unwrap();
    relay.send_to(b"relay to relay", to).await.unwrap();
    // relay2 has no permission for relay's address yet: give it one by sending first.
    relay2.send_to(b"hi", relay.local_addr().unwrap()).await.unwrap();
    relay.send_to(b"relay to relay", to).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), relay2.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"relay to relay");
    turn.close().await;
}

#[tokio::test]
async fn allocation_caps_hold_per_client_and_in_total() {
    let secret = Secret::random().unwrap();
    let mut cfg = config(50400);
    cfg.max_allocations_per_client = 2;
    let turn = start(&cfg, &secret).await;
    let creds = turn.credentials().unwrap();
    let (_a, _ra) = allocate(&turn, &creds).await.unwrap();
    let (_b, rb) = allocate(&turn, &creds).await.unwrap();
    assert!(allocate(&turn, &creds).await.is_err(), "a third from 127.0.0.1");
    assert_eq!(turn.stats().refused_client_quota, 1);
    assert_eq!(turn.stats().live_allocations, 2);
    rb.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(allocate(&turn, &creds).await.is_ok(), "room again after one closed");
    turn.close().await;

    let mut cfg = config(50450);
    cfg.max_allocations = 2;
    let turn = start(&cfg, &secret).await;
    let (_a, _ra) = allocate(&turn, &creds).await.unwrap();
    let (_b, _rb) = allocate(&turn, &creds).await.unwrap();
    assert!(allocate(&turn, &creds).await.is_err(), "a third on the box");
    let stats = turn.stats();
    assert_eq!((stats.refused_total_quota, stats.live_allocations), (1, 2), "{stats:?}");
    turn.close().await;
}

#[tokio::test]
async fn the_bandwidth_cap_drops_what_is_above_it() {
    let secret = Secret::random().unwrap();
    let mut cfg = config(50500);
    cfg.allocation_bytes_per_sec = 10_000;
    let turn = start(&cfg, &secret).await;
    let (_c, relay) = allocate(&turn, &turn.credentials().unwrap()).await.unwrap();
    let peer = peer("127.0.0.2").await;
    let to = peer.local_addr().unwrap();
    for _ in 0..50 {
        relay.send_to(&[7u8; 1000], to).await.unwrap();
    }
    let mut received = 0;
    while recv(&peer, Duration::from_millis(500)).await.is_some() {
        received += 1;
    }
    // One second's worth (10 datagrams) plus what refilled while sending.
    assert!((5..=20).contains(&received), "{received} of 50 passed");
    assert!(turn.stats().dropped_bandwidth >= 30, "{:?}", turn.stats());
    turn.close().await;
}

#[tokio::test]
async fn an_allocation_ends_when_its_credentials_expire() {
    let secret = Secret::random().unwrap();
    let turn = start(&config(50600), &secret).await;
    // Valid for 2 more seconds (expiry is in whole seconds: 2 to 3 s from now).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let creds = secret
        .issue(UNIX_EPOCH + Duration::from_secs(now.as_secs()), Duration::from_secs(2))
        .unwrap();
    let (_c, relay) = allocate(&turn, &creds).await.unwrap();
    let peer = peer("127.0.0.2").await;
    relay.send_to(b"before", peer.local_addr().unwrap()).await.unwrap();
    let (_, relayed) = recv(&peer, Duration::from_secs(2)).await.expect("relayed while valid");
    tokio::time::timeout(Duration::from_secs(6), async {
        while turn.stats().live_allocations != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the allocation ends within a few seconds of expiry");
    assert_eq!(turn.stats().expired, 1);
    // Its relayed address relays no more.
    peer.send_to(b"after", relayed).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), relay.recv_from(&mut buf))
            .await
            .is_err()
    );
    turn.close().await;
}

#[tokio::test]
async fn malformed_datagrams_are_survived() {
    let secret = Secret::random().unwrap();
    let turn = start(&config(50700), &secret).await;
    let server = turn.listening()[0];
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut stun_like = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    stun_like.extend_from_slice(&[0; 12]);
    stun_like.extend_from_slice(&[0x00, 0x12, 0x00, 0x40]); // XOR-PEER-ADDRESS longer than the message
    for packet in [
        vec![],
        vec![0xff; 3],
        vec![0x40, 0x00, 0xff, 0xff, 1, 2],
        stun_like,
        vec![0u8; 1400],
    ] {
        junk.send_to(&packet, server).await.unwrap();
    }
    // Still serving.
    assert!(allocate(&turn, &turn.credentials().unwrap()).await.is_ok());
    turn.close().await;
}

/// GET `path` over plain HTTP; the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[tokio::test]
async fn config_json_hands_out_the_arrival_address_and_fresh_working_credentials() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut config = keksbox::config::Config::default();
    config.tls.enabled = false;
    config.mdns.enabled = false;
    config.turn = config_for_appliance();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let listeners = keksbox::platform::Listeners {
        main: listener,
        redirect: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state_dir = dir.path().to_owned();
    let task = tokio::spawn(keksbox::platform::run_appliance(
        config,
        listeners,
        Some(state_dir.clone()),
        async {
            let _ = stop_rx.await;
        },
    ));
    let first: serde_json::Value = serde_json::from_str(&http_get(http, "/config.json").await).unwrap();
    let second: serde_json::Value = serde_json::from_str(&http_get(http, "/config.json").await).unwrap();
    let w = &first["webrtc"];
    let turn_url = w["turn"].as_str().unwrap();
    assert!(turn_url.starts_with("turn:127.0.0.1:"), "{first}");
    assert_eq!(w["stun"].as_str().unwrap(), turn_url.replacen("turn:", "stun:", 1));
    let user = w["turn_user"].as_str().unwrap();
    let (expiry, _) = user.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 86300..=now + 86500).contains(&expiry), "a day ahead: {user}");
    assert_ne!(w["turn_user"], second["webrtc"]["turn_user"], "fresh per request");
    assert_eq!(w["ice_servers"][1]["urls"][0].as_str().unwrap(), turn_url);
    assert_eq!(
        w["ice_servers"][1]["urls"][1].as_str().unwrap(),
        format!("{turn_url}?transport=tcp")
    );
    assert_eq!(w["ice_servers"][1]["username"], w["turn_user"]);
    // The secret: kept private in the state directory, and the password is its HMAC.
    let meta = std::fs::metadata(state_dir.join("turn-secret")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    let key: [u8; 32] = hex::decode(std::fs::read_to_string(state_dir.join("turn-secret")).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(w["turn_cred"].as_str().unwrap(), Secret::from_bytes(key).password(user));
    // And they work: an allocation through the URL given.
    let server = turn_url.trim_start_matches("turn:").to_owned();
    let c = Client::new(ClientConfig {
        stun_serv_addr: server.clone(),
        turn_serv_addr: server,
        username: user.to_owned(),
        password: w["turn_cred"].as_str().unwrap().to_owned(),
        realm: keksbox::turn::REALM.to_owned(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    let relay = tokio::time::timeout(Duration::from_secs(10), c.allocate())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relay.local_addr().unwrap().ip(), LOOPBACK);
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

fn config_for_appliance() -> TurnConfig {
    config(50800)
}

/// A TURN client whose transport is a TCP connection to the server.
async fn tcp_client(turn: &Turn, creds: &Credentials) -> Client {
    let server = turn.listening()[0];
    let stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let conn = keksbox::turn::tcp::TcpConn::new(stream).unwrap();
    client_over(server, creds, Arc::new(conn)).await
}

#[tokio::test]
async fn turn_over_tcp_relays_and_refuses_like_udp() {
    let secret = Secret::random().unwrap();
    let mut cfg = config(50900);
    cfg.allowed_prefixes = vec!["127.0.0.0/30".into()];
    let turn = start(&cfg, &secret).await;
    let c = tcp_client(&turn, &turn.credentials().unwrap()).await;
    let relay = tokio::time::timeout(Duration::from_secs(10), c.allocate())
        .await
        .unwrap()
        .unwrap();
    let peer = peer("127.0.0.2").await;
    // Both directions, several messages (ChannelData after the first, padded on TCP).
    for i in 0..5u8 {
        let msg = vec![i; 1 + usize::from(i) * 3];
        relay.send_to(&msg, peer.local_addr().unwrap()).await.unwrap();
        let (got, from) = recv(&peer, Duration::from_secs(5)).await.expect("relayed over TCP");
        assert_eq!(got, msg);
        peer.send_to(&msg, from).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &msg[..]);
    }
    let outside = peer_at("127.0.0.9").await;
    let _ = relay.send_to(b"let me out", outside.local_addr().unwrap()).await;
    assert!(recv(&outside, Duration::from_millis(700)).await.is_none());
    assert!(turn.stats().refused_peer >= 1);
    // Forged credentials over TCP fail too.
    let mut forged = turn.credentials().unwrap();
    forged.password = "AAAA".into();
    let bad = tcp_client(&turn, &forged).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), bad.allocate())
            .await
            .unwrap()
            .is_err()
    );
    turn.close().await;
}

#[tokio::test]
async fn junk_over_tcp_closes_that_connection_only() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let secret = Secret::random().unwrap();
    let turn = start(&config(50950), &secret).await;
    let server = turn.listening()[0];
    let mut junk = tokio::net::TcpStream::connect(server).await.unwrap();
    // Top bits 10: neither STUN nor ChannelData.
    junk.write_all(&[0x80, 0, 0, 4, 1, 2, 3, 4]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed: {n:?}");
    // A frame longer than 1,500 bytes: closed as well.
    let mut long = tokio::net::TcpStream::connect(server).await.unwrap();
    long.write_all(&[0x40, 0, 0x10, 0]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), long.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed: {n:?}");
    let c = tcp_client(&turn, &turn.credentials().unwrap()).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), c.allocate())
            .await
            .unwrap()
            .is_ok()
    );
    turn.close().await;
}

async fn peer_at(ip: &str) -> UdpSocket {
    peer(ip).await
}

#[tokio::test]
async fn tcp_connections_are_capped_at_max_allocations() {
    use tokio::io::AsyncReadExt as _;
    let secret = Secret::random().unwrap();
    let mut cfg = config(51000);
    cfg.max_allocations = 2;
    let turn = start(&cfg, &secret).await;
    let server = turn.listening()[0];
    let _a = tokio::net::TcpStream::connect(server).await.unwrap();
    let _b = tokio::net::TcpStream::connect(server).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(server).await.unwrap();
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the third is closed at once: {n:?}");
    // The first two are still open (nothing to read, no end).
    let mut first = _a;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), first.read(&mut buf))
            .await
            .is_err()
    );
    turn.close().await;
}

/// A STUN Binding request over `stream` (TURN over TCP), answered within 5 s.
async fn binding_over_tcp(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(b"keksbox-idle");
    stream.write_all(&request).await?;
    let mut header = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header)).await??;
    assert_eq!(&header[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(&header[8..], b"keksbox-idle");
    let mut attributes = vec![0u8; usize::from(u16::from_be_bytes([header[2], header[3]]))];
    stream.read_exact(&mut attributes).await?;
    Ok(())
}

/// Whether the server has closed `stream` (a read gives its end, not a wait).
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

// Paused time: the 11 minutes pass at once, the sockets are real.
#[tokio::test(start_paused = true)]
async fn a_silent_tcp_connection_closes_after_11_minutes_and_a_refreshing_one_stays() {
    let secret = Secret::random().unwrap();
    let turn = start(&config(51200), &secret).await;
    let server = turn.listening()[0];
    let mut silent = tokio::net::TcpStream::connect(server).await.unwrap();
    let mut busy = tokio::net::TcpStream::connect(server).await.unwrap();
    // A client that refreshes every 5 minutes, as TURN clients do (allocations live 10).
    for _ in 0..2 {
        binding_over_tcp(&mut busy).await.unwrap();
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
    binding_over_tcp(&mut busy).await.unwrap();
    // 10 minutes 59 seconds of silence: still open.
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(!closed_by_server(&mut silent).await, "open before 11 minutes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        closed_by_server(&mut silent).await,
        "closed after 11 minutes of silence"
    );
    // The refreshing one was last heard a minute ago: open, and answering.
    assert!(!closed_by_server(&mut busy).await);
    binding_over_tcp(&mut busy).await.unwrap();
    // Silent from now on, it goes the same way.
    tokio::time::sleep(Duration::from_secs(661)).await;
    assert!(
        closed_by_server(&mut busy).await,
        "closed 11 minutes after its last request"
    );
    turn.close().await;
}
