//! Each scope's history over time (failure episodes, escalations, steps)
//! and the words it is told in: what crash loops and holds are judged on.

use super::*;

pub(super) const HOUR_MS: u64 = 3_600_000;
/// Steps remembered per scope for notices.
pub(super) const STEPS_KEPT: usize = 20;

/// What the engine remembers of one scope over time: the counts behind
/// the hourly rate limit and the crash loop, and what ran.
#[derive(Clone, Debug, Default)]
pub(super) struct ScopeHistory {
    /// When failure episodes began.
    pub(super) episodes: Vec<u64>,
    /// When escalations that ran something opened, and the level each
    /// started from.
    pub(super) opened: Vec<(u64, u32)>,
    /// Finished steps, newest last, with the escalation they belong to.
    pub(super) steps: std::collections::VecDeque<(u64, StepRecord)>,
    /// An acknowledgement forgives everything before it.
    pub(super) forgiven_ms: u64,
    /// A human acknowledged the scope and it was not held since: its
    /// flapping checks may act (a new crash loop still holds it).
    pub(super) acked: bool,
}

impl ScopeHistory {
    pub(super) fn prune(&mut self, keep_after: u64) {
        let after = keep_after.max(self.forgiven_ms);
        self.episodes.retain(|t| *t >= after);
        self.opened.retain(|(t, _)| *t >= after);
        self.steps.retain(|(_, s)| s.started_ms >= after);
    }

    pub(super) fn forgive(&mut self, at: u64) {
        self.forgiven_ms = self.forgiven_ms.max(at);
        self.prune(0);
    }

    pub(super) fn keep_step(&mut self, escalation: u64, step: StepRecord) {
        if self.steps.len() == STEPS_KEPT {
            self.steps.pop_front();
        }
        self.steps.push_back((escalation, step));
    }

    /// Nothing left to remember.
    pub(super) fn is_idle(&self) -> bool {
        self.episodes.is_empty() && self.opened.is_empty() && self.steps.is_empty() && !self.acked
    }
}

/// A crash loop: how many failures in how long, and what ran meanwhile.
pub(super) struct CrashLoop {
    pub(super) failures: usize,
    pub(super) span_ms: u64,
    /// Steps run in the window, per level (level, name, count).
    pub(super) runs: Vec<(u32, String, usize)>,
    /// The most fundamental level escalations in the window started from.
    pub(super) deepest: Option<u32>,
}

impl CrashLoop {
    pub(super) fn describe(&self) -> String {
        let ran = if self.runs.is_empty() {
            "nothing ran".to_string()
        } else {
            self.runs
                .iter()
                .map(|(l, name, n)| {
                    format!("{l}:{name} ran {n} time{}", if *n == 1 { "" } else { "s" })
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "crash loop: {} failures in {}, {ran}",
            self.failures,
            span_words(self.span_ms)
        )
    }
}

/// An escalation's status in a plan: "escalation 4 held (crash loop: …);
/// `gemba ack node:a` frees it".
pub(super) fn escalation_status(e: &Escalation) -> String {
    match (&e.phase, &e.held_because) {
        (Phase::Held { .. }, Some(why)) => format!(
            "escalation {} held ({why}); `gemba ack {}` frees it",
            e.id, e.scope
        ),
        _ => format!("escalation {} {}", e.id, e.phase.name()),
    }
}

/// One step for a notice: "escalation 3, attempt 1: level 2 (restart)
/// succeeded: restarted pid 42".
pub(super) fn describe_step(id: u64, s: &StepRecord) -> String {
    let outcome = s
        .outcome
        .as_ref()
        .map(StepOutcome::describe)
        .unwrap_or_else(|| "still running".into());
    let last = s.output.lines().rev().find(|l| !l.trim().is_empty());
    let said = match last {
        Some(l) if l.chars().count() > 200 => {
            format!(": {}…", l.chars().take(200).collect::<String>())
        }
        Some(l) => format!(": {}", l.trim()),
        None => String::new(),
    };
    format!(
        "escalation {id}, attempt {}: level {} ({}) {outcome}{said}",
        s.attempt, s.level, s.name
    )
}

/// "43 s", "6 min", "2 h 5 min".
pub fn span_words(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", (s + 30) / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}
