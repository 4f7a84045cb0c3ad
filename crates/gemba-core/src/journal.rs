//! The kinds of line the escalator's journal holds: the typed link between
//! the converge stage, which writes them, and the learn stage, which opens
//! incidents and draws markers from them. Stages match on these kinds,
//! never on the words of a line, so rewording a journal line changes
//! nothing downstream.

use serde::{Deserialize, Serialize};

/// What a journal line records. Stored as its `as_str()` text; metrics
/// count some kinds, so the kinds are one list, not literals repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalKind {
    /// A check started flapping.
    Flapping,
    /// A scope's failure was folded into a wider escalation.
    Folded,
    /// A quiet period began.
    Quiet,
    /// Passing again; nothing runs.
    Recovered,
    /// An escalation opened: this kind and no other. Incidents open on it
    /// (a hold at opening is `Plan`, `RateLimited` or `CrashLoop`).
    Decision,
    /// A wider escalation took over a narrower one.
    Superseded,
    /// Another server holds the scope.
    Deferred,
    /// Plan mode: decided, nothing run.
    Plan,
    /// A rate limit held the scope or makes it wait.
    RateLimited,
    /// A crash loop held the scope or made it climb.
    CrashLoop,
    /// A level waits for approval.
    Approval,
    StepStart,
    StepEnd,
    Retry,
    Verify,
    /// The budget is spent; held for a human.
    GiveUp,
    Resolved,
    Approved,
    Acknowledged,
    /// An escalation left by another server was taken over.
    Adopted,
    NotifyFailed,
    NotifyDelivered,
    NotifyExpired,
    /// This server's clock is off the store's (or back): it takes no new
    /// leases meanwhile.
    ClockSkew,
    /// The store could not be reached (written when it is back), and its
    /// return, with the lines held back meanwhile.
    StoreOutage,
}

impl JournalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::Flapping => "flapping",
            JournalKind::Folded => "folded",
            JournalKind::Quiet => "quiet",
            JournalKind::Recovered => "recovered",
            JournalKind::Decision => "decision",
            JournalKind::Superseded => "superseded",
            JournalKind::Deferred => "deferred",
            JournalKind::Plan => "plan",
            JournalKind::RateLimited => "rate-limited",
            JournalKind::CrashLoop => "crash-loop",
            JournalKind::Approval => "approval",
            JournalKind::StepStart => "step-start",
            JournalKind::StepEnd => "step-end",
            JournalKind::Retry => "retry",
            JournalKind::Verify => "verify",
            JournalKind::GiveUp => "give-up",
            JournalKind::Resolved => "resolved",
            JournalKind::Approved => "approved",
            JournalKind::Acknowledged => "acknowledged",
            JournalKind::Adopted => "adopted",
            JournalKind::NotifyFailed => "notify-failed",
            JournalKind::NotifyDelivered => "notify-delivered",
            JournalKind::NotifyExpired => "notify-expired",
            JournalKind::ClockSkew => "clock-skew",
            JournalKind::StoreOutage => "store-outage",
        }
    }
}

impl JournalKind {
    /// Every kind, in the order a journal tells an escalation.
    pub const ALL: [JournalKind; 25] = [
        JournalKind::Flapping,
        JournalKind::Folded,
        JournalKind::Quiet,
        JournalKind::Recovered,
        JournalKind::Decision,
        JournalKind::Superseded,
        JournalKind::Deferred,
        JournalKind::Plan,
        JournalKind::RateLimited,
        JournalKind::CrashLoop,
        JournalKind::Approval,
        JournalKind::StepStart,
        JournalKind::StepEnd,
        JournalKind::Retry,
        JournalKind::Verify,
        JournalKind::GiveUp,
        JournalKind::Resolved,
        JournalKind::Approved,
        JournalKind::Acknowledged,
        JournalKind::Adopted,
        JournalKind::NotifyFailed,
        JournalKind::NotifyDelivered,
        JournalKind::NotifyExpired,
        JournalKind::ClockSkew,
        JournalKind::StoreOutage,
    ];

    /// The kind a stored line names; `None` for a kind this gemba does
    /// not know (written by a newer one): readers skip it.
    pub fn parse(text: &str) -> Option<JournalKind> {
        JournalKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Delivery reports of notices: not part of what happened.
    pub fn is_delivery(self) -> bool {
        matches!(
            self,
            JournalKind::NotifyFailed | JournalKind::NotifyDelivered | JournalKind::NotifyExpired
        )
    }
}

impl std::fmt::Display for JournalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_text() {
        for k in JournalKind::ALL {
            assert_eq!(JournalKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(JournalKind::parse("opened"), None);
    }
}
