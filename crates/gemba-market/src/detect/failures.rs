//! Failures: every failed resource, and a run that failed outside any
//! resource, grouped by signature; the resources that ran fine, as
//! evidence against them; and the sharpening of a failure's kind
//! (bootstrap, external outage, intermittent) from that evidence.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::history::NodeHistory;
use super::{mark, Detector, Pass, Thresholds};
use crate::problem::*;
use crate::run::{Run, RunStatus};
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
}

impl Detector {
    /// Records each failure of the run, with what is known of where the
    /// same resource ran fine.
    pub(super) fn failures(&mut self, pass: &mut Pass<'_>) {
        let (run, node, production) = (pass.run, pass.node.as_str(), pass.production);
        let failures = failures_of(run);
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
        for key in fine_keys() {
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
                let mut changed = false;
                if let Some(ev) = p.nodes.get_mut(node) {
                    if run.started_ms > ev.last_ms && !ev.ok_since {
                        ev.ok_since = true;
                        changed = true;
                        mark(&mut self.dirty, id, Some(node));
                    }
                }
                if established
                    && !p.nodes.contains_key(node)
                    && p.ok_established.len() < 100
                    && p.ok_established.insert(node.to_string())
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
                    pass.touched.insert(id);
                }
            }
        }
    }
}

/// A failure's kind, most specific first, and why.
pub(super) fn sharpen(
    p: &Problem,
    nodes: &HashMap<String, NodeHistory>,
    t: &Thresholds,
    fleet: u64,
) -> (Kind, String) {
    // Only compared with established nodes where it runs fine.
    let all_bootstrap = !p.ok_established.is_empty()
        && !p.nodes.is_empty()
        && p.nodes.iter().all(|(n, ev)| {
            nodes.get(n).is_some_and(|h| {
                ev.first_ms <= h.first_seen_ms && h.established_ms.is_none_or(|e| ev.last_ms < e)
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
    if all_bootstrap {
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
    }
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
