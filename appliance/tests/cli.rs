//! The `keksbox` binary as a person runs it: help, version, config errors, signals.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keksbox");

#[test]
fn help_and_version() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in ["--config", "--bind", "--no-tls"] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        concat!("keksbox ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_config_key_is_named_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[limits]\nmax_conections = 5\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--no-tls")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max_conections"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/keksbox.toml", "--no-tls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot read config file /nonexistent/keksbox.toml"),
        "{err}"
    );
}

#[test]
fn bad_bind_env_is_a_clear_error() {
    let out = Command::new(BIN)
        .arg("--no-tls")
        .env("BIND", "everywhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("BIND=\"everywhere\""));
}

#[test]
fn sigterm_exits_cleanly() {
    let mut child = Command::new(BIN)
        .args(["--no-tls", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the start-up line, which names the version and the address.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!("no start-up line from keksbox: {e}");
            }
        };
        if line.contains("serving http://127.0.0.1:") {
            assert!(line.contains(concat!("keksbox ", env!("CARGO_PKG_VERSION"))), "{line}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no start-up line in time");
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "keksbox did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
