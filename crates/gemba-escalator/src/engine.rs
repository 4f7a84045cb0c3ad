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
}

/// Something that happened worth telling a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    StepFailed,
    GaveUp,
    ApprovalNeeded,
    Resolved,
    Flapping,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub escalation: Option<u64>,
    pub scope: Scope,
    pub at_ms: u64,
    pub text: String,
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
    Open {
        scope: Scope,
        level: u32,
        checks: Vec<String>,
    },
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
    /// Set when a decision was journaled but not acted on (plan mode, rate
    /// limit), so it is not repeated every tick.
    noted: Option<String>,
}

const HOUR_MS: u64 = 3_600_000;

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
    /// Opening times per scope, for the hourly rate limit.
    opened: BTreeMap<Scope, Vec<u64>>,
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
            opened: BTreeMap::new(),
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
                "{id} is flapping ({:.0} % weighted state change): it will not trigger actions until it settles",
                r.flap_percent
            );
            self.announce(
                &mut fx,
                None,
                &r.scope,
                r.at_ms,
                "flapping",
                NoticeKind::Flapping,
                text,
            );
        } else if !r.flapping {
            self.flapping_noted.remove(&id);
        }
        let set = self.failing.entry(r.scope.clone()).or_default();
        if r.state == HardState::Failing && r.level.is_some() {
            set.insert(id.clone());
        } else {
            set.remove(&id);
            if set.is_empty() {
                self.failing.remove(&r.scope);
            }
        }
        self.results.insert(id, r);
        fx
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

    /// Failing checks of `scope` that count, with the level they require.
    fn counted(&self, scope: &Scope, now: u64) -> Vec<(&str, u32)> {
        let Some(set) = self.failing.get(scope) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|id| {
                let r = self.results.get(id)?;
                if self.ignored(r, now).is_some() {
                    return None;
                }
                Some((id.as_str(), r.level?))
            })
            .collect()
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

    /// Journals `text` and tells people about it.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &self,
        fx: &mut Vec<Effect>,
        e: Option<&Escalation>,
        scope: &Scope,
        now: u64,
        kind: &str,
        notice: NoticeKind,
        text: String,
    ) {
        self.journal(fx, e, scope, now, kind, text.clone());
        fx.push(Effect::Notify(Notice {
            kind: notice,
            escalation: e.map(|e| e.id),
            scope: scope.clone(),
            at_ms: now,
            text,
        }));
    }

    fn save(&self, id: u64, fx: &mut Vec<Effect>) {
        if let Some(e) = self.open.get(&id) {
            fx.push(Effect::Save(Box::new(e.clone())));
        }
    }

    fn running_count(&self) -> usize {
        self.open.values().filter(|e| e.phase.active()).count()
    }

    /// Advances time: quiet periods, quiescence, verification, backoff.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.started_ms.get_or_insert(now);
        self.deferred.retain(|_, (until, _)| *until > now);

        // Scopes with counted failures.
        let scopes: Vec<Scope> = self.failing.keys().cloned().collect();
        let mut live_watches = BTreeSet::new();
        for scope in scopes {
            let counted = self.counted(&scope, now);
            if counted.is_empty() {
                continue;
            }
            if let Some(e) = self.escalation_of(&scope) {
                let _ = e;
                continue;
            }
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
            if self.deferred.contains_key(&scope) {
                live_watches.insert(scope.clone());
                continue;
            }
            live_watches.insert(scope.clone());
            let level = counted.iter().map(|(_, l)| *l).min().expect("non-empty");
            let checks: Vec<String> = counted.iter().map(|(id, _)| id.to_string()).collect();
            let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
            if !self.watches.contains_key(&scope) {
                // The quiet period runs from when the first of these checks
                // started failing, but never from before this engine
                // started: after a restart the picture settles afresh.
                let first = counted
                    .iter()
                    .filter_map(|(id, _)| self.results.get(*id).map(|r| r.since_ms))
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
            let chain = self.chain_names(level);
            let decision = format!("levels {} for {}", chain.join(" → "), checks.join(", "));
            // Rate limits.
            let hour: Vec<u64> = self
                .opened
                .get(&scope)
                .map(|v| v.iter().copied().filter(|t| now < t + HOUR_MS).collect())
                .unwrap_or_default();
            let limit = if hour.len() >= self.policy.escalator.max_per_scope_per_hour as usize {
                let until = hour.iter().min().copied().unwrap_or(now) + HOUR_MS;
                Some((until, format!("rate limit: {} escalations of {scope} in the last hour (max {}); would run {decision}", hour.len(), self.policy.escalator.max_per_scope_per_hour)))
            } else if self.running_count() >= self.policy.escalator.max_running as usize {
                Some((now + 1000, format!("rate limit: {} escalations running (max {}); {scope} waits to run {decision}", self.running_count(), self.policy.escalator.max_running)))
            } else {
                None
            };
            if let Some((_until, text)) = limit {
                let w = self.watches.get_mut(&scope).expect("watch");
                if w.noted.as_deref() != Some(text.as_str()) {
                    w.noted = Some(text.clone());
                    self.journal(&mut fx, None, &scope, now, "rate-limited", text);
                }
                continue;
            }
            if self.policy.escalator.mode == Mode::Plan {
                let text = format!("plan mode: would run {decision}");
                let w = self.watches.get_mut(&scope).expect("watch");
                if w.noted.as_deref() != Some(text.as_str()) {
                    w.noted = Some(text.clone());
                    self.journal(&mut fx, None, &scope, now, "plan", text);
                }
                continue;
            }
            fx.push(Effect::Open {
                scope,
                level,
                checks,
            });
        }
        let settled: Vec<Scope> = self
            .watches
            .keys()
            .filter(|s| !live_watches.contains(*s) && self.counted(s, now).is_empty())
            .cloned()
            .collect();
        for scope in settled {
            self.journal(
                &mut fx,
                None,
                &scope,
                now,
                "recovered",
                "passing again within the quiet period; nothing runs".into(),
            );
        }
        self.watches.retain(|s, _| live_watches.contains(s));

        // Open escalations.
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.advance(id, now, &mut fx);
        }
        fx
    }

    /// The caller opened the escalation the engine asked for.
    pub fn opened(
        &mut self,
        id: u64,
        scope: Scope,
        level: u32,
        checks: Vec<String>,
        now: u64,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.watches.remove(&scope);
        self.opened.entry(scope.clone()).or_default().push(now);
        let chain = self.policy.chain_from(level);
        let esc = Escalation {
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
        };
        let text = format!(
            "opened: {} failing after the quiet period; running levels {}",
            checks.join(", "),
            self.chain_names(level).join(" → ")
        );
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
            self.announce(
                fx,
                Some(&esc),
                &esc.scope,
                now,
                "approval",
                NoticeKind::ApprovalNeeded,
                text,
            );
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
                self.announce(
                    &mut fx,
                    Some(&esc),
                    &esc.scope,
                    now,
                    "step-end",
                    NoticeKind::StepFailed,
                    text.clone(),
                );
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
            let esc = esc.clone();
            let text = format!("gave up after {} attempt(s) ({why}); {} is held until acknowledged: `gemba ack {}`", esc.attempt, esc.scope, esc.scope);
            self.announce(
                fx,
                Some(&esc),
                &esc.scope,
                now,
                "give-up",
                NoticeKind::GaveUp,
                text,
            );
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
                    self.announce(
                        fx,
                        Some(&esc),
                        &esc.scope,
                        now,
                        "resolved",
                        NoticeKind::Resolved,
                        text,
                    );
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
        let mut fx = Vec::new();
        self.journal(
            &mut fx,
            Some(&esc),
            scope,
            now,
            "acknowledged",
            format!("acknowledged by {who}; {scope} may escalate again"),
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
        self.opened
            .entry(esc.scope.clone())
            .or_default()
            .push(esc.opened_ms);
        if esc.phase.closed() {
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
        self.watches.remove(&esc.scope);
        self.open.insert(id, esc);
        self.save(id, &mut fx);
        fx
    }

    /// Stops managing escalation `id` (its lease went to another server).
    pub fn relinquish(&mut self, id: u64) -> Option<Escalation> {
        self.open.remove(&id)
    }

    /// Records that `scope` escalated at `at_ms` (history for rate limits).
    pub fn remember_opened(&mut self, scope: Scope, at_ms: u64) {
        self.opened.entry(scope).or_default().push(at_ms);
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
            let level = checks
                .iter()
                .filter(|c| c.ignored.is_none())
                .map(|c| c.level)
                .min();
            let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
            let (status, at) = if let Some(e) = self.escalation_of(scope) {
                (format!("escalation {} {}", e.id, e.phase.name()), None)
            } else if let Some(e) = self.covering_escalation(scope) {
                (
                    format!("folded into escalation {} of {}", e.id, e.scope),
                    None,
                )
            } else if level.is_none() {
                ("no action: every failing check is flapping, stale or from an untrusted observer".to_string(), None)
            } else if let Some((until, why)) = self.deferred.get(scope) {
                (format!("deferred: {why}"), Some(*until))
            } else if let Some(w) = self.watches.get(scope) {
                match &w.noted {
                    Some(n) => (n.clone(), None),
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
                status: format!("escalation {} {}", e.id, e.phase.name()),
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
