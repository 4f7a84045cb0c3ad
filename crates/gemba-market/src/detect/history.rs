//! What the detectors remember of each node: its recent runs, digested.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::run::{Resource, Run};

/// Runs remembered per node.
pub const HISTORY: usize = 32;
pub(super) const DAY_MS: u64 = 86_400_000;

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
    /// Retired by a person: it left every problem and is not missed when
    /// it stops reporting. A run from after this puts it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Retirement>,
    /// Its newest run arrived long after it started (an import, a backlog
    /// sent late): its silence since says nothing about the node now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfilled: bool,
    /// Newest last, at most [`HISTORY`].
    #[serde(skip)]
    pub recent: VecDeque<Digest>,
}

/// Who retired a node, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retirement {
    pub at_ms: u64,
    pub by: String,
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
