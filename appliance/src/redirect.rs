//! The plain-HTTP listener that sends every request to the HTTPS port.
//!
//! A person types `keksbox.local` and the browser tries `http://` first; this answers with a
//! `308 Permanent Redirect` to the same host and path on HTTPS. Nothing else is served here:
//! camera and microphone need the secure context anyway.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves redirects to `https://<host>:<https_port>/...` until `stop` turns true.
pub async fn serve(listener: TcpListener, https_port: u16, mut stop: watch::Receiver<bool>) {
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
        // The address the client reached, for a request without a Host header.
        let local = stream.local_addr().ok();
        tokio::spawn(async move {
            let service =
                service_fn(
                    move |req| async move { Ok::<_, std::convert::Infallible>(redirect(&req, local, https_port)) },
                );
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

/// The response to one request: a redirect, or 400 when no host can be worked out.
pub fn redirect<B>(req: &Request<B>, local: Option<SocketAddr>, https_port: u16) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_owned())
        .or_else(|| {
            local.map(|a| match a {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            })
        });
    let Some(host) = host else {
        return plain(StatusCode::BAD_REQUEST, "no Host header\n");
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return plain(StatusCode::BAD_REQUEST, "bad Host header\n");
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
        let resp = redirect(&req.body(()).unwrap(), Some("10.0.0.5:80".parse().unwrap()), port);
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), loc)
    }

    #[test]
    fn redirects_keep_host_and_path_and_swap_the_port() {
        let cases = [
            (
                Some("keksbox.local"),
                "/room?x=1",
                443,
                "https://keksbox.local/room?x=1",
            ),
            (Some("keksbox.local:8080"), "/", 8443, "https://keksbox.local:8443/"),
            (Some("[::1]:8080"), "/version", 8443, "https://[::1]:8443/version"),
            (None, "/", 443, "https://10.0.0.5/"),
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
    fn a_garbage_host_falls_back_to_the_local_address() {
        assert_eq!(
            location(Some("a b/c"), "/", 443).1.as_deref(),
            Some("https://10.0.0.5/")
        );
    }
}
