//! `rift room`: two prompts in one room through a real keksbox, in a network namespace.
//! Chat, a file offered and downloaded at the prompt, and HTTP through an exposed and
//! forwarded port.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{Relay, bytes, rift, setup, wait};

/// A `rift room` process: commands in, output lines out.
struct Prompt {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    name: &'static str,
}

impl Prompt {
    fn start(dir: &std::path::Path, relay: &Relay, secret: &str, name: &'static str) -> Prompt {
        let mut child = rift(dir, &relay.url(), secret)
            .args(["--username", name, "room"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Prompt {
            child: Some(child),
            stdin,
            lines,
            seen: Vec::new(),
            name,
        }
    }

    fn say(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next output line containing `needle` (earlier lines are kept for the message).
    fn expect(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "{} did not print {needle:?} within {limit:?}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn quit(mut self) -> std::process::Output {
        self.say("quit");
        drop(self.stdin.take());
        wait(self.child.take().unwrap(), Duration::from_secs(20), self.name)
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small HTTP server: answers every request with the request line and `body`.
fn http_server(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                }
                let mut reply = request_line.trim_end().as_bytes().to_vec();
                reply.push(b'\n');
                reply.extend_from_slice(&body);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.len()
                );
                conn.write_all(head.as_bytes()).unwrap();
                conn.write_all(&reply).unwrap();
            });
        }
    });
    port
}

/// GET `path` from 127.0.0.1:`port`; the body.
fn get(port: u16, path: &str) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&answer)));
    answer.split_off(at + 4)
}

#[test]
fn two_prompts_chat_share_a_file_and_carry_http_through_a_forwarded_port() {
    let Some((dir, relay)) = setup(
        "two_prompts_chat_share_a_file_and_carry_http_through_a_forwarded_port",
        8443,
        &[],
    ) else {
        return;
    };
    let d = dir.path();
    let payload = bytes(300_000, 7);
    let web = http_server(payload.clone());
    let file = d.join("notes.bin");
    std::fs::write(&file, bytes(2_000_000, 9)).unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();

    let long = Duration::from_secs(30);
    let mut alice = Prompt::start(d, &relay, "room test", "alice");
    alice.expect("in the room", long);
    let mut bob = Prompt::start(d, &relay, "room test", "bob");
    bob.expect("in the room", long);
    alice.expect("bob joined", long);

    // Chat, with an escape sequence that must be shown, not obeyed.
    alice.say("chat hello bob \u{1b}[2J");
    bob.expect("<alice> hello bob \\u{1b}[2J", long);

    // A file at the prompt.
    alice.say(&format!("provide {} notes", file.display()));
    alice.expect("offering notes.bin", long);
    bob.expect("alice offers file notes.bin", long);
    bob.say(&format!("download notes {}", out.display()));
    bob.expect("received notes.bin", Duration::from_secs(60));
    assert!(
        std::fs::read(out.join("notes.bin")).unwrap() == std::fs::read(&file).unwrap(),
        "the downloaded file differs"
    );
    // Never overwritten.
    bob.say(&format!("download notes {}", out.display()));
    bob.expect("exists; give another PATH", long);

    // A port: exposed by alice, forwarded by bob, HTTP through it.
    alice.say(&format!("expose {web} web"));
    alice.expect("exposing 127.0.0.1:", long);
    let offered = bob.expect("alice offers port tcp", long);
    assert!(offered.contains(&format!("tcp {web}")), "{offered}");
    bob.say("forward web");
    let line = bob.expect("forwarding 127.0.0.1:", long);
    let port: u16 = line["forwarding 127.0.0.1:".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..3 {
        let body = get(port, &format!("/page/{i}"));
        let mut want = format!("GET /page/{i} HTTP/1.1\n").into_bytes();
        want.extend_from_slice(&payload);
        assert!(
            body == want,
            "request {i}: {} bytes came back, {} expected",
            body.len(),
            want.len()
        );
    }
    // Connections at the same time each get their own answer.
    let parallel: Vec<_> = (0..3)
        .map(|i| std::thread::spawn(move || (i, get(port, &format!("/parallel/{i}")))))
        .collect();
    for t in parallel {
        let (i, body) = t.join().unwrap();
        assert!(
            body.starts_with(format!("GET /parallel/{i} HTTP/1.1\n").as_bytes()) && body.len() == payload.len() + 25,
            "parallel request {i}: {} bytes",
            body.len()
        );
    }

    // Withdrawn: the forwarder stops.
    alice.say("stop web");
    alice.expect("stopped offering web", long);
    bob.expect("stopped forwarding to web", long);

    bob.say("list");
    bob.expect("alice (member", long);
    bob.say("frobnicate");
    bob.expect("unknown command \"frobnicate\"", long);

    let a = alice.quit();
    let b = bob.quit();
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(b.status.code(), Some(0));
}

/// Caught when the room task moved to keks-proto's bookkeeping: a file withdrawn while it was
/// being sent left its receiver's upload slot taken, so no later file ever opened to it.
#[test]
fn a_file_withdrawn_mid_upload_frees_the_receivers_upload_slot() {
    let Some((dir, relay)) = setup("a_file_withdrawn_mid_upload_frees_the_receivers_upload_slot", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    // Large enough that the withdrawal lands mid-upload (seconds at a debug build's rate).
    let big = d.join("big.bin");
    std::fs::write(&big, bytes(150_000_000, 3)).unwrap();
    let small = d.join("small.bin");
    std::fs::write(&small, bytes(100_000, 5)).unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();

    let long = Duration::from_secs(30);
    let mut alice = Prompt::start(d, &relay, "withdrawn", "alice");
    alice.expect("in the room", long);
    let mut bob = Prompt::start(d, &relay, "withdrawn", "bob");
    bob.expect("in the room", long);
    alice.expect("bob joined", long);
    alice.say(&format!("provide {} big", big.display()));
    alice.expect("offering big.bin", long);
    alice.say(&format!("provide {} small", small.display()));
    alice.expect("offering small.bin", long);
    bob.expect("alice offers file small.bin", long);

    bob.say(&format!("download big {}", out.display()));
    bob.expect("receiving big.bin", long);
    alice.say("stop big");
    alice.expect("stopped offering big", long);
    // The next file to the same member opens.
    bob.say(&format!("download small {}", out.display()));
    bob.expect("received small.bin", long);
    assert!(
        std::fs::read(out.join("small.bin")).unwrap() == std::fs::read(&small).unwrap(),
        "the small file differs"
    );
    assert!(
        !bob.seen.iter().any(|l| l.contains("received big.bin")),
        "the big file arrived before it was withdrawn, so this run did not test a withdrawal mid-upload"
    );
    let a = alice.quit();
    let b = bob.quit();
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(b.status.code(), Some(0));
}

/// A file withdrawn while it was being sent used to leave its receiver waiting until the
/// provider left: the upload stopped, but its channel stayed open. The provider now closes
/// it, and `rift receive` ends at once with what arrived kept as the partial file.
#[test]
fn a_receiver_of_a_file_withdrawn_mid_transfer_fails_at_once() {
    let Some((dir, relay)) = setup("a_receiver_of_a_file_withdrawn_mid_transfer_fails_at_once", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    // Large enough that the withdrawal lands mid-transfer (seconds at a debug build's rate).
    const SIZE: u64 = 200_000_000;
    let big = d.join("big.bin");
    std::fs::write(&big, bytes(SIZE as usize, 4)).unwrap();
    let out = d.join("out");

    let long = Duration::from_secs(30);
    let mut alice = Prompt::start(d, &relay, "withdrawn running", "alice");
    alice.expect("in the room", long);
    alice.say(&format!("provide {} big", big.display()));
    alice.expect("offering big.bin", long);
    let mut receiver = rift(d, &relay.url(), "withdrawn running")
        .args(["receive"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = receiver.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    // The first progress line comes after the first MiB: bytes are flowing.
    let deadline = Instant::now() + long;
    while !seen.iter().any(|l: &String| l.starts_with("big.bin [")) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no progress from rift receive; it printed:\n{}", seen.join("\n")),
        }
    }
    alice.say("stop big");
    alice.expect("stopped offering big", long);
    let stopped = Instant::now();
    // Before, it waited for alice to leave, which she does only after this.
    let deadline = stopped + Duration::from_secs(20);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = receiver.kill();
                panic!(
                    "rift receive did not end within 20 s of the withdrawal; it printed:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    let status = receiver.wait().unwrap();
    let took = stopped.elapsed();
    let err = seen.join("\n");
    assert_eq!(status.code(), Some(2), "a failed file is exit 2: {err}");
    let failed = seen
        .iter()
        .find(|l| l.starts_with("big.bin failed: "))
        .unwrap_or_else(|| panic!("no failure line: {err}"));
    assert!(failed.contains("the partial file is kept as"), "{failed}");
    let arrived: u64 = failed
        .split("cut off after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count: {failed}"));
    assert!(!out.join("big.bin").exists(), "nothing is renamed into place");
    let part = std::fs::metadata(out.join("big.bin.part")).unwrap().len();
    eprintln!("rift receive ended {took:?} after the withdrawal, {arrived} bytes arrived, {part} in big.bin.part");
    assert!(
        arrived > 0 && arrived < SIZE,
        "{arrived} bytes arrived: not a withdrawal mid-transfer"
    );
    assert_eq!(part, arrived, "the partial file holds what arrived");
    assert!(
        took < Duration::from_secs(15),
        "rift receive took {took:?} after the withdrawal"
    );
    let a = alice.quit();
    assert_eq!(a.status.code(), Some(0));
}
