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

mod history;
mod human;
mod plan;
mod steps;
mod tick;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gemba_checks::{CheckResult, HardState};
use gemba_core::{Mode, Policy, Scope};
use serde::{Deserialize, Serialize};

use history::*;

pub use history::span_words;
pub use types::*;

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
            self.journal(
                &mut fx,
                None,
                &r.scope,
                r.at_ms,
                JournalKind::Flapping,
                text,
            );
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

    /// Forgets what is held about nodes that left the grid (`nodes` is
    /// every member now) and results of checks no longer in the policy,
    /// so that the engine's maps are bounded by what exists. A scope with
    /// an open escalation keeps everything until it closes. Returns the
    /// (check, scope) of every result forgotten.
    pub fn forget_departed(&mut self, nodes: &BTreeSet<String>) -> Vec<(String, Scope)> {
        let open: BTreeSet<Scope> = self.open.values().map(|e| e.scope.clone()).collect();
        let departed = |scope: &Scope| match scope {
            Scope::Node(n) => !nodes.contains(n),
            _ => false,
        };
        let policy = self.policy.clone();
        let gone: Vec<String> = self
            .results
            .iter()
            .filter(|(_, r)| !open.contains(&r.scope))
            .filter(|(_, r)| {
                let base = r.check.split('#').next().unwrap_or(&r.check);
                departed(&r.scope) || policy.check(base).is_none()
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut forgotten = Vec::with_capacity(gone.len());
        for id in gone {
            if let Some(r) = self.results.remove(&id) {
                if let Some(set) = self.failing.get_mut(&r.scope) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.failing.remove(&r.scope);
                    }
                }
                self.flapping_noted.remove(&id);
                forgotten.push((r.check, r.scope));
            }
        }
        self.node_tiers.retain(|n, _| nodes.contains(n));
        let keep = |scope: &Scope| open.contains(scope) || !departed(scope);
        self.watches.retain(|scope, _| keep(scope));
        self.history.retain(|scope, _| keep(scope));
        self.deferred.retain(|scope, _| keep(scope));
        forgotten
    }

    /// How many results, watched scopes, scope histories and node tier
    /// lists are held.
    pub fn held_state(&self) -> (usize, usize, usize, usize) {
        (
            self.results.len(),
            self.watches.len(),
            self.history.len(),
            self.node_tiers.len(),
        )
    }

    /// Whether a trusted observer reports a failing check of `scope`.
    pub(super) fn failing_trusted(&self, scope: &Scope) -> bool {
        self.failing.get(scope).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.results.get(id).is_some_and(|r| r.trusted))
        })
    }

    /// A notice without details.
    pub(super) fn notice(
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
    pub(super) fn detailed_notice(
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

    pub(super) fn ignored(&self, r: &CheckResult, now: u64) -> Option<Ignored> {
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
    pub(super) fn covers(&self, broad: &Scope, narrow: &Scope) -> bool {
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

    pub(super) fn escalation_of(&self, scope: &Scope) -> Option<&Escalation> {
        self.open
            .values()
            .find(|e| &e.scope == scope && !e.phase.closed())
    }

    pub(super) fn covering_escalation(&self, scope: &Scope) -> Option<&Escalation> {
        self.open
            .values()
            .filter(|e| e.phase.active() && self.covers(&e.scope, scope))
            .min_by_key(|e| e.scope.breadth_rank())
    }

    pub(super) fn chain_names(&self, level: u32) -> Vec<String> {
        self.policy
            .chain_from(level)
            .iter()
            .filter_map(|l| self.policy.level(*l).map(|d| format!("{l}:{}", d.name)))
            .collect()
    }

    pub(super) fn journal(
        &self,
        fx: &mut Vec<Effect>,
        e: Option<&Escalation>,
        scope: &Scope,
        now: u64,
        kind: JournalKind,
        text: String,
    ) {
        tracing::info!(scope = %scope, escalation = ?e.map(|e| e.id), kind = kind.as_str(), "{text}");
        fx.push(Effect::Journal(Entry {
            escalation: e.map(|e| e.id),
            scope: scope.clone(),
            at_ms: now,
            kind,
            text,
        }));
    }

    /// Journals the notice's text and tells people about it.
    pub(super) fn announce(
        &self,
        fx: &mut Vec<Effect>,
        e: Option<&Escalation>,
        scope: &Scope,
        now: u64,
        kind: JournalKind,
        notice: Notice,
    ) {
        self.journal(fx, e, scope, now, kind, notice.text.clone());
        fx.push(Effect::Notify(notice));
    }

    pub(super) fn save(&self, id: u64, fx: &mut Vec<Effect>) {
        if let Some(e) = self.open.get(&id) {
            fx.push(Effect::Save(Box::new(e.clone())));
        }
    }

    pub(super) fn running_count(&self) -> usize {
        self.open.values().filter(|e| e.phase.active()).count()
    }

    /// Failing checks of `scope` from trusted observers with fresh
    /// results: (id, level, flapping).
    pub(super) fn candidates(&self, scope: &Scope, now: u64) -> Vec<(String, u32, bool)> {
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
}
