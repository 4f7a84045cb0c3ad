//! The escalator as a running service: the engine fed with check results,
//! its effects carried out against the store (journal, records, leases,
//! step claims), steps run as processes, notifications sent.
//!
//! At most once: a server opens an escalation only while it holds the
//! scope's lease, renews the lease while the escalation is open, and claims
//! each step in the store before running it. A server that loses a lease
//! stops managing that escalation; one whose lease expired is replaced by
//! another server adopting the record, which never re-runs a step whose
//! outcome it does not know.
//!
//! Here: the handle, the commands and the service's loop; `leases` (who
//! manages what) and `effects` (the engine's effects carried out, steps
//! started) beside it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gemba_checks::CheckResult;
use gemba_core::{template, Policy, Scope};
use gemba_exec::Clock;
use gemba_exec::{self as exec, ExecSpec};
use gemba_store::{Claim, EscalationRow, Fence, JournalRow, Store};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::engine::{Effect, Engine, Escalation, Notice, Plan, StepOutcome};
use crate::metrics::EscalatorMetrics;
use crate::outbox::{self, Channels, OutboxConfig};

mod clock;
mod effects;
mod leases;
mod outage;

/// What servers know of each node, for templates and step environments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    /// The node's address without port.
    pub addr: String,
    pub tiers: Vec<String>,
}

pub type Directory = BTreeMap<String, NodeInfo>;

enum Command {
    Plan(oneshot::Sender<Plan>),
    Checks(oneshot::Sender<Vec<CheckResult>>),
    Approve {
        id: u64,
        who: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Ack {
        scope: Scope,
        who: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Stop deciding; let running steps finish within the grace period.
    Drain {
        grace: Duration,
        done: oneshot::Sender<usize>,
    },
}

/// Why the escalator could not answer.
#[derive(Debug, thiserror::Error)]
pub enum EscalatorError {
    #[error("the escalator is not running")]
    NotRunning,
    #[error("the escalator stopped before answering")]
    Stopped,
    #[error(transparent)]
    Store(#[from] gemba_store::StoreError),
    #[error("escalation {0} has an unreadable record")]
    Unreadable(u64),
    /// A decision refused: not awaiting approval, not held, handled by
    /// another server.
    #[error("{0}")]
    Refused(String),
}

/// An escalation with its journal, as the API and console show it.
#[derive(Clone, Debug, Serialize)]
pub struct EscalationView {
    #[serde(flatten)]
    pub escalation: Escalation,
    pub phase_name: &'static str,
    pub journal: Vec<JournalRow>,
}

/// How callers (API, CLI) talk to a running escalator.
#[derive(Clone)]
pub struct EscalatorHandle {
    tx: mpsc::Sender<Command>,
    pub store: Arc<dyn Store>,
    pub policy: Arc<Policy>,
}

/// Whether effect `f` belongs to escalation `id` (on `scope`): what a
/// server drops once the store tells it the escalation is another's.
fn touches(f: &Effect, id: u64, scope: &str) -> bool {
    match f {
        Effect::Run { id: i, .. } => *i == id,
        Effect::Save(e) => e.id == id,
        Effect::Journal(j) => j.escalation == Some(id),
        Effect::Notify(n) => n.escalation == Some(id),
        Effect::Release(s) => s.to_string() == scope,
        Effect::Open(_) => false,
    }
}

fn parse_row(r: &EscalationRow) -> Option<Escalation> {
    serde_json::from_str(&r.body).ok()
}

impl EscalatorHandle {
    pub async fn plan(&self) -> Option<Plan> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Plan(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn checks(&self) -> Vec<CheckResult> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Checks(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn approve(&self, id: u64, who: &str) -> Result<(), EscalatorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Approve {
                id,
                who: who.into(),
                reply: tx,
            })
            .await
            .map_err(|_| EscalatorError::NotRunning)?;
        rx.await
            .map_err(|_| EscalatorError::Stopped)?
            .map_err(EscalatorError::Refused)
    }

    pub async fn ack(&self, scope: Scope, who: &str) -> Result<u64, EscalatorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Ack {
                scope,
                who: who.into(),
                reply: tx,
            })
            .await
            .map_err(|_| EscalatorError::NotRunning)?;
        rx.await
            .map_err(|_| EscalatorError::Stopped)?
            .map_err(EscalatorError::Refused)
    }

    /// Stops the escalator: no new decisions; steps already running get
    /// `grace` to finish and their outcomes are journaled. Returns how many
    /// steps were still running when the grace period ended (they are
    /// killed; the next start verifies instead of re-running them).
    pub async fn drain(&self, grace: Duration) -> usize {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Drain { grace, done: tx })
            .await
            .is_err()
        {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Open escalations and the newest `limit` closed ones, newest first.
    pub async fn escalations(&self, limit: usize) -> Result<Vec<Escalation>, EscalatorError> {
        let rows = self.store.escalations(limit).await?;
        Ok(rows.iter().filter_map(parse_row).collect())
    }

    /// The newest `limit` journal lines of every scope, newest first: the
    /// decisions that opened no escalation too (quiet periods, plan mode,
    /// rate limits, flapping, deferrals to another server).
    pub async fn journal(&self, limit: usize) -> Result<Vec<JournalRow>, EscalatorError> {
        Ok(self.store.recent_journal(limit).await?)
    }

    pub async fn escalation(&self, id: u64) -> Result<Option<EscalationView>, EscalatorError> {
        let Some(row) = self.store.escalation(id).await? else {
            return Ok(None);
        };
        let Some(esc) = parse_row(&row) else {
            return Err(EscalatorError::Unreadable(id));
        };
        let journal = self.store.journal(id).await?;
        Ok(Some(EscalationView {
            phase_name: esc.phase.name(),
            escalation: esc,
            journal,
        }))
    }
}

/// Everything the service needs.
pub struct ServiceConfig {
    pub policy: Arc<Policy>,
    pub store: Arc<dyn Store>,
    /// This server's name in leases and the journal.
    pub holder: String,
    pub directory: watch::Receiver<Directory>,
    pub clock: Clock,
    /// How often the engine's timers are checked.
    pub tick: Duration,
    /// What notices carry beside their text (log lines around them).
    pub attach: Option<Arc<dyn crate::notify::Attach>>,
}

/// How a step's program is run: [`exec::run`], or a stand-in in tests.
pub type StepRunner = Arc<
    dyn Fn(
            ExecSpec,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = exec::ExecOutcome> + Send>>
        + Send
        + Sync,
>;

/// Starts the escalator. Feed it results through the returned sender.
pub fn spawn(
    cfg: ServiceConfig,
    registry: Option<&mut Registry>,
) -> (EscalatorHandle, mpsc::Sender<CheckResult>, JoinHandle<()>) {
    spawn_with(
        cfg,
        registry,
        Arc::new(|spec: ExecSpec| Box::pin(async move { exec::run(&spec).await })),
    )
}

/// [`spawn`] with the step runner given.
pub fn spawn_with(
    cfg: ServiceConfig,
    registry: Option<&mut Registry>,
    run_step: StepRunner,
) -> (EscalatorHandle, mpsc::Sender<CheckResult>, JoinHandle<()>) {
    let (results_tx, results_rx) = mpsc::channel(4096);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let metrics = EscalatorMetrics::default();
    if let Some(r) = registry {
        metrics.register(r);
    }
    let handle = EscalatorHandle {
        tx: cmd_tx,
        store: cfg.store.clone(),
        policy: cfg.policy.clone(),
    };
    let (notices, outbox_task) = outbox::spawn(OutboxConfig {
        store: cfg.store.clone(),
        targets: cfg.policy.notify.clone(),
        deliver: Arc::new(Channels {
            node: cfg.holder.clone(),
            attach: cfg.attach.clone(),
        }),
        clock: cfg.clock,
        holder: cfg.holder.clone(),
    });
    let service = Service {
        engine: Engine::new(cfg.policy.clone()),
        policy: cfg.policy,
        store: cfg.store,
        holder: cfg.holder,
        directory: cfg.directory,
        clock: cfg.clock,
        tick: cfg.tick,
        metrics,
        steps: JoinSet::new(),
        step_tasks: Default::default(),
        run_step,
        notices: Some(notices),
        outbox_task: Some(outbox_task),
        fences: Default::default(),
        clock_watch: Default::default(),
        outage: Default::default(),
    };
    let task = tokio::spawn(service.run(results_rx, cmd_rx));
    (handle, results_tx, task)
}

type StepDone = (u64, u32, StepOutcome, String, Duration);

struct Service {
    engine: Engine,
    policy: Arc<Policy>,
    store: Arc<dyn Store>,
    holder: String,
    directory: watch::Receiver<Directory>,
    clock: Clock,
    tick: Duration,
    metrics: EscalatorMetrics,
    steps: JoinSet<StepDone>,
    /// Which escalation step each running task is, so that a task that
    /// panics still ends its step (as failed) instead of leaving it
    /// running for ever.
    step_tasks: std::collections::HashMap<tokio::task::Id, (u64, u32, tokio::time::Instant)>,
    run_step: StepRunner,
    /// To the outbox, which stores and delivers notices; taken on drain.
    notices: Option<mpsc::Sender<Notice>>,
    outbox_task: Option<JoinHandle<()>>,
    /// The fence of each lease this server holds, by scope: every step
    /// claim and record write carries it, so a server whose lease passed
    /// to another (while it was paused or cut off) changes nothing.
    fences: std::collections::HashMap<String, Fence>,
    /// This server's clock against the store's.
    clock_watch: clock::ClockWatch,
    /// The store not answering, and the journal lines held back meanwhile.
    outage: outage::Outage,
}

impl Service {
    fn lease_ttl(&self) -> u64 {
        self.policy.escalator.lease_ttl.as_millis() as u64
    }

    /// How long the lease must still hold, on the store's clock, for a
    /// step to start: the step's grace, at most half a lease term (the
    /// lease is renewed just before).
    fn claim_grace(&self) -> u64 {
        (self.policy.escalator.step_grace.as_millis() as u64).min(self.lease_ttl() / 2)
    }

    async fn run(
        mut self,
        mut results: mpsc::Receiver<CheckResult>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        self.watch_clock().await;
        self.recover().await;
        let fx = self.engine.tick(self.clock.now_ms());
        self.apply(fx).await;
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leases = tokio::time::interval(self.policy.escalator.lease_ttl / 3);
        leases.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        leases.tick().await;
        // A closed directory (its sender dropped) would wake this loop for
        // ever: stop watching it.
        let mut directory_open = true;
        loop {
            tokio::select! {
                r = results.recv() => {
                    let Some(r) = r else { break };
                    let mut fx = self.observe(r);
                    // Take what else has arrived, then decide once.
                    for _ in 0..4096 {
                        match results.try_recv() {
                            Ok(r) => fx.extend(self.observe(r)),
                            Err(_) => break,
                        }
                    }
                    fx.extend(self.engine.tick(self.clock.now_ms()));
                    self.apply(fx).await;
                }
                _ = tick.tick() => {
                    let fx = self.engine.tick(self.clock.now_ms());
                    self.apply(fx).await;
                }
                _ = leases.tick() => {
                    self.watch_clock().await;
                    self.renew_leases().await;
                    self.adopt_orphans().await;
                }
                Some(done) = self.steps.join_next_with_id() => {
                    if let Some((id, level, outcome, output, took)) = self.finished(done) {
                        self.metrics.step_duration(level, took);
                        let fx = self.engine.step_done(id, level, outcome, output, self.clock.now_ms());
                        self.apply(fx).await;
                    }
                }
                changed = self.directory.changed(), if directory_open => {
                    directory_open = changed.is_ok();
                    if directory_open {
                        let nodes: std::collections::BTreeSet<String> =
                            self.directory.borrow_and_update().keys().cloned().collect();
                        for (check, scope) in self.engine.forget_departed(&nodes) {
                            self.metrics.forget_check(&check, &scope.to_string());
                        }
                    }
                }
                c = commands.recv() => {
                    let Some(c) = c else { break };
                    if !self.command(c).await {
                        break;
                    }
                }
            }
        }
    }

    /// A step task ended: its outcome, or for a task that panicked, a
    /// failure naming the panic (the step must not stay running).
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, StepDone), tokio::task::JoinError>,
    ) -> Option<StepDone> {
        match done {
            Ok((task, step)) => {
                self.step_tasks.remove(&task);
                Some(step)
            }
            Err(e) => {
                let (id, level, started) = self.step_tasks.remove(&e.id())?;
                if !e.is_panic() {
                    // Aborted by the drain: the next start verifies it.
                    return None;
                }
                let why = match e.into_panic().downcast::<String>() {
                    Ok(s) => *s,
                    Err(p) => p
                        .downcast::<&'static str>()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|_| "no message".into()),
                };
                tracing::error!(escalation = id, level, panic = %why, "step task panicked");
                Some((
                    id,
                    level,
                    StepOutcome::Failed(format!("the step's task panicked: {why}")),
                    String::new(),
                    started.elapsed(),
                ))
            }
        }
    }

    fn observe(&mut self, r: CheckResult) -> Vec<Effect> {
        self.metrics.check(&r);
        self.engine.observe(r)
    }

    /// Handles a command; returns false when the service must stop.
    async fn command(&mut self, c: Command) -> bool {
        let now = self.clock.now_ms();
        match c {
            Command::Drain { grace, done } => {
                let deadline = tokio::time::Instant::now() + grace;
                let mut left = self.steps.len();
                while left > 0 {
                    match tokio::time::timeout_at(deadline, self.steps.join_next_with_id()).await {
                        Ok(Some(done)) => {
                            let Some((id, level, outcome, output, took)) = self.finished(done)
                            else {
                                left = self.steps.len();
                                continue;
                            };
                            self.metrics.step_duration(level, took);
                            let fx = self.engine.step_done(
                                id,
                                level,
                                outcome,
                                output,
                                self.clock.now_ms(),
                            );
                            // Record what happened, start nothing new.
                            let keep: Vec<Effect> = fx
                                .into_iter()
                                .filter(|f| !matches!(f, Effect::Run { .. } | Effect::Open(_)))
                                .collect();
                            self.apply(keep).await;
                            left = self.steps.len();
                        }
                        Ok(None) => left = 0,
                        Err(_) => break,
                    }
                }
                if left > 0 {
                    tracing::warn!(steps = left, "grace period over; running steps are killed and will be verified, not re-run, at the next start");
                }
                self.steps.abort_all();
                // The outbox sends what is due, briefly; the rest stays
                // stored for the next start.
                self.notices = None;
                if let Some(t) = self.outbox_task.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
                }
                let _ = done.send(left);
                return false;
            }
            Command::Plan(reply) => {
                let _ = reply.send(self.engine.plan(now));
            }
            Command::Checks(reply) => {
                let _ = reply.send(self.engine.results().cloned().collect());
            }
            Command::Approve { id, who, reply } => {
                let r = match self.engine.approve(id, &who, now) {
                    Ok(fx) => {
                        self.apply(fx).await;
                        Ok(())
                    }
                    Err(e) => Err(self.elsewhere(id, e.to_string()).await),
                };
                let _ = reply.send(r);
            }
            Command::Ack { scope, who, reply } => {
                let r = match self.engine.ack(&scope, &who, now) {
                    Ok((id, fx)) => {
                        self.apply(fx).await;
                        Ok(id)
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
        }
        true
    }
}
