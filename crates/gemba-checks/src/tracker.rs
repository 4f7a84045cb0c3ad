//! From single results to a state worth acting on: `fall` consecutive
//! failures before a check counts as failing, `rise` consecutive passes
//! before it counts as passing again, and flap detection.
//!
//! Flap detection follows Nagios: over the last 21 results, each change
//! between consecutive results is weighted from 0.8 (oldest) to 1.2
//! (newest); the weighted share of changes, in percent, starts flapping
//! above the high threshold and stops below the low one.
//!
//! For convergence, OK and WARNING pass and CRITICAL fails; UNKNOWN (the
//! check could not tell) moves neither way and resets both streaks.

use std::collections::VecDeque;

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
    flapping: bool,
    flap_percent: f64,
}

/// What one result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state_changed: bool,
    pub flapping_started: bool,
    pub flapping_stopped: bool,
}

impl CheckTracker {
    pub fn new(fall: u32, rise: u32, flap_low: f64, flap_high: f64, now_ms: u64) -> Self {
        CheckTracker {
            fall: fall.max(1),
            rise: rise.max(1),
            flap_low,
            flap_high,
            state: HardState::Pending,
            since_ms: now_ms,
            fails: 0,
            passes: 0,
            history: VecDeque::with_capacity(FLAP_HISTORY),
            flapping: false,
            flap_percent: 0.0,
        }
    }

    pub fn state(&self) -> HardState {
        self.state
    }
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }
    pub fn flapping(&self) -> bool {
        self.flapping
    }
    pub fn flap_percent(&self) -> f64 {
        self.flap_percent
    }

    /// Records one result.
    pub fn record(&mut self, status: Status, now_ms: u64) -> Transition {
        let before = (self.state, self.flapping);
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
            if !self.flapping && self.flap_percent > self.flap_high {
                self.flapping = true;
            } else if self.flapping && self.flap_percent < self.flap_low {
                self.flapping = false;
            }
        }
        Transition {
            state_changed: before.0 != self.state,
            flapping_started: !before.1 && self.flapping,
            flapping_stopped: before.1 && !self.flapping,
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
    use Status::*;

    #[test]
    fn fall_and_rise_need_consecutive_results() {
        let mut t = CheckTracker::new(2, 3, 20.0, 30.0, 0);
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
        let mut t = CheckTracker::new(1, 1, 20.0, 30.0, 0);
        t.record(Warning, 1);
        assert_eq!(t.state(), HardState::Passing);
        t.record(Unknown, 2);
        assert_eq!(t.state(), HardState::Passing);
    }

    #[test]
    fn alternating_results_flap_and_steady_ones_stop_it() {
        let mut t = CheckTracker::new(1, 1, 20.0, 30.0, 0);
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
        let mut t = CheckTracker::new(1, 1, 20.0, 30.0, 0);
        for i in 0..30 {
            t.record(if i < 15 { Ok } else { Critical }, i);
        }
        assert!(!t.flapping());
        assert!(t.flap_percent() < 10.0);
    }
}
