//! The network seam under the mesh: datagrams and TCP connects.
//!
//! [`UdpNet`] is the real thing. [`MemNet`] is an in-process network whose
//! links can be cut, so partitions and black holes are tested in one process
//! under paused tokio time. [`FaultNet`] wraps either one and black-holes
//! chosen directed links; `gemba demo` uses it to inject faults.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A bound datagram socket.
#[async_trait]
pub trait Datagrams: Send + Sync + 'static {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()>;
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn local_addr(&self) -> SocketAddr;
}

/// A network a node can bind to and connect through.
#[async_trait]
pub trait Net: Send + Sync + 'static {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn Datagrams>>;
    /// Starts accepting TCP connections on `addr` (the TCP probe path).
    /// Answers TCP connect probes on `addr` until `stop` is cancelled.
    async fn listen_tcp(&self, addr: SocketAddr, stop: CancellationToken) -> io::Result<()>;
    /// Opens and immediately closes a TCP connection from `from` to `to`.
    /// A `from` with a port leaves from that port (a probe flow's).
    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()>;
    /// Binds the socket of one probe flow of the node whose mesh socket is
    /// `owner`: same address, `port` (0: any free port). Faults set on the
    /// owner's links apply to its flows too.
    async fn bind_flow(&self, owner: SocketAddr, port: u16) -> io::Result<Arc<dyn Datagrams>> {
        self.bind(SocketAddr::new(owner.ip(), port)).await
    }
    /// Whether a node's probe path (its sockets, the prober, probe
    /// answers) runs on a thread of its own, so that nothing else the node
    /// does (gossip, verification, HTTP, the store) delays a probe or its
    /// timing. A real network wants it; the in-memory one runs everything
    /// on the caller's runtime, so that paused test time covers probes too.
    fn probe_thread(&self) -> bool {
        false
    }
}

/// The ECMP path a flow takes when a router spreads flows over `paths`
/// equal-cost paths by a hash of addresses and ports. Deterministic, so a
/// test knows which flows a dead path takes down.
pub fn flow_path(from: SocketAddr, to: SocketAddr, paths: u32) -> u32 {
    // FNV-1a: a fixed, well-spread hash (std's hasher is seeded per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for a in [from, to] {
        match a.ip() {
            std::net::IpAddr::V4(ip) => eat(&ip.octets()),
            std::net::IpAddr::V6(ip) => eat(&ip.octets()),
        }
        eat(&a.port().to_be_bytes());
    }
    (h % paths.max(1) as u64) as u32
}

/// The operating system's network.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpNet;

struct OsSocket {
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
}

#[async_trait]
impl Datagrams for OsSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(buf, to).await.map(|_| ())
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// The receive buffer a mesh socket asks for. Gossip messages are up to
/// 64 KiB each, and several peers answer at once when a grid starts: with
/// the kernel's usual 208 KiB, two or three of them fill the buffer and the
/// rest are dropped, and the grid converges round by round instead.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Asks for `bytes` of receive buffer (beyond `net.core.rmem_max` where
/// the process may, else up to it); returns what the kernel granted.
#[cfg(target_os = "linux")]
fn grow_receive_buffer(socket: &tokio::net::UdpSocket, bytes: usize) -> usize {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one c_int through a valid pointer on a
        // socket this function borrows.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                &value as *const libc::c_int as *const libc::c_void,
                len,
            )
        };
        if rc == 0 {
            break;
        }
    }
    let mut granted: libc::c_int = 0;
    let mut glen = len;
    // SAFETY: getsockopt writes one c_int and its length through valid
    // pointers.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut granted as *mut libc::c_int as *mut libc::c_void,
            &mut glen,
        )
    };
    // The kernel reports twice what it accounts for payload.
    if rc == 0 {
        granted.max(0) as usize / 2
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn grow_receive_buffer(_socket: &tokio::net::UdpSocket, _bytes: usize) -> usize {
    0
}

#[async_trait]
impl Net for UdpNet {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn Datagrams>> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let granted = grow_receive_buffer(&socket, RECEIVE_BUFFER);
        if granted < RECEIVE_BUFFER / 4 {
            tracing::warn!(
                %local,
                granted,
                wanted = RECEIVE_BUFFER,
                "the kernel gave the mesh socket a small receive buffer: gossip may be dropped while a grid starts; raise net.core.rmem_max (sysctl) to at least {RECEIVE_BUFFER}"
            );
        }
        Ok(Arc::new(OsSocket { socket, local }))
    }

    /// Probe flow sockets receive only probe replies: the kernel's default
    /// buffer is plenty.
    async fn bind_flow(&self, owner: SocketAddr, port: u16) -> io::Result<Arc<dyn Datagrams>> {
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(owner.ip(), port)).await?;
        let local = socket.local_addr()?;
        Ok(Arc::new(OsSocket { socket, local }))
    }

    fn probe_thread(&self) -> bool {
        true
    }

    async fn listen_tcp(&self, addr: SocketAddr, stop: CancellationToken) -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    // Accepting is the whole answer: the prober measures the
                    // handshake, then closes.
                    Ok((stream, _)) => drop(stream),
                    Err(e) => {
                        tracing::debug!(error = %e, "tcp probe accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            // The listener is dropped here: the port is free again.
        });
        Ok(())
    }

    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()> {
        let socket = if to.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // Leave from the node's own address so the measured path is the
        // one peers see; an unspecified address lets the kernel choose.
        // A probe flow leaves from its own port, so that its connects hash
        // onto the same path as its datagrams.
        if from.is_ipv4() == to.is_ipv4() && (!from.ip().is_unspecified() || from.port() != 0) {
            socket.set_reuseaddr(true)?;
            socket.bind(from)?;
        }
        let stream = socket.connect(to).await?;
        // Reset instead of FIN: probing every few seconds must not leave
        // TIME_WAIT sockets behind.
        stream.set_zero_linger()?;
        Ok(())
    }
}

type Inbox = mpsc::Sender<(Vec<u8>, SocketAddr)>;

#[derive(Default)]
struct MemState {
    sockets: HashMap<SocketAddr, Inbox>,
    tcp_listeners: HashSet<SocketAddr>,
    /// Directed pairs (from node address, to node address) that drop traffic.
    cut: HashSet<(SocketAddr, SocketAddr)>,
    /// Addresses that swallow datagrams and never finish a TCP handshake.
    silent: HashSet<SocketAddr>,
    latency: Duration,
    /// Probe flow sockets and the node (mesh address) they belong to.
    owners: HashMap<SocketAddr, SocketAddr>,
    next_port: u16,
}

impl MemState {
    /// The node an address belongs to: its own mesh address, or the owner
    /// of a probe flow socket.
    fn owner(&self, addr: SocketAddr) -> SocketAddr {
        self.owners.get(&addr).copied().unwrap_or(addr)
    }
}

/// An in-process network. Delivery is immediate (or after a fixed latency)
/// unless the directed link is cut.
#[derive(Clone, Default)]
pub struct MemNet {
    state: Arc<Mutex<MemState>>,
}

impl MemNet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every datagram takes `latency` to arrive.
    pub fn with_latency(latency: Duration) -> Self {
        let net = Self::default();
        net.state.lock().expect("memnet lock").latency = latency;
        net
    }

    /// Cuts or restores both directions between `a` and `b`.
    pub fn set_link(&self, a: SocketAddr, b: SocketAddr, up: bool) {
        let mut s = self.state.lock().expect("memnet lock");
        for pair in [(a, b), (b, a)] {
            if up {
                s.cut.remove(&pair);
            } else {
                s.cut.insert(pair);
            }
        }
    }

    /// Makes `addr` a silent peer: what is sent to it vanishes and TCP
    /// connects to it hang, like a host that is half-open or wedged.
    pub fn set_silent(&self, addr: SocketAddr, silent: bool) {
        let mut s = self.state.lock().expect("memnet lock");
        if silent {
            s.silent.insert(addr);
        } else {
            s.silent.remove(&addr);
        }
    }

    /// Removes a node from the network, as if its process died.
    pub fn unplug(&self, addr: SocketAddr) {
        let mut s = self.state.lock().expect("memnet lock");
        s.sockets.remove(&addr);
        s.tcp_listeners.remove(&addr);
        let flows: Vec<SocketAddr> = s
            .owners
            .iter()
            .filter(|(_, o)| **o == addr)
            .map(|(f, _)| *f)
            .collect();
        for f in flows {
            s.sockets.remove(&f);
            s.owners.remove(&f);
        }
    }
}

struct MemSocket {
    net: MemNet,
    local: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
}

#[async_trait]
impl Datagrams for MemSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        let (target, latency) = {
            let s = self.net.state.lock().expect("memnet lock");
            let (me, peer) = (s.owner(self.local), s.owner(to));
            if s.cut.contains(&(me, peer)) || s.silent.contains(&peer) {
                return Ok(());
            }
            (s.sockets.get(&to).cloned(), s.latency)
        };
        let Some(target) = target else { return Ok(()) };
        let packet = (buf.to_vec(), self.local);
        if latency.is_zero() {
            let _ = target.try_send(packet);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(latency).await;
                let _ = target.try_send(packet);
            });
        }
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut inbox = self.inbox.lock().await;
        let (data, from) = inbox
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "unplugged"))?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok((n, from))
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[async_trait]
impl Net for MemNet {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn Datagrams>> {
        let (tx, rx) = mpsc::channel(4096);
        let mut s = self.state.lock().expect("memnet lock");
        if s.sockets.get(&addr).is_some_and(|t| !t.is_closed()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} in use"),
            ));
        }
        s.sockets.insert(addr, tx);
        Ok(Arc::new(MemSocket {
            net: self.clone(),
            local: addr,
            inbox: tokio::sync::Mutex::new(rx),
        }))
    }

    async fn bind_flow(&self, owner: SocketAddr, port: u16) -> io::Result<Arc<dyn Datagrams>> {
        let addr = {
            let mut s = self.state.lock().expect("memnet lock");
            let port = if port != 0 {
                port
            } else {
                // Ephemeral ports, as the kernel would hand them out.
                loop {
                    s.next_port = s
                        .next_port
                        .checked_add(1)
                        .filter(|p| *p >= 40000)
                        .unwrap_or(40000);
                    let candidate = SocketAddr::new(owner.ip(), s.next_port);
                    if !s.sockets.contains_key(&candidate) {
                        break s.next_port;
                    }
                }
            };
            let addr = SocketAddr::new(owner.ip(), port);
            s.owners.insert(addr, owner);
            addr
        };
        self.bind(addr).await
    }

    async fn listen_tcp(&self, addr: SocketAddr, stop: CancellationToken) -> io::Result<()> {
        self.state
            .lock()
            .expect("memnet lock")
            .tcp_listeners
            .insert(addr);
        let state = self.state.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            if let Ok(mut s) = state.lock() {
                s.tcp_listeners.remove(&addr);
            }
        });
        Ok(())
    }

    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()> {
        let (reachable, listening, latency) = {
            let s = self.state.lock().expect("memnet lock");
            let from = s.owner(from);
            (
                !s.cut.contains(&(from, to))
                    && !s.cut.contains(&(to, from))
                    && !s.silent.contains(&to),
                s.tcp_listeners.contains(&to),
                s.latency,
            )
        };
        if !reachable {
            // A cut link swallows the SYN; the caller's timeout decides.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(latency * 2).await;
        if listening {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))
        }
    }
}

/// What a fault on a directed link drops.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Everything: a black-holed route.
    All,
    /// The flows whose hash lands on one of the `dead` paths out of
    /// `paths` equal-cost paths (see [`flow_path`]): an ECMP path
    /// black-holed, which only the flows hashed onto it notice.
    Paths { paths: u32, dead: Vec<u32> },
    /// Each packet with this probability (0 to 1), independently: the
    /// random loss of congestion or a bad cable.
    Random { loss: f64 },
}

#[derive(Default)]
struct Faults {
    /// Directed links by the nodes' mesh addresses.
    links: HashMap<(SocketAddr, SocketAddr), Fault>,
    /// Probe flow sockets and the node they belong to.
    owners: HashMap<SocketAddr, SocketAddr>,
    /// State of the random-loss coin (xorshift; fixed seed, so a test
    /// run is repeatable).
    coin: u64,
}

impl Faults {
    fn drops(&mut self, from: SocketAddr, to: SocketAddr) -> bool {
        if self.links.is_empty() {
            return false;
        }
        let owner = |a: SocketAddr| self.owners.get(&a).copied().unwrap_or(a);
        match self.links.get(&(owner(from), owner(to))) {
            None => false,
            Some(Fault::All) => true,
            Some(Fault::Paths { paths, dead }) => dead.contains(&flow_path(from, to, *paths)),
            Some(Fault::Random { loss }) => {
                let loss = *loss;
                if self.coin == 0 {
                    self.coin = 0x9e37_79b9_7f4a_7c15;
                }
                self.coin ^= self.coin << 13;
                self.coin ^= self.coin >> 7;
                self.coin ^= self.coin << 17;
                let draw = (self.coin >> 11) as f64 / (1u64 << 53) as f64;
                draw < loss
            }
        }
    }
}

/// Wraps a network and drops what is sent on chosen directed links, the
/// way a black-holed route or ECMP path does: the sender sees no error,
/// nothing arrives.
#[derive(Clone)]
pub struct FaultNet<N> {
    inner: N,
    faults: Arc<Mutex<Faults>>,
}

impl<N: Net> FaultNet<N> {
    pub fn new(inner: N) -> Self {
        FaultNet {
            inner,
            faults: Arc::default(),
        }
    }

    /// Drops (or stops dropping) everything `from` sends to `to`.
    pub fn set_black_hole(&self, from: SocketAddr, to: SocketAddr, on: bool) {
        self.set_fault(from, to, on.then_some(Fault::All));
    }

    /// Sets or clears the fault on what `from` sends to `to` (the nodes'
    /// mesh addresses).
    pub fn set_fault(&self, from: SocketAddr, to: SocketAddr, fault: Option<Fault>) {
        let mut f = self.faults.lock().expect("faultnet lock");
        match fault {
            Some(fault) => f.links.insert((from, to), fault),
            None => f.links.remove(&(from, to)),
        };
    }
}

struct FaultSocket {
    inner: Arc<dyn Datagrams>,
    faults: Arc<Mutex<Faults>>,
}

#[async_trait]
impl Datagrams for FaultSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        let dropped = self
            .faults
            .lock()
            .expect("faultnet lock")
            .drops(self.inner.local_addr(), to);
        if dropped {
            return Ok(());
        }
        self.inner.send_to(buf, to).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

#[async_trait]
impl<N: Net> Net for FaultNet<N> {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn Datagrams>> {
        Ok(Arc::new(FaultSocket {
            inner: self.inner.bind(addr).await?,
            faults: self.faults.clone(),
        }))
    }
    async fn bind_flow(&self, owner: SocketAddr, port: u16) -> io::Result<Arc<dyn Datagrams>> {
        let inner = self.inner.bind_flow(owner, port).await?;
        self.faults
            .lock()
            .expect("faultnet lock")
            .owners
            .insert(inner.local_addr(), owner);
        Ok(Arc::new(FaultSocket {
            inner,
            faults: self.faults.clone(),
        }))
    }
    async fn listen_tcp(&self, addr: SocketAddr, stop: CancellationToken) -> io::Result<()> {
        self.inner.listen_tcp(addr, stop).await
    }
    fn probe_thread(&self) -> bool {
        self.inner.probe_thread()
    }
    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()> {
        let dropped = self.faults.lock().expect("faultnet lock").drops(from, to);
        if dropped {
            std::future::pending::<()>().await;
        }
        self.inner.tcp_connect(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_spreads_ports_over_paths() {
        let to: SocketAddr = "127.0.0.2:7946".parse().unwrap();
        let mut per_path = [0usize; 4];
        for port in 40000..40400 {
            let from = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
            per_path[flow_path(from, to, 4) as usize] += 1;
        }
        for n in per_path {
            assert!((70..130).contains(&n), "uneven spread {per_path:?}");
        }
    }

    #[tokio::test]
    async fn a_dead_path_drops_only_the_flows_hashed_onto_it() {
        let net = FaultNet::new(MemNet::new());
        let a: SocketAddr = "127.0.5.1:7946".parse().unwrap();
        let b: SocketAddr = "127.0.5.2:7946".parse().unwrap();
        let rx = net.bind(b).await.unwrap();
        let mut flows = Vec::new();
        for _ in 0..16 {
            flows.push(net.bind_flow(a, 0).await.unwrap());
        }
        net.set_fault(
            a,
            b,
            Some(Fault::Paths {
                paths: 2,
                dead: vec![0],
            }),
        );
        let mut expected = 0;
        for f in &flows {
            f.send_to(b"x", b).await.unwrap();
            if flow_path(f.local_addr(), b, 2) == 1 {
                expected += 1;
            }
        }
        assert!(expected > 0 && expected < 16);
        let mut got = 0;
        let mut buf = [0u8; 8];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), rx.recv_from(&mut buf)).await
        {
            got += 1;
        }
        assert_eq!(got, expected);
    }
}
