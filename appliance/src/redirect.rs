//! The plain-HTTP listener that sends every request to the HTTPS port.
//!
//! A person types `keksbox.local` and the browser tries `http://` first; this answers with a
//! `308 Permanent Redirect` to the same path on HTTPS. The host in that redirect is the one the
//! request named only when it is one of the box's own names (those its certificate covers);
//! anything else goes to the configured name, so the box never sends a browser to a host an
//! attacker put in the Host header. Nothing else is served here: camera and microphone need
//! the secure context anyway.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admission::Admission;

/// Connections the redirect listener holds at once, and from one address: a redirect is one
/// small request. [`crate::admission::RESERVED_FILES`] leaves room for these.
pub const MAX_CONNECTIONS: usize = 64;
/// See [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;

/// Where redirects point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The configured host name (`keksbox.local`), used unless the request named a known one.
    pub name: String,
    /// The box's own names, lower case: a Host header naming one of these is kept.
    pub known: Vec<String>,
    /// The HTTPS port.
    pub https_port: u16,
}

/// Serves redirects to [`Target`] until `stop` turns true.
pub async fn serve_redirects(listener: TcpListener, target: Target, mut stop: watch::Receiver<bool>) {
    let target = Arc::new(target);
    let admission = Admission::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("redirect listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // A change means stop; an error means the sender is gone: stop too.
            _ = stop.changed() => return,
        };
        let Ok(slot) = admission.admit(peer.ip()) else {
            log::debug!("redirect listener: refusing {peer}: too many connections");
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let target = target.clone();
                async move { Ok::<_, std::convert::Infallible>(redirect(&req, &target)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(16 << 10)
                .serve_connection(TokioIo::new(stream), service);
            // Bounded: a redirect is one small request; nobody keeps this connection for long.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), conn).await {
                log::debug!("redirect connection from {peer}: {e}");
            }
        });
    }
}

/// The response to one request: a redirect to the same path on HTTPS.
pub fn redirect<B>(req: &Request<B>, target: &Target) -> Response<Full<Bytes>> {
    let asked = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| {
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        });
    let host = match asked {
        Some(asked) if target.known.contains(&asked) => match asked.contains(':') {
            true => format!("[{asked}]"),
            false => asked,
        },
        _ => target.name.clone(),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match target.https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return plain(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    let mut response = plain(StatusCode::PERMANENT_REDIRECT, "this box speaks HTTPS\n");
    response.headers_mut().insert(header::LOCATION, location);
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn location(host: Option<&str>, uri: &str, port: u16) -> (StatusCode, Option<String>) {
        let mut req = Request::builder().uri(uri);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        let target = Target {
            name: "keksbox.local".into(),
            known: vec![
                "keksbox.local".into(),
                "localhost".into(),
                "pi4.local".into(),
                "::1".into(),
            ],
            https_port: port,
        };
        let resp = redirect(&req.body(()).unwrap(), &target);
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), loc)
    }

    #[test]
    fn redirects_keep_known_hosts_and_the_path_and_swap_the_port() {
        let cases = [
            (
                Some("keksbox.local"),
                "/room?x=1",
                443,
                "https://keksbox.local/room?x=1",
            ),
            (Some("Pi4.Local:8080"), "/", 8443, "https://pi4.local:8443/"),
            (Some("[::1]:8080"), "/version", 8443, "https://[::1]:8443/version"),
            (None, "/", 443, "https://keksbox.local/"),
        ];
        for (host, uri, port, want) in cases {
            assert_eq!(
                location(host, uri, port),
                (StatusCode::PERMANENT_REDIRECT, Some(want.to_owned())),
                "{host:?}"
            );
        }
    }

    #[test]
    fn a_foreign_or_garbage_host_goes_to_the_configured_name() {
        for host in ["evil.example", "evil.example:80", "a b/c", "10.9.9.9"] {
            assert_eq!(
                location(Some(host), "/x", 443).1.as_deref(),
                Some("https://keksbox.local/x"),
                "{host}"
            );
        }
    }
}
