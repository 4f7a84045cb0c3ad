//! Silent nodes: a node that reported in the last 7 days, not for
//! several times its usual interval.

use std::collections::BTreeSet;

use super::history::DAY_MS;
use super::Detector;
use crate::problem::Kind;
use crate::run::{Run, RunStatus};

impl Detector {
    /// Opens (or keeps open) a problem for each node gone quiet.
    pub(super) fn silent_nodes(&mut self, now_ms: u64, touched: &mut BTreeSet<u64>) {
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
    }
}
