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

mod gossip;
mod receive;
pub mod skew;

pub use gossip::*;
use receive::*;

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
    /// Peers whose packets were dropped as expired.
    skewed: Mutex<skew::SkewTable>,
}

impl Endpoint {
    /// Peers whose packets arrive stamped too far from this node's clock.
    pub fn skewed_peers(&self) -> Vec<skew::Skewed> {
        self.skewed
            .lock()
            .map(|t| t.list(unix_ms()))
            .unwrap_or_default()
    }

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
                    if matches!(kind, Kind::Gossip | Kind::Backbone) {
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

    /// Sends a message of chitchat's (or gemba's own: a pushed rumour) on
    /// the given level of gossip.
    pub async fn send_level(&self, kind: Kind, to: SocketAddr, payload: &[u8]) {
        self.send(kind, to, payload).await
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

/// Where the mesh socket hands backbone gossip: set while this node is a
/// representative of its site, empty otherwise (backbone gossip is then
/// dropped as misdirected).
pub type BackboneInbound = Arc<Mutex<Option<mpsc::Sender<InboundGossip>>>>;

/// A channel for backbone gossip, to put in the node's [`BackboneInbound`].
pub fn backbone_channel() -> (mpsc::Sender<InboundGossip>, mpsc::Receiver<InboundGossip>) {
    mpsc::channel(INBOUND_GOSSIP)
}

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
    /// Where backbone gossip is handed while this node is a representative.
    pub backbone: BackboneInbound,
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
        skewed: Default::default(),
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
    let backbone: BackboneInbound = Default::default();
    let receiver = Receiver {
        endpoint: endpoint.clone(),
        guard,
        inbound_tx,
        samples_tx,
        backbone_tx: backbone.clone(),
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
        backbone,
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
        || (packet.recipient == wire::ANY_RECIPIENT
            && matches!(packet.kind, Kind::Gossip | Kind::Backbone));
    if !for_me {
        return Err(DropReason::Misdirected);
    }
    let now = unix_ms();
    let checked = guard
        .lock()
        .map_err(|_| DropReason::Overloaded)?
        .check(&packet, now);
    if checked == Err(DropReason::Expired) {
        // Signed with the grid key, but stamped too far from this clock.
        endpoint.metrics.expired_from(packet.sender);
        if let Ok(mut t) = endpoint.skewed.lock() {
            if t.note(packet.sender, packet.unix_ms, now) {
                if let Some(s) = t.list(now).into_iter().find(|s| s.peer == packet.sender) {
                    tracing::warn!(
                        peer = packet.sender,
                        skew_ms = s.skew_ms,
                        "{}",
                        skew::describe(&s)
                    );
                }
            }
        }
    }
    checked?;
    endpoint
        .metrics
        .packets_received
        .get_or_create(&kind_label(packet.kind))
        .inc();
    Ok(packet)
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

    /// A signed packet stamped five minutes ahead is dropped as expired,
    /// and its sender is counted and listed as clock-skewed, not dropped
    /// silently.
    #[tokio::test]
    async fn a_skewed_peers_packets_are_dropped_and_the_peer_is_listed() {
        use crate::net::Net;
        let net = crate::MemNet::new();
        let key = GridKey::new(b"skew-test-grid-key-0123456789abcd".to_vec()).unwrap();
        let addr: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let socket = net.bind(addr).await.unwrap();
        let flow = net.bind_flow(addr, 0).await.unwrap();
        let endpoint = Endpoint {
            socket,
            flows: vec![flow],
            key: key.clone(),
            id: "n0".into(),
            peers: Default::default(),
            session: 1,
            counter: AtomicU64::new(1),
            metrics: Arc::new(MeshMetrics::new()),
            skewed: Default::default(),
        };
        let guard = Mutex::new(ReplayGuard::new(30_000, 16));
        let packet = |counter: u64, unix_ms: u64| {
            let mut out = Vec::new();
            wire::seal(
                &key,
                &wire::Header {
                    kind: Kind::Gossip,
                    session: 9,
                    counter,
                    unix_ms,
                    frag: (0, 1),
                    sender: "n2",
                    recipient: "n0",
                },
                b"hello",
                &mut out,
            );
            out
        };
        let ahead = packet(1, unix_ms() + 300_000);
        assert_eq!(
            accept(&endpoint, &guard, &ahead).err(),
            Some(DropReason::Expired)
        );
        let on_time = packet(2, unix_ms());
        assert!(accept(&endpoint, &guard, &on_time).is_ok());
        let listed = endpoint.skewed_peers();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].peer.as_str(), listed[0].dropped), ("n2", 1));
        assert!((299_000..=301_000).contains(&listed[0].skew_ms));
        assert_eq!(
            endpoint
                .metrics
                .expired
                .get_or_create(&crate::metrics::PeerLabel { peer: "n2".into() })
                .get(),
            1
        );
    }
}
