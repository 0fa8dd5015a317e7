//! The appliance around the relay: listeners (bound, or handed over by systemd), TLS, the
//! HTTP→HTTPS redirect, the mDNS announcement, systemd readiness and watchdog, and logging.
//!
//! ```text
//! main: init_logging, Config, Listeners::open ──► platform::run_appliance
//!   run: tls::Identity::load (state dir) ─► Acceptor ─► crate::serve_listener(listener, Some(acceptor))
//!        redirect::serve_redirects(redirect listener)  mdns::Announcer::start / stop
//!        sd_notify READY=1 once listening, STOPPING=1 at the end; WATCHDOG=1 every half
//!        interval from [`watchdog`], which first takes the hub's lock
//! ```
//! Tests bind `127.0.0.1:0` themselves, build [`Listeners`] from those sockets and call
//! [`run_appliance`] in-process with a temporary state directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use log::{info, warn};
use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::mdns::{Advert, Announcer};
use crate::relay::Hub;
use crate::tls::{self, CertNames, Identity, Regenerate};

/// Logs to the journal (with structured fields) when systemd connected stderr to it, to the
/// terminal otherwise. `RUST_LOG` sets the level either way (default: info).
pub fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    if systemd_journal_logger::connected_to_journal() {
        let journal = systemd_journal_logger::JournalLog::new().map(|j| {
            j.with_extra_fields([("KEKSBOX_VERSION", env!("CARGO_PKG_VERSION"))])
                .with_syslog_identifier("keksbox".to_owned())
        });
        match journal.map(|j| log::set_boxed_logger(Box::new(QuietTurn { inner: j, level }))) {
            Ok(Ok(())) => {
                log::set_max_level(level);
                return;
            }
            Ok(Err(e)) => eprintln!("keksbox: cannot install the journal logger ({e}); logging to stderr"),
            Err(e) => eprintln!("keksbox: cannot connect to the journal ({e}); logging to stderr"),
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,turn=warn")).init();
}

/// The journal logger without the `turn` crate's lines below warnings unless `RUST_LOG` asks
/// for debug: it logs "No Permission or Channel exists" at info on every relayed call (a
/// peer's checks arriving before its owner's permission, which is normal), and that noise
/// would fill the size-capped journal of a box.
struct QuietTurn<L> {
    inner: L,
    level: log::LevelFilter,
}

impl<L: log::Log> log::Log for QuietTurn<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let noise = metadata.target().starts_with("turn")
            && metadata.level() > log::Level::Warn
            && self.level < log::LevelFilter::Debug;
        !noise && self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Where generated state (the TLS certificate) lives: `--state-dir`, else systemd's
/// `$STATE_DIRECTORY` (from `StateDirectory=`), else `$XDG_STATE_HOME/keksbox`, else
/// `~/.local/state/keksbox`.
pub fn state_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(dirs) = non_empty("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when the unit names several; ours names one.
        let dirs = dirs.to_string_lossy().into_owned();
        if let Some(first) = dirs.split(':').find(|d| !d.is_empty()) {
            return Ok(PathBuf::from(first));
        }
    }
    if let Some(xdg) = non_empty("XDG_STATE_HOME") {
        return Ok(PathBuf::from(xdg).join("keksbox"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home).join(".local/state/keksbox"));
    }
    anyhow::bail!("no state directory: pass --state-dir DIR (or set STATE_DIRECTORY)")
}

/// The sockets keksbox serves on.
#[derive(Debug)]
pub struct Listeners {
    /// HTTPS (or plain HTTP with TLS off): the web client and signaling.
    pub main: TcpListener,
    /// Plain HTTP that redirects to `main`; only with TLS on.
    pub redirect: Option<TcpListener>,
}

impl Listeners {
    /// The sockets systemd passed (socket activation: the first is the main one, a second the
    /// redirect), or else bound from `server.bind` and `tls.redirect_bind`.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        if let Some(listeners) = Self::from_systemd(config)? {
            return Ok(listeners);
        }
        let main = bind(config.server.bind).await?;
        let redirect = match config.tls.enabled && config.tls.redirect {
            true => Some(bind(config.tls.redirect_bind).await?),
            false => None,
        };
        Ok(Self { main, redirect })
    }

    fn from_systemd(config: &Config) -> anyhow::Result<Option<Self>> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Ok(None);
        }
        let mut take = |i: usize| -> anyhow::Result<Option<TcpListener>> {
            let Some(std) = fds.take_tcp_listener(i).with_context(|| {
                format!("socket {i} passed by systemd is not a TCP listener (check ListenStream= in keksbox.socket)")
            })?
            else {
                return Ok(None);
            };
            std.set_nonblocking(true)
                .context("cannot make the systemd socket non-blocking")?;
            Ok(Some(
                TcpListener::from_std(std).context("cannot use the socket passed by systemd")?,
            ))
        };
        let Some(main) = take(0)? else { return Ok(None) };
        let redirect = take(1)?;
        if redirect.is_some() && !config.tls.enabled {
            warn!("TLS is off: the second socket from systemd (the HTTP redirect) is not used");
        }
        info!(
            "using {} socket(s) passed by systemd",
            1 + usize::from(redirect.is_some())
        );
        Ok(Some(Self {
            main,
            redirect: redirect.filter(|_| config.tls.enabled),
        }))
    }
}

/// Binds `addr`, with an error that says what to do.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| bind_error(addr, e))
}

fn bind_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or set server.bind / --bind to a port above 1024)"
        }
        std::io::ErrorKind::AddrInUse => " (another program uses this port; stop it or choose another with --bind)",
        std::io::ErrorKind::AddrNotAvailable => {
            " (this machine has no such address; use 0.0.0.0 or one of its addresses)"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot bind {addr}: {e}{hint}")
}

/// The names the generated certificate must cover with this configuration on this box.
pub fn required_names(config: &Config) -> anyhow::Result<CertNames> {
    // Loopback never changes; LAN addresses do (DHCP), and would change the fingerprint.
    let ips = match config.tls.include_ip_addresses {
        true => tls::local_ip_addresses(),
        false => tls::probe::loopback_addresses(),
    };
    let mdns_host = config.mdns.host()?;
    Ok(CertNames::required(
        &mdns_host,
        tls::system_hostname().as_deref(),
        &ips,
        &config.tls.extra_names,
    )?)
}

/// Loads (or makes) the certificate the HTTPS listener presents.
pub fn load_identity(config: &Config, state_dir: &Path, regenerate: Regenerate) -> anyhow::Result<Identity> {
    let names = required_names(config)?;
    Ok(Identity::load(&config.tls, state_dir, &names, regenerate)?)
}

/// `keksbox regenerate-cert`: replaces the generated certificate with a new one.
pub fn regenerate_cert(config: &Config, state_dir: &Path) -> anyhow::Result<Identity> {
    anyhow::ensure!(
        config.tls.cert_file.is_none() && config.tls.key_file.is_none(),
        "tls.cert_file / tls.key_file are set: keksbox uses that certificate and does not generate one"
    );
    load_identity(config, state_dir, Regenerate::Always)
}

/// Serves the appliance on `listeners` until `shutdown` completes: TLS (when on) with the
/// certificate from `state_dir` (see [`state_dir`]), the redirect, mDNS, systemd notifications.
pub async fn run_appliance(
    config: Config,
    listeners: Listeners,
    state_dir: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listeners.main.local_addr().context("the listener has no address")?;
    let turn_dir = state_dir.clone();
    let acceptor = if config.tls.enabled {
        let dir = match (&config.tls.cert_file, state_dir) {
            (Some(_), dir) => dir.unwrap_or_default(),
            (None, dir) => self::state_dir(dir)?,
        };
        let identity = load_identity(&config, &dir, Regenerate::IfNamesChanged)?;
        Some(identity.acceptor(config.tls.handshake_timeout())?)
    } else {
        None
    };
    // After TLS: a box that cannot start (a bad certificate) leaves no TURN port behind.
    let turn = start_turn(&config, local, turn_dir).await;
    let fingerprint = acceptor.as_ref().map(tls::Acceptor::fingerprint);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let url = page_url(scheme, local, &config);
    match fingerprint {
        Some(fp) => info!(
            "{} serving {url} (certificate SHA-256 fingerprint {fp})",
            crate::VERSION
        ),
        None => info!("{} serving {url} (plain HTTP: TLS is off)", crate::VERSION),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(redirect) = listeners.redirect {
        let addr = redirect.local_addr().context("the redirect listener has no address")?;
        info!("redirecting http://{addr}/ to HTTPS port {}", local.port());
        let target = crate::redirect::Target {
            name: config.mdns.host()?,
            known: required_names(&config)?.iter().map(str::to_owned).collect(),
            https_port: local.port(),
        };
        tokio::spawn(crate::redirect::serve_redirects(redirect, target, stop_rx.clone()));
    }

    let announcer = if config.mdns.enabled {
        let advert = Advert {
            listen: local,
            tls: acceptor.is_some(),
            fingerprint,
        };
        // Without mDNS the box still works by address: a failure is logged, not fatal.
        match Announcer::start(&config.mdns, &advert) {
            Ok(announcer) => announcer,
            Err(e) => {
                warn!("{e}; the box is reachable by its address only");
                None
            }
        }
    } else {
        None
    };

    notify(&[NotifyState::Ready, NotifyState::Status(&format!("serving {url}"))]);
    let watchdog = sd_notify::watchdog_enabled();
    let result = crate::serve_listener(config, listeners.main, acceptor, watchdog, turn.clone(), async {
        shutdown.await;
        notify(&[NotifyState::Stopping]);
    })
    .await;

    let _ = stop_tx.send(true);
    if let Some(turn) = turn {
        turn.close().await;
    }
    if let Some(announcer) = announcer {
        let _ = tokio::task::spawn_blocking(move || announcer.stop()).await;
    }
    result
}

/// Starts STUN/TURN (issue 9) when `turn.enabled`; a failure (the port taken) is logged and
/// the box serves meetings without it, as peers that reach each other need none.
async fn start_turn(config: &Config, local: SocketAddr, state_dir: Option<PathBuf>) -> Option<Arc<crate::turn::Turn>> {
    if !config.turn.enabled {
        return None;
    }
    let started = match self::state_dir(state_dir) {
        Ok(dir) => crate::turn::Turn::start_for(&config.turn, local.ip(), &dir).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(turn) => Some(Arc::new(turn)),
        Err(e) => {
            log::error!("STUN/TURN is off: {e:#}");
            None
        }
    }
}

/// Pings the systemd watchdog every half `interval` (as sd_watchdog_enabled(3) recommends),
/// each time only after taking the hub's lock: a stalled runtime or a hub lock that is never
/// released stops the pings, and systemd restarts the service.
pub async fn watchdog(hub: Arc<Hub>, interval: Duration, ping: impl Fn()) {
    let mut tick = tokio::time::interval(interval / 2);
    // After a stall, one ping, not a burst of the missed ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.alive();
        ping();
    }
}

/// Sends `WATCHDOG=1`.
pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog]);
}

/// The URL a person opens, for the start-up log.
fn page_url(scheme: &str, local: SocketAddr, config: &Config) -> String {
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match local.port() {
        p if p == default_port => String::new(),
        p => format!(":{p}"),
    };
    let host = if local.ip().is_unspecified() {
        config.mdns.host().unwrap_or_else(|_| "localhost".to_owned())
    } else if local.is_ipv6() {
        format!("[{}]", local.ip())
    } else {
        local.ip().to_string()
    };
    format!("{scheme}://{host}{port}/")
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify systemd: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_turn_crates_info_lines_stay_out_of_the_journal_unless_debugging() {
        use log::Log as _;
        #[derive(Default)]
        struct Seen(std::sync::Mutex<Vec<String>>);
        impl log::Log for Seen {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, r: &log::Record<'_>) {
                self.0.lock().unwrap().push(format!("{} {}", r.target(), r.level()));
            }
            fn flush(&self) {}
        }
        let lines = |level| {
            let quiet = QuietTurn {
                inner: Seen::default(),
                level,
            };
            for (target, l) in [
                ("turn::allocation", log::Level::Info),
                ("turn::server", log::Level::Warn),
                ("keksbox::turn", log::Level::Info),
            ] {
                quiet.log(&log::Record::builder().target(target).level(l).build());
            }
            quiet.inner.0.into_inner().unwrap()
        };
        assert_eq!(
            lines(log::LevelFilter::Info),
            ["turn::server WARN", "keksbox::turn INFO"]
        );
        assert_eq!(lines(log::LevelFilter::Debug).len(), 3);
    }

    #[test]
    fn page_urls() {
        let c = Config::default();
        assert_eq!(
            page_url("https", "127.0.0.1:8443".parse().unwrap(), &c),
            "https://127.0.0.1:8443/"
        );
        assert_eq!(
            page_url("https", "0.0.0.0:443".parse().unwrap(), &c),
            "https://keksbox.local/"
        );
        assert_eq!(page_url("http", "[::1]:80".parse().unwrap(), &c), "http://[::1]/");
    }

    #[test]
    fn the_watchdog_stops_pinging_while_the_hub_lock_is_held() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hub = Arc::new(Hub::new(Config::default().limits, "v".into()));
        let pings = Arc::new(AtomicUsize::new(0));
        let count = || pings.load(Ordering::SeqCst);
        // The watchdog on a runtime of its own, so that blocking it blocks nothing else.
        {
            let (hub, pings) = (hub.clone(), pings.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(watchdog(hub, Duration::from_millis(40), move || {
                    pings.fetch_add(1, Ordering::SeqCst);
                }));
            });
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(count() >= 2, "pings while the hub is free");
        // A wedged hub: its lock held and not given back for 300 ms.
        let guard = hub.lock();
        std::thread::sleep(Duration::from_millis(30));
        let before = count();
        std::thread::sleep(Duration::from_millis(200));
        assert!(count() <= before + 1, "no pings while the lock is stuck");
        drop(guard);
        std::thread::sleep(Duration::from_millis(100));
        assert!(count() >= before + 2, "pings again once it is free");
    }

    #[test]
    fn state_dir_flag_wins() {
        assert_eq!(state_dir(Some("/x".into())).unwrap(), PathBuf::from("/x"));
    }
}
