//! `keksbox-load`: a load generator for the relay, run by `make bench`.
//!
//! It starts a `keksbox` binary on a free loopback port, measures the server's resident memory
//! per idle signaling connection, then has 1,000 clients in 100 rooms of 10 send 200-byte
//! broadcasts: as fast as the relay delivers them (each client keeps a small window of
//! messages in flight), with one in flight, and paced at 10 messages a second each (about
//! 90,000 deliveries/s; once with a room's members starting together, once spread over the
//! period), printing deliveries per second, p50/p99 latency and the relay's CPU
//! time per delivered message (from `/proc/<pid>/stat`). Then, on fresh relays, the memory
//! attacks of issue 11: 24 connections each holding an unfinished 8 MiB message, and one
//! 8 MiB broadcast to 24 members that do not read, with the relay's RSS before and after.
//!
//! `--baseline PATH` runs the same against an older binary first and prints both, so a
//! change is compared within one run on one (shared, noisy) machine.
//! Clients come from 127.0.0.1-127.0.0.40 (25 each), under the relay's per-address cap.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const ROOMS: usize = 100;
const PER_ROOM: usize = 10;
const MESSAGES: usize = 200;
const WINDOW: usize = 8;
const PAYLOAD: usize = 200;
/// Messages a second each client sends in the paced phase: 1,000 x 10 x 9 recipients is
/// 90,000 deliveries a second.
const PACED_RATE: u64 = 10;
const PACED_MESSAGES: usize = 50;
/// Source addresses the clients spread over (127.0.0.1 up to this).
const SOURCES: usize = 40;
const MIB: usize = 1 << 20;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn micros() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut server, mut baseline, mut only_paced) = (None, None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => server = args.next(),
            "--baseline" => baseline = args.next(),
            // For profiling the relay at 90,000 deliveries/s: only that phase, no attacks.
            "--paced-only" => only_paced = true,
            "-h" | "--help" => {
                println!(
                    "usage: keksbox-load --server PATH/TO/keksbox [--baseline PATH/TO/older/keksbox] [--paced-only]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let server = server.context("--server PATH is required")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if only_paced {
        let paced = runtime.block_on(async {
            let server = Server::start(&server).await?;
            eprintln!("relay pid {}", server.pid());
            let ready = join_rooms(&server).await?;
            let (ready, together) = phase(
                server.pid(),
                ready,
                PACED_MESSAGES,
                Pace::Rate(PACED_RATE, Start::ByRoom),
            )
            .await?;
            let (_, spread) = phase(
                server.pid(),
                ready,
                PACED_MESSAGES,
                Pace::Rate(PACED_RATE, Start::Spread),
            )
            .await?;
            anyhow::Ok((together, spread))
        })?;
        paced.0.print(&Start::ByRoom.label());
        paced.1.print(&Start::Spread.label());
        return Ok(());
    }
    let mut runs = Vec::new();
    for (label, bin) in baseline
        .iter()
        .map(|b| ("baseline", b))
        .chain([("this build", &server)])
    {
        eprintln!("{label}: {bin}");
        let figures = runtime.block_on(async {
            let load = {
                let server = Server::start(bin).await?;
                bench(&server).await?
            };
            let unfinished = attack_unfinished(&Server::start(bin).await?).await?;
            let broadcast = attack_broadcast(&Server::start(bin).await?).await?;
            anyhow::Ok((load, unfinished, broadcast))
        })?;
        runs.push((label, bin.clone(), figures));
    }
    println!(
        "keksbox relay benchmark: {} connections in {ROOMS} rooms of {PER_ROOM}, {PAYLOAD}-byte broadcasts",
        ROOMS * PER_ROOM
    );
    for (label, bin, (load, unfinished, broadcast)) in &runs {
        println!("{label} ({bin}):");
        load.print();
        println!(
            "  memory attack, 24 unfinished 8 MiB messages: RSS {:.1} MiB idle, {:.1} MiB under attack",
            unfinished.0, unfinished.1
        );
        println!(
            "  memory attack, one 8 MiB broadcast to 24 members that do not read: RSS {:.1} MiB before, {:.1} MiB after",
            broadcast.0, broadcast.1
        );
    }
    if let [(_, _, (old, ..)), (_, _, (new, ..))] = runs.as_slice() {
        println!(
            "saturated throughput, this build vs baseline: {:.0} vs {:.0} deliveries/s ({:+.1}%)",
            new.saturated.rate(),
            old.saturated.rate(),
            (new.saturated.rate() / old.saturated.rate() - 1.0) * 100.0
        );
    }
    Ok(())
}

/// A relay process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    async fn start(bin: &str) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(bin)
            .args(["--bind", &addr.to_string(), "--no-tls"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let server = Server { child, addr };
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("{bin} did not start listening on {addr}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, i: usize) -> anyhow::Result<(Ws, u64)> {
    let from = source(i % SOURCES);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/signaling"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await?;
    let init = next_json(&mut ws).await?;
    let id = init["init"]["your_id"].as_u64().context("no init")?;
    Ok((ws, id))
}

fn source(i: usize) -> IpAddr {
    IpAddr::from([127, 0, (i / 250) as u8, (i % 250 + 1) as u8])
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<serde_json::Value> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(f) => bail!("closed: {f:?}"),
            _ => continue,
        }
    }
}

struct Load {
    rss_before: u64,
    rss_idle: u64,
    rss_busy: u64,
    saturated: Figures,
    light: Figures,
    paced: Figures,
    paced_spread: Figures,
}

impl Load {
    fn print(&self) {
        let total = ROOMS * PER_ROOM;
        for (name, f) in [
            (format!("saturated (window {WINDOW})"), &self.saturated),
            ("one message in flight per client".to_owned(), &self.light),
            (Start::ByRoom.label(), &self.paced),
            (Start::Spread.label(), &self.paced_spread),
        ] {
            f.print(&name);
        }
        println!(
            "  server RSS: {} KiB before, {} KiB with {total} idle, {} KiB after load",
            self.rss_before, self.rss_idle, self.rss_busy
        );
        println!(
            "  RSS per idle connection: {:.1} KiB",
            self.rss_idle.saturating_sub(self.rss_before) as f64 / total as f64
        );
    }
}

async fn bench(server: &Server) -> anyhow::Result<Load> {
    let pid = server.pid();
    // Warm the server up with one connection so the baseline includes its runtime.
    drop(connect(server.addr, 0).await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid)?;
    let ready = join_rooms(server).await?;
    let rss_idle = rss_kib(pid)?;

    let (ready, saturated) = phase(pid, ready, MESSAGES, Pace::Window(WINDOW)).await?;
    let rss_busy = rss_kib(pid)?;
    let (ready, light) = phase(pid, ready, 50, Pace::Window(1)).await?;
    let (ready, paced) = phase(pid, ready, PACED_MESSAGES, Pace::Rate(PACED_RATE, Start::ByRoom)).await?;
    let (_, paced_spread) = phase(pid, ready, PACED_MESSAGES, Pace::Rate(PACED_RATE, Start::Spread)).await?;
    Ok(Load {
        rss_before,
        rss_idle,
        rss_busy,
        saturated,
        light,
        paced,
        paced_spread,
    })
}

/// Connects every client and has it join its room; returns once every room is full.
async fn join_rooms(server: &Server) -> anyhow::Result<Vec<(Ws, u64)>> {
    let addr = server.addr;

    let total = ROOMS * PER_ROOM;
    let mut clients = Vec::with_capacity(total);
    for i in 0..total {
        let (mut ws, id) = connect(addr, i).await?;
        let room = format!("{:064x}", i / PER_ROOM + 1);
        ws.send(Message::Text(format!(r#"{{"join":{{"hash":"{room}"}}}}"#).into()))
            .await?;
        clients.push((ws, id));
    }
    // Each client sees PER_ROOM joins once its room is full.
    let mut ready = Vec::with_capacity(total);
    for (mut ws, id) in clients {
        for _ in 0..PER_ROOM {
            let p = next_json(&mut ws).await?;
            anyhow::ensure!(p.get("client_join").is_some(), "unexpected {p}");
        }
        ready.push((ws, id));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(ready)
}

struct Figures {
    deliveries: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_delivery: f64,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.seconds
    }

    fn print(&self, name: &str) {
        println!(
            "  {name}: {:.0} deliveries/s, latency p50 {:.2} ms, p99 {:.2} ms, relay CPU {:.2} us per delivery",
            self.rate(),
            self.p50_ms,
            self.p99_ms,
            self.cpu_us_per_delivery
        );
    }
}

/// How a client sends: keeping a window of its own messages in flight, or at a fixed rate.
#[derive(Debug, Clone, Copy)]
enum Pace {
    Window(usize),
    Rate(u64, Start),
}

/// When in its period each paced client starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// In client order over the period: the ten members of a room start within 1 ms of
    /// each other, so each member gets its nine messages in a burst (as when a room answers
    /// a join), which the relay's write coalescing merges.
    ByRoom,
    /// A room's members 10 ms apart: each member gets its messages one by one, the worst
    /// case for coalescing.
    Spread,
}

impl Start {
    fn label(self) -> String {
        match self {
            Start::ByRoom => format!("paced, {PACED_RATE} messages/s per client, a room's members together"),
            Start::Spread => format!("paced, {PACED_RATE} messages/s per client, a room's members spread"),
        }
    }

    /// The offset of client `i` of `count` in a period of `period_us`.
    fn offset(self, i: usize, count: usize, period_us: u64) -> Duration {
        let slot = match self {
            Start::ByRoom => i,
            Start::Spread => (i % PER_ROOM) * (count / PER_ROOM) + i / PER_ROOM,
        };
        Duration::from_micros(period_us * slot as u64 / count as u64)
    }
}

/// Every client sends `messages` broadcasts as `pace` says; returns the sockets for the next
/// phase and the figures, with the relay's CPU time over the phase.
async fn phase(
    pid: u32,
    clients: Vec<(Ws, u64)>,
    messages: usize,
    pace: Pace,
) -> anyhow::Result<(Vec<(Ws, u64)>, Figures)> {
    let cpu_before = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let count = clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (ws, id))| {
            // Paced clients start spread over one period, not all at once.
            let offset = match pace {
                Pace::Rate(rate, start) => start.offset(i, count, 1_000_000 / rate),
                Pace::Window(_) => Duration::ZERO,
            };
            tokio::spawn(async move { client(ws, messages, pace, offset).await.map(|(ws, l)| ((ws, id), l)) })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len() * messages * (PER_ROOM - 1));
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (c, l) = t.await?.with_context(|| format!("{pace:?} phase"))?;
        back.push(c);
        latencies.extend(l);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    eprintln!("  ({pace:?}: {} deliveries in {seconds:.1} s)", latencies.len());
    latencies.sort_unstable();
    let deliveries = latencies.len();
    anyhow::ensure!(deliveries > 0, "nothing was delivered");
    let pct = |p: f64| latencies[((deliveries as f64 * p) as usize).min(deliveries - 1)] as f64 / 1000.0;
    Ok((
        back,
        Figures {
            deliveries,
            seconds,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            cpu_us_per_delivery: cpu * 1e6 / deliveries as f64,
        },
    ))
}

/// Sends `messages` broadcasts, either with at most `window` of its own in flight (measured by
/// what it received from the others) or at a fixed rate after `offset`, and returns the
/// latency of every message it received.
async fn client(mut ws: Ws, messages: usize, pace: Pace, offset: Duration) -> anyhow::Result<(Ws, Vec<u32>)> {
    let expected = messages * (PER_ROOM - 1);
    let mut lat = Vec::with_capacity(expected);
    let mut sent = 0;
    let start = tokio::time::Instant::now() + offset;
    let stamped = || {
        let stamp = format!("{:020}", micros());
        let body = format!(
            r#"{{"relay":{{"message":"{stamp}{}"}}}}"#,
            "A".repeat(PAYLOAD - stamp.len())
        );
        Message::Text(body.into())
    };
    // Until everything is sent, too: a client that starts late may have received all it
    // expects before its own last message is due, and its room would wait for that one.
    while lat.len() < expected || sent < messages {
        let next_due = match pace {
            Pace::Window(window) => {
                // Send while the room keeps up: others' messages received track our progress.
                while sent < messages && lat.len() + window * (PER_ROOM - 1) >= sent * (PER_ROOM - 1) {
                    ws.send(stamped()).await?;
                    sent += 1;
                }
                None
            }
            Pace::Rate(rate, _) => {
                let due = start + Duration::from_micros(1_000_000 / rate * sent as u64);
                if sent < messages && tokio::time::Instant::now() >= due {
                    ws.send(stamped()).await?;
                    sent += 1;
                    continue;
                }
                (sent < messages).then_some(due)
            }
        };
        let next = async {
            tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .with_context(|| {
                    format!(
                        "no delivery for 30 s ({} of {expected} received, {sent} sent)",
                        lat.len()
                    )
                })?
                .context("connection closed")?
                .map_err(anyhow::Error::from)
        };
        let m = match next_due {
            Some(due) => tokio::select! {
                m = next => m?,
                () = tokio::time::sleep_until(due) => continue,
            },
            None => next.await?,
        };
        let Message::Text(t) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t)?;
        let Some(msg) = v["message"]["message"].as_str() else {
            continue;
        };
        let stamp: u64 = msg.get(..20).and_then(|s| s.parse().ok()).context("bad stamp")?;
        lat.push(micros().saturating_sub(stamp).min(u32::MAX as u64) as u32);
    }
    Ok((ws, lat))
}

/// The relay's CPU time (user + system) so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    static TICKS: OnceLock<f64> = OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("unreadable /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|f| f.parse().ok()).context("no utime")?;
    let stime: f64 = fields.get(12).and_then(|f| f.parse().ok()).context("no stime")?;
    Ok((utime + stime) / ticks)
}

/// The issue's first attack: 24 connections (from 24 addresses) each send most of an 8 MiB
/// frame and never finish it. Returns the relay's RSS in MiB before and after. A relay that
/// stops reading some of them (its budget is spent) stalls their writes: each gets 5 s.
async fn attack_unfinished(server: &Server) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kib(server.pid())? as f64 / 1024.0;
    let mut frame = frame_header(8 * MIB);
    frame.extend(vec![b'a'; 8 * (MIB - 1024)]);
    let attempts = (0..24).map(|i| {
        let frame = &frame;
        async move {
            let mut s = raw_websocket(server.addr, IpAddr::from([127, 0, 2, i as u8 + 1]), None)
                .await
                .ok()?;
            let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(frame)).await;
            Some(s)
        }
    });
    let held = futures_util::future::join_all(attempts).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(server.pid())? as f64 / 1024.0;
    drop(held);
    Ok((idle, after))
}

/// The second: one 8 MiB broadcast to 24 members that never read.
async fn attack_broadcast(server: &Server) -> anyhow::Result<(f64, f64)> {
    let room = format!("{:064x}", 77);
    let join = format!(r#"{{"join":{{"hash":"{room}"}}}}"#);
    let mut silent = Vec::new();
    for i in 0..24 {
        let mut s = raw_websocket(server.addr, IpAddr::from([127, 0, 3, i as u8 + 1]), Some(4096)).await?;
        let mut frame = frame_header(join.len());
        frame.extend(join.as_bytes());
        s.write_all(&frame).await?;
        silent.push(s);
    }
    let (mut sender, _) = connect(server.addr, 0).await?;
    sender.send(Message::Text(join.into())).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.pid())? as f64 / 1024.0;
    let big = format!(r#"{{"relay":{{"message":"{}"}}}}"#, "b".repeat(8 * MIB - 100));
    sender.send(Message::Text(big.into())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok((before, rss_kib(server.pid())? as f64 / 1024.0))
}

/// A WebSocket handshake by hand, so the attacks can send half frames and leave what the
/// relay sends unread.
async fn raw_websocket(addr: SocketAddr, from: IpAddr, recv_buffer: Option<u32>) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = socket.connect(addr).await?;
    stream
        .write_all(
            b"GET /signaling HTTP/1.1\r\nHost: keksbox\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        anyhow::ensure!(stream.read(&mut byte).await? == 1, "closed during the handshake");
        head.push(byte[0]);
    }
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 101"), "handshake refused");
    Ok(stream)
}

/// The header of a final text frame, masked with a zero key (the payload goes as it is).
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

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}
