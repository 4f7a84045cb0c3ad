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

/// Runs `f` on the probe path's runtime: sockets bound there are driven by
/// it.
async fn on_probe_path<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = std::io::Result<T>> + Send + 'static,
) -> std::io::Result<T> {
    rt.spawn(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Where a node's probe path runs: a thread of its own with a one-thread
/// runtime, or the caller's runtime (see [`Net::probe_thread`]).
struct ProbePath {
    handle: tokio::runtime::Handle,
    /// Ends the thread; its runtime stops with every task on it.
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProbePath {
    fn own_thread(node: &str) -> std::io::Result<ProbePath> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stop = tokio_util::sync::CancellationToken::new();
        let ended = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "probe-{}",
                node.chars().take(9).collect::<String>()
            ))
            .spawn(move || {
                // Ahead of the node's batch work (see sched).
                if let Err(e) = crate::sched::interactive_thread() {
                    tracing::debug!(error = %e, "the probe thread keeps its scheduling class");
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(ended.cancelled());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the probe thread did not start"))??;
        Ok(ProbePath {
            handle,
            stop,
            thread: Some(thread),
        })
    }

    fn shared() -> ProbePath {
        ProbePath {
            handle: tokio::runtime::Handle::current(),
            stop: Default::default(),
            thread: None,
        }
    }

    /// Stops the thread, if the path has one, and waits for it.
    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
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
    probe: tokio::sync::Mutex<ProbePath>,
    endpoint: Arc<endpoint::Endpoint>,
    sample_subscriber: SampleSubscriber,
    /// Where each node has proved it sends from (servers hear presences).
    proven: Proven,
    joining: Arc<Joining>,
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
        // The probe path (sockets, probe answers, the prober) runs apart
        // from everything else the node does.
        let probe = if net.probe_thread() {
            ProbePath::own_thread(&settings.id).map_err(bind_err)?
        } else {
            ProbePath::shared()
        };
        let rt = &probe.handle;
        let n = net.clone();
        let listen = settings.listen;
        let socket = on_probe_path(rt, async move { n.bind(listen).await })
            .await
            .map_err(bind_err)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let (n, owner, s) = (net.clone(), socket.local_addr(), stop.clone());
        on_probe_path(rt, async move { n.listen_tcp(owner, s).await })
            .await
            .map_err(bind_err)?;
        let mut flows = Vec::with_capacity(settings.probe_flows);
        for flow in 0..settings.probe_flows.max(1) {
            let port = settings
                .probe_ports
                .map(|(first, _)| first + flow as u16)
                .unwrap_or(0);
            let n = net.clone();
            let f = on_probe_path(rt, async move { n.bind_flow(owner, port).await })
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
            inbound,
            samples,
            replies,
            receive_task,
            flow_tasks,
        } = endpoint::open(
            &settings.id,
            socket,
            flows,
            settings.key.clone(),
            settings.packet_max_age,
            metrics.clone(),
            &probe.handle,
        );
        let endpoint::GossipPath {
            transport,
            task: gossip_task,
        } = endpoint::gossip_path(
            endpoint.clone(),
            inbound,
            gossip_guard.clone(),
            settings.stall_gossip.clone(),
            stop.clone(),
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
        if settings.server {
            initial.push((KEY_ROLE.to_string(), "server".to_string()));
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
        let (push_tx, push_rx) = mpsc::channel::<Arc<str>>(PUSH_QUEUE);
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
                    let links = identity::payload(event.value)
                        .map(|v| decode_links(event.key, v))
                        .unwrap_or_default();
                    let changed = seen
                        .lock()
                        .map(|mut seen| {
                            let observer = match seen.get_mut(&*event.node.node_id) {
                                Some(m) => m,
                                None => seen.entry(event.node.node_id.to_string()).or_default(),
                            };
                            // News worth passing on at once: a state that
                            // changed, or a link first seen in trouble. A
                            // link first seen up (a grid starting) travels
                            // with the next rounds.
                            let mut changed = false;
                            for (target, edge) in &links {
                                let state = edge.state as u8;
                                changed |= match observer.insert(hasher.hash_one(target), state) {
                                    Some(before) => before != state,
                                    None => edge.state != crate::link::LinkState::Up,
                                };
                            }
                            changed
                        })
                        .unwrap_or(false);
                    if changed {
                        let _ = remote_push.try_send(event.node.node_id.clone());
                    }
                });
        // A node joining: this node's targets are brought up to date at
        // once, so it is probed as soon as it is heard of. Its arrival
        // travels with the gossip rounds: a grid starting all at once
        // would otherwise push (each push a full exchange) on every one of
        // N² arrivals.
        let changes = Arc::new(Notify::new());
        let joined = changes.clone();
        let join_listener = chitchat
            .chitchat()
            .lock()
            .await
            .subscribe_event(KEY_SITE, move |_| {
                joined.notify_one();
            });
        let span = |task: &'static str| tracing::info_span!("task", node = %settings.id, stage = "mesh", task);
        let joining: Arc<Joining> = Default::default();
        let (targets_tx, targets_rx) = watch::channel(Vec::new());
        let pusher_task = tokio::spawn(
            push_changes(
                chitchat.clone(),
                endpoint.clone(),
                joining.clone(),
                targets_rx.clone(),
                settings.topology,
                push_rx,
            )
            .instrument(span("gossip-push")),
        );

        let links = SharedLinks::default();
        links.lock().expect("link table lock").flow_ports = flow_ports;
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
        let prober_task = probe.handle.spawn(prober.run().instrument(span("prober")));
        let maintainer = Maintainer {
            chitchat: chitchat.chitchat(),
            joining: joining.clone(),
            settings: settings.clone(),
            links: links.clone(),
            targets: targets_tx,
            changes,
            push: push_tx,
            publisher: LinkPublisher::default(),
            metrics: metrics.clone(),
            seen_states: seen_states.clone(),
            gossip_guard,
            endpoint: endpoint.clone(),
            peers: HashMap::new(),
            pins_read: None,
            intro_pushed: None,
            intro_push_due: None,
        };
        let maintain_task = tokio::spawn(maintainer.run().instrument(span("maintainer")));
        let sample_subscriber: SampleSubscriber = Default::default();
        let proven: Proven = Default::default();
        let intake_task = tokio::spawn(
            SampleIntake {
                own_id: settings.id.to_string(),
                proven: proven.clone(),
                pins: settings.pins.clone(),
                subscriber: sample_subscriber.clone(),
                metrics: metrics.clone(),
                max_age_ms: settings.packet_max_age.as_millis() as u64,
            }
            .run(samples)
            .instrument(span("sample-intake")),
        );
        let presence_task = tokio::spawn(
            Presence {
                chitchat: chitchat.chitchat(),
                joining: joining.clone(),
                settings: settings.clone(),
                endpoint: endpoint.clone(),
            }
            .run()
            .instrument(span("presence")),
        );
        tracing::info!(node = %settings.id, site = %settings.site, listen = %settings.listen, seeds = ?settings.seeds, "mesh node started");
        Ok(MeshNode {
            settings,
            chitchat,
            _listeners: [edge_listener, join_listener],
            links,
            metrics,
            // The gossip check goes first: it stops last.
            tasks: [
                gossip_task,
                receive_task,
                prober_task,
                maintain_task,
                pusher_task,
                intake_task,
                presence_task,
            ]
            .into_iter()
            .chain(flow_tasks)
            .collect::<Vec<_>>()
            .into(),
            seen_states,
            stop,
            probe: tokio::sync::Mutex::new(probe),
            endpoint,
            sample_subscriber,
            proven,
            joining,
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
        self.probe.lock().await.stop().await;
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

/// How long a node just heard of counts as live before chitchat has
/// judged it (see [`Joining`]).
const JOIN_GRACE: Duration = Duration::from_secs(10);

/// Nodes heard of that chitchat has not called live yet. chitchat judges a
/// node by the intervals between its heartbeats, so only after two of them
/// and at its next gossip round: for its first seconds a node that just
/// joined would look dead, its links stale and the node down on every
/// console. Such a node counts as live for [`JOIN_GRACE`] after it was
/// first heard of; once chitchat has called it live, chitchat's word holds.
#[derive(Default)]
struct Joining(std::sync::Mutex<HashMap<ChitchatId, (Instant, bool)>>);

impl Joining {
    /// Whether `cid` counts as live, given what chitchat says.
    fn live(&self, cid: &ChitchatId, chitchat_live: bool, now: Instant) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return chitchat_live;
        };
        let (first, confirmed) = match seen.get_mut(cid) {
            Some(e) => e,
            None => seen.entry(cid.clone()).or_insert((now, false)),
        };
        if chitchat_live {
            *confirmed = true;
            return true;
        }
        !*confirmed && now.duration_since(*first) < JOIN_GRACE
    }

    /// Forgets the nodes chitchat no longer holds.
    fn retain(&self, held: impl Fn(&ChitchatId) -> bool) {
        if let Ok(mut seen) = self.0.lock() {
            seen.retain(|cid, _| held(cid));
        }
    }
}

/// The links a node publishes, decoded from its signed values.
fn links_of(state: &chitchat::NodeState) -> impl Iterator<Item = (String, EdgeValue)> + '_ {
    state
        .key_values()
        .filter_map(|(k, v)| Some((k.strip_prefix(EDGE_PREFIX)?, identity::payload(v)?)))
        .flat_map(|(k, v)| decode_links(k, v))
}

fn members_of(chitchat: &chitchat::Chitchat, joining: &Joining, with_edges: bool) -> Vec<Member> {
    let chitchat_live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let now = Instant::now();
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
            links_of(state).collect()
        } else {
            BTreeMap::new()
        };
        out.push(Member {
            id: cid.node_id.to_string(),
            site: site.to_string(),
            addr: cid.gossip_advertise_addr,
            http: get(KEY_HTTP).map(str::to_string),
            live: joining.live(cid, chitchat_live.contains(cid), now),
            generation: cid.generation_id,
            server: get(KEY_ROLE) == Some("server"),
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

/// An agent's sample as a server receives it, its signature checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSample {
    pub node: String,
    pub name: String,
    pub value: String,
}

type SampleSubscriber = Arc<std::sync::Mutex<Option<mpsc::Sender<AgentSample>>>>;

/// How often a node proves its address to each server it knows.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a proof holds: a node that stops sending them has no proven
/// address after this.
pub const PRESENCE_VALID: Duration = Duration::from_secs(60);
/// The body of a presence, followed by the recipient server's id.
const PRESENCE: &str = "presence ";
/// Nodes whose proven address a server keeps at most.
const MAX_PROVEN: usize = 100_000;

/// Where each node has proved it sends from, and when.
type Proven = Arc<std::sync::Mutex<HashMap<String, (std::net::IpAddr, Instant)>>>;

/// Proves this node's address to every live server: a signed presence
/// (this node's key, the time, the server's id) sent straight to each, so
/// the server learns the address the node's packets come from. What a
/// node advertises in gossip is only a claim; a server acts on proven
/// addresses only (remediation steps, log fetches, tier checks).
struct Presence {
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    joining: Arc<Joining>,
    settings: MeshSettings,
    endpoint: Arc<endpoint::Endpoint>,
}

impl Presence {
    async fn run(self) {
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let servers: Vec<(String, SocketAddr)> = {
                let guard = self.chitchat.lock().await;
                members_of(&guard, &self.joining, false)
                    .into_iter()
                    .filter(|m| m.server && m.live && m.id != self.settings.id)
                    .map(|m| (m.id, m.addr))
                    .collect()
            };
            let now = Instant::now();
            sent.retain(|id, _| servers.iter().any(|(s, _)| s == id));
            for (id, addr) in servers {
                if sent
                    .get(&id)
                    .is_some_and(|at| now.duration_since(*at) < PRESENCE_INTERVAL)
                {
                    continue;
                }
                let signed = self.settings.identity.sign_samples(
                    &self.settings.id,
                    endpoint::unix_ms(),
                    format!("{PRESENCE}{id}").as_bytes(),
                );
                self.endpoint
                    .send_to(crate::wire::Kind::Samples, addr, &id, &signed)
                    .await;
                sent.insert(id, now);
            }
        }
    }
}

/// Checks agents' samples (the sender's own key, the time it signed them)
/// and hands them to the server stage.
struct SampleIntake {
    own_id: String,
    proven: Proven,
    pins: Arc<Pins>,
    subscriber: SampleSubscriber,
    metrics: Arc<MeshMetrics>,
    max_age_ms: u64,
}

impl SampleIntake {
    async fn run(self, mut samples: mpsc::Receiver<endpoint::InboundSamples>) {
        while let Some(s) = samples.recv().await {
            if let Err(reason) = self.take(s) {
                self.metrics
                    .samples_refused
                    .get_or_create(&crate::metrics::ReasonLabel { reason })
                    .inc();
            }
        }
    }

    fn take(&self, s: endpoint::InboundSamples) -> Result<(), &'static str> {
        let to = self
            .subscriber
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or("not_a_server")?;
        let key = self.pins.get(&s.sender).ok_or("unknown_identity")?;
        let (at, body) =
            identity::open_samples(&key, &s.sender, &s.payload).ok_or("bad_signature")?;
        if endpoint::unix_ms().abs_diff(at) > self.max_age_ms {
            return Err("expired");
        }
        let body = std::str::from_utf8(body).map_err(|_| "malformed")?;
        if let Some(recipient) = body.strip_prefix(PRESENCE) {
            // Signed for this server only: another server that heard it
            // cannot pass it on from its own address.
            if recipient != self.own_id {
                return Err("not_for_this_node");
            }
            let mut proven = self.proven.lock().map_err(|_| "overloaded")?;
            if proven.len() >= MAX_PROVEN && !proven.contains_key(&s.sender) {
                let now = Instant::now();
                proven.retain(|_, (_, at)| now.duration_since(*at) < PRESENCE_VALID);
                if proven.len() >= MAX_PROVEN {
                    return Err("overloaded");
                }
            }
            proven.insert(s.sender, (s.from.ip(), Instant::now()));
            self.metrics.presences.inc();
            return Ok(());
        }
        let (name, value) = body.split_once(' ').ok_or("malformed")?;
        to.try_send(AgentSample {
            node: s.sender,
            name: name.to_string(),
            value: value.to_string(),
        })
        .map_err(|_| "overloaded")
    }
}

/// Keeps probe targets in line with membership and publishes links.
struct Maintainer {
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    joining: Arc<Joining>,
    settings: MeshSettings,
    links: SharedLinks,
    targets: watch::Sender<Vec<Target>>,
    changes: Arc<Notify>,
    /// Node ids with news to push (this node's own, here).
    push: mpsc::Sender<Arc<str>>,
    /// What of this node's links to publish, and when.
    publisher: LinkPublisher,
    metrics: Arc<MeshMetrics>,
    seen_states: SeenStates,
    gossip_guard: Arc<std::sync::Mutex<GossipGuard>>,
    /// Datagrams are signed for their recipient: the endpoint learns who
    /// is at which address from here.
    endpoint: Arc<endpoint::Endpoint>,
    peers: HashMap<SocketAddr, Arc<str>>,
    /// When the pins file was last read, and its modification time then.
    pins_read: Option<(Instant, Option<std::time::SystemTime>)>,
    /// When links first measured up were last pushed, and when the next
    /// such push is due if some wait (see [`INTRO_PUSH_GAP`]).
    intro_pushed: Option<Instant>,
    intro_push_due: Option<Instant>,
}

/// The least time between two pushes of links first measured up: a grid
/// that starts measures its links batch after batch as it learns of its
/// members, and each push goes to every peer probed. Trouble is pushed at
/// once.
const INTRO_PUSH_GAP: Duration = Duration::from_secs(1);

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
        match identity::read_node_list(file) {
            Ok(list) => {
                tracing::info!(file = %file.display(), nodes = list.keys.len(), "node keys re-read");
                self.settings.pins.reload(list);
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
            let intro_due = self.publisher.intro_due();
            let push_due = self.intro_push_due;
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changes.notified() => {}
                _ = sleep_until_opt(intro_due) => {}
                _ = sleep_until_opt(push_due) => {
                    self.push_own(false);
                }
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
                self.joining.retain(|cid| guard.node_state(cid).is_some());
                members_of(&guard, &self.joining, false)
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
                    tracing::debug!(targets = wanted.len(), "probe targets changed");
                    *current = wanted;
                    true
                } else {
                    false
                }
            });
            let now = Instant::now();
            let current: Vec<(String, EdgeValue)> = {
                let mut table = self.links.lock().expect("link table lock");
                table
                    .trackers
                    .iter_mut()
                    .map(|(id, t)| {
                        let last = self.publisher.previous(id);
                        (id.clone(), t.edge_value(now, &self.settings.policy, last))
                    })
                    .collect()
            };
            let out = self.publisher.plan(now, current);
            if out.is_empty() {
                continue;
            }
            tracing::debug!(
                set = out.set.len(),
                deleted = out.delete.len(),
                push = out.state_changed,
                "links published"
            );
            let mut published = 0;
            {
                let mut guard = self.chitchat.lock().await;
                let identity = &self.settings.identity;
                for key in &out.delete {
                    published += publish(&mut guard, identity, key, "", true) as u64;
                }
                for (key, value) in &out.set {
                    published += publish(&mut guard, identity, key, value, false) as u64;
                }
            }
            self.metrics
                .values_published
                .get_or_create(&ClassLabel { class: "link" })
                .inc_by(published);
            if out.state_changed {
                self.push_own(out.trouble);
            }
        }
    }

    /// Pushes this node's news: trouble at once, links first measured up
    /// at most once per [`INTRO_PUSH_GAP`] (the rest when it is due).
    fn push_own(&mut self, trouble: bool) {
        let now = Instant::now();
        if !trouble {
            if let Some(at) = self.intro_pushed {
                if now < at + INTRO_PUSH_GAP {
                    self.intro_push_due = Some(at + INTRO_PUSH_GAP);
                    return;
                }
            }
            self.intro_pushed = Some(now);
        }
        // Whatever waited goes along: a push carries the whole state.
        self.intro_push_due = None;
        let _ = self.push.try_send(Arc::from(self.settings.id.as_str()));
    }
}

/// Peers a push of other nodes' news goes to.
const PUSH_FANOUT: usize = 3;
/// A node's own news goes straight to the peers it probes, at most this
/// many (random ones beyond): every peer hears of a changed link within
/// one hop, at the cost of about one probe round, instead of waiting for
/// the rumour to find it.
const PUSH_DIRECT_MAX: usize = 64;
/// The least time between two pushes of one node.
const PUSH_GAP: Duration = Duration::from_millis(100);

/// News a push may carry, at most: a datagram's worth.
const PUSH_MAX_BYTES: usize = 60_000;
/// Node ids with news waiting to be pushed, at most (more is news the
/// gossip rounds carry).
const PUSH_QUEUE: usize = 1024;

/// Pushes news at once instead of waiting for the gossip rounds: whenever
/// a link state changed here or was learned from a peer, the whole state of
/// each node with news goes to a few random live peers, as a rumour (see
/// [`crate::gossip_guard::rumour`]). This node's own news also goes, alone,
/// to every peer it probes (up to [`PUSH_DIRECT_MAX`]). Bursts are
/// coalesced.
async fn push_changes(
    chitchat: Arc<ChitchatHandle>,
    endpoint: Arc<endpoint::Endpoint>,
    joining: Arc<Joining>,
    targets: watch::Receiver<Vec<Target>>,
    topology: Topology,
    mut pushes: mpsc::Receiver<Arc<str>>,
) {
    let mut rng = endpoint::unix_ms() ^ 0x9e37_79b9_7f4a_7c15;
    let mut last: Option<Instant> = None;
    let mut news: Vec<Arc<str>> = Vec::new();
    loop {
        // News that did not fit the last push goes in the next one, without
        // waiting for more news to arrive.
        if news.is_empty() {
            match pushes.recv().await {
                Some(first) => news.push(first),
                None => break,
            }
        }
        // Let the changes of one event (one probe round) arrive together,
        // and never push more often than the gap. A node that pushed
        // nothing lately pushes at once.
        let wait = last
            .map(|at| (at + PUSH_GAP).saturating_duration_since(Instant::now()))
            .unwrap_or_default()
            .max(Duration::from_millis(10));
        tokio::time::sleep(wait).await;
        while let Ok(id) = pushes.try_recv() {
            news.push(id);
        }
        news.sort();
        news.dedup();
        last = Some(Instant::now());
        let (message, peers, own) = {
            let c = chitchat.chitchat();
            let guard = c.lock().await;
            let me = guard.self_chitchat_id().node_id.clone();
            // This node's own news, on its own: small, and for every peer
            // it probes.
            let own = news
                .iter()
                .any(|id| **id == *me)
                .then(|| guard.node_state(guard.self_chitchat_id()))
                .flatten()
                .map(|state| crate::gossip_guard::rumour(&[rumour_of(state)]));
            let newest = newest_generations(&guard);
            let mut nodes = Vec::new();
            let mut origins: Vec<(Arc<str>, HashSet<String>)> = Vec::new();
            let mut bytes = 0;
            // What does not fit waits for the next push.
            while let Some(id) = news.last() {
                let Some(state) = newest.get(&**id).and_then(|cid| guard.node_state(cid)) else {
                    news.pop();
                    continue;
                };
                let rumour = rumour_of(state);
                let size: usize = rumour
                    .kvs
                    .iter()
                    .map(|kv| kv.0.len() + kv.1.len() + 16)
                    .sum();
                if !nodes.is_empty() && bytes + size > PUSH_MAX_BYTES {
                    break;
                }
                bytes += size;
                nodes.push(rumour);
                // The peers it has trouble reaching may not have got its
                // own push either.
                let troubled: HashSet<String> = links_of(state)
                    .filter(|(_, e)| e.state != crate::link::LinkState::Up)
                    .map(|(t, _)| t)
                    .collect();
                origins.extend(news.pop().map(|id| (id, troubled)));
            }
            // Live as this node counts it: a grid that is starting has no
            // node chitchat calls live yet, and its news must travel too.
            let members: Vec<Member> = members_of(&guard, &joining, false)
                .into_iter()
                .filter(|m| m.live)
                .collect();
            let peers = relay_peers(&members, &me, &origins, topology);
            (crate::gossip_guard::rumour(&nodes), peers, own)
        };
        let mut direct: Vec<SocketAddr> = Vec::new();
        if let Some(own) = own {
            let mut probed: Vec<SocketAddr> = targets.borrow().iter().map(|t| t.addr).collect();
            direct = pick_random(&mut rng, &mut probed, PUSH_DIRECT_MAX);
            for &addr in &direct {
                endpoint.send_gossip(addr, &own).await;
            }
        }
        let mut peers: Vec<SocketAddr> =
            peers.into_iter().filter(|p| !direct.contains(p)).collect();
        for pick in pick_random(&mut rng, &mut peers, PUSH_FANOUT) {
            endpoint.send_gossip(pick, &message).await;
        }
    }
}

/// Where a rumour about `origins` is passed on: the live peers that some
/// origin does not probe, since each origin pushed its own news straight to
/// the peers it probes (up to [`PUSH_DIRECT_MAX`]; all peers when it probes
/// more), and the peers its links to are not up (its push to them may
/// have been lost on that link). In a healthy full mesh that is nobody,
/// and a grid that loses a node does not relay every survivor's news to
/// everyone; with sites, the news crosses to the other sites.
fn relay_peers(
    members: &[Member],
    me: &str,
    origins: &[(Arc<str>, HashSet<String>)],
    topology: Topology,
) -> Vec<SocketAddr> {
    let mut unreached: HashSet<usize> = HashSet::new();
    for (origin, troubled) in origins {
        let probed: HashSet<usize> = topology::targets(origin, members, topology)
            .into_iter()
            .collect();
        let all = probed.len() > PUSH_DIRECT_MAX;
        unreached.extend(
            (0..members.len())
                .filter(|i| all || !probed.contains(i) || troubled.contains(&members[*i].id))
                .filter(|&i| *members[i].id != **origin),
        );
    }
    let mut out: Vec<usize> = unreached
        .into_iter()
        .filter(|&i| members[i].id != me)
        .collect();
    out.sort_unstable();
    out.into_iter().map(|i| members[i].addr).collect()
}

/// Takes up to `k` random elements out of `from`.
fn pick_random(rng: &mut u64, from: &mut Vec<SocketAddr>, k: usize) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(k.min(from.len()));
    while out.len() < k && !from.is_empty() {
        // xorshift: cheap, and good enough to spread pushes.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        out.push(from.swap_remove((*rng % from.len() as u64) as usize));
    }
    out
}

/// A node's whole state, as a rumour carries it.
fn rumour_of(state: &chitchat::NodeState) -> crate::gossip_guard::NodeRumour {
    let mut kvs: Vec<(String, String, u64, u8)> = state
        .key_values_including_deleted()
        .filter_map(|(k, v)| {
            let status = match v.status {
                chitchat::DeletionStatus::Set => 0,
                chitchat::DeletionStatus::DeleteAfterTtl(_) => 2,
                // Never sent by gemba, and refused by the guard.
                chitchat::DeletionStatus::Deleted(_) => return None,
            };
            Some((k.to_string(), v.value.clone(), v.version, status))
        })
        .collect();
    kvs.sort_by_key(|kv| kv.2);
    crate::gossip_guard::NodeRumour {
        id: state.chitchat_id().clone(),
        last_gc_version: state.last_gc_version(),
        kvs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, sites: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("n{i:02}"),
                site: format!("s{}", i % sites),
                addr: SocketAddr::from(([127, 0, 9, i as u8 + 1], 7946)),
                http: None,
                live: true,
                generation: 1,
                tags: vec![],
                server: false,
                edges: BTreeMap::new(),
            })
            .collect()
    }

    #[test]
    fn news_is_relayed_only_to_peers_its_origin_did_not_push_to() {
        // A full mesh: every origin pushed its news to everyone, so a node
        // that lost a peer does not have every survivor's news relayed.
        let full = members(20, 1);
        let origin = |id: &str, troubled: &[&str]| {
            (
                Arc::<str>::from(id),
                troubled
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<HashSet<String>>(),
            )
        };
        let origins = vec![origin("n03", &[]), origin("n07", &[])];
        assert!(relay_peers(&full, "n05", &origins, Topology::Full).is_empty());
        // ...except to a peer the origin cannot reach: its push was lost.
        let origins = vec![origin("n03", &["n09"])];
        assert_eq!(
            relay_peers(&full, "n05", &origins, Topology::Full),
            vec![full[9].addr]
        );
        // Sites: the news crosses to the peers the origin does not probe.
        let sites = members(12, 3);
        let topo = Topology::Sites { representatives: 1 };
        let probed: HashSet<SocketAddr> = topology::targets("n04", &sites, topo)
            .into_iter()
            .map(|i| sites[i].addr)
            .collect();
        let relayed = relay_peers(&sites, "n01", &[origin("n04", &[])], topo);
        assert!(!relayed.is_empty());
        for addr in &relayed {
            assert!(!probed.contains(addr), "{addr} heard it from n04 itself");
            assert_ne!(*addr, sites[4].addr, "back to the origin");
            assert_ne!(*addr, sites[1].addr, "to this node itself");
        }
        // An origin that probes more peers than it pushes to leaves nobody
        // out.
        let big = members(PUSH_DIRECT_MAX + 10, 1);
        let relayed = relay_peers(&big, "n00", &[origin("n01", &[])], Topology::Full);
        assert_eq!(relayed.len(), big.len() - 2);
    }
}
