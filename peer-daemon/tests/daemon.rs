//! keksbox-peer as a program: bad configurations fail with a message that says what to fix,
//! the secret never appears in its output, and under (a stand-in for) systemd it reports
//! readiness, pets the watchdog and stops on SIGTERM. The unit file's hardening is checked
//! with systemd's own tools.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keksbox-peer");

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("peer.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const SYNTHETIC: &str = "[video]\ndevice = \"synthetic\"\n[audio]\npcm = \"synthetic\"\ndenoise = false\n";

#[test]
fn an_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[room]\nservr = \"ws://127.0.0.1:1\"\n");
    let out = run(&config, &["--check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("servr"), "{err}");
    assert!(err.contains("peer.toml"), "names the file: {err}");
}

#[test]
fn a_missing_secret_file_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[room]\nsecret_file = \"{}/absent\"\n{SYNTHETIC}", dir.path().display()),
    );
    let out = run(&config, &["--check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent") && err.contains("secret_file"), "{err}");
}

#[test]
fn a_device_that_is_not_a_camera_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[video]\ndevice = \"/dev/null\"\n[audio]\nenabled = false\n",
    );
    let out = run(&config, &["--check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/null"), "{err}");
    assert!(err.contains("not a camera") && err.contains("enabled = false"), "{err}");
}

#[test]
fn check_passes_and_never_prints_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2-correct-horse\n").unwrap();
    let config = write_config(
        dir.path(),
        &format!("[room]\nsecret_file = \"{}\"\n{SYNTHETIC}", secret.display()),
    );
    let out = run(&config, &["--check"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("a room is configured"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn no_room_and_no_summoning_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SYNTHETIC);
    let out = run(&config, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set [room] secret_file"), "{err}");
}

/// Reads notifications until one line equals `want`.
fn wait_for(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return;
            }
        }
    }
    panic!("no {want:?}; got {seen:?}");
}

#[test]
fn under_systemd_it_is_ready_pets_the_watchdog_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // No room: it waits to be summoned (no network needed).
    let summon = dir.path().join("summon.sock");
    let config = write_config(
        dir.path(),
        &format!(
            "[room]\nserver = \"ws://127.0.0.1:9\"\n[summon]\nsocket = \"{}\"\n{SYNTHETIC}",
            summon.display()
        ),
    );
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    wait_for(&socket, "READY=1", &mut seen);
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    wait_for(&socket, "WATCHDOG=1", &mut seen);
    assert!(summon.exists(), "the summon socket is there");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for(&socket, "STOPPING=1", &mut seen);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_unit_is_hardened_verified_and_its_users_exist() {
    if !have("systemd-analyze") {
        // The Makefile installs systemd (APT_PACKAGES); a machine without it cannot check.
        eprintln!("systemd-analyze missing: install systemd");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = root.join("systemd/keksbox-peer.service");
    // The 0-100 scale: 17 is an exposure of 1.7.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=17"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 1.7:\n{text}");
    let overall = text.lines().find(|l| l.contains("Overall exposure")).unwrap_or("");
    eprintln!("{overall}");

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("/usr/bin/keksbox-peer", BIN);
    let copy = dir.path().join("keksbox-peer.service");
    std::fs::write(&copy, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let etc = dir.path().join("root/etc");
    std::fs::create_dir_all(&etc).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", dir.path().join("root").display()))
        .arg(root.join("systemd/keksbox.sysusers").canonicalize().unwrap())
        .arg(root.join("systemd/keksbox-peer.sysusers").canonicalize().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let group = std::fs::read_to_string(etc.join("group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("keksbox-peer:") && l.ends_with(":keksbox")),
        "keksbox may use the summon socket: {group}"
    );
}
