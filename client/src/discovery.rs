//! Finding keksboxes on the LAN: browse `_keksmeet._tcp` with mDNS and read each box's TXT
//! record ([`ServiceTxt`]), whose fingerprint pins its certificate.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use keks_proto::advert::{KEKSMEET_SERVICE, ServiceTxt};
use mdns_sd::{ServiceDaemon, ServiceEvent};

use crate::server::Server;

/// A box that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The instance name ("Meeting room 2").
    pub instance: String,
    /// The host name it announces (`keksbox.local`).
    pub host: String,
    /// Its addresses.
    pub addresses: BTreeSet<IpAddr>,
    /// The relay's port.
    pub port: u16,
    /// Its TXT record.
    pub txt: ServiceTxt,
}

impl Found {
    /// The server to connect to: by host name for TLS and links, at the first address found
    /// (IPv4 first) since the system resolver may not resolve `.local` names.
    pub fn server(&self) -> Server {
        let addr = self
            .addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| self.addresses.iter().next())
            .copied();
        Server {
            tls: self.txt.tls,
            host: self.host.clone(),
            port: self.port,
            base_path: self
                .txt
                .path
                .strip_suffix(keks_proto::advert::SIGNALING_PATH)
                .unwrap_or("")
                .to_owned(),
            connect_to: addr.map(|a| SocketAddr::new(a, self.port)),
        }
    }
}

/// Why browsing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The mDNS daemon could not start (no multicast-capable interface...).
    #[error("mDNS discovery failed: {0} (give the server with --server or KEKSBOX_SERVER)")]
    Daemon(#[from] mdns_sd::Error),
}

/// Browses for up to `timeout`, returning as soon as the first box has answered and a short
/// moment more has passed for others. Boxes whose TXT record does not parse are skipped
/// with a warning (a client must not connect unpinned to a garbled advert).
pub fn discover(timeout: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(KEKSMEET_SERVICE)?;
    let mut deadline = Instant::now() + timeout;
    let mut found: Vec<Found> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else { break };
        let ServiceEvent::ServiceResolved(info) = event else {
            continue;
        };
        let txt = match ServiceTxt::from_lookup(|k| info.get_property_val_str(k)) {
            Ok(txt) => txt,
            Err(e) => {
                log::warn!("ignoring {}: its TXT record is unusable: {e}", info.get_fullname());
                continue;
            }
        };
        let fullname = info.get_fullname();
        let instance = fullname
            .strip_suffix(&format!(".{KEKSMEET_SERVICE}"))
            .unwrap_or(fullname)
            .to_owned();
        let item = Found {
            instance,
            host: info.get_hostname().trim_end_matches('.').to_owned(),
            addresses: info.get_addresses().iter().map(|a| a.to_ip_addr()).collect(),
            port: info.get_port(),
            txt,
        };
        if !found.iter().any(|f| f.instance == item.instance) {
            found.push(item);
            // Others usually answer within the same moment.
            deadline = deadline.min(Instant::now() + Duration::from_millis(700));
        }
    }
    let _ = daemon.shutdown();
    Ok(found)
}
