//! HTTP routes: the web client, `/config.json`, `/version`, the old `/room/<secret>`
//! redirect, and the WebSocket upgrade at `/signaling`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use log::debug;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::State;
use crate::admission::Slot;
use crate::assets::Asset;
use crate::relay::Metered;

pub type Body = Full<Bytes>;

/// The Content-Security-Policy of every page: no inline scripts or styles, no foreign origins.
/// `wasm-unsafe-eval` lets RNNoise's WebAssembly compile; `data:` images are chat images.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self'; \
    worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Routes one request.
pub async fn route(state: Arc<State>, peer: String, slot: Arc<Slot>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/signaling" {
        return upgrade(state, peer, slot, req);
    }
    if path == "/summon" {
        return with_headers(crate::summon::handle(&state.config.summon, &peer, req).await);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return with_headers(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    let response = match path.as_str() {
        "/version" => text(StatusCode::OK, &format!("{}\n", crate::VERSION)),
        "/config.json" => json_response(&client_config(
            &state,
            req.extensions().get::<crate::LocalAddr>().map(|l| l.0),
        )),
        "/" | "/index.html" => page(&state, &req, "index.html"),
        "/room" | "/room.html" => page(&state, &req, "room.html"),
        _ => match path.strip_prefix("/room/") {
            Some(secret) if !secret.is_empty() => redirect(&format!("/room#{secret}?warn_redirect=true")),
            // An authority-form target (`GET host:443`) has an empty path: nothing to serve.
            _ => match path.strip_prefix('/') {
                Some(rel) => file(&state, &req, rel),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        },
    };
    let mut response = with_headers(response);
    if req.method() == Method::HEAD {
        // The length a GET would get, and no body (hyper sends none for HEAD, but an empty
        // body here would make it announce a length of 0).
        let len = response.body().size_hint().exact().unwrap_or(0);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// What `/config.json` tells browsers and native clients: the ICE servers configured under
/// `[webrtc]`, and the box's own STUN/TURN at `local` (the address the request arrived on,
/// which the client can reach, unlike a `.local` name it may not resolve) with a fresh
/// credential. keks-meet's single-valued keys (`stun`, `turn`, `turn_user`, `turn_cred`)
/// name the box's server unless `[webrtc]` sets them; `ice_servers` lists all of them in the
/// browser's `RTCIceServer` shape.
pub fn client_config(state: &State, local: Option<std::net::SocketAddr>) -> serde_json::Value {
    let w = &state.config.webrtc;
    let mut webrtc = serde_json::Map::new();
    let mut ice_servers = Vec::new();
    if let Some(stun) = &w.stun {
        ice_servers.push(json!({ "urls": [stun] }));
    }
    if let Some(turn) = &w.turn {
        ice_servers.push(json!({ "urls": [turn], "username": w.turn_user, "credential": w.turn_cred }));
    }
    let own = state.turn.as_ref().zip(local).and_then(|(turn, local)| {
        let listener = turn.listener_for(local.ip())?;
        match turn.credentials() {
            Ok(c) => Some((listener, c)),
            Err(e) => {
                log::error!("cannot make TURN credentials: {e}");
                None
            }
        }
    });
    if let Some((listener, c)) = &own {
        let (stun, turn) = (crate::turn::url("stun", *listener), crate::turn::url("turn", *listener));
        ice_servers.push(json!({ "urls": [stun] }));
        let turn_tcp = format!("{turn}?transport=tcp");
        ice_servers.push(json!({ "urls": [turn, turn_tcp], "username": c.username, "credential": c.password }));
        webrtc.insert("stun".into(), json!(stun));
        webrtc.insert("turn".into(), json!(turn));
        webrtc.insert("turn_user".into(), json!(c.username));
        webrtc.insert("turn_cred".into(), json!(c.password));
    }
    // What [webrtc] sets wins for keks-meet's keys: a person chose that server.
    if w.turn.is_some() {
        webrtc.remove("turn_user");
        webrtc.remove("turn_cred");
    }
    for (key, value) in [
        ("stun", &w.stun),
        ("turn", &w.turn),
        ("turn_user", &w.turn_user),
        ("turn_cred", &w.turn_cred),
    ] {
        if let Some(v) = value {
            webrtc.insert(key.into(), json!(v));
        }
    }
    // Without the box's own server the keks-meet keys say it all, as they always did.
    if own.is_some() {
        webrtc.insert("ice_servers".into(), json!(ice_servers));
    }
    let mut config = json!({ "webrtc": webrtc });
    // keksbox's own addition: the certificate fingerprint, for the start page to show next to
    // what the browser shows. Absent without TLS.
    if let Some(fp) = &state.fingerprint {
        config["appliance"] = json!({ "fingerprint_sha256": fp.to_string() });
    }
    // The start page offers "Use this room's camera and microphone" only when it works.
    if state.config.summon.enabled() {
        config["appliance"]["summon"] = json!(true);
    }
    config
}

fn page(state: &State, req: &Request<Incoming>, name: &str) -> Response<Body> {
    if !state.assets.is_built() {
        return html(StatusCode::OK, NOT_BUILT);
    }
    file(state, req, name)
}

fn file(state: &State, req: &Request<Incoming>, path: &str) -> Response<Body> {
    let Some(Asset {
        body,
        content_type,
        etag,
    }) = state.assets.get(path)
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ETAG, &etag)
        // Revalidate every time: cheap on a LAN, and an upgraded box never serves stale code.
        .header(header::CACHE_CONTROL, "no-cache");
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Full::new(Bytes::new()))
    } else {
        builder
            .status(StatusCode::OK)
            .body(Full::new(Bytes::from(body.into_owned())))
    };
    response.unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
}

fn upgrade(state: Arc<State>, peer: String, slot: Arc<Slot>, mut req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let is_upgrade = req.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
        return with_headers(text(StatusCode::BAD_REQUEST, "this is a WebSocket endpoint\n"));
    };
    // Browsers send Origin with every WebSocket handshake; a page from anywhere else must
    // not drive the relay from a LAN user's browser. Native clients send none.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !origin.to_str().is_ok_and(|o| same_origin(o, host)) {
            debug!("refusing a signaling connection from {peer}: foreign Origin {origin:?}");
            return with_headers(text(StatusCode::FORBIDDEN, "foreign origin\n"));
        }
        // Without TLS, Host is whatever name the browser used, and a name an attacker
        // controls can point at the box (DNS rebinding): its page then has the same origin
        // as the box. With TLS the certificate refuses that name; without it, only the
        // box's own names and addresses count.
        if state.fingerprint.is_none() && !own_host(&state.config, host) {
            debug!("refusing a signaling connection from {peer}: Host {host:?} is not one of the box's names");
            return with_headers(text(StatusCode::FORBIDDEN, "foreign host\n"));
        }
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    let config = hub.websocket_config();
    state.tasks.spawn(async move {
        // Held for the life of the WebSocket: it is what the connection limits count.
        let slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = Metered::new(TokioIo::new(upgraded), hub.budget().clone())
                    .with_address(slot.receiving(), hub.receive_cap_per_address());
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                crate::relay::serve_websocket(hub, ws, peer, shutdown).await;
            }
            Err(e) => debug!("WebSocket upgrade from {peer} failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
}

/// Whether `origin` (`https://keksbox.local:8443`) names the host and port the request was
/// sent to (its Host header); a port left out is the scheme's default on both sides.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return false,
    };
    let (Ok(origin), Ok(host)) = (
        authority.parse::<http::uri::Authority>(),
        host.parse::<http::uri::Authority>(),
    ) else {
        return false;
    };
    origin.host().eq_ignore_ascii_case(host.host())
        && origin.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
}

/// Whether `host` (a Host header) names this box: an IP address, `localhost`, the mDNS name,
/// the system host name (as `NAME.local`, and as it is when qualified), or a name in
/// `tls.extra_names`: the names the generated certificate covers, less the addresses, which
/// are accepted whatever they are (no page can get an IP literal as its origin by DNS).
pub fn own_host(config: &crate::config::Config, host: &str) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority.host();
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let Ok(mdns_host) = config.mdns.host() else {
        return false;
    };
    crate::tls::CertNames::required(
        &mdns_host,
        crate::tls::system_hostname().as_deref(),
        &[],
        &config.tls.extra_names,
    )
    .is_ok_and(|names| names.contains(name))
}

fn with_headers(mut response: Response<Body>) -> Response<Body> {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(self), microphone=(self), display-capture=(self)",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    plain(status, "text/plain; charset=utf-8", body.to_owned())
}

fn html(status: StatusCode, body: &str) -> Response<Body> {
    plain(status, "text/html; charset=utf-8", body.to_owned())
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut r = plain(StatusCode::OK, "application/json", value.to_string());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = text(StatusCode::FOUND, "moved\n");
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "bad room name\n"),
    }
}

const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>keksbox</title></head>
<body><main><h1>keksbox</h1>
<p>The relay is running, but this build of keksbox does not contain the web client.</p>
<p>Build it with <code>make web</code> (or <code>npm --prefix web ci &amp;&amp; npm --prefix web run build</code>)
and rebuild keksbox, or start keksbox with <code>--web-dir web/dist</code>.</p>
</main></body></html>
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_table() {
        for (origin, host, same) in [
            ("https://keksbox.local", "keksbox.local", true),
            ("https://KeksBox.local", "keksbox.local:443", true),
            ("https://keksbox.local:8443", "keksbox.local:8443", true),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true),
            ("https://[::1]:8443", "[::1]:8443", true),
            ("https://evil.example", "keksbox.local", false),
            ("https://keksbox.local:8443", "keksbox.local", false),
            ("https://keksbox.local.evil.example", "keksbox.local", false),
            ("null", "keksbox.local", false),
            ("file://", "keksbox.local", false),
            ("https://keksbox.local", "", false),
        ] {
            assert_eq!(same_origin(origin, host), same, "{origin} vs {host}");
        }
    }

    #[test]
    fn own_host_table() {
        let mut config = crate::config::Config::default();
        config.mdns.host_name = "room2".into();
        config.tls.extra_names = vec!["meet.example.org".into()];
        for (host, own) in [
            ("room2.local", true),
            ("ROOM2.local:8443", true),
            ("localhost:8080", true),
            ("127.0.0.1:8080", true),
            ("192.168.1.20", true),
            ("[::1]:8443", true),
            ("[fe80::1]", true),
            ("meet.example.org", true),
            ("other-box.local", false),
            ("evil.example:8080", false),
            ("room2.local.evil.example", false),
            ("127.0.0.1.evil.example", false),
            ("", false),
            ("bad host", false),
        ] {
            assert_eq!(own_host(&config, host), own, "{host}");
        }
    }
}
