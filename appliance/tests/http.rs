//! The HTTP surface: pages, files, headers, `/config.json`, `/version`, redirects.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keksbox::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn request(relay: &Relay, method: &str, path: &str, extra: &str) -> Response {
    let mut tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: keksbox.local\r\nConnection: close\r\n{extra}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": ").map(|(n, v)| (n.to_owned(), v.to_owned())))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

async fn get(relay: &Relay, path: &str) -> Response {
    request(relay, "GET", path, "").await
}

fn web_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>start</title>").unwrap();
    std::fs::write(dir.path().join("room.html"), "<!doctype html><title>room</title>").unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join("assets/rnnoise.wasm"), b"\0asm").unwrap();
    std::fs::write(dir.path().join(".secret"), "no").unwrap();
    dir
}

async fn relay_with_web(dir: &tempfile::TempDir) -> Relay {
    let mut config = Config::default();
    config.server.web_dir = Some(dir.path().to_owned());
    Relay::start(config).await
}

#[tokio::test]
async fn pages_and_files_with_types_and_security_headers() {
    let dir = web_dir();
    let relay = relay_with_web(&dir).await;
    for (path, status, ctype, body) in [
        (
            "/",
            200,
            "text/html; charset=utf-8",
            &b"<!doctype html><title>start</title>"[..],
        ),
        (
            "/room",
            200,
            "text/html; charset=utf-8",
            b"<!doctype html><title>room</title>",
        ),
        (
            "/assets/app.js",
            200,
            "text/javascript; charset=utf-8",
            b"console.log(1)",
        ),
        ("/assets/rnnoise.wasm", 200, "application/wasm", b"\0asm"),
        ("/version", 200, "text/plain; charset=utf-8", b"keksbox 0.1.0\n"),
        ("/config.json", 200, "application/json", br#"{"webrtc":{}}"#),
        ("/nope.js", 404, "text/plain; charset=utf-8", b"not found\n"),
        ("/.secret", 404, "text/plain; charset=utf-8", b"not found\n"),
        ("/assets/../.secret", 404, "text/plain; charset=utf-8", b"not found\n"),
        ("/%2e%2e/Cargo.toml", 404, "text/plain; charset=utf-8", b"not found\n"),
    ] {
        let r = get(&relay, path).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        assert_eq!(r.body, body, "{path}");
        let csp = r.header("content-security-policy").expect("CSP everywhere");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    }
}

#[tokio::test]
async fn etag_revalidation_and_head() {
    let dir = web_dir();
    let relay = relay_with_web(&dir).await;
    let r = get(&relay, "/assets/app.js").await;
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let etag = r.header("etag").expect("etag").to_owned();
    let again = request(&relay, "GET", "/assets/app.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let head = request(&relay, "HEAD", "/", "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // HEAD says how long the GET body is.
    for path in ["/", "/assets/app.js", "/version", "/config.json"] {
        let full = get(&relay, path).await;
        let head = request(&relay, "HEAD", path, "").await;
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(
            head.header("content-length"),
            Some(full.body.len().to_string().as_str()),
            "{path}"
        );
    }
    let post = request(&relay, "POST", "/", "Content-Length: 0\r\n").await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn old_room_urls_redirect_with_a_warning() {
    let relay = Relay::default().await;
    let r = get(&relay, "/room/team-standup").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/room#team-standup?warn_redirect=true"));
}

#[tokio::test]
async fn unbuilt_client_page_says_how_to_build_it() {
    let mut config = Config::default();
    config.server.web_dir = Some(std::path::PathBuf::from("/nonexistent/keksbox/web"));
    let relay = Relay::start(config).await;
    let r = get(&relay, "/").await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("make web"));
}

#[tokio::test]
async fn config_json_carries_only_configured_ice_servers() {
    let mut config = Config::default();
    config.webrtc.stun = Some("stun:10.0.0.1:3478".into());
    let relay = Relay::start(config).await;
    let r = get(&relay, "/config.json").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"webrtc": {"stun": "stun:10.0.0.1:3478"}}));
}

#[tokio::test]
async fn signaling_without_upgrade_is_a_bad_request() {
    let relay = Relay::default().await;
    assert_eq!(get(&relay, "/signaling").await.status, 400);
}

/// Regression: `GET host:port` (authority form) has an empty path, and slicing off its
/// leading `/` panicked the connection task, which the release profile's abort would have
/// turned into the death of the whole relay.
#[tokio::test]
async fn authority_form_request_target_does_not_panic() {
    let relay = Relay::default().await;
    let r = request(&relay, "GET", "example.com:443", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(get(&relay, "/version").await.status, 200);
}
