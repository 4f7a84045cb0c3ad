//! A mesh node: one socket, chitchat gossip over it, the prober, and the
//! loop that keeps targets in line with membership and publishes this
//! node's links into its gossip state.

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
use crate::metrics::MeshMetrics;
use crate::net::Net;
use crate::prober::{link_summaries, ProbeTiming, Prober, SharedLinks, Target};
use crate::topology;
use crate::wire::GridKey;

const KEY_SITE: &str = "site";
const KEY_HTTP: &str = "http";
const KEY_VERSION: &str = "version";
const KEY_TAGS: &str = "tags";
const EDGE_PREFIX: &str = "e:";

/// The gossip keys (and key prefixes) the mesh publishes; other stages
/// must pick keys that neither start with nor are the start of these.
pub const GOSSIP_KEYS: &[&str] = &[KEY_SITE, KEY_HTTP, KEY_VERSION, KEY_TAGS, EDGE_PREFIX];

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
    /// Where this node's HTTP API can be reached, published for consoles.
    pub http: Option<String>,
    pub timing: ProbeTiming,
    /// Flows (source ports) each peer is probed over.
    pub probe_flows: usize,
    /// A fixed range of source ports for the flows.
    pub probe_ports: Option<(u16, u16)>,
    pub policy: LinkPolicy,
    pub gossip_interval: Duration,
    pub topology: Topology,
    pub isolated_fraction: f64,
    pub packet_max_age: Duration,
    pub key: GridKey,
    /// Tiers this node belongs to, published for servers.
    pub tags: Vec<String>,
    /// Signs what this node publishes.
    pub identity: Arc<NodeIdentity>,
    /// The keys peers' values are verified with.
    pub pins: Arc<Pins>,
    /// The file `pins` come from (enrolled nodes, or first-seen keys),
    /// re-read when it changes.
    pub pins_file: Option<PathBuf>,
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
            topology: m.topology,
            isolated_fraction: m.isolated_fraction,
            packet_max_age: m.packet_max_age,
            key,
            tags: c.node.tags.clone(),
            identity: Arc::new(NodeIdentity::ephemeral()),
            pins: Arc::new(Pins::default()),
            pins_file: None,
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
/// published.
fn publish(
    chitchat: &mut chitchat::Chitchat,
    identity: &NodeIdentity,
    key: &str,
    payload: &str,
    gone: bool,
) {
    let me = chitchat.self_chitchat_id().clone();
    let state = chitchat.self_node_state();
    match state.get(key).map(identity::payload) {
        Some(Some(current)) if !gone && current == payload => return,
        None if gone => return,
        _ => {}
    }
    let version = state.max_version() + 1;
    let value = identity.sign_value(&me.node_id, me.generation_id, key, version, payload);
    if gone {
        state.set_with_ttl(key, value);
    } else {
        state.set(key, value);
    }
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
    graph_cache: tokio::sync::Mutex<Option<(Instant, Arc<Graph>)>>,
}

/// How old a served graph may be.
pub const GRAPH_MAX_AGE: Duration = Duration::from_millis(100);

impl MeshNode {
    /// Binds the mesh socket and TCP probe port, joins the grid through the
    /// seeds and starts probing.
    pub async fn start(
        settings: MeshSettings,
        net: Arc<dyn Net>,
        registry: Option<&mut Registry>,
    ) -> Result<MeshNode, MeshError> {
        let metrics = Arc::new(MeshMetrics::new());
        if let Some(r) = registry {
            metrics.register(r);
        }
        let bind_err = |source| MeshError::Bind {
            addr: settings.listen,
            source,
        };
        let socket = net.bind(settings.listen).await.map_err(bind_err)?;
        let stop = tokio_util::sync::CancellationToken::new();
        net.listen_tcp(socket.local_addr(), stop.clone())
            .await
            .map_err(bind_err)?;
        let owner = socket.local_addr();
        let mut flows = Vec::with_capacity(settings.probe_flows);
        for flow in 0..settings.probe_flows.max(1) {
            let port = settings
                .probe_ports
                .map(|(first, _)| first + flow as u16)
                .unwrap_or(0);
            let f = net
                .bind_flow(owner, port)
                .await
                .map_err(|source| MeshError::BindFlow {
                    flow,
                    addr: SocketAddr::new(owner.ip(), port),
                    source,
                })?;
            flows.push(f);
        }
        let flow_ports: Vec<u16> = flows.iter().map(|f| f.local_addr().port()).collect();
        let gossip_guard = Arc::new(std::sync::Mutex::new(GossipGuard::new(
            &settings.id,
            GossipLimits::default(),
            settings.pins.clone(),
        )));
        let endpoint::Opened {
            endpoint,
            transport,
            replies,
            receive_task,
            flow_tasks,
        } = endpoint::open(
            &settings.id,
            socket,
            flows,
            settings.key.clone(),
            settings.packet_max_age,
            gossip_guard.clone(),
            metrics.clone(),
        );

        let generation = next_generation();
        let chitchat_id = ChitchatId::new(settings.id.clone(), generation, settings.advertise);
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id: settings.cluster.clone(),
            gossip_interval: settings.gossip_interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: settings.gossip_interval * 5,
                max_interval: Duration::from_secs(10),
                dead_node_grace_period: Duration::from_secs(3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let mut initial = vec![
            (identity::ID_KEY.to_string(), settings.identity.public()),
            (KEY_SITE.to_string(), settings.site.clone()),
            (
                KEY_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        if let Some(h) = &settings.http {
            initial.push((KEY_HTTP.to_string(), h.clone()));
        }
        if !settings.tags.is_empty() {
            initial.push((KEY_TAGS.to_string(), settings.tags.join(",")));
        }
        // chitchat sets the initial values in order, at versions 1, 2, ...
        let initial: Vec<(String, String)> = initial
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let signed =
                    settings
                        .identity
                        .sign_value(&settings.id, generation, &k, i as u64 + 1, &v);
                (k, signed)
            })
            .collect();
        let chitchat = Arc::new(
            spawn_chitchat(config, initial, &transport)
                .await
                .map_err(|e| MeshError::Gossip(format!("{e:#}")))?,
        );

        // Link changes are pushed at once (rumour spreading) rather than
        // waiting for the next anti-entropy round: a node that learns a
        // changed link state gossips with a few peers right away.
        let (push_tx, push_rx) = mpsc::channel::<()>(1);
        // Last state seen per observer and edge key (hashed): 16 bytes an
        // edge, which matters with 100,000 edges. Observers that left the
        // grid are forgotten by the maintainer.
        let seen_states: SeenStates = Default::default();
        let hasher = std::collections::hash_map::RandomState::new();
        let remote_push = push_tx.clone();
        let seen = seen_states.clone();
        let edge_listener =
            chitchat
                .chitchat()
                .lock()
                .await
                .subscribe_event(EDGE_PREFIX, move |event| {
                    use std::hash::BuildHasher;
                    let state = identity::payload(event.value)
                        .and_then(|v| v.as_bytes().first().copied())
                        .unwrap_or(b'n');
                    let key = hasher.hash_one(event.key);
                    let changed = seen
                        .lock()
                        .map(|mut seen| {
                            let observer = match seen.get_mut(&*event.node.node_id) {
                                Some(m) => m,
                                None => seen.entry(event.node.node_id.to_string()).or_default(),
                            };
                            observer.insert(key, state) != Some(state)
                        })
                        .unwrap_or(false);
                    if changed {
                        let _ = remote_push.try_send(());
                    }
                });
        // A node joining is news of the same kind: its peers must start
        // probing it, so its arrival is pushed too.
        let join_push = push_tx.clone();
        let join_listener = chitchat
            .chitchat()
            .lock()
            .await
            .subscribe_event(KEY_SITE, move |_| {
                let _ = join_push.try_send(());
            });
        let span = |task: &'static str| tracing::info_span!("task", node = %settings.id, stage = "mesh", task);
        let pusher_task =
            tokio::spawn(push_changes(chitchat.clone(), push_rx).instrument(span("gossip-push")));

        let links = SharedLinks::default();
        links.lock().expect("link table lock").flow_ports = flow_ports;
        let changes = Arc::new(Notify::new());
        let (targets_tx, targets_rx) = watch::channel(Vec::new());
        let prober = Prober {
            endpoint: endpoint.clone(),
            net,
            timing: settings.timing.clone(),
            policy: settings.policy.clone(),
            targets: targets_rx,
            replies,
            links: links.clone(),
            metrics: metrics.clone(),
            changes: changes.clone(),
        };
        let prober_task = tokio::spawn(prober.run().instrument(span("prober")));
        let maintainer = Maintainer {
            chitchat: chitchat.chitchat(),
            settings: settings.clone(),
            links: links.clone(),
            targets: targets_tx,
            changes,
            push: push_tx,
            published: HashMap::new(),
            seen_states: seen_states.clone(),
            gossip_guard,
            endpoint: endpoint.clone(),
            peers: HashMap::new(),
            pins_read: None,
        };
        let maintain_task = tokio::spawn(maintainer.run().instrument(span("maintainer")));
        tracing::info!(node = %settings.id, site = %settings.site, listen = %settings.listen, seeds = ?settings.seeds, "mesh node started");
        Ok(MeshNode {
            settings,
            chitchat,
            _listeners: [edge_listener, join_listener],
            links,
            metrics,
            tasks: [receive_task, prober_task, maintain_task, pusher_task]
                .into_iter()
                .chain(flow_tasks)
                .collect::<Vec<_>>()
                .into(),
            seen_states,
            stop,
            graph_cache: tokio::sync::Mutex::new(None),
        })
    }

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
        members_of(&guard, true)
    }

    /// The grid graph as this node sees it. Computed at most every
    /// [`GRAPH_MAX_AGE`]: consoles and pollers share one computation.
    pub async fn graph(&self) -> Arc<Graph> {
        let mut cache = self.graph_cache.lock().await;
        if let Some((at, g)) = cache.as_ref() {
            if at.elapsed() < GRAPH_MAX_AGE {
                return g.clone();
            }
        }
        let members = self.members().await;
        let g = Arc::new(graph::build(
            &members,
            self.settings.topology,
            self.settings.isolated_fraction,
        ));
        *cache = Some((Instant::now(), g.clone()));
        g
    }

    /// Bytes of gossip state this node holds (keys and values of every
    /// node), the figure that must not grow with N² under the sites
    /// topology.
    pub async fn gossip_state_bytes(&self) -> usize {
        let chitchat = self.chitchat.chitchat();
        let guard = chitchat.lock().await;
        guard
            .node_states()
            .values()
            .map(|s| {
                s.key_values()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
            })
            .sum()
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
        publish(&mut guard, &self.settings.identity, key, value, false);
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
        // The receive task goes last: chitchat reads a closed receive
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
    }
}

/// Members from chitchat's state; `with_edges` also parses every published
/// link (only the graph needs them).
/// Each node id's newest generation among those that published their key
/// (and so passed the gossip guard's signature checks): a generation that
/// an impostor only named in a digest holds nothing and hides nothing.
fn newest_generations(chitchat: &chitchat::Chitchat) -> HashMap<&str, &ChitchatId> {
    let mut newest: HashMap<&str, &ChitchatId> = HashMap::new();
    for (id, state) in chitchat.node_states() {
        if state.get(identity::ID_KEY).is_none() {
            continue;
        }
        let e = newest.entry(&id.node_id).or_insert(id);
        if id.generation_id > e.generation_id {
            *e = id;
        }
    }
    newest
}

fn members_of(chitchat: &chitchat::Chitchat, with_edges: bool) -> Vec<Member> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let newest = newest_generations(chitchat);
    let mut out = Vec::with_capacity(newest.len());
    for (_, cid) in newest {
        let Some(state) = chitchat.node_state(cid) else {
            continue;
        };
        let get = |k: &str| state.get(k).and_then(identity::payload);
        let Some(site) = get(KEY_SITE) else {
            continue;
        };
        let edges: BTreeMap<String, EdgeValue> = if with_edges {
            state
                .key_values()
                .filter_map(|(k, v)| {
                    let target = k.strip_prefix(EDGE_PREFIX)?;
                    Some((target.to_string(), identity::payload(v)?.parse().ok()?))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        out.push(Member {
            id: cid.node_id.to_string(),
            site: site.to_string(),
            addr: cid.gossip_advertise_addr,
            http: get(KEY_HTTP).map(str::to_string),
            live: live.contains(cid),
            generation: cid.generation_id,
            tags: get(KEY_TAGS)
                .map(|t| {
                    t.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            edges,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Keeps probe targets in line with membership and publishes links.
struct Maintainer {
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    settings: MeshSettings,
    links: SharedLinks,
    targets: watch::Sender<Vec<Target>>,
    changes: Arc<Notify>,
    push: mpsc::Sender<()>,
    /// What this node last published, by target, and when.
    published: HashMap<String, (EdgeValue, Instant)>,
    seen_states: SeenStates,
    gossip_guard: Arc<std::sync::Mutex<GossipGuard>>,
    /// Datagrams are signed for their recipient: the endpoint learns who
    /// is at which address from here.
    endpoint: Arc<endpoint::Endpoint>,
    peers: HashMap<SocketAddr, Arc<str>>,
    /// When the pins file was last read, and its modification time then.
    pins_read: Option<(Instant, Option<std::time::SystemTime>)>,
}

/// The last link state seen in gossip, by observer, then by edge key hash.
type SeenStates = Arc<std::sync::Mutex<HashMap<String, HashMap<u64, u8>>>>;

/// How often the pins file is checked for changes (`gemba node enroll`,
/// `revoke`).
const PINS_EVERY: Duration = Duration::from_secs(5);

impl Maintainer {
    /// Re-reads the enrolled or first-seen keys when their file changed.
    fn refresh_pins(&mut self) {
        let Some(file) = &self.settings.pins_file else {
            return;
        };
        let now = Instant::now();
        if self
            .pins_read
            .is_some_and(|(at, _)| now.duration_since(at) < PINS_EVERY)
        {
            return;
        }
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        let changed = self.pins_read.is_some_and(|(_, m)| m != modified);
        self.pins_read = Some((now, modified));
        if !changed {
            return;
        }
        match identity::read_list(file) {
            Ok(keys) => {
                tracing::info!(file = %file.display(), nodes = keys.len(), "node keys re-read");
                self.settings.pins.reload(keys);
            }
            Err(e) => tracing::warn!(error = %e, "node keys not re-read; the previous ones stay"),
        }
    }

    async fn run(mut self) {
        // Membership and RTT figures are refreshed on this period; state
        // changes are published as soon as the prober reports them.
        let period = (self.settings.timing.interval
            / self.settings.timing.probes_per_interval.max(1))
        .max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changes.notified() => {}
            }
            self.refresh_pins();
            let members = {
                let guard = self.chitchat.lock().await;
                // Node ids chitchat has let go of (after their grace
                // period) are forgotten by the gossip guard as well.
                if let Ok(mut g) = self.gossip_guard.lock() {
                    let held = guard.node_states().len();
                    if g.members() > held {
                        let ids: HashSet<&str> =
                            guard.node_states().keys().map(|c| &*c.node_id).collect();
                        g.retain(|id| ids.contains(id));
                    }
                }
                members_of(&guard, false)
            };
            if let Ok(mut seen) = self.seen_states.lock() {
                if seen.len() > members.len() {
                    let ids: HashSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
                    seen.retain(|observer, _| ids.contains(observer.as_str()));
                }
            }
            let peers: HashMap<SocketAddr, Arc<str>> = members
                .iter()
                .filter(|m| m.id != self.settings.id)
                .map(|m| (m.addr, Arc::from(m.id.as_str())))
                .collect();
            if peers != self.peers {
                self.endpoint.set_peers(peers.clone());
                self.peers = peers;
            }
            let wanted: Vec<Target> =
                topology::targets(&self.settings.id, &members, self.settings.topology)
                    .into_iter()
                    .map(|i| Target {
                        id: members[i].id.clone(),
                        addr: members[i].addr,
                    })
                    .collect();
            self.targets.send_if_modified(|current| {
                if *current != wanted {
                    *current = wanted;
                    true
                } else {
                    false
                }
            });
            let now = Instant::now();
            let (values, gone): (Vec<(String, EdgeValue)>, Vec<String>) = {
                let mut table = self.links.lock().expect("link table lock");
                let values = table
                    .trackers
                    .iter_mut()
                    .filter_map(|(id, t)| {
                        let last = self.published.get(id);
                        let v = t.edge_value(now, &self.settings.policy, last.map(|(p, _)| p));
                        let send = match last {
                            None => true,
                            // A new state, loss kind, count of failing
                            // flows or TCP result goes out at once;
                            // new RTT or loss figures at most every
                            // FIGURES_REFRESH, so a loaded network's jitter
                            // does not turn into gossip load that adds more
                            // jitter.
                            Some((p, at)) => {
                                p.state != v.state
                                    || p.tcp != v.tcp
                                    || p.kind != v.kind
                                    || p.failing != v.failing
                                    || (*p != v && now.duration_since(*at) >= FIGURES_REFRESH)
                            }
                        };
                        send.then(|| (id.clone(), v))
                    })
                    .collect();
                let gone = self
                    .published
                    .keys()
                    .filter(|t| !table.trackers.contains_key(*t))
                    .cloned()
                    .collect();
                (values, gone)
            };
            if values.is_empty() && gone.is_empty() {
                continue;
            }
            let state_changed = values.iter().any(|(id, v)| {
                self.published
                    .get(id)
                    .is_none_or(|(p, _)| p.state != v.state)
            });
            {
                let mut guard = self.chitchat.lock().await;
                let identity = &self.settings.identity;
                for t in &gone {
                    publish(&mut guard, identity, &format!("{EDGE_PREFIX}{t}"), "", true);
                }
                for (target, value) in &values {
                    publish(
                        &mut guard,
                        identity,
                        &format!("{EDGE_PREFIX}{target}"),
                        &value.to_string(),
                        false,
                    );
                }
            }
            for t in gone {
                self.published.remove(&t);
            }
            self.published
                .extend(values.into_iter().map(|(id, v)| (id, (v, now))));
            if state_changed {
                let _ = self.push.try_send(());
            }
        }
    }
}

/// How often changed RTT and loss figures of an unchanged link state are
/// published.
const FIGURES_REFRESH: Duration = Duration::from_secs(30);

/// Peers a push goes to.
const PUSH_FANOUT: usize = 3;

/// Gossips with a few random live peers whenever a link state changed here
/// or was learned from a peer; bursts are coalesced.
async fn push_changes(chitchat: Arc<ChitchatHandle>, mut pushes: mpsc::Receiver<()>) {
    let mut rng = endpoint::unix_ms() ^ 0x9e37_79b9_7f4a_7c15;
    while pushes.recv().await.is_some() {
        // Let the changes of one event (one probe round) arrive together.
        tokio::time::sleep(Duration::from_millis(10)).await;
        while pushes.try_recv().is_ok() {}
        let peers: Vec<SocketAddr> = {
            let c = chitchat.chitchat();
            let guard = c.lock().await;
            let me = guard.self_chitchat_id().clone();
            guard
                .live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .collect()
        };
        let mut peers = peers;
        for _ in 0..PUSH_FANOUT.min(peers.len()) {
            // xorshift: cheap, and good enough to spread pushes.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let pick = peers.swap_remove((rng % peers.len() as u64) as usize);
            let _ = chitchat.gossip(pick);
        }
    }
}
