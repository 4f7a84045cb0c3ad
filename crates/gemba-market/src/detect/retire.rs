//! Nodes that leave: retired by a person, or silent. A retired node leaves
//! every open problem's affected set (its runs stay stored), and a problem
//! only it kept open resolves. A node that stopped reporting is a
//! silent-node problem of its own; it does not keep other problems open
//! once every node still reporting has run them cleanly.

use std::collections::BTreeSet;

use super::history::{NodeHistory, Retirement};
use super::lifecycle::resolve;
use super::{mark, Detector};
use crate::problem::{Kind, Problem};

impl Detector {
    /// Retires `node` at `at_ms`; returns the problems it changed, or why
    /// it cannot be retired.
    pub fn retire(&mut self, node: &str, at_ms: u64, by: &str) -> Result<BTreeSet<u64>, String> {
        let h = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| format!("no node {node:?} has reported to this market"))?;
        if let Some(r) = &h.retired {
            return Err(format!(
                "{node} is retired already (by {}, {})",
                r.by,
                crate::time::format_ms(r.at_ms)
            ));
        }
        h.retired = Some(Retirement {
            at_ms,
            by: by.to_string(),
        });
        let needed = self.thresholds.clean_runs;
        let mut touched = BTreeSet::new();
        for id in self.by_node.remove(node).unwrap_or_default() {
            let Some(p) = self.problems.get_mut(&id) else {
                continue;
            };
            if !p.is_open() || p.nodes.remove(node).is_none() {
                continue;
            }
            p.nodes_total = p.nodes_total.saturating_sub(1);
            p.record(at_ms, "nodes", Some(node.to_string()), None, by);
            mark(&mut self.dirty, id, None);
            touched.insert(id);
            if settled(p, needed, |_| false) {
                resolve(p, at_ms);
                p.add_note(
                    at_ms,
                    &format!("resolved: {node}, the last node it was open on, was retired by {by}"),
                );
            }
        }
        self.unindex_resolved(&touched);
        Ok(touched)
    }

    /// Problems that only silent nodes keep open now resolve: every node
    /// still reporting ran them cleanly.
    pub(super) fn settle_silent(
        &mut self,
        silent: &[String],
        now_ms: u64,
        touched: &mut BTreeSet<u64>,
    ) {
        let needed = self.thresholds.clean_runs;
        let factor = self.thresholds.silent_factor;
        let ids: BTreeSet<u64> = silent
            .iter()
            .filter_map(|n| self.by_node.get(n))
            .flatten()
            .copied()
            .collect();
        let nodes = &self.nodes;
        let quiet = |n: &str| nodes.get(n).is_some_and(|h| gone_quiet(h, now_ms, factor));
        let mut resolved = BTreeSet::new();
        for id in ids {
            let Some(p) = self.problems.get_mut(&id) else {
                continue;
            };
            if !p.is_open() || p.kind == Kind::SilentNode || !settled(p, needed, quiet) {
                continue;
            }
            let gone: Vec<&str> = p
                .nodes
                .iter()
                .filter(|(n, ev)| ev.clean_runs < needed && quiet(n))
                .map(|(n, _)| n.as_str())
                .collect();
            let note = format!(
                "resolved: every node still reporting ran it cleanly; {} stopped reporting",
                gone.join(", ")
            );
            resolve(p, now_ms);
            p.add_note(now_ms, &note);
            resolved.insert(id);
        }
        self.unindex_resolved(&resolved);
        touched.extend(resolved);
    }

    /// Takes resolved problems out of the index of open problems by node.
    pub(super) fn unindex_resolved(&mut self, ids: &BTreeSet<u64>) {
        for id in ids {
            let Some(p) = self.problems.get(id) else {
                continue;
            };
            if p.is_open() {
                continue;
            }
            for n in p.nodes.keys() {
                if let Some(s) = self.by_node.get_mut(n) {
                    s.remove(id);
                }
            }
        }
    }
}

/// Whether a node is retired, or has not reported for several times its
/// usual interval.
pub(super) fn gone_quiet(h: &NodeHistory, now_ms: u64, factor: f64) -> bool {
    h.retired.is_some()
        || h.usual_interval_ms().is_some_and(|usual| {
            now_ms.saturating_sub(h.last_seen_ms) as f64 > usual as f64 * factor
        })
}

/// Whether a problem is over: each affected node ran it cleanly enough
/// (reported again, for a silence), leaving out nodes `away` says are
/// gone; at least one node ran it cleanly, unless no node is left at all.
pub(super) fn settled(p: &Problem, needed: u32, away: impl Fn(&str) -> bool) -> bool {
    let mut clean = 0;
    for (n, ev) in &p.nodes {
        let ok = if p.kind == Kind::SilentNode {
            ev.ok_since
        } else {
            ev.clean_runs >= needed
        };
        if ok {
            clean += 1;
        } else if p.kind == Kind::SilentNode || !away(n) {
            return false;
        }
    }
    clean > 0 || p.nodes.is_empty()
}
