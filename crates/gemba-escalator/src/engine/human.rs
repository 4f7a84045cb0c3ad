//! What people and other servers do to escalations: approve a step,
//! acknowledge a held scope, and hand escalations between servers.

use super::*;

impl Engine {
    /// A human approves the pending step of escalation `id`.
    pub fn approve(&mut self, id: u64, who: &str, now: u64) -> Result<Vec<Effect>, EngineError> {
        let esc = self
            .open
            .get_mut(&id)
            .ok_or(EngineError::NoSuchEscalation(id))?;
        let Phase::AwaitingApproval { level } = esc.phase else {
            return Err(EngineError::NotAwaitingApproval {
                id,
                phase: esc.phase.name(),
            });
        };
        esc.approved.push(level);
        let esc = esc.clone();
        let mut fx = Vec::new();
        self.journal(
            &mut fx,
            Some(&esc),
            &esc.scope,
            now,
            JournalKind::Approved,
            format!("level {level} approved by {who}"),
        );
        self.start_step(id, now, &mut fx);
        Ok(fx)
    }

    /// A human acknowledges a held scope: the escalation closes and the
    /// scope may escalate again (after a new quiet period).
    pub fn ack(
        &mut self,
        scope: &Scope,
        who: &str,
        now: u64,
    ) -> Result<(u64, Vec<Effect>), EngineError> {
        let id = self
            .open
            .values()
            .find(|e| &e.scope == scope && matches!(e.phase, Phase::Held { .. }))
            .map(|e| e.id)
            .ok_or_else(|| EngineError::NotHeld(scope.clone()))?;
        let esc = self.open.get_mut(&id).expect("held");
        esc.phase = Phase::Acknowledged { at_ms: now };
        esc.updated_ms = now;
        let esc = esc.clone();
        let h = self.history.entry(scope.clone()).or_default();
        h.forgive(now);
        h.acked = true;
        let mut fx = Vec::new();
        self.journal(
            &mut fx,
            Some(&esc),
            scope,
            now,
            JournalKind::Acknowledged,
            format!("acknowledged by {who}; {scope} may escalate again (rate limit and crash-loop counts start afresh)"),
        );
        self.save(id, &mut fx);
        fx.push(Effect::Release(scope.clone()));
        self.open.remove(&id);
        Ok((id, fx))
    }

    /// Takes over an escalation from the store (after a restart, or from a
    /// server whose lease expired). A step that was running has an unknown
    /// outcome: it is not re-run; the post-condition decides.
    pub fn adopt(&mut self, mut esc: Escalation, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        if esc.phase.closed() {
            self.remember(&esc);
            return fx;
        }
        let id = esc.id;
        if let Phase::Running { level, .. } = esc.phase {
            if let Some(step) = esc.unfinished_step(level) {
                step.finished_ms = Some(now);
                step.outcome = Some(StepOutcome::Interrupted(
                    "the server running it stopped before it reported".into(),
                ));
            }
            // The step may have ended just now: it gets its level's time
            // to settle, as after any step, before the checks judge it.
            let quiesce = self
                .policy
                .level(level)
                .map(|l| l.quiesce.as_millis() as u64)
                .unwrap_or(0);
            esc.phase = Phase::Verifying {
                after_ms: now + quiesce,
                deadline_ms: now + quiesce + 3 * 60_000,
            };
            esc.updated_ms = now;
            self.journal(&mut fx, Some(&esc), &esc.scope, now, JournalKind::Adopted, format!("taken over while level {level} was running; its outcome is unknown, so it is not re-run: verifying the checks instead"));
        } else {
            self.journal(
                &mut fx,
                Some(&esc),
                &esc.scope,
                now,
                JournalKind::Adopted,
                format!("taken over in phase {}", esc.phase.name()),
            );
        }
        // After an interrupted step got its outcome, so it is remembered.
        self.remember(&esc);
        self.watches.remove(&esc.scope);
        self.open.insert(id, esc);
        self.save(id, &mut fx);
        fx
    }

    /// Stops managing escalation `id` (its lease went to another server).
    pub fn relinquish(&mut self, id: u64) -> Option<Escalation> {
        self.open.remove(&id)
    }

    /// Takes an escalation from the store into the scope's history (rate
    /// limit, crash loop, what ran): after a restart, or one another
    /// server runs. An acknowledgement forgives what came before it.
    pub fn remember(&mut self, esc: &Escalation) {
        let h = self.history.entry(esc.scope.clone()).or_default();
        if let Phase::Acknowledged { at_ms } = esc.phase {
            h.forgive(at_ms);
        }
        if esc.steps.is_empty() || esc.opened_ms < h.forgiven_ms {
            return;
        }
        if !h.opened.iter().any(|(t, _)| *t == esc.opened_ms) {
            h.opened.push((esc.opened_ms, esc.start_level));
            h.opened.sort();
            // Each escalation began with a failure episode; the episodes
            // themselves are not stored.
            if !h.episodes.contains(&esc.opened_ms) {
                h.episodes.push(esc.opened_ms);
                h.episodes.sort();
            }
        }
        for st in esc.steps.iter().filter(|st| st.outcome.is_some()) {
            if !h
                .steps
                .iter()
                .any(|(i, s)| *i == esc.id && s.started_ms == st.started_ms && s.level == st.level)
            {
                h.keep_step(esc.id, st.clone());
            }
        }
    }
}
