//! A mesh node: one socket, chitchat gossip over it, the prober, and the
//! loop that keeps targets in line with membership and publishes this
//! node's links into its gossip state.
//!
//! What a node costs is kept to what changed. The probe path (mesh socket,
//! probe answers, flow receivers, prober) runs on a thread of its own so
//! nothing else delays it. Links are published in buckets of about 16
//! targets, and only news goes out at once: a state, a loss kind, the
//! failing flows; RTT and loss figures wait for a budget (see
//! `link_gossip`). A state change is pushed instead of waiting for the
//! next gossip round, as a rumour (the whole state of the nodes with news,
//! nothing asked back): a node's own news straight to every peer it
//! probes, others' news passed on only to peers its origin did not reach
//! (see [`relay_peers`]). Each value is verified once per node
//! however many peers relay it (the gossip guard's cache). Samples do not
//! travel in gossip at all: [`MeshNode::send_sample`] sends them to the
//! servers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use gemba_core::{Config, Topology};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::endpoint::{self, unix_ms};
use crate::gossip_guard::{GossipGuard, GossipLimits};
use crate::graph::{self, Graph, Member};
use crate::identity::{self, NodeIdentity, Pins};
use crate::link::{EdgeValue, LinkPolicy, LinkSummary, ProbeOutcome};
use crate::link_gossip::{decode_links, LinkPublisher, EDGE_PREFIX};
use crate::metrics::ClassLabel;
use crate::metrics::MeshMetrics;
use crate::net::Net;
use crate::prober::{link_summaries, sleep_until_opt, ProbeTiming, Prober, SharedLinks, Target};
use crate::topology;
use crate::wire::GridKey;

mod backbone;
mod maintainer;
mod members;
mod presence;
mod probe_path;
mod start;

use backbone::*;
pub use backbone::{SUMMARY_EVERY, SUMMARY_TTL};
use maintainer::*;
use members::*;
pub use presence::AgentSample;
use presence::*;
use probe_path::*;

const KEY_SITE: &str = "site";
const KEY_HTTP: &str = "http";
const KEY_VERSION: &str = "version";
const KEY_TAGS: &str = "tags";
/// `server` on nodes that run the server role: where agents send their
/// samples. Nothing else is decided by it.
const KEY_ROLE: &str = "role";

/// The gossip keys (and key prefixes) the mesh publishes; other stages
/// must pick keys that neither start with nor are the start of these.
pub const GOSSIP_KEYS: &[&str] = &[
    KEY_SITE,
    KEY_HTTP,
    KEY_VERSION,
    KEY_TAGS,
    KEY_ROLE,
    EDGE_PREFIX,
    crate::sites::RELAY_PREFIX,
];

/// A generation id for chitchat: the start time in ms, strictly increasing
/// within the process so a node restarted in the same millisecond (tests,
/// the demo) is still seen as new.
fn next_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = unix_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// Everything a mesh node needs to start.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    pub id: String,
    pub site: String,
    pub cluster: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    /// Under the `sites` topology, where a representative first reaches
    /// the backbone.
    pub backbone_seeds: Vec<String>,
    /// Where this node's HTTP API can be reached, published for consoles.
    pub http: Option<String>,
    pub timing: ProbeTiming,
    /// Flows (source ports) each peer is probed over.
    pub probe_flows: usize,
    /// A fixed range of source ports for the flows.
    pub probe_ports: Option<(u16, u16)>,
    pub policy: LinkPolicy,
    pub gossip_interval: Duration,
    /// The backbone's gossip rounds, under the `sites` topology.
    pub backbone_gossip_interval: Duration,
    pub topology: Topology,
    pub isolated_fraction: f64,
    pub packet_max_age: Duration,
    pub key: GridKey,
    /// Tiers this node belongs to, published for servers.
    pub tags: Vec<String>,
    /// Whether this node runs the server role (agents send it their
    /// samples).
    pub server: bool,
    /// Signs what this node publishes.
    pub identity: Arc<NodeIdentity>,
    /// The keys peers' values are verified with.
    pub pins: Arc<Pins>,
    /// The file `pins` come from (enrolled nodes, or first-seen keys),
    /// re-read when it changes.
    pub pins_file: Option<PathBuf>,
    /// Holds the thread that checks gossip this long (ms) per message, as
    /// slow verification would: for tests that show probes never wait for
    /// gossip ([`MeshNode::stall_gossip`] sets it while running). Zero in
    /// every real node.
    pub stall_gossip: Arc<std::sync::atomic::AtomicU64>,
}

impl MeshSettings {
    pub fn from_config(c: &Config, key: GridKey, http: Option<String>) -> Self {
        let m = &c.mesh;
        MeshSettings {
            id: c.node.id.to_string(),
            site: c.node.site.to_string(),
            cluster: m.cluster.clone(),
            listen: m.listen,
            advertise: m.advertise,
            seeds: m.seeds.clone(),
            backbone_seeds: m.backbone_seeds.clone(),
            http,
            timing: ProbeTiming {
                interval: m.probe_interval,
                probes_per_interval: m.probes_per_interval,
                timeout: m.probe_timeout,
                tcp_interval: m.tcp_probe_interval,
                tcp_timeout: m.tcp_timeout,
            },
            probe_flows: m.probe_flows as usize,
            probe_ports: m.probe_ports,
            policy: LinkPolicy::from_config(m),
            gossip_interval: m.gossip_interval,
            backbone_gossip_interval: m.backbone_gossip_interval,
            topology: m.topology,
            isolated_fraction: m.isolated_fraction,
            packet_max_age: m.packet_max_age,
            key,
            tags: c.node.tags.clone(),
            server: c.node.server,
            identity: Arc::new(NodeIdentity::ephemeral()),
            pins: Arc::new(Pins::default()),
            pins_file: None,
            stall_gossip: Default::default(),
        }
    }

    /// The node's own identity and who it believes, instead of a fresh
    /// identity and first-seen pins held in memory only.
    pub fn with_identity(
        mut self,
        identity: Arc<NodeIdentity>,
        pins: Arc<Pins>,
        pins_file: Option<PathBuf>,
    ) -> Self {
        self.identity = identity;
        self.pins = pins;
        self.pins_file = pins_file;
        self
    }
}

/// Signs `payload` for this node's next version and sets it under `key`;
/// an empty payload with `gone` marks the key deleted (it is dropped after
/// chitchat's grace period). Nothing changes when the payload is already
/// published; returns whether something was.
fn publish(
    chitchat: &mut chitchat::Chitchat,
    identity: &NodeIdentity,
    key: &str,
    payload: &str,
    gone: bool,
) -> bool {
    let me = chitchat.self_chitchat_id().clone();
    let state = chitchat.self_node_state();
    match state.get(key).map(identity::payload) {
        Some(Some(current)) if !gone && current == payload => return false,
        None if gone => return false,
        _ => {}
    }
    let version = state.max_version() + 1;
    let value = identity.sign_value(&me.node_id, me.generation_id, key, version, payload);
    if gone {
        state.set_with_ttl(key, value);
    } else {
        state.set(key, value);
    }
    true
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot bind the mesh socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind probe flow {flow} on {addr}: {source}")]
    BindFlow {
        flow: usize,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start gossip: {0}")]
    Gossip(String),
}

/// A running mesh node. Dropping it without [`MeshNode::shutdown`] leaves
/// its tasks running until the runtime stops; shutting it down stops every
/// one of them (the TCP probe listener included) and awaits them.
pub struct MeshNode {
    settings: MeshSettings,
    chitchat: Arc<ChitchatHandle>,
    _listeners: [chitchat::ListenerHandle; 2],
    links: SharedLinks,
    metrics: Arc<MeshMetrics>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    seen_states: SeenStates,
    /// Stops what the network layer spawned for this node.
    stop: tokio_util::sync::CancellationToken,
    probe: tokio::sync::Mutex<ProbePath>,
    endpoint: Arc<endpoint::Endpoint>,
    sample_subscriber: SampleSubscriber,
    /// Where each node has proved it sends from (servers hear presences).
    proven: Proven,
    joining: Arc<Joining>,
    /// The graph last served, while someone still holds it: a console
    /// and a poller share it, and no node keeps a graph nobody reads
    /// (a site of 100 nodes has a graph of about 2.5 MB).
    graph_cache: tokio::sync::Mutex<Option<(Instant, std::sync::Weak<Graph>)>>,
    /// The backbone chitchat while this node is a representative.
    backbone: BackboneSlot,
    backbone_inbound: endpoint::BackboneInbound,
    relayers: Arc<Relayers>,
}

/// Heartbeat intervals the failure detector keeps per peer: chitchat
/// keeps 1,000 by default, 8 KB per peer whatever the peer's rhythm, which
/// was the largest part of a node's memory in a site of 100. A hundred
/// intervals (100 s of gossip at 1 s) still judge a peer's rhythm.
pub const FAILURE_WINDOW: usize = 100;

/// chitchat keeps a copy of every live node's state for those who watch
/// membership, and clones them all again whenever any node's version
/// changes: a second copy of the whole site's state on every node, and the
/// CPU to refresh it. gemba watches membership through its own reads of
/// the state, so that copy is kept empty: its only filter is this
/// predicate (liveness itself is the failure detector's, untouched).
fn no_live_nodes_copy(_: &chitchat::NodeState) -> bool {
    false
}

/// chitchat's settings for one of this node's clusters (its site's or
/// the backbone), generation `generation`, gossiping every `interval`; a
/// node gone from it is forgotten after `grace`.
fn cluster_config(
    s: &MeshSettings,
    cluster_id: String,
    generation: u64,
    seeds: Vec<String>,
    interval: Duration,
    grace: Duration,
) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: ChitchatId::new(s.id.clone(), generation, s.advertise),
        cluster_id,
        gossip_interval: interval,
        listen_addr: s.listen,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig {
            initial_interval: interval * 5,
            max_interval: Duration::from_secs(10),
            sampling_window_size: FAILURE_WINDOW,
            dead_node_grace_period: grace,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: grace,
        catchup_callback: None,
        extra_liveness_predicate: Some(Box::new(no_live_nodes_copy)),
    }
}

/// Signs a cluster's first values (chitchat sets them in order, at
/// versions 1, 2, ...).
fn signed_initial(
    s: &MeshSettings,
    generation: u64,
    values: Vec<(String, String)>,
) -> Vec<(String, String)> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let signed = s
                .identity
                .sign_value(&s.id, generation, &k, i as u64 + 1, &v);
            (k, signed)
        })
        .collect()
}

/// How old a served graph may be.
pub const GRAPH_MAX_AGE: Duration = Duration::from_millis(100);

impl MeshNode {
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &MeshMetrics {
        &self.metrics
    }

    /// Members as gossip describes them, one per node id.
    pub async fn members(&self) -> Vec<Member> {
        let chitchat = self.chitchat.chitchat();
        let guard = chitchat.lock().await;
        members_of(&guard, &self.joining, true)
    }

    /// The address `id` has proved it sends from (a signed presence
    /// within [`PRESENCE_VALID`]), heard by this node as a server; this
    /// node's own advertised address for itself.
    pub fn proven_address(&self, id: &str) -> Option<std::net::IpAddr> {
        if id == self.settings.id.as_ref() as &str {
            return Some(self.settings.advertise.ip());
        }
        let proven = self.proven.lock().ok()?;
        let (ip, at) = proven.get(id)?;
        (at.elapsed() < PRESENCE_VALID).then_some(*ip)
    }

    /// The tiers the nodes file gives `id`, when nodes are enrolled; `None`
    /// in first-seen mode.
    pub fn enrolled_tags(&self, id: &str) -> Option<Vec<String>> {
        self.settings.pins.enrolled_tags(id)
    }

    /// The grid graph as this node sees it. Computed at most every
    /// [`GRAPH_MAX_AGE`]: consoles and pollers share one computation.
    /// Peers whose signed packets arrive stamped too far from this node's
    /// clock (dropped as expired), heard from in the last ten minutes.
    pub fn clock_skewed_peers(&self) -> Vec<crate::endpoint::skew::Skewed> {
        self.endpoint.skewed_peers()
    }

    pub async fn graph(&self) -> Arc<Graph> {
        let mut cache = self.graph_cache.lock().await;
        if let Some((at, g)) = cache.as_ref() {
            if at.elapsed() < GRAPH_MAX_AGE {
                if let Some(g) = g.upgrade() {
                    return g;
                }
            }
        }
        let members = self.members().await;
        let g = Arc::new(graph::build(
            &members,
            self.settings.topology,
            self.settings.isolated_fraction,
        ));
        *cache = Some((Instant::now(), Arc::downgrade(&g)));
        g
    }

    /// Every site of a `sites` grid as this node knows it: its own site
    /// summarized from its own graph, the others from the summaries its
    /// site's representatives relay. Empty under the `full` topology.
    pub async fn sites(&self) -> Vec<gemba_core::graph::SiteSummary> {
        if !matches!(self.settings.topology, Topology::Sites { .. }) {
            return Vec::new();
        }
        let graph = self.graph().await;
        let chitchat = self.chitchat.chitchat();
        let guard = chitchat.lock().await;
        let members = members_of(&guard, &self.joining, true);
        let own = own_representatives(&members, self.settings.topology, &self.settings.site);
        let view = site_view(&guard, &self.relayers.with(&own), &self.settings.site);
        drop(guard);
        let mut mine = crate::sites::summarize(
            &self.settings.site,
            &graph,
            &members,
            &own,
            &representatives_of(&view),
            endpoint::unix_ms(),
        );
        mine.signer = self.settings.id.clone();
        let mut out: Vec<_> = view.into_values().collect();
        out.push(mine);
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }

    /// Whether this node is in the backbone now (a representative of its
    /// site under the `sites` topology).
    pub async fn in_backbone(&self) -> bool {
        self.backbone.lock().await.is_some()
    }

    /// How many nodes this node's backbone chitchat holds (live or gone
    /// but not yet forgotten: each is a line of every backbone digest); 0
    /// when it is not in the backbone.
    pub async fn backbone_members(&self) -> usize {
        let chitchat = match self.backbone.lock().await.as_ref() {
            Some(b) => b.chitchat.chitchat(),
            None => return 0,
        };
        let n = chitchat.lock().await.node_states().len();
        n
    }

    /// Bytes of gossip state this node holds (keys and values of every
    /// node), the figure that must not grow with N² under the sites
    /// topology.
    pub async fn gossip_state_bytes(&self) -> usize {
        fn held(c: &chitchat::Chitchat) -> usize {
            c.node_states()
                .values()
                .map(|s| {
                    s.key_values()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
                })
                .sum()
        }
        let site = held(&*self.chitchat.chitchat().lock().await);
        let backbone = self
            .backbone
            .lock()
            .await
            .as_ref()
            .map(|b| b.chitchat.chitchat());
        let backbone = match backbone {
            Some(c) => held(&*c.lock().await),
            None => 0,
        };
        site + backbone
    }

    /// This node's link to `target`: its summary and every probe outcome
    /// in the window, or `None` if it does not probe `target`.
    pub fn link_history(&self, target: &str) -> Option<(LinkSummary, Vec<ProbeOutcome>)> {
        let mut table = self.links.lock().expect("link table lock");
        let crate::prober::LinkTable {
            trackers,
            flow_ports,
        } = &mut *table;
        let t = trackers.get_mut(target)?;
        let now = Instant::now();
        Some((
            t.summary_with_ports(now, &self.settings.policy, flow_ports),
            t.history(now, &self.settings.policy),
        ))
    }

    /// Publishes `key = value` in this node's gossip state, signed.
    pub async fn set_local(&self, key: &str, value: &str) {
        let chitchat = self.chitchat.chitchat();
        let mut guard = chitchat.lock().await;
        if publish(&mut guard, &self.settings.identity, key, value, false) {
            self.metrics
                .values_published
                .get_or_create(&ClassLabel { class: "other" })
                .inc();
        }
    }

    /// Every value under `prefix` in every node's gossip state (newest
    /// generation), as (node, key without prefix, value, node is live).
    pub async fn values_with_prefix(&self, prefix: &str) -> Vec<(String, String, String, bool)> {
        let chitchat = self.chitchat.chitchat();
        let guard = chitchat.lock().await;
        let live: HashSet<&ChitchatId> = guard.live_nodes().collect();
        let newest = newest_generations(&guard);
        let mut out = Vec::new();
        for cid in newest.into_values() {
            let Some(state) = guard.node_state(cid) else {
                continue;
            };
            for (k, v) in state.key_values() {
                let Some(v) = identity::payload(v) else {
                    continue;
                };
                if let Some(rest) = k.strip_prefix(prefix) {
                    out.push((
                        cid.node_id.to_string(),
                        rest.to_string(),
                        v.to_string(),
                        live.contains(cid),
                    ));
                }
            }
        }
        out
    }

    /// Holds the thread that checks gossip for `per_message` on every
    /// message from now on (zero: no more), as CPU-bound verification would
    /// hold it. For tests.
    pub fn stall_gossip(&self, per_message: Duration) {
        self.settings.stall_gossip.store(
            per_message.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Sends one sample (`name`, and its value as the timeline encodes it)
    /// to every live server of the grid, signed with this node's key:
    /// samples go to servers directly instead of through gossip, where
    /// every node would relay and verify every node's samples.
    pub async fn send_sample(&self, name: &str, value: &str) {
        let servers: Vec<(String, SocketAddr)> = {
            let chitchat = self.chitchat.chitchat();
            let guard = chitchat.lock().await;
            members_of(&guard, &self.joining, false)
                .into_iter()
                .filter(|m| m.server && m.live && m.id != self.settings.id)
                .map(|m| (m.id, m.addr))
                .collect()
        };
        if servers.is_empty() {
            return;
        }
        let body = format!("{name} {value}");
        let signed = self.settings.identity.sign_samples(
            &self.settings.id,
            endpoint::unix_ms(),
            body.as_bytes(),
        );
        for (id, addr) in servers {
            self.endpoint
                .send_to(crate::wire::Kind::Samples, addr, &id, &signed)
                .await;
        }
    }

    /// Where agents' samples go once verified: (node, name, value). A
    /// server calls this once; before it does, samples are dropped.
    pub fn subscribe_samples(&self, to: mpsc::Sender<AgentSample>) {
        if let Ok(mut s) = self.sample_subscriber.lock() {
            *s = Some(to);
        }
    }

    /// Calls `f(node, key without prefix, value)` whenever a gossip value
    /// under `prefix` changes on any other node. Keep the returned handle.
    pub async fn subscribe(
        &self,
        prefix: &str,
        f: impl Fn(&str, &str, &str) + Send + Sync + 'static,
    ) -> chitchat::ListenerHandle {
        let chitchat = self.chitchat.chitchat();
        let guard = chitchat.lock().await;
        guard.subscribe_event(prefix, move |e| {
            if let Some(v) = identity::payload(e.value) {
                f(&e.node.node_id, e.key, v)
            }
        })
    }

    /// How many observers' link states this node remembers from gossip
    /// (to push changes on): bounded by the grid's members.
    pub fn observers_seen(&self) -> usize {
        self.seen_states.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// This node's outgoing links at full resolution.
    pub fn local_links(&self) -> Vec<(String, LinkSummary)> {
        link_summaries(&self.links, &self.settings.policy)
    }

    /// Stops gossip, probing and the TCP probe listener, awaits every task
    /// and releases the sockets. Safe to call while other holders of the
    /// node still exist (they see an idle node) and more than once.
    /// Resolves, with the reason, when gossip ends on its own: chitchat's
    /// task panicked or lost its socket. Never resolves after
    /// [`shutdown`](Self::shutdown). A node whose gossip ended still
    /// answers probes and serves HTTP, so its peers would see a node that
    /// looks alive but says nothing new: whoever runs the node stops it
    /// loudly instead.
    pub async fn gossip_failed(&self) -> String {
        let ended = self.chitchat.termination_watcher();
        let reason = tokio::select! {
            r = ended => r,
            _ = self.stop.cancelled() => return std::future::pending().await,
        };
        if self.stop.is_cancelled() {
            return std::future::pending().await;
        }
        match reason {
            Ok(()) => "gossip stopped".to_string(),
            Err(e) => format!("gossip stopped: {e:#}"),
        }
    }

    pub async fn shutdown(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        if tasks.is_empty() {
            return;
        }
        // The gossip check goes last: chitchat reads a closed receive
        // channel as a broken socket.
        let receive = tasks.remove(0);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = self.chitchat.initiate_shutdown();
        if tokio::time::timeout(Duration::from_secs(2), self.chitchat.termination_watcher())
            .await
            .is_err()
        {
            tracing::warn!(node = %self.settings.id, "gossip did not stop within 2 s; aborted");
            self.chitchat.abort();
        }
        receive.abort();
        let _ = receive.await;
        if let Some(b) = self.backbone.lock().await.take() {
            b.stop(&self.backbone_inbound).await;
        }
        self.probe.lock().await.stop().await;
    }
}
