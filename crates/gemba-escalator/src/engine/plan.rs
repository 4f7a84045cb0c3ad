//! The plan: what the engine would do for every scope now, in words.

use super::*;

impl Engine {
    /// What would happen now, scope by scope, and why.
    pub fn plan(&self, now: u64) -> Plan {
        let mut scopes: BTreeMap<Scope, ScopePlan> = BTreeMap::new();
        for (scope, ids) in &self.failing {
            let checks: Vec<FailingCheck> = ids
                .iter()
                .filter_map(|id| self.results.get(id))
                .map(|r| FailingCheck {
                    id: r.id(),
                    level: r.level.unwrap_or(0),
                    since_ms: r.since_ms,
                    output: r.output.clone(),
                    ignored: self.ignored(r, now),
                })
                .collect();
            // Flapping checks count here as in `tick`: they lead to a
            // hold, not to nothing.
            let level = checks
                .iter()
                .filter(|c| matches!(c.ignored, None | Some(Ignored::Flapping)))
                .map(|c| c.level)
                .min();
            let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
            let (status, at) = if let Some(e) = self.escalation_of(scope) {
                (escalation_status(e), None)
            } else if let Some(e) = self.covering_escalation(scope) {
                (
                    format!("folded into escalation {} of {}", e.id, e.scope),
                    None,
                )
            } else if level.is_none() {
                (
                    "no action: every failing check is stale or from an untrusted observer"
                        .to_string(),
                    None,
                )
            } else if let Some((until, why)) = self.deferred.get(scope) {
                (format!("deferred: {why}"), Some(*until))
            } else if let Some(w) = self.watches.get(scope) {
                match &w.noted {
                    Some((_, n)) => (n.clone(), None),
                    None if now < w.quiet_since + quiet => {
                        ("quiet period".to_string(), Some(w.quiet_since + quiet))
                    }
                    None => ("starts now".to_string(), Some(now)),
                }
            } else {
                (
                    "quiet period starts at the next tick".to_string(),
                    Some(now + quiet),
                )
            };
            let status = if self.policy.escalator.mode == Mode::Plan
                && !status.starts_with("plan mode")
                && level.is_some()
                && self.escalation_of(scope).is_none()
            {
                format!("{status} (plan mode: nothing will run)")
            } else {
                status
            };
            scopes.insert(
                scope.clone(),
                ScopePlan {
                    scope: scope.clone(),
                    checks,
                    level,
                    chain: level.map(|l| self.chain_names(l)).unwrap_or_default(),
                    status,
                    escalation: self.escalation_of(scope).map(|e| e.id),
                    at_ms: at,
                },
            );
        }
        for e in self.open.values() {
            scopes.entry(e.scope.clone()).or_insert_with(|| ScopePlan {
                scope: e.scope.clone(),
                checks: Vec::new(),
                level: Some(e.start_level),
                chain: self.chain_names(e.start_level),
                status: escalation_status(e),
                escalation: Some(e.id),
                at_ms: None,
            });
        }
        Plan {
            at_ms: now,
            mode: match self.policy.escalator.mode {
                Mode::Act => "act".into(),
                Mode::Plan => "plan".into(),
            },
            scopes: scopes.into_values().collect(),
        }
    }
}
