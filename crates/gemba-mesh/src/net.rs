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
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<()>;
    /// Opens and immediately closes a TCP connection from `from` to `to`.
    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()>;
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

#[async_trait]
impl Net for UdpNet {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn Datagrams>> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(Arc::new(OsSocket { socket, local }))
    }

    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    // Accepting is the whole answer: the prober measures the
                    // handshake, then closes.
                    Ok((stream, _)) => drop(stream),
                    Err(e) => {
                        tracing::debug!(error = %e, "tcp probe accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
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
        if !from.ip().is_unspecified() && from.is_ipv4() == to.is_ipv4() {
            socket.bind(SocketAddr::new(from.ip(), 0))?;
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
            if s.cut.contains(&(self.local, to)) || s.silent.contains(&to) {
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

    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<()> {
        self.state
            .lock()
            .expect("memnet lock")
            .tcp_listeners
            .insert(addr);
        Ok(())
    }

    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()> {
        let (reachable, listening, latency) = {
            let s = self.state.lock().expect("memnet lock");
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

/// Wraps a network and drops everything sent on chosen directed links, the
/// way a black-holed route does: the sender sees no error, nothing arrives.
#[derive(Clone)]
pub struct FaultNet<N> {
    inner: N,
    black_holes: Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>>,
}

impl<N: Net> FaultNet<N> {
    pub fn new(inner: N) -> Self {
        FaultNet {
            inner,
            black_holes: Arc::default(),
        }
    }

    /// Drops (or stops dropping) what `from` sends to `to`.
    pub fn set_black_hole(&self, from: SocketAddr, to: SocketAddr, on: bool) {
        let mut b = self.black_holes.lock().expect("faultnet lock");
        if on {
            b.insert((from, to));
        } else {
            b.remove(&(from, to));
        }
    }
}

struct FaultSocket {
    inner: Arc<dyn Datagrams>,
    black_holes: Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>>,
}

#[async_trait]
impl Datagrams for FaultSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        let dropped = self
            .black_holes
            .lock()
            .expect("faultnet lock")
            .contains(&(self.inner.local_addr(), to));
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
            black_holes: self.black_holes.clone(),
        }))
    }
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<()> {
        self.inner.listen_tcp(addr).await
    }
    async fn tcp_connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<()> {
        let dropped = self
            .black_holes
            .lock()
            .expect("faultnet lock")
            .contains(&(from, to));
        if dropped {
            std::future::pending::<()>().await;
        }
        self.inner.tcp_connect(from, to).await
    }
}
