//! `keksbox-load`: a load generator for the relay, run by `make bench`.
//!
//! It starts a `keksbox` binary on a free loopback port, measures the server's resident memory
//! per idle signaling connection, then has 1,000 clients in 100 rooms of 10 send 200-byte
//! broadcasts as fast as the relay delivers them (each client keeps a small window of
//! messages in flight) and prints deliveries per second and p50/p99 latency.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

const ROOMS: usize = 100;
const PER_ROOM: usize = 10;
const MESSAGES: usize = 200;
const WINDOW: usize = 8;
const PAYLOAD: usize = 200;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn micros() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut server = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => server = args.next(),
            "-h" | "--help" => {
                println!("usage: keksbox-load --server PATH/TO/keksbox");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let server = server.context("--server PATH is required")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(&server)
        .args(["--bind", &addr, "--no-tls"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {server}"))?;
    let server = Server(child);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(&addr, server.0.id()))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str) -> anyhow::Result<(Ws, u64)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signaling")).await?;
    let init = next_json(&mut ws).await?;
    let id = init["init"]["your_id"].as_u64().context("no init")?;
    Ok((ws, id))
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

async fn bench(addr: &str, pid: u32) -> anyhow::Result<()> {
    // Wait for the server to listen.
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("keksbox did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm the server up with one connection so the baseline includes its runtime.
    drop(connect(addr).await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid)?;

    let total = ROOMS * PER_ROOM;
    let mut clients = Vec::with_capacity(total);
    for i in 0..total {
        let (mut ws, id) = connect(addr).await?;
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
    let rss_idle = rss_kib(pid)?;
    let per_conn = (rss_idle.saturating_sub(rss_before)) as f64 / total as f64;

    let (ready, load) = phase(ready, MESSAGES, WINDOW).await?;
    let rss_busy = rss_kib(pid)?;
    let (_, light) = phase(ready, 50, 1).await?;

    println!("keksbox relay benchmark: {total} connections in {ROOMS} rooms of {PER_ROOM}, {PAYLOAD}-byte broadcasts");
    println!(
        "  saturated (window {WINDOW}): {} deliveries in {:.2} s = {:.0} deliveries/s, latency p50 {:.2} ms, p99 {:.2} ms",
        load.deliveries,
        load.seconds,
        load.deliveries as f64 / load.seconds,
        load.p50_ms,
        load.p99_ms
    );
    println!(
        "  one message in flight per client: {:.0} deliveries/s, latency p50 {:.2} ms, p99 {:.2} ms",
        light.deliveries as f64 / light.seconds,
        light.p50_ms,
        light.p99_ms
    );
    println!("  server RSS: {rss_before} KiB before, {rss_idle} KiB with {total} idle, {rss_busy} KiB after load");
    println!("  RSS per idle connection: {per_conn:.1} KiB");
    Ok(())
}

struct Figures {
    deliveries: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Every client sends `messages` broadcasts with `window` in flight; returns the sockets for
/// the next phase and the figures.
async fn phase(clients: Vec<(Ws, u64)>, messages: usize, window: usize) -> anyhow::Result<(Vec<(Ws, u64)>, Figures)> {
    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(ws, id)| tokio::spawn(async move { client(ws, messages, window).await.map(|(ws, l)| ((ws, id), l)) }))
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len() * messages * (PER_ROOM - 1));
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (c, l) = t.await??;
        back.push(c);
        latencies.extend(l);
    }
    let seconds = t0.elapsed().as_secs_f64();
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
        },
    ))
}

/// Sends `messages` broadcasts with at most `window` of its own in flight (measured by what
/// it received from the others), and returns the latency of every message it received.
async fn client(mut ws: Ws, messages: usize, window: usize) -> anyhow::Result<(Ws, Vec<u32>)> {
    let expected = messages * (PER_ROOM - 1);
    let mut lat = Vec::with_capacity(expected);
    let mut sent = 0;
    while lat.len() < expected {
        // Send while the room keeps up: others' messages received track our own progress.
        while sent < messages && lat.len() + window * (PER_ROOM - 1) >= sent * (PER_ROOM - 1) {
            let stamp = format!("{:020}", micros());
            let body = format!(
                r#"{{"relay":{{"message":"{stamp}{}"}}}}"#,
                "A".repeat(PAYLOAD - stamp.len())
            );
            ws.send(Message::Text(body.into())).await?;
            sent += 1;
        }
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no delivery for 30 s")?
            .context("connection closed")??;
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

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}
