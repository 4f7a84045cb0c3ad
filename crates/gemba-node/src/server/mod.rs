//! The server role: the store, the escalator, the server's own checks
//! (global, tier and mesh checks), every node's results from gossip, and
//! store upkeep.

use std::sync::Arc;
use std::time::Duration;

use gemba_checks::pipeline::{self, TierFold, RESULT_PREFIX};
use gemba_checks::placement::{self, NodeEntry};
use gemba_checks::{CheckResult, Clock, MeshSource, MeshView, Runner};
use gemba_core::Config;
use gemba_escalator::{Directory, EscalatorHandle, NodeInfo, ServiceConfig};
use gemba_mesh::{ListenerHandle, MeshNode};
use gemba_store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};

use crate::{Phase, ServerRole, Stages};

mod learn;
mod review;

use learn::*;
use review::*;

/// How often membership is read into the directory.
const DIRECTORY_EVERY: Duration = Duration::from_secs(1);
/// How often old journal lines are pruned.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnbelievedLabel {
    reason: &'static str,
}

/// Each node's tiers, as the directory says.
#[derive(Default)]
struct TiersOf(std::collections::HashMap<String, Vec<String>>);

impl TiersOf {
    fn from(nodes: &[NodeEntry]) -> TiersOf {
        TiersOf(
            nodes
                .iter()
                .map(|n| (n.id.clone(), n.tiers.clone()))
                .collect(),
        )
    }

    fn of(&self, node: &str) -> &[String] {
        self.0.get(node).map(|t| &t[..]).unwrap_or(&[])
    }
}

pub(crate) struct Server {
    pub role: ServerRole,
    pub escalator: Option<EscalatorHandle>,
    /// The store, when it opened (`/healthz` probes it).
    pub store: Option<Arc<dyn gemba_store::Store>>,
    /// The review stage, when its tables opened.
    pub market: Option<gemba_market::service::MarketHandle>,
    /// The learn stage's events, when its tables opened.
    pub timeline: Option<gemba_timeline::TimelineHandle>,
    /// Where this node's own samples go (into the series), when on.
    pub samples: Option<mpsc::Sender<(String, gemba_timeline::sample::Sample)>>,
    /// Where this node's own results go (into the tier fold), when on.
    pub results: Option<mpsc::Sender<CheckResult>>,
    pub subscriptions: Vec<ListenerHandle>,
}

impl Server {
    pub fn none() -> Server {
        Server {
            role: ServerRole::None,
            escalator: None,
            store: None,
            market: None,
            timeline: None,
            samples: None,
            results: None,
            subscriptions: Vec::new(),
        }
    }
}

/// The mesh as checks see it.
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

/// The grid's nodes as this server may act on them: each with the
/// address it proved (a signed presence from it), never the one it
/// advertises (a node that proved none has no address, an empty one, and
/// steps and checks that need it do not run), and with enrolled nodes the
/// tiers the nodes file gives it.
pub(crate) async fn nodes_of(mesh: &MeshNode) -> Vec<NodeEntry> {
    let members = mesh.members().await;
    let mut unproven = 0;
    let nodes = members
        .into_iter()
        .map(|m| {
            let proven = mesh.proven_address(&m.id);
            if proven != Some(m.addr.ip()) {
                unproven += 1;
            }
            // With enrolled nodes the nodes file says which tiers a node
            // is in; what it declares counts only in first-seen mode.
            let tiers = mesh.enrolled_tags(&m.id).unwrap_or(m.tags);
            NodeEntry {
                id: m.id,
                addr: proven.map(|ip| ip.to_string()).unwrap_or_default(),
                tiers,
            }
        })
        .collect();
    mesh.metrics().addresses_unproven.set(unproven);
    nodes
}

fn directory_of(nodes: &[NodeEntry]) -> Directory {
    nodes
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
        .collect()
}

pub(crate) async fn start(
    config: &Config,
    mesh: &Arc<MeshNode>,
    stages: &mut Stages<'_>,
    tick: Duration,
    logs: gemba_timeline::logs::LogSource,
) -> Server {
    let location = &config.store.location;
    let store = match gemba_store::open(location).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("{e}");
            tracing::error!(
                store = %location,
                error = %e,
                "SERVER ROLE OFF: the store cannot be opened; this node keeps probing and checking as an agent, but nothing escalates from here until the store is fixed and the node restarted"
            );
            return Server {
                role: ServerRole::Off(why),
                ..Server::none()
            };
        }
    };
    match store.connection_security() {
        Some(c) if c.exposed() => tracing::warn!(
            store = %location,
            "connections to the store on another host are not encrypted ({}); set sslmode=require or verify-full in [store] url once the database offers TLS",
            c.text
        ),
        Some(c) => tracing::info!(store = %location, connection = %c.text, "store opened"),
        None => tracing::info!(store = %location, "store opened"),
    }
    let policy = Arc::new(config.policy.clone());
    let clock = stages.clock();
    let self_id = config.node.id.to_string();

    let (dir_tx, dir_rx) = watch::channel(Directory::new());
    let (nodes_tx, nodes_rx) = watch::channel(Vec::<NodeEntry>::new());
    let (handle, to_escalator, task) = gemba_escalator::spawn(
        ServiceConfig {
            policy: policy.clone(),
            store: store.clone(),
            holder: self_id.clone(),
            directory: dir_rx,
            clock,
            tick,
            attach: Some(Arc::new(crate::logs::NoticeLogs(logs))),
        },
        Some(stages.metrics()),
    );
    let task = tokio_util::task::AbortOnDropHandle::new(task);
    stages
        .drain()
        .spawn_graceful(Phase::Escalator, "escalator", async move {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "the escalator panicked");
                }
            }
        });

    // Every result passes the tier fold on its way to the escalator.
    let (fold_tx, fold_rx) = mpsc::channel::<CheckResult>(4096);
    stages.drain().spawn(
        Phase::Checks,
        "tier-fold",
        TierFold::new(policy.clone()).run(fold_rx, to_escalator, nodes_rx.clone()),
    );

    // Other nodes' results arrive by gossip. The callback runs under the
    // gossip lock: it only queues; a full queue means the escalator is far
    // behind, and the next result of the same check carries the same news.
    let (gossip_tx, mut gossip_rx) = mpsc::channel::<(String, String)>(4096);
    let me = self_id.clone();
    let subscription = mesh
        .subscribe(RESULT_PREFIX, move |node, _key, value| {
            if node != me {
                let _ = gossip_tx.try_send((node.to_string(), value.to_string()));
            }
        })
        .await;
    let from_gossip = fold_tx.clone();
    let me = self_id.clone();
    let backfill_mesh = mesh.clone();
    let ingest_policy = policy.clone();
    let ingest_clock = clock;
    let mut ingest_nodes = nodes_rx.clone();
    let unbelieved = Family::<UnbelievedLabel, Counter>::default();
    stages.metrics().register(
        "gemba_checks_results_unbelieved",
        "Check results taken from gossip and not believed (about another node, not an agent check of this policy, malformed, ...), by reason",
        unbelieved.clone(),
    );
    stages
        .drain()
        .spawn(Phase::Checks, "gossip-ingest", async move {
            // Tiers come from the directory, so wait for its first reading.
            if ingest_nodes.changed().await.is_err() {
                return;
            }
            let mut tiers = TiersOf::default();
            let mut believe = |node: &str, value: &str| {
                if ingest_nodes.has_changed().unwrap_or(false) || tiers.0.is_empty() {
                    tiers = TiersOf::from(&ingest_nodes.borrow_and_update()[..]);
                }
                let r = pipeline::from_peer(
                    node,
                    tiers.of(node),
                    &me,
                    value,
                    &ingest_policy,
                    ingest_clock.now_ms(),
                );
                match r {
                    Ok(r) => Some(r),
                    Err(why) => {
                        tracing::debug!(
                            node,
                            reason = why.as_str(),
                            "result from gossip not believed"
                        );
                        unbelieved
                            .get_or_create(&UnbelievedLabel {
                                reason: why.as_str(),
                            })
                            .inc();
                        None
                    }
                }
            };
            // Results already in gossip when this server starts come first.
            for (node, _, value, _) in backfill_mesh.values_with_prefix(RESULT_PREFIX).await {
                if let Some(r) = believe(&node, &value) {
                    if from_gossip.send(r).await.is_err() {
                        return;
                    }
                }
            }
            while let Some((node, value)) = gossip_rx.recv().await {
                if let Some(r) = believe(&node, &value) {
                    if from_gossip.send(r).await.is_err() {
                        return;
                    }
                }
            }
        });

    // The server's own checks, placed over the grid's members.
    let (inst_tx, inst_rx) = watch::channel(Vec::new());
    let (reports_tx, mut reports_rx) = mpsc::channel(4096);
    stages.drain().spawn(
        Phase::Checks,
        "server-checks",
        Runner {
            instances: inst_rx,
            reports: reports_tx,
            mesh: Some(Arc::new(MeshGraph(mesh.clone()))),
            samples: None,
            observer: self_id.clone(),
            max_concurrent: 32,
            clock,
        }
        .run(),
    );
    let server_feed = fold_tx.clone();
    stages
        .drain()
        .spawn(Phase::Checks, "server-results", async move {
            while let Some((r, _)) = reports_rx.recv().await {
                if server_feed.send(r).await.is_err() {
                    return;
                }
            }
        });

    // Membership drives the directory, the fold and the server's checks.
    let dir_mesh = mesh.clone();
    let dir_policy = policy.clone();
    stages
        .drain()
        .spawn(Phase::Checks, "directory", async move {
            let mut last: Option<Vec<NodeEntry>> = None;
            loop {
                let nodes = nodes_of(&dir_mesh).await;
                if last.as_ref() != Some(&nodes) {
                    let _ = dir_tx.send(directory_of(&nodes));
                    let _ = inst_tx.send(placement::server_instances(&dir_policy, &nodes));
                    let _ = nodes_tx.send(nodes.clone());
                    last = Some(nodes);
                }
                tokio::time::sleep(DIRECTORY_EVERY).await;
            }
        });

    spawn_retention(stages, store.clone(), config.store.journal_retention, clock);
    let probed = store.clone();
    let (timeline, samples) =
        match start_timeline(config, mesh, stages, clock, store, handle.clone()).await {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
    let market = start_market(config, stages, clock, timeline.clone()).await;

    Server {
        role: ServerRole::On,
        escalator: Some(handle),
        store: Some(probed),
        market,
        timeline,
        samples,
        results: Some(fold_tx),
        subscriptions: vec![subscription],
    }
}

/// Prunes journal lines and closed escalations past the retention, at
/// start and hourly.
fn spawn_retention(stages: &Stages<'_>, store: Arc<dyn Store>, retention: Duration, clock: Clock) {
    stages.drain().spawn(Phase::Store, "retention", async move {
        let mut every = tokio::time::interval(RETENTION_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let before = clock.now_ms().saturating_sub(retention.as_millis() as u64);
            match store.prune(before).await {
                Ok(p) if p.journal + p.escalations > 0 => tracing::info!(
                    journal_lines = p.journal,
                    escalations = p.escalations,
                    "pruned the store past its retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune the store"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: i64, text: &str, done: bool) -> gemba_store::ActionRow {
        gemba_store::ActionRow {
            id,
            incident: 3,
            proposal: 1,
            text: text.into(),
            owner: "bo".into(),
            due_ms: 1_796_947_200_000, // 2026-12-11
            created_ms: 0,
            done_ms: done.then_some(1),
            done_by: None,
        }
    }

    #[tokio::test]
    async fn the_published_edition_carries_the_open_action_items() {
        let store = Arc::new(gemba_store::SqliteStore::in_memory().unwrap());
        let timeline = gemba_timeline::TimelineHandle::new(store, Clock::new());
        for a in [
            action(1, "a runbook for [restarts](javascript:x)", false),
            action(2, "already done", false),
        ] {
            timeline.store().add_action(a).await.unwrap();
        }
        assert!(timeline
            .store()
            .finish_action(2, 1, "bo".into())
            .await
            .unwrap());
        let dir = std::env::temp_dir().join(format!("gemba-publish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("edition.md");
        let target = gemba_core::policy::NotifyDef::Command {
            run: vec!["sh".into(), "-c".into(), format!("cat > {}", out.display())],
        };
        let ed = gemba_market::publish::Edition {
            date: "2026-12-07".into(),
            subject: "morning market".into(),
            market: gemba_market::market::Market::build(
                std::iter::empty(),
                0,
                1,
                Default::default(),
            ),
        };
        let (took, errors) = publish_edition(
            std::slice::from_ref(&target),
            Some(&timeline),
            1_796_947_200_000 - 3_600_000,
            ed,
        )
        .await;
        assert_eq!((took, errors), (1, Vec::<String>::new()));
        let sent = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            sent.contains(
                "## Action items from post-mortems\n\n- A-1 a runbook for [restarts\\](javascript:x) (owner bo, due 2026-12-11, from I-3)"
            ),
            "{sent}"
        );
        assert!(!sent.contains("already done"), "{sent}");
    }
}
