//! A problem: one fault followed across runs, nodes and days, with the
//! people working on it. Its id (P-17) never changes; its kind may sharpen
//! as evidence arrives (a failure seen on three nodes within the hour
//! becomes an external outage).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Most nodes a problem keeps evidence for; beyond, only counted.
pub const MAX_NODES: usize = 1_000;
/// Most notes per problem.
pub const MAX_NOTES: usize = 200;
/// Most runs named per problem (the newest).
pub const MAX_RUNS: usize = 20;
/// Recent occurrences kept per problem for the outage window.
pub const RECENT: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    RunFailure,
    NotIdempotent,
    BootstrapFailure,
    Intermittent,
    ExternalOutage,
    SilentNode,
    SlowRun,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::RunFailure,
        Kind::NotIdempotent,
        Kind::BootstrapFailure,
        Kind::Intermittent,
        Kind::ExternalOutage,
        Kind::SilentNode,
        Kind::SlowRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RunFailure => "run-failure",
            Kind::NotIdempotent => "not-idempotent",
            Kind::BootstrapFailure => "bootstrap-failure",
            Kind::Intermittent => "intermittent",
            Kind::ExternalOutage => "external-outage",
            Kind::SilentNode => "silent-node",
            Kind::SlowRun => "slow-run",
        }
    }

    /// The severity a problem of this kind starts with.
    pub fn default_severity(self) -> Severity {
        match self {
            Kind::ExternalOutage => Severity::Critical,
            Kind::RunFailure | Kind::BootstrapFailure => Severity::High,
            Kind::Intermittent | Kind::NotIdempotent | Kind::SilentNode => Severity::Medium,
            Kind::SlowRun => Severity::Low,
        }
    }

    /// Kinds that come from failures (their signature is a failure's).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Kind::RunFailure | Kind::BootstrapFailure | Kind::Intermittent | Kind::ExternalOutage
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn louder(self) -> Severity {
        match self {
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            _ => Severity::Critical,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Open,
    Resolved,
    Regressed,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::New,
        Status::Open,
        Status::Regressed,
        Status::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Resolved => "resolved",
            Status::Regressed => "regressed",
        }
    }
}

/// The newest occurrence, with what a reader needs to find it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub node: String,
    pub run: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// What one affected node showed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeEvidence {
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u64,
    /// Runs since the last occurrence in which it did not recur.
    pub clean_runs: u32,
    /// The node ran the resource without failure since it last failed.
    #[serde(default)]
    pub ok_since: bool,
    /// The fault came back after the node had run without it.
    #[serde(default)]
    pub flaps: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub at_ms: u64,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub id: u64,
    pub kind: Kind,
    /// What makes two occurrences the same problem.
    pub signature: String,
    /// One line for a reader.
    pub title: String,
    /// Why the kind was chosen, in words.
    pub why: String,
    pub category: String,
    pub severity: Severity,
    /// A severity set by hand or by a rule: kept when the kind changes.
    #[serde(default)]
    pub severity_fixed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub notes: Vec<Note>,
    pub sample: Sample,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub status_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regressed_ms: Option<u64>,
    pub occurrences: u64,
    /// Affected nodes (at most [`MAX_NODES`]); `nodes_total` counts all.
    pub nodes: BTreeMap<String, NodeEvidence>,
    pub nodes_total: u64,
    /// The newest runs it occurred in.
    pub runs: VecDeque<String>,
    /// It occurred in a production environment.
    pub production: bool,
    /// The resource it is about, for failure and not-idempotent kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Evidence for the kind: established nodes where the resource ran
    /// fine, code versions it failed and succeeded at, the most nodes hit
    /// within the outage window, recent occurrences.
    #[serde(default)]
    pub ok_established: BTreeSet<String>,
    #[serde(default)]
    pub failing_versions: BTreeSet<String>,
    #[serde(default)]
    pub ok_versions: BTreeSet<String>,
    #[serde(default)]
    pub burst_nodes: u64,
    /// Recent occurrences (time, node), for the outage window: rebuilt
    /// from the nodes' evidence at start, not stored.
    #[serde(skip)]
    pub recent: VecDeque<(u64, String)>,
    /// Times it came back on a node after running fine there (the sum
    /// over the nodes' evidence).
    #[serde(skip)]
    pub flaps: u32,
    /// A not-idempotent change that restarts or refreshes a service.
    #[serde(default)]
    pub refresh: bool,
    /// Closed by hand, and why; cleared when it occurs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closing>,
    /// What changed in its owner, cause, severity and status, oldest first
    /// (the newest [`MAX_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Change>,
}

/// Changes kept per problem.
pub const MAX_HISTORY: usize = 100;

/// One change of a problem's owner, cause, severity or status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub at_ms: u64,
    /// `owner`, `cause`, `severity` or `status`.
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Who: a person's name, or `gemba` for what the detectors decided.
    pub by: String,
}

/// A problem closed by a person rather than by clean runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Closing {
    /// `wont-fix`, `fixed-outside` or `duplicate of P-n`.
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
}

impl Closing {
    /// The reasons a problem is closed for, checked: `wont-fix`,
    /// `fixed-outside`, or `duplicate of P-n` (another problem).
    pub fn reason(text: &str, own_id: u64) -> Result<String, String> {
        let t = text.trim();
        match t {
            "wont-fix" | "won't fix" => return Ok("wont-fix".into()),
            "fixed-outside" | "fixed outside" => return Ok("fixed-outside".into()),
            _ => {}
        }
        if let Some(id) = t
            .strip_prefix("duplicate of P-")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
        {
            if id == own_id {
                return Err(format!("P-{own_id} cannot be a duplicate of itself"));
            }
            return Ok(format!("duplicate of P-{id}"));
        }
        Err(format!(
            "close: {:?} is not a reason: wont-fix, fixed-outside or duplicate of P-n",
            crate::run::cut_to(t, 40)
        ))
    }
}

impl Problem {
    pub fn label(&self) -> String {
        format!("P-{}", self.id)
    }

    /// Whether it is still a problem (not resolved).
    pub fn is_open(&self) -> bool {
        self.status != Status::Resolved
    }

    /// Severity × blast radius × recency, ×1.5 when production is hit:
    /// severity counts 1–4; blast radius is 1 + ln(1 + affected nodes)
    /// (ten nodes weigh ~3.4× one, a thousand ~7.9×); recency halves the
    /// score for every day since the problem was last seen.
    pub fn score(&self, now_ms: u64) -> f64 {
        let severity = self.severity as u8 as f64;
        let radius = 1.0 + (1.0 + self.nodes_total as f64).ln();
        let days = now_ms.saturating_sub(self.last_seen_ms) as f64 / 86_400_000.0;
        let recency = 0.5f64.powf(days);
        let env = if self.production { 1.5 } else { 1.0 };
        ((severity * radius * recency * env) * 100.0).round() / 100.0
    }

    /// Rebuilds what is derived from the nodes' evidence and not stored.
    pub fn rebuild_derived(&mut self) {
        self.flaps = self.nodes.values().map(|e| e.flaps).sum();
        let mut recent: Vec<(u64, String)> = self
            .nodes
            .iter()
            .map(|(n, e)| (e.last_ms, n.clone()))
            .collect();
        recent.sort_unstable();
        let skip = recent.len().saturating_sub(RECENT);
        self.recent = recent.into_iter().skip(skip).collect();
    }

    /// Adds a note (the oldest go beyond [`MAX_NOTES`]).
    pub fn add_note(&mut self, at_ms: u64, text: &str) {
        if self.notes.len() >= MAX_NOTES {
            self.notes.remove(0);
        }
        self.notes.push(Note {
            at_ms,
            text: crate::run::cut_to(text, 2_000),
        });
    }

    /// Someone works on it: a new problem becomes open.
    pub fn touched_by_people(&mut self, now_ms: u64, by: &str) {
        if self.status == Status::New {
            self.set_status(Status::Open, now_ms, by);
        }
    }

    /// Records a change in its history (nothing when nothing changed).
    pub fn record(
        &mut self,
        at_ms: u64,
        field: &str,
        from: Option<String>,
        to: Option<String>,
        by: &str,
    ) {
        if from == to {
            return;
        }
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(0);
        }
        self.history.push(Change {
            at_ms,
            field: field.to_string(),
            from,
            to,
            by: by.to_string(),
        });
    }

    /// Changes its status, recording the change.
    pub fn set_status(&mut self, status: Status, at_ms: u64, by: &str) {
        let from = self.status.as_str().to_string();
        self.status = status;
        self.status_ms = at_ms;
        self.record(
            at_ms,
            "status",
            Some(from),
            Some(status.as_str().to_string()),
            by,
        );
    }
}
