//! The webrtc crate's tokio runtime, with larger socket buffers on the UDP sockets it binds.
//!
//! A data channel sender keeps up to a megabyte in flight, and the peer's driver reads its
//! socket in turns with everything else it does. Linux's default receive buffer (208 KiB)
//! overflowed under that: a 200 MB rift transfer on loopback lost a datagram about every
//! 100 ms (`RcvbufErrors` in `/proc/net/snmp`), and every loss halves SCTP's congestion
//! window; with 4 MiB asked, none were lost and the transfer went from 24 to 42 MB/s in
//! back-to-back runs. The kernel caps what is asked at `net.core.rmem_max`/`wmem_max`
//! (Debian's default is 208 KiB; README.md, "rift", says how to raise it).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime, TokioRuntime,
};

/// What each UDP socket asks the kernel for, each way.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// [`TokioRuntime`] with [`SOCKET_BUFFER`]-sized UDP socket buffers.
#[derive(Debug)]
pub struct BufferedRuntime(TokioRuntime);

impl BufferedRuntime {
    pub fn shared() -> Arc<dyn Runtime> {
        Arc::new(Self(TokioRuntime))
    }
}

impl Runtime for BufferedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let sock = socket2::SockRef::from(&socket);
        // Best effort: a smaller buffer than asked still works, only less well.
        if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
            log::debug!("cannot enlarge a UDP receive buffer: {e}");
        }
        if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER) {
            log::debug!("cannot enlarge a UDP send buffer: {e}");
        }
        self.0.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.0.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.0.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio, buffered UDP"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_sockets_get_larger_buffers_than_the_default() {
        let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = socket2::SockRef::from(&std).recv_buffer_size().unwrap();
        let probe = std.try_clone().unwrap();
        let _wrapped = BufferedRuntime::shared().wrap_udp_socket(std).unwrap();
        let after = socket2::SockRef::from(&probe).recv_buffer_size().unwrap();
        // The kernel caps the request at net.core.rmem_max (and doubles what it grants).
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        assert!(
            after > before || cap * 2 <= before,
            "{before} -> {after} (rmem_max {cap})"
        );
        assert!(after >= SOCKET_BUFFER.min(cap), "{after} < min({SOCKET_BUFFER}, {cap})");
    }
}
