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
    let (timeline, samples) =
        match start_timeline(config, mesh, stages, clock, store, handle.clone()).await {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
    let market = start_market(config, stages, clock, timeline.clone()).await;

    Server {
        role: ServerRole::On,
        escalator: Some(handle),
        market,
        timeline,
        samples,
        results: Some(fold_tx),
        subscriptions: vec![subscription],
    }
}

/// The review stage: its own connection to the store, its task, and the
/// hourly removal of runs past `[market] run_retention`. A market that
/// cannot start leaves the rest of the server running.
async fn start_market(
    config: &Config,
    stages: &mut Stages<'_>,
    clock: Clock,
    timeline: Option<gemba_timeline::TimelineHandle>,
) -> Option<gemba_market::service::MarketHandle> {
    let store = match gemba_store::open_market(&config.store.location).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the market's tables cannot be opened; reports are refused");
            return None;
        }
    };
    let thresholds = gemba_market::detect::Thresholds::from_config(&config.market);
    let (handle, task) = match gemba_market::service::start(store.clone(), thresholds, clock).await
    {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "the market cannot load its problems; reports are refused");
            return None;
        }
    };
    stages.drain().spawn(Phase::Store, "market", task);
    if !config.market.publish.is_empty() {
        let targets = config.market.publish.clone();
        let schedule = gemba_market::publish::Schedule {
            at: config.market.market_at,
            timezone: config.market.timezone.clone(),
        };
        let publisher = gemba_market::publish::run(
            handle.clone(),
            schedule,
            config.node.id.to_string(),
            clock,
            move |ed| {
                let targets = targets.clone();
                let timeline = timeline.clone();
                async move { publish_edition(&targets, timeline.as_ref(), clock.now_ms(), ed).await }
            },
        );
        stages
            .drain()
            .spawn(Phase::Store, "market-publish", publisher);
    }
    for src in &config.market.sources {
        let gemba_core::market::SourceDef::PuppetDb {
            url,
            interval,
            page,
        } = src;
        let source = gemba_market::puppetdb::Source {
            url: url.clone(),
            interval: *interval,
            page: *page,
            max_bytes: (config.market.max_report_bytes as u64).saturating_mul(*page as u64),
        };
        stages.drain().spawn_in(
            Phase::Store,
            "market-puppetdb",
            tracing::info_span!("source", url = %url),
            gemba_market::puppetdb::run(handle.clone(), source, clock),
        );
    }
    let retention = config.market.run_retention;
    stages
        .drain()
        .spawn(Phase::Store, "market-retention", async move {
            let mut every = tokio::time::interval(RETENTION_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let before = clock.now_ms().saturating_sub(retention.as_millis() as u64);
                match store.prune_runs(before).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(runs = n, "removed runs past the market's retention")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune the market's runs"),
                }
            }
        });
    Some(handle)
}

/// How long events are kept.
const EVENT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

type SampleTx = mpsc::Sender<(String, gemba_timeline::sample::Sample)>;

/// The learn stage: its own connection to the store, the followers that
/// turn escalation steps and configuration runs into events, and the
/// metric series every agent's samples are written to. A timeline that
/// cannot start leaves the rest of the server running.
async fn start_timeline(
    config: &Config,
    mesh: &Arc<MeshNode>,
    stages: &mut Stages<'_>,
    clock: Clock,
    journal: Arc<dyn Store>,
    escalator: EscalatorHandle,
) -> Option<(gemba_timeline::TimelineHandle, SampleTx)> {
    let store = match gemba_store::open_timeline(&config.store.location).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the timeline's tables cannot be opened; events are refused");
            return None;
        }
    };
    let retention = gemba_timeline::series::Retention::of(&config.metrics);
    let handle =
        gemba_timeline::TimelineHandle::new(store.clone(), clock).with_retention(retention);
    let (samples_tx, samples_rx) = mpsc::channel(16_384);
    // Agents send their samples to every server directly; the mesh checks
    // each agent's signature before they arrive here.
    let (agent_tx, mut agent_rx) = mpsc::channel::<gemba_mesh::AgentSample>(4096);
    mesh.subscribe_samples(agent_tx);
    let from_agents = samples_tx.clone();
    stages
        .drain()
        .spawn(Phase::Store, "samples-from-agents", async move {
            while let Some(a) = agent_rx.recv().await {
                match gemba_timeline::sample::decode(&a.name, &a.value) {
                    Ok(s) => {
                        if from_agents.send((a.node, s)).await.is_err() {
                            return;
                        }
                    }
                    Err(why) => {
                        tracing::debug!(node = %a.node, sample = %a.name, reason = %why, "sample from an agent refused")
                    }
                }
            }
        });
    let d = stages.drain();
    d.spawn(
        Phase::Store,
        "metrics-writer",
        gemba_timeline::series::write(
            store.clone(),
            samples_rx,
            config.metrics.max_series as u64,
            handle.latest.clone(),
            handle.stats.clone(),
        ),
    );
    d.spawn(
        Phase::Store,
        "metrics-rollup",
        gemba_timeline::series::roll(store.clone(), retention, clock),
    );
    d.spawn(
        Phase::Store,
        "events-from-journal",
        gemba_timeline::service::follow_journal(handle.clone(), journal.clone()),
    );
    d.spawn(
        Phase::Store,
        "incidents",
        gemba_timeline::incident::follow(
            handle.clone(),
            journal,
            config.incidents.clone(),
            config.node.id.to_string(),
        ),
    );
    d.spawn(
        Phase::Store,
        "state-changes",
        record_changes(handle.clone(), mesh.clone(), escalator),
    );
    d.spawn(
        Phase::Store,
        "events-from-runs",
        gemba_timeline::service::follow_runs(handle.clone(), store),
    );
    d.spawn(
        Phase::Store,
        "events-retention",
        gemba_timeline::service::prune(handle.clone(), EVENT_RETENTION),
    );
    Some((handle, samples_tx))
}

/// How often servers look for state changes of checks, nodes and links.
const CHANGES_EVERY: Duration = Duration::from_secs(2);

/// Records what changes state (check hard states, node and link states)
/// for incident timelines, and prunes what is past the events' retention.
async fn record_changes(
    t: gemba_timeline::TimelineHandle,
    mesh: Arc<MeshNode>,
    escalator: EscalatorHandle,
) {
    use gemba_timeline::changes::{Recorder, Seen};
    let mut recorder = Recorder::default();
    let mut every = tokio::time::interval(CHANGES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_ms = 0u64;
    loop {
        every.tick().await;
        let now = t.now_ms();
        let mut seen = Vec::new();
        for r in escalator.checks().await {
            let node = match &r.scope {
                gemba_core::Scope::Node(n) => n.clone(),
                _ => String::new(),
            };
            seen.push(Seen {
                kind: "check",
                subject: format!("{}@{}", r.check, r.scope),
                node,
                peer: String::new(),
                state: r.state.as_str().to_string(),
                at_ms: r.since_ms,
                detail: r.output.lines().next().unwrap_or("").to_string(),
            });
        }
        let graph = mesh.graph().await;
        for n in &graph.nodes {
            seen.push(Seen {
                kind: "node",
                subject: n.id.clone(),
                node: n.id.clone(),
                peer: String::new(),
                state: n.state.as_str().to_string(),
                at_ms: now,
                detail: format!("{} of {} observers see it down", n.down_votes, n.observers),
            });
        }
        for e in &graph.edges {
            seen.push(Seen {
                kind: "link",
                subject: format!("{}>{}", e.source, e.target),
                node: e.source.clone(),
                peer: e.target.clone(),
                state: e.state.to_string(),
                at_ms: e.since.map(|s| s * 1000).unwrap_or(now),
                detail: e.reason.clone().unwrap_or_default(),
            });
        }
        let changes = recorder.pass(seen, now);
        if !changes.is_empty() {
            if let Err(e) = t.store().add_changes(changes).await {
                tracing::warn!(error = %e, "cannot record state changes");
            }
        }
        if now.saturating_sub(pruned_ms) > 3_600_000 {
            pruned_ms = now;
            let before = now.saturating_sub(EVENT_RETENTION.as_millis() as u64);
            if let Err(e) = t.store().prune_changes(before).await {
                tracing::warn!(error = %e, "cannot prune state changes");
            }
        }
    }
}

/// Sends a day's market to every target. Action items stay on the market
/// until done: what goes out is the edition the market's page shows.
async fn publish_edition(
    targets: &[gemba_core::policy::NotifyDef],
    timeline: Option<&gemba_timeline::TimelineHandle>,
    now_ms: u64,
    ed: gemba_market::publish::Edition,
) -> (usize, Vec<String>) {
    let view = gemba_views::edition::Edition::with_actions_of(ed.market, timeline, now_ms).await;
    let m = gemba_views::edition::outgoing(&view, &ed.date, &ed.subject);
    gemba_notify::fan_out(targets, &m).await
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
