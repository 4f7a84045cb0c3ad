//! Prometheus metrics of checks and escalations.

use std::time::Duration;

use gemba_checks::{CheckResult, HardState};

use crate::engine::JournalKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabel {
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone)]
pub struct EscalatorMetrics {
    status: Family<CheckLabels, Gauge>,
    failing: Family<CheckLabels, Gauge>,
    flapping: Family<CheckLabels, Gauge>,
    started: Counter,
    resolved: Counter,
    given_up: Counter,
    held: Family<ReasonLabel, Counter>,
    steps: Family<LevelLabel, Histogram>,
}

impl Default for EscalatorMetrics {
    fn default() -> Self {
        EscalatorMetrics {
            status: Family::default(),
            failing: Family::default(),
            flapping: Family::default(),
            started: Counter::default(),
            resolved: Counter::default(),
            given_up: Counter::default(),
            held: Family::default(),
            steps: Family::new_with_constructor(|| {
                Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1200.0, 3600.0])
            }),
        }
    }
}

impl EscalatorMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "gemba_check_status",
            "Last status of each check (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
            self.status.clone(),
        );
        r.register(
            "gemba_check_failing",
            "1 when the check is failing after fall/rise",
            self.failing.clone(),
        );
        r.register(
            "gemba_check_flapping",
            "1 when the check is flapping",
            self.flapping.clone(),
        );
        r.register(
            "gemba_escalations_started",
            "Escalations opened",
            self.started.clone(),
        );
        r.register(
            "gemba_escalations_resolved",
            "Escalations whose post-condition passed",
            self.resolved.clone(),
        );
        r.register(
            "gemba_escalations_given_up",
            "Escalations that ran out of budget and wait for a human",
            self.given_up.clone(),
        );
        r.register(
            "gemba_escalations_held",
            "Scopes held for a human, by reason (give-up, crash-loop, rate-limited, flapping)",
            self.held.clone(),
        );
        r.register(
            "gemba_escalation_step_duration_seconds",
            "Duration of escalation steps by level",
            self.steps.clone(),
        );
    }

    pub fn check(&self, r: &CheckResult) {
        let l = CheckLabels {
            check: r.check.clone(),
            scope: r.scope.to_string(),
        };
        self.status.get_or_create(&l).set(r.status.code() as i64);
        self.failing
            .get_or_create(&l)
            .set((r.state == HardState::Failing) as i64);
        self.flapping.get_or_create(&l).set(r.flapping as i64);
    }

    /// Drops the series of a result the engine forgot (its node left, or
    /// its check left the policy).
    pub fn forget_check(&self, check: &str, scope: &str) {
        let l = CheckLabels {
            check: check.to_string(),
            scope: scope.to_string(),
        };
        self.status.remove(&l);
        self.failing.remove(&l);
        self.flapping.remove(&l);
    }

    pub fn journal(&self, kind: JournalKind) {
        match kind {
            JournalKind::Decision => {
                self.started.inc();
            }
            JournalKind::Resolved => {
                self.resolved.inc();
            }
            JournalKind::GiveUp => {
                self.given_up.inc();
                self.held_for(kind.as_str());
            }
            _ => {}
        }
    }

    /// A scope was held for a human.
    pub fn held_for(&self, reason: &str) {
        self.held
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn step_duration(&self, level: u32, d: Duration) {
        self.steps
            .get_or_create(&LevelLabel {
                level: level.to_string(),
            })
            .observe(d.as_secs_f64());
    }
}
