//! STUN and TURN on the appliance, for peers that cannot reach each other (client isolation
//! on guest Wi-Fi, VLANs, `.local` candidates nobody resolves): the box carries the call.
//!
//! The protocol is webrtc-rs's `turn` crate ([`webrtc_turn::server::Server`]); what this
//! module adds is the appliance's policy around it:
//! - [`auth`]: credentials that expire (`expiry:random`, HMAC-SHA1 with a secret in the
//!   state directory), fresh for every `/config.json` request.
//! - [`policy`]: allowed peers (by default the box's own networks; the box itself only on
//!   relay ports), allocation caps per client and in total, a bandwidth cap per allocation,
//!   counters of what was refused.
//! - [`conn`]: wrappers around the server's sockets that apply the policy.
//!
//! # Data flow
//! ```text
//! client ─UDP─► ListenConn (quota / peer checks, 403 486 508) ─► turn Server ─► AuthHandler
//!                                                     Allocate ─► RelayGenerator ─► RelayConn
//! peer ◄─UDP─► RelayConn (peer check, token bucket, expiry) ◄─► turn Server ◄─► client
//! ```
//! One listener per address of the box that `server.bind` covers, so the relayed address an
//! allocation gets is on the interface its client reached: peers on another interface reach
//! it through the box's routing, not through forwarding. The addresses are re-read every
//! [`REREAD_ADDRESSES`] (and at once when a request arrives on an address without a
//! listener): listeners come and go with them, and so do the allowed networks.
//!
//! TURN over TCP ([`tcp`]) listens on the same port, for networks that block UDP; each
//! connection gets a server of its own behind the same policy, and relays over UDP.

pub mod auth;
mod conn;
pub mod policy;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use webrtc_turn::server::Server;
use webrtc_turn::server::config::{ConnConfig, ServerConfig};

pub use auth::{Credentials, Secret};
pub use policy::StatsSnapshot;

use conn::{Current, ListenConn, RelayGenerator, Shared};
use policy::{Policy, Quota, Stats};

/// The realm in TURN's long-term credentials.
pub const REALM: &str = "keksbox";

/// `[turn]`: the STUN and TURN server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    pub enabled: bool,
    pub port: u16,
    pub relay_port_min: u16,
    pub relay_port_max: u16,
    pub allowed_prefixes: Vec<String>,
    pub max_allocations: usize,
    pub max_allocations_per_client: usize,
    pub allocation_bytes_per_sec: u64,
    pub credential_ttl_secs: u64,
}

// These mirror config/default.toml; a test checks that the two agree.
impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            port: 3478,
            relay_port_min: 49152,
            relay_port_max: 49663,
            allowed_prefixes: Vec::new(),
            max_allocations: 256,
            max_allocations_per_client: 48,
            allocation_bytes_per_sec: 8 << 20,
            credential_ttl_secs: 86400,
        }
    }
}

impl TurnConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("turn.relay_port_min", u64::from(self.relay_port_min)),
            ("turn.relay_port_max", u64::from(self.relay_port_max)),
            ("turn.max_allocations", self.max_allocations as u64),
            (
                "turn.max_allocations_per_client",
                self.max_allocations_per_client as u64,
            ),
            ("turn.allocation_bytes_per_sec", self.allocation_bytes_per_sec),
            ("turn.credential_ttl_secs", self.credential_ttl_secs),
        ] {
            anyhow::ensure!(value > 0, "{name} must be greater than 0");
        }
        anyhow::ensure!(
            self.relay_port_min <= self.relay_port_max,
            "turn.relay_port_min ({}) must not exceed turn.relay_port_max ({})",
            self.relay_port_min,
            self.relay_port_max
        );
        anyhow::ensure!(
            !(self.relay_port_min..=self.relay_port_max).contains(&self.port),
            "turn.port ({}) lies in the relay port range",
            self.port
        );
        self.prefixes()?;
        Ok(())
    }

    /// The configured prefixes, parsed; empty means the box's own networks.
    pub fn prefixes(&self) -> anyhow::Result<Vec<IpNet>> {
        self.allowed_prefixes
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .with_context(|| format!("turn.allowed_prefixes: {p:?} is not a prefix like \"192.168.1.0/24\""))
            })
            .collect()
    }
}

/// How often the appliance re-reads the box's addresses (a DHCP renewal, a link that came up
/// after start). A request that arrives on an address TURN does not serve yet asks for a
/// look at once, at most once a second ([`Turn::listener_for`]).
pub const REREAD_ADDRESSES: Duration = Duration::from_secs(10);

/// The running STUN and TURN service.
pub struct Turn {
    core: Arc<Core>,
    /// The task that re-reads the box's addresses ([`Turn::start_for`] only); aborted at
    /// close and drop, as a spawned task outlives its handle.
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// What the service's listeners and its address watcher share.
struct Core {
    config: TurnConfig,
    /// `turn.allowed_prefixes`, parsed; empty means the box's networks, which follow its
    /// addresses.
    prefixes: Vec<IpNet>,
    secret: Secret,
    ttl: Duration,
    shared: Arc<Shared>,
    /// The listeners, one per address, and what they were made from. Held for a few lines,
    /// never across an `.await`: listeners are bound and closed outside it.
    live: Mutex<Live>,
    /// One refresh at a time (the watcher's and a test's), across the binds it awaits.
    refreshing: tokio::sync::Mutex<()>,
    /// Wakes the watcher early: a request arrived on an address without a listener.
    nudge: tokio::sync::Notify,
}

struct Live {
    /// The port of every listener: `turn.port`, or the one port 0 found first.
    port: u16,
    listeners: Vec<Listener>,
    /// The addresses last applied.
    addresses: Addresses,
    /// Addresses whose listener could not be bound, so the failure is logged once.
    failed: Vec<IpAddr>,
}

/// One address's UDP server and TCP accept loop.
struct Listener {
    addr: SocketAddr,
    server: Server,
    /// The TCP accept loop; aborting it ends its connections too.
    tcp: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn close(self) {
        self.tcp.abort();
        let _ = self.server.close().await;
    }
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("listening", &self.listening())
            .finish_non_exhaustive()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Spawned tasks outlive their handles: stop watching and accepting when the service goes.
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
        for listener in &self.core.lock().listeners {
            listener.tcp.abort();
        }
    }
}

/// What to listen on and whom to relay to: found from the interfaces, or given by a test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// One listener each (the box's addresses that `server.bind` covers).
    pub listen: Vec<IpAddr>,
    /// The box's own addresses (peers there only on relay ports).
    pub own: Vec<IpAddr>,
    /// Where peers may be when `turn.allowed_prefixes` is empty.
    pub networks: Vec<IpNet>,
}

impl Addresses {
    /// From the interfaces of this machine. With `server.bind` on one address, TURN listens
    /// there only; on a loopback address (a developer's box) loopback peers are allowed too,
    /// else only the LAN's networks.
    pub fn probe(bind: IpAddr) -> Self {
        let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
        let mut own = Vec::new();
        let mut networks = Vec::new();
        for i in &interfaces {
            let ip = i.ip();
            if matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                // Link-local IPv6 needs a zone in a URL; browsers use the v4 or global ones.
                continue;
            }
            own.push(ip);
            let net = match &i.addr {
                if_addrs::IfAddr::V4(a) => IpNet::with_netmask(IpAddr::V4(a.ip), IpAddr::V4(a.netmask)),
                if_addrs::IfAddr::V6(a) => IpNet::with_netmask(IpAddr::V6(a.ip), IpAddr::V6(a.netmask)),
            };
            match net {
                Ok(net) if !ip.is_loopback() || bind.is_loopback() => networks.push(net.trunc()),
                _ => {}
            }
        }
        let listen = if bind.is_unspecified() {
            own.iter()
                .copied()
                .filter(|ip| ip.is_ipv4() == bind.is_ipv4() || bind.is_ipv6())
                .collect()
        } else {
            vec![bind]
        };
        // Sorted and without repeats, so two probes of the same interfaces compare equal.
        let mut addresses = Addresses { listen, own, networks };
        for list in [&mut addresses.listen, &mut addresses.own] {
            list.sort();
            list.dedup();
        }
        addresses.networks.sort();
        addresses.networks.dedup();
        addresses
    }
}

impl Turn {
    /// Starts the service for the appliance: the secret from `state_dir`, the addresses from
    /// the interfaces, re-read every [`REREAD_ADDRESSES`] so listeners and allowed networks
    /// follow the box's addresses.
    pub async fn start_for(config: &TurnConfig, bind: IpAddr, state_dir: &Path) -> anyhow::Result<Turn> {
        let secret = Secret::load_or_create(state_dir)
            .with_context(|| format!("cannot keep the TURN secret in {}", state_dir.display()))?;
        let addresses = Addresses::probe(bind);
        if bind.is_unspecified() && addresses.listen.iter().all(IpAddr::is_loopback) {
            log::info!("STUN/TURN: no LAN address yet, so only loopback is served until one comes");
        }
        let mut turn = Turn::start(config, &addresses, secret).await?;
        turn.watcher = Some(tokio::spawn(watch(Arc::downgrade(&turn.core), bind)));
        Ok(turn)
    }

    /// Starts one listener per address of `addresses.listen` on `config.port` (0: a free
    /// port, the same on every address). The addresses stay as given unless
    /// [`refresh`](Self::refresh) is called.
    pub async fn start(config: &TurnConfig, addresses: &Addresses, secret: Secret) -> anyhow::Result<Turn> {
        config.validate()?;
        let prefixes = config.prefixes()?;
        let shared = Arc::new(Shared {
            policy: std::sync::RwLock::new(policy_for(config, &prefixes, addresses)),
            quota: Quota::new(config.max_allocations, config.max_allocations_per_client),
            stats: Arc::new(Stats::default()),
            relay_ports: (config.relay_port_min, config.relay_port_max),
            bytes_per_sec: config.allocation_bytes_per_sec,
        });
        let core = Arc::new(Core {
            config: config.clone(),
            prefixes,
            secret,
            ttl: Duration::from_secs(config.credential_ttl_secs),
            shared,
            live: Mutex::new(Live {
                port: config.port,
                listeners: Vec::new(),
                addresses: addresses.clone(),
                failed: Vec::new(),
            }),
            refreshing: tokio::sync::Mutex::new(()),
            nudge: tokio::sync::Notify::new(),
        });
        // Closed if a later address fails: nothing half-started stays behind.
        let turn = Turn { core, watcher: None };
        let mut granted = usize::MAX;
        for &ip in &addresses.listen {
            let (listener, buffer) = turn.core.listen_on(ip).await?;
            granted = granted.min(buffer);
            turn.core.lock().listeners.push(listener);
        }
        if granted < 2 * conn::RECV_BUFFER {
            log::warn!(
                "STUN/TURN: UDP receive buffers are capped at {} KiB (net.core.rmem_max); bursts through \
                 the relay will be dropped: set net.core.rmem_max = {} (the image does, in \
                 /etc/sysctl.d/60-keksbox.conf)",
                granted / 2048,
                conn::RECV_BUFFER
            );
        }
        log::info!(
            "STUN/TURN on UDP and TCP {} (relaying to {}; relay ports {}-{})",
            join(&turn.listening()),
            join(turn.core.shared.policy().allowed()),
            config.relay_port_min,
            config.relay_port_max
        );
        Ok(turn)
    }

    /// Follows the box's addresses: listeners on new addresses, none on vanished ones (their
    /// allocations end), and with `turn.allowed_prefixes` empty, the allowed networks.
    /// [`start_for`](Self::start_for)'s watcher calls it; tests call it with addresses of
    /// their own. An address that cannot be listened on is logged and tried again next time.
    pub async fn refresh(&self, addresses: &Addresses) {
        self.core.refresh(addresses).await;
    }

    /// The addresses listened on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.core.lock().listeners.iter().map(|l| l.addr).collect()
    }

    /// The listener for a client that reached the box at `local`, if there is one. When there
    /// is none, the watcher looks at the box's addresses at once: `local` may be new.
    pub fn listener_for(&self, local: IpAddr) -> Option<SocketAddr> {
        let local = local.to_canonical();
        let found = self.listening().into_iter().find(|a| a.ip() == local);
        if found.is_none() {
            self.core.nudge.notify_one();
        }
        found
    }

    /// The prefixes peers may be in now.
    pub fn allowed(&self) -> Vec<IpNet> {
        self.core.shared.policy().allowed().to_vec()
    }

    /// A fresh credential.
    pub fn credentials(&self) -> std::io::Result<Credentials> {
        self.core.secret.issue(SystemTime::now(), self.core.ttl)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.core.shared.stats.snapshot(self.core.shared.quota.total())
    }

    /// Stops every listener and ends every allocation.
    pub async fn close(&self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
        let listeners = std::mem::take(&mut self.core.lock().listeners);
        for listener in listeners {
            listener.close().await;
        }
        let s = self.stats();
        log::info!(
            "TURN: {} allocations, {} bytes relayed; refused: {} over the per-client cap, {} over the total cap, \
             {} toward peers outside the allowed prefixes, {} with bad credentials; {} datagrams over the \
             bandwidth cap; {} ended by expiry",
            s.allocations,
            s.relayed_bytes,
            s.refused_client_quota,
            s.refused_total_quota,
            s.refused_peer,
            s.refused_credentials,
            s.dropped_bandwidth,
            s.expired
        );
    }
}

impl Core {
    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds UDP and TCP on `ip` at the service's port and starts the server there; returns
    /// the listener and the UDP receive buffer the kernel granted.
    async fn listen_on(&self, ip: IpAddr) -> anyhow::Result<(Listener, usize)> {
        let port = self.lock().port;
        let (socket, tcp) = bind_pair(SocketAddr::new(ip, port)).await?;
        let buffer = conn::enlarge_recv_buffer(&socket);
        let addr = socket.local_addr()?;
        {
            // Port 0 (tests): every later listener takes the port the first one found.
            let mut live = self.lock();
            if live.port == 0 {
                live.port = addr.port();
            }
        }
        let server = server_on(Arc::new(socket), ip, &self.shared, &self.secret).await?;
        let (shared, secret) = (self.shared.clone(), self.secret.clone());
        let tcp = tokio::spawn(tcp::accept_loop(tcp, self.config.max_allocations, move |conn| {
            let (shared, secret) = (shared.clone(), secret.clone());
            async move { server_on(conn, ip, &shared, &secret).await }
        }));
        Ok((Listener { addr, server, tcp }, buffer))
    }

    async fn refresh(&self, addresses: &Addresses) {
        let _one = self.refreshing.lock().await;
        let policy = policy_for(&self.config, &self.prefixes, addresses);
        let allowed_changed = {
            let mut current = self.shared.policy.write().unwrap_or_else(|e| e.into_inner());
            let changed = current.allowed() != policy.allowed();
            *current = policy;
            changed
        };
        let (gone, missing) = {
            let mut live = self.lock();
            live.addresses = addresses.clone();
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut live.listeners)
                .into_iter()
                .partition(|l| addresses.listen.contains(&l.addr.ip()));
            live.listeners = kept;
            live.failed.retain(|ip| addresses.listen.contains(ip));
            let missing: Vec<IpAddr> = addresses
                .listen
                .iter()
                .copied()
                .filter(|ip| !live.listeners.iter().any(|l| l.addr.ip() == *ip))
                .collect();
            (gone, missing)
        };
        for listener in gone {
            log::info!(
                "STUN/TURN: {} is gone from the box; no longer listening there",
                listener.addr
            );
            listener.close().await;
        }
        for ip in missing {
            match self.listen_on(ip).await {
                Ok((listener, _)) => {
                    log::info!(
                        "STUN/TURN: the box has a new address: now also on UDP and TCP {}",
                        listener.addr
                    );
                    let mut live = self.lock();
                    live.failed.retain(|f| *f != ip);
                    live.listeners.push(listener);
                }
                Err(e) => {
                    let mut live = self.lock();
                    if !live.failed.contains(&ip) {
                        live.failed.push(ip);
                        log::warn!(
                            "STUN/TURN: not on the new address {ip}: {e:#}; trying again when the addresses change"
                        );
                    }
                }
            }
        }
        if allowed_changed {
            log::info!("STUN/TURN: now relaying to {}", join(self.shared.policy().allowed()));
        }
    }
}

/// Re-reads the box's addresses every [`REREAD_ADDRESSES`], or at once when nudged (at most
/// once a second), and refreshes the service when they changed. Ends with the service.
async fn watch(core: std::sync::Weak<Core>, bind: IpAddr) {
    let mut tick = tokio::time::interval(REREAD_ADDRESSES);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // The first tick is now: start has just read them.
    loop {
        {
            let Some(core) = core.upgrade() else { return };
            tokio::select! {
                _ = tick.tick() => {}
                () = core.nudge.notified() => {}
            }
            let addresses = Addresses::probe(bind);
            if core.lock().addresses != addresses {
                core.refresh(&addresses).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The policy for `addresses`: `prefixes` when configured, else the box's networks.
fn policy_for(config: &TurnConfig, prefixes: &[IpNet], addresses: &Addresses) -> Policy {
    let allowed = if prefixes.is_empty() {
        addresses.networks.clone()
    } else {
        prefixes.to_vec()
    };
    Policy::new(
        allowed,
        addresses.own.clone(),
        config.relay_port_min..=config.relay_port_max,
    )
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The UDP socket and TCP listener of one address, on the same port. Port 0 asks for any
/// port free for both: a few tries, as a free UDP port may be taken for TCP.
async fn bind_pair(addr: SocketAddr) -> anyhow::Result<(UdpSocket, tokio::net::TcpListener)> {
    let hint = "(set turn.port, or turn.enabled = false)";
    let tries = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the TURN port {addr} (UDP): {e} {hint}"))?;
        let local = udp.local_addr()?;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(anyhow::anyhow!("cannot bind the TURN port {local} (TCP): {e} {hint}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot bind the TURN port {addr} {hint}")))
}

/// A TURN server (the crate's) on `inner`, a UDP socket or one TCP connection, with the
/// appliance's policy around it; allocations relay from `ip`.
async fn server_on(
    inner: Arc<dyn webrtc_util::Conn + Send + Sync>,
    ip: IpAddr,
    shared: &Arc<Shared>,
    secret: &Secret,
) -> anyhow::Result<Server> {
    let current = Arc::new(Current::default());
    let last_expiry = Arc::new(Mutex::new(None));
    let local = inner.local_addr()?;
    Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: Arc::new(ListenConn {
                inner,
                shared: shared.clone(),
                current: current.clone(),
            }),
            relay_addr_generator: Box::new(RelayGenerator {
                shared: shared.clone(),
                ip,
                current,
                last_expiry: last_expiry.clone(),
            }),
        }],
        realm: REALM.to_owned(),
        auth_handler: Arc::new(auth::AuthHandler {
            secret: secret.clone(),
            stats: shared.stats.clone(),
            last_expiry,
        }),
        channel_bind_timeout: Duration::ZERO,
        alloc_close_notify: None,
    })
    .await
    .with_context(|| format!("cannot start the TURN server on {local}"))
}

/// The URL of `addr` for `scheme` (`stun` or `turn`), brackets around IPv6.
pub fn url(scheme: &str, addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{scheme}:{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("{scheme}:[{ip}]:{}", addr.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_turn_configs_are_refused() {
        for (cfg, word) in [
            (
                TurnConfig {
                    relay_port_min: 0,
                    ..Default::default()
                },
                "relay_port_min",
            ),
            (
                TurnConfig {
                    relay_port_min: 50000,
                    relay_port_max: 49999,
                    ..Default::default()
                },
                "exceed",
            ),
            (
                TurnConfig {
                    port: 49200,
                    ..Default::default()
                },
                "relay port range",
            ),
            (
                TurnConfig {
                    max_allocations: 0,
                    ..Default::default()
                },
                "max_allocations",
            ),
            (
                TurnConfig {
                    allowed_prefixes: vec!["10.0.0.0/33".into()],
                    ..Default::default()
                },
                "prefix",
            ),
            (
                TurnConfig {
                    allowed_prefixes: vec!["lan".into()],
                    ..Default::default()
                },
                "prefix",
            ),
        ] {
            let err = format!("{:#}", cfg.validate().expect_err(word));
            assert!(err.contains(word), "{err} should say {word}");
        }
        assert!(TurnConfig::default().validate().is_ok());
    }

    #[test]
    fn urls() {
        assert_eq!(
            url("turn", "10.0.0.1:3478".parse().unwrap_or_else(|_| unreachable!())),
            "turn:10.0.0.1:3478"
        );
        assert_eq!(
            url("stun", "[fd00::1]:3478".parse().unwrap_or_else(|_| unreachable!())),
            "stun:[fd00::1]:3478"
        );
    }
}
