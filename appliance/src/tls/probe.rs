//! What the box is called and where it can be reached: the kernel's host name and the
//! interface addresses, read at start.

use std::fs;
use std::net::IpAddr;

/// The kernel's host name, if it has one worth putting into the certificate.
pub fn system_hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The box's IP addresses that a browser can put in a URL: every interface address except
/// IPv6 link-local ones (they need a zone id, which browsers do not accept).
pub fn local_ip_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            log::warn!("cannot list network interfaces, the certificate covers loopback only: {e}");
            Vec::new()
        }
    };
    ips.retain(|ip| match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(_) => true,
    });
    ips.extend([
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]);
    ips.sort();
    ips.dedup();
    ips
}

/// The loopback addresses, which never change: always in the generated certificate.
pub fn loopback_addresses() -> Vec<IpAddr> {
    vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]
}
