//! Summoning the room's own camera and microphone (keksbox-peer) into a meeting.
//!
//! The start page's "Use this room's camera and microphone" posts `{"code","secret"}` to
//! `/summon` (same origin, so over TLS whenever the box serves TLS). keksbox checks the room
//! code, which is printed on the box's label or shown on its console and set under
//! `[summon] code`, and hands the secret to keksbox-peer over its local unix socket. A camera
//! anyone on the LAN could switch on would be a spy camera: without the code nothing happens,
//! every summons is logged (with the caller's address, never the secret), and the feature is
//! off unless both `code` and `socket` are set.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

/// Largest request body: a room secret and a code.
const MAX_BODY: usize = 4096;
/// How long keksbox-peer may take to accept an invitation.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest room code accepted in the config: a code is all that stands between the LAN and
/// the camera.
const MIN_CODE: usize = 6;

/// `[summon]`: off unless both keys are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummonConfig {
    /// The room code people type to summon the camera (printed on the box); empty: off.
    pub code: String,
    /// keksbox-peer's summon socket (its `[summon] socket`); empty: off.
    pub socket: Option<PathBuf>,
}

impl SummonConfig {
    /// Whether the start page offers summoning.
    pub fn enabled(&self) -> bool {
        !self.code.is_empty() && self.socket.is_some()
    }

    /// Checks the config (called with the rest of it).
    pub fn check(&self) -> Result<(), String> {
        if !self.code.is_empty() && self.code.chars().count() < MIN_CODE {
            return Err(format!(
                "summon.code is too short: use at least {MIN_CODE} characters (it is all that keeps the LAN from switching the camera on)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Summons {
    code: String,
    secret: String,
}

/// `POST /summon`.
pub async fn handle(config: &SummonConfig, peer: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(socket) = config.socket.as_ref().filter(|_| config.enabled()) else {
        return reply(StatusCode::NOT_FOUND, "summoning is not enabled on this box");
    };
    if req.method() != http::Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
    };
    let summons: Summons = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(_) => return reply(StatusCode::BAD_REQUEST, "expected {\"code\":...,\"secret\":...}"),
    };
    if !constant_time_eq(summons.code.trim().as_bytes(), config.code.as_bytes()) {
        log::warn!("summon: refused a request from {peer} with a wrong room code");
        return reply(StatusCode::FORBIDDEN, "wrong room code");
    }
    if summons.secret.trim().is_empty() || summons.secret.contains('?') {
        return reply(StatusCode::BAD_REQUEST, "no room secret");
    }
    match invite(socket, &summons.secret).await {
        Ok(()) => {
            log::info!("summon: {peer} invited the room camera and microphone into a room");
            reply(StatusCode::OK, "ok")
        }
        Err(e) => {
            log::error!(
                "summon: keksbox-peer at {} did not take the invitation: {e}",
                socket.display()
            );
            reply(StatusCode::SERVICE_UNAVAILABLE, "the room camera is not available")
        }
    }
}

async fn invite(socket: &std::path::Path, secret: &str) -> Result<(), String> {
    let line = serde_json::json!({ "secret": secret }).to_string() + "\n";
    let talk = async {
        let mut stream = UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
        stream.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer.trim() == "ok" {
            Ok(())
        } else {
            Err(format!("it answered {:?}", answer.trim()))
        }
    };
    tokio::time::timeout(PEER_TIMEOUT, talk)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_both_keys_are_set() {
        assert!(!SummonConfig::default().enabled());
        let c = SummonConfig {
            code: "123456".into(),
            socket: None,
        };
        assert!(!c.enabled());
        let c = SummonConfig {
            code: "123456".into(),
            socket: Some("/run/keksbox-peer/summon.sock".into()),
        };
        assert!(c.enabled());
        assert!(c.check().is_ok());
        let short = SummonConfig { code: "12".into(), ..c };
        assert!(short.check().expect_err("short").contains("at least 6"));
    }

    #[test]
    fn codes_compare_exactly() {
        assert!(constant_time_eq(b"abc123", b"abc123"));
        assert!(!constant_time_eq(b"abc124", b"abc123"));
        assert!(!constant_time_eq(b"abc12", b"abc123"));
    }
}
