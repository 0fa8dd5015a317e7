//! Shared test plumbing: a private network namespace per test, a real keksbox in it, rift
//! run as a process, and a member written from docs/PROTOCOL.md alone (a raw WebSocket,
//! keks-proto's session for sealing).
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use keks_proto::crypto::{RoomKey, room_hash};
use keks_proto::packets::{ClientboundPacket, ServerboundPacket};
use keks_proto::session::{self, Session};
use tokio_tungstenite::tungstenite::Message;

/// Set in the re-executed test process that runs inside the namespace.
const INSIDE: &str = "RIFT_TEST_IN_NETNS";

/// The start of a namespace test: inside its own network namespace ([`netns`]; `None` in
/// the outer process, whose run of it has been checked already), a fresh directory and a
/// relay on `port` there, started with `extra` arguments.
pub fn setup(test: &str, port: u16, extra: &[&str]) -> Option<(tempfile::TempDir, Relay)> {
    if !netns(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), port, extra);
    Some((dir, relay))
}

/// Runs the calling test inside a fresh network namespace with only loopback: the test binary
/// re-executes itself for exactly this test under `unshare -n`. Returns true in the child
/// (run the body), false in the parent (which has asserted the child passed).
pub fn netns(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let run = || {
        Command::new("unshare")
            .args([
                "-n",
                "sh",
                "-c",
                r#"ip link set lo up && exec "$0" --exact "$1" --nocapture --test-threads=1"#,
            ])
            .arg(&exe)
            .arg(test)
            .env(INSIDE, "1")
            .status()
            .expect("unshare (util-linux) is needed; the tests run as root to make network namespaces")
    };
    let status = run();
    assert!(
        status.success(),
        "{test} failed inside its network namespace ({status})"
    );
    false
}

/// The keksbox binary next to the test binary (the workspace builds it; rift never links it).
pub fn keksbox_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEKSBOX_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("keksbox");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build -p keksbox)",
        bin.display()
    );
    bin
}

/// A keksbox relay with TLS on 127.0.0.1:`port`, killed on drop.
pub struct Relay {
    pub child: Child,
    pub port: u16,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl Relay {
    pub fn start(dir: &Path, port: u16) -> Relay {
        Self::start_with(dir, port, &[])
    }

    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Relay {
        let state = dir.join("keksbox-state");
        let log = dir.join(format!("keksbox-{port}.log"));
        let child = Command::new(keksbox_bin())
            .args(["--bind", &format!("127.0.0.1:{port}"), "--state-dir"])
            .arg(&state)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "keksbox did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Relay {
            child,
            port,
            state,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The fingerprint keksbox logged at start.
    pub fn fingerprint(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap();
        let at = log.find("fingerprint ").expect("keksbox logs its fingerprint") + "fingerprint ".len();
        log[at..at + 95].to_owned()
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rift` with the environment a test wants: the relay, a private known-servers file,
/// candidates on loopback, and the secret in the environment. Its log level is `warn`, or
/// `RIFT_TEST_LOG` (say `keks_client=debug,warn`) when chasing a failure.
pub fn rift(dir: &Path, server: &str, secret: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rift"));
    cmd.env("KEKSBOX_SERVER", server)
        .env("KEKSBOX_KNOWN_SERVERS", dir.join("known_servers"))
        .env("RIFT_ICE_BIND", "127.0.0.1")
        .env("RIFT_SECRET", secret)
        .env(
            "RUST_LOG",
            std::env::var("RIFT_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("KEKSBOX_FINGERPRINT")
        .stdin(Stdio::null());
    cmd
}

/// Waits for `child` with a deadline; kills it and panics with its output when it hangs.
pub fn wait(child: Child, limit: Duration, what: &str) -> Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "{what} did not finish in {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure is reproducible.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The relay connection of a member written from PROTOCOL.md.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins `secret` on a plain-HTTP keksbox as "mallory"; returns once we are in the room.
pub async fn join(port: u16, secret: &str) -> (Ws, Session) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/signaling"))
        .await
        .unwrap();
    let mut session = Session::with_key(RoomKey::derive(secret), room_hash(secret), "mallory");
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("relay closed")
        };
        let packet: ClientboundPacket = serde_json::from_str(&t).unwrap();
        let ready = matches!(packet, ClientboundPacket::ClientJoin { .. }) && session.id().is_some();
        for out in session.handle(packet) {
            if let session::Output::Send(p) = out {
                send_packet(&mut ws, &p).await;
            }
        }
        if ready {
            return (ws, session);
        }
    }
}

/// Sends one packet to the relay.
pub async fn send_packet(ws: &mut Ws, packet: &ServerboundPacket) {
    ws.send(Message::text(serde_json::to_string(packet).unwrap()))
        .await
        .unwrap();
}

/// Keeps answering the relay (greetings to newcomers) until `for_how_long` passed.
pub async fn serve(ws: &mut Ws, session: &mut Session, for_how_long: Duration) {
    let _ = tokio::time::timeout(for_how_long, async {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let Ok(packet) = serde_json::from_str::<ClientboundPacket>(&t) else {
                continue;
            };
            for out in session.handle(packet) {
                if let session::Output::Send(p) = out {
                    send_packet(ws, &p).await;
                }
            }
        }
    })
    .await;
}
