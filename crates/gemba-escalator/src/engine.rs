//! The escalator's decisions, as a pure state machine.
//!
//! The engine owns no clock, no store and no processes: callers feed it
//! check results and the current time (unix ms) and carry out the
//! [`Effect`]s it returns. That makes every rule testable in virtual time
//! and lets `gemba simulate` replay a recorded history through exactly the
//! code that runs in production.
//!
//! Per scope: failing checks start a quiet period; when it ends, the most
//! fundamental level any failing check requires starts a chain of that
//! level and every level after it. Each step is followed by its quiescence;
//! after the last one the checks that triggered the escalation are the
//! post-condition. A failed step or post-condition costs one attempt of the
//! budget; past it the scope is held for a human.
//!
//! Limits are outcomes, not log lines. Each scope's failure episodes (from
//! no failing check to some), escalations and steps are remembered over
//! time. When a scope fails `crash_loop_failures` times within
//! `crash_loop_window` it is in a crash loop: with `climb` the escalation
//! starts one level more fundamental than the last ones did, otherwise (or
//! with no level left) the scope is held. Past `max_per_scope_per_hour` the
//! scope is held too. A held scope gets one notice that says why, what
//! failed, what ran and how to free it (`gemba ack`), which also starts
//! its counts afresh. Over `max_running` a scope waits for a free slot,
//! with one notice per episode.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gemba_checks::{CheckResult, HardState};
use gemba_core::{Mode, Policy, Scope};
use serde::{Deserialize, Serialize};

/// Where an escalation is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    AwaitingApproval {
        level: u32,
    },
    Running {
        level: u32,
        started_ms: u64,
    },
    Quiescing {
        level: u32,
        until_ms: u64,
    },
    Verifying {
        after_ms: u64,
        deadline_ms: u64,
    },
    Backoff {
        until_ms: u64,
    },
    /// Out of budget: nothing runs for this scope until acknowledged.
    Held {
        since_ms: u64,
    },
    Resolved {
        at_ms: u64,
    },
    Acknowledged {
        at_ms: u64,
    },
    /// A broader scope's escalation took over.
    Superseded {
        by: u64,
    },
}

/// How the engine wants a scope's escalation opened.
#[derive(Clone, Debug, PartialEq)]
pub enum Opening {
    /// Run the chain.
    Run,
    /// Run the chain from a more fundamental level than the checks
    /// require, because the scope is in a crash loop.
    Climb { why: String },
    /// Open it held for a human (crash loop, rate limit): nothing runs.
    Hold { kind: NoticeKind, why: String },
}

/// An escalation the engine asks the caller to open.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRequest {
    pub scope: Scope,
    pub level: u32,
    pub checks: Vec<String>,
    pub how: Opening,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::AwaitingApproval { .. } => "awaiting-approval",
            Phase::Running { .. } => "running",
            Phase::Quiescing { .. } => "quiescing",
            Phase::Verifying { .. } => "verifying",
            Phase::Backoff { .. } => "backoff",
            Phase::Held { .. } => "held",
            Phase::Resolved { .. } => "resolved",
            Phase::Acknowledged { .. } => "acknowledged",
            Phase::Superseded { .. } => "superseded",
        }
    }

    /// Whether the escalation is over.
    pub fn closed(&self) -> bool {
        matches!(
            self,
            Phase::Resolved { .. } | Phase::Acknowledged { .. } | Phase::Superseded { .. }
        )
    }

    /// Whether it counts against `max_running`.
    pub fn active(&self) -> bool {
        !self.closed() && !matches!(self, Phase::Held { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "kebab-case")]
pub enum StepOutcome {
    Succeeded,
    Failed(String),
    /// The process running it stopped before the step reported; its
    /// outcome is unknown and it is not re-run blindly.
    Interrupted(String),
    /// Decided but not run (`mode = "plan"` or another server ran it).
    NotRun(String),
}

impl StepOutcome {
    /// In words, for people: "succeeded", "failed: exit 1", ...
    pub fn describe(&self) -> String {
        match self {
            StepOutcome::Succeeded => "succeeded".into(),
            StepOutcome::Failed(r) => format!("failed: {r}"),
            StepOutcome::Interrupted(r) => format!("interrupted: {r}"),
            StepOutcome::NotRun(r) => format!("not run: {r}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub attempt: u32,
    pub level: u32,
    pub name: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub outcome: Option<StepOutcome>,
    #[serde(default)]
    pub output: String,
}

/// One escalation of one scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub id: u64,
    pub scope: Scope,
    pub phase: Phase,
    pub opened_ms: u64,
    pub updated_ms: u64,
    /// The checks (`check@scope`) that triggered it: its post-condition.
    pub checks: Vec<String>,
    /// Where the chain starts this attempt (climbs with `climb = true`).
    pub start_level: u32,
    pub chain: Vec<u32>,
    /// Index into `chain` of the current or last step.
    pub position: usize,
    pub attempt: u32,
    pub steps: Vec<StepRecord>,
    /// Narrower scopes that folded into this one.
    pub folded: Vec<Scope>,
    /// Levels approved by a human in this attempt.
    #[serde(default)]
    pub approved: Vec<u32>,
    /// Why it is held (gave up, crash loop, rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_because: Option<String>,
}

/// Something that happened worth telling a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    StepFailed,
    GaveUp,
    ApprovalNeeded,
    Resolved,
    Flapping,
    /// A rate limit held the scope or makes it wait.
    RateLimited,
    CrashLoop,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::StepFailed => "step-failed",
            NoticeKind::GaveUp => "gave-up",
            NoticeKind::ApprovalNeeded => "approval-needed",
            NoticeKind::Resolved => "resolved",
            NoticeKind::Flapping => "flapping",
            NoticeKind::RateLimited => "rate-limited",
            NoticeKind::CrashLoop => "crash-loop",
        }
    }
}

/// A failing check as a notice reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeCheck {
    pub id: String,
    /// Its last output.
    pub output: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub escalation: Option<u64>,
    pub scope: Scope,
    pub at_ms: u64,
    pub text: String,
    /// The failing checks (gave up, held, rate limit, crash loop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<NoticeCheck>,
    /// What ran and how it ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ran: Vec<String>,
    /// What gemba does next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The command that frees a held scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub escalation: Option<u64>,
    pub scope: Scope,
    pub at_ms: u64,
    pub kind: String,
    pub text: String,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Open an escalation (take the scope's lease, allocate an id, then
    /// call [`Engine::opened`] — or [`Engine::deferred`] if refused).
    Open(OpenRequest),
    /// Run a step; report with [`Engine::step_done`].
    Run {
        id: u64,
        attempt: u32,
        level: u32,
    },
    /// Persist the escalation's current record.
    Save(Box<Escalation>),
    Journal(Entry),
    Notify(Notice),
    /// The scope's lease can go.
    Release(Scope),
}

/// Why a check is not counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ignored {
    Flapping,
    Stale,
    Untrusted,
}

impl Ignored {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ignored::Flapping => "flapping",
            Ignored::Stale => "stale",
            Ignored::Untrusted => "untrusted",
        }
    }
}

/// A failing check as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailingCheck {
    pub id: String,
    pub level: u32,
    pub since_ms: u64,
    pub output: String,
    pub ignored: Option<Ignored>,
}

/// The plan for one scope: what would run, why, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopePlan {
    pub scope: Scope,
    pub checks: Vec<FailingCheck>,
    /// Most fundamental level required by the counted checks.
    pub level: Option<u32>,
    /// Level names in the order they would run.
    pub chain: Vec<String>,
    pub status: String,
    pub escalation: Option<u64>,
    /// When the next thing happens (unix ms), if known.
    pub at_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub at_ms: u64,
    pub mode: String,
    pub scopes: Vec<ScopePlan>,
}

#[derive(Clone, Debug)]
struct Watch {
    quiet_since: u64,
    /// Set when a decision was journaled but not acted on (plan mode, a
    /// wait for a free slot): its journal kind, so that it is journaled
    /// once per episode, and its words for the plan.
    noted: Option<(&'static str, String)>,
}

const HOUR_MS: u64 = 3_600_000;
/// Steps remembered per scope for notices.
const STEPS_KEPT: usize = 20;

/// What the engine remembers of one scope over time: the counts behind
/// the hourly rate limit and the crash loop, and what ran.
#[derive(Clone, Debug, Default)]
struct ScopeHistory {
    /// When failure episodes began.
    episodes: Vec<u64>,
    /// When escalations that ran something opened, and the level each
    /// started from.
    opened: Vec<(u64, u32)>,
    /// Finished steps, newest last, with the escalation they belong to.
    steps: std::collections::VecDeque<(u64, StepRecord)>,
    /// An acknowledgement forgives everything before it.
    forgiven_ms: u64,
    /// A human acknowledged the scope and it was not held since: its
    /// flapping checks may act (a new crash loop still holds it).
    acked: bool,
}

impl ScopeHistory {
    fn prune(&mut self, keep_after: u64) {
        let after = keep_after.max(self.forgiven_ms);
        self.episodes.retain(|t| *t >= after);
        self.opened.retain(|(t, _)| *t >= after);
        self.steps.retain(|(_, s)| s.started_ms >= after);
    }

    fn forgive(&mut self, at: u64) {
        self.forgiven_ms = self.forgiven_ms.max(at);
        self.prune(0);
    }

    fn keep_step(&mut self, escalation: u64, step: StepRecord) {
        if self.steps.len() == STEPS_KEPT {
            self.steps.pop_front();
        }
        self.steps.push_back((escalation, step));
    }

    /// Nothing left to remember.
    fn is_idle(&self) -> bool {
        self.episodes.is_empty() && self.opened.is_empty() && self.steps.is_empty() && !self.acked
    }
}

/// A crash loop: how many failures in how long, and what ran meanwhile.
struct CrashLoop {
    failures: usize,
    span_ms: u64,
    /// Steps run in the window, per level (level, name, count).
    runs: Vec<(u32, String, usize)>,
    /// The most fundamental level escalations in the window started from.
    deepest: Option<u32>,
}

impl CrashLoop {
    fn describe(&self) -> String {
        let ran = if self.runs.is_empty() {
            "nothing ran".to_string()
        } else {
            self.runs
                .iter()
                .map(|(l, name, n)| {
                    format!("{l}:{name} ran {n} time{}", if *n == 1 { "" } else { "s" })
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "crash loop: {} failures in {}, {ran}",
            self.failures,
            span_words(self.span_ms)
        )
    }
}

/// An escalation's status in a plan: "escalation 4 held (crash loop: …);
/// `gemba ack node:a` frees it".
fn escalation_status(e: &Escalation) -> String {
    match (&e.phase, &e.held_because) {
        (Phase::Held { .. }, Some(why)) => format!(
            "escalation {} held ({why}); `gemba ack {}` frees it",
            e.id, e.scope
        ),
        _ => format!("escalation {} {}", e.id, e.phase.name()),
    }
}

/// One step for a notice: "escalation 3, attempt 1: level 2 (restart)
/// succeeded: restarted pid 42".
fn describe_step(id: u64, s: &StepRecord) -> String {
    let outcome = s
        .outcome
        .as_ref()
        .map(StepOutcome::describe)
        .unwrap_or_else(|| "still running".into());
    let last = s.output.lines().rev().find(|l| !l.trim().is_empty());
    let said = match last {
        Some(l) if l.chars().count() > 200 => {
            format!(": {}…", l.chars().take(200).collect::<String>())
        }
        Some(l) => format!(": {}", l.trim()),
        None => String::new(),
    };
    format!(
        "escalation {id}, attempt {}: level {} ({}) {outcome}{said}",
        s.attempt, s.level, s.name
    )
}

/// "43 s", "6 min", "2 h 5 min".
pub fn span_words(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", (s + 30) / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// What the quiet period's end decides for a scope.
enum Verdict {
    Open {
        level: u32,
        how: Opening,
    },
    /// Over `max_running`: wait for a free slot.
    Wait(String),
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("no open escalation {0}")]
    NoSuchEscalation(u64),
    #[error("escalation {id} is {phase}, not awaiting approval")]
    NotAwaitingApproval { id: u64, phase: &'static str },
    #[error("scope {0} is not held")]
    NotHeld(Scope),
}

pub struct Engine {
    policy: Arc<Policy>,
    /// Latest result per `check@scope`.
    results: BTreeMap<String, CheckResult>,
    /// Ids of results in the failing hard state, by scope.
    failing: BTreeMap<Scope, BTreeSet<String>>,
    node_tiers: BTreeMap<String, Vec<String>>,
    watches: BTreeMap<Scope, Watch>,
    open: BTreeMap<u64, Escalation>,
    /// Episodes, escalations and steps per scope, over time.
    history: BTreeMap<Scope, ScopeHistory>,
    deferred: BTreeMap<Scope, (u64, String)>,
    flapping_noted: BTreeSet<String>,
    /// When this engine first ticked.
    started_ms: Option<u64>,
}

impl Engine {
    pub fn new(policy: Arc<Policy>) -> Engine {
        Engine {
            policy,
            results: BTreeMap::new(),
            failing: BTreeMap::new(),
            node_tiers: BTreeMap::new(),
            watches: BTreeMap::new(),
            open: BTreeMap::new(),
            history: BTreeMap::new(),
            deferred: BTreeMap::new(),
            flapping_noted: BTreeSet::new(),
            started_ms: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn results(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.values()
    }

    pub fn open_escalations(&self) -> impl Iterator<Item = &Escalation> {
        self.open.values()
    }

    pub fn escalation(&self, id: u64) -> Option<&Escalation> {
        self.open.get(&id)
    }

    /// Takes in one result. Returns notices (flapping) to send.
    pub fn observe(&mut self, r: CheckResult) -> Vec<Effect> {
        let id = r.id();
        let mut fx = Vec::new();
        if let Scope::Node(n) = &r.scope {
            if !r.tiers.is_empty() && self.node_tiers.get(n) != Some(&r.tiers) {
                self.node_tiers.insert(n.clone(), r.tiers.clone());
            }
        }
        if r.flapping && self.flapping_noted.insert(id.clone()) {
            let text = format!(
                "{id} is flapping ({:.0} % weighted state change, {} state changes within its flap window): it will not trigger actions until it settles",
                r.flap_percent, r.flap_changes
            );
            // Journaled now; a human hears of it when the flapping check
            // fails past a quiet period and holds its scope (see `tick`).
            self.journal(&mut fx, None, &r.scope, r.at_ms, "flapping", text);
        } else if !r.flapping {
            self.flapping_noted.remove(&id);
        }
        let was_failing = self.failing_trusted(&r.scope);
        let set = self.failing.entry(r.scope.clone()).or_default();
        if r.state == HardState::Failing && r.level.is_some() {
            set.insert(id.clone());
        } else {
            set.remove(&id);
            if set.is_empty() {
                self.failing.remove(&r.scope);
            }
        }
        let (scope, began) = (r.scope.clone(), r.since_ms.min(r.at_ms));
        self.results.insert(id, r);
        if !was_failing && self.failing_trusted(&scope) {
            self.history.entry(scope).or_default().episodes.push(began);
        }
        fx
    }

    /// Whether a trusted observer reports a failing check of `scope`.
    fn failing_trusted(&self, scope: &Scope) -> bool {
        self.failing.get(scope).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.results.get(id).is_some_and(|r| r.trusted))
        })
    }

    /// A notice without details.
    fn notice(
        &self,
        kind: NoticeKind,
        e: Option<&Escalation>,
        scope: &Scope,
        now: u64,
        text: String,
    ) -> Notice {
        Notice {
            kind,
            escalation: e.map(|e| e.id),
            scope: scope.clone(),
            at_ms: now,
            text,
            checks: Vec::new(),
            ran: Vec::new(),
            next: None,
            ack: None,
        }
    }

    /// A notice with what a human needs: the failing checks with their
    /// last output and what ran for the scope since `since_ms`.
    #[allow(clippy::too_many_arguments)]
    fn detailed_notice(
        &self,
        kind: NoticeKind,
        e: Option<&Escalation>,
        scope: &Scope,
        checks: &[String],
        since_ms: u64,
        now: u64,
        text: String,
        next: String,
    ) -> Notice {
        let checks = checks
            .iter()
            .map(|id| NoticeCheck {
                id: id.clone(),
                output: self
                    .results
                    .get(id)
                    .map(|r| r.output.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let ran = self
            .history
            .get(scope)
            .map(|h| {
                h.steps
                    .iter()
                    .filter(|(_, s)| s.started_ms >= since_ms)
                    .map(|(id, s)| describe_step(*id, s))
                    .collect()
            })
            .unwrap_or_default();
        let held = e.is_some_and(|e| matches!(e.phase, Phase::Held { .. }));
        Notice {
            checks,
            ran,
            next: Some(next),
            ack: held.then(|| format!("gemba ack {scope}")),
            ..self.notice(kind, e, scope, now, text)
        }
    }

    fn ignored(&self, r: &CheckResult, now: u64) -> Option<Ignored> {
        if r.flapping {
            Some(Ignored::Flapping)
        } else if !r.trusted {
            Some(Ignored::Untrusted)
        } else if r.stale(now, self.policy.escalator.stale_after_intervals) {
            Some(Ignored::Stale)
        } else {
            None
        }
    }

    /// Whether `broad` covers `narrow` (and is not `narrow` itself).
    fn covers(&self, broad: &Scope, narrow: &Scope) -> bool {
        match (broad, narrow) {
            (Scope::Global, Scope::Global) => false,
            (Scope::Global, _) => true,
            (Scope::Tier(t), Scope::Node(n)) => self
                .node_tiers
                .get(n)
                .is_some_and(|tiers| tiers.iter().any(|x| x == t)),
            _ => false,
        }
    }

    fn escalation_of(&self, scope: &Scope) -> Option<&Escalation> {
        self.open
            .values()
            .find(|e| &e.scope == scope && !e.phase.closed())
    }

    fn covering_escalation(&self, scope: &Scope) -> Option<&Escalation> {
        self.open
            .values()
            .filter(|e| e.phase.active() && self.covers(&e.scope, scope))
            .min_by_key(|e| e.scope.breadth_rank())
    }

    fn chain_names(&self, level: u32) -> Vec<String> {
        self.policy
            .chain_from(level)
            .iter()
            .filter_map(|l| self.policy.level(*l).map(|d| format!("{l}:{}", d.name)))
            .collect()
    }

    fn journal(
        &self,
        fx: &mut Vec<Effect>,
        e: Option<&Escalation>,
        scope: &Scope,
        now: u64,
        kind: &str,
        text: String,
    ) {
        tracing::info!(scope = %scope, escalation = ?e.map(|e| e.id), kind, "{text}");
        fx.push(Effect::Journal(Entry {
            escalation: e.map(|e| e.id),
            scope: scope.clone(),
            at_ms: now,
            kind: kind.into(),
            text,
        }));
    }

    /// Journals the notice's text and tells people about it.
    fn announce(
        &self,
        fx: &mut Vec<Effect>,
        e: Option<&Escalation>,
        scope: &Scope,
        now: u64,
        kind: &str,
        notice: Notice,
    ) {
        self.journal(fx, e, scope, now, kind, notice.text.clone());
        fx.push(Effect::Notify(notice));
    }

    fn save(&self, id: u64, fx: &mut Vec<Effect>) {
        if let Some(e) = self.open.get(&id) {
            fx.push(Effect::Save(Box::new(e.clone())));
        }
    }

    fn running_count(&self) -> usize {
        self.open.values().filter(|e| e.phase.active()).count()
    }

    /// Failing checks of `scope` from trusted observers with fresh
    /// results: (id, level, flapping).
    fn candidates(&self, scope: &Scope, now: u64) -> Vec<(String, u32, bool)> {
        let Some(set) = self.failing.get(scope) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|id| {
                let r = self.results.get(id)?;
                match self.ignored(r, now) {
                    None => Some((id.clone(), r.level?, false)),
                    Some(Ignored::Flapping) => Some((id.clone(), r.level?, true)),
                    Some(_) => None,
                }
            })
            .collect()
    }

    /// Whether `scope` is in a crash loop at `now`.
    fn crash_loop(&self, scope: &Scope, now: u64) -> Option<CrashLoop> {
        let h = self.history.get(scope)?;
        let window = self.policy.escalator.crash_loop_window.as_millis() as u64;
        let from = (now.saturating_sub(window) + 1).max(h.forgiven_ms);
        let episodes: Vec<u64> = h.episodes.iter().copied().filter(|t| *t >= from).collect();
        if episodes.len() < self.policy.escalator.crash_loop_failures as usize {
            return None;
        }
        let mut runs: Vec<(u32, String, usize)> = Vec::new();
        for (_, st) in h.steps.iter().filter(|(_, st)| st.started_ms >= from) {
            match runs.iter_mut().find(|(l, _, _)| *l == st.level) {
                Some(r) => r.2 += 1,
                None => runs.push((st.level, st.name.clone(), 1)),
            }
        }
        runs.sort();
        Some(CrashLoop {
            failures: episodes.len(),
            span_ms: now.saturating_sub(episodes[0]),
            runs,
            deepest: h
                .opened
                .iter()
                .filter(|(t, _)| *t >= from)
                .map(|(_, l)| *l)
                .min(),
        })
    }

    /// Escalations of `scope` opened within the last hour (since its last
    /// acknowledgement).
    fn opened_last_hour(&self, scope: &Scope, now: u64) -> Vec<u64> {
        self.history
            .get(scope)
            .map(|h| {
                h.opened
                    .iter()
                    .map(|(t, _)| *t)
                    .filter(|t| now < t + HOUR_MS && *t >= h.forgiven_ms)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What to do with `scope` now that its quiet period is over.
    fn verdict(
        &self,
        scope: &Scope,
        level: u32,
        checks: &[String],
        counted: bool,
        now: u64,
    ) -> Verdict {
        let esc = &self.policy.escalator;
        let hour = self.opened_last_hour(scope, now);
        let hour_limited = hour.len() >= esc.max_per_scope_per_hour as usize;
        if let Some(cl) = self.crash_loop(scope, now) {
            let base = cl.deepest.map_or(level, |d| d.min(level));
            let up = self.policy.more_fundamental(base);
            if let (true, true, false, Some(up)) = (esc.climb, counted, hour_limited, up) {
                return Verdict::Open {
                    level: up,
                    how: Opening::Climb {
                        why: format!(
                            "{}; climbing to level {}",
                            cl.describe(),
                            self.chain_names(up).first().cloned().unwrap_or_default()
                        ),
                    },
                };
            }
            let why = match (esc.climb, up, counted, hour_limited) {
                (false, ..) => cl.describe(),
                (true, None, ..) => format!(
                    "{}; no more fundamental level is left to climb to",
                    cl.describe()
                ),
                (true, Some(_), false, _) => format!(
                    "{}; its failing checks flap, and flapping checks never trigger actions",
                    cl.describe()
                ),
                (true, Some(_), true, _) => format!(
                    "{}; climbing would pass the limit of {} escalations per hour",
                    cl.describe(),
                    esc.max_per_scope_per_hour
                ),
            };
            return Verdict::Open {
                level,
                how: Opening::Hold {
                    kind: NoticeKind::CrashLoop,
                    why,
                },
            };
        }
        if !counted {
            let why: Vec<String> = checks
                .iter()
                .filter_map(|id| self.results.get(id))
                .map(|r| {
                    format!(
                        "{} is flapping ({:.0} % weighted state change, {} state changes within its flap window)",
                        r.id(),
                        r.flap_percent,
                        r.flap_changes
                    )
                })
                .collect();
            return Verdict::Open {
                level,
                how: Opening::Hold {
                    kind: NoticeKind::Flapping,
                    why: format!(
                        "{}; it still fails after the quiet period, and flapping checks never trigger actions",
                        why.join("; ")
                    ),
                },
            };
        }
        let decision = format!(
            "levels {} for {}",
            self.chain_names(level).join(" → "),
            checks.join(", ")
        );
        if hour_limited {
            let until = hour.iter().min().copied().unwrap_or(now) + HOUR_MS;
            return Verdict::Open {
                level,
                how: Opening::Hold {
                    kind: NoticeKind::RateLimited,
                    why: format!(
                        "rate limit: {} escalations of {scope} in the last hour (max {}); would run {decision}; the limit alone would allow the next one {} from now",
                        hour.len(),
                        esc.max_per_scope_per_hour,
                        span_words(until.saturating_sub(now))
                    ),
                },
            };
        }
        let running = self.running_count();
        if running >= esc.max_running as usize {
            return Verdict::Wait(format!(
                "rate limit: {running} escalations running (max {}); {scope} waits to run {decision}",
                esc.max_running
            ));
        }
        Verdict::Open {
            level,
            how: Opening::Run,
        }
    }

    /// Journals a decision that ran nothing once per episode (by kind),
    /// with `notice` sent the first time; keeps its words for the plan.
    fn note(
        &mut self,
        fx: &mut Vec<Effect>,
        scope: &Scope,
        now: u64,
        kind: &'static str,
        text: String,
        notice: Option<Notice>,
    ) {
        let w = self.watches.get_mut(scope).expect("watch");
        let first = w.noted.as_ref().map(|(k, _)| *k) != Some(kind);
        w.noted = Some((kind, text.clone()));
        if first {
            self.journal(fx, None, scope, now, kind, text);
            if let Some(n) = notice {
                fx.push(Effect::Notify(n));
            }
        }
    }

    /// Advances time: quiet periods, quiescence, verification, backoff.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.started_ms.get_or_insert(now);
        self.deferred.retain(|_, (until, _)| *until > now);
        let keep = HOUR_MS.max(self.policy.escalator.crash_loop_window.as_millis() as u64);
        for h in self.history.values_mut() {
            h.prune(now.saturating_sub(keep));
        }
        self.history.retain(|_, h| !h.is_idle());

        // Scopes with failures that count.
        let scopes: Vec<Scope> = self.failing.keys().cloned().collect();
        let mut live_watches = BTreeSet::new();
        for scope in scopes {
            let candidates = self.candidates(&scope, now);
            if candidates.is_empty() || self.escalation_of(&scope).is_some() {
                continue;
            }
            let acked = self.history.get(&scope).is_some_and(|h| h.acked);
            let counted: Vec<(String, u32)> = candidates
                .iter()
                .filter(|c| !c.2 || acked)
                .map(|c| (c.0.clone(), c.1))
                .collect();
            // Flapping checks never act; when they alone fail past the
            // quiet period the scope is held for a human (as a crash loop
            // if it is one).
            let acting: Vec<(String, u32)> = if counted.is_empty() {
                candidates.iter().map(|c| (c.0.clone(), c.1)).collect()
            } else {
                counted.clone()
            };
            if let Some(cover) = self.covering_escalation(&scope).map(|e| e.id) {
                let esc = self.open.get_mut(&cover).expect("covering escalation");
                if !esc.folded.contains(&scope) {
                    esc.folded.push(scope.clone());
                    esc.updated_ms = now;
                    let esc = esc.clone();
                    self.journal(&mut fx, Some(&esc), &scope, now, "folded", format!("{scope} is failing too; it folds into escalation {} of the broader scope {}", esc.id, esc.scope));
                    self.save(cover, &mut fx);
                }
                continue;
            }
            live_watches.insert(scope.clone());
            if self.deferred.contains_key(&scope) {
                continue;
            }
            let level = acting.iter().map(|(_, l)| *l).min().expect("non-empty");
            let checks: Vec<String> = acting.iter().map(|(id, _)| id.clone()).collect();
            let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
            if !self.watches.contains_key(&scope) {
                // The quiet period runs from when the first of these checks
                // started failing, but never from before this engine
                // started: after a restart the picture settles afresh.
                let first = acting
                    .iter()
                    .filter_map(|(id, _)| self.results.get(id).map(|r| r.since_ms))
                    .min()
                    .unwrap_or(now);
                let quiet_since = first.max(self.started_ms.unwrap_or(now)).min(now);
                self.watches.insert(
                    scope.clone(),
                    Watch {
                        quiet_since,
                        noted: None,
                    },
                );
                let text = format!(
                    "{} failing; quiet period of {} s before deciding",
                    checks.join(", "),
                    quiet / 1000
                );
                self.journal(&mut fx, None, &scope, quiet_since, "quiet", text);
            }
            let watch = self.watches.get(&scope).expect("watch");
            if now < watch.quiet_since + quiet {
                continue;
            }
            let verdict = self.verdict(&scope, level, &checks, !counted.is_empty(), now);
            if self.policy.escalator.mode == Mode::Plan {
                let text = match &verdict {
                    Verdict::Open {
                        level,
                        how: Opening::Run,
                    } => format!(
                        "plan mode: would run levels {} for {}",
                        self.chain_names(*level).join(" → "),
                        checks.join(", ")
                    ),
                    Verdict::Open {
                        level,
                        how: Opening::Climb { why },
                    } => format!(
                        "plan mode: {why}; would run levels {}",
                        self.chain_names(*level).join(" → ")
                    ),
                    Verdict::Open {
                        how: Opening::Hold { why, .. },
                        ..
                    } => {
                        format!("plan mode: {why}; would hold {scope} for a human")
                    }
                    Verdict::Wait(why) => format!("plan mode: {why}"),
                };
                self.note(&mut fx, &scope, now, "plan", text, None);
                continue;
            }
            match verdict {
                Verdict::Open { level, how } => fx.push(Effect::Open(OpenRequest {
                    scope,
                    level,
                    checks,
                    how,
                })),
                Verdict::Wait(why) => {
                    let n = self.detailed_notice(
                        NoticeKind::RateLimited,
                        None,
                        &scope,
                        &checks,
                        now,
                        now,
                        why.clone(),
                        "it runs as soon as one of the running escalations ends".into(),
                    );
                    self.note(&mut fx, &scope, now, "rate-limited", why, Some(n));
                }
            }
        }
        let settled: Vec<Scope> = self
            .watches
            .keys()
            .filter(|s| !live_watches.contains(*s))
            .cloned()
            .collect();
        let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
        for scope in settled {
            let w = self.watches.remove(&scope).expect("watch");
            if !self.candidates(&scope, now).is_empty() {
                // Folded into a broader escalation, or only flapping now.
                continue;
            }
            let text = match &w.noted {
                Some((_, why)) => format!(
                    "passing again after {}; nothing ran ({why})",
                    span_words(now.saturating_sub(w.quiet_since))
                ),
                None if now < w.quiet_since + quiet => {
                    "passing again within the quiet period; nothing runs".to_string()
                }
                None => format!(
                    "passing again after {}; nothing ran",
                    span_words(now.saturating_sub(w.quiet_since))
                ),
            };
            self.journal(&mut fx, None, &scope, now, "recovered", text);
        }

        // Open escalations.
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.advance(id, now, &mut fx);
        }
        fx
    }

    /// The caller opened the escalation the engine asked for.
    pub fn opened(&mut self, id: u64, req: OpenRequest, now: u64) -> Vec<Effect> {
        let OpenRequest {
            scope,
            level,
            checks,
            how,
        } = req;
        let mut fx = Vec::new();
        self.watches.remove(&scope);
        let chain = self.policy.chain_from(level);
        let mut esc = Escalation {
            id,
            scope: scope.clone(),
            phase: Phase::Backoff { until_ms: now },
            opened_ms: now,
            updated_ms: now,
            checks: checks.clone(),
            start_level: level,
            chain,
            position: 0,
            attempt: 1,
            steps: Vec::new(),
            folded: Vec::new(),
            approved: Vec::new(),
            held_because: None,
        };
        if let Opening::Hold { kind, why } = how {
            if let Some(h) = self.history.get_mut(&scope) {
                h.acked = false;
            }
            esc.phase = Phase::Held { since_ms: now };
            esc.held_because = Some(why.clone());
            let since = now.saturating_sub(
                HOUR_MS.max(self.policy.escalator.crash_loop_window.as_millis() as u64),
            );
            let text = format!("{why}; {scope} is held until acknowledged: `gemba ack {scope}`");
            let n = self.detailed_notice(
                kind,
                Some(&esc),
                &scope,
                &checks,
                since,
                now,
                text,
                format!(
                    "nothing runs for {scope} until a human acknowledges it; then it may escalate again with its counts started afresh"
                ),
            );
            self.announce(&mut fx, Some(&esc), &scope, now, kind.as_str(), n);
            self.open.insert(id, esc);
            self.save(id, &mut fx);
            return fx;
        }
        self.history
            .entry(scope.clone())
            .or_default()
            .opened
            .push((now, level));
        let text = format!(
            "opened: {} failing after the quiet period; running levels {}",
            checks.join(", "),
            self.chain_names(level).join(" → ")
        );
        if let Opening::Climb { why } = how {
            let n = self.detailed_notice(
                NoticeKind::CrashLoop,
                Some(&esc),
                &scope,
                &checks,
                now.saturating_sub(self.policy.escalator.crash_loop_window.as_millis() as u64),
                now,
                why.clone(),
                format!("running levels {}", self.chain_names(level).join(" → ")),
            );
            self.announce(&mut fx, Some(&esc), &scope, now, "crash-loop", n);
        }
        self.journal(&mut fx, Some(&esc), &scope, now, "decision", text);
        // Narrower escalations of this scope fold into it.
        let narrower: Vec<u64> = self
            .open
            .values()
            .filter(|e| !e.phase.closed() && self.covers(&scope, &e.scope))
            .map(|e| e.id)
            .collect();
        self.open.insert(id, esc);
        for n in narrower {
            let e = self.open.get_mut(&n).expect("narrower");
            e.phase = Phase::Superseded { by: id };
            e.updated_ms = now;
            let e = e.clone();
            self.open
                .get_mut(&id)
                .expect("new")
                .folded
                .push(e.scope.clone());
            self.journal(
                &mut fx,
                Some(&e),
                &e.scope,
                now,
                "superseded",
                format!("superseded by escalation {id} of the broader scope {scope}"),
            );
            self.save(n, &mut fx);
            fx.push(Effect::Release(e.scope.clone()));
            self.open.remove(&n);
        }
        self.start_step(id, now, &mut fx);
        fx
    }

    /// The caller could not open an escalation for `scope` (another server
    /// holds its lease, or the store failed): try again after `until`.
    pub fn deferred(&mut self, scope: Scope, until: u64, reason: String, now: u64) -> Vec<Effect> {
        // (A held opening that could not be stored is decided again after
        // the deferral, and says so then.)
        let mut fx = Vec::new();
        let new = self
            .deferred
            .get(&scope)
            .map(|(_, r)| r != &reason)
            .unwrap_or(true);
        if new {
            self.journal(&mut fx, None, &scope, now, "deferred", reason.clone());
        }
        self.deferred.insert(scope.clone(), (until, reason));
        // A fresh quiet period when it comes back: the other holder may have
        // converged it meanwhile.
        self.watches.remove(&scope);
        fx
    }

    fn start_step(&mut self, id: u64, now: u64, fx: &mut Vec<Effect>) {
        let esc = self.open.get(&id).expect("escalation");
        let Some(&level) = esc.chain.get(esc.position) else {
            return;
        };
        let def = self.policy.level(level).cloned();
        let Some(def) = def else {
            return;
        };
        let esc = self.open.get_mut(&id).expect("escalation");
        esc.updated_ms = now;
        if def.approve && !esc.approved.contains(&level) {
            esc.phase = Phase::AwaitingApproval { level };
            let esc = esc.clone();
            let text = format!(
                "level {level} ({}) needs approval: `gemba approve {id}`",
                def.name
            );
            let n = self.notice(
                NoticeKind::ApprovalNeeded,
                Some(&esc),
                &esc.scope,
                now,
                text,
            );
            self.announce(fx, Some(&esc), &esc.scope, now, "approval", n);
            self.save(id, fx);
            return;
        }
        esc.phase = Phase::Running {
            level,
            started_ms: now,
        };
        esc.steps.push(StepRecord {
            attempt: esc.attempt,
            level,
            name: def.name.clone(),
            started_ms: now,
            finished_ms: None,
            outcome: None,
            output: String::new(),
        });
        let esc = esc.clone();
        self.journal(
            fx,
            Some(&esc),
            &esc.scope,
            now,
            "step-start",
            format!(
                "attempt {}: running level {level} ({})",
                esc.attempt, def.name
            ),
        );
        self.save(id, fx);
        fx.push(Effect::Run {
            id,
            attempt: esc.attempt,
            level,
        });
    }

    /// A step ended.
    pub fn step_done(
        &mut self,
        id: u64,
        level: u32,
        outcome: StepOutcome,
        output: String,
        now: u64,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(esc) = self.open.get_mut(&id) else {
            return fx;
        };
        if let Some(step) = esc
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.level == level && s.finished_ms.is_none())
        {
            step.finished_ms = Some(now);
            step.outcome = Some(outcome.clone());
            step.output = output;
            // Remembered once its outcome is known (a scope's escalation
            // record goes when it closes; its steps stay for notices).
            self.history
                .entry(esc.scope.clone())
                .or_default()
                .keep_step(id, step.clone());
        }
        esc.updated_ms = now;
        if !matches!(esc.phase, Phase::Running { level: l, .. } if l == level) {
            self.save(id, &mut fx);
            return fx;
        }
        let name = self
            .policy
            .level(level)
            .map(|l| l.name.clone())
            .unwrap_or_default();
        match outcome {
            StepOutcome::Succeeded | StepOutcome::NotRun(_) => {
                let quiesce = self
                    .policy
                    .level(level)
                    .map(|l| l.quiesce.as_millis() as u64)
                    .unwrap_or(0);
                let esc = self.open.get_mut(&id).expect("escalation");
                esc.phase = Phase::Quiescing {
                    level,
                    until_ms: now + quiesce,
                };
                let esc = esc.clone();
                self.journal(
                    &mut fx,
                    Some(&esc),
                    &esc.scope,
                    now,
                    "step-end",
                    format!(
                        "level {level} ({name}) succeeded; quiescing {} s",
                        quiesce / 1000
                    ),
                );
                self.save(id, &mut fx);
            }
            StepOutcome::Failed(why) | StepOutcome::Interrupted(why) => {
                let text = format!("level {level} ({name}) failed: {why}");
                let esc = self.open.get(&id).expect("escalation").clone();
                let n = self.notice(
                    NoticeKind::StepFailed,
                    Some(&esc),
                    &esc.scope,
                    now,
                    text.clone(),
                );
                self.announce(&mut fx, Some(&esc), &esc.scope, now, "step-end", n);
                self.failed_attempt(id, now, text, &mut fx);
            }
        }
        fx
    }

    fn failed_attempt(&mut self, id: u64, now: u64, why: String, fx: &mut Vec<Effect>) {
        let budget = self.policy.escalator.budget;
        let esc = self.open.get_mut(&id).expect("escalation");
        esc.updated_ms = now;
        if esc.attempt >= budget {
            esc.phase = Phase::Held { since_ms: now };
            esc.held_because = Some(format!("gave up after {} attempt(s): {why}", esc.attempt));
            let esc = esc.clone();
            let text = format!("gave up after {} attempt(s) ({why}); {} is held until acknowledged: `gemba ack {}`", esc.attempt, esc.scope, esc.scope);
            let n = self.detailed_notice(
                NoticeKind::GaveUp,
                Some(&esc),
                &esc.scope,
                &esc.checks,
                esc.opened_ms,
                now,
                text,
                format!(
                    "nothing runs for {} until a human acknowledges it",
                    esc.scope
                ),
            );
            self.announce(fx, Some(&esc), &esc.scope, now, "give-up", n);
            self.save(id, fx);
            return;
        }
        let backoff =
            self.policy.escalator.backoff.as_millis() as u64 * (1u64 << (esc.attempt - 1).min(16));
        esc.attempt += 1;
        esc.approved.clear();
        if self.policy.escalator.climb {
            if let Some(up) = self.policy.more_fundamental(esc.start_level) {
                esc.start_level = up;
            }
        }
        esc.chain = self.policy.chain_from(esc.start_level);
        esc.position = 0;
        esc.phase = Phase::Backoff {
            until_ms: now + backoff,
        };
        let esc = esc.clone();
        let text = format!(
            "attempt {} of {budget} starts in {} s from level {} ({why})",
            esc.attempt,
            backoff / 1000,
            esc.start_level
        );
        self.journal(fx, Some(&esc), &esc.scope, now, "retry", text);
        self.save(id, fx);
    }

    fn advance(&mut self, id: u64, now: u64, fx: &mut Vec<Effect>) {
        let Some(esc) = self.open.get(&id) else {
            return;
        };
        match esc.phase.clone() {
            Phase::Backoff { until_ms } if now >= until_ms => self.start_step(id, now, fx),
            Phase::Quiescing { until_ms, .. } if now >= until_ms => {
                let esc = self.open.get_mut(&id).expect("escalation");
                if esc.position + 1 < esc.chain.len() {
                    esc.position += 1;
                    self.start_step(id, now, fx);
                } else {
                    let interval = esc
                        .checks
                        .iter()
                        .filter_map(|c| self.results.get(c))
                        .map(|r| {
                            let rise = self.policy.check(&r.check).map(|c| c.rise).unwrap_or(1);
                            r.interval_ms * (rise as u64 + 1)
                        })
                        .max()
                        .unwrap_or(10_000);
                    let deadline =
                        now + interval * self.policy.escalator.stale_after_intervals as u64;
                    esc.phase = Phase::Verifying {
                        after_ms: now,
                        deadline_ms: deadline,
                    };
                    esc.updated_ms = now;
                    let esc = esc.clone();
                    self.journal(
                        fx,
                        Some(&esc),
                        &esc.scope,
                        now,
                        "verify",
                        format!(
                            "chain done; waiting for fresh results of {}",
                            esc.checks.join(", ")
                        ),
                    );
                    self.save(id, fx);
                    self.advance(id, now, fx);
                }
            }
            Phase::Verifying {
                after_ms,
                deadline_ms,
            } => {
                let checks = esc.checks.clone();
                let mut pending = false;
                let mut still = Vec::new();
                for c in &checks {
                    match self.results.get(c) {
                        Some(r) if r.at_ms > after_ms && r.state == HardState::Passing => {}
                        Some(r) if r.at_ms > after_ms && r.state == HardState::Failing => {
                            still.push(c.clone())
                        }
                        _ => pending = true,
                    }
                }
                if still.is_empty() && !pending {
                    let esc = self.open.get_mut(&id).expect("escalation");
                    esc.phase = Phase::Resolved { at_ms: now };
                    esc.updated_ms = now;
                    let esc = esc.clone();
                    let text = format!(
                        "{} passing again after attempt {}",
                        checks.join(", "),
                        esc.attempt
                    );
                    let n = self.notice(NoticeKind::Resolved, Some(&esc), &esc.scope, now, text);
                    self.announce(fx, Some(&esc), &esc.scope, now, "resolved", n);
                    self.save(id, fx);
                    fx.push(Effect::Release(esc.scope.clone()));
                    self.open.remove(&id);
                } else if !still.is_empty() && !pending || now >= deadline_ms {
                    let mut why = Vec::new();
                    if !still.is_empty() {
                        why.push(format!("still failing: {}", still.join(", ")));
                    }
                    if pending {
                        why.push("no fresh result for some checks before the deadline".to_string());
                    }
                    let text = format!("post-condition not met ({})", why.join("; "));
                    let esc = self.open.get(&id).expect("escalation").clone();
                    self.journal(fx, Some(&esc), &esc.scope, now, "verify", text.clone());
                    self.failed_attempt(id, now, text, fx);
                }
            }
            _ => {}
        }
    }

    /// A human approves the pending step of escalation `id`.
    pub fn approve(&mut self, id: u64, who: &str, now: u64) -> Result<Vec<Effect>, EngineError> {
        let esc = self
            .open
            .get_mut(&id)
            .ok_or(EngineError::NoSuchEscalation(id))?;
        let Phase::AwaitingApproval { level } = esc.phase else {
            return Err(EngineError::NotAwaitingApproval {
                id,
                phase: esc.phase.name(),
            });
        };
        esc.approved.push(level);
        let esc = esc.clone();
        let mut fx = Vec::new();
        self.journal(
            &mut fx,
            Some(&esc),
            &esc.scope,
            now,
            "approved",
            format!("level {level} approved by {who}"),
        );
        self.start_step(id, now, &mut fx);
        Ok(fx)
    }

    /// A human acknowledges a held scope: the escalation closes and the
    /// scope may escalate again (after a new quiet period).
    pub fn ack(
        &mut self,
        scope: &Scope,
        who: &str,
        now: u64,
    ) -> Result<(u64, Vec<Effect>), EngineError> {
        let id = self
            .open
            .values()
            .find(|e| &e.scope == scope && matches!(e.phase, Phase::Held { .. }))
            .map(|e| e.id)
            .ok_or_else(|| EngineError::NotHeld(scope.clone()))?;
        let esc = self.open.get_mut(&id).expect("held");
        esc.phase = Phase::Acknowledged { at_ms: now };
        esc.updated_ms = now;
        let esc = esc.clone();
        let h = self.history.entry(scope.clone()).or_default();
        h.forgive(now);
        h.acked = true;
        let mut fx = Vec::new();
        self.journal(
            &mut fx,
            Some(&esc),
            scope,
            now,
            "acknowledged",
            format!("acknowledged by {who}; {scope} may escalate again (rate limit and crash-loop counts start afresh)"),
        );
        self.save(id, &mut fx);
        fx.push(Effect::Release(scope.clone()));
        self.open.remove(&id);
        Ok((id, fx))
    }

    /// Takes over an escalation from the store (after a restart, or from a
    /// server whose lease expired). A step that was running has an unknown
    /// outcome: it is not re-run; the post-condition decides.
    pub fn adopt(&mut self, mut esc: Escalation, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if esc.phase.closed() {
            self.remember(&esc);
            return fx;
        }
        let id = esc.id;
        if let Phase::Running { level, .. } = esc.phase {
            if let Some(step) = esc
                .steps
                .iter_mut()
                .rev()
                .find(|s| s.level == level && s.finished_ms.is_none())
            {
                step.finished_ms = Some(now);
                step.outcome = Some(StepOutcome::Interrupted(
                    "the server running it stopped before it reported".into(),
                ));
            }
            esc.phase = Phase::Verifying {
                after_ms: now,
                deadline_ms: now + 3 * 60_000,
            };
            esc.updated_ms = now;
            self.journal(&mut fx, Some(&esc), &esc.scope, now, "adopted", format!("taken over while level {level} was running; its outcome is unknown, so it is not re-run: verifying the checks instead"));
        } else {
            self.journal(
                &mut fx,
                Some(&esc),
                &esc.scope,
                now,
                "adopted",
                format!("taken over in phase {}", esc.phase.name()),
            );
        }
        // After an interrupted step got its outcome, so it is remembered.
        self.remember(&esc);
        self.watches.remove(&esc.scope);
        self.open.insert(id, esc);
        self.save(id, &mut fx);
        fx
    }

    /// Stops managing escalation `id` (its lease went to another server).
    pub fn relinquish(&mut self, id: u64) -> Option<Escalation> {
        self.open.remove(&id)
    }

    /// Takes an escalation from the store into the scope's history (rate
    /// limit, crash loop, what ran): after a restart, or one another
    /// server runs. An acknowledgement forgives what came before it.
    pub fn remember(&mut self, esc: &Escalation) {
        let h = self.history.entry(esc.scope.clone()).or_default();
        if let Phase::Acknowledged { at_ms } = esc.phase {
            h.forgive(at_ms);
        }
        if esc.steps.is_empty() || esc.opened_ms < h.forgiven_ms {
            return;
        }
        if !h.opened.iter().any(|(t, _)| *t == esc.opened_ms) {
            h.opened.push((esc.opened_ms, esc.start_level));
            h.opened.sort();
            // Each escalation began with a failure episode; the episodes
            // themselves are not stored.
            if !h.episodes.contains(&esc.opened_ms) {
                h.episodes.push(esc.opened_ms);
                h.episodes.sort();
            }
        }
        for st in esc.steps.iter().filter(|st| st.outcome.is_some()) {
            if !h
                .steps
                .iter()
                .any(|(i, s)| *i == esc.id && s.started_ms == st.started_ms && s.level == st.level)
            {
                h.keep_step(esc.id, st.clone());
            }
        }
    }

    /// What would happen now, scope by scope, and why.
    pub fn plan(&self, now: u64) -> Plan {
        let mut scopes: BTreeMap<Scope, ScopePlan> = BTreeMap::new();
        for (scope, ids) in &self.failing {
            let checks: Vec<FailingCheck> = ids
                .iter()
                .filter_map(|id| self.results.get(id))
                .map(|r| FailingCheck {
                    id: r.id(),
                    level: r.level.unwrap_or(0),
                    since_ms: r.since_ms,
                    output: r.output.clone(),
                    ignored: self.ignored(r, now),
                })
                .collect();
            // Flapping checks count here as in `tick`: they lead to a
            // hold, not to nothing.
            let level = checks
                .iter()
                .filter(|c| matches!(c.ignored, None | Some(Ignored::Flapping)))
                .map(|c| c.level)
                .min();
            let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
            let (status, at) = if let Some(e) = self.escalation_of(scope) {
                (escalation_status(e), None)
            } else if let Some(e) = self.covering_escalation(scope) {
                (
                    format!("folded into escalation {} of {}", e.id, e.scope),
                    None,
                )
            } else if level.is_none() {
                (
                    "no action: every failing check is stale or from an untrusted observer"
                        .to_string(),
                    None,
                )
            } else if let Some((until, why)) = self.deferred.get(scope) {
                (format!("deferred: {why}"), Some(*until))
            } else if let Some(w) = self.watches.get(scope) {
                match &w.noted {
                    Some((_, n)) => (n.clone(), None),
                    None if now < w.quiet_since + quiet => {
                        ("quiet period".to_string(), Some(w.quiet_since + quiet))
                    }
                    None => ("starts now".to_string(), Some(now)),
                }
            } else {
                (
                    "quiet period starts at the next tick".to_string(),
                    Some(now + quiet),
                )
            };
            let status = if self.policy.escalator.mode == Mode::Plan
                && !status.starts_with("plan mode")
                && level.is_some()
                && self.escalation_of(scope).is_none()
            {
                format!("{status} (plan mode: nothing will run)")
            } else {
                status
            };
            scopes.insert(
                scope.clone(),
                ScopePlan {
                    scope: scope.clone(),
                    checks,
                    level,
                    chain: level.map(|l| self.chain_names(l)).unwrap_or_default(),
                    status,
                    escalation: self.escalation_of(scope).map(|e| e.id),
                    at_ms: at,
                },
            );
        }
        for e in self.open.values() {
            scopes.entry(e.scope.clone()).or_insert_with(|| ScopePlan {
                scope: e.scope.clone(),
                checks: Vec::new(),
                level: Some(e.start_level),
                chain: self.chain_names(e.start_level),
                status: escalation_status(e),
                escalation: Some(e.id),
                at_ms: None,
            });
        }
        Plan {
            at_ms: now,
            mode: match self.policy.escalator.mode {
                Mode::Act => "act".into(),
                Mode::Plan => "plan".into(),
            },
            scopes: scopes.into_values().collect(),
        }
    }
}
