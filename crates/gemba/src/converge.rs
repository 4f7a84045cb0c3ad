//! Wiring of checks and the escalator into a running node: the agent runs
//! its own node checks and publishes them in gossip; a server also runs
//! global, tier and mesh checks, gathers every node's results from gossip
//! and feeds the escalator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gemba_checks::placement::{self, NodeEntry, TierVerdicts};
use gemba_checks::{CheckResult, Clock, MeshSource, MeshView, Runner};
use gemba_core::{Config, Policy};
use gemba_escalator::{Directory, EscalatorHandle, NodeInfo, ServiceConfig};
use gemba_mesh::MeshNode;
use gemba_store::SqliteStore;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Gossip keys of check results: `c:<check>`.
pub const RESULT_PREFIX: &str = "c:";

struct MeshGraph(Arc<MeshNode>);

#[async_trait::async_trait]
impl MeshSource for MeshGraph {
    async fn view(&self) -> MeshView {
        MeshView {
            graph: self.0.graph().await,
            self_id: self.0.id().to_string(),
        }
    }
}

/// The running checks and escalator of one node.
pub struct Convergence {
    pub escalator: Option<EscalatorHandle>,
    tasks: Vec<JoinHandle<()>>,
    _listener: Option<gemba_mesh::ListenerHandle>,
}

/// How long running steps may take to finish when the node stops.
pub const STEP_GRACE: Duration = Duration::from_secs(20);

impl Convergence {
    /// Stops checks at once; lets running escalation steps finish within
    /// [`STEP_GRACE`] so their outcomes are journaled.
    pub async fn stop(self) {
        if let Some(h) = &self.escalator {
            let left = h.drain(STEP_GRACE).await;
            if left > 0 {
                tracing::warn!(steps = left, "stopped with escalation steps still running");
            }
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

pub fn entry_of(config: &Config) -> NodeEntry {
    NodeEntry {
        id: config.node.id.to_string(),
        addr: config.mesh.advertise.ip().to_string(),
        tiers: config.node.tags.clone(),
    }
}

/// The grid's nodes as gossip describes them.
async fn nodes_of(mesh: &MeshNode) -> Vec<NodeEntry> {
    mesh.members()
        .await
        .into_iter()
        .map(|m| NodeEntry {
            id: m.id,
            addr: m.addr.ip().to_string(),
            tiers: m.tags,
        })
        .collect()
}

pub async fn start(
    config: &Config,
    mesh: Arc<MeshNode>,
    registry: &mut Registry,
) -> anyhow::Result<Convergence> {
    start_with(config, mesh, registry, Duration::from_millis(250)).await
}

pub async fn start_with(
    config: &Config,
    mesh: Arc<MeshNode>,
    registry: &mut Registry,
    tick: Duration,
) -> anyhow::Result<Convergence> {
    let policy = Arc::new(config.policy.clone());
    let clock = Clock::new();
    let me = entry_of(config);
    let mut tasks = Vec::new();

    // The server side first: the agent's results feed it.
    let mut escalator = None;
    let mut to_escalator: Option<mpsc::Sender<CheckResult>> = None;
    let mut listener = None;
    if config.node.server {
        std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                config.node.data_dir.display()
            )
        })?;
        let store_path = policy
            .escalator
            .store
            .clone()
            .unwrap_or_else(|| config.node.data_dir.join("gemba.db"));
        let store = SqliteStore::open(&store_path)?;
        let (dir_tx, dir_rx) = watch::channel(Directory::new());
        let (handle, results_tx, task) = gemba_escalator::spawn(
            ServiceConfig {
                policy: policy.clone(),
                store: Arc::new(store),
                holder: config.node.id.to_string(),
                directory: dir_rx,
                clock,
                tick,
            },
            Some(registry),
        );
        tasks.push(task);
        escalator = Some(handle);
        // Folds per-node tier results into tier verdicts on the way in.
        let (fold_tx, mut fold_rx) = mpsc::channel::<CheckResult>(4096);
        let fold_policy = policy.clone();
        let forward = results_tx.clone();
        let fold_dir = dir_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut tiers = TierVerdicts::default();
            while let Some(r) = fold_rx.recv().await {
                let size = match &r.scope {
                    gemba_core::Scope::Tier(t) => fold_dir
                        .borrow()
                        .values()
                        .filter(|n| n.tiers.contains(t))
                        .count(),
                    _ => 0,
                };
                let verdict = tiers.fold(&fold_policy, &r, size);
                if forward.send(r).await.is_err() {
                    break;
                }
                if let Some(v) = verdict {
                    let _ = forward.send(v).await;
                }
            }
        }));
        to_escalator = Some(fold_tx.clone());

        // Other nodes' results arrive by gossip.
        let (gossip_tx, mut gossip_rx) = mpsc::channel::<String>(4096);
        let self_id = me.id.clone();
        listener = Some(
            mesh.subscribe(RESULT_PREFIX, move |node, _key, value| {
                if node != self_id {
                    // Full means the escalator is far behind; the next
                    // result of the same check carries the same news.
                    let _ = gossip_tx.try_send(value.to_string());
                }
            })
            .await,
        );
        let from_gossip = fold_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(v) = gossip_rx.recv().await {
                if let Some(r) = CheckResult::from_gossip(&v) {
                    if from_gossip.send(r).await.is_err() {
                        break;
                    }
                }
            }
        }));

        // Membership drives the directory and the server's instances.
        let (inst_tx, inst_rx) = watch::channel(Vec::new());
        let (srv_reports_tx, mut srv_reports_rx) = mpsc::channel(4096);
        tasks.push(tokio::spawn(
            Runner {
                instances: inst_rx,
                reports: srv_reports_tx,
                mesh: Some(Arc::new(MeshGraph(mesh.clone()))),
                observer: me.id.clone(),
                max_concurrent: 32,
                clock,
            }
            .run(),
        ));
        let server_feed = fold_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((r, _)) = srv_reports_rx.recv().await {
                if server_feed.send(r).await.is_err() {
                    break;
                }
            }
        }));
        let dir_mesh = mesh.clone();
        let dir_policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let mut last: Vec<NodeEntry> = Vec::new();
            let mut first = true;
            loop {
                let nodes = nodes_of(&dir_mesh).await;
                if nodes != last || first {
                    first = false;
                    let dir: Directory = nodes
                        .iter()
                        .map(|n| {
                            (
                                n.id.clone(),
                                NodeInfo {
                                    addr: n.addr.clone(),
                                    tiers: n.tiers.clone(),
                                },
                            )
                        })
                        .collect::<BTreeMap<_, _>>();
                    let _ = dir_tx.send(dir);
                    let _ = inst_tx.send(placement::server_instances(&dir_policy, &nodes));
                    last = nodes;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
        // Backfill results already in gossip when this server starts.
        let backfill_mesh = mesh.clone();
        let backfill = fold_tx;
        let self_id = me.id.clone();
        tasks.push(tokio::spawn(async move {
            for (node, _, value, _) in backfill_mesh.values_with_prefix(RESULT_PREFIX).await {
                if node == self_id {
                    continue;
                }
                if let Some(r) = CheckResult::from_gossip(&value) {
                    let _ = backfill.send(r).await;
                }
            }
        }));
    }

    // The agent: this node's own checks, published in gossip.
    let agent = placement::agent_instances(&policy, &me);
    if !agent.is_empty() {
        let (_inst_tx, inst_rx) = watch::channel(agent);
        let (reports_tx, mut reports_rx) = mpsc::channel(1024);
        tasks.push(tokio::spawn(
            Runner {
                instances: inst_rx,
                reports: reports_tx,
                mesh: None,
                observer: me.id.clone(),
                max_concurrent: 16,
                clock,
            }
            .run(),
        ));
        let publish_mesh = mesh.clone();
        tasks.push(tokio::spawn(async move {
            // Keep the instance set alive as long as the publisher runs.
            let _keep = _inst_tx;
            while let Some((r, _)) = reports_rx.recv().await {
                publish_mesh
                    .set_local(&format!("{RESULT_PREFIX}{}", r.check), &r.to_gossip())
                    .await;
                if let Some(tx) = &to_escalator {
                    let _ = tx.send(r).await;
                }
            }
        }));
    }
    Ok(Convergence {
        escalator,
        tasks,
        _listener: listener,
    })
}

/// Runs every check of `policy` once from this machine, as `gemba check`
/// does: this node's own checks and the server's for `nodes`; mesh checks
/// are UNKNOWN unless a graph is given.
pub async fn run_once(
    policy: &Policy,
    me: &NodeEntry,
    nodes: &[NodeEntry],
    mesh: Option<MeshView>,
) -> Vec<CheckResult> {
    let mut instances = placement::agent_instances(policy, me);
    instances.extend(placement::server_instances(policy, nodes));
    let clock = Clock::new();
    let mut set = tokio::task::JoinSet::new();
    for (i, inst) in instances.into_iter().enumerate() {
        let mesh = mesh.clone();
        let observer = me.id.clone();
        set.spawn(async move {
            let obs = gemba_checks::kinds::run(&inst, mesh.as_ref()).await;
            // One run, judged on its own: fall and rise of one.
            let mut def = (*inst.def).clone();
            (def.fall, def.rise) = (1, 1);
            let mut t = gemba_checks::CheckTracker::new(&def, clock.now_ms());
            (
                i,
                gemba_checks::result::record(&mut t, &inst, obs, &observer, clock.now_ms()).0,
            )
        });
    }
    let mut out: Vec<(usize, CheckResult)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
