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
}

impl Service {
    fn lease_ttl(&self) -> u64 {
        self.policy.escalator.lease_ttl.as_millis() as u64
    }

    async fn run(
        mut self,
        mut results: mpsc::Receiver<CheckResult>,
        mut commands: mpsc::Receiver<Command>,
    ) {
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

    /// Explains an escalation this server does not manage.
    async fn elsewhere(&self, id: u64, fallback: String) -> String {
        let Ok(Some(row)) = self.store.escalation(id).await else {
            return fallback;
        };
        if !row.open {
            return format!("escalation {id} is {}", row.phase);
        }
        match self
            .store
            .lease_holder(&row.scope, self.clock.now_ms())
            .await
        {
            Ok(Some(h)) if h != self.holder => {
                format!("escalation {id} is handled by server {h}; ask it")
            }
            _ => fallback,
        }
    }

    /// After a start: rate-limit history and the escalations this server
    /// (or an expired holder) left open.
    async fn recover(&mut self) {
        let now = self.clock.now_ms();
        let rows = match self.store.opened_since(now.saturating_sub(3_600_000)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read escalations from the store");
                return;
            }
        };
        for row in rows {
            let Some(esc) = parse_row(&row) else { continue };
            if row.open {
                self.try_adopt(esc).await;
            } else {
                self.engine.remember(&esc);
            }
        }
    }

    async fn try_adopt(&mut self, esc: Escalation) {
        let now = self.clock.now_ms();
        let scope = esc.scope.to_string();
        match self
            .store
            .acquire_lease(&scope, &self.holder, now, self.lease_ttl())
            .await
        {
            Ok(Some(fence)) => {
                tracing::info!(escalation = esc.id, scope = %scope, fence = fence.token, "adopting escalation");
                self.fences.insert(scope, fence);
                let fx = self.engine.adopt(esc, now);
                self.apply(fx).await;
            }
            Ok(None) => self.engine.remember(&esc),
            Err(e) => tracing::warn!(scope = %scope, error = %e, "cannot take the lease"),
        }
    }

    async fn adopt_orphans(&mut self) {
        let Ok(rows) = self.store.escalations(0).await else {
            return;
        };
        for row in rows.into_iter().filter(|r| r.open) {
            if self.engine.escalation(row.id).is_some() {
                continue;
            }
            if let Some(esc) = parse_row(&row) {
                let now = self.clock.now_ms();
                if let Ok(None) = self.store.lease_holder(&row.scope, now).await {
                    self.try_adopt(esc).await;
                }
            }
        }
    }

    async fn renew_leases(&mut self) {
        let now = self.clock.now_ms();
        let mine: Vec<(u64, String)> = self
            .engine
            .open_escalations()
            .map(|e| (e.id, e.scope.to_string()))
            .collect();
        for (id, scope) in mine {
            match self
                .store
                .acquire_lease(&scope, &self.holder, now, self.lease_ttl())
                .await
            {
                Ok(Some(fence)) => {
                    if self
                        .fences
                        .get(&scope)
                        .is_some_and(|f| f.token != fence.token)
                    {
                        // The lease lapsed (a pause, the store out of reach)
                        // and this is a new term: someone may have acted in
                        // between, so the record is re-read and verified.
                        tracing::warn!(escalation = id, scope = %scope, "the lease lapsed before it was renewed; taking the escalation over afresh");
                        self.fences.insert(scope.clone(), fence);
                        self.engine.relinquish(id);
                        self.readopt(id, &scope).await;
                    } else {
                        self.fences.insert(scope, fence);
                    }
                }
                Ok(None) => self.lost(id, &scope),
                Err(e) => tracing::warn!(scope = %scope, error = %e, "cannot renew the lease"),
            }
        }
    }

    async fn apply(&mut self, fx: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = fx.into();
        while let Some(f) = queue.pop_front() {
            let now = self.clock.now_ms();
            match f {
                Effect::Open(req) => {
                    let scope = req.scope.clone();
                    let key = scope.to_string();
                    match self
                        .store
                        .acquire_lease(&key, &self.holder, now, self.lease_ttl())
                        .await
                    {
                        Ok(Some(fence)) => {
                            self.fences.insert(key.clone(), fence);
                            // A server that died left an escalation open
                            // here: carry it on (its steps are not run again)
                            // rather than open a second one.
                            if let Some(orphan) = self.orphan_on(&key).await {
                                tracing::info!(escalation = orphan.id, scope = %key, "adopting escalation left open instead of opening another");
                                queue.extend(self.engine.adopt(orphan, now));
                                continue;
                            }
                            match self.store.next_escalation_id().await {
                                Ok(id) => queue.extend(self.engine.opened(id, req, now)),
                                Err(e) => queue.extend(self.engine.deferred(
                                    scope,
                                    now + self.lease_ttl(),
                                    format!("store error: {e}"),
                                    now,
                                )),
                            }
                        }
                        Ok(None) => {
                            let holder = self
                                .store
                                .lease_holder(&key, now)
                                .await
                                .ok()
                                .flatten()
                                .unwrap_or_else(|| "another server".into());
                            queue.extend(self.engine.deferred(
                                scope,
                                now + self.lease_ttl(),
                                format!("server {holder} holds the lease on {key}"),
                                now,
                            ));
                        }
                        Err(e) => queue.extend(self.engine.deferred(
                            scope,
                            now + self.lease_ttl(),
                            format!("store error: {e}"),
                            now,
                        )),
                    }
                }
                Effect::Run { id, attempt, level } => {
                    let Some(fence) = self.fence_of(id) else {
                        continue;
                    };
                    match self.store.claim_step(&fence, id, attempt, level, now).await {
                        Ok(Claim::Claimed) => self.start_step(id, attempt, level),
                        Ok(Claim::Taken) => queue.extend(self.engine.step_done(
                            id,
                            level,
                            StepOutcome::NotRun("another server already ran this step".into()),
                            String::new(),
                            now,
                        )),
                        Ok(Claim::Fenced) => {
                            self.lost(id, &fence.scope);
                            queue.retain(|f| !touches(f, id, &fence.scope));
                        }
                        Err(e) => queue.extend(self.engine.step_done(
                            id,
                            level,
                            StepOutcome::Failed(format!("cannot claim the step in the store: {e}")),
                            String::new(),
                            now,
                        )),
                    }
                }
                Effect::Save(esc) => {
                    let row = EscalationRow {
                        id: esc.id,
                        scope: esc.scope.to_string(),
                        phase: esc.phase.name().into(),
                        open: !esc.phase.closed(),
                        opened_ms: esc.opened_ms,
                        updated_ms: esc.updated_ms,
                        body: serde_json::to_string(&esc).expect("escalation serializes"),
                    };
                    let Some(fence) = self.fences.get(&row.scope).cloned() else {
                        tracing::error!(escalation = esc.id, scope = %row.scope, "no lease on the scope; the record is not saved");
                        continue;
                    };
                    match self.store.save_escalation(row, Some(&fence)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let scope = esc.scope.to_string();
                            self.lost(esc.id, &scope);
                            queue.retain(|f| !touches(f, esc.id, &scope));
                        }
                        Err(e) => {
                            tracing::error!(escalation = esc.id, error = %e, "cannot save escalation")
                        }
                    }
                }
                Effect::Journal(e) => {
                    self.metrics.journal(e.kind);
                    let row = JournalRow {
                        seq: 0,
                        escalation: e.escalation,
                        scope: e.scope.to_string(),
                        at_ms: e.at_ms,
                        kind: e.kind.as_str().to_string(),
                        text: e.text,
                        server: self.holder.clone(),
                    };
                    if let Err(e) = self.store.append(row).await {
                        tracing::error!(error = %e, "cannot write the journal");
                    }
                }
                Effect::Notify(n) => {
                    // A notice with an ack command is a hold's, sent once
                    // (give-ups are counted from the journal).
                    if n.ack.is_some() && n.kind != crate::engine::NoticeKind::GaveUp {
                        self.metrics.held_for(n.kind.as_str());
                    }
                    if let Some(tx) = &self.notices {
                        if let Err(e) = tx.try_send(n) {
                            tracing::error!(error = %e, "the outbox is not taking notices");
                        }
                    }
                }
                Effect::Release(scope) => {
                    self.fences.remove(&scope.to_string());
                    if let Err(e) = self
                        .store
                        .release_lease(&scope.to_string(), &self.holder)
                        .await
                    {
                        tracing::warn!(scope = %scope, error = %e, "cannot release the lease");
                    }
                }
            }
        }
    }

    /// An open escalation on `scope` in the store that this server does
    /// not manage.
    async fn orphan_on(&self, scope: &str) -> Option<Escalation> {
        let rows = match self.store.escalations(0).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(scope = %scope, error = %e, "cannot read open escalations");
                return None;
            }
        };
        rows.iter()
            .filter(|r| r.open && r.scope == scope && self.engine.escalation(r.id).is_none())
            .find_map(parse_row)
    }

    /// The fence of the lease under which escalation `id` is managed.
    fn fence_of(&self, id: u64) -> Option<Fence> {
        let esc = self.engine.escalation(id)?;
        let fence = self.fences.get(&esc.scope.to_string()).cloned();
        if fence.is_none() {
            tracing::error!(escalation = id, scope = %esc.scope, "no lease on the scope; nothing is run");
        }
        fence
    }

    /// The store refused this server's fence on `scope`: another server
    /// took the lease over. Stop managing the escalation; write nothing more.
    fn lost(&mut self, id: u64, scope: &str) {
        tracing::warn!(escalation = id, scope = %scope, "lost the lease to another server; it takes over");
        self.fences.remove(scope);
        self.engine.relinquish(id);
    }

    /// Takes escalation `id` over again from its stored record, as another
    /// server would: a step that was running is verified, not re-run.
    async fn readopt(&mut self, id: u64, scope: &str) {
        match self.store.escalation(id).await {
            Ok(Some(row)) if row.open => {
                if let Some(esc) = parse_row(&row) {
                    let now = self.clock.now_ms();
                    let fx = self.engine.adopt(esc, now);
                    self.apply(fx).await;
                }
            }
            // Ended by the server that held it meanwhile: nothing to manage,
            // so the lease just renewed is given back.
            Ok(_) => {
                self.fences.remove(scope);
                if let Err(e) = self.store.release_lease(scope, &self.holder).await {
                    tracing::warn!(scope = %scope, error = %e, "cannot release the lease");
                }
            }
            Err(e) => tracing::warn!(escalation = id, error = %e, "cannot re-read the escalation"),
        }
    }

    fn start_step(&mut self, id: u64, attempt: u32, level: u32) {
        let Some(esc) = self.engine.escalation(id) else {
            return;
        };
        let Some(def) = self.policy.level(level).cloned() else {
            return;
        };
        let dir = self.directory.borrow().clone();
        let (node, tier) = match &esc.scope {
            Scope::Node(n) => (
                n.clone(),
                dir.get(n).map(|i| i.tiers.join(",")).unwrap_or_default(),
            ),
            Scope::Tier(t) => (String::new(), t.clone()),
            Scope::Global => (String::new(), String::new()),
        };
        let node_addr = dir.get(&node).map(|i| i.addr.clone()).unwrap_or_default();
        let scope = esc.scope.to_string();
        let level_s = level.to_string();
        let vars = [
            ("node", node.as_str()),
            ("node_addr", node_addr.as_str()),
            ("tier", tier.as_str()),
            ("scope", scope.as_str()),
            ("level", level_s.as_str()),
        ];
        let argv: Vec<String> = if def.shell {
            vec!["/bin/sh".into(), "-c".into(), def.run.join(" ")]
        } else {
            def.run.iter().map(|a| template::render(a, &vars)).collect()
        };
        let checks: Vec<String> = esc.checks.clone();
        let env = vec![
            ("GEMBA_LEVEL".to_string(), level_s.clone()),
            ("GEMBA_LEVEL_NAME".to_string(), def.name.clone()),
            ("GEMBA_SCOPE_KIND".to_string(), esc.scope.kind().to_string()),
            ("GEMBA_SCOPE".to_string(), scope.clone()),
            ("GEMBA_NODE".to_string(), node.clone()),
            ("GEMBA_NODE_ADDR".to_string(), node_addr.clone()),
            ("GEMBA_TIER".to_string(), tier.clone()),
            ("GEMBA_FAILING_CHECKS".to_string(), checks.join(",")),
            ("GEMBA_ESCALATION_ID".to_string(), id.to_string()),
            ("GEMBA_ATTEMPT".to_string(), attempt.to_string()),
            ("GEMBA_SERVER".to_string(), self.holder.clone()),
        ];
        // A step that names the node's address runs only with one the node
        // proved (a server never acts on an address a node merely claims).
        let names_addr = def.run.iter().any(|a| a.contains("{node_addr}"));
        if matches!(esc.scope, Scope::Node(_)) && names_addr && node_addr.is_empty() {
            let why = format!(
                "not run: {node} has not proved its address to this server (a signed presence from it), and the step names {{node_addr}}"
            );
            tracing::warn!(escalation = id, level, "{why}");
            let task = self.steps.spawn(async move {
                (
                    id,
                    level,
                    StepOutcome::Failed(why.clone()),
                    why,
                    Duration::ZERO,
                )
            });
            self.step_tasks
                .insert(task.id(), (id, level, tokio::time::Instant::now()));
            return;
        }
        tracing::info!(escalation = id, level, argv = ?argv, "running step");
        let spec = ExecSpec {
            argv,
            env,
            timeout: def.timeout,
            stdin: None,
        };
        let run = self.run_step.clone();
        let span = tracing::info_span!("step", escalation = id, level, scope = %scope);
        let task = self.steps.spawn(
            async move {
                let o = run(spec).await;
                let outcome = if o.success() {
                    StepOutcome::Succeeded
                } else {
                    StepOutcome::Failed(o.describe_end())
                };
                (id, level, outcome, o.combined(), o.duration)
            }
            .instrument(span),
        );
        self.step_tasks
            .insert(task.id(), (id, level, tokio::time::Instant::now()));
    }
}
