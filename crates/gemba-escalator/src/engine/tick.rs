//! The quiet period's end: crash loops, rate limits, what opens, what
//! waits and what is held; and the opening of escalations.

use super::*;

/// What the quiet period's end decides for a scope.
pub(super) enum Verdict {
    Open {
        level: u32,
        how: Opening,
    },
    /// Over `max_running`: wait for a free slot.
    Wait(String),
}

impl Engine {
    /// Whether `scope` is in a crash loop at `now`.
    pub(super) fn crash_loop(&self, scope: &Scope, now: u64) -> Option<CrashLoop> {
        let h = self.history.get(scope)?;
        let window = self.policy.escalator.crash_loop_window.as_millis() as u64;
        let from = (now.saturating_sub(window) + 1).max(h.forgiven_ms);
        let episodes: Vec<u64> = h.episodes.iter().copied().filter(|t| *t >= from).collect();
        if episodes.len() < self.policy.escalator.crash_loop_failures as usize {
            return None;
        }
        let mut runs: Vec<(u32, String, usize)> = Vec::new();
        for (_, st) in h.steps.iter().filter(|(_, st)| st.started_ms >= from) {
            match runs.iter_mut().find(|(l, _, _)| *l == st.level) {
                Some(r) => r.2 += 1,
                None => runs.push((st.level, st.name.clone(), 1)),
            }
        }
        runs.sort();
        Some(CrashLoop {
            failures: episodes.len(),
            span_ms: now.saturating_sub(episodes[0]),
            runs,
            deepest: h
                .opened
                .iter()
                .filter(|(t, _)| *t >= from)
                .map(|(_, l)| *l)
                .min(),
        })
    }

    /// Escalations of `scope` opened within the last hour (since its last
    /// acknowledgement).
    pub(super) fn opened_last_hour(&self, scope: &Scope, now: u64) -> Vec<u64> {
        self.history
            .get(scope)
            .map(|h| {
                h.opened
                    .iter()
                    .map(|(t, _)| *t)
                    .filter(|t| now < t + HOUR_MS && *t >= h.forgiven_ms)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What to do with `scope` now that its quiet period is over.
    pub(super) fn verdict(
        &self,
        scope: &Scope,
        level: u32,
        checks: &[String],
        counted: bool,
        now: u64,
    ) -> Verdict {
        let esc = &self.policy.escalator;
        let hour = self.opened_last_hour(scope, now);
        let hour_limited = hour.len() >= esc.max_per_scope_per_hour as usize;
        if let Some(cl) = self.crash_loop(scope, now) {
            let base = cl.deepest.map_or(level, |d| d.min(level));
            let up = self.policy.more_fundamental(base);
            if let (true, true, false, Some(up)) = (esc.climb, counted, hour_limited, up) {
                return Verdict::Open {
                    level: up,
                    how: Opening::Climb {
                        why: format!(
                            "{}; climbing to level {}",
                            cl.describe(),
                            self.chain_names(up).first().cloned().unwrap_or_default()
                        ),
                    },
                };
            }
            let why = match (esc.climb, up, counted, hour_limited) {
                (false, ..) => cl.describe(),
                (true, None, ..) => format!(
                    "{}; no more fundamental level is left to climb to",
                    cl.describe()
                ),
                (true, Some(_), false, _) => format!(
                    "{}; its failing checks flap, and flapping checks never trigger actions",
                    cl.describe()
                ),
                (true, Some(_), true, _) => format!(
                    "{}; climbing would pass the limit of {} escalations per hour",
                    cl.describe(),
                    esc.max_per_scope_per_hour
                ),
            };
            return Verdict::Open {
                level,
                how: Opening::Hold {
                    kind: NoticeKind::CrashLoop,
                    why,
                },
            };
        }
        if !counted {
            let why: Vec<String> = checks
                .iter()
                .filter_map(|id| self.results.get(id))
                .map(|r| {
                    format!(
                        "{} is flapping ({:.0} % weighted state change, {} state changes within its flap window)",
                        r.id(),
                        r.flap_percent,
                        r.flap_changes
                    )
                })
                .collect();
            return Verdict::Open {
                level,
                how: Opening::Hold {
                    kind: NoticeKind::Flapping,
                    why: format!(
                        "{}; it still fails after the quiet period, and flapping checks never trigger actions",
                        why.join("; ")
                    ),
                },
            };
        }
        let decision = format!(
            "levels {} for {}",
            self.chain_names(level).join(" → "),
            checks.join(", ")
        );
        if hour_limited {
            let until = hour.iter().min().copied().unwrap_or(now) + HOUR_MS;
            return Verdict::Open {
                level,
                how: Opening::Hold {
                    kind: NoticeKind::RateLimited,
                    why: format!(
                        "rate limit: {} escalations of {scope} in the last hour (max {}); would run {decision}; the limit alone would allow the next one {} from now",
                        hour.len(),
                        esc.max_per_scope_per_hour,
                        span_words(until.saturating_sub(now))
                    ),
                },
            };
        }
        let running = self.running_count();
        if running >= esc.max_running as usize {
            return Verdict::Wait(format!(
                "rate limit: {running} escalations running (max {}); {scope} waits to run {decision}",
                esc.max_running
            ));
        }
        Verdict::Open {
            level,
            how: Opening::Run,
        }
    }

    /// Journals a decision that ran nothing once per episode (by kind),
    /// with `notice` sent the first time; keeps its words for the plan.
    pub(super) fn note(
        &mut self,
        fx: &mut Vec<Effect>,
        scope: &Scope,
        now: u64,
        kind: JournalKind,
        text: String,
        notice: Option<Notice>,
    ) {
        let w = self.watches.get_mut(scope).expect("watch");
        let first = w.noted.as_ref().map(|(k, _)| *k) != Some(kind);
        w.noted = Some((kind, text.clone()));
        if first {
            self.journal(fx, None, scope, now, kind, text);
            if let Some(n) = notice {
                fx.push(Effect::Notify(n));
            }
        }
    }

    /// Advances time: quiet periods, quiescence, verification, backoff.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.started_ms.get_or_insert(now);
        self.deferred.retain(|_, (until, _)| *until > now);
        let keep = HOUR_MS.max(self.policy.escalator.crash_loop_window.as_millis() as u64);
        for h in self.history.values_mut() {
            h.prune(now.saturating_sub(keep));
        }
        self.history.retain(|_, h| !h.is_idle());

        // Scopes with failures that count.
        let scopes: Vec<Scope> = self.failing.keys().cloned().collect();
        let mut live_watches = BTreeSet::new();
        for scope in scopes {
            let candidates = self.candidates(&scope, now);
            if candidates.is_empty() || self.escalation_of(&scope).is_some() {
                continue;
            }
            let acked = self.history.get(&scope).is_some_and(|h| h.acked);
            let counted: Vec<(String, u32)> = candidates
                .iter()
                .filter(|c| !c.2 || acked)
                .map(|c| (c.0.clone(), c.1))
                .collect();
            // Flapping checks never act; when they alone fail past the
            // quiet period the scope is held for a human (as a crash loop
            // if it is one).
            let acting: Vec<(String, u32)> = if counted.is_empty() {
                candidates.iter().map(|c| (c.0.clone(), c.1)).collect()
            } else {
                counted.clone()
            };
            if let Some(cover) = self.covering_escalation(&scope).map(|e| e.id) {
                let esc = self.open.get_mut(&cover).expect("covering escalation");
                if !esc.folded.contains(&scope) {
                    esc.folded.push(scope.clone());
                    esc.updated_ms = now;
                    let esc = esc.clone();
                    self.journal(&mut fx, Some(&esc), &scope, now, JournalKind::Folded, format!("{scope} is failing too; it folds into escalation {} of the broader scope {}", esc.id, esc.scope));
                    self.save(cover, &mut fx);
                }
                continue;
            }
            live_watches.insert(scope.clone());
            if self.deferred.contains_key(&scope) {
                continue;
            }
            let level = acting.iter().map(|(_, l)| *l).min().expect("non-empty");
            let checks: Vec<String> = acting.iter().map(|(id, _)| id.clone()).collect();
            let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
            if !self.watches.contains_key(&scope) {
                // The quiet period runs from when the first of these checks
                // started failing, but never from before this engine
                // started: after a restart the picture settles afresh.
                let first = acting
                    .iter()
                    .filter_map(|(id, _)| self.results.get(id).map(|r| r.since_ms))
                    .min()
                    .unwrap_or(now);
                let quiet_since = first.max(self.started_ms.unwrap_or(now)).min(now);
                self.watches.insert(
                    scope.clone(),
                    Watch {
                        quiet_since,
                        noted: None,
                    },
                );
                let text = format!(
                    "{} failing; quiet period of {} s before deciding",
                    checks.join(", "),
                    quiet / 1000
                );
                self.journal(&mut fx, None, &scope, quiet_since, JournalKind::Quiet, text);
            }
            let watch = self.watches.get(&scope).expect("watch");
            if now < watch.quiet_since + quiet {
                continue;
            }
            let verdict = self.verdict(&scope, level, &checks, !counted.is_empty(), now);
            if self.policy.escalator.mode == Mode::Plan {
                let text = match &verdict {
                    Verdict::Open {
                        level,
                        how: Opening::Run,
                    } => format!(
                        "plan mode: would run levels {} for {}",
                        self.chain_names(*level).join(" → "),
                        checks.join(", ")
                    ),
                    Verdict::Open {
                        level,
                        how: Opening::Climb { why },
                    } => format!(
                        "plan mode: {why}; would run levels {}",
                        self.chain_names(*level).join(" → ")
                    ),
                    Verdict::Open {
                        how: Opening::Hold { why, .. },
                        ..
                    } => {
                        format!("plan mode: {why}; would hold {scope} for a human")
                    }
                    Verdict::Wait(why) => format!("plan mode: {why}"),
                };
                self.note(&mut fx, &scope, now, JournalKind::Plan, text, None);
                continue;
            }
            match verdict {
                Verdict::Open { level, how } => fx.push(Effect::Open(OpenRequest {
                    scope,
                    level,
                    checks,
                    how,
                })),
                Verdict::Wait(why) => {
                    let n = self.detailed_notice(
                        NoticeKind::RateLimited,
                        None,
                        &scope,
                        &checks,
                        now,
                        now,
                        why.clone(),
                        "it runs as soon as one of the running escalations ends".into(),
                    );
                    self.note(&mut fx, &scope, now, JournalKind::RateLimited, why, Some(n));
                }
            }
        }
        let settled: Vec<Scope> = self
            .watches
            .keys()
            .filter(|s| !live_watches.contains(*s))
            .cloned()
            .collect();
        let quiet = self.policy.escalator.quiet_period.as_millis() as u64;
        for scope in settled {
            let w = self.watches.remove(&scope).expect("watch");
            if !self.candidates(&scope, now).is_empty() {
                // Folded into a broader escalation, or only flapping now.
                continue;
            }
            let text = match &w.noted {
                Some((_, why)) => format!(
                    "passing again after {}; nothing ran ({why})",
                    span_words(now.saturating_sub(w.quiet_since))
                ),
                None if now < w.quiet_since + quiet => {
                    "passing again within the quiet period; nothing runs".to_string()
                }
                None => format!(
                    "passing again after {}; nothing ran",
                    span_words(now.saturating_sub(w.quiet_since))
                ),
            };
            self.journal(&mut fx, None, &scope, now, JournalKind::Recovered, text);
        }

        // Open escalations.
        let ids: Vec<u64> = self.open.keys().copied().collect();
        for id in ids {
            self.advance(id, now, &mut fx);
        }
        fx
    }

    /// The caller opened the escalation the engine asked for.
    pub fn opened(&mut self, id: u64, req: OpenRequest, now: u64) -> Vec<Effect> {
        let OpenRequest {
            scope,
            level,
            checks,
            how,
        } = req;
        let mut fx = Vec::new();
        self.watches.remove(&scope);
        let chain = self.policy.chain_from(level);
        let mut esc = Escalation {
            id,
            scope: scope.clone(),
            phase: Phase::Backoff { until_ms: now },
            opened_ms: now,
            updated_ms: now,
            checks: checks.clone(),
            start_level: level,
            chain,
            position: 0,
            attempt: 1,
            steps: Vec::new(),
            folded: Vec::new(),
            approved: Vec::new(),
            held_because: None,
        };
        if let Opening::Hold { kind, why } = how {
            if let Some(h) = self.history.get_mut(&scope) {
                h.acked = false;
            }
            esc.phase = Phase::Held { since_ms: now };
            esc.held_because = Some(why.clone());
            let since = now.saturating_sub(
                HOUR_MS.max(self.policy.escalator.crash_loop_window.as_millis() as u64),
            );
            let text = format!("{why}; {scope} is held until acknowledged: `gemba ack {scope}`");
            let n = self.detailed_notice(
                kind,
                Some(&esc),
                &scope,
                &checks,
                since,
                now,
                text,
                format!(
                    "nothing runs for {scope} until a human acknowledges it; then it may escalate again with its counts started afresh"
                ),
            );
            self.announce(&mut fx, Some(&esc), &scope, now, kind.into(), n);
            self.open.insert(id, esc);
            self.save(id, &mut fx);
            return fx;
        }
        self.history
            .entry(scope.clone())
            .or_default()
            .opened
            .push((now, level));
        let text = format!(
            "opened: {} failing after the quiet period; running levels {}",
            checks.join(", "),
            self.chain_names(level).join(" → ")
        );
        if let Opening::Climb { why } = how {
            let n = self.detailed_notice(
                NoticeKind::CrashLoop,
                Some(&esc),
                &scope,
                &checks,
                now.saturating_sub(self.policy.escalator.crash_loop_window.as_millis() as u64),
                now,
                why.clone(),
                format!("running levels {}", self.chain_names(level).join(" → ")),
            );
            self.announce(&mut fx, Some(&esc), &scope, now, JournalKind::CrashLoop, n);
        }
        self.journal(
            &mut fx,
            Some(&esc),
            &scope,
            now,
            JournalKind::Decision,
            text,
        );
        // Narrower escalations of this scope fold into it.
        let narrower: Vec<u64> = self
            .open
            .values()
            .filter(|e| !e.phase.closed() && self.covers(&scope, &e.scope))
            .map(|e| e.id)
            .collect();
        self.open.insert(id, esc);
        for n in narrower {
            let e = self.open.get_mut(&n).expect("narrower");
            e.phase = Phase::Superseded { by: id };
            e.updated_ms = now;
            let e = e.clone();
            self.open
                .get_mut(&id)
                .expect("new")
                .folded
                .push(e.scope.clone());
            self.journal(
                &mut fx,
                Some(&e),
                &e.scope,
                now,
                JournalKind::Superseded,
                format!("superseded by escalation {id} of the broader scope {scope}"),
            );
            self.save(n, &mut fx);
            fx.push(Effect::Release(e.scope.clone()));
            self.open.remove(&n);
        }
        self.start_step(id, now, &mut fx);
        fx
    }

    /// The caller could not open an escalation for `scope` (another server
    /// holds its lease, or the store failed): try again after `until`.
    pub fn deferred(&mut self, scope: Scope, until: u64, reason: String, now: u64) -> Vec<Effect> {
        // (A held opening that could not be stored is decided again after
        // the deferral, and says so then.)
        let mut fx = Vec::new();
        let new = self
            .deferred
            .get(&scope)
            .map(|(_, r)| r != &reason)
            .unwrap_or(true);
        if new {
            self.journal(
                &mut fx,
                None,
                &scope,
                now,
                JournalKind::Deferred,
                reason.clone(),
            );
        }
        self.deferred.insert(scope.clone(), (until, reason));
        // A fresh quiet period when it comes back: the other holder may have
        // converged it meanwhile.
        self.watches.remove(&scope);
        fx
    }
}
