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
//!   - `external-outage`: ≥ 3 nodes (or ≥ 20 % of the fleet, with at
//!     least 2) within 1 h;
//!   - `intermittent`: a node failed it again after running it fine, or it
//!     failed on some nodes and ran fine on others at the same code
//!     version.
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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::problem::RECENT;
use crate::problem::*;
use crate::run::{Resource, Run, RunStatus};
use crate::signature::{guess_category, normalize};

/// Runs remembered per node.
pub const HISTORY: usize = 32;
const DAY_MS: u64 = 86_400_000;
/// Minutes of run time between two counts of the active fleet.
const FLEET_RECOUNT_MIN: u64 = 10;
/// Slow-run floor: a run must be this much over its baseline too.
const SLOW_FLOOR_MS: u64 = 10_000;

/// Detector settings (`[market]` in the config).
#[derive(Clone, Debug)]
pub struct Thresholds {
    pub clean_runs: u32,
    pub idempotent_runs: usize,
    pub idempotent_changes: usize,
    pub outage_nodes: u64,
    pub outage_fraction: f64,
    pub outage_window_ms: u64,
    pub slow_factor: f64,
    pub silent_factor: f64,
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
            outage_nodes: 3,
            outage_fraction: 0.2,
            outage_window_ms: 3_600_000,
            slow_factor: 2.0,
            silent_factor: 3.0,
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

/// One run as a node's history remembers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub at_ms: u64,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub retrieval_ms: Option<u64>,
    /// Changed resources: digest of (resource, change), and whether the
    /// run restarted a service.
    #[serde(default)]
    pub changes: Vec<u64>,
    #[serde(default)]
    pub refreshed: bool,
    #[serde(default)]
    pub noop: bool,
}

impl Digest {
    pub fn of(run: &Run) -> Digest {
        Digest {
            at_ms: run.started_ms,
            duration_ms: run.duration_ms,
            retrieval_ms: run.retrieval_ms,
            changes: run
                .changed_resources()
                .take(256)
                .map(change_digest)
                .collect(),
            refreshed: run.resources.iter().any(|r| r.refresh),
            noop: run.noop,
        }
    }
}

fn change_digest(r: &Resource) -> u64 {
    crate::fnv64([r.kind.as_str(), r.title.as_str(), r.change.as_str()].into_iter())
}

/// What is remembered of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeHistory {
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Its first successful run.
    pub established_ms: Option<u64>,
    pub runs: u64,
    #[serde(default)]
    pub failed_runs: u64,
    #[serde(default)]
    pub environment: String,
    /// Newest last, at most [`HISTORY`].
    #[serde(skip)]
    pub recent: VecDeque<Digest>,
}

impl NodeHistory {
    fn insert(&mut self, d: Digest) {
        let at = self.recent.partition_point(|x| x.at_ms <= d.at_ms);
        self.recent.insert(at, d);
        while self.recent.len() > HISTORY {
            self.recent.pop_front();
        }
    }

    /// The median interval between its recent runs.
    pub fn usual_interval_ms(&self) -> Option<u64> {
        let times: Vec<u64> = self.recent.iter().map(|d| d.at_ms).collect();
        let gaps: Vec<u64> = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|g| *g > 0)
            .collect();
        (gaps.len() >= 2).then(|| median(gaps))
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
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
    /// The fleet size of [`Detector::active_nodes`]: (minute of run time
    /// it was counted at, nodes known since, count).
    fleet: Option<(u64, usize, u64)>,
}

/// Most resource keys remembered as having run fine.
const MAX_FINE_KEYS: usize = 200_000;
/// Nodes and versions remembered per key.
const FINE_PER_KEY: usize = 8;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Fine {
    nodes: Vec<String>,
    versions: Vec<String>,
}

/// One failure found in a run.
struct Failure {
    signature: String,
    resource: Option<String>,
    message: String,
    file: Option<String>,
    line: Option<u32>,
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
            if let Some(r) = &p.resource {
                self.watch.entry(r.clone()).or_default().insert(p.id);
            }
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
        let mut touched = BTreeSet::new();
        let node = run.node.clone();
        let fleet = self.active_nodes(run.started_ms).max(1);
        {
            let h = self.nodes.entry(node.clone()).or_default();
            if h.runs == 0 || run.started_ms < h.first_seen_ms {
                h.first_seen_ms = run.started_ms;
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
        let production = self.thresholds.production.contains(&run.environment);

        // Failures.
        let failures = failures_of(run);
        // Signatures that occurred in this run: not clean runs for them.
        let mut hit: HashSet<String> = failures.iter().map(|f| f.signature.clone()).collect();
        for f in &failures {
            let fine = f.resource.as_ref().and_then(|r| self.fine.get(r));
            let fine_nodes: Vec<String> = fine
                .map(|x| x.nodes.iter().filter(|n| **n != node).cloned().collect())
                .unwrap_or_default();
            let fine_versions: Vec<String> = fine.map(|x| x.versions.clone()).unwrap_or_default();
            let id = self.occurrence(run, Kind::RunFailure, &f.signature, production, |p| {
                for n in fine_nodes {
                    if p.ok_established.len() < 100 && !p.nodes.contains_key(&n) {
                        p.ok_established.insert(n);
                    }
                }
                for v in fine_versions {
                    if p.ok_versions.len() < 64 {
                        p.ok_versions.insert(v);
                    }
                }
                p.resource = f.resource.clone();
                p.sample.resource = f.resource.clone();
                p.sample.message = f.message.clone();
                p.sample.file = f.file.clone();
                p.sample.line = f.line;
                if !run.code_version.is_empty() && p.failing_versions.len() < 64 {
                    p.failing_versions.insert(run.code_version.clone());
                }
            });
            touched.insert(id);
        }

        // Resources that ran fine here: evidence for failures elsewhere.
        let established = self
            .nodes
            .get(&node)
            .and_then(|h| h.established_ms)
            .is_some_and(|e| e <= run.started_ms);
        let changed_keys: Vec<String> = run.changed_resources().map(Resource::key).collect();
        let fine_keys = || run.ok_resources.iter().chain(changed_keys.iter());
        for key in fine_keys() {
            if !self.fine.contains_key(key) {
                if self.fine.len() >= MAX_FINE_KEYS {
                    continue;
                }
                self.fine.insert(key.clone(), Fine::default());
            }
            let Some(f) = self.fine.get_mut(key) else {
                continue;
            };
            let mut grew = false;
            if established && f.nodes.len() < FINE_PER_KEY && !f.nodes.contains(&node) {
                f.nodes.push(node.clone());
                grew = true;
            }
            if !run.code_version.is_empty()
                && f.versions.len() < FINE_PER_KEY
                && !f.versions.contains(&run.code_version)
            {
                f.versions.push(run.code_version.clone());
                grew = true;
            }
            if grew && !self.fine_dirty.contains(key) {
                self.fine_dirty.insert(key.clone());
            }
        }
        for key in fine_keys() {
            let Some(ids) = self.watch.get(key) else {
                continue;
            };
            for id in ids.clone() {
                let Some(p) = self.problems.get_mut(&id) else {
                    continue;
                };
                if hit.contains(&p.signature) {
                    continue;
                }
                let mut changed = false;
                if let Some(ev) = p.nodes.get_mut(&node) {
                    if run.started_ms > ev.last_ms && !ev.ok_since {
                        ev.ok_since = true;
                        changed = true;
                        mark(&mut self.dirty, id, Some(&node));
                    }
                }
                if established
                    && !p.nodes.contains_key(&node)
                    && p.ok_established.len() < 100
                    && p.ok_established.insert(node.clone())
                {
                    changed = true;
                }
                if !run.code_version.is_empty()
                    && p.ok_versions.len() < 64
                    && p.ok_versions.insert(run.code_version.clone())
                {
                    changed = true;
                }
                if changed {
                    touched.insert(id);
                }
            }
        }

        // Not idempotent: the same change in k of the node's last n runs.
        let digest = Digest::of(run);
        if !run.noop && !run.catalog_failed {
            let t = &self.thresholds;
            let previous: Vec<Digest> = self
                .nodes
                .get(&node)
                .map(|h| {
                    h.recent
                        .iter()
                        .rev()
                        .filter(|d| d.at_ms < run.started_ms && !d.noop)
                        .take(t.idempotent_runs.saturating_sub(1))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let needed = t.idempotent_changes;
            if previous.len() + 1 >= t.idempotent_runs {
                // Notify resources report a change every run by design:
                // they are messages, not state.
                for r in run
                    .changed_resources()
                    .filter(|r| !r.kind.eq_ignore_ascii_case("notify"))
                {
                    let d = change_digest(r);
                    let with: Vec<&Digest> =
                        previous.iter().filter(|p| p.changes.contains(&d)).collect();
                    if with.len() + 1 < needed {
                        continue;
                    }
                    let refresh =
                        (r.refresh || digest.refreshed) && with.iter().all(|p| p.refreshed);
                    let signature = format!("not-idempotent|{}|{}", r.key(), r.change);
                    hit.insert(signature.clone());
                    let id =
                        self.occurrence(run, Kind::NotIdempotent, &signature, production, |p| {
                            p.resource = Some(r.key());
                            p.sample.resource = Some(r.key());
                            p.sample.message = r.message.clone();
                            p.sample.file = r.file.clone();
                            p.sample.line = r.line;
                            p.refresh |= refresh;
                        });
                    touched.insert(id);
                }
            }
        }

        // Slow runs, against the node's own baseline.
        if let Some(h) = self.nodes.get(&node) {
            let since = run.started_ms.saturating_sub(7 * DAY_MS);
            let base = |f: fn(&Digest) -> Option<u64>| {
                let v: Vec<u64> = h
                    .recent
                    .iter()
                    .filter(|d| d.at_ms >= since && d.at_ms < run.started_ms)
                    .filter_map(f)
                    .collect();
                (v.len() >= 5).then(|| median(v))
            };
            let slow = |value: Option<u64>, baseline: Option<u64>| match (value, baseline) {
                (Some(v), Some(b)) => {
                    v as f64 > b as f64 * self.thresholds.slow_factor && v >= b + SLOW_FLOOR_MS
                }
                _ => false,
            };
            let (dur_base, ret_base) = (base(|d| d.duration_ms), base(|d| d.retrieval_ms));
            let slow_run = slow(run.duration_ms, dur_base);
            let slow_retrieval = slow(run.retrieval_ms, ret_base);
            if slow_run || slow_retrieval {
                let message = if slow_run {
                    format!(
                        "run took {:.1} s; its usual is {:.1} s",
                        run.duration_ms.unwrap_or(0) as f64 / 1000.0,
                        dur_base.unwrap_or(0) as f64 / 1000.0
                    )
                } else {
                    format!(
                        "catalog retrieval took {:.1} s; its usual is {:.1} s",
                        run.retrieval_ms.unwrap_or(0) as f64 / 1000.0,
                        ret_base.unwrap_or(0) as f64 / 1000.0
                    )
                };
                let signature = format!("slow-run|{node}");
                hit.insert(signature.clone());
                let id = self.occurrence(run, Kind::SlowRun, &signature, production, |p| {
                    p.sample.message = message.clone();
                });
                touched.insert(id);
            }
        }

        // Clean runs count towards resolving what this node had.
        let changed_now: HashSet<&String> = changed_keys.iter().collect();
        let open: Vec<u64> = self
            .by_node
            .get(&node)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in open {
            let needed = self.thresholds.clean_runs;
            let Some(p) = self.problems.get_mut(&id) else {
                continue;
            };
            if hit.contains(&p.signature) || !p.is_open() {
                continue;
            }
            let counts = match p.kind {
                Kind::SilentNode => {
                    // It reported: it is not silent any more.
                    resolve(p, run.started_ms);
                    touched.insert(id);
                    continue;
                }
                Kind::NotIdempotent => {
                    !run.catalog_failed
                        && !run.noop
                        && !p.resource.as_ref().is_some_and(|r| changed_now.contains(r))
                }
                Kind::SlowRun => true,
                _ => !run.catalog_failed || p.resource.is_none(),
            };
            let Some(ev) = p.nodes.get_mut(&node) else {
                continue;
            };
            if !counts || run.started_ms <= ev.last_ms {
                continue;
            }
            ev.clean_runs += 1;
            if p.kind.is_failure() && p.resource.is_none() {
                ev.ok_since = true;
            }
            mark(&mut self.dirty, id, Some(&node));
            touched.insert(id);
            if p.nodes.values().all(|e| e.clean_runs >= needed) {
                resolve(p, run.started_ms);
            }
        }
        for id in &touched {
            if let Some(p) = self.problems.get(id) {
                if !p.is_open() {
                    for n in p.nodes.keys() {
                        if let Some(s) = self.by_node.get_mut(n) {
                            s.remove(id);
                        }
                    }
                }
            }
        }
        if let Some(h) = self.nodes.get_mut(&node) {
            h.insert(digest);
        }
        for id in &touched {
            self.classify(*id, fleet);
        }
        touched
    }

    /// Records one occurrence of `signature` in `run`; creates the problem
    /// or regresses a resolved one. `fill` sets the kind's details.
    fn occurrence(
        &mut self,
        run: &Run,
        kind: Kind,
        signature: &str,
        production: bool,
        fill: impl FnOnce(&mut Problem),
    ) -> u64 {
        let at = run.started_ms;
        let id = match self.by_signature.get(signature) {
            Some(id) => *id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let p = Problem {
                    id,
                    kind,
                    signature: signature.to_string(),
                    title: String::new(),
                    why: String::new(),
                    category: String::new(),
                    severity: kind.default_severity(),
                    severity_fixed: false,
                    cause: None,
                    status: Status::New,
                    owner: None,
                    notes: Vec::new(),
                    sample: Sample::default(),
                    first_seen_ms: at,
                    last_seen_ms: at,
                    status_ms: at,
                    resolved_ms: None,
                    regressed_ms: None,
                    occurrences: 0,
                    nodes: Default::default(),
                    nodes_total: 0,
                    runs: VecDeque::new(),
                    production: false,
                    resource: None,
                    ok_established: BTreeSet::new(),
                    failing_versions: BTreeSet::new(),
                    ok_versions: BTreeSet::new(),
                    burst_nodes: 0,
                    recent: VecDeque::new(),
                    flaps: 0,
                    refresh: false,
                };
                self.by_signature.insert(signature.to_string(), id);
                self.problems.insert(id, p);
                id
            }
        };
        let p = self.problems.get_mut(&id).expect("just found or made");
        let regressed = p.status == Status::Resolved;
        if regressed {
            p.status = Status::Regressed;
            p.status_ms = at;
            p.regressed_ms = Some(at);
            for ev in p.nodes.values_mut() {
                ev.clean_runs = 0;
            }
            mark(&mut self.dirty, id, None);
        }
        p.occurrences += 1;
        p.first_seen_ms = p.first_seen_ms.min(at);
        if at >= p.last_seen_ms || p.sample.run.is_empty() {
            p.last_seen_ms = at;
            p.sample.node = run.node.clone();
            p.sample.run = run.key.clone();
            p.sample.at_ms = at;
            fill(p);
        } else if p.resource.is_none() {
            fill(p);
        }
        p.production |= production;
        if p.runs.len() >= MAX_RUNS {
            p.runs.pop_front();
        }
        p.runs.push_back(run.key.clone());
        if !p.nodes.contains_key(&run.node) {
            p.nodes_total += 1;
        }
        if p.nodes.len() < MAX_NODES || p.nodes.contains_key(&run.node) {
            let ev = p.nodes.entry(run.node.clone()).or_insert(NodeEvidence {
                first_ms: at,
                last_ms: at,
                ..Default::default()
            });
            if ev.ok_since {
                ev.flaps += 1;
                p.flaps += 1;
                ev.ok_since = false;
            }
            ev.count += 1;
            ev.first_ms = ev.first_ms.min(at);
            ev.last_ms = ev.last_ms.max(at);
            ev.clean_runs = 0;
            mark(&mut self.dirty, id, Some(&run.node));
        }
        if p.recent.len() >= RECENT {
            p.recent.pop_front();
        }
        p.recent.push_back((at, run.node.clone()));
        let window = self.thresholds.outage_window_ms;
        // Distinct nodes within the window; counted only when there are
        // more occurrences in it than the most nodes seen so far.
        let in_window = p
            .recent
            .iter()
            .filter(|(t, _)| t.abs_diff(at) <= window)
            .count() as u64;
        if in_window > p.burst_nodes {
            let distinct: HashSet<&str> = p
                .recent
                .iter()
                .filter(|(t, _)| t.abs_diff(at) <= window)
                .map(|(_, n)| n.as_str())
                .collect();
            p.burst_nodes = p.burst_nodes.max(distinct.len() as u64);
        }
        let resource = p.resource.clone();
        // A regressed problem affects all its nodes again; otherwise the
        // others are indexed already.
        let nodes: Vec<String> = match (p.is_open(), regressed) {
            (false, _) => Vec::new(),
            (true, true) => p.nodes.keys().cloned().collect(),
            (true, false) => vec![run.node.clone()],
        };
        if kind.is_failure() {
            if let Some(r) = resource {
                self.watch.entry(r).or_default().insert(id);
            }
        }
        for n in nodes {
            self.by_node.entry(n).or_default().insert(id);
        }
        id
    }

    /// Nodes that reported within the last 7 days of `now_ms` (counted
    /// again when the minute or the number of known nodes changes).
    fn active_nodes(&mut self, now_ms: u64) -> u64 {
        let minute = now_ms / 60_000;
        if let Some((m, known, count)) = self.fleet {
            // Counting walks every node: at most once per FLEET_RECOUNT
            // minutes of run time, not at every run whose minute differs
            // from the last one's (runs arrive out of order: with 100,000
            // nodes that was a walk of the fleet per run). Between counts,
            // a node seen for the first time joins the count at once; a
            // run from earlier than the count keeps it (a week's fleet
            // barely moves in minutes).
            if minute < m + FLEET_RECOUNT_MIN && self.nodes.len() >= known {
                let count = count + (self.nodes.len() - known) as u64;
                self.fleet = Some((m, self.nodes.len(), count));
                return count;
            }
        }
        let since = now_ms.saturating_sub(7 * DAY_MS);
        let count = self
            .nodes
            .values()
            .filter(|h| h.last_seen_ms >= since)
            .count() as u64;
        self.fleet = Some((minute, self.nodes.len(), count));
        count
    }

    /// Sets kind, title, category, severity and why from the evidence.
    fn classify(&mut self, id: u64, fleet: u64) {
        let t = &self.thresholds;
        let Some(p) = self.problems.get_mut(&id) else {
            return;
        };
        if p.kind.is_failure() {
            let nodes = &self.nodes;
            // Only compared with established nodes where it runs fine.
            let all_bootstrap = !p.ok_established.is_empty()
                && !p.nodes.is_empty()
                && p.nodes.iter().all(|(n, ev)| {
                    nodes.get(n).is_some_and(|h| {
                        ev.first_ms <= h.first_seen_ms
                            && h.established_ms.is_none_or(|e| ev.last_ms < e)
                    })
                });
            let outage_needed = t
                .outage_nodes
                .min(((fleet as f64 * t.outage_fraction).ceil() as u64).max(2));
            let same_version = p
                .failing_versions
                .intersection(&p.ok_versions)
                .next()
                .is_some();
            let flaps = p.flaps;
            let (kind, why) = if all_bootstrap {
                (
                    Kind::BootstrapFailure,
                    format!(
                        "fails on {} new node(s) before their first good run, while it runs fine on {} established node(s)",
                        p.nodes_total,
                        p.ok_established.len()
                    ),
                )
            } else if p.burst_nodes >= outage_needed {
                (
                    Kind::ExternalOutage,
                    format!(
                        "{} nodes hit it within {}",
                        p.burst_nodes,
                        crate::market::human_ms(t.outage_window_ms)
                    ),
                )
            } else if flaps > 0 || (same_version && !p.ok_established.is_empty()) {
                (
                    Kind::Intermittent,
                    if flaps > 0 {
                        format!("came back {flaps} time(s) on a node after running fine")
                    } else {
                        format!(
                            "fails on {} node(s) and runs fine on others at the same code version",
                            p.nodes_total
                        )
                    },
                )
            } else {
                (
                    Kind::RunFailure,
                    format!("failed on {} node(s)", p.nodes_total),
                )
            };
            p.kind = kind;
            p.why = why;
        } else if p.kind == Kind::NotIdempotent {
            p.why = format!(
                "changed the same way in {} of the last {} runs{}",
                t.idempotent_changes,
                t.idempotent_runs,
                if p.refresh {
                    ", and restarts a service each time"
                } else {
                    ""
                }
            );
        } else if p.kind == Kind::SlowRun {
            p.why = p.sample.message.clone();
        }
        let what = p.resource.clone().unwrap_or_else(|| p.sample.node.clone());
        p.title = match p.kind {
            Kind::NotIdempotent => format!("{what} changes on every run"),
            Kind::SilentNode => format!("{} stopped reporting", p.sample.node),
            Kind::SlowRun => format!("{} runs slowly", p.sample.node),
            _ => format!(
                "{what}: {}",
                crate::run::cut_to(&first_line(&p.sample.message), 160)
            ),
        };
        let mut category = match p.kind {
            Kind::NotIdempotent => "idempotency".to_string(),
            Kind::SilentNode | Kind::SlowRun => "agent".to_string(),
            _ => guess_category(p.resource.as_deref().unwrap_or(""), &p.sample.message).to_string(),
        };
        let mut severity = p.kind.default_severity();
        if p.kind == Kind::NotIdempotent && p.refresh {
            severity = severity.louder();
        }
        let mut cause = None;
        for rule in &t.rules {
            if rule.pattern.is_match(&p.signature) || rule.pattern.is_match(&p.sample.message) {
                if let Some(c) = &rule.category {
                    category = c.clone();
                }
                cause = rule.cause.clone();
                if let Some(s) = rule.severity {
                    severity = s;
                }
                break;
            }
        }
        p.category = category;
        if !p.severity_fixed {
            p.severity = severity;
        }
        if p.cause.is_none() {
            p.cause = cause;
        }
    }

    /// Time-driven detectors: nodes that stopped reporting, and new
    /// problems nobody took up becoming open after a day.
    pub fn tick(&mut self, now_ms: u64) -> BTreeSet<u64> {
        let mut touched = BTreeSet::new();
        let since = now_ms.saturating_sub(7 * DAY_MS);
        let silent: Vec<(String, u64, u64, String)> = self
            .nodes
            .iter()
            .filter(|(_, h)| h.last_seen_ms >= since)
            .filter_map(|(n, h)| {
                let usual = h.usual_interval_ms()?;
                let quiet = now_ms.saturating_sub(h.last_seen_ms);
                (quiet as f64 > usual as f64 * self.thresholds.silent_factor)
                    .then(|| (n.clone(), usual, h.last_seen_ms, h.environment.clone()))
            })
            .collect();
        for (node, usual, last, env) in silent {
            let signature = format!("silent-node|{node}");
            if self
                .by_signature
                .get(&signature)
                .and_then(|id| self.problems.get(id))
                .is_some_and(|p| p.is_open() && p.last_seen_ms >= last)
            {
                continue;
            }
            let run = Run {
                key: format!("silent:{node}@{last}"),
                tool: crate::run::Tool::Puppet,
                node: node.clone(),
                started_ms: last,
                duration_ms: None,
                retrieval_ms: None,
                status: RunStatus::Unchanged,
                environment: env.clone(),
                code_version: String::new(),
                noop: false,
                catalog_failed: false,
                counts: Default::default(),
                resources: Vec::new(),
                ok_resources: Vec::new(),
                logs: Vec::new(),
                error: None,
                tool_version: String::new(),
            };
            let production = self.thresholds.production.contains(&env);
            let message = format!(
                "no run for {} (usually every {})",
                crate::market::human_ms(now_ms - last),
                crate::market::human_ms(usual)
            );
            let id = self.occurrence(&run, Kind::SilentNode, &signature, production, |p| {
                p.sample.message = message.clone();
                p.why = message.clone();
            });
            if let Some(p) = self.problems.get_mut(&id) {
                p.runs.clear();
            }
            touched.insert(id);
        }
        for p in self.problems.values_mut() {
            if p.status == Status::New && now_ms.saturating_sub(p.first_seen_ms) >= DAY_MS {
                p.status = Status::Open;
                p.status_ms = now_ms;
                touched.insert(p.id);
            }
        }
        let fleet = self.active_nodes(now_ms).max(1);
        for id in &touched {
            self.classify(*id, fleet);
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

fn resolve(p: &mut Problem, at_ms: u64) {
    p.status = Status::Resolved;
    p.status_ms = at_ms;
    p.resolved_ms = Some(at_ms);
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// The failures of a run: each failed resource, and the run's own error
/// when no resource failed.
fn failures_of(run: &Run) -> Vec<Failure> {
    let mut out = Vec::new();
    for r in run.failed_resources() {
        let key = r.key();
        out.push(Failure {
            signature: format!("failure|{key}|{}", normalize(&r.message)),
            resource: Some(key),
            message: r.message.clone(),
            file: r.file.clone(),
            line: r.line,
        });
    }
    if out.is_empty() {
        if let Some(e) = &run.error {
            let class = if e.class.is_empty() {
                "run"
            } else {
                e.class.as_str()
            };
            out.push(Failure {
                signature: format!("failure|{class}|{}", normalize(&e.message)),
                resource: None,
                message: e.message.clone(),
                file: None,
                line: None,
            });
        } else if run.status == RunStatus::Failed {
            out.push(Failure {
                signature: "failure|run|the run failed without saying why".into(),
                resource: None,
                message: "the run failed without saying why".into(),
                file: None,
                line: None,
            });
        }
    }
    let mut seen = HashSet::new();
    out.retain(|f| seen.insert(f.signature.clone()));
    out
}

impl Thresholds {
    /// The detectors' settings from `[market]` (validated there).
    pub fn from_config(c: &gemba_core::market::MarketConfig) -> Thresholds {
        Thresholds {
            clean_runs: c.clean_runs,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_without_resource_or_error_is_still_one() {
        let run = Run {
            key: "k".into(),
            tool: crate::run::Tool::Puppet,
            node: "n".into(),
            started_ms: 1,
            duration_ms: None,
            retrieval_ms: None,
            status: RunStatus::Failed,
            environment: "production".into(),
            code_version: String::new(),
            noop: false,
            catalog_failed: true,
            counts: Default::default(),
            resources: vec![],
            ok_resources: vec![],
            logs: vec![],
            error: None,
            tool_version: String::new(),
        };
        assert_eq!(failures_of(&run).len(), 1);
    }
}
