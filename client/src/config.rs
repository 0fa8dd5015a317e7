//! The server's client configuration, `/config.json`: which ICE (STUN/TURN) servers to use.
//!
//! keks-meet's format is `{"webrtc":{"stun":URL,"turn":URL,"turn_user":..,"turn_cred":..}}`;
//! a keksbox may add `"ice_servers":[{"urls":[..],"username":..,"credential":..}]` (the
//! browser's `RTCIceServer` shape). Unknown keys are ignored. A server without the file, or
//! with one that does not parse, means no ICE servers: host candidates only, which is what
//! a LAN needs, and nothing on the internet is contacted.

use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::connect::{ConnectError, connect};
use crate::server::Server;
use crate::trust::Trust;

/// Largest `/config.json` read.
const MAX_CONFIG: usize = 64 << 10;

/// One ICE server, as `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    webrtc: RawWebrtc,
}

#[derive(Debug, Default, Deserialize)]
struct RawWebrtc {
    stun: Option<String>,
    turn: Option<String>,
    turn_user: Option<String>,
    turn_cred: Option<String>,
    #[serde(default)]
    ice_servers: Vec<IceServer>,
}

/// The ICE servers in a `/config.json` body. Garbage gives none, with a warning.
pub fn parse_ice_servers(body: &[u8]) -> Vec<IceServer> {
    let raw: Raw = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("the server's /config.json does not parse ({e}); using no STUN/TURN servers");
            return Vec::new();
        }
    };
    let w = raw.webrtc;
    if !w.ice_servers.is_empty() {
        return udp_only(w.ice_servers);
    }
    let mut out = Vec::new();
    if let Some(stun) = w.stun {
        out.push(IceServer {
            urls: vec![stun],
            ..Default::default()
        });
    }
    if let Some(turn) = w.turn {
        out.push(IceServer {
            urls: vec![turn],
            username: w.turn_user,
            credential: w.turn_cred,
        });
    }
    out
}

/// The webrtc crate relays over UDP only: it skips `?transport=tcp` and `turns:` URLs with a
/// warning each time, so they are left out here (a keksbox offers TURN over both).
fn udp_only(servers: Vec<IceServer>) -> Vec<IceServer> {
    servers
        .into_iter()
        .filter_map(|mut s| {
            s.urls.retain(|u| {
                let u = u.to_ascii_lowercase();
                !u.starts_with("turns:") && !u.contains("transport=tcp")
            });
            (!s.urls.is_empty()).then_some(s)
        })
        .collect()
}

/// Fetches `/config.json` from `server` (one HTTP/1.1 GET over the pinned connection) and
/// returns its ICE servers; a missing file means none.
pub async fn fetch_ice_servers(server: &Server, trust: &Trust) -> Result<Vec<IceServer>, ConnectError> {
    let mut conn = connect(server, trust).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        server.path("/config.json"),
        server.authority()
    );
    let io_err = |source| ConnectError::Tcp {
        server: server.authority(),
        source,
    };
    conn.io.write_all(request.as_bytes()).await.map_err(io_err)?;
    let mut response = Vec::new();
    let mut limited = (&mut conn.io).take(MAX_CONFIG as u64);
    match tokio::time::timeout(crate::connect::CONNECT_TIMEOUT, limited.read_to_end(&mut response)).await {
        Ok(Ok(_)) => {}
        // A TLS peer that closes without close_notify still sent the whole body.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Ok(Err(e)) => return Err(io_err(e)),
        Err(_) => return Err(ConnectError::Timeout(server.authority())),
    }
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        log::warn!("{server}config.json: no HTTP response; using no STUN/TURN servers");
        return Ok(Vec::new());
    };
    let head = String::from_utf8_lossy(&response[..split]);
    let ok = head
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    if !ok || head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        log::info!(
            "{server}config.json: not served ({}); using no STUN/TURN servers",
            head.lines().next().unwrap_or("")
        );
        return Ok(Vec::new());
    }
    Ok(parse_ice_servers(&response[split + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keks_meet_keys() {
        let body = br#"{"webrtc":{"stun":"stun:box:3478","turn":"turn:box:3478","turn_user":"u","turn_cred":"p"},"appearance":{}}"#;
        let servers = parse_ice_servers(body);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:box:3478"]);
        assert_eq!(servers[1].username.as_deref(), Some("u"));
        assert_eq!(servers[1].credential.as_deref(), Some("p"));
    }

    #[test]
    fn ice_servers_list_wins() {
        let body = br#"{"webrtc":{"stun":"stun:a","ice_servers":[{"urls":"turn:b","username":"x","credential":"y"},{"urls":["stun:c","stun:d"]}]}}"#;
        let servers = parse_ice_servers(body);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["turn:b"]);
        assert_eq!(servers[1].urls, ["stun:c", "stun:d"]);
    }

    #[test]
    fn turn_over_tcp_is_left_out() {
        let body = br#"{"webrtc":{"ice_servers":[{"urls":["stun:10.0.0.1:3478"]},{"urls":["turn:10.0.0.1:3478","turn:10.0.0.1:3478?transport=tcp"],"username":"1:a","credential":"p"},{"urls":"turns:x:5349"}]}}"#;
        let servers = parse_ice_servers(body);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].urls, ["turn:10.0.0.1:3478"]);
        assert_eq!(servers[1].username.as_deref(), Some("1:a"));
    }

    #[test]
    fn garbage_and_empty_mean_none() {
        for body in [&b""[..], b"{", b"[]", b"{}", br#"{"webrtc":{}}"#, br#"{"webrtc":5}"#] {
            assert!(
                parse_ice_servers(body).is_empty(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
