//! A problem's life: its occurrences (new, or regressed when it comes
//! back), the clean runs that resolve it, and its classification (title,
//! category, severity and why, with the team's rules applied).

use std::collections::{BTreeSet, HashSet, VecDeque};

use super::{failures, mark, retire, Detector, Pass};
use crate::problem::*;
use crate::run::Run;
use crate::signature::guess_category;

impl Detector {
    /// Clean runs count towards resolving what this node had.
    pub(super) fn clean_runs(&mut self, pass: &mut Pass<'_>) {
        let (run, node) = (pass.run, pass.node.as_str());
        let changed_now: HashSet<&String> = pass.changed_keys.iter().collect();
        let open: Vec<u64> = self
            .by_node
            .get(node)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in open {
            let needed = self.thresholds.clean_runs;
            let Some(p) = self.problems.get_mut(&id) else {
                continue;
            };
            if pass.hit.contains(&p.signature) || !p.is_open() {
                continue;
            }
            let counts = match p.kind {
                Kind::SilentNode => {
                    // It reported: it is not silent any more. A silence of
                    // several nodes ends when every one has reported.
                    if let Some(ev) = p.nodes.get_mut(node) {
                        ev.clean_runs = ev.clean_runs.max(1);
                        ev.ok_since = true;
                    }
                    if p.nodes.values().all(|e| e.ok_since) {
                        resolve(p, run.started_ms);
                    }
                    mark(&mut self.dirty, id, Some(node));
                    pass.touched.insert(id);
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
            let Some(ev) = p.nodes.get_mut(node) else {
                continue;
            };
            if !counts || run.started_ms <= ev.last_ms {
                continue;
            }
            ev.clean_runs += 1;
            if p.kind.is_failure() && p.resource.is_none() {
                ev.ok_since = true;
            }
            mark(&mut self.dirty, id, Some(node));
            pass.touched.insert(id);
            let (nodes, at) = (&self.nodes, run.started_ms);
            let factor = self.thresholds.silent_factor;
            let away = |n: &str| {
                nodes
                    .get(n)
                    .is_some_and(|h| retire::gone_quiet(h, at, factor))
            };
            if retire::settled(p, needed, away) {
                resolve(p, run.started_ms);
            }
        }
    }

    /// Records one occurrence of `signature` in `run`; creates the problem
    /// or regresses a resolved one. `fill` sets the kind's details.
    pub(super) fn occurrence(
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
                    versions: None,
                    returns: 0,
                    recovered_at: BTreeSet::new(),
                    outage: None,
                    episode: None,
                    flaps: 0,
                    refresh: false,
                    closed: None,
                    history: Vec::new(),
                };
                self.by_signature.insert(signature.to_string(), id);
                self.problems.insert(id, p);
                id
            }
        };
        let p = self.problems.get_mut(&id).expect("just found or made");
        let regressed = p.status == Status::Resolved;
        if regressed {
            // Closed by hand or by clean runs, it occurred again.
            p.closed = None;
            p.set_status(Status::Regressed, at, "gemba");
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
        if kind.is_failure() {
            if p.recovered_at.contains(&run.code_version) {
                p.returns = p.returns.saturating_add(1);
            }
            let nodes = &self.nodes;
            p.failed_run(
                at,
                &run.node,
                self.thresholds.outage_window_ms,
                |p, from, to| ran_fine_between(p, nodes, from, to),
            );
            note_version(p, &run.code_version, at);
        }
        if p.nodes.len() < MAX_NODES || p.nodes.contains_key(&run.node) {
            let ev = p.nodes.entry(run.node.clone()).or_insert(NodeEvidence {
                first_ms: at,
                last_ms: at,
                ..Default::default()
            });
            let version = &run.code_version;
            if ev.ok_since {
                // Back on a node that ran it fine since: at the same code
                // version it comes and goes; at another, the code changed.
                if ev.ok_version.as_ref().is_none_or(|v| v == version) {
                    ev.flaps += 1;
                    p.flaps += 1;
                }
                ev.ok_since = false;
                ev.ok_version = None;
            }
            ev.count += 1;
            ev.first_ms = ev.first_ms.min(at);
            ev.last_ms = ev.last_ms.max(at);
            ev.clean_runs = 0;
            mark(&mut self.dirty, id, Some(&run.node));
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
            self.watch
                .entry(resource.unwrap_or_default())
                .or_default()
                .insert(id);
        }
        for n in nodes {
            self.by_node.entry(n).or_default().insert(id);
        }
        id
    }

    /// Sets category, kind, title, severity and why from the evidence
    /// (the category first: an outage is one whose category points
    /// outside).
    pub(super) fn classify(&mut self, id: u64) {
        let t = &self.thresholds;
        let Some(p) = self.problems.get_mut(&id) else {
            return;
        };
        let mut category = match p.kind {
            Kind::NotIdempotent => "idempotency".to_string(),
            Kind::SilentNode | Kind::SlowRun => "agent".to_string(),
            _ => guess_category(
                p.resource.as_deref().unwrap_or(""),
                &p.sample.message,
                &p.sample.detail,
            )
            .to_string(),
        };
        let rule = t
            .rules
            .iter()
            .find(|r| r.pattern.is_match(&p.signature) || r.pattern.is_match(&p.sample.message));
        if let Some(c) = rule.and_then(|r| r.category.as_ref()) {
            category = c.clone();
        }
        p.category = category;
        if p.kind.is_failure() {
            let (kind, mut why) = failures::sharpen(p, &self.nodes);
            if p.sample.resource_count > 0 {
                why += &format!(
                    "; {} resources failed with this message in one run",
                    p.sample.resource_count
                );
            }
            if p.sample.skipped_dependents > 0 {
                why += &format!(
                    "; {} more were skipped because of failed dependencies",
                    p.sample.skipped_dependents
                );
            }
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
        p.title = title(p);
        let mut severity = p.kind.default_severity();
        if p.kind == Kind::NotIdempotent && p.refresh {
            severity = severity.louder();
        }
        if let Some(s) = rule.and_then(|r| r.severity) {
            severity = s;
        }
        if !p.severity_fixed {
            p.severity = severity;
        }
        if p.cause.is_none() {
            p.cause = rule.and_then(|r| r.cause.clone());
        }
    }
}

/// Longest title, in characters.
const TITLE_CHARS: usize = 100;

/// One short line: the resource (or the node, for a node's own problem)
/// and the first line of the message, without the sample node's name or
/// paths under it; which nodes are affected is a field of its own.
fn title(p: &Problem) -> String {
    let what = match (&p.resource, p.sample.resource_count) {
        (Some(r), _) => r.clone(),
        (None, n) if n > 0 => format!(
            "{n} resources ({}{})",
            p.sample
                .resources
                .iter()
                .take(2)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if n > 2 { ", …" } else { "" }
        ),
        (None, _) if p.kind.is_failure() => "the run".to_string(),
        (None, _) => p.sample.node.clone(),
    };
    match p.kind {
        Kind::NotIdempotent => format!("{what} changes on every run"),
        Kind::SilentNode if p.nodes.len() > 1 => {
            format!("{} nodes stopped reporting at once", p.nodes.len())
        }
        Kind::SilentNode => format!("{} stopped reporting", p.sample.node),
        Kind::SlowRun => format!("{} runs slowly", p.sample.node),
        _ => {
            let line = first_line(&p.sample.message);
            let line = if p.sample.node.is_empty() {
                line
            } else {
                line.replace(&p.sample.node, "<node>")
            };
            let mut out = format!("{what}: {line}");
            if out.chars().count() > TITLE_CHARS {
                out = out.chars().take(TITLE_CHARS - 1).collect::<String>() + "…";
            }
            out
        }
    }
}

/// Nodes known to run the resource fine (established nodes it ran fine
/// on, and affected nodes that ran it fine since) that ran between `from`
/// and `to` and did not fail it in that time: the nodes an outage is
/// measured against besides those it hit. From stored evidence only, so
/// that every server sharing a store counts the same.
fn ran_fine_between(
    p: &Problem,
    nodes: &std::collections::HashMap<String, super::NodeHistory>,
    from: u64,
    to: u64,
) -> u64 {
    let ran = |n: &str| {
        nodes
            .get(n)
            .is_some_and(|h| h.recent.iter().any(|d| d.at_ms >= from && d.at_ms <= to))
    };
    let failed_since = |n: &str| p.nodes.get(n).is_some_and(|ev| ev.last_ms >= from);
    let established = p
        .ok_established
        .iter()
        .filter(|n| !failed_since(n) && ran(n))
        .count();
    let recovered = p
        .nodes
        .iter()
        .filter(|(n, ev)| {
            ev.ok_since && ev.last_ms < from && !p.ok_established.contains(*n) && ran(n)
        })
        .count();
    (established + recovered) as u64
}

/// Where a failing code version falls in the range it failed over.
fn note_version(p: &mut Problem, version: &str, at: u64) {
    if version.is_empty() {
        return;
    }
    let r = p.versions.get_or_insert_with(|| VersionRange {
        first: version.to_string(),
        first_ms: at,
        last: version.to_string(),
        last_ms: at,
        fixed_in: None,
    });
    if at < r.first_ms {
        r.first = version.to_string();
        r.first_ms = at;
    }
    if at >= r.last_ms {
        r.last = version.to_string();
        r.last_ms = at;
    }
    if r.fixed_in.as_deref() == Some(version) {
        r.fixed_in = None;
    }
}

pub(super) fn resolve(p: &mut Problem, at_ms: u64) {
    p.set_status(Status::Resolved, at_ms, "gemba");
    p.resolved_ms = Some(at_ms);
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
