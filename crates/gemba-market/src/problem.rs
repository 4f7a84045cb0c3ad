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
/// Failed runs in a row (no run of the resource fine anywhere between)
/// before they can be an outage: a run that fails by chance 30 % of the
/// time does so six times running less than once in a thousand.
pub const OUTAGE_RUNS: u64 = 6;
/// Share of the nodes running the resource that must have failed it.
pub const OUTAGE_SHARE: f64 = 0.8;
/// Categories whose cause lies outside the node and its code.
pub const OUTSIDE: [&str; 5] = ["network", "dns", "http", "package-repo", "scm"];

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
    /// The run's own log lines about it (a command's output, the error
    /// behind "returned 7"), at most [`MAX_DETAIL`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
    /// For failures rolled up from several resources with one message:
    /// how many failed in the run, and the first names.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resource_count: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Resources of the run skipped because of failed dependencies.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_dependents: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Log lines kept with a problem's sample.
pub const MAX_DETAIL: usize = 20;

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
    /// The fault came back after the node had run without it at the same
    /// code version.
    #[serde(default)]
    pub flaps: u32,
    /// The code version it ran fine at since it last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_version: Option<String>,
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
    /// fine, code versions it failed and succeeded at.
    #[serde(default)]
    pub ok_established: BTreeSet<String>,
    #[serde(default)]
    pub failing_versions: BTreeSet<String>,
    #[serde(default)]
    pub ok_versions: BTreeSet<String>,
    /// The code versions it failed at, in run order, and the one it was
    /// fixed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<VersionRange>,
    /// Times it came back at a code version a node had already run it
    /// fine at after failing (on that node or another): it comes and goes.
    #[serde(default)]
    pub returns: u32,
    /// Code versions at which a node that had failed it ran it fine.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recovered_at: BTreeSet<String>,
    /// The largest outage seen: a stretch in which every run of it failed,
    /// on (nearly) every node that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageSpan>,
    /// The stretch of failed runs going on now, ended by any run of it
    /// that went fine; its nodes are those whose evidence is newer than
    /// its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<Episode>,
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

/// Failing code versions in the order runs showed them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRange {
    pub first: String,
    pub first_ms: u64,
    pub last: String,
    pub last_ms: u64,
    /// A later version its nodes ran fine at, since the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_in: Option<String>,
}

/// An outage: every run of the resource failed from `from_ms` to `to_ms`,
/// `runs` of them on `nodes` nodes, of `ran` nodes that ran it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutageSpan {
    pub from_ms: u64,
    pub to_ms: u64,
    pub runs: u64,
    pub nodes: u64,
    pub ran: u64,
}

/// Failed runs with no run of the resource fine between them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub from_ms: u64,
    pub to_ms: u64,
    pub runs: u64,
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
    }

    /// A run of it failed on `node` at `at_ms` (its evidence not yet
    /// updated): the stretch of failed runs grows. When it has run long
    /// enough over enough nodes, `ran` is asked how many nodes ran the
    /// resource from a window before the stretch to its end (besides those
    /// that failed it), and the stretch becomes the outage when the failing
    /// nodes are [`OUTAGE_SHARE`] of them.
    pub fn failed_run(
        &mut self,
        at_ms: u64,
        node: &str,
        window_ms: u64,
        ran: impl FnOnce(&Problem, u64, u64) -> u64,
    ) {
        let new_here = self.nodes.get(node).is_none_or(|ev| ev.count == 0);
        let ep = match &mut self.episode {
            // A failure long after the stretch's last one starts another.
            Some(e) if at_ms <= e.to_ms.saturating_add(window_ms) => e,
            slot => slot.insert(Episode {
                from_ms: at_ms,
                to_ms: at_ms,
                runs: 0,
            }),
        };
        let joined = new_here
            || self
                .nodes
                .get(node)
                .is_some_and(|ev| ev.last_ms < ep.from_ms.min(at_ms));
        ep.from_ms = ep.from_ms.min(at_ms);
        ep.to_ms = ep.to_ms.max(at_ms);
        ep.runs += 1;
        let ep = ep.clone();
        if let Some(o) = self.outage.as_mut().filter(|o| o.from_ms == ep.from_ms) {
            // The outage goes on.
            o.to_ms = ep.to_ms;
            o.runs = ep.runs;
            if !joined {
                return;
            }
        }
        if ep.runs < OUTAGE_RUNS || !(joined || ep.runs == OUTAGE_RUNS) {
            return;
        }
        let mut hit = self
            .nodes
            .iter()
            .filter(|(n, ev)| ev.last_ms >= ep.from_ms && n.as_str() != node)
            .count() as u64;
        hit += 1;
        if hit < 2 {
            return;
        }
        let others = ran(self, ep.from_ms.saturating_sub(window_ms), ep.to_ms);
        let ran = hit + others;
        if (hit as f64) < OUTAGE_SHARE * ran as f64 {
            return;
        }
        if self.outage.as_ref().is_none_or(|o| o.nodes <= hit) {
            self.outage = Some(OutageSpan {
                from_ms: ep.from_ms,
                to_ms: ep.to_ms,
                runs: ep.runs,
                nodes: hit,
                ran,
            });
        }
    }

    /// A run of it went fine at `at_ms`: the stretch of failed runs ends
    /// (unless the run is from before it began). Whether it ended.
    pub fn fine_run(&mut self, at_ms: u64) -> bool {
        let ends = self.episode.as_ref().is_some_and(|e| at_ms > e.from_ms);
        if ends {
            self.episode = None;
        }
        ends
    }

    /// Its category points outside the node (network, DNS, HTTP, a
    /// package repository, source control).
    pub fn points_outside(&self) -> bool {
        OUTSIDE.contains(&self.category.as_str())
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
