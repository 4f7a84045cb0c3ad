//! Running an escalation: steps, their outcomes, quiescence,
//! verification, retries and giving up.

use super::*;

impl Engine {
    pub(super) fn start_step(&mut self, id: u64, now: u64, fx: &mut Vec<Effect>) {
        let esc = self.open.get(&id).expect("escalation");
        let Some(&level) = esc.chain.get(esc.position) else {
            return;
        };
        let def = self.policy.level(level).cloned();
        let Some(def) = def else {
            return;
        };
        let esc = self.open.get_mut(&id).expect("escalation");
        esc.updated_ms = now;
        if def.approve && !esc.approved.contains(&level) {
            esc.phase = Phase::AwaitingApproval { level };
            let esc = esc.clone();
            let text = format!(
                "level {level} ({}) needs approval: `gemba approve {id}`",
                def.name
            );
            let n = self.notice(
                NoticeKind::ApprovalNeeded,
                Some(&esc),
                &esc.scope,
                now,
                text,
            );
            self.announce(fx, Some(&esc), &esc.scope, now, JournalKind::Approval, n);
            self.save(id, fx);
            return;
        }
        esc.phase = Phase::Running {
            level,
            started_ms: now,
        };
        esc.steps.push(StepRecord {
            attempt: esc.attempt,
            level,
            name: def.name.clone(),
            started_ms: now,
            finished_ms: None,
            outcome: None,
            output: String::new(),
        });
        let esc = esc.clone();
        self.journal(
            fx,
            Some(&esc),
            &esc.scope,
            now,
            JournalKind::StepStart,
            format!(
                "attempt {}: running level {level} ({})",
                esc.attempt, def.name
            ),
        );
        self.save(id, fx);
        fx.push(Effect::Run {
            id,
            attempt: esc.attempt,
            level,
        });
    }

    /// A step ended.
    pub fn step_done(
        &mut self,
        id: u64,
        level: u32,
        outcome: StepOutcome,
        output: String,
        now: u64,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(esc) = self.open.get_mut(&id) else {
            return fx;
        };
        let scope = esc.scope.clone();
        if let Some(step) = esc.unfinished_step(level) {
            step.finished_ms = Some(now);
            step.outcome = Some(outcome.clone());
            step.output = output;
            // Remembered once its outcome is known (a scope's escalation
            // record goes when it closes; its steps stay for notices).
            self.history
                .entry(scope)
                .or_default()
                .keep_step(id, step.clone());
        }
        esc.updated_ms = now;
        if !matches!(esc.phase, Phase::Running { level: l, .. } if l == level) {
            self.save(id, &mut fx);
            return fx;
        }
        let name = self
            .policy
            .level(level)
            .map(|l| l.name.clone())
            .unwrap_or_default();
        match outcome {
            StepOutcome::Succeeded | StepOutcome::NotRun(_) => {
                let quiesce = self
                    .policy
                    .level(level)
                    .map(|l| l.quiesce.as_millis() as u64)
                    .unwrap_or(0);
                let esc = self.open.get_mut(&id).expect("escalation");
                esc.phase = Phase::Quiescing {
                    level,
                    until_ms: now + quiesce,
                };
                let esc = esc.clone();
                self.journal(
                    &mut fx,
                    Some(&esc),
                    &esc.scope,
                    now,
                    JournalKind::StepEnd,
                    format!(
                        "level {level} ({name}) succeeded; quiescing {} s",
                        quiesce / 1000
                    ),
                );
                self.save(id, &mut fx);
            }
            StepOutcome::Failed(why) | StepOutcome::Interrupted(why) => {
                let text = format!("level {level} ({name}) failed: {why}");
                let esc = self.open.get(&id).expect("escalation").clone();
                let n = self.notice(
                    NoticeKind::StepFailed,
                    Some(&esc),
                    &esc.scope,
                    now,
                    text.clone(),
                );
                self.announce(
                    &mut fx,
                    Some(&esc),
                    &esc.scope,
                    now,
                    JournalKind::StepEnd,
                    n,
                );
                self.failed_attempt(id, now, text, &mut fx);
            }
        }
        fx
    }

    pub(super) fn failed_attempt(&mut self, id: u64, now: u64, why: String, fx: &mut Vec<Effect>) {
        let budget = self.policy.escalator.budget;
        let esc = self.open.get_mut(&id).expect("escalation");
        esc.updated_ms = now;
        if esc.attempt >= budget {
            esc.phase = Phase::Held { since_ms: now };
            esc.held_because = Some(format!("gave up after {} attempt(s): {why}", esc.attempt));
            let esc = esc.clone();
            let text = format!("gave up after {} attempt(s) ({why}); {} is held until acknowledged: `gemba ack {}`", esc.attempt, esc.scope, esc.scope);
            let n = self.detailed_notice(
                NoticeKind::GaveUp,
                Some(&esc),
                &esc.scope,
                &esc.checks,
                esc.opened_ms,
                now,
                text,
                format!(
                    "nothing runs for {} until a human acknowledges it",
                    esc.scope
                ),
            );
            self.announce(fx, Some(&esc), &esc.scope, now, JournalKind::GiveUp, n);
            self.save(id, fx);
            return;
        }
        let backoff =
            self.policy.escalator.backoff.as_millis() as u64 * (1u64 << (esc.attempt - 1).min(16));
        esc.attempt += 1;
        esc.approved.clear();
        if self.policy.escalator.climb {
            if let Some(up) = self.policy.more_fundamental(esc.start_level) {
                esc.start_level = up;
            }
        }
        esc.chain = self.policy.chain_from(esc.start_level);
        esc.position = 0;
        esc.phase = Phase::Backoff {
            until_ms: now + backoff,
        };
        let esc = esc.clone();
        let text = format!(
            "attempt {} of {budget} starts in {} s from level {} ({why})",
            esc.attempt,
            backoff / 1000,
            esc.start_level
        );
        self.journal(fx, Some(&esc), &esc.scope, now, JournalKind::Retry, text);
        self.save(id, fx);
    }

    pub(super) fn advance(&mut self, id: u64, now: u64, fx: &mut Vec<Effect>) {
        let Some(esc) = self.open.get(&id) else {
            return;
        };
        match esc.phase.clone() {
            Phase::Backoff { until_ms } if now >= until_ms => self.start_step(id, now, fx),
            Phase::Quiescing { until_ms, .. } if now >= until_ms => {
                let esc = self.open.get_mut(&id).expect("escalation");
                if esc.position + 1 < esc.chain.len() {
                    esc.position += 1;
                    self.start_step(id, now, fx);
                } else {
                    let interval = esc
                        .checks
                        .iter()
                        .filter_map(|c| self.results.get(c))
                        .map(|r| {
                            let rise = self.policy.check(&r.check).map(|c| c.rise).unwrap_or(1);
                            r.interval_ms * (rise as u64 + 1)
                        })
                        .max()
                        .unwrap_or(10_000);
                    let deadline =
                        now + interval * self.policy.escalator.stale_after_intervals as u64;
                    esc.phase = Phase::Verifying {
                        after_ms: now,
                        deadline_ms: deadline,
                    };
                    esc.updated_ms = now;
                    let esc = esc.clone();
                    self.journal(
                        fx,
                        Some(&esc),
                        &esc.scope,
                        now,
                        JournalKind::Verify,
                        format!(
                            "chain done; waiting for fresh results of {}",
                            esc.checks.join(", ")
                        ),
                    );
                    self.save(id, fx);
                    self.advance(id, now, fx);
                }
            }
            Phase::Verifying {
                after_ms,
                deadline_ms,
            } => {
                let checks = esc.checks.clone();
                let mut pending = false;
                let mut still = Vec::new();
                for c in &checks {
                    match self.results.get(c) {
                        Some(r) if r.at_ms > after_ms && r.state == HardState::Passing => {}
                        Some(r) if r.at_ms > after_ms && r.state == HardState::Failing => {
                            still.push(c.clone())
                        }
                        _ => pending = true,
                    }
                }
                if still.is_empty() && !pending {
                    let esc = self.open.get_mut(&id).expect("escalation");
                    esc.phase = Phase::Resolved { at_ms: now };
                    esc.updated_ms = now;
                    let esc = esc.clone();
                    let text = format!(
                        "{} passing again after attempt {}",
                        checks.join(", "),
                        esc.attempt
                    );
                    let n = self.notice(NoticeKind::Resolved, Some(&esc), &esc.scope, now, text);
                    self.announce(fx, Some(&esc), &esc.scope, now, JournalKind::Resolved, n);
                    self.save(id, fx);
                    fx.push(Effect::Release(esc.scope.clone()));
                    self.open.remove(&id);
                } else if !still.is_empty() && !pending || now >= deadline_ms {
                    let mut why = Vec::new();
                    if !still.is_empty() {
                        why.push(format!("still failing: {}", still.join(", ")));
                    }
                    if pending {
                        why.push("no fresh result for some checks before the deadline".to_string());
                    }
                    let text = format!("post-condition not met ({})", why.join("; "));
                    let esc = self.open.get(&id).expect("escalation").clone();
                    self.journal(
                        fx,
                        Some(&esc),
                        &esc.scope,
                        now,
                        JournalKind::Verify,
                        text.clone(),
                    );
                    self.failed_attempt(id, now, text, fx);
                }
            }
            _ => {}
        }
    }
}
