//! Slow runs: duration or catalog retrieval far over the node's own
//! baseline (the median of its runs of the last 7 days).

use super::history::{median, Digest, DAY_MS};
use super::{Detector, Pass};
use crate::problem::Kind;

/// Slow-run floor: a run must be this much over its baseline too.
const SLOW_FLOOR_MS: u64 = 10_000;

impl Detector {
    /// A run slow against the node's own baseline.
    pub(super) fn slow_run(&mut self, pass: &mut Pass<'_>) {
        let (run, node, production) = (pass.run, pass.node.as_str(), pass.production);
        if let Some(h) = self.nodes.get(node) {
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
                pass.hit.insert(signature.clone());
                let id = self.occurrence(run, Kind::SlowRun, &signature, production, |p| {
                    p.sample.message = message.clone();
                });
                pass.touched.insert(id);
            }
        }
    }
}
