//! What the TURN server may relay, and how much: pure decisions, no sockets, time as input.
//!
//! - [`Policy`]: which peers an allocation may reach (the LAN's prefixes; the box's own
//!   addresses only on relay ports, so TURN is no way into other UDP services of the box).
//! - [`Quota`]: allocations per client address and in total; a [`QuotaGuard`] gives its
//!   place back when the allocation's socket goes.
//! - [`TokenBucket`]: the bandwidth cap of one allocation in one direction.
//! - [`Stats`]: what was relayed and what was refused, by reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;

/// Which peers allocations may exchange datagrams with.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed: Vec<IpNet>,
    own: Vec<IpAddr>,
    relay_ports: RangeInclusive<u16>,
}

impl Policy {
    /// `allowed`: the prefixes peers must be in; `own`: the box's addresses, reachable only
    /// on `relay_ports` (relay to relay, when both peers use the box).
    pub fn new(allowed: Vec<IpNet>, own: Vec<IpAddr>, relay_ports: RangeInclusive<u16>) -> Self {
        let own = own.into_iter().map(|ip| ip.to_canonical()).collect();
        Policy {
            allowed,
            own,
            relay_ports,
        }
    }

    /// Whether a permission (CreatePermission, ChannelBind) toward `ip` may be made.
    pub fn permits_peer(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !ip.is_unspecified() && !ip.is_multicast() && self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Whether one datagram may go to (or come from) `peer`.
    pub fn permits_datagram(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.permits_peer(ip) && (!self.own.contains(&ip) || self.relay_ports.contains(&peer.port()))
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }
}

/// Why an allocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The client address holds `max_allocations_per_client` already.
    Client,
    /// The box holds `max_allocations` already.
    Total,
}

/// Live allocations, per client address and in all.
#[derive(Debug)]
pub struct Quota {
    max_total: usize,
    max_per_client: usize,
    /// Live allocations per client address; the sum is the total. Held for a few lines.
    live: Mutex<HashMap<IpAddr, usize>>,
}

impl Quota {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Quota {
            max_total,
            max_per_client,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a new allocation for `client` would be refused now, and why.
    pub fn check(&self, client: IpAddr) -> Result<(), QuotaRefusal> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        Self::check_locked(&live, client.to_canonical(), self.max_total, self.max_per_client)
    }

    /// Takes a place for `client`; it is given back when the guard drops.
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<QuotaGuard, QuotaRefusal> {
        let client = client.to_canonical();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        Self::check_locked(&live, client, self.max_total, self.max_per_client)?;
        *live.entry(client).or_default() += 1;
        Ok(QuotaGuard {
            quota: self.clone(),
            client,
        })
    }

    /// Live allocations in all.
    pub fn total(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    fn check_locked(
        live: &HashMap<IpAddr, usize>,
        client: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Result<(), QuotaRefusal> {
        if live.get(&client).copied().unwrap_or(0) >= max_per_client {
            return Err(QuotaRefusal::Client);
        }
        if live.values().sum::<usize>() >= max_total {
            return Err(QuotaRefusal::Total);
        }
        Ok(())
    }
}

/// One allocation's place in the [`Quota`].
#[derive(Debug)]
pub struct QuotaGuard {
    quota: Arc<Quota>,
    client: IpAddr,
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        let mut live = self.quota.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = live.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.client);
            }
        }
    }
}

/// A byte budget refilled at `rate` per second, holding at most one second's worth.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u64, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Takes `bytes` if the budget has them at `now`.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// Counters of the TURN server, for logs, tests and the bench.
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations made.
    pub allocations: AtomicU64,
    /// Allocations refused by `max_allocations_per_client`.
    pub refused_client_quota: AtomicU64,
    /// Allocations refused by `max_allocations`.
    pub refused_total_quota: AtomicU64,
    /// Permissions or datagrams refused because the peer is outside the allowed prefixes.
    pub refused_peer: AtomicU64,
    /// Requests with a user name that expired or is not ours.
    pub refused_credentials: AtomicU64,
    /// Datagrams dropped by the per-allocation bandwidth cap.
    pub dropped_bandwidth: AtomicU64,
    /// Allocations ended because their credentials expired.
    pub expired: AtomicU64,
    /// Bytes relayed, both directions.
    pub relayed_bytes: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub allocations: u64,
    pub live_allocations: usize,
    pub refused_client_quota: u64,
    pub refused_total_quota: u64,
    pub refused_peer: u64,
    pub refused_credentials: u64,
    pub dropped_bandwidth: u64,
    pub expired: u64,
    pub relayed_bytes: u64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, live_allocations: usize) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            allocations: get(&self.allocations),
            live_allocations,
            refused_client_quota: get(&self.refused_client_quota),
            refused_total_quota: get(&self.refused_total_quota),
            refused_peer: get(&self.refused_peer),
            refused_credentials: get(&self.refused_credentials),
            dropped_bandwidth: get(&self.dropped_bandwidth),
            expired: get(&self.expired),
            relayed_bytes: get(&self.relayed_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn policy() -> Policy {
        Policy::new(
            vec!["10.1.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            vec!["10.1.0.1".parse().unwrap()],
            49152..=49200,
        )
    }

    #[test]
    fn peers_table() {
        let p = policy();
        for (ip, ok) in [
            ("10.1.0.7", true),
            ("10.1.0.1", true),
            ("10.2.0.7", false),
            ("127.0.0.1", false),
            ("8.8.8.8", false),
            ("0.0.0.0", false),
            ("::ffff:10.1.0.7", true),
            ("fd00::5", true),
            ("fd01::5", false),
        ] {
            assert_eq!(p.permits_peer(ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn the_box_itself_only_on_relay_ports() {
        let p = policy();
        for (addr, ok) in [
            ("10.1.0.1:49152", true),
            ("10.1.0.1:49200", true),
            ("10.1.0.1:5353", false),
            ("10.1.0.1:443", false),
            ("10.1.0.9:5353", true),
            ("10.2.0.9:49152", false),
        ] {
            assert_eq!(p.permits_datagram(addr.parse().unwrap()), ok, "{addr}");
        }
    }

    #[test]
    fn quota_per_client_and_total() {
        let q = Quota::new(3, 2);
        let a: IpAddr = "10.1.0.2".parse().unwrap();
        let b: IpAddr = "10.1.0.3".parse().unwrap();
        let a1 = q.take(a).unwrap();
        let _a2 = q.take(a).unwrap();
        assert_eq!(q.take(a).unwrap_err(), QuotaRefusal::Client);
        let _b1 = q.take(b).unwrap();
        assert_eq!(q.take(b).unwrap_err(), QuotaRefusal::Total);
        assert_eq!(q.check(b), Err(QuotaRefusal::Total));
        drop(a1);
        assert_eq!(q.total(), 2);
        let _b2 = q.take(b).unwrap();
        assert_eq!(q.total(), 3);
    }

    #[test]
    fn bucket_refills_at_its_rate_and_holds_one_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.take(600, t0));
        assert!(!b.take(600, t0));
        assert!(b.take(600, t0 + Duration::from_millis(300)));
        // After a long pause, one second's worth, not more.
        assert!(b.take(1000, t0 + Duration::from_secs(60)));
        assert!(!b.take(1, t0 + Duration::from_secs(60)));
    }
}
