//! From single results to a state worth acting on: `fall` consecutive
//! failures before a check counts as failing, `rise` consecutive passes
//! before it counts as passing again, and flap detection.
//!
//! Flap detection has two measures; a check flaps while either says so.
//! - Over results, as Nagios does: over the last 21 results, each change
//!   between consecutive results is weighted from 0.8 (oldest) to 1.2
//!   (newest); the weighted share of changes, in percent, starts flapping
//!   above `flap_high` and stops below `flap_low`. It catches fast
//!   flapping, but 21 results span only 21 intervals: at a 1 s interval a
//!   service that dies every 20 s shows two changes (11.5 %).
//! - Over time: the hard-state changes (passing ↔ failing) within
//!   `flap_window` (default 1 h) start flapping at `flap_changes_high`
//!   (default 6, three failures) and stop it at `flap_changes_low` or
//!   fewer (default 2). A cycle of seconds or of ten minutes is caught at
//!   any check interval: a 10 min cycle after about 30 min.
//!
//! For convergence, OK and WARNING pass and CRITICAL fails; UNKNOWN (the
//! check could not tell) moves neither way and resets both streaks.

use std::collections::VecDeque;

use gemba_core::policy::CheckDef;
use serde::{Deserialize, Serialize};

use crate::nagios::Status;

/// The state the escalator acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HardState {
    /// Not enough results yet.
    Pending,
    Passing,
    Failing,
}

impl HardState {
    pub fn as_str(self) -> &'static str {
        match self {
            HardState::Pending => "pending",
            HardState::Passing => "passing",
            HardState::Failing => "failing",
        }
    }
}

const FLAP_HISTORY: usize = 21;

#[derive(Clone, Debug)]
pub struct CheckTracker {
    fall: u32,
    rise: u32,
    flap_low: f64,
    flap_high: f64,
    state: HardState,
    /// Unix ms since `state` holds.
    since_ms: u64,
    fails: u32,
    passes: u32,
    history: VecDeque<Status>,
    flapping_by_results: bool,
    flap_percent: f64,
    flap_window_ms: u64,
    flap_changes_high: u32,
    flap_changes_low: u32,
    /// When the hard state changed, newest last; at most
    /// `flap_changes_high` kept (enough to compare with both thresholds).
    changes: VecDeque<u64>,
    flapping_by_time: bool,
}

/// What one result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state_changed: bool,
    pub flapping_started: bool,
    pub flapping_stopped: bool,
}

impl CheckTracker {
    /// A tracker with `def`'s fall, rise and flap settings.
    pub fn new(def: &CheckDef, now_ms: u64) -> Self {
        CheckTracker {
            fall: def.fall.max(1),
            rise: def.rise.max(1),
            flap_low: def.flap_low,
            flap_high: def.flap_high,
            state: HardState::Pending,
            since_ms: now_ms,
            fails: 0,
            passes: 0,
            history: VecDeque::with_capacity(FLAP_HISTORY),
            flapping_by_results: false,
            flap_percent: 0.0,
            flap_window_ms: def.flap_window.as_millis() as u64,
            flap_changes_high: def.flap_changes_high.max(1),
            flap_changes_low: def.flap_changes_low,
            changes: VecDeque::new(),
            flapping_by_time: false,
        }
    }

    pub fn state(&self) -> HardState {
        self.state
    }
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }
    pub fn flapping(&self) -> bool {
        self.flapping_by_results || self.flapping_by_time
    }
    /// Hard-state changes within the flap window (capped at
    /// `flap_changes_high`).
    pub fn flap_changes(&self) -> u32 {
        self.changes.len() as u32
    }
    pub fn flap_percent(&self) -> f64 {
        self.flap_percent
    }

    /// Records one result.
    pub fn record(&mut self, status: Status, now_ms: u64) -> Transition {
        let before = (self.state, self.flapping());
        match status {
            Status::Ok | Status::Warning => {
                self.passes += 1;
                self.fails = 0;
                if self.state != HardState::Passing && self.passes >= self.rise {
                    self.state = HardState::Passing;
                    self.since_ms = now_ms;
                }
            }
            Status::Critical => {
                self.fails += 1;
                self.passes = 0;
                if self.state != HardState::Failing && self.fails >= self.fall {
                    self.state = HardState::Failing;
                    self.since_ms = now_ms;
                }
            }
            Status::Unknown => {
                self.fails = 0;
                self.passes = 0;
            }
        }
        if self.history.len() == FLAP_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(status);
        self.flap_percent = weighted_change_percent(&self.history);
        // Like Nagios, judge only once the history is full.
        if self.history.len() == FLAP_HISTORY {
            if !self.flapping_by_results && self.flap_percent > self.flap_high {
                self.flapping_by_results = true;
            } else if self.flapping_by_results && self.flap_percent < self.flap_low {
                self.flapping_by_results = false;
            }
        }
        if before.0 != HardState::Pending && before.0 != self.state {
            if self.changes.len() == self.flap_changes_high as usize {
                self.changes.pop_front();
            }
            self.changes.push_back(now_ms);
        }
        while self
            .changes
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= self.flap_window_ms)
        {
            self.changes.pop_front();
        }
        let n = self.changes.len() as u32;
        if !self.flapping_by_time && n >= self.flap_changes_high {
            self.flapping_by_time = true;
        } else if self.flapping_by_time && n <= self.flap_changes_low {
            self.flapping_by_time = false;
        }
        let flapping = self.flapping();
        Transition {
            state_changed: before.0 != self.state,
            flapping_started: !before.1 && flapping,
            flapping_stopped: before.1 && !flapping,
        }
    }
}

/// Nagios' weighted percent state change over a history of results.
pub fn weighted_change_percent(history: &VecDeque<Status>) -> f64 {
    let n = history.len();
    if n < 2 {
        return 0.0;
    }
    let slots = (FLAP_HISTORY - 1) as f64;
    let mut total = 0.0;
    for i in 1..n {
        if history[i] != history[i - 1] {
            // Change i of up to 20, oldest weighs 0.8, newest 1.2.
            let position = (FLAP_HISTORY - n + i - 1) as f64;
            total += 0.8 + 0.4 * position / (slots - 1.0);
        }
    }
    total / slots * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Status::*;

    fn def(fall: u32, rise: u32) -> CheckDef {
        CheckDef {
            name: "t".into(),
            kind: gemba_core::policy::CheckKind::Command {
                argv: vec!["/bin/true".into()],
            },
            scope: gemba_core::policy::ScopeRule::Node { tier: None },
            level: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall,
            rise,
            flap_low: 20.0,
            flap_high: 30.0,
            flap_window: Duration::from_secs(3600),
            flap_changes_high: 6,
            flap_changes_low: 2,
        }
    }

    impl CheckTracker {
        fn with(fall: u32, rise: u32) -> Self {
            CheckTracker::new(&def(fall, rise), 0)
        }
    }

    #[test]
    fn fall_and_rise_need_consecutive_results() {
        let mut t = CheckTracker::with(2, 3);
        assert_eq!(t.state(), HardState::Pending);
        t.record(Ok, 1);
        t.record(Ok, 2);
        assert_eq!(t.state(), HardState::Pending);
        assert!(t.record(Ok, 3).state_changed);
        assert_eq!((t.state(), t.since_ms()), (HardState::Passing, 3));
        t.record(Critical, 4);
        t.record(Ok, 5);
        t.record(Critical, 6);
        assert_eq!(
            t.state(),
            HardState::Passing,
            "failures were not consecutive"
        );
        t.record(Critical, 7);
        assert_eq!((t.state(), t.since_ms()), (HardState::Failing, 7));
        t.record(Unknown, 8);
        t.record(Ok, 9);
        t.record(Ok, 10);
        assert_eq!(t.state(), HardState::Failing);
        t.record(Ok, 11);
        assert_eq!(t.state(), HardState::Passing);
    }

    #[test]
    fn warning_passes_and_unknown_holds() {
        let mut t = CheckTracker::with(1, 1);
        t.record(Warning, 1);
        assert_eq!(t.state(), HardState::Passing);
        t.record(Unknown, 2);
        assert_eq!(t.state(), HardState::Passing);
    }

    #[test]
    fn alternating_results_flap_and_steady_ones_stop_it() {
        // The measure over results alone (the one over time would hold
        // it for an hour).
        let only_results = CheckDef {
            flap_changes_high: 10_000,
            ..def(1, 1)
        };
        let mut t = CheckTracker::new(&only_results, 0);
        let mut started = 0;
        for i in 0..21 {
            let tr = t.record(if i % 2 == 0 { Ok } else { Critical }, i);
            if tr.flapping_started {
                started += 1;
            }
        }
        assert!(t.flapping());
        assert_eq!(started, 1, "flapping starts once");
        assert!((t.flap_percent() - 100.0).abs() < 1e-9);
        let mut stopped_at = None;
        for i in 21..60 {
            if t.record(Ok, i).flapping_stopped {
                stopped_at = Some(i);
                break;
            }
        }
        // 20 % of 20 changes is 4; the hysteresis holds it until the
        // weighted share of old changes falls under the low threshold.
        let at = stopped_at.expect("flapping stops on steady results");
        assert!(at > 30 && at < 41, "stopped at result {at}");
    }

    #[test]
    fn one_change_is_not_flapping() {
        let mut t = CheckTracker::with(1, 1);
        for i in 0..30 {
            t.record(if i < 15 { Ok } else { Critical }, i);
        }
        assert!(!t.flapping());
        assert!(t.flap_percent() < 10.0);
    }

    /// Runs a service that is down for the first half of every `cycle_s`,
    /// checked every `interval_s`, for `cycles` cycles and then healthy for
    /// `calm_s`; returns when flapping started and stopped (seconds).
    fn cycle(
        fall: u32,
        cycle_s: u64,
        interval_s: u64,
        cycles: u64,
        calm_s: u64,
    ) -> (Option<u64>, Option<u64>) {
        let mut t = CheckTracker::with(fall, 1);
        let (mut started, mut stopped) = (None, None);
        let end = cycle_s * cycles;
        let mut now = 0;
        while now < end + calm_s {
            let down = now < end && now % cycle_s < cycle_s / 2;
            let tr = t.record(if down { Critical } else { Ok }, now * 1000);
            if tr.flapping_started && started.is_none() {
                started = Some(now);
            }
            if tr.flapping_stopped && started.is_some() {
                stopped = Some(now);
            }
            now += interval_s;
        }
        (started, stopped)
    }

    #[test]
    fn cycles_of_seconds_to_minutes_flap_by_time_at_any_interval() {
        for (cycle_s, interval_s, fall) in [
            (20, 1, 1),
            (20, 1, 2),
            (20, 10, 1),
            (120, 1, 1),
            (120, 10, 1),
            (120, 10, 2),
            (600, 1, 2),
            (600, 10, 1),
        ] {
            let what = format!("{cycle_s} s cycle at a {interval_s} s interval, fall {fall}");
            let (started, stopped) = cycle(fall, cycle_s, interval_s, 12, 2 * 3600);
            let started = started.unwrap_or_else(|| panic!("{what}: never flapping"));
            // The sixth change is the third failure after the first one
            // (that one starts from pending and is not a change).
            assert!(
                started >= 5 * cycle_s / 2 && started <= 3 * cycle_s + fall as u64 * interval_s,
                "{what}: flapping from {started} s"
            );
            // Calm: it stops once the window holds two changes or fewer.
            let stopped = stopped.unwrap_or_else(|| panic!("{what}: never settled"));
            let last_change = 12 * cycle_s;
            assert!(
                stopped > last_change && stopped <= last_change + 3600 + interval_s,
                "{what}: settled at {stopped} s"
            );
        }
    }

    #[test]
    fn two_failures_an_hour_apart_are_not_flapping() {
        let (started, _) = cycle(1, 1800, 10, 4, 0);
        assert_eq!(started, None, "a failure every 30 min is not flapping");
    }

    #[test]
    fn the_time_measure_keeps_a_bounded_history() {
        let mut t = CheckTracker::with(1, 1);
        for i in 0..10_000u64 {
            t.record(if i % 2 == 0 { Critical } else { Ok }, i * 1000);
        }
        assert_eq!(t.flap_changes(), 6);
        assert!(t.flapping());
    }
}
