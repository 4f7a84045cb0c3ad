//! A node's mesh socket and its probe flow sockets: signs what it sends,
//! verifies what it receives, answers probe requests at once and hands
//! gossip to chitchat.
//!
//! A single receive task owns the mesh socket's read side and
//! demultiplexes. On a real network it runs on the node's probe thread
//! (see `node::ProbePath`), beside the flow receivers and the prober, on a
//! runtime of its own: a probe request is answered and a reply timed
//! there, never behind gossip decoding, signature checks, compression, the
//! store or HTTP, so RTT measures the network and not the node's backlog.
//! Gossip fragments are handed over a bounded channel to [`gossip_path`],
//! which reassembles them and runs the gossip guard on the node's main
//! runtime; when that side falls behind, gossip is dropped and counted,
//! probes are not. Nothing a peer sends can block or crash the node: every
//! datagram is either used or dropped and counted.
//!
//! Probes leave from the flow sockets, one source port per flow, and the
//! peer answers from its mesh port to the port the probe came from: the
//! reply takes the same flow back, so both directions hash onto the path
//! being measured. Each flow socket has a small receive task that accepts
//! only probe replies. All receive tasks share one replay guard, because a
//! peer's counters are one sequence whichever socket they arrive on.
//!
//! Agents' samples arrive as their own kind of datagram, signed with the
//! agent's node key, and go to the one subscriber a server registers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Serializable};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::gossip_guard::{GossipGuard, VerifyStats};
use crate::metrics::{kind_label, DirectionLabel, MeshMetrics, ReasonLabel};
use crate::net::Datagrams;
use crate::wire::{
    self, DropReason, GridKey, Kind, ReplayGuard, MAX_DATAGRAM, MAX_FRAGMENT_PAYLOAD, MAX_MESSAGE,
};

/// A probe reply as the receive task saw it.
#[derive(Debug, Clone, Copy)]
pub struct ProbeReply {
    pub from: SocketAddr,
    /// The flow whose socket received it.
    pub flow: usize,
    pub probe_id: u64,
    pub received_at: Instant,
}

/// Probe payloads are exactly the 8-byte probe id.
const PROBE_PAYLOAD: usize = 8;
const MAX_PARTIAL_MESSAGES: usize = 32;
const PARTIAL_MESSAGE_TTL: Duration = Duration::from_secs(5);

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mixing in time and pid makes two
    // processes started in the same instant differ as well.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_ms());
    h.write_u32(std::process::id());
    h.finish()
}

/// The sending half, shared by chitchat's socket and the prober.
pub struct Endpoint {
    socket: Arc<dyn Datagrams>,
    flows: Vec<Arc<dyn Datagrams>>,
    key: GridKey,
    /// This node's id: the sender of what it sends, the recipient it
    /// accepts.
    id: String,
    /// Members' gossip addresses and node ids: who a datagram to an
    /// address is signed for.
    peers: std::sync::RwLock<HashMap<SocketAddr, Arc<str>>>,
    session: u64,
    counter: AtomicU64,
    metrics: Arc<MeshMetrics>,
}

impl Endpoint {
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The probe flows' local addresses, by flow.
    pub fn flow_addrs(&self) -> Vec<SocketAddr> {
        self.flows.iter().map(|f| f.local_addr()).collect()
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The members' addresses and ids, as gossip describes them now.
    pub fn set_peers(&self, peers: HashMap<SocketAddr, Arc<str>>) {
        if let Ok(mut p) = self.peers.write() {
            *p = peers;
        }
    }

    /// Gossip to `to`: signed for the member there, or for any recipient
    /// while none is known (a seed, at join).
    async fn send(&self, kind: Kind, to: SocketAddr, payload: &[u8]) {
        let recipient = self.peers.read().ok().and_then(|p| p.get(&to).cloned());
        let recipient = recipient.as_deref().unwrap_or(wire::ANY_RECIPIENT);
        self.send_on(&self.socket, kind, to, recipient, payload)
            .await
    }

    async fn send_on(
        &self,
        socket: &Arc<dyn Datagrams>,
        kind: Kind,
        to: SocketAddr,
        recipient: &str,
        payload: &[u8],
    ) {
        if payload.len() > MAX_MESSAGE {
            // Receivers drop what takes more than two fragments: say so
            // rather than send it to be lost.
            tracing::warn!(%to, bytes = payload.len(), "message too large to send; not sent");
            self.metrics.drop_packet(DropReason::Oversized);
            return;
        }
        // An empty payload still makes one datagram.
        let count = payload.len().div_ceil(MAX_FRAGMENT_PAYLOAD).max(1);
        let chunks = payload
            .chunks(MAX_FRAGMENT_PAYLOAD)
            .chain((count == 1 && payload.is_empty()).then_some(payload));
        let first = self.counter.fetch_add(count as u64, Ordering::Relaxed);
        let count = count as u8;
        let now = unix_ms();
        let mut buf = Vec::with_capacity(payload.len().min(MAX_FRAGMENT_PAYLOAD) + 64);
        for (i, chunk) in chunks.into_iter().enumerate() {
            wire::seal(
                &self.key,
                &wire::Header {
                    kind,
                    session: self.session,
                    counter: first + i as u64,
                    unix_ms: now,
                    frag: (i as u8, count),
                    sender: &self.id,
                    recipient,
                },
                chunk,
                &mut buf,
            );
            match socket.send_to(&buf, to).await {
                Ok(()) => {
                    self.metrics
                        .packets_sent
                        .get_or_create(&kind_label(kind))
                        .inc();
                    if kind == Kind::Gossip {
                        self.metrics
                            .gossip_bytes
                            .get_or_create(&DirectionLabel { direction: "sent" })
                            .inc_by(buf.len() as u64);
                    }
                }
                // A peer that is gone or unroutable is the prober's news,
                // not an error of this node.
                Err(e) => tracing::trace!(%to, error = %e, "send failed"),
            }
        }
    }

    /// Sends a gossip message of gemba's own (a pushed rumour) to `to`.
    pub async fn send_gossip(&self, to: SocketAddr, payload: &[u8]) {
        self.send(Kind::Gossip, to, payload).await
    }

    /// Sends `payload` to node `recipient` at `to` from the mesh socket.
    pub async fn send_to(&self, kind: Kind, to: SocketAddr, recipient: &str, payload: &[u8]) {
        self.send_on(&self.socket, kind, to, recipient, payload)
            .await
    }

    /// Sends a probe to node `target` at `to` on `flow` (its own source
    /// port).
    pub async fn send_probe(&self, flow: usize, to: SocketAddr, target: &str, probe_id: u64) {
        let socket = &self.flows[flow % self.flows.len()];
        self.send_on(
            socket,
            Kind::ProbeRequest,
            to,
            target,
            &probe_id.to_be_bytes(),
        )
        .await
    }
}

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    received: usize,
    started: Instant,
}

/// Reassembles fragmented gossip messages; bounded in count and age.
#[derive(Default)]
pub struct Reassembly {
    partial: HashMap<(SocketAddr, u64, u64), Partial>,
}

impl Reassembly {
    pub fn add(&mut self, from: SocketAddr, p: &wire::Packet<'_>, now: Instant) -> Option<Vec<u8>> {
        // `wire::open` refuses these already; a packet built any other way
        // must not index past its fragments either (found by fuzzing).
        if p.frag_count == 0 || p.frag_index >= p.frag_count {
            return None;
        }
        if p.frag_count == 1 {
            return Some(p.payload.to_vec());
        }
        if p.frag_count as usize * MAX_FRAGMENT_PAYLOAD > MAX_MESSAGE {
            return None;
        }
        self.partial
            .retain(|_, v| now.duration_since(v.started) < PARTIAL_MESSAGE_TTL);
        let id = (from, p.session, p.counter.checked_sub(p.frag_index as u64)?);
        if !self.partial.contains_key(&id) && self.partial.len() >= MAX_PARTIAL_MESSAGES {
            let oldest = self
                .partial
                .iter()
                .min_by_key(|(_, v)| v.started)
                .map(|(k, _)| *k)?;
            self.partial.remove(&oldest);
        }
        let entry = self.partial.entry(id).or_insert_with(|| Partial {
            parts: vec![None; p.frag_count as usize],
            received: 0,
            started: now,
        });
        if entry.parts.len() != p.frag_count as usize {
            return None;
        }
        let slot = &mut entry.parts[p.frag_index as usize];
        if slot.is_none() {
            *slot = Some(p.payload.to_vec());
            entry.received += 1;
        }
        if entry.received < entry.parts.len() {
            return None;
        }
        let done = self.partial.remove(&id)?;
        Some(done.parts.into_iter().flatten().flatten().collect())
    }
}

/// A gossip datagram the probe path passed on: authenticated, signed for
/// this node and not a replay. Reassembly and the gossip guard happen on
/// the node's main runtime, never on the probe path.
#[derive(Debug)]
pub struct InboundGossip {
    pub from: SocketAddr,
    pub session: u64,
    pub counter: u64,
    pub frag_index: u8,
    pub frag_count: u8,
    pub payload: Vec<u8>,
    pub received_at: Instant,
}

impl InboundGossip {
    fn packet(&self) -> wire::Packet<'_> {
        wire::Packet {
            kind: Kind::Gossip,
            session: self.session,
            counter: self.counter,
            unix_ms: 0,
            frag_index: self.frag_index,
            frag_count: self.frag_count,
            sender: "",
            recipient: "",
            payload: &self.payload,
        }
    }
}

/// Gossip datagrams waiting for the main runtime, at most.
const INBOUND_GOSSIP: usize = 256;

/// Samples an agent sent this node (a server), authenticated by the grid
/// key and signed for this node; the agent's own signature is checked on
/// the main runtime.
#[derive(Debug)]
pub struct InboundSamples {
    /// The node id the datagram names as its sender.
    pub sender: String,
    /// Where the datagram came from: the address a presence proves.
    pub from: SocketAddr,
    pub payload: Vec<u8>,
}

/// Sample datagrams waiting for the main runtime, at most.
const INBOUND_SAMPLES: usize = 1024;

/// What [`open`] returns.
pub struct Opened {
    /// For sending.
    pub endpoint: Arc<Endpoint>,
    /// Gossip datagrams, for [`gossip_path`].
    pub inbound: mpsc::Receiver<InboundGossip>,
    /// Agents' samples (on a server).
    pub samples: mpsc::Receiver<InboundSamples>,
    /// Probe replies, for the prober.
    pub replies: mpsc::Receiver<ProbeReply>,
    /// The mesh socket's receive task, on the probe runtime.
    pub receive_task: tokio::task::JoinHandle<()>,
    /// One receive task per probe flow, on the probe runtime.
    pub flow_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the mesh socket and the probe flow sockets: their receive tasks
/// run on `probe_rt`, where probe requests are answered and replies
/// timed; gossip is handed on through [`Opened::inbound`].
///
/// # Panics
///
/// When `flows` is empty: probes leave from flow sockets only.
pub fn open(
    id: &str,
    socket: Arc<dyn Datagrams>,
    flows: Vec<Arc<dyn Datagrams>>,
    key: GridKey,
    packet_max_age: Duration,
    metrics: Arc<MeshMetrics>,
    probe_rt: &tokio::runtime::Handle,
) -> Opened {
    assert!(
        !flows.is_empty(),
        "a mesh endpoint needs a probe flow socket"
    );
    let endpoint = Arc::new(Endpoint {
        socket,
        flows,
        key,
        id: id.to_string(),
        peers: Default::default(),
        session: random_session(),
        counter: AtomicU64::new(1),
        metrics,
    });
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_GOSSIP);
    let (samples_tx, samples_rx) = mpsc::channel(INBOUND_SAMPLES);
    let (reply_tx, reply_rx) = mpsc::channel(8192);
    let guard = Arc::new(Mutex::new(ReplayGuard::new(
        packet_max_age.as_millis() as u64,
        8192,
    )));
    let flow_tasks = (0..endpoint.flows.len())
        .map(|flow| {
            probe_rt.spawn(
                FlowReceiver {
                    endpoint: endpoint.clone(),
                    flow,
                    guard: guard.clone(),
                    reply_tx: reply_tx.clone(),
                }
                .run()
                .instrument(tracing::info_span!(
                    "task",
                    stage = "mesh",
                    task = "flow-receive",
                    flow
                )),
            )
        })
        .collect();
    let receiver = Receiver {
        endpoint: endpoint.clone(),
        guard,
        inbound_tx,
        samples_tx,
    };
    let receive_task = probe_rt.spawn(receiver.run().instrument(tracing::info_span!(
        "task",
        stage = "mesh",
        task = "receive"
    )));
    Opened {
        endpoint,
        inbound: inbound_rx,
        samples: samples_rx,
        replies: reply_rx,
        receive_task,
        flow_tasks,
    }
}

/// Verifies a datagram, that it was signed for this node, and checks it
/// against replays.
fn accept<'a>(
    endpoint: &Endpoint,
    guard: &Mutex<ReplayGuard>,
    datagram: &'a [u8],
) -> Result<wire::Packet<'a>, DropReason> {
    let packet = wire::open(&endpoint.key, datagram)?;
    let for_me = packet.recipient == endpoint.id
        || (packet.recipient == wire::ANY_RECIPIENT && packet.kind == Kind::Gossip);
    if !for_me {
        return Err(DropReason::Misdirected);
    }
    guard
        .lock()
        .map_err(|_| DropReason::Overloaded)?
        .check(&packet, unix_ms())?;
    endpoint
        .metrics
        .packets_received
        .get_or_create(&kind_label(packet.kind))
        .inc();
    Ok(packet)
}

/// Reads one probe flow's socket: replies to its probes, nothing else.
struct FlowReceiver {
    endpoint: Arc<Endpoint>,
    flow: usize,
    guard: Arc<Mutex<ReplayGuard>>,
    reply_tx: mpsc::Sender<ProbeReply>,
}

impl FlowReceiver {
    async fn run(self) {
        let socket = self.endpoint.flows[self.flow].clone();
        // A probe reply is a header, the probe id and a MAC; anything
        // longer arrives cut off, fails verification and is dropped.
        let mut buf = [0u8; wire::HEADER_LEN + PROBE_PAYLOAD + wire::MAC_LEN + 1];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => {
                    tracing::trace!(flow = self.flow, error = %e, "probe flow recv error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            if self.reply_tx.is_closed() {
                return;
            }
            let received_at = Instant::now();
            let result = accept(&self.endpoint, &self.guard, &buf[..len]).and_then(|p| {
                // A flow socket only ever sends probe requests, so a reply
                // is all it expects.
                if p.kind != Kind::ProbeReply {
                    return Err(DropReason::Undecodable);
                }
                let id: [u8; PROBE_PAYLOAD] =
                    p.payload.try_into().map_err(|_| DropReason::Undecodable)?;
                self.reply_tx
                    .try_send(ProbeReply {
                        from,
                        flow: self.flow,
                        probe_id: u64::from_be_bytes(id),
                        received_at,
                    })
                    .map_err(|_| DropReason::Overloaded)
            });
            if let Err(reason) = result {
                tracing::debug!(%from, flow = self.flow, reason = reason.as_str(), "dropped datagram");
                self.endpoint.metrics.drop_packet(reason);
            }
        }
    }
}

/// Reads the mesh socket on the probe path: answers probe requests at
/// once and passes gossip on, so that no gossip work ever delays a probe.
struct Receiver {
    endpoint: Arc<Endpoint>,
    guard: Arc<Mutex<ReplayGuard>>,
    inbound_tx: mpsc::Sender<InboundGossip>,
    samples_tx: mpsc::Sender<InboundSamples>,
}

impl Receiver {
    async fn run(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (len, from) = match self.endpoint.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => {
                    // ICMP errors surface here on some systems; they are
                    // about one peer, never about this socket.
                    tracing::trace!(error = %e, "mesh recv error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            if self.inbound_tx.is_closed() {
                return;
            }
            if let Err(reason) = self.handle(&buf[..len], from).await {
                tracing::debug!(%from, reason = reason.as_str(), "dropped datagram");
                self.endpoint.metrics.drop_packet(reason);
            }
        }
    }

    async fn handle(&self, datagram: &[u8], from: SocketAddr) -> Result<(), DropReason> {
        let received_at = Instant::now();
        let packet = accept(&self.endpoint, &self.guard, datagram)?;
        match packet.kind {
            Kind::ProbeRequest => {
                if packet.payload.len() != PROBE_PAYLOAD {
                    return Err(DropReason::Undecodable);
                }
                // Back to the port the probe came from, signed for its sender.
                self.endpoint
                    .send_on(
                        &self.endpoint.socket,
                        Kind::ProbeReply,
                        from,
                        packet.sender,
                        packet.payload,
                    )
                    .await;
            }
            // Probes leave from the flow sockets only, so a reply here did
            // not take the path of any flow and measures nothing.
            Kind::ProbeReply => return Err(DropReason::Undecodable),
            Kind::Samples => {
                // One datagram each, never fragmented.
                if packet.frag_count != 1 {
                    return Err(DropReason::Undecodable);
                }
                self.samples_tx
                    .try_send(InboundSamples {
                        sender: packet.sender.to_string(),
                        from,
                        payload: packet.payload.to_vec(),
                    })
                    .map_err(|_| DropReason::Overloaded)?;
            }
            Kind::Gossip => {
                self.endpoint
                    .metrics
                    .gossip_bytes
                    .get_or_create(&DirectionLabel {
                        direction: "received",
                    })
                    .inc_by(datagram.len() as u64);
                self.inbound_tx
                    .try_send(InboundGossip {
                        from,
                        session: packet.session,
                        counter: packet.counter,
                        frag_index: packet.frag_index,
                        frag_count: packet.frag_count,
                        payload: packet.payload.to_vec(),
                        received_at,
                    })
                    .map_err(|_| DropReason::Overloaded)?;
            }
        }
        Ok(())
    }
}

/// What [`gossip_path`] returns.
pub struct GossipPath {
    /// chitchat's view of the mesh socket.
    pub transport: GossipTransport,
    /// The task that checks gossip (stop it last: chitchat reads a closed
    /// receive channel as a broken socket).
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts, on the current runtime, the task that reassembles gossip,
/// checks every message with the guard (signatures included) and hands
/// what passed to chitchat. `stall_ms` holds the thread for that long per
/// message, as slow verification would (tests only).
pub fn gossip_path(
    endpoint: Arc<Endpoint>,
    inbound: mpsc::Receiver<InboundGossip>,
    gossip_guard: Arc<Mutex<GossipGuard>>,
    stall_ms: Arc<AtomicU64>,
    stop: tokio_util::sync::CancellationToken,
) -> GossipPath {
    let (gossip_tx, gossip_rx) = mpsc::channel(1024);
    let checker = GossipChecker {
        endpoint: endpoint.clone(),
        gossip_guard,
        grid_full_logged_ms: 0,
        reassembly: Reassembly::default(),
        gossip_tx,
        stall_ms,
        verify_seen: Default::default(),
    };
    let task = tokio::spawn(checker.run(inbound, stop).instrument(tracing::info_span!(
        "task",
        stage = "mesh",
        task = "gossip-check"
    )));
    GossipPath {
        transport: GossipTransport {
            socket: Mutex::new(Some(GossipSocket {
                endpoint,
                rx: gossip_rx,
                buf: Vec::new(),
            })),
        },
        task,
    }
}

struct GossipChecker {
    endpoint: Arc<Endpoint>,
    gossip_guard: Arc<Mutex<GossipGuard>>,
    grid_full_logged_ms: u64,
    reassembly: Reassembly,
    gossip_tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
    stall_ms: Arc<AtomicU64>,
    /// The guard's verification figures already counted in the metrics.
    verify_seen: VerifyStats,
}

impl GossipChecker {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<InboundGossip>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        while let Some(g) = inbound.recv().await {
            if self.gossip_tx.is_closed() {
                return;
            }
            if let Err(reason) = self.handle(g) {
                self.endpoint.metrics.drop_packet(reason);
            }
            // Let chitchat and the rest of the node run between messages.
            tokio::task::yield_now().await;
        }
        // The probe thread stops first when the node stops. chitchat reads
        // a closed channel as a broken socket (and says so in the log), so
        // then its channel stays open until the node's shutdown has stopped
        // chitchat and ends this task. A socket lost while the node runs
        // closes it: that is reported.
        if stop.is_cancelled() {
            std::future::pending::<()>().await;
        }
    }

    fn handle(&mut self, g: InboundGossip) -> Result<(), DropReason> {
        let from = g.from;
        let Some(message) = self.reassembly.add(from, &g.packet(), g.received_at) else {
            return Ok(());
        };
        let stall = self.stall_ms.load(Ordering::Relaxed);
        if stall > 0 {
            // Blocks the thread, as CPU-bound verification does.
            std::thread::sleep(Duration::from_millis(stall));
        }
        let m = &self.endpoint.metrics;
        let (checked, unverified, stats) = {
            let mut g = self
                .gossip_guard
                .lock()
                .map_err(|_| DropReason::Overloaded)?;
            let checked = g.check(&message, unix_ms());
            (checked, g.take_unverified(), g.verify_stats())
        };
        let seen = std::mem::replace(&mut self.verify_seen, stats);
        m.signatures_verified
            .inc_by(stats.verified.saturating_sub(seen.verified));
        m.signature_cache_hits
            .inc_by(stats.cache_hits.saturating_sub(seen.cache_hits));
        m.signature_cpu_seconds
            .inc_by(stats.cpu_ns.saturating_sub(seen.cpu_ns) as f64 / 1e9);
        for (node, reason) in unverified {
            // A node whose values do not verify may be an impostor
            // or a reinstalled node with a new key.
            tracing::debug!(%from, node, reason, "left out a node's values that do not verify");
            m.gossip_refused
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        let checked = match checked {
            Ok(c) => c,
            Err(refusal) => {
                tracing::warn!(%from, reason = %refusal, "refused gossip message");
                m.gossip_refused
                    .get_or_create(&ReasonLabel {
                        reason: refusal.label(),
                    })
                    .inc();
                return Err(DropReason::Undecodable);
            }
        };
        if !checked.grid_full.is_empty() {
            // Said once a minute; the counter has every case.
            let now = unix_ms();
            let last = self.grid_full_logged_ms;
            if now.saturating_sub(last) >= 60_000 {
                self.grid_full_logged_ms = now;
                tracing::warn!(
                %from,
                left_out = ?checked.grid_full,
                "the grid is full (1,000 nodes, or a digest that would outgrow one datagram): nodes it does not know yet are left out"
                );
            }
            m.gossip_refused
                .get_or_create(&ReasonLabel {
                    reason: "grid_full",
                })
                .inc_by(checked.grid_full.len() as u64);
        }
        if checked.dropped_self > 0 {
            tracing::debug!(%from, deltas = checked.dropped_self, "left out deltas about this node");
            m.gossip_self_deltas.inc_by(checked.dropped_self as u64);
        }
        self.gossip_tx
            .try_send((from, checked.message))
            .map_err(|_| DropReason::Overloaded)
    }
}

/// chitchat's view of the mesh socket.
pub struct GossipTransport {
    socket: Mutex<Option<GossipSocket>>,
}

#[async_trait]
impl Transport for GossipTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| anyhow::anyhow!("gossip transport lock poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("the mesh socket is already open"))?;
        Ok(Box::new(socket))
    }
}

struct GossipSocket {
    endpoint: Arc<Endpoint>,
    rx: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    buf: Vec<u8>,
}

#[async_trait]
impl Socket for GossipSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.buf.clear();
        msg.serialize(&mut self.buf);
        self.endpoint.send(Kind::Gossip, to, &self.buf).await;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("mesh receive task stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(counter: u64, index: u8, count: u8, payload: &[u8]) -> wire::Packet<'_> {
        wire::Packet {
            kind: Kind::Gossip,
            session: 1,
            counter,
            unix_ms: 0,
            frag_index: index,
            frag_count: count,
            sender: "n1",
            recipient: "n0",
            payload,
        }
    }

    #[test]
    fn fragments_reassemble_and_impossible_ones_are_ignored() {
        let mut r = Reassembly::default();
        let from: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let now = Instant::now();
        assert_eq!(r.add(from, &fragment(10, 1, 2, b"lo"), now), None);
        assert_eq!(
            r.add(from, &fragment(9, 0, 2, b"hel"), now).as_deref(),
            Some(&b"hello"[..])
        );
        // What the fuzzer found: no fragments at all, an index past the
        // count, a counter below the index.
        assert_eq!(r.add(from, &fragment(221, 221, 0, b"x"), now), None);
        assert_eq!(r.add(from, &fragment(5, 3, 2, b"x"), now), None);
        assert_eq!(r.add(from, &fragment(0, 1, 2, b"x"), now), None);
    }
}
