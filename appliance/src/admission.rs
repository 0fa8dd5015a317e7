//! Who may hold a connection: at most `limits.max_connections` TCP connections in all (every
//! one holds a file handle, from accept on, whether or not it ever upgrades to a WebSocket)
//! and at most `limits.max_connections_per_address` from one address, so one host on the LAN
//! cannot take every slot and lock the others out.
//!
//! What the messages one address is still sending hold of the relay's budget is counted per
//! address too ([`Receiving`]): one host's half-sent messages may fill a quarter of what
//! messages being received may take, so they cannot stall everybody else's large messages
//! (a chat image) until the message timeout.
//!
//! `max_connections` is fitted at start to the open-file limit the process finds
//! ([`fit_to_open_file_limit`]), so the relay refuses a connection itself instead of failing
//! to accept (`Too many open files`) while other users' requests time out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use log::{debug, info, warn};

/// File handles kept free of connections: the HTTP redirect's own connections
/// ([`crate::redirect::MAX_CONNECTIONS`], 64), and 64 more for listeners, the runtime's epoll
/// and event fds, mDNS sockets (one or two per interface), the journal, a certificate being
/// written.
pub const RESERVED_FILES: u64 = 128;

/// Counts live connections in all and per address.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    /// Connections per address and in all; locked for a few lines at accept and at close.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Connections per address, and what that address's messages in progress hold.
    per_address: HashMap<IpAddr, (usize, Arc<Receiving>)>,
}

/// Bytes of the budget that the messages one address is still sending hold, shared by its
/// connections ([`crate::relay::Metered`] adds and gives back), with the tasks waiting for
/// that to go down.
#[derive(Debug, Default)]
pub struct Receiving {
    bytes: AtomicUsize,
    waiting: Mutex<Vec<Waker>>,
}

impl Receiving {
    pub fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Gives `bytes` back and wakes the address's connections that wait for room.
    pub fn sub(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let _ = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| Some(b.saturating_sub(bytes)));
        let woken = std::mem::take(&mut *self.lock());
        woken.into_iter().for_each(Waker::wake);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Ready while the address holds less than `cap`; otherwise the task is woken when some
    /// is given back.
    pub fn poll_below(&self, cx: &mut Context<'_>, cap: usize) -> Poll<()> {
        if self.bytes() < cap {
            return Poll::Ready(());
        }
        {
            let mut waiting = self.lock();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
        }
        // Given back between the check and the registration: look again.
        if self.bytes() < cap {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` connections are open.
    Full,
    /// This address holds `max_connections_per_address` connections.
    AddressFull,
}

/// One admitted connection; its slot frees when the last clone is dropped (the HTTP task
/// and, after an upgrade, the WebSocket task share it).
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    addr: IpAddr,
    receiving: Arc<Receiving>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits a connection from `addr`, or says why not.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Arc<Slot>, Refused> {
        let addr = canonical(addr);
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Refused::Full);
        }
        let (per, receiving) = counts.per_address.entry(addr).or_default();
        if *per >= self.max_per_address {
            return Err(Refused::AddressFull);
        }
        *per += 1;
        let receiving = receiving.clone();
        counts.total += 1;
        Ok(Arc::new(Slot {
            admission: self.clone(),
            addr,
            receiving,
        }))
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// The limit in all.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent across a panic elsewhere: every change is one statement.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Slot {
    /// What this connection's address holds in messages being received.
    pub fn receiving(&self) -> Arc<Receiving> {
        self.receiving.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some((per, _)) = counts.per_address.get_mut(&self.addr) {
            *per -= 1;
            if *per == 0 {
                counts.per_address.remove(&self.addr);
            }
        }
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`: count it as `a.b.c.d`.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The kernel's send and receive buffer of every accepted connection, each (Linux doubles
/// what is set, for its bookkeeping). Left to themselves they grow with the traffic up to
/// `net.ipv4.tcp_wmem`/`tcp_rmem` (4 and 6 MiB): a member that does not read, or one the
/// relay does not read while its budget is spent, would hold megabytes of kernel memory per
/// connection. Signaling needs little: 32 KiB still moves a chat image at tens of MB/s on
/// a LAN.
pub const SOCKET_BUFFER: usize = 32 << 10;

/// What rustls may hold of TLS records not yet written to a connection's socket (its default
/// is 64 KiB). The WebSocket above writes 16 KiB frames, so more would only be what a
/// member that does not read makes the relay keep.
pub const TLS_BUFFER: usize = 16 << 10;

/// Fixes an accepted connection's kernel buffers at [`SOCKET_BUFFER`] (which also stops
/// their growth); a failure is logged and the connection served anyway.
pub fn bound_socket_buffers(socket: &impl std::os::fd::AsFd) {
    use rustix::net::sockopt::{set_socket_recv_buffer_size, set_socket_send_buffer_size};
    if let Err(e) = set_socket_send_buffer_size(socket, SOCKET_BUFFER)
        .and_then(|()| set_socket_recv_buffer_size(socket, SOCKET_BUFFER))
    {
        debug!("cannot bound a connection's socket buffers: {e}");
    }
}

/// Raises the soft open-file limit to the hard one, then returns how many connections fit
/// beside [`RESERVED_FILES`]: `configured`, or fewer when the limit is lower (logged).
pub fn fit_to_open_file_limit(configured: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => warn!("cannot raise the open-file limit to its hard limit: {e}"),
        }
    }
    // `None` means unlimited.
    let Some(files) = limit.current else { return configured };
    let fits = usize::try_from(files.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < configured {
        warn!(
            "limits.max_connections is {configured} but the open-file limit is {files}: serving at most {fits} \
             connections (raise LimitNOFILE= in the unit, or ulimit -n, to allow more)"
        );
        return fits;
    }
    info!("open-file limit {files}: room for limits.max_connections = {configured}");
    configured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_limits() {
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let adm = Admission::new(3, 2);
        let a1 = adm.admit(a).expect("first");
        let a2 = adm.admit(a).expect("second");
        assert_eq!(adm.admit(a).err(), Some(Refused::AddressFull));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("valid");
        assert_eq!(
            adm.admit(mapped).err(),
            Some(Refused::AddressFull),
            "v4-mapped is the same host"
        );
        let b1 = adm.admit(b).expect("another address");
        assert_eq!(adm.admit(b).err(), Some(Refused::Full));
        drop(a1);
        let _b2 = adm.admit(b).expect("a freed slot");
        drop((a2, b1));
        assert_eq!(adm.total(), 1);
    }

    #[test]
    fn an_address_shares_what_its_messages_hold_and_waiters_wake_when_it_goes_down() {
        use std::sync::atomic::AtomicBool;
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let a: IpAddr = [10, 0, 0, 1].into();
        let adm = Admission::new(8, 8);
        let (one, two) = (adm.admit(a).expect("first"), adm.admit(a).expect("second"));
        let other = adm.admit([10, 0, 0, 2].into()).expect("other");
        one.receiving().add(600);
        two.receiving().add(500);
        assert_eq!(one.receiving().bytes(), 1100, "one count per address");
        assert_eq!(other.receiving().bytes(), 0);

        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(two.receiving().poll_below(&mut cx, 1000).is_pending());
        assert!(other.receiving().poll_below(&mut cx, 1000).is_ready());
        one.receiving().sub(600);
        assert!(flag.0.load(Ordering::SeqCst), "woken when the address gave back");
        assert!(two.receiving().poll_below(&mut cx, 1000).is_ready());
        // Saturating: a double release cannot wrap the count and lift the cap.
        two.receiving().sub(10_000);
        assert_eq!(two.receiving().bytes(), 0);
    }

    #[test]
    fn socket_buffers_are_fixed() {
        use rustix::net::sockopt::{socket_recv_buffer_size, socket_send_buffer_size};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        bound_socket_buffers(&accepted);
        // Linux doubles the value set.
        assert_eq!(socket_send_buffer_size(&accepted).expect("get"), 2 * SOCKET_BUFFER);
        assert_eq!(socket_recv_buffer_size(&accepted).expect("get"), 2 * SOCKET_BUFFER);
        drop(client);
    }
}
