//! Replays check results through the engine in virtual time: `gemba
//! simulate` for people testing a policy before trusting it, and the
//! harness of the engine's own tests.
//!
//! Steps do not run; each "succeeds" after `step_duration` unless an
//! outcome is scripted. Every decision the engine makes comes back as a
//! timed [`SimEvent`].

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::sync::Arc;

use gemba_checks::CheckResult;
use gemba_core::{Policy, Scope};
use serde::Serialize;

use crate::engine::{Effect, Engine, Entry, Notice, StepOutcome};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimEvent {
    pub at_ms: u64,
    pub escalation: Option<u64>,
    pub scope: Scope,
    pub kind: String,
    pub text: String,
}

/// A step the simulator ran.
#[derive(Clone, Debug, PartialEq)]
pub struct SimRun {
    pub at_ms: u64,
    pub escalation: u64,
    pub attempt: u32,
    pub level: u32,
}

pub struct Simulator {
    pub engine: Engine,
    pub now: u64,
    next_id: u64,
    pub step_duration_ms: u64,
    /// Scripted outcomes per level, used in order; missing = success.
    pub outcomes: BTreeMap<u32, VecDeque<StepOutcome>>,
    pending: Vec<(u64, u64, u32)>,
    pub events: Vec<SimEvent>,
    pub runs: Vec<SimRun>,
    pub notices: Vec<Notice>,
    /// Every record the engine asked to save, in order (what a store
    /// would hold).
    pub saved: Vec<crate::engine::Escalation>,
    /// Scopes whose lease another server holds.
    pub foreign: BTreeMap<Scope, u64>,
}

impl Simulator {
    pub fn new(policy: Arc<Policy>, start_ms: u64) -> Simulator {
        let mut engine = Engine::new(policy);
        // The engine's first tick marks its start (quiet periods never
        // reach back before it).
        let _ = engine.tick(start_ms);
        Simulator {
            engine,
            now: start_ms,
            next_id: 1,
            step_duration_ms: 0,
            outcomes: BTreeMap::new(),
            pending: Vec::new(),
            events: Vec::new(),
            runs: Vec::new(),
            notices: Vec::new(),
            saved: Vec::new(),
            foreign: BTreeMap::new(),
        }
    }

    fn journal(&mut self, e: Entry) {
        self.events.push(SimEvent {
            at_ms: e.at_ms,
            escalation: e.escalation,
            scope: e.scope,
            kind: e.kind.as_str().to_string(),
            text: e.text,
        });
    }

    pub fn apply(&mut self, fx: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = fx.into();
        while let Some(f) = queue.pop_front() {
            match f {
                Effect::Open(req) => {
                    if let Some(until) = self.foreign.get(&req.scope).copied() {
                        let more = self.engine.deferred(
                            req.scope,
                            until,
                            "another server holds the lease".into(),
                            self.now,
                        );
                        queue.extend(more);
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    let more = self.engine.opened(id, req, self.now);
                    queue.extend(more);
                }
                Effect::Run { id, attempt, level } => {
                    self.runs.push(SimRun {
                        at_ms: self.now,
                        escalation: id,
                        attempt,
                        level,
                    });
                    self.pending
                        .push((self.now + self.step_duration_ms, id, level));
                    if self.step_duration_ms == 0 {
                        self.finish_due(&mut queue);
                    }
                }
                Effect::Journal(e) => self.journal(e),
                Effect::Notify(n) => self.notices.push(n),
                Effect::Save(e) => self.saved.push(*e),
                Effect::Release(_) => {}
            }
        }
    }

    fn finish_due(&mut self, queue: &mut VecDeque<Effect>) {
        let now = self.now;
        let due: Vec<(u64, u64, u32)> = self
            .pending
            .iter()
            .copied()
            .filter(|(t, _, _)| *t <= now)
            .collect();
        self.pending.retain(|(t, _, _)| *t > now);
        for (_, id, level) in due {
            let outcome = self
                .outcomes
                .get_mut(&level)
                .and_then(|q| q.pop_front())
                .unwrap_or(StepOutcome::Succeeded);
            let more = self
                .engine
                .step_done(id, level, outcome, "(simulated)".into(), now);
            queue.extend(more);
        }
    }

    pub fn observe(&mut self, r: CheckResult) {
        let fx = self.engine.observe(r);
        self.apply(fx);
        // The service decides as soon as results arrive, not only on its
        // timer; so does the simulation.
        let fx = self.engine.tick(self.now);
        self.apply(fx);
    }

    /// Moves time forward to `t`, ticking every `step` ms.
    pub fn run_until(&mut self, t: u64, step: u64) {
        while self.now < t {
            self.now = (self.now + step).min(t);
            let mut q = VecDeque::new();
            self.finish_due(&mut q);
            let mut fx: Vec<Effect> = q.into();
            fx.extend(self.engine.tick(self.now));
            self.apply(fx);
        }
    }
}

/// Error in a history file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: line {line}: {reason}")]
pub struct HistoryError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

/// Reads a history: one check result per line as JSON (the shape of
/// `GET /api/v1/checks` items). Blank lines and `#` comments are skipped.
pub fn read_history(name: &str, r: impl BufRead) -> Result<Vec<CheckResult>, HistoryError> {
    let mut out = Vec::new();
    let mut last = 0;
    for (i, line) in r.lines().enumerate() {
        let err = |reason: String| HistoryError {
            file: name.to_string(),
            line: i + 1,
            reason,
        };
        let line = line.map_err(|e| err(e.to_string()))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let r: CheckResult =
            serde_json::from_str(t).map_err(|e| err(format!("not a check result: {e}")))?;
        if r.at_ms < last {
            return Err(err(format!(
                "at_ms {} goes back in time (previous line: {last})",
                r.at_ms
            )));
        }
        last = r.at_ms;
        out.push(r);
    }
    Ok(out)
}

/// Replays `history` against `policy`; returns what the escalator did.
pub fn replay(policy: Arc<Policy>, history: &[CheckResult], step_duration_ms: u64) -> Simulator {
    let start = history.first().map(|r| r.at_ms).unwrap_or(0);
    let end = history.last().map(|r| r.at_ms).unwrap_or(0);
    let mut sim = Simulator::new(policy.clone(), start);
    sim.step_duration_ms = step_duration_ms;
    for r in history {
        sim.run_until(r.at_ms, 1000);
        sim.observe(r.clone());
    }
    // Let quiet periods, quiescence and verification that started within
    // the history play out.
    let tail = policy.escalator.quiet_period.as_millis() as u64
        + policy
            .levels
            .iter()
            .map(|l| l.quiesce.as_millis() as u64)
            .sum::<u64>()
        + 60_000;
    sim.run_until(end + tail, 1000);
    sim
}
