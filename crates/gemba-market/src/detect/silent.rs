//! Silent nodes: a node that reported in the last 7 days, not for
//! several times its usual interval. Nodes that went quiet at once (their
//! last runs within an hour of each other, [`ROLL_UP`] or more of them) are
//! one problem, "no reports from 11 nodes since 02:10", not one per node:
//! an overnight gap or a dead report path is one thing to look at.

use std::collections::BTreeSet;

use super::history::DAY_MS;

/// This many nodes silent at once are one problem.
pub const ROLL_UP: usize = 3;
/// Last runs this close together are a silence that started at once.
const AT_ONCE_MS: u64 = 3_600_000;
use super::Detector;
use crate::problem::Kind;
use crate::run::{Run, RunStatus};

impl Detector {
    /// Opens (or keeps open) a problem for each node gone quiet; returns
    /// their names. Retired nodes are not missed, nor nodes whose newest
    /// run was backfill (an import stopped half way says nothing of them).
    pub(super) fn silent_nodes(&mut self, now_ms: u64, touched: &mut BTreeSet<u64>) -> Vec<String> {
        let since = now_ms.saturating_sub(7 * DAY_MS);
        let silent: Vec<(String, u64, u64, String)> = self
            .nodes
            .iter()
            .filter(|(_, h)| h.last_seen_ms >= since && h.retired.is_none() && !h.backfilled)
            .filter_map(|(n, h)| {
                let usual = h.usual_interval_ms()?;
                let quiet = now_ms.saturating_sub(h.last_seen_ms);
                (quiet as f64 > usual as f64 * self.thresholds.silent_factor)
                    .then(|| (n.clone(), usual, h.last_seen_ms, h.environment.clone()))
            })
            .collect();
        // Silences that started at once: last runs within an hour of the
        // first of the group.
        let names = silent.iter().map(|s| s.0.clone()).collect();
        let mut by_time = silent;
        by_time.sort_by_key(|(n, _, last, _)| (*last, n.clone()));
        let mut groups: Vec<Vec<(String, u64, u64, String)>> = Vec::new();
        for s in by_time {
            match groups.last_mut() {
                Some(g) if s.2.saturating_sub(g[0].2) <= AT_ONCE_MS => g.push(s),
                _ => groups.push(vec![s]),
            }
        }
        for group in groups {
            if group.len() >= ROLL_UP {
                self.silent_together(&group, touched);
                continue;
            }
            for s in group {
                self.silent_alone(s, now_ms, touched);
            }
        }
        names
    }

    /// Nodes that went quiet at once: one problem, each node affected.
    fn silent_together(
        &mut self,
        group: &[(String, u64, u64, String)],
        touched: &mut BTreeSet<u64>,
    ) {
        let since = group[0].2;
        let signature = format!("silent-nodes|{}", since / AT_ONCE_MS);
        let mut id = None;
        for (node, _, last, env) in group {
            let known = self
                .by_signature
                .get(&signature)
                .and_then(|id| self.problems.get(id))
                .is_some_and(|p| {
                    p.is_open() && p.nodes.get(node).is_some_and(|ev| ev.last_ms >= *last)
                });
            if known {
                id = self.by_signature.get(&signature).copied();
                continue;
            }
            let run = quiet_run(node, *last, env);
            let production = self.thresholds.production.contains(env);
            id = Some(self.occurrence(&run, Kind::SilentNode, &signature, production, |_| {}));
        }
        let Some(id) = id else { return };
        let message = format!(
            "no reports from {} nodes since {}",
            group.len(),
            crate::time::format_ms(since)
        );
        if let Some(p) = self.problems.get_mut(&id) {
            if p.why != message {
                p.sample.message = message.clone();
                p.why = message;
                p.runs.clear();
                touched.insert(id);
            }
        }
    }

    /// One node gone quiet.
    fn silent_alone(
        &mut self,
        (node, usual, last, env): (String, u64, u64, String),
        now_ms: u64,
        touched: &mut BTreeSet<u64>,
    ) {
        {
            let signature = format!("silent-node|{node}");
            if self
                .by_signature
                .get(&signature)
                .and_then(|id| self.problems.get(id))
                .is_some_and(|p| p.is_open() && p.last_seen_ms >= last)
            {
                return;
            }
            let run = quiet_run(&node, last, &env);
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
    }
}

/// The run a silence is recorded as: the node's last one, nothing in it.
fn quiet_run(node: &str, last: u64, env: &str) -> Run {
    Run {
        key: format!("silent:{node}@{last}"),
        tool: crate::run::Tool::Puppet,
        node: node.to_string(),
        started_ms: last,
        duration_ms: None,
        retrieval_ms: None,
        status: RunStatus::Unchanged,
        environment: env.to_string(),
        code_version: String::new(),
        noop: false,
        catalog_failed: false,
        counts: Default::default(),
        resources: Vec::new(),
        ok_resources: Vec::new(),
        logs: Vec::new(),
        error: None,
        tool_version: String::new(),
    }
}
