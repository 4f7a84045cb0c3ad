//! The learn stage on a server: the timeline, its followers, sample
//! writing and retention, and the state changes it records.

use super::*;

/// How long events are kept.
pub(super) const EVENT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

pub(super) type SampleTx = mpsc::Sender<(String, gemba_timeline::sample::Sample)>;

/// The learn stage: its own connection to the store, the followers that
/// turn escalation steps and configuration runs into events, and the
/// metric series every agent's samples are written to. A timeline that
/// cannot start leaves the rest of the server running.
pub(super) async fn start_timeline(
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
pub(super) const CHANGES_EVERY: Duration = Duration::from_secs(2);

/// Records what changes state (check hard states, node and link states)
/// for incident timelines, and prunes what is past the events' retention.
pub(super) async fn record_changes(
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
