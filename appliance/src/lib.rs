//! keksbox: a keks-meet relay appliance for the LAN.
//!
//! # Layout
//! - [`config`]: the typed configuration; its defaults are the embedded `config/default.toml`.
//! - [`http`]: routes: the embedded web client ([`assets`]), `/config.json`, `/version`, and
//!   the WebSocket upgrade at `/signaling`.
//! - [`relay`]: one task per signaling connection around a shared [`relay::Hub`], which wraps
//!   the protocol's room registry ([`keks_proto::room`]) and each client's bounded send queue.
//!
//! # Data flow
//! ```text
//! TcpListener -> admission (per address, in all) -> hyper (one task per connection) -> http::route
//!     /signaling -> upgrade -> relay::serve_websocket (one task per client)
//!         text frame -> ServerboundPacket -> Hub: Registry -> outputs -> queues -> sockets
//! ```
//! [`serve_plain_http`] serves until its shutdown future completes, then closes every
//! WebSocket with "going away" and waits briefly for the connection tasks.
//!
//! # Bounds
//! Every connection takes a slot from [`admission`] at accept (`limits.max_connections`,
//! fitted to the open-file limit, and `limits.max_connections_per_address`); what clients
//! send and what waits for them draws from one [`budget`] (`limits.buffered_bytes`).
//!
//! # The appliance around it
//! - [`platform`]: listeners (bound or from systemd socket activation), the HTTP→HTTPS
//!   [`redirect`], journald logging, sd-notify readiness and watchdog;
//!   [`platform::run_appliance`] is what the binary calls, [`serve_plain_http`] is what the
//!   relay tests call.
//! - [`tls`]: the generated (or configured) certificate, its fingerprint, the rustls acceptor;
//!   [`serve_listener`] runs the TLS handshake in each connection's task before HTTP.
//! - [`mdns`]: announces `keksbox.local`, `_https._tcp` and `_keksmeet._tcp`.
//! - [`turn`]: STUN and TURN, so the box carries calls between peers that cannot reach each
//!   other; `/config.json` hands out its address and fresh credentials.

pub mod admission;
pub mod assets;
pub mod budget;
pub mod config;
pub mod dns;
pub mod http;
pub mod mdns;
pub mod platform;
mod redirect;
pub mod relay;
pub mod summon;
pub mod tls;
pub mod turn;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, info, warn};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util_lite::TaskSet;

use crate::admission::{Admission, Refused, Slot};
use crate::assets::Assets;
use crate::config::Config;
use crate::relay::Hub;

/// What `init` and `/version` report.
pub const VERSION: &str = concat!("keksbox ", env!("CARGO_PKG_VERSION"));

/// State shared by every connection.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub assets: Assets,
    /// Slots for TCP connections, in all and per address; each connection task holds one.
    pub admission: Arc<Admission>,
    /// Flips to `true` once at shutdown; every connection task watches it.
    pub shutdown: watch::Receiver<bool>,
    /// Connection tasks, so shutdown can wait for their close frames.
    pub tasks: TaskSet,
    /// The TLS certificate's fingerprint, shown on the start page; `None` without TLS.
    pub fingerprint: Option<tls::Fingerprint>,
    /// The STUN/TURN service, whose address and credentials `/config.json` hands out.
    pub turn: Option<Arc<turn::Turn>>,
}

/// The local address a connection was accepted on (a request extension): `/config.json`
/// names the TURN server by the address the client reached, not by a `.local` name.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// Serves plain HTTP and signaling on `listener` until `shutdown` completes.
pub async fn serve_plain_http(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_listener(config, listener, None, None, None, shutdown).await
}

/// Serves the web client and signaling on `listener` until `shutdown` completes, with a TLS
/// handshake on every connection when `tls` is given, and systemd watchdog pings that prove
/// the hub alive ([`platform::watchdog`]) when `watchdog` gives the interval.
pub async fn serve_listener(
    config: Config,
    listener: TcpListener,
    tls: Option<tls::Acceptor>,
    watchdog: Option<Duration>,
    turn: Option<Arc<turn::Turn>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_connections = admission::fit_to_open_file_limit(config.limits.max_connections);
    let state = Arc::new(State {
        hub: Arc::new(Hub::new(config.limits.clone(), VERSION.to_owned())),
        assets: Assets::new(config.server.web_dir.clone()),
        admission: Admission::new(max_connections, config.limits.max_connections_per_address),
        shutdown: stop_rx,
        tasks: TaskSet::default(),
        fingerprint: tls.as_ref().map(tls::Acceptor::fingerprint),
        turn,
        config,
    });
    if !state.assets.is_built() {
        warn!("the web client is not built: pages say how to build it (make web)");
    }
    let watchdog =
        watchdog.map(|interval| tokio::spawn(platform::watchdog(state.hub.clone(), interval, platform::watchdog_ping)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match state.admission.admit(peer.ip()) {
                    Ok(slot) => spawn_connection(&state, stream, peer, slot, tls.as_ref()),
                    // Dropping the stream closes it: no task, no buffers, the handle back at once.
                    Err(refused) => refuse(&state, peer, refused),
                },
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    info!(
        "shutting down: closing {} signaling connections",
        state.hub.stats().clients
    );
    let _ = stop_tx.send(true);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    drop(listener);
    state.tasks.wait(Duration::from_secs(5)).await;
    Ok(())
}

/// Logs a refused connection, at most once a second per kind so a flood does not flood the
/// journal too.
fn refuse(state: &State, peer: SocketAddr, refused: Refused) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (last, message) = match refused {
        Refused::Full => (
            &LAST[0],
            format!("limits.max_connections ({})", state.admission.max_total()),
        ),
        Refused::AddressFull => (
            &LAST[1],
            format!(
                "limits.max_connections_per_address ({}) for {}",
                state.config.limits.max_connections_per_address,
                peer.ip()
            ),
        ),
    };
    if last.swap(second, Ordering::Relaxed) != second {
        warn!("refusing connections: {message} reached");
    } else {
        debug!("refusing a connection from {peer}: {message} reached");
    }
}

fn spawn_connection(
    state: &Arc<State>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    tls: Option<&tls::Acceptor>,
) {
    let _ = stream.set_nodelay(true);
    admission::bound_socket_buffers(&stream);
    let local = stream.local_addr().ok();
    let state2 = state.clone();
    let tls = tls.cloned();
    state.tasks.spawn(async move {
        // The handshake runs here, in the connection's own task, so a slow client never
        // holds up the accept loop; the acceptor bounds how long it may take.
        match tls {
            None => serve_http_connection(state2, stream, peer, local, slot).await,
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(mut stream) => {
                    stream.get_mut().1.set_buffer_limit(Some(admission::TLS_BUFFER));
                    serve_http_connection(state2, stream, peer, local, slot).await
                }
                Err(e) => debug!("connection from {peer}: {e}"),
            },
        }
    });
}

async fn serve_http_connection<IO>(
    state: Arc<State>,
    io: IO,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    slot: Arc<Slot>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state2 = state.clone();
    let mut stop = state.shutdown.clone();
    let timeout = state.config.limits.handshake_timeout();
    {
        let peer_s = peer.to_string();
        // The slot travels with each request: an upgraded WebSocket keeps it after this
        // HTTP connection task has ended.
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(local) = local {
                req.extensions_mut().insert(LocalAddr(local));
            }
            let state = state2.clone();
            let peer = peer_s.clone();
            let slot = slot.clone();
            async move { Ok::<_, std::convert::Infallible>(http::route(state, peer, slot, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .max_buf_size(64 << 10)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => if let Err(e) = result {
                debug!("HTTP connection from {peer}: {e}");
            },
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        }
    }
}

/// A minimal task tracker: counts live tasks so shutdown can wait for them.
mod tokio_util_lite {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;

    #[derive(Debug, Clone)]
    pub struct TaskSet {
        /// The number of live tasks; `wait` watches it reach zero.
        live: Arc<watch::Sender<usize>>,
    }

    impl Default for TaskSet {
        fn default() -> Self {
            TaskSet {
                live: Arc::new(watch::channel(0).0),
            }
        }
    }

    impl TaskSet {
        pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
            self.live.send_modify(|n| *n += 1);
            let guard = Guard(self.live.clone());
            tokio::spawn(async move {
                let _guard = guard;
                task.await;
            });
        }

        /// Waits until every task ended, or `limit` passed.
        pub async fn wait(&self, limit: Duration) {
            let mut rx = self.live.subscribe();
            let _ = tokio::time::timeout(limit, rx.wait_for(|&n| n == 0)).await;
        }
    }

    /// Decrements the count when a task ends, even by panic.
    struct Guard(Arc<watch::Sender<usize>>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}
