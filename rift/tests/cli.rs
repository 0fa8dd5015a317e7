//! The command line as a person sees it: help and the first errors, compared with snapshots
//! in `tests/snapshots/` (`UPDATE_SNAPSHOTS=1 cargo test -p rift --test cli` rewrites them).
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn rift(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rift"))
        .args(args)
        .env_remove("KEKSBOX_SERVER")
        .env_remove("KEKSBOX_FINGERPRINT")
        .env("RIFT_SECRET", "snapshot")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn snapshot(name: &str, (code, text): (i32, String)) {
    let got = format!("exit {code}\n{text}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "{name} changed (UPDATE_SNAPSHOTS=1 to accept)");
}

#[test]
fn help() {
    snapshot("help", rift(&["--help"]));
    snapshot("send-help", rift(&["send", "--help"]));
    snapshot("receive-help", rift(&["receive", "--help"]));
}

#[test]
fn a_missing_file_is_reported_before_connecting() {
    snapshot(
        "missing-file",
        rift(&["--server", "https://127.0.0.1:1", "send", "/nonexistent/report.pdf"]),
    );
}

#[test]
fn a_bad_server_url_says_what_is_expected() {
    snapshot("bad-scheme", rift(&["--server", "ftp://box", "receive"]));
    snapshot("bad-port", rift(&["--server", "box:99999", "receive"]));
    snapshot(
        "bad-fingerprint",
        rift(&["--server", "box", "--fingerprint", "12:34", "receive"]),
    );
}

#[test]
fn nothing_listening_is_an_error_not_a_hang() {
    let (code, text) = rift(&["--server", "http://127.0.0.1:1", "receive", "/tmp/rift-cli-test-out"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("cannot connect to 127.0.0.1:1") && text.contains("is the server running"),
        "{text}"
    );
}

#[test]
fn send_without_paths_is_a_usage_error() {
    let (code, text) = rift(&["send"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("<PATH>"), "{text}");
}
