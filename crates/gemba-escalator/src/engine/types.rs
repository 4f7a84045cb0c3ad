//! What the engine decides about and says: escalations and their phases,
//! steps, notices, journal entries, effects and the plan.

use super::*;

/// Where an escalation is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    AwaitingApproval {
        level: u32,
    },
    Running {
        level: u32,
        started_ms: u64,
    },
    Quiescing {
        level: u32,
        until_ms: u64,
    },
    Verifying {
        after_ms: u64,
        deadline_ms: u64,
    },
    Backoff {
        until_ms: u64,
    },
    /// Out of budget: nothing runs for this scope until acknowledged.
    Held {
        since_ms: u64,
    },
    Resolved {
        at_ms: u64,
    },
    Acknowledged {
        at_ms: u64,
    },
    /// A broader scope's escalation took over.
    Superseded {
        by: u64,
    },
}

/// How the engine wants a scope's escalation opened.
#[derive(Clone, Debug, PartialEq)]
pub enum Opening {
    /// Run the chain.
    Run,
    /// Run the chain from a more fundamental level than the checks
    /// require, because the scope is in a crash loop.
    Climb { why: String },
    /// Open it held for a human (crash loop, rate limit): nothing runs.
    Hold { kind: NoticeKind, why: String },
}

/// An escalation the engine asks the caller to open.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRequest {
    pub scope: Scope,
    pub level: u32,
    pub checks: Vec<String>,
    pub how: Opening,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::AwaitingApproval { .. } => "awaiting-approval",
            Phase::Running { .. } => "running",
            Phase::Quiescing { .. } => "quiescing",
            Phase::Verifying { .. } => "verifying",
            Phase::Backoff { .. } => "backoff",
            Phase::Held { .. } => "held",
            Phase::Resolved { .. } => "resolved",
            Phase::Acknowledged { .. } => "acknowledged",
            Phase::Superseded { .. } => "superseded",
        }
    }

    /// Whether the escalation is over.
    pub fn closed(&self) -> bool {
        matches!(
            self,
            Phase::Resolved { .. } | Phase::Acknowledged { .. } | Phase::Superseded { .. }
        )
    }

    /// Whether it counts against `max_running`.
    pub fn active(&self) -> bool {
        !self.closed() && !matches!(self, Phase::Held { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "kebab-case")]
pub enum StepOutcome {
    Succeeded,
    Failed(String),
    /// The process running it stopped before the step reported; its
    /// outcome is unknown and it is not re-run blindly.
    Interrupted(String),
    /// Decided but not run (`mode = "plan"` or another server ran it).
    NotRun(String),
}

impl StepOutcome {
    /// In words, for people: "succeeded", "failed: exit 1", ...
    pub fn describe(&self) -> String {
        match self {
            StepOutcome::Succeeded => "succeeded".into(),
            StepOutcome::Failed(r) => format!("failed: {r}"),
            StepOutcome::Interrupted(r) => format!("interrupted: {r}"),
            StepOutcome::NotRun(r) => format!("not run: {r}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub attempt: u32,
    pub level: u32,
    pub name: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub outcome: Option<StepOutcome>,
    #[serde(default)]
    pub output: String,
}

/// One escalation of one scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub id: u64,
    pub scope: Scope,
    pub phase: Phase,
    pub opened_ms: u64,
    pub updated_ms: u64,
    /// The checks (`check@scope`) that triggered it: its post-condition.
    pub checks: Vec<String>,
    /// Where the chain starts this attempt (climbs with `climb = true`).
    pub start_level: u32,
    pub chain: Vec<u32>,
    /// Index into `chain` of the current or last step.
    pub position: usize,
    pub attempt: u32,
    pub steps: Vec<StepRecord>,
    /// Narrower scopes that folded into this one.
    pub folded: Vec<Scope>,
    /// Levels approved by a human in this attempt.
    #[serde(default)]
    pub approved: Vec<u32>,
    /// Why it is held (gave up, crash loop, rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_because: Option<String>,
}

impl Escalation {
    /// The record as the store keeps it: indexed fields and the whole
    /// escalation as JSON.
    pub fn row(&self) -> gemba_store::EscalationRow {
        gemba_store::EscalationRow {
            id: self.id,
            scope: self.scope.to_string(),
            phase: self.phase.name().into(),
            open: !self.phase.closed(),
            opened_ms: self.opened_ms,
            updated_ms: self.updated_ms,
            body: serde_json::to_string(self).expect("escalation serializes"),
        }
    }
}

/// Something that happened worth telling a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    StepFailed,
    GaveUp,
    ApprovalNeeded,
    Resolved,
    Flapping,
    /// A rate limit held the scope or makes it wait.
    RateLimited,
    CrashLoop,
    /// This server's clock is off the store's: it takes no new leases.
    ClockSkew,
}

impl Escalation {
    /// The newest step of `level` that has no outcome yet.
    pub(super) fn unfinished_step(&mut self, level: u32) -> Option<&mut StepRecord> {
        self.steps
            .iter_mut()
            .rev()
            .find(|s| s.level == level && s.finished_ms.is_none())
    }
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::StepFailed => "step-failed",
            NoticeKind::GaveUp => "gave-up",
            NoticeKind::ApprovalNeeded => "approval-needed",
            NoticeKind::Resolved => "resolved",
            NoticeKind::Flapping => "flapping",
            NoticeKind::RateLimited => "rate-limited",
            NoticeKind::CrashLoop => "crash-loop",
            NoticeKind::ClockSkew => "clock-skew",
        }
    }
}

pub use gemba_core::journal::JournalKind;

impl From<NoticeKind> for JournalKind {
    /// The journal line a held scope's notice is written as.
    fn from(k: NoticeKind) -> JournalKind {
        match k {
            NoticeKind::StepFailed => JournalKind::StepEnd,
            NoticeKind::GaveUp => JournalKind::GiveUp,
            NoticeKind::ApprovalNeeded => JournalKind::Approval,
            NoticeKind::Resolved => JournalKind::Resolved,
            NoticeKind::Flapping => JournalKind::Flapping,
            NoticeKind::RateLimited => JournalKind::RateLimited,
            NoticeKind::CrashLoop => JournalKind::CrashLoop,
            NoticeKind::ClockSkew => JournalKind::ClockSkew,
        }
    }
}

/// A failing check as a notice reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeCheck {
    pub id: String,
    /// Its last output.
    pub output: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub escalation: Option<u64>,
    pub scope: Scope,
    pub at_ms: u64,
    pub text: String,
    /// The failing checks (gave up, held, rate limit, crash loop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<NoticeCheck>,
    /// What ran and how it ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ran: Vec<String>,
    /// What gemba does next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The command that frees a held scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub escalation: Option<u64>,
    pub scope: Scope,
    pub at_ms: u64,
    pub kind: JournalKind,
    pub text: String,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Open an escalation (take the scope's lease, allocate an id, then
    /// call [`Engine::opened`] — or [`Engine::deferred`] if refused).
    Open(OpenRequest),
    /// Run a step; report with [`Engine::step_done`].
    Run {
        id: u64,
        attempt: u32,
        level: u32,
    },
    /// Persist the escalation's current record.
    Save(Box<Escalation>),
    Journal(Entry),
    Notify(Notice),
    /// The scope's lease can go.
    Release(Scope),
}

/// Why a check is not counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ignored {
    Flapping,
    Stale,
    Untrusted,
}

impl Ignored {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ignored::Flapping => "flapping",
            Ignored::Stale => "stale",
            Ignored::Untrusted => "untrusted",
        }
    }
}

/// A failing check as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailingCheck {
    pub id: String,
    pub level: u32,
    pub since_ms: u64,
    pub output: String,
    pub ignored: Option<Ignored>,
}

/// The plan for one scope: what would run, why, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopePlan {
    pub scope: Scope,
    pub checks: Vec<FailingCheck>,
    /// Most fundamental level required by the counted checks.
    pub level: Option<u32>,
    /// Level names in the order they would run.
    pub chain: Vec<String>,
    pub status: String,
    pub escalation: Option<u64>,
    /// When the next thing happens (unix ms), if known.
    pub at_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub at_ms: u64,
    pub mode: String,
    pub scopes: Vec<ScopePlan>,
}

#[derive(Clone, Debug)]
pub(super) struct Watch {
    pub(super) quiet_since: u64,
    /// Set when a decision was journaled but not acted on (plan mode, a
    /// wait for a free slot): its journal kind, so that it is journaled
    /// once per episode, and its words for the plan.
    pub(super) noted: Option<(JournalKind, String)>,
}
