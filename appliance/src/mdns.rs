//! mDNS / DNS-SD: how browsers and native clients find the box without knowing its address.
//!
//! [`Announcer::start`] registers, with the `mdns-sd` daemon (its own thread, its own
//! sockets):
//! - an A/AAAA record for the host name (`keksbox.local` by default), answered for every
//!   address of the interfaces the relay listens on, followed as addresses come and go;
//! - `_https._tcp` (or `_http._tcp` without TLS) named after `mdns.instance_name`, so service
//!   browsers list the box as "Meeting room 2";
//! - `_keksmeet._tcp`, whose TXT record carries what a native client needs to connect and pin
//!   the certificate: `proto` (the keks-meet protocol version), `path` (the signaling
//!   WebSocket path), `tls` (`1` or `0`) and `fp` (`sha-256 AB:CD:...`, with TLS only).
//!
//! [`Announcer::stop`] sends goodbyes (TTL 0) so caches forget the box at once.
//! [`discover`] is the other side, used by `keksbox discover` and the namespace test.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, HostnameResolutionEvent, IfKind, ServiceDaemon, ServiceEvent, ServiceInfo, TxtProperty};
use serde::{Deserialize, Serialize};

use keks_proto::advert::{Fingerprint, ServiceTxt};

pub use keks_proto::advert::KEKSMEET_SERVICE;

/// The `[mdns]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MdnsConfig {
    /// Announce the box on the LAN.
    pub enabled: bool,
    /// The host name to announce; `.local` is appended when missing.
    pub host_name: String,
    /// The service instance name shown by service browsers, e.g. "Meeting room 2".
    pub instance_name: String,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host_name: "keksbox.local".to_owned(),
            instance_name: "keksbox".to_owned(),
        }
    }
}

impl MdnsConfig {
    /// The host name as it goes into the certificate and the URL: `keksbox.local`.
    pub fn host(&self) -> Result<String, MdnsError> {
        host_name(&self.host_name)
    }
}

/// Why the box cannot be announced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// `mdns.host_name` is not a single DNS label under `.local`.
    #[error("mdns.host_name {name:?} is not usable: {reason} (use something like \"keksbox\" or \"room2.local\")")]
    BadHostName {
        /// The configured value.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// The mDNS daemon refused (no multicast-capable interface, a bad instance name...).
    #[error("mDNS: {0}")]
    Daemon(#[from] mdns_sd::Error),
}

/// What is announced besides the names.
#[derive(Debug, Clone)]
pub struct Advert {
    /// The address the relay listens on: its port is announced, and its IP selects the
    /// interfaces (an unspecified address means all of them).
    pub listen: SocketAddr,
    /// Whether that port speaks TLS.
    pub tls: bool,
    /// The certificate fingerprint, when TLS is on.
    pub fingerprint: Option<Fingerprint>,
}

/// The running announcement; [`Announcer::stop`] withdraws it.
pub struct Announcer {
    daemon: ServiceDaemon,
    /// The full service names registered, for the goodbyes at [`Announcer::stop`].
    registered: Vec<String>,
}

impl fmt::Debug for Announcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announcer")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl Announcer {
    /// Starts the daemon and registers the services. `Ok(None)` when the relay listens on a
    /// loopback address only: nobody on the LAN could connect, so nothing is announced.
    pub fn start(config: &MdnsConfig, advert: &Advert) -> Result<Option<Self>, MdnsError> {
        let host = config.host()?;
        let listen_ip = advert.listen.ip();
        if listen_ip.is_loopback() {
            log::info!("mDNS: not announcing {host}: the relay listens on {listen_ip} only");
            return Ok(None);
        }
        let daemon = ServiceDaemon::new()?;
        if !listen_ip.is_unspecified() {
            // Announce only on the interface that carries the address the relay listens on.
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Addr(listen_ip))?;
        }
        log_interface_changes(&daemon);

        let port = advert.listen.port();
        let fqdn = format!("{host}.");
        let web_type = if advert.tls { HTTPS_SERVICE } else { "_http._tcp.local." };
        let keksmeet_txt: Vec<TxtProperty> = ServiceTxt::current(advert.tls, advert.fingerprint)
            .to_pairs()
            .into_iter()
            .map(|(key, value)| TxtProperty::from((key, value.as_str())))
            .collect();
        let services = [
            ServiceInfo::new(
                web_type,
                &config.instance_name,
                &fqdn,
                (),
                port,
                vec![TxtProperty::from(("path", "/"))],
            )?,
            ServiceInfo::new(KEKSMEET_SERVICE, &config.instance_name, &fqdn, (), port, keksmeet_txt)?,
        ];
        let mut registered = Vec::new();
        for service in services {
            // Addresses follow the interfaces: added and withdrawn as they come and go.
            let service = service.enable_addr_auto();
            registered.push(service.get_fullname().to_owned());
            daemon.register(service)?;
        }
        log::info!(
            "mDNS: announcing {host} port {port} as {:?} ({web_type} and {KEKSMEET_SERVICE})",
            config.instance_name
        );
        Ok(Some(Self { daemon, registered }))
    }

    /// Sends goodbyes for every service and stops the daemon. Blocks for up to a second or so:
    /// call it from a blocking context (`spawn_blocking`) in async code.
    pub fn stop(self) {
        for name in &self.registered {
            match self.daemon.unregister(name) {
                Ok(done) => {
                    let _ = done.recv_timeout(Duration::from_secs(1));
                }
                Err(e) => log::warn!("mDNS: cannot withdraw {name}: {e}"),
            }
        }
        match self.daemon.shutdown() {
            Ok(done) => {
                let _ = done.recv_timeout(Duration::from_secs(1));
            }
            Err(e) => log::debug!("mDNS: shutdown: {e}"),
        }
        log::info!("mDNS: announcement withdrawn");
    }
}

/// Logs the interface addresses the daemon starts or stops announcing on, from a small
/// thread that ends with the daemon.
fn log_interface_changes(daemon: &ServiceDaemon) {
    let Ok(events) = daemon.monitor() else { return };
    let spawned = std::thread::Builder::new().name("mdns-log".into()).spawn(move || {
        while let Ok(event) = events.recv() {
            match event {
                DaemonEvent::IpAdd(ip) => log::info!("mDNS: announcing on {ip}"),
                DaemonEvent::IpDel(ip) => log::info!("mDNS: {ip} is gone"),
                DaemonEvent::Error(e) => log::warn!("mDNS: {e}"),
                other => log::debug!("mDNS: {other:?}"),
            }
        }
    });
    if let Err(e) = spawned {
        log::debug!("mDNS: no event logging: {e}");
    }
}

/// A keksbox found on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The instance name, e.g. "Meeting room 2".
    pub instance: String,
    /// The host name it announces, e.g. `keksbox.local`.
    pub host: String,
    /// Its addresses.
    pub addresses: BTreeSet<IpAddr>,
    /// The relay's port.
    pub port: u16,
    /// The `proto` TXT value.
    pub protocol: Option<String>,
    /// The `path` TXT value.
    pub path: Option<String>,
    /// Whether the port speaks TLS.
    pub tls: bool,
    /// The `fp` TXT value (`sha-256 AB:CD:...`).
    pub fingerprint: Option<String>,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{:?}: {scheme}://{}:{}/", self.instance, self.host, self.port)?;
        let addrs: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
        write!(f, " addresses {}", addrs.join(", "))?;
        if let Some(p) = &self.protocol {
            write!(f, " protocol {p}")?;
        }
        if let Some(fp) = &self.fingerprint {
            write!(f, " fingerprint {fp}")?;
        }
        Ok(())
    }
}

/// The DNS-SD service type browsers and service lists see (with TLS on).
pub const HTTPS_SERVICE: &str = "_https._tcp.local.";

/// Browses for `service` ([`KEKSMEET_SERVICE`] or [`HTTPS_SERVICE`], say) and returns every
/// instance resolved: it waits up to `timeout` for the first, then a moment longer for others.
pub fn discover(service: &str, timeout: Duration) -> Result<Vec<Found>, MdnsError> {
    let service_type = format!("{}.local.", service.trim_end_matches('.').trim_end_matches(".local"));
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(&service_type)?;
    let mut deadline = Instant::now() + timeout;
    let mut found: Vec<Found> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else { break };
        let ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let txt = |key| service.get_property_val_str(key).map(str::to_owned);
        let fullname = service.get_fullname();
        let item = Found {
            instance: fullname
                .strip_suffix(&format!(".{service_type}"))
                .unwrap_or(fullname)
                .to_owned(),
            host: service.get_hostname().trim_end_matches('.').to_owned(),
            addresses: service.get_addresses().iter().map(|a| a.to_ip_addr()).collect(),
            port: service.get_port(),
            protocol: txt("proto"),
            path: txt("path"),
            tls: txt("tls").as_deref() == Some("1") || service_type == HTTPS_SERVICE,
            fingerprint: txt("fp"),
        };
        if found.is_empty() {
            deadline = deadline.min(Instant::now() + Duration::from_millis(1500));
        }
        found.retain(|f| f.instance != item.instance);
        found.push(item);
    }
    shutdown_quietly(daemon);
    Ok(found)
}

/// Asks for the addresses of a `.local` host name by itself (an A/AAAA query, as a browser
/// typing `https://keksbox.local/` would through the system's resolver).
pub fn resolve_host(host: &str, timeout: Duration) -> Result<BTreeSet<IpAddr>, MdnsError> {
    let daemon = ServiceDaemon::new()?;
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let events = daemon.resolve_hostname(&fqdn, Some(timeout_ms))?;
    let deadline = Instant::now() + timeout;
    let mut addrs = BTreeSet::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(HostnameResolutionEvent::AddressesFound(_, found)) => {
                addrs.extend(found.iter().map(|a| a.to_ip_addr()));
                break;
            }
            Ok(HostnameResolutionEvent::SearchTimeout(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    shutdown_quietly(daemon);
    Ok(addrs)
}

fn shutdown_quietly(daemon: ServiceDaemon) {
    if let Ok(done) = daemon.shutdown() {
        let _ = done.recv_timeout(Duration::from_secs(1));
    }
}

/// `keksbox`, `keksbox.local`, `keksbox.local.` → `keksbox.local`.
fn host_name(name: &str) -> Result<String, MdnsError> {
    let bad = |reason| MdnsError::BadHostName {
        name: name.to_owned(),
        reason,
    };
    let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let label = lower.strip_suffix(".local").unwrap_or(&lower);
    if label.is_empty() {
        return Err(bad("it is empty"));
    }
    if label.contains('.') {
        return Err(bad("mDNS host names are one label followed by .local"));
    }
    crate::dns::check_label(label).map_err(bad)?;
    Ok(format!("{label}.local"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn host_names() {
        for (input, want) in [
            ("keksbox", Some("keksbox.local")),
            ("keksbox.local", Some("keksbox.local")),
            ("Room-2.local.", Some("room-2.local")),
            ("", None),
            ("a.b.local", None),
            ("room 2", None),
            ("-x", None),
        ] {
            assert_eq!(host_name(input).ok().as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn bad_host_name_error_names_the_key() {
        let err = MdnsConfig {
            host_name: "a b".into(),
            ..MdnsConfig::default()
        }
        .host()
        .unwrap_err();
        assert!(err.to_string().contains("mdns.host_name"), "{err}");
    }

    #[test]
    fn loopback_listener_announces_nothing() {
        let advert = Advert {
            listen: "127.0.0.1:8443".parse().unwrap(),
            tls: true,
            fingerprint: None,
        };
        assert!(Announcer::start(&MdnsConfig::default(), &advert).unwrap().is_none());
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = toml::from_str::<MdnsConfig>("hostname = \"x\"").unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
    }
}
