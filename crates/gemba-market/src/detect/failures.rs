//! Failures: every failed resource, and a run that failed outside any
//! resource, grouped by signature; the resources that ran fine, as
//! evidence against them; and the sharpening of a failure's kind
//! (bootstrap, external outage, intermittent) from that evidence.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::history::NodeHistory;
use super::{mark, Detector, Pass};
use crate::problem::*;
use crate::run::{LogLine, Run, RunStatus};
use crate::signature::normalize;

/// Most resource keys remembered as having run fine.
pub(super) const MAX_FINE_KEYS: usize = 200_000;
/// Nodes and versions remembered per key.
const FINE_PER_KEY: usize = 8;

#[derive(Clone, Default, Serialize, Deserialize)]
pub(super) struct Fine {
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
    detail: Vec<String>,
    /// Rolled up: how many resources failed with this message, and the
    /// first names.
    count: u64,
    names: Vec<String>,
}

/// This many resources failing with one message in one run are one
/// problem (below, one problem each).
pub const ROLL_UP: usize = 3;
/// Names kept of the resources rolled up.
const ROLLED_NAMES: usize = 10;
/// What Puppet logs for a resource skipped because another failed.
const DEPENDENCY_SKIP: &str = "Skipping because of failed dependencies";

impl Detector {
    /// Records each failure of the run, with what is known of where the
    /// same resource ran fine.
    pub(super) fn failures(&mut self, pass: &mut Pass<'_>) {
        let (run, node, production) = (pass.run, pass.node.as_str(), pass.production);
        let failures = failures_of(run);
        let skipped = dependency_skips(run);
        pass.hit
            .extend(failures.iter().map(|f| f.signature.clone()));
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
                p.sample.detail = f.detail.clone();
                p.sample.resource_count = f.count;
                p.sample.resources = f.names.clone();
                p.sample.skipped_dependents = skipped;
                if !run.code_version.is_empty() && p.failing_versions.len() < 64 {
                    p.failing_versions.insert(run.code_version.clone());
                }
            });
            pass.touched.insert(id);
        }
    }

    /// Resources that ran fine here: evidence for failures elsewhere, and
    /// a node's own failure that ran fine since.
    pub(super) fn fine_evidence(&mut self, pass: &mut Pass<'_>) {
        let (run, node) = (pass.run, pass.node.as_str());
        let established = self
            .nodes
            .get(node)
            .and_then(|h| h.established_ms)
            .is_some_and(|e| e <= run.started_ms);
        let fine_keys = || run.ok_resources.iter().chain(pass.changed_keys.iter());
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
            if established && f.nodes.len() < FINE_PER_KEY && !f.nodes.iter().any(|n| n == node) {
                f.nodes.push(node.to_string());
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
        // A run that applied its catalog is a fine run for the failures
        // that are about no resource (a catalog that did not compile).
        let whole_run = (!run.catalog_failed).then_some(&NO_RESOURCE);
        for key in fine_keys().chain(whole_run) {
            let Some(ids) = self.watch.get(key) else {
                continue;
            };
            for id in ids.clone() {
                let Some(p) = self.problems.get_mut(&id) else {
                    continue;
                };
                if pass.hit.contains(&p.signature) {
                    continue;
                }
                let mut changed = p.fine_run(run.started_ms);
                let version = &run.code_version;
                if let Some(ev) = p.nodes.get_mut(node) {
                    if run.started_ms > ev.last_ms && !ev.ok_since {
                        ev.ok_since = true;
                        ev.ok_version = Some(version.clone());
                        changed = true;
                        mark(&mut self.dirty, id, Some(node));
                        if p.recovered_at.len() < 64 {
                            p.recovered_at.insert(version.clone());
                        }
                        if !p.failing_versions.contains(version) {
                            if let Some(r) = p.versions.as_mut().filter(|r| r.fixed_in.is_none()) {
                                r.fixed_in = Some(version.clone());
                            }
                        }
                    }
                }
                if established
                    && !p.nodes.contains_key(node)
                    && p.ok_established.len() < 100
                    && p.ok_established.insert(node.to_string())
                {
                    changed = true;
                }
                if !version.is_empty()
                    && p.ok_versions.len() < 64
                    && p.ok_versions.insert(version.clone())
                {
                    changed = true;
                }
                if changed {
                    pass.touched.insert(id);
                }
            }
        }
    }
}

/// The key under which failures about no resource are watched.
pub(super) static NO_RESOURCE: String = String::new();

/// A failure's kind, most specific first, and why: see the README's
/// "How the market names a problem" for the rules with examples.
pub(super) fn sharpen(p: &Problem, nodes: &HashMap<String, NodeHistory>) -> (Kind, String) {
    // Only compared with established nodes where it runs fine.
    let all_bootstrap = !p.ok_established.is_empty()
        && !p.nodes.is_empty()
        && p.nodes.iter().all(|(n, ev)| {
            nodes.get(n).is_some_and(|h| {
                ev.first_ms <= h.first_seen_ms && h.established_ms.is_none_or(|e| ev.last_ms < e)
            })
        });
    let same_version = p
        .failing_versions
        .intersection(&p.ok_versions)
        .next()
        .is_some();
    let flaps = p.flaps;
    if all_bootstrap {
        return (
            Kind::BootstrapFailure,
            format!(
                "fails on {} new node(s) before their first good run, while it runs fine on {} established node(s)",
                p.nodes_total,
                p.ok_established.len()
            ),
        );
    }
    if let Some(o) = p.outage.as_ref().filter(|_| p.points_outside()) {
        return (
            Kind::ExternalOutage,
            format!(
                "every run of it failed for {} ({} runs on {} of the {} nodes running it), and the error points outside ({})",
                crate::market::human_ms(o.to_ms - o.from_ms),
                o.runs,
                o.nodes,
                o.ran,
                p.category
            ),
        );
    }
    if flaps > 0 || p.returns > 0 {
        let why = if flaps > 0 {
            format!("came back {flaps} time(s) on a node after running fine there at the same code version")
        } else {
            format!(
                "came back {} time(s) at a code version it had run fine at since failing: it moves between nodes",
                p.returns
            )
        };
        return (Kind::Intermittent, why);
    }
    let mut why = format!("failed on {} node(s)", p.nodes_total);
    if let Some(v) = &p.versions {
        if v.first == v.last {
            why += &format!(" at code version {}", v.first);
        } else {
            why += &format!(" at code versions {} … {}", v.first, v.last);
        }
        if let Some(f) = &v.fixed_in {
            why += &format!("; runs fine since {f}");
        }
    }
    // Pinned to its nodes: each failed it more than once and never ran it
    // fine since, while others run it fine at the same version.
    let pinned = p.nodes.values().all(|e| e.count >= 2 && !e.ok_since);
    if same_version && pinned && !p.ok_established.is_empty() {
        why += &format!(
            ", every run there, while {} other node(s) run it fine at the same code version",
            p.ok_established.len()
        );
    }
    (Kind::RunFailure, why)
}

/// Resources of the run skipped because of failed dependencies.
fn dependency_skips(run: &Run) -> u64 {
    let mut sources: Vec<&str> = run
        .logs
        .iter()
        .filter(|l| l.message.trim() == DEPENDENCY_SKIP)
        .map(|l| l.source.as_str())
        .collect();
    sources.sort_unstable();
    sources.dedup();
    sources.len() as u64
}

/// The failures of a run: each failed resource, or one failure for
/// [`ROLL_UP`] or more resources failing with the same normalized message
/// (a hundred packages a mirror could not serve are one problem with a
/// count); and the run's own error when no resource failed.
fn failures_of(run: &Run) -> Vec<Failure> {
    let mut out = Vec::new();
    let mut by_message: Vec<(String, Vec<&crate::run::Resource>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in run.failed_resources() {
        let m = normalize(&r.message);
        match index.get(&m) {
            Some(i) => by_message[*i].1.push(r),
            None => {
                index.insert(m.clone(), by_message.len());
                by_message.push((m, vec![r]));
            }
        }
    }
    for (message, resources) in by_message {
        if resources.len() >= ROLL_UP {
            let mut kinds: Vec<&str> = resources.iter().map(|r| r.kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let kind = if kinds.len() == 1 { kinds[0] } else { "*" };
            let first = resources[0];
            let names: Vec<String> = resources
                .iter()
                .take(ROLLED_NAMES)
                .map(|r| r.key())
                .collect();
            out.push(Failure {
                signature: format!("failure|{kind}[*]|{message}"),
                resource: None,
                message: first.message.clone(),
                file: first.file.clone(),
                line: first.line,
                detail: detail(run, |l| names.iter().any(|k| l.source.contains(k.as_str()))),
                count: resources.len() as u64,
                names,
            });
            continue;
        }
        for r in resources {
            let key = r.key();
            out.push(Failure {
                signature: format!("failure|{key}|{message}"),
                detail: detail(run, |l| l.source.contains(key.as_str())),
                resource: Some(key),
                message: r.message.clone(),
                file: r.file.clone(),
                line: r.line,
                count: 0,
                names: Vec::new(),
            });
        }
    }
    if out.is_empty() {
        let errors = |l: &LogLine| matches!(l.level.as_str(), "err" | "error");
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
                detail: detail(run, errors),
                count: 0,
                names: Vec::new(),
            });
        } else if run.status == RunStatus::Failed {
            out.push(Failure {
                signature: "failure|run|the run failed without saying why".into(),
                resource: None,
                message: "the run failed without saying why".into(),
                file: None,
                line: None,
                detail: detail(run, errors),
                count: 0,
                names: Vec::new(),
            });
        }
    }
    let mut seen = HashSet::new();
    out.retain(|f| seen.insert(f.signature.clone()));
    out
}

/// The run's log lines that `about` picks, as "level: message", at most
/// [`MAX_DETAIL`] of them, each cut to 500 bytes.
fn detail(run: &Run, about: impl Fn(&LogLine) -> bool) -> Vec<String> {
    run.logs
        .iter()
        .filter(|l| about(l))
        .take(MAX_DETAIL)
        .map(|l| crate::run::cut_to(&format!("{}: {}", l.level, l.message.trim()), 500))
        .collect()
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
