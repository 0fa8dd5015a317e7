//! rift to rift through a real keksbox, each test in a network namespace of its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Relay, bytes, rift, setup, text, wait};

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn same(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} and {} differ ({} and {} bytes)",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}

#[test]
fn a_200_mb_file_and_a_directory_tree_arrive_byte_identical() {
    let Some((dir, relay)) = setup("a_200_mb_file_and_a_directory_tree_arrive_byte_identical", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    let src = d.join("src");
    write(&src.join("big.bin"), &bytes(200_000_000, 1));
    write(&src.join("tree/a.txt"), b"alpha\n");
    write(&src.join("tree/sub/b.bin"), &bytes(3_000_000, 2));
    write(&src.join("tree/sub/deeper/ünïcödé name.txt"), "grüße\n".as_bytes());
    write(&src.join("tree/empty"), b"");

    let sender = rift(d, &relay.url(), "transfer one")
        .current_dir(&src)
        .args(["send", "big.bin", "tree"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = d.join("out");
    let receiver = rift(d, &relay.url(), "transfer one")
        .args(["receive"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r = wait(receiver, Duration::from_secs(240), "rift receive");
    let s = wait(sender, Duration::from_secs(60), "rift send");
    assert_eq!(r.status.code(), Some(0), "receiver: {}", text(&r));
    assert_eq!(s.status.code(), Some(0), "sender: {}", text(&s));
    for rel in [
        "big.bin",
        "tree/a.txt",
        "tree/sub/b.bin",
        "tree/sub/deeper/ünïcödé name.txt",
        "tree/empty",
    ] {
        same(&src.join(rel), &out.join(rel));
    }
    let stdout = String::from_utf8_lossy(&s.stdout);
    assert!(stdout.contains("Offering 5 files"), "{stdout}");
    assert!(
        stdout.contains("https://127.0.0.1:8443/room#transfer%20one"),
        "the browser link: {stdout}"
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("5 received, 0 refused, 0 failed"),
        "{}",
        text(&r)
    );
}

#[test]
fn a_generated_secret_is_printed_and_works() {
    let Some((dir, relay)) = setup("a_generated_secret_is_printed_and_works", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    write(&d.join("note.txt"), b"read me aloud\n");
    let mut sender = rift(d, &relay.url(), "")
        .env_remove("RIFT_SECRET")
        .current_dir(d)
        .args(["send", "note.txt"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The secret is on stdout, indented, after "enter the secret".
    let mut stdout = sender.stdout.take().unwrap();
    let mut seen = String::new();
    let secret = loop {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "rift send ended without printing a secret: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        let secret = seen.lines().skip_while(|l| !l.contains("enter the secret")).nth(2);
        if let Some(line) = secret.filter(|_| seen.contains("room#")) {
            break line.trim().to_owned();
        }
    };
    assert_eq!(secret.len(), 47, "eight five-letter groups: {secret}");
    assert!(
        seen.contains(&format!("room#{secret}")),
        "the link carries the secret: {seen}"
    );
    let out = d.join("out");
    let r = rift(d, &relay.url(), &secret)
        .args(["receive"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    same(&d.join("note.txt"), &out.join("note.txt"));
    let _ = wait(sender, Duration::from_secs(30), "rift send");
}

#[test]
fn receive_never_overwrites_without_force_and_keeps_going() {
    let Some((dir, relay)) = setup("receive_never_overwrites_without_force_and_keeps_going", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    write(&d.join("src/same.txt"), b"new contents\n");
    write(&d.join("src/other.txt"), b"other\n");
    let out = d.join("out");
    write(&out.join("same.txt"), b"precious\n");

    let sender = rift(d, &relay.url(), "no clobber")
        .current_dir(d.join("src"))
        .args(["send", "--keep", "same.txt", "other.txt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _sender = KillOnDrop(sender);
    let r = rift(d, &relay.url(), "no clobber")
        .args(["receive"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1), "refused means exit 1: {}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("exists (use --force to overwrite)"),
        "{}",
        text(&r)
    );
    assert_eq!(std::fs::read(out.join("same.txt")).unwrap(), b"precious\n");
    assert_eq!(std::fs::read(out.join("other.txt")).unwrap(), b"other\n");

    let r = rift(d, &relay.url(), "no clobber")
        .args(["receive", "--force"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(std::fs::read(out.join("same.txt")).unwrap(), b"new contents\n");
}

#[test]
fn the_relay_restarts_mid_session_and_a_later_transfer_works() {
    let Some((dir, mut relay)) = setup("the_relay_restarts_mid_session_and_a_later_transfer_works", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    write(&d.join("f.bin"), &bytes(2_000_000, 3));
    let sender = rift(d, &relay.url(), "restart")
        .current_dir(d)
        .args(["send", "--keep", "f.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _sender = KillOnDrop(sender);
    let first = rift(d, &relay.url(), "restart")
        .args(["receive"])
        .arg(d.join("one"))
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    same(&d.join("f.bin"), &d.join("one/f.bin"));

    relay.stop();
    std::thread::sleep(Duration::from_millis(500));
    let _relay = Relay::start(d, 8443);
    // The sender reconnects with backoff and rejoins; a new receiver then gets the file.
    let second = rift(d, &relay.url(), "restart")
        .args(["receive"])
        .arg(d.join("two"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    same(&d.join("f.bin"), &d.join("two/f.bin"));
}

#[test]
fn a_pinned_fingerprint_that_does_not_match_is_refused() {
    let Some((dir, relay)) = setup("a_pinned_fingerprint_that_does_not_match_is_refused", 8443, &[]) else {
        return;
    };
    let d = dir.path();
    let wrong = ["AB"; 32].join(":");
    let r = rift(d, &relay.url(), "pin")
        .args(["--fingerprint", &wrong, "receive"])
        .arg(d.join("out"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("REFUSED") && err.contains(&wrong) && err.contains(&relay.fingerprint()),
        "{err}"
    );

    // Trust on first use: a remembered fingerprint that changed is refused the same way.
    std::fs::write(d.join("known_servers"), format!("127.0.0.1:8443 {wrong}\n")).unwrap();
    let r = rift(d, &relay.url(), "pin")
        .args(["receive"])
        .arg(d.join("out"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("REFUSED") && err.contains("known_servers"), "{err}");

    // The right pin connects (the sender side is absent, so Ctrl-C ends the wait).
    let mut child = rift(d, &relay.url(), "pin")
        .env_remove("KEKSBOX_KNOWN_SERVERS")
        .env("HOME", d)
        .args(["--fingerprint", &relay.fingerprint(), "receive"])
        .arg(d.join("out"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut err = String::new();
    while !err.contains("waiting for files") {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => err += &(line + "\n"),
            Err(_) => panic!("rift receive did not reach the room with the right pin:\n{err}"),
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Ctrl-C did not end rift receive:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        err += &(line + "\n");
    }
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(status.code(), Some(1), "Ctrl-C means exit 1: {err}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
