//! What a hostile host on the LAN tried against the relay (issue 11), each attack now
//! survived: memory stays within the budget (RSS read from /proc of a relay process), one
//! address cannot take every file handle, a flooding member is slowed before a member who
//! keeps reading is evicted, half a message is not held for long, watches are paced.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use keksbox::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_keksbox");
const MIB: usize = 1 << 20;

/// A relay process on a free loopback port, killed on drop.
struct Process {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `keksbox --no-tls` with `config` (TOML) and, when given, an open-file limit.
    async fn start(config: &str, nofile: Option<u64>) -> Process {
        Process::start_with(config, nofile, false).await
    }

    /// The same with TLS: a certificate generated in its state directory ([`Process::cert`]).
    async fn start_tls(config: &str) -> Process {
        let relay = Process::start_with(config, None, true).await;
        // The port may be open before the certificate is on disk.
        let started = Instant::now();
        while !relay.cert().exists() {
            assert!(started.elapsed() < WAIT, "no certificate at {}", relay.cert().display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay
    }

    fn cert(&self) -> PathBuf {
        self._dir.path().join("state/tls/cert.pem")
    }

    async fn start_with(config: &str, nofile: Option<u64>, tls: bool) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("keksbox.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        match tls {
            true => command.arg("--state-dir").arg(dir.path().join("state")),
            false => command.arg("--no-tls"),
        };
        let child = command
            .args(["--bind", &addr.to_string(), "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            assert!(started.elapsed() < WAIT, "the relay did not start listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Process {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The relay's own pid (prlimit execs it, so the child's pid is the relay's).
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection from `from` with the WebSocket handshake done by hand, so the test can
/// send half frames and leave what the relay sends unread.
async fn raw_websocket(addr: SocketAddr, from: IpAddr, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket.connect(addr).await?;
    upgrade(stream).await
}

/// The WebSocket handshake by hand on any stream (plain or TLS).
async fn upgrade<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<S> {
    stream
        .write_all(
            b"GET /signaling HTTP/1.1\r\nHost: keksbox\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(String::from_utf8_lossy(&head).into_owned()));
    }
    Ok(stream)
}

/// The header of a final, masked (with a zero key, so the payload goes as it is) text frame.
fn frame_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x81];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend((len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend((len as u64).to_be_bytes());
        }
    }
    h.extend([0, 0, 0, 0]);
    h
}

/// Reads `s` until `needle` has come by, within [`WAIT`].
async fn read_until(s: &mut TcpStream, needle: &str) {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before {needle:?}");
        seen.extend(&buf[..n]);
    }
}

fn text_frame(payload: &str) -> Vec<u8> {
    let mut f = frame_header(payload.len());
    f.extend(payload.as_bytes());
    f
}

fn localhost(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn version_answers(addr: SocketAddr, from: IpAddr) -> bool {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let mut s = socket.connect(addr).await?;
        s.write_all(b"GET /version HTTP/1.1\r\nHost: keksbox\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        std::io::Result::Ok(out)
    };
    matches!(tokio::time::timeout(Duration::from_secs(3), attempt).await, Ok(Ok(out)) if out.contains("keksbox "))
}

/// Connects from `from`, sends `frames` (raw bytes), and returns the socket and whether
/// everything went within `limit` (a relay that stops reading a connection makes the
/// writes stall: TCP backpressure).
async fn send_within(addr: SocketAddr, from: IpAddr, frames: Vec<Vec<u8>>, limit: Duration) -> (TcpStream, bool) {
    let mut s = raw_websocket(addr, from, None).await.unwrap();
    let sent = tokio::time::timeout(limit, async {
        for f in &frames {
            s.write_all(f).await?;
        }
        std::io::Result::Ok(())
    })
    .await;
    (s, matches!(sent, Ok(Ok(()))))
}

#[tokio::test]
async fn unfinished_messages_stay_within_the_memory_budget() {
    // The issue's attack: many connections each holding most of a maximal message. 24 x 8 MiB
    // took the relay up by 192 MiB; the default budget is 96 MiB, of which messages being
    // received may fill three quarters before the relay stops reading them.
    let relay = Process::start("", None).await;
    let idle = relay.rss_mib();
    let mut frame = frame_header(8 * MIB);
    // The last MiB never goes: the message stays unfinished.
    frame.extend(vec![b'a'; 7 * MIB]);
    let attempts = (0..24).map(|_| send_within(relay.addr, localhost(1), vec![frame.clone()], Duration::from_secs(5)));
    let held = futures_util::future::join_all(attempts).await;
    let stalled = held.iter().filter(|(_, done)| !done).count();
    let attacked = relay.rss_mib();
    println!("relay RSS: {idle:.1} MiB idle, {attacked:.1} MiB with 24 unfinished 8 MiB messages ({stalled} stalled)");
    assert!(
        attacked - idle < 96.0 + 32.0,
        "RSS grew from {idle:.1} to {attacked:.1} MiB"
    );
    // Those beyond the budget were not refused but no longer read.
    assert!(stalled > 0, "every connection sent everything");
    assert!(!relay.log().contains("Busy"), "{}", relay.log());
    // And the relay still serves everybody else.
    assert!(version_answers(relay.addr, localhost(3)).await);
    drop(held);
}

#[tokio::test]
async fn one_address_with_unfinished_messages_cannot_stall_the_large_messages_of_others() {
    // 24 connections from one address, each holding 7 of 8 MiB, filled all that messages
    // being received may take (72 MiB of the 96 MiB budget): a 1 MB chat image from anybody
    // else then waited, unread, until the message timeout (30 s) closed the attackers. One
    // address may now hold a quarter of it.
    let relay = Process::start("", None).await;
    let mut frame = frame_header(8 * MIB);
    frame.extend(vec![b'a'; 7 * MIB]);
    let attempts = (0..24).map(|_| send_within(relay.addr, localhost(1), vec![frame.clone()], Duration::from_secs(5)));
    let held = futures_util::future::join_all(attempts).await;
    let stalled = held.iter().filter(|(_, done)| !done).count();
    assert!(stalled > 0, "every connection sent everything");

    let join = text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('9')));
    let mut a = raw_websocket(relay.addr, localhost(5), None).await.unwrap();
    a.write_all(&join).await.unwrap();
    read_until(&mut a, "client_join").await;
    let mut b = raw_websocket(relay.addr, localhost(6), None).await.unwrap();
    b.write_all(&join).await.unwrap();
    read_until(&mut b, "client_join").await;

    let image = "i".repeat(1_000_000);
    let started = Instant::now();
    let message = text_frame(&format!(r#"{{"relay":{{"message":"{image}"}}}}"#));
    let sender = tokio::spawn(async move { a.write_all(&message).await.map(|()| a) });
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = 0;
        while seen < image.len() {
            let mut buf = [0u8; 16 << 10];
            let n = b.read(&mut buf).await.unwrap();
            assert!(n > 0, "b was closed");
            seen += buf[..n].iter().filter(|&&c| c == b'i').count();
        }
    })
    .await;
    assert!(
        received.is_ok(),
        "the image did not arrive within 10 s ({:?} after sending)",
        started.elapsed()
    );
    println!(
        "a 1 MB message went through in {:?} beside {stalled} stalled unfinished ones",
        started.elapsed()
    );
    let _a = sender.await.unwrap().unwrap();
    drop(held);
}

#[tokio::test]
async fn whole_messages_held_by_the_pace_stay_within_the_memory_budget() {
    // Each connection sends three 4 MiB messages (to nobody) at once: two fit its 8 MiB
    // burst, the third waits for its pace. Waiting packets were not charged to the budget:
    // 48 connections held 192 MiB that way.
    let relay = Process::start("", None).await;
    let idle = relay.rss_mib();
    let message = format!(
        r#"{{"relay":{{"recipient":1,"message":"{}"}}}}"#,
        "p".repeat(4 * MIB - 100)
    );
    let frames = vec![text_frame(&message); 3];
    let attempts = (0..48).map(|i| {
        send_within(
            relay.addr,
            localhost(1 + (i % 2) as u8),
            frames.clone(),
            Duration::from_secs(8),
        )
    });
    let held = futures_util::future::join_all(attempts).await;
    let attacked = relay.rss_mib();
    let stalled = held.iter().filter(|(_, done)| !done).count();
    println!(
        "relay RSS: {idle:.1} MiB idle, {attacked:.1} MiB with 48 connections pacing 4 MiB messages ({stalled} stalled)"
    );
    assert!(
        attacked - idle < 96.0 + 32.0,
        "RSS grew from {idle:.1} to {attacked:.1} MiB"
    );
    assert!(version_answers(relay.addr, localhost(3)).await);
    drop(held);
}

/// Reads until `expected` arrives, past joins and leaves (anything else fails).
async fn skip_to(c: &mut Client, expected: serde_json::Value) {
    loop {
        let p = c.recv().await;
        if p == expected {
            return;
        }
        assert!(
            p.get("client_join").is_some() || p.get("client_leave").is_some(),
            "expected {expected}, got {}",
            p.to_string().chars().take(200).collect::<String>()
        );
    }
}

/// A config with a 2 MiB budget for 1 MiB messages, and a room: a member that fills half of
/// the budget with a 1 MB message to a member who does not read, a witness that reads, and
/// the one who does not read (a raw socket with a small receive buffer). Messages being
/// received may fill three quarters of the budget, so another 1 MB message cannot be taken
/// in until the first is gone.
async fn spent_budget(message_timeout_secs: u64) -> (Relay, Client, Client, TcpStream) {
    let mut config = Config::default();
    config.limits.buffered_bytes = 2 * MIB;
    config.limits.max_message_size = MIB;
    config.limits.max_frame_size = MIB;
    config.limits.send_queue_bytes = 2 * MIB;
    config.limits.relay_burst_bytes = 2 * MIB;
    config.limits.relay_bytes_per_sec = 64 * MIB;
    config.limits.write_timeout_secs = 60;
    config.limits.message_timeout_secs = message_timeout_secs;
    let relay = Relay::start(config).await;
    let mut stuck = raw_websocket(relay.addr, localhost(1), Some(4096)).await.unwrap();
    stuck
        .write_all(&text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('b'))))
        .await
        .unwrap();
    let (mut filler, mut witness) = (relay.client().await, relay.client().await);
    for c in [&mut filler, &mut witness] {
        c.join(&hash('b')).await;
    }
    let mut stuck_id = None;
    while stuck_id.is_none() {
        let p = filler.recv().await;
        stuck_id = p["client_join"]["id"]
            .as_u64()
            .filter(|&id| id != filler.id && id != witness.id);
    }
    filler.relay(stuck_id, &"f".repeat(1_000_000)).await;
    // Packets go in order: once the witness has this, the large one is queued.
    filler.relay(Some(witness.id), "queued").await;
    skip_to(&mut witness, message_packet(filler.id, "queued")).await;
    (relay, witness, filler, stuck)
}

#[tokio::test]
async fn a_big_sender_waits_for_room_in_the_budget_instead_of_being_dropped() {
    // A refused budget closed the sender with 1013: a member sending a chat image while
    // others' messages waited for a slow reader left the meeting. Now the relay stops
    // reading from it until there is room, then delivers.
    let (relay, mut witness, _filler, stuck) = spent_budget(60).await;
    let mut big = relay.client().await;
    big.join(&hash('b')).await;
    skip_to(&mut witness, join_packet(big.id)).await;
    let image = "i".repeat(1_000_000);
    let sent = image.clone();
    let sender = tokio::spawn(async move {
        big.relay(None, &sent).await;
        big
    });
    // It cannot be taken in beside the one queued: it waits, unread.
    witness.silent(Duration::from_millis(800)).await;
    // The member who does not read goes: its queue, and the budget, are freed.
    drop(stuck);
    let mut big = tokio::time::timeout(WAIT, sender).await.expect("sent").unwrap();
    skip_to(&mut witness, message_packet(big.id, &image)).await;
    // The big sender is still there.
    big.relay(Some(witness.id), "still here").await;
    assert_eq!(witness.recv().await, message_packet(big.id, "still here"));
}

#[tokio::test]
async fn a_sender_kept_waiting_past_the_message_timeout_is_told_to_try_again() {
    let (relay, mut witness, mut filler, _stuck) = spent_budget(2).await;
    let (mut read, mut write) = raw_websocket(relay.addr, localhost(2), None)
        .await
        .unwrap()
        .into_split();
    let started = Instant::now();
    let mut frame = text_frame(&format!(r#"{{"relay":{{"message":"{}"}}}}"#, "i".repeat(1_000_000)));
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&std::mem::take(&mut frame)).await;
        write
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut got))
        .await
        .expect("closed in time");
    let elapsed = started.elapsed();
    // The close frame: 1013 and the reason.
    let close = [&[0x03, 0xf5][..], b"relay busy: try again later"].concat();
    assert!(got.windows(close.len()).any(|w| w == close), "{got:?}");
    assert!(elapsed >= Duration::from_secs(2), "closed after {elapsed:?}");
    writer.abort();
    // Nothing of it was delivered, and the others go on.
    filler.relay(Some(witness.id), "after").await;
    assert_eq!(witness.recv().await, message_packet(filler.id, "after"));
}

#[tokio::test]
async fn a_broadcast_to_members_who_do_not_read_is_held_once() {
    // One 8 MiB broadcast to 24 members that never read: a copy per recipient took the relay
    // up by 200 MiB.
    let relay = Process::start("[limits]\nmax_connections_per_address = 64\n", None).await;
    let join = text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('9')));
    let mut silent = Vec::new();
    for _ in 0..24 {
        let mut s = raw_websocket(relay.addr, localhost(1), Some(4096)).await.unwrap();
        s.write_all(&join).await.unwrap();
        silent.push(s);
    }
    let mut sender = Client::connect(relay.addr).await;
    sender.join(&hash('9')).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = relay.rss_mib();
    sender.relay(None, &"b".repeat(8 * MIB - 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = relay.rss_mib();
    println!("relay RSS: {idle:.1} MiB before, {after:.1} MiB with one 8 MiB broadcast queued for 24 non-readers");
    assert!(after - idle < 48.0, "RSS grew from {idle:.1} to {after:.1} MiB");
}

#[tokio::test]
async fn one_address_cannot_take_every_file_handle() {
    // Under systemd's default soft limit of 1024, 1012 idle connections from one host made
    // accept fail ("Too many open files") and everybody else's requests time out.
    let relay = Process::start("", Some(1024)).await;
    let mut flood = Vec::new();
    for _ in 0..1012 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(localhost(2), 0)).unwrap();
        // Connections the relay refuses are closed at once: keep them anyway, as an attacker
        // would keep trying.
        if let Ok(s) = socket.connect(relay.addr).await {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        version_answers(relay.addr, localhost(3)).await,
        "another host is served while one holds 1012 connections"
    );
    let log = relay.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("max_connections_per_address (32) for 127.0.0.2"), "{log}");
}

#[tokio::test]
async fn max_connections_fits_the_open_file_limit() {
    // Without a per-address cap in the way, the total must still leave handles to accept
    // and refuse with, instead of failing to accept.
    let relay = Process::start("[limits]\nmax_connections_per_address = 5000\n", Some(1024)).await;
    let mut flood = Vec::new();
    for _ in 0..1012 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(localhost(2), 0)).unwrap();
        if let Ok(s) = socket.connect(relay.addr).await {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = relay.log();
    assert!(log.contains("serving at most 896 connections"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    // Connections before the upgrade count: these were plain TCP. When some go, others
    // get in.
    flood.truncate(800);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(version_answers(relay.addr, localhost(3)).await);
}

// Two threads: parsing 8 MiB of JSON in a debug build must not stall the reader's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_member_is_slowed_before_a_reader_is_evicted() {
    // Five 8 MiB broadcasts against a member reading at 4 MB/s (a phone on Wi-Fi) got the
    // reader evicted: the old burst (64 MiB) exceeded its queue (16 MiB).
    let relay = Relay::default().await;
    let mut flooder = relay.client().await;
    let mut witness = relay.client().await;
    let mut reader = raw_websocket(relay.addr, localhost(1), Some(64 << 10)).await.unwrap();
    reader
        .write_all(&text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('7'))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for c in [&mut flooder, &mut witness] {
        c.join(&hash('7')).await;
    }
    let payload = "f".repeat(8 * MIB - 100);
    let flood = tokio::spawn(async move {
        for _ in 0..5 {
            flooder.relay(None, &payload).await;
        }
        flooder
    });
    // The witness reads as fast as it can (a member who stopped reading for the write
    // timeout would rightly be dropped) and notes every join and leave it sees.
    let watch = tokio::spawn(async move {
        let (mut joins, mut leaves) = (0, 0);
        let until = tokio::time::Instant::now() + Duration::from_secs(13);
        while let Ok(p) = tokio::time::timeout_at(until, witness.recv()).await {
            joins += usize::from(p.get("client_join").is_some());
            leaves += usize::from(p.get("client_leave").is_some());
        }
        (joins, leaves)
    });
    // Read at about 4 MB/s for twelve seconds: long enough for a debug build to take in
    // three of the messages, which overflowed the reader's queue before.
    let started = Instant::now();
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    while started.elapsed() < Duration::from_secs(12) {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "the reader was disconnected after {received} bytes");
        received += n;
        tokio::time::sleep(Duration::from_millis(16)).await;
    }
    assert!(received > 8 * MIB, "the reader got {received} bytes");
    // The witness saw everybody join and nobody leave.
    let (joins, leaves) = watch.await.unwrap();
    assert!(joins >= 2, "{joins} joins");
    assert_eq!(leaves, 0, "nobody was evicted");
    flood.abort();
}

#[tokio::test]
async fn half_a_message_is_not_held_past_the_message_timeout() {
    let mut config = Config::default();
    config.limits.message_timeout_secs = 1;
    let relay = Relay::start(config).await;
    let mut bystander = relay.client().await;
    let mut slow = raw_websocket(relay.addr, localhost(1), None).await.unwrap();
    slow.write_all(&frame_header(1 << 20)).await.unwrap();
    slow.write_all(&vec![b'x'; 100_000]).await.unwrap();
    let started = Instant::now();
    // The relay sends init, then a close frame with 1008, then closes.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut got))
        .await
        .expect("closed in time");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "closed after {elapsed:?}");
    let close = b"message not finished in time";
    assert!(got.windows(close.len()).any(|w| w == close), "{got:?}");
    // Others were not affected.
    bystander.send(serde_json::json!({"ping": null})).await;
    bystander.join(&hash('1')).await;
    assert_eq!(bystander.recv().await, join_packet(bystander.id));
}

#[tokio::test]
async fn watches_are_paced() {
    let relay = Relay::default().await;
    let mut member = relay.client().await;
    member.join(&hash('2')).await;
    member.recv().await;
    let mut watcher = relay.client().await;
    let started = Instant::now();
    for _ in 0..20 {
        watcher.send(serde_json::json!({"watch_rooms": [hash('2')]})).await;
    }
    // The burst answers at once, then one a second.
    let mut answers = 0;
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(1500), watcher.recv()).await {
        assert!(p.get("room_info").is_some(), "{p}");
        answers += 1;
        if started.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    assert!((8..=11).contains(&answers), "{answers} answers in 1.5 s");
}

#[tokio::test]
async fn an_overlong_watch_list_is_refused_before_it_is_sorted() {
    let relay = Relay::default().await;
    let mut bystander = relay.client().await;
    let mut watcher = relay.client().await;
    let many: Vec<String> = (0..120_000).map(|i| format!("{i:064x}")).collect();
    watcher.send(serde_json::json!({ "watch_rooms": many })).await;
    let frame = watcher.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("120000"), "{}", frame.reason);
    bystander.join(&hash('3')).await;
    assert_eq!(bystander.recv().await, join_packet(bystander.id));
}

#[tokio::test]
async fn signaling_refuses_a_foreign_origin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let relay = Relay::default().await;
    let handshake = |origin: Option<String>| {
        let mut req = format!("ws://{}/signaling", relay.addr).into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    // A page elsewhere, opened by a LAN user, must not reach the relay through their browser.
    let err = handshake(Some("https://evil.example".into()))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    let err = handshake(Some("null".into())).await.expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    // The box's own pages, and native clients (no Origin), are welcome.
    let (ws, _) = handshake(Some(format!("http://{}", relay.addr))).await.unwrap();
    Client::from_ws(ws).await;
    let (ws, _) = handshake(None).await.unwrap();
    Client::from_ws(ws).await;
}

#[tokio::test]
async fn without_tls_a_rebound_name_is_refused() {
    // DNS rebinding: a page at http://evil.example:PORT whose name now resolves to the box
    // sends a matching Origin and Host. Without TLS no certificate stops it, so the relay
    // accepts only its own names and addresses in Host.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let relay = Relay::default().await;
    let port = relay.addr.port();
    let handshake = |host: &str| {
        let mut req = format!("ws://{}/signaling", relay.addr).into_client_request().unwrap();
        req.headers_mut()
            .insert("host", format!("{host}:{port}").parse().unwrap());
        req.headers_mut()
            .insert("origin", format!("http://{host}:{port}").parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let err = handshake("evil.example").await.expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    let err = handshake("keksbox.local.evil.example").await.expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    // The box's own names and addresses are welcome.
    for host in ["localhost", "keksbox.local", "127.0.0.1"] {
        let (ws, _) = handshake(host).await.unwrap_or_else(|e| panic!("{host}: {e}"));
        Client::from_ws(ws).await;
    }
}

#[tokio::test]
async fn finished_large_messages_are_not_kept_per_connection() {
    // Each connection sends one whole 8 MiB message (a relay to nobody); tungstenite kept the
    // receive buffer of that size per connection afterwards (24 x 8 MiB took the relay from
    // 10 to 244 MiB).
    let relay = Process::start("", None).await;
    let idle = relay.rss_mib();
    let message = format!(
        r#"{{"relay":{{"recipient":1,"message":"{}"}}}}"#,
        "r".repeat(8 * MIB - 100)
    );
    let join = text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('8')));
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut s = raw_websocket(relay.addr, localhost(1), None).await.unwrap();
        s.write_all(&text_frame(&message)).await.unwrap();
        // One at a time (the join's answer says the message was handled): what is measured
        // is what stays per connection, not the peak of many at once.
        s.write_all(&join).await.unwrap();
        read_until(&mut s, "client_join").await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = relay.rss_mib();
    println!("relay RSS: {idle:.1} MiB idle, {after:.1} MiB after 24 connections each sent 8 MiB");
    assert!(after - idle < 64.0, "RSS grew from {idle:.1} to {after:.1} MiB");
}

#[tokio::test]
async fn fragmented_large_messages_are_not_kept_per_connection() {
    // The same, with each message sent as a large first fragment and a small last one, the
    // next packet right behind it: the read that ended the message also took the start of
    // the next, so the large buffer was kept (the fresh stream needs a clean boundary).
    let relay = Process::start("", None).await;
    let idle = relay.rss_mib();
    let body = format!(
        r#"{{"relay":{{"recipient":1,"message":"{}"}}}}"#,
        "r".repeat(8 * MIB - 100)
    );
    let (head, tail) = body.split_at(body.len() - 10);
    let join = text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('6')));
    let mut held = Vec::new();
    for _ in 0..24 {
        let mut s = raw_websocket(relay.addr, localhost(1), None).await.unwrap();
        // A text frame without FIN, then the final continuation frame and the join at once.
        let mut first = frame_header(head.len());
        first[0] = 0x01;
        first.extend(head.as_bytes());
        s.write_all(&first).await.unwrap();
        let mut last = frame_header(tail.len());
        last[0] = 0x80;
        last.extend(tail.as_bytes());
        last.extend(&join);
        s.write_all(&last).await.unwrap();
        read_until(&mut s, "client_join").await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = relay.rss_mib();
    println!("relay RSS: {idle:.1} MiB idle, {after:.1} MiB after 24 connections each sent 8 MiB in two fragments");
    assert!(after - idle < 64.0, "RSS grew from {idle:.1} to {after:.1} MiB");
}

#[tokio::test]
async fn many_members_who_do_not_read_cost_a_bounded_amount_each() {
    // What each connection may hold beyond the budget: its WebSocket write buffer (8 KiB
    // plus one 16 KiB frame) and read buffer, while a write to it is stalled. 256 members
    // from 8 addresses join one room and never read; a 1 MB broadcast is queued for all.
    let relay = Process::start("", None).await;
    let join = text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('5')));
    let mut silent = Vec::new();
    for i in 0..256 {
        let mut s = raw_websocket(relay.addr, localhost(10 + (i / 32) as u8), Some(4096))
            .await
            .unwrap();
        s.write_all(&join).await.unwrap();
        silent.push(s);
    }
    let mut sender = Client::connect(relay.addr).await;
    sender.join(&hash('5')).await;
    // Once the sender has seen its own join, everybody's joins went out before it.
    loop {
        if sender.recv().await == join_packet(sender.id) {
            break;
        }
    }
    let before = relay.rss_mib();
    sender.relay(None, &"m".repeat(1_000_000)).await;
    // Packets go in order: the sender's next message is queued behind the broadcast.
    sender.relay(Some(sender.id), "after").await;
    loop {
        if sender.recv().await == message_packet(sender.id, "after") {
            break;
        }
    }
    // Every member's task writes until its socket is full: give them the time to get there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_mib();
    let per_member = (after - before) * 1024.0 / 256.0;
    println!(
        "relay RSS: {before:.1} MiB before, {after:.1} MiB with a 1 MB broadcast stalled for 256 members ({per_member:.1} KiB each)"
    );
    // One shared copy (1 MB) and at most the buffers above per member.
    assert!(per_member < 48.0, "{per_member:.1} KiB per member");
    drop(silent);
}

#[tokio::test]
async fn over_tls_members_who_do_not_read_cost_a_bounded_amount_each() {
    // With TLS, rustls also holds records not yet written: 64 KiB per connection by default,
    // now 16 KiB. 128 members over TLS never read; a 1 MB broadcast is queued for all.
    use rustls::pki_types::pem::PemObject as _;
    let relay = Process::start_tls("").await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(relay.cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let connect = |from: IpAddr, recv_buffer: Option<u32>| {
        let connector = connector.clone();
        async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(from, 0)).unwrap();
            if let Some(size) = recv_buffer {
                socket.set_recv_buffer_size(size).unwrap();
            }
            let tcp = socket.connect(relay.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            upgrade(connector.connect(name, tcp).await.unwrap()).await.unwrap()
        }
    };
    let join = text_frame(&format!(r#"{{"join":{{"hash":"{}"}}}}"#, hash('4')));
    let mut silent = Vec::new();
    for i in 0..128 {
        let mut s = connect(localhost(30 + (i / 32) as u8), Some(4096)).await;
        s.write_all(&join).await.unwrap();
        s.flush().await.unwrap();
        silent.push(s);
    }
    let mut sender = connect(localhost(40), None).await;
    sender.write_all(&join).await.unwrap();
    sender.flush().await.unwrap();
    // Once the sender's own join is back, everybody's went out before it. Its id is in its
    // init: the first client_join naming it (the others' come first) is where to stop.
    let mut seen = Vec::new();
    let id = loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, sender.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed");
        seen.extend(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        let Some(id) = text.split("\"your_id\":").nth(1).and_then(|t| t.split(',').next()) else {
            continue;
        };
        if text.contains(&format!("{{\"client_join\":{{\"id\":{id}}}}}")) {
            break id.to_owned();
        }
    };
    let before = relay.rss_mib();
    let broadcast = format!(r#"{{"relay":{{"message":"{}"}}}}"#, "t".repeat(1_000_000));
    sender.write_all(&text_frame(&broadcast)).await.unwrap();
    sender
        .write_all(&text_frame(&format!(
            r#"{{"relay":{{"recipient":{id},"message":"after"}}}}"#
        )))
        .await
        .unwrap();
    sender.flush().await.unwrap();
    // The sender reads its copy of the broadcast, then "after": everything is queued.
    let mut tail = Vec::new();
    while !String::from_utf8_lossy(&tail).contains("\"after\"") {
        let mut buf = vec![0u8; 64 << 10];
        let n = tokio::time::timeout(WAIT, sender.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed");
        tail.extend(&buf[..n]);
        let keep = tail.len().saturating_sub(64);
        tail.drain(..keep);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_mib();
    let per_member = (after - before) * 1024.0 / 128.0;
    println!(
        "relay RSS with TLS: {before:.1} MiB before, {after:.1} MiB with a 1 MB broadcast stalled for 128 members ({per_member:.1} KiB each)"
    );
    assert!(per_member < 64.0, "{per_member:.1} KiB per member");
    drop(silent);
}
