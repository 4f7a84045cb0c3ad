//! The market on a server: one task owns the detectors' memory and is the
//! only writer of the market's tables. Reports arrive parsed (parsing runs
//! on blocking threads, in the HTTP handler); the task takes every report
//! waiting, folds the new runs into the detectors, and commits runs,
//! changed problems and nodes in one transaction before it answers any of
//! them — so an acknowledged report is stored, and a batch under load costs
//! one commit instead of one per report. Should a commit fail, nothing of
//! the batch is acknowledged and the detectors reload from the store, so
//! memory never holds what the store does not.
//!
//! Why one file: the task's loop, its batching and its reload on failure
//! are one protocol with the handle's commands; the detectors and the
//! store's rows live elsewhere.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gemba_exec::Clock;
use gemba_store::{MarketBatch, MarketStore, NodeRow, ProblemRow, RunRow, StartRow, StoreError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::detect::{Detector, Digest, NodeHistory, Thresholds, HISTORY};
use crate::format::Parsed;
use crate::market::{Market, RunStats};
use crate::problem::{Problem, Severity};

/// Most runs folded into one commit.
const BATCH_RUNS: usize = 512;
/// How often a server that reads the market checks whether another server
/// (sharing the store) wrote it; reads within this window may lag.
const FRESH: Duration = Duration::from_secs(2);
/// Times a batch is rebuilt when other servers keep writing in between.
const RETRIES: u32 = 12;

/// A random wait before redoing a refused batch, growing with each try, so
/// servers that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let ceiling_ms = (2u64 << attempt.min(6)).min(100);
    Duration::from_millis(h.finish() % (ceiling_ms + 1))
}
/// How often time-driven detectors run.
const TICK: Duration = Duration::from_secs(60);

/// What happened to each run of a document.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Ingested {
    pub accepted: u32,
    pub duplicate: u32,
    /// Chef run starts recorded.
    pub started: u32,
    /// Keys of the runs, in order, each with whether it was new.
    pub runs: Vec<(String, bool)>,
}

/// A change people make to a problem.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemChange {
    pub owner: Option<String>,
    pub note: Option<String>,
    pub cause: Option<String>,
    pub severity: Option<String>,
    /// Close it by hand: `wont-fix`, `fixed-outside`, `duplicate of P-n`.
    #[serde(default)]
    pub close: Option<String>,
    /// Open a problem closed by hand again.
    #[serde(default)]
    pub reopen: bool,
    /// Who asks: set by the server from the request's token or session,
    /// never read from the body.
    #[serde(skip)]
    pub by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no problem {0}")]
    NoProblem(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the market is not running")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, MarketError>>;

enum Command {
    Ingest(Vec<Parsed>, Reply<Ingested>),
    Problems(Reply<Vec<Problem>>),
    Problem(u64, Reply<Option<Problem>>),
    Change(u64, ProblemChange, Reply<Problem>),
    Market(u64, u64, Reply<Market>),
    Record(String, u64, u64, Reply<Market>),
    Node(String, Reply<Option<NodeHistory>>),
    Retire(String, String, Reply<BTreeSet<u64>>),
    Nodes(Reply<Vec<(String, NodeHistory)>>),
}

/// Talks to the market task.
#[derive(Clone)]
pub struct MarketHandle {
    tx: mpsc::Sender<Command>,
    store: Arc<dyn MarketStore>,
    clock: Clock,
}

impl MarketHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, MarketError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| MarketError::Stopped)?;
        rx.await.map_err(|_| MarketError::Stopped)?
    }

    /// Stores the runs of one document; answers once they are committed.
    pub async fn ingest(&self, docs: Vec<Parsed>) -> Result<Ingested, MarketError> {
        self.ask(|r| Command::Ingest(docs, r)).await
    }

    /// Every problem, highest score first.
    pub async fn problems(&self) -> Result<Vec<Problem>, MarketError> {
        let mut list = self.ask(Command::Problems).await?;
        let now = self.clock.now_ms();
        list.sort_by(|a, b| b.score(now).total_cmp(&a.score(now)).then(a.id.cmp(&b.id)));
        Ok(list)
    }

    pub async fn problem(&self, id: u64) -> Result<Option<Problem>, MarketError> {
        self.ask(|r| Command::Problem(id, r)).await
    }

    /// Assigns, notes, records a cause or a severity; stored before it
    /// answers.
    pub async fn change(&self, id: u64, change: ProblemChange) -> Result<Problem, MarketError> {
        self.ask(|r| Command::Change(id, change, r)).await
    }

    /// The market for [since, until).
    pub async fn market(&self, since_ms: u64, until_ms: u64) -> Result<Market, MarketError> {
        self.ask(|r| Command::Market(since_ms, until_ms, r)).await
    }

    pub async fn node(&self, node: &str) -> Result<Option<NodeHistory>, MarketError> {
        self.ask(|r| Command::Node(node.to_string(), r)).await
    }

    /// The market of `day` (the window `since..until`): once its market
    /// time has passed, as recorded then (stored at the first call after
    /// it), with what changed since; before, as it is now.
    pub async fn record(
        &self,
        day: &str,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Market, MarketError> {
        self.ask(|r| Command::Record(day.to_string(), since_ms, until_ms, r))
            .await
    }

    /// Retires a node (`by`: who): it leaves every open problem; returns
    /// the problems that changed.
    pub async fn retire(&self, node: &str, by: &str) -> Result<BTreeSet<u64>, MarketError> {
        self.ask(|r| Command::Retire(node.to_string(), by.to_string(), r))
            .await
    }

    /// Every node the market knows, by name.
    pub async fn nodes(&self) -> Result<Vec<(String, NodeHistory)>, MarketError> {
        self.ask(Command::Nodes).await
    }

    pub fn store(&self) -> &Arc<dyn MarketStore> {
        &self.store
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// Parses a problem id: `P-17` or `17`.
pub fn problem_id(text: &str) -> Result<u64, MarketError> {
    let digits = text
        .strip_prefix("P-")
        .or(text.strip_prefix("p-"))
        .unwrap_or(text);
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            MarketError::Invalid(format!(
                "{:?} is not a problem id such as P-17",
                crate::run::cut_to(text, 40)
            ))
        })
}

/// Loads the detectors' memory from the store and starts the task.
pub async fn start(
    store: Arc<dyn MarketStore>,
    thresholds: Thresholds,
    clock: Clock,
) -> Result<(MarketHandle, impl std::future::Future<Output = ()>), StoreError> {
    let generation = store.generation().await?;
    let detector = load(&*store, thresholds.clone(), clock.now_ms()).await?;
    let (tx, rx) = mpsc::channel(1024);
    let handle = MarketHandle {
        tx,
        store: store.clone(),
        clock,
    };
    let task = Task {
        store,
        detector,
        thresholds,
        clock,
        generation,
        checked: tokio::time::Instant::now(),
    }
    .run(rx);
    Ok((handle, task))
}

async fn load(
    store: &dyn MarketStore,
    thresholds: Thresholds,
    now_ms: u64,
) -> Result<Detector, StoreError> {
    let mut d = Detector::new(thresholds);
    let mut problems = Vec::new();
    // Problems stored whole, before evidence had rows of its own: written
    // split at the next commit.
    let mut whole = Vec::new();
    for row in store.problems().await? {
        let mut p = match serde_json::from_str::<Problem>(&row.body) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(problem = row.id, error = %e, "a stored problem is unreadable; skipped");
                continue;
            }
        };
        if !p.nodes.is_empty() && row.nodes.is_empty() {
            whole.push(p.id);
        }
        for (node, body) in row.nodes {
            match serde_json::from_str(&body) {
                Ok(ev) => {
                    p.nodes.insert(node, ev);
                }
                Err(e) => {
                    tracing::warn!(problem = row.id, node, error = %e, "a problem's evidence for a node is unreadable; skipped")
                }
            }
        }
        problems.push(p);
    }
    let mut nodes = Vec::new();
    for row in store.nodes().await? {
        if let Ok(h) = serde_json::from_str::<NodeHistory>(&row.body) {
            nodes.push((row.node, h));
        }
    }
    d.restore(problems, nodes);
    d.restore_fine(store.fine().await?);
    for id in whole {
        d.mark_all(id);
    }
    let since = now_ms.saturating_sub(7 * 86_400_000);
    for (node, digest) in store.recent_digests(since, HISTORY).await? {
        if let Ok(dg) = serde_json::from_str::<Digest>(&digest) {
            d.remember(&node, dg);
        }
    }
    Ok(d)
}

struct Task {
    store: Arc<dyn MarketStore>,
    detector: Detector,
    thresholds: Thresholds,
    clock: Clock,
    /// The store's market generation the detectors' memory reflects.
    /// Servers sharing a store each keep such a memory: every commit names
    /// it, and one refused as stale reloads the memory and is redone.
    generation: u64,
    /// When the generation was last compared with the store's.
    checked: tokio::time::Instant,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.handle(cmd, &mut rx).await;
                }
                _ = tick.tick() => {
                    self.refresh(true).await;
                    let touched = self.detector.tick(self.clock.now_ms());
                    if !touched.is_empty() {
                        let batch = MarketBatch { problems: self.rows(&touched), ..Default::default() };
                        // Refused as stale: the reload has the other
                        // server's picture, and the next tick redoes this.
                        if let Err(e) = self.commit(batch).await {
                            tracing::warn!(error = %e, "cannot store the market's time-driven changes");
                            self.reload().await;
                        }
                    }
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Command, rx: &mut mpsc::Receiver<Command>) {
        if !matches!(
            cmd,
            Command::Ingest(..) | Command::Change(..) | Command::Retire(..)
        ) {
            // A read shows what other servers sharing the store wrote.
            self.refresh(false).await;
        }
        match cmd {
            Command::Ingest(docs, reply) => {
                let mut waiting = vec![(docs, reply)];
                let mut count: usize = waiting[0].0.len();
                let mut other = None;
                while count < BATCH_RUNS {
                    match rx.try_recv() {
                        Ok(Command::Ingest(d, r)) => {
                            count += d.len();
                            waiting.push((d, r));
                        }
                        Ok(cmd) => {
                            other = Some(cmd);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.ingest(waiting).await;
                if let Some(cmd) = other {
                    Box::pin(self.handle(cmd, rx)).await;
                }
            }
            Command::Problem(id, reply) => {
                let _ = reply.send(Ok(self.detector.problem(id).cloned()));
            }
            Command::Problems(reply) => {
                let _ = reply.send(Ok(self.detector.problems().cloned().collect()));
            }
            Command::Change(id, change, reply) => {
                let mut r = self.change(id, &change).await;
                for attempt in 0..RETRIES {
                    if !matches!(r, Err(MarketError::Store(StoreError::Conflict(_)))) {
                        break;
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    r = self.change(id, &change).await;
                }
                let _ = reply.send(r);
            }
            Command::Market(since, until, reply) => {
                let _ = reply.send(self.build(since, until).await);
            }
            Command::Record(day, since, until, reply) => {
                let _ = reply.send(self.record(&day, since, until).await);
            }
            Command::Node(node, reply) => {
                let _ = reply.send(Ok(self.detector.nodes.get(&node).cloned()));
            }
            Command::Nodes(reply) => {
                let mut all: Vec<(String, NodeHistory)> = self
                    .detector
                    .nodes
                    .iter()
                    .map(|(n, h)| (n.clone(), h.clone()))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                let _ = reply.send(Ok(all));
            }
            Command::Retire(node, by, reply) => {
                let mut r = self.retire(&node, &by).await;
                for attempt in 0..RETRIES {
                    if !matches!(r, Err(MarketError::Store(StoreError::Conflict(_)))) {
                        break;
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    r = self.retire(&node, &by).await;
                }
                let _ = reply.send(r);
            }
        }
    }

    async fn ingest(&mut self, waiting: Vec<(Vec<Parsed>, Reply<Ingested>)>) {
        let mut result = self.fold_and_commit(&waiting).await;
        for attempt in 0..RETRIES {
            // Another server wrote the market since this memory was read:
            // the reload has its picture, and the batch is folded again.
            if !matches!(result, Err(StoreError::Conflict(_))) {
                break;
            }
            tokio::time::sleep(backoff(attempt)).await;
            self.reload().await;
            result = self.fold_and_commit(&waiting).await;
        }
        match result {
            Ok(outs) => {
                for ((_, reply), out) in waiting.into_iter().zip(outs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store reports; none of this batch is acknowledged");
                for (_, reply) in waiting {
                    let _ = reply.send(Err(MarketError::Store(e.clone())));
                }
                self.reload().await;
            }
        }
    }

    /// Folds the waiting documents into the detectors and commits what
    /// they changed; the answer for each document. On an error the memory
    /// holds what the store does not: the caller reloads.
    async fn fold_and_commit(
        &mut self,
        waiting: &[(Vec<Parsed>, Reply<Ingested>)],
    ) -> Result<Vec<Ingested>, StoreError> {
        let keys: Vec<String> = waiting
            .iter()
            .flat_map(|(docs, _)| docs.iter())
            .filter_map(|d| match d {
                Parsed::Run(r) => Some(r.key.clone()),
                Parsed::Start(_) => None,
            })
            .collect();
        let known: HashSet<String> = self.store.known_runs(keys).await?.into_iter().collect();
        let mut seen = HashSet::new();
        let mut batch = MarketBatch::default();
        let mut touched = BTreeSet::new();
        let mut nodes = BTreeSet::new();
        let mut outs = Vec::with_capacity(waiting.len());
        let arrived = self.clock.now_ms();
        for (docs, _) in waiting {
            let mut out = Ingested::default();
            for d in docs {
                match d {
                    Parsed::Start(s) => {
                        out.started += 1;
                        batch.starts.push(StartRow {
                            run_id: s.run_id.clone(),
                            node: s.node.clone(),
                            started_ms: s.started_ms,
                        });
                    }
                    Parsed::Run(run) => {
                        if known.contains(&run.key) || !seen.insert(run.key.clone()) {
                            out.duplicate += 1;
                            out.runs.push((run.key.clone(), false));
                            continue;
                        }
                        out.accepted += 1;
                        out.runs.push((run.key.clone(), true));
                        touched.extend(self.detector.apply_arrived(run, Some(arrived)));
                        nodes.insert(run.node.clone());
                        batch.runs.push(run_row(run));
                    }
                }
            }
            outs.push(out);
        }
        batch.problems = self.rows(&touched);
        batch.fine = self.detector.take_fine();
        batch.nodes = nodes
            .into_iter()
            .filter_map(|n| {
                let h = self.detector.nodes.get(&n)?;
                Some(NodeRow {
                    body: serde_json::to_string(h).ok()?,
                    node: n,
                })
            })
            .collect();
        self.commit(batch).await?;
        Ok(outs)
    }

    /// Commits `batch` as built from this memory's generation.
    async fn commit(&mut self, mut batch: MarketBatch) -> Result<(), StoreError> {
        batch.generation = Some(self.generation);
        self.store.commit(batch).await?;
        self.generation += 1;
        Ok(())
    }

    /// Reloads the memory if another server wrote the market since it was
    /// read; without `force`, at most once per [`FRESH`].
    async fn refresh(&mut self, force: bool) {
        if !force && self.checked.elapsed() < FRESH {
            return;
        }
        self.checked = tokio::time::Instant::now();
        match self.store.generation().await {
            Ok(g) if g != self.generation => self.reload().await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the market's generation"),
        }
    }

    fn rows(&mut self, ids: &BTreeSet<u64>) -> Vec<ProblemRow> {
        problem_rows(&mut self.detector, ids)
    }

    async fn change(&mut self, id: u64, change: &ProblemChange) -> Result<Problem, MarketError> {
        let now = self.clock.now_ms();
        let severity = match change.severity.as_deref() {
            None => None,
            Some(s) => Some(Severity::parse(s).ok_or_else(|| {
                MarketError::Invalid(format!(
                    "severity {:?} is not low, medium, high or critical",
                    crate::run::cut_to(s, 20)
                ))
            })?),
        };
        if let Some(o) = &change.owner {
            if !o.is_empty() && !gemba_core::ids::is_name(o) {
                return Err(MarketError::Invalid(format!(
                    "owner {:?} is not a name: 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
                    crate::run::cut_to(o, 70)
                )));
            }
        }
        for (what, text) in [("note", &change.note), ("cause", &change.cause)] {
            if text
                .as_ref()
                .is_some_and(|t| t.trim().is_empty() || t.len() > 2_000)
            {
                return Err(MarketError::Invalid(format!(
                    "{what} must be 1 to 2000 bytes of text"
                )));
            }
        }
        if change.close.is_some() && change.reopen {
            return Err(MarketError::Invalid(
                "close and reopen: one or the other".into(),
            ));
        }
        let p = self
            .detector
            .problem_mut(id)
            .ok_or_else(|| MarketError::NoProblem(format!("P-{id}")))?;
        let reason = match &change.close {
            Some(text) => {
                let reason =
                    crate::problem::Closing::reason(text, id).map_err(MarketError::Invalid)?;
                if let Some(c) = &p.closed {
                    return Err(MarketError::Invalid(format!(
                        "P-{id} is closed already ({}, by {})",
                        c.reason, c.by
                    )));
                }
                Some(reason)
            }
            None => None,
        };
        if change.reopen && p.closed.is_none() {
            return Err(MarketError::Invalid(format!(
                "P-{id} was not closed by hand: there is nothing to reopen"
            )));
        }
        let by = change.by.as_str();
        if let Some(o) = &change.owner {
            let to = (!o.is_empty()).then(|| o.clone());
            p.record(now, "owner", p.owner.clone(), to.clone(), by);
            p.owner = to;
        }
        if let Some(n) = &change.note {
            p.add_note(now, n.trim());
        }
        if let Some(c) = &change.cause {
            let to = Some(c.trim().to_string());
            p.record(now, "cause", p.cause.clone(), to.clone(), by);
            p.cause = to;
        }
        if let Some(s) = severity {
            p.record(
                now,
                "severity",
                Some(p.severity.as_str().to_string()),
                Some(s.as_str().to_string()),
                by,
            );
            p.severity = s;
            p.severity_fixed = true;
        }
        if let Some(reason) = &reason {
            p.set_status(crate::problem::Status::Resolved, now, by);
            p.resolved_ms = Some(now);
            p.closed = Some(crate::problem::Closing {
                reason: reason.clone(),
                by: change.by.clone(),
                at_ms: now,
            });
            p.add_note(now, &format!("closed by {}: {reason}", change.by));
        }
        if change.reopen {
            p.set_status(crate::problem::Status::Open, now, by);
            p.resolved_ms = None;
            p.closed = None;
            p.add_note(now, &format!("reopened by {}", change.by));
        }
        p.touched_by_people(now, by);
        let updated = p.clone();
        let batch = MarketBatch {
            problems: self.rows(&BTreeSet::from([id])),
            ..Default::default()
        };
        if let Err(e) = self.commit(batch).await {
            self.reload().await;
            return Err(e.into());
        }
        Ok(updated)
    }

    async fn build(&self, since: u64, until: u64) -> Result<Market, MarketError> {
        let c = self.store.run_counts(since, until).await?;
        Ok(Market::build_with(
            self.detector.problems(),
            since,
            until,
            RunStats {
                runs: c.runs,
                failed: c.failed,
                nodes: c.nodes,
            },
            self.thresholds.history_after_ms,
        ))
    }

    /// A day's market as recorded when its time passed (recording it now
    /// if it never was), with what changed since.
    async fn record(&mut self, day: &str, since: u64, until: u64) -> Result<Market, MarketError> {
        let live = self.build(since, until).await?;
        let now = self.clock.now_ms();
        if until >= now {
            return Ok(live);
        }
        let key = crate::market::record_key(day);
        if let Some(json) = self.store.get_value(&key).await? {
            match serde_json::from_str::<Market>(&json) {
                Ok(mut m) => {
                    m.changed_since = m.changes_since(&live);
                    return Ok(m);
                }
                Err(e) => {
                    tracing::warn!(date = %day, error = %e, "the market's record of the day cannot be read; recording it again")
                }
            }
        }
        if live.runs.runs == 0 && live.entries().next().is_none() {
            // Nothing was known of that day yet (a server that just
            // started, an import still to come): nothing to freeze.
            return Ok(live);
        }
        let mut m = live;
        m.recorded = Some(crate::time::format_ms(now));
        let json = serde_json::to_string(&m)
            .map_err(|e| MarketError::Invalid(format!("cannot record the market: {e}")))?;
        self.store.set_value(&key, &json).await?;
        Ok(m)
    }

    async fn retire(&mut self, node: &str, by: &str) -> Result<BTreeSet<u64>, MarketError> {
        let now = self.clock.now_ms();
        let touched = self
            .detector
            .retire(node, now, by)
            .map_err(MarketError::Invalid)?;
        let body = self
            .detector
            .nodes
            .get(node)
            .and_then(|h| serde_json::to_string(h).ok());
        let batch = MarketBatch {
            problems: self.rows(&touched),
            nodes: body
                .map(|body| NodeRow {
                    node: node.to_string(),
                    body,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        if let Err(e) = self.commit(batch).await {
            self.reload().await;
            return Err(e.into());
        }
        Ok(touched)
    }

    async fn reload(&mut self) {
        // The generation is read first: a commit landing during the load is
        // then seen as newer, and reloaded again, never missed.
        let loaded = match self.store.generation().await {
            Ok(g) => load(&*self.store, self.thresholds.clone(), self.clock.now_ms())
                .await
                .map(|d| (g, d)),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((g, d)) => {
                self.generation = g;
                self.detector = d;
                self.checked = tokio::time::Instant::now();
            }
            Err(e) => {
                // The memory may hold what was never stored: it matches no
                // generation now, so the next commit is refused and the
                // next read reloads, once the store answers again.
                self.generation = u64::MAX;
                let now = tokio::time::Instant::now();
                self.checked = now.checked_sub(FRESH).unwrap_or(now);
                tracing::error!(error = %e, "cannot reload the market from the store")
            }
        }
    }
}

/// What is stored of a run.
pub fn run_row(run: &crate::run::Run) -> RunRow {
    RunRow {
        id: 0,
        key: run.key.clone(),
        node: run.node.clone(),
        tool: run.tool.as_str().into(),
        started_ms: run.started_ms,
        duration_ms: run.duration_ms,
        status: run.status.as_str().into(),
        environment: run.environment.clone(),
        code_version: run.code_version.clone(),
        total: run.counts.total,
        changed: run.counts.changed,
        failed: run.counts.failed,
        digest: serde_json::to_string(&Digest::of(run)).unwrap_or_default(),
        body: serde_json::to_string(run).unwrap_or_default(),
    }
}

/// The rows of the problems in `ids` and of every problem whose
/// evidence changed: each record without its nodes, and the evidence
/// rows of the nodes that changed.
pub fn problem_rows(detector: &mut Detector, ids: &BTreeSet<u64>) -> Vec<ProblemRow> {
    let mut dirty = detector.take_dirty();
    let mut all = ids.clone();
    all.extend(dirty.keys().copied());
    let mut out = Vec::with_capacity(all.len());
    for id in all {
        let Some(p) = detector.problem_mut(id) else {
            continue;
        };
        let nodes = std::mem::take(&mut p.nodes);
        let body = serde_json::to_string(&*p);
        p.nodes = nodes;
        let Ok(body) = body else { continue };
        let p = &*p;
        let evidence = |n: &String| {
            let ev = p.nodes.get(n)?;
            Some((n.clone(), serde_json::to_string(ev).ok()?))
        };
        let (replace_nodes, nodes) = match dirty.remove(&id) {
            None => (false, Vec::new()),
            Some(None) => (true, p.nodes.keys().filter_map(evidence).collect()),
            Some(Some(set)) => (false, set.iter().filter_map(evidence).collect()),
        };
        out.push(ProblemRow {
            id: p.id,
            signature: p.signature.clone(),
            status: p.status.as_str().into(),
            last_seen_ms: p.last_seen_ms,
            body,
            nodes,
            replace_nodes,
        });
    }
    out
}
