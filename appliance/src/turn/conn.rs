//! The policy layer around the TURN crate's sockets: the crate does TURN, these wrappers
//! decide what it may do.
//!
//! - [`ListenConn`] wraps the socket clients talk to. Before a request reaches the server it
//!   refuses Allocate requests over the quota (486 Allocation Quota Reached, 508 Insufficient
//!   Capacity) and CreatePermission / ChannelBind requests toward a peer outside the allowed
//!   prefixes (403 Forbidden). It also notes who sent the request being handled: the server
//!   handles one request at a time per listener, so [`RelayGenerator`] knows whose
//!   allocation it is making.
//! - [`RelayGenerator`] makes each allocation's socket on a port of the configured range and
//!   wraps it in a [`RelayConn`].
//! - [`RelayConn`] drops datagrams to or from peers the policy refuses and those over the
//!   allocation's bandwidth cap, and ends the allocation when its credentials expire.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use stun::attributes::ATTR_XOR_PEER_ADDRESS;
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, ErrorCode};
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, Message,
    MessageType, Setter,
};
use tokio::net::UdpSocket;
use webrtc_turn::Error as TurnError;
use webrtc_util::Conn;

type Result<T> = std::result::Result<T, TurnError>;

use super::policy::{Policy, Quota, QuotaGuard, QuotaRefusal, Stats, TokenBucket};

/// What every listener and allocation of one TURN service share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Replaced when the box's addresses change; read per datagram, for a few lines.
    pub(super) policy: RwLock<Policy>,
    pub(super) quota: Arc<Quota>,
    pub(super) stats: Arc<Stats>,
    pub(super) relay_ports: (u16, u16),
    pub(super) bytes_per_sec: u64,
}

impl Shared {
    pub(super) fn policy(&self) -> RwLockReadGuard<'_, Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The request the listener's server is handling now: who sent it, and the expiry of the
/// credentials it carried (set by the auth handler).
#[derive(Debug, Default)]
pub(super) struct Current {
    pub(super) client: Mutex<Option<SocketAddr>>,
}

/// The socket clients send TURN requests to: the UDP listener, or one TCP connection.
pub(super) struct ListenConn {
    pub(super) inner: Arc<dyn Conn + Send + Sync>,
    pub(super) shared: Arc<Shared>,
    pub(super) current: Arc<Current>,
}

impl ListenConn {
    /// `Some(error response)` when `packet` from `src` is refused.
    fn inspect(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        if !stun::message::is_message(packet) {
            return None; // ChannelData: the server checks its channel binding.
        }
        let mut m = Message::new();
        // Malformed: the server answers (or drops) it as it would.
        m.unmarshal_binary(packet).ok()?;
        if m.typ.class != CLASS_REQUEST {
            return None;
        }
        let stats = &self.shared.stats;
        if m.typ.method == METHOD_ALLOCATE {
            let (code, counter, why) = match self.shared.quota.check(src.ip()) {
                Ok(()) => return None,
                Err(QuotaRefusal::Client) => (
                    CODE_ALLOC_QUOTA_REACHED,
                    &stats.refused_client_quota,
                    "turn.max_allocations_per_client reached",
                ),
                Err(QuotaRefusal::Total) => (
                    CODE_INSUFFICIENT_CAPACITY,
                    &stats.refused_total_quota,
                    "turn.max_allocations reached",
                ),
            };
            Stats::bump(counter);
            log::debug!("TURN: refusing an allocation for {src}: {why}");
            return error_response(&m, code, why);
        }
        if m.typ.method == METHOD_CREATE_PERMISSION || m.typ.method == METHOD_CHANNEL_BIND {
            for attr in m.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS) {
                let refused = match xor_peer_ip(&attr.value, &m.transaction_id.0) {
                    Some(ip) => (!self.shared.policy().permits_peer(ip)).then(|| ip.to_string()),
                    None => Some("an undecodable address".to_owned()),
                };
                if let Some(peer) = refused {
                    Stats::bump(&stats.refused_peer);
                    log::debug!("TURN: refusing {src} a permission toward {peer}: outside turn.allowed_prefixes");
                    return error_response(&m, CODE_FORBIDDEN, "peer outside the allowed prefixes");
                }
            }
        }
        None
    }
}

/// The IP of an XOR-PEER-ADDRESS value (RFC 5389 section 15.2).
fn xor_peer_ip(value: &[u8], transaction_id: &[u8; 12]) -> Option<IpAddr> {
    let cookie = stun::message::MAGIC_COOKIE.to_be_bytes();
    match (value.first(), value.get(1), value.len()) {
        (Some(_), Some(0x01), 8) => {
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ cookie[i];
            }
            Some(IpAddr::from(ip))
        }
        (Some(_), Some(0x02), 20) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(transaction_id);
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ key[i];
            }
            Some(IpAddr::from(ip))
        }
        _ => None,
    }
}

fn error_response(request: &Message, code: ErrorCode, reason: &str) -> Option<Vec<u8>> {
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.transaction_id),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(stun::error_code::ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
    ];
    m.build(&setters).ok()?;
    Some(m.raw)
}

#[async_trait]
impl Conn for ListenConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            match self.inspect(&buf[..n], src) {
                None => {
                    *self.current.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(src);
                    return Ok((n, src));
                }
                Some(response) => {
                    let _ = self.inner.send_to(&response, src).await;
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Makes allocations' sockets on one listening address.
pub(super) struct RelayGenerator {
    pub(super) shared: Arc<Shared>,
    pub(super) ip: IpAddr,
    pub(super) current: Arc<Current>,
    pub(super) last_expiry: Arc<Mutex<Option<u64>>>,
}

#[async_trait]
impl webrtc_turn::relay::RelayAddressGenerator for RelayGenerator {
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        _use_ipv4: bool,
        _requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr)> {
        let other = |s: &str| webrtc_turn::Error::Other(s.to_owned());
        let client = self
            .current
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| other("no client"))?;
        let expiry = self
            .last_expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| other("no credentials"))?;
        let stats = &self.shared.stats;
        let guard = self.shared.quota.take(client.ip()).map_err(|refusal| {
            Stats::bump(match refusal {
                QuotaRefusal::Client => &stats.refused_client_quota,
                QuotaRefusal::Total => &stats.refused_total_quota,
            });
            other("allocation quota reached")
        })?;
        let socket = bind_in_range(self.ip, self.shared.relay_ports)
            .await
            .ok_or_else(|| other("no free port in turn.relay_port_min..=turn.relay_port_max"))?;
        let addr = socket.local_addr()?;
        let remaining = Duration::from_secs(expiry)
            .saturating_sub(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default());
        let now = Instant::now();
        Stats::bump(&stats.allocations);
        log::debug!("TURN: allocation {addr} for {client}");
        let conn = RelayConn {
            inner: socket,
            shared: self.shared.clone(),
            buckets: Mutex::new((
                TokenBucket::new(self.shared.bytes_per_sec, now),
                TokenBucket::new(self.shared.bytes_per_sec, now),
            )),
            expires: tokio::time::Instant::now() + remaining,
            guard: Mutex::new(Some(guard)),
        };
        Ok((Arc::new(conn), addr))
    }
}

/// The receive buffer asked for on every TURN UDP socket; the kernel doubles it for its own
/// bookkeeping (about 1,800 full-size datagrams then) and caps the request at
/// `net.core.rmem_max`. A WebRTC sender puts its whole SCTP window on the wire at once (rift:
/// 1 MiB, some 850 datagrams); the default (`rmem_default`, 208 KiB) held about 90 of them and
/// the rest were dropped before keksbox read them: 76 to 284 of some 2,000 datagrams per 2 MB
/// rift transfer through the box, after which SCTP's retransmission backoff stalled the
/// transfer for longer than rift waits (issue 9).
pub(super) const RECV_BUFFER: usize = 2 << 20;

/// Asks for [`RECV_BUFFER`] on `socket`; returns what the kernel granted (doubled, as
/// `SO_RCVBUF` reports it). Less than asked only costs drops under bursts, so it is no error.
pub(super) fn enlarge_recv_buffer(socket: &UdpSocket) -> usize {
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(socket, RECV_BUFFER);
    rustix::net::sockopt::socket_recv_buffer_size(socket).unwrap_or(0)
}

/// A UDP socket on `ip` and a port of `range`, starting at a random one.
async fn bind_in_range(ip: IpAddr, (min, max): (u16, u16)) -> Option<UdpSocket> {
    let span = u32::from(max - min) + 1;
    let mut start = [0u8; 4];
    let _ = getrandom::fill(&mut start);
    let start = u32::from_le_bytes(start) % span;
    // At most 64 tries: a range that full is as good as full.
    for i in 0..span.min(64) {
        let port = min + ((start + i) % span) as u16;
        if let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
            enlarge_recv_buffer(&socket);
            return Some(socket);
        }
    }
    None
}

/// One allocation's socket toward its peers.
pub(super) struct RelayConn {
    inner: UdpSocket,
    shared: Arc<Shared>,
    /// Bandwidth budgets, client to peers and peers to client; held for a few lines.
    buckets: Mutex<(TokenBucket, TokenBucket)>,
    /// When the credentials that made the allocation expire: it ends then.
    expires: tokio::time::Instant,
    /// The allocation's place in the quota, given back at close (or drop).
    guard: Mutex<Option<QuotaGuard>>,
}

impl RelayConn {
    /// Whether a datagram of `n` bytes to or from `peer` may pass.
    fn admit(&self, peer: SocketAddr, n: usize, outgoing: bool) -> bool {
        let stats = &self.shared.stats;
        if !self.shared.policy().permits_datagram(peer) {
            Stats::bump(&stats.refused_peer);
            log::debug!("TURN: dropping a datagram for {peer}: outside turn.allowed_prefixes or not a relay port");
            return false;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = if outgoing { &mut buckets.0 } else { &mut buckets.1 };
        if !bucket.take(n, Instant::now()) {
            Stats::bump(&stats.dropped_bandwidth);
            return false;
        }
        stats.relayed_bytes.fetch_add(n as u64, Ordering::Relaxed);
        true
    }
}

#[async_trait]
impl Conn for RelayConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.inner.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            tokio::select! {
                received = self.inner.recv_from(buf) => {
                    let (n, src) = received?;
                    if self.admit(src, n, false) {
                        return Ok((n, src));
                    }
                }
                // An error here makes the TURN crate delete the allocation.
                () = tokio::time::sleep_until(self.expires) => {
                    Stats::bump(&self.shared.stats.expired);
                    log::debug!("TURN: allocation {:?} ends: its credentials expired", self.inner.local_addr());
                    self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
                    return Err(webrtc_util::Error::Other("credentials expired".to_owned()));
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.inner.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if tokio::time::Instant::now() >= self.expires || !self.admit(target, buf.len(), true) {
            // Dropped like a lost datagram; an error would be logged by the server per packet.
            return Ok(buf.len());
        }
        Ok(self.inner.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn xor_peer_address_decodes() {
        // 192.0.2.1 XOR 0x2112A442 = 0xE112A643.
        let v4 = [0x00, 0x01, 0x00, 0x00, 0xE1, 0x12, 0xA6, 0x43];
        assert_eq!(xor_peer_ip(&v4, &[0; 12]), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(xor_peer_ip(&v4[..7], &[0; 12]), None);
        assert_eq!(xor_peer_ip(&[0, 3, 0, 0, 1, 2, 3, 4], &[0; 12]), None);
        assert_eq!(xor_peer_ip(&[], &[0; 12]), None);
    }
}
