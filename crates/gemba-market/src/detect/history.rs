//! What the detectors remember of each node: its recent runs, digested,
//! and the fleet counted from them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Detector;
use crate::run::{Resource, Run};

/// Runs remembered per node.
pub const HISTORY: usize = 32;
pub(super) const DAY_MS: u64 = 86_400_000;
/// Minutes of run time between two counts of the active fleet.
const FLEET_RECOUNT_MIN: u64 = 10;

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

pub(super) fn change_digest(r: &Resource) -> u64 {
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
    pub(super) fn insert(&mut self, d: Digest) {
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

pub(super) fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

impl Detector {
    /// Nodes that reported within the last 7 days of `now_ms` (counted
    /// again when the minute or the number of known nodes changes).
    pub(super) fn active_nodes(&mut self, now_ms: u64) -> u64 {
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
}
