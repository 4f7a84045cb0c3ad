//! A check result as it travels: in gossip (node checks), to the escalator
//! and out through the API.

use gemba_core::Scope;
use serde::{Deserialize, Serialize};

use crate::kinds::{Instance, Observation};
use crate::nagios::{Perf, Status};
use crate::tracker::{CheckTracker, HardState, Transition};

/// How much output travels in gossip; the full text stays on the node.
pub const GOSSIP_OUTPUT_MAX: usize = 300;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub scope: Scope,
    /// The kind of check (tcp, command, ...).
    pub kind: String,
    /// This run's status.
    pub status: Status,
    /// After fall/rise: what the escalator acts on.
    pub state: HardState,
    /// Unix ms since `state` holds.
    pub since_ms: u64,
    /// Unix ms of this run.
    pub at_ms: u64,
    pub interval_ms: u64,
    pub duration_ms: u64,
    pub output: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perf: Vec<Perf>,
    pub flapping: bool,
    pub flap_percent: f64,
    /// Hard-state changes within the check's flap window.
    #[serde(default)]
    pub flap_changes: u32,
    pub trusted: bool,
    pub level: Option<u32>,
    /// Tiers of the node the result is about (node scope).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    /// The node that ran the check.
    pub observer: String,
}

impl CheckResult {
    /// `check@scope`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.check, self.scope)
    }

    /// Whether the result is older than `intervals` check intervals.
    pub fn stale(&self, now_ms: u64, intervals: u32) -> bool {
        now_ms.saturating_sub(self.at_ms) > self.interval_ms.max(1) * intervals as u64
    }

    /// Drops perfdata and cuts the output to [`GOSSIP_OUTPUT_MAX`]: what
    /// travels in gossip, and all a server keeps of a peer's result.
    pub fn make_compact(&mut self) {
        self.perf.clear();
        if self.output.len() > GOSSIP_OUTPUT_MAX {
            let mut cut = GOSSIP_OUTPUT_MAX;
            while !self.output.is_char_boundary(cut) {
                cut -= 1;
            }
            self.output.truncate(cut);
            self.output.push('…');
        }
    }

    /// The compact form published in gossip.
    pub fn to_gossip(&self) -> String {
        let mut r = self.clone();
        r.make_compact();
        serde_json::to_string(&r).expect("result serializes")
    }

    pub fn from_gossip(s: &str) -> Option<CheckResult> {
        serde_json::from_str(s).ok()
    }
}

/// Turns one observation into a result through the instance's tracker.
pub fn record(
    tracker: &mut CheckTracker,
    inst: &Instance,
    obs: Observation,
    observer: &str,
    now_ms: u64,
) -> (CheckResult, Transition) {
    let t = tracker.record(obs.status, now_ms);
    (
        CheckResult {
            check: inst.def.name.clone(),
            scope: inst.scope.clone(),
            kind: inst.kind.name().to_string(),
            status: obs.status,
            state: tracker.state(),
            since_ms: tracker.since_ms(),
            at_ms: now_ms,
            interval_ms: inst.def.interval.as_millis() as u64,
            duration_ms: obs.duration_ms,
            output: obs.output,
            perf: obs.perf,
            flapping: tracker.flapping(),
            flap_percent: tracker.flap_percent(),
            flap_changes: tracker.flap_changes(),
            trusted: obs.trusted,
            level: inst.def.level,
            tiers: inst.tiers.clone(),
            observer: observer.to_string(),
        },
        t,
    )
}
