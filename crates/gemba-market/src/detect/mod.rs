//! From runs to problems. [`Detector`] holds what the detectors need to
//! remember — each node's recent runs, the problems and an index of them —
//! and [`Detector::apply`] folds one run in, returning the problems it
//! changed so that the caller stores exactly those with the run.
//!
//! The detectors, with their defaults (all in [`Thresholds`]):
//! - failures (`run-failure`): every failed resource, and a run that failed
//!   outside any resource (compile error, a cached catalog used on failure,
//!   an error in an otherwise unchanged run), grouped by signature —
//!   resource (or error class) plus the normalized message. Its kind then
//!   sharpens, most specific first:
//!   - `bootstrap-failure`: every affected node failed it from its first
//!     run on and never after its first successful run, while the resource
//!     ran fine on an established node;
//!   - `external-outage`: a stretch of at least [`OUTAGE_RUNS`] runs of
//!     it, on 2 nodes or more, in which every run failed, covering ≥ 80 %
//!     of the nodes that ran it in the hour before; and its category points
//!     outside (network, DNS, HTTP, package repository, source control).
//!     The fleet's size plays no part;
//!   - `intermittent`: it came back at a code version at which a node that
//!     had failed it ran it fine (on that node: it flaps; on another: it
//!     moves);
//!   - otherwise `run-failure`, with the code versions it failed at and
//!     the one it runs fine at since.
//! - `not-idempotent`: a resource changed the same way (same properties or
//!   action) in 3 of a node's last 3 runs; louder (one severity up) when
//!   those runs restarted or refreshed a service.
//! - `slow-run`: duration or catalog retrieval over 2× the median of the
//!   node's runs of the last 7 days (its newest [`HISTORY`] runs, at least
//!   5), and at least 10 s over it.
//! - `silent-node` ([`Detector::tick`]): a node that reported in the last 7
//!   days, not for 3× its usual interval (median of its recent intervals).
//!
//! A problem resolves when each affected node has run it cleanly 3 times
//! since its last occurrence (runs that applied no catalog do not count);
//! it regresses when it comes back.
//!
//! One file per detector (`failures`, `idempotence`, `slow`, `silent`),
//! `history` for what is remembered of each node, `lifecycle` for a
//! problem's occurrences, resolution and classification; [`Detector::apply`]
//! here runs one run through them in order.

mod failures;
mod history;
mod idempotence;
mod lifecycle;
mod retire;
mod silent;
mod slow;

use std::collections::{BTreeSet, HashMap, HashSet};

use regex::Regex;

use crate::problem::*;
use crate::run::{Resource, Run, RunStatus};

use failures::{Fine, MAX_FINE_KEYS};
use history::DAY_MS;
pub use history::{Digest, NodeHistory, Retirement, HISTORY};

/// A run arriving this long after it started is backfill.
pub const LATE_MS: u64 = 3_600_000;

/// Detector settings (`[market]` in the config).
#[derive(Clone, Debug)]
pub struct Thresholds {
    pub clean_runs: u32,
    pub idempotent_runs: usize,
    pub idempotent_changes: usize,
    /// How long before a stretch of failures a node's fine run of the
    /// resource counts it among the nodes an outage is measured against.
    pub outage_window_ms: u64,
    pub slow_factor: f64,
    pub silent_factor: f64,
    /// An unresolved problem not seen for this long is history: the
    /// market no longer lists it as still open (`[market] run_retention`,
    /// 30 days by default).
    pub history_after_ms: u64,
    /// Environments that count as production (weigh more in the score).
    pub production: Vec<String>,
    pub rules: Vec<Rule>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            clean_runs: 3,
            idempotent_runs: 3,
            idempotent_changes: 3,
            outage_window_ms: 3_600_000,
            slow_factor: 2.0,
            silent_factor: 3.0,
            history_after_ms: 30 * 24 * 3_600_000,
            production: vec!["production".into(), "prod".into()],
            rules: Vec::new(),
        }
    }
}

/// What a team already knows: failures whose signature matches `pattern`
/// get this category, cause and severity.
#[derive(Clone, Debug)]
pub struct Rule {
    pub pattern: Regex,
    pub category: Option<String>,
    pub cause: Option<String>,
    pub severity: Option<Severity>,
}

/// The detectors' memory.
#[derive(Default)]
pub struct Detector {
    pub thresholds: Thresholds,
    pub nodes: HashMap<String, NodeHistory>,
    problems: HashMap<u64, Problem>,
    by_signature: HashMap<String, u64>,
    /// Resource key → failure problems about it.
    watch: HashMap<String, BTreeSet<u64>>,
    /// Node → open problems affecting it.
    by_node: HashMap<String, BTreeSet<u64>>,
    /// Resource key → a few established nodes it ran fine on and the code
    /// versions it ran fine at: what a failure that appears later is
    /// compared with. Stored (see [`Detector::take_fine`]): it fills up
    /// once and then rarely changes.
    fine: HashMap<String, Fine>,
    /// Keys of `fine` changed since the last [`Detector::take_fine`].
    fine_dirty: HashSet<String>,
    next_id: u64,
    /// Per problem, the nodes whose evidence changed since the last
    /// [`Detector::take_dirty`] (`None`: all of them): the store writes
    /// those rows only, so a problem on a thousand nodes costs one row per
    /// run, not a thousand.
    dirty: HashMap<u64, Option<BTreeSet<String>>>,
}

/// One run's way through the detectors: what they share.
pub(super) struct Pass<'r> {
    run: &'r Run,
    node: String,
    production: bool,
    /// Signatures that occurred in this run: not clean runs for them.
    hit: HashSet<String>,
    /// The problems changed.
    touched: BTreeSet<u64>,
    /// Resources the run changed.
    changed_keys: Vec<String>,
    digest: Digest,
}

impl Detector {
    pub fn new(thresholds: Thresholds) -> Detector {
        Detector {
            thresholds,
            next_id: 1,
            ..Default::default()
        }
    }

    /// Loads stored problems and node histories (at start).
    pub fn restore(&mut self, problems: Vec<Problem>, nodes: Vec<(String, NodeHistory)>) {
        for (name, h) in nodes {
            self.nodes.insert(name, h);
        }
        for mut p in problems {
            p.rebuild_derived();
            self.next_id = self.next_id.max(p.id + 1);
            self.index(&p);
            self.problems.insert(p.id, p);
        }
    }

    /// Adds a stored run to a node's recent history (at start).
    pub fn remember(&mut self, node: &str, d: Digest) {
        self.nodes.entry(node.to_string()).or_default().insert(d);
    }

    fn index(&mut self, p: &Problem) {
        self.by_signature.insert(p.signature.clone(), p.id);
        if p.kind.is_failure() {
            let key = p.resource.clone().unwrap_or_default();
            self.watch.entry(key).or_default().insert(p.id);
        }
        if p.is_open() {
            for n in p.nodes.keys() {
                self.by_node.entry(n.clone()).or_default().insert(p.id);
            }
        }
    }

    /// Which nodes' evidence changed, per problem, since the last call
    /// (`None`: every node of that problem).
    pub fn take_dirty(&mut self) -> HashMap<u64, Option<BTreeSet<String>>> {
        std::mem::take(&mut self.dirty)
    }

    /// The entries of the index of resources that ran fine which changed
    /// since the last call: (resource key, JSON) rows to store.
    pub fn take_fine(&mut self) -> Vec<(String, String)> {
        let keys = std::mem::take(&mut self.fine_dirty);
        keys.into_iter()
            .filter_map(|k| {
                let body = serde_json::to_string(self.fine.get(&k)?).ok()?;
                Some((k, body))
            })
            .collect()
    }

    /// Loads stored entries of the index of resources that ran fine.
    pub fn restore_fine(&mut self, rows: Vec<(String, String)>) {
        for (key, body) in rows {
            if self.fine.len() >= MAX_FINE_KEYS {
                break;
            }
            if let Ok(f) = serde_json::from_str::<Fine>(&body) {
                self.fine.insert(key, f);
            }
        }
    }

    /// Has every node's evidence of problem `id` written at the next commit.
    pub fn mark_all(&mut self, id: u64) {
        mark(&mut self.dirty, id, None);
    }

    pub fn problem(&self, id: u64) -> Option<&Problem> {
        self.problems.get(&id)
    }

    pub fn problem_mut(&mut self, id: u64) -> Option<&mut Problem> {
        self.problems.get_mut(&id)
    }

    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.values()
    }

    /// Folds one run in; returns the ids of the problems it changed.
    pub fn apply(&mut self, run: &Run) -> BTreeSet<u64> {
        self.apply_arrived(run, None)
    }

    /// Folds in one run that arrived at `arrived_ms`: a run arriving
    /// [`LATE_MS`] or more after it started is backfill, and its node's
    /// silence after it is not missed.
    pub fn apply_arrived(&mut self, run: &Run, arrived_ms: Option<u64>) -> BTreeSet<u64> {
        let node = run.node.clone();
        {
            let h = self.nodes.entry(node.clone()).or_default();
            if h.runs == 0 || run.started_ms < h.first_seen_ms {
                h.first_seen_ms = run.started_ms;
            }
            if h.runs == 0 || run.started_ms >= h.last_seen_ms {
                h.backfilled =
                    arrived_ms.is_some_and(|a| a.saturating_sub(run.started_ms) >= LATE_MS);
            }
            if h.retired.as_ref().is_some_and(|r| run.started_ms > r.at_ms) {
                // It runs again: back in service.
                h.retired = None;
            }
            h.last_seen_ms = h.last_seen_ms.max(run.started_ms);
            h.runs += 1;
            h.environment = run.environment.clone();
            if run.status == RunStatus::Failed {
                h.failed_runs += 1;
            } else if !run.catalog_failed {
                h.established_ms = Some(
                    h.established_ms
                        .map_or(run.started_ms, |e| e.min(run.started_ms)),
                );
            }
        }
        let mut pass = Pass {
            run,
            production: self.thresholds.production.contains(&run.environment),
            hit: HashSet::new(),
            touched: BTreeSet::new(),
            changed_keys: run.changed_resources().map(Resource::key).collect(),
            digest: Digest::of(run),
            node,
        };
        self.failures(&mut pass);
        self.fine_evidence(&mut pass);
        self.not_idempotent(&mut pass);
        self.slow_run(&mut pass);
        self.clean_runs(&mut pass);
        let Pass {
            touched,
            digest,
            node,
            ..
        } = pass;
        self.unindex_resolved(&touched);
        if let Some(h) = self.nodes.get_mut(&node) {
            h.insert(digest);
        }
        for id in &touched {
            self.classify(*id);
        }
        touched
    }

    /// Time-driven detectors: nodes that stopped reporting, and new
    /// problems nobody took up becoming open after a day.
    pub fn tick(&mut self, now_ms: u64) -> BTreeSet<u64> {
        let mut touched = BTreeSet::new();
        let silent = self.silent_nodes(now_ms, &mut touched);
        self.settle_silent(&silent, now_ms, &mut touched);
        for p in self.problems.values_mut() {
            if p.status == Status::New && now_ms.saturating_sub(p.first_seen_ms) >= DAY_MS {
                p.set_status(Status::Open, now_ms, "gemba");
                touched.insert(p.id);
            }
        }
        for id in &touched {
            self.classify(*id);
        }
        touched
    }
}

fn mark(dirty: &mut HashMap<u64, Option<BTreeSet<String>>>, id: u64, node: Option<&str>) {
    match (
        dirty.entry(id).or_insert_with(|| Some(BTreeSet::new())),
        node,
    ) {
        (Some(set), Some(n)) => {
            if !set.contains(n) {
                set.insert(n.to_string());
            }
        }
        (all @ Some(_), None) => *all = None,
        (None, _) => {}
    }
}

impl Thresholds {
    /// The detectors' settings from `[market]` (validated there).
    pub fn from_config(c: &gemba_core::market::MarketConfig) -> Thresholds {
        Thresholds {
            clean_runs: c.clean_runs,
            history_after_ms: c.run_retention.as_millis() as u64,
            production: c.production.clone(),
            rules: c
                .rules
                .iter()
                .filter_map(|r| {
                    Some(Rule {
                        pattern: Regex::new(&r.pattern).ok()?,
                        category: r.category.clone(),
                        cause: r.cause.clone(),
                        severity: r.severity.as_deref().and_then(Severity::parse),
                    })
                })
                .collect(),
            ..Thresholds::default()
        }
    }
}
