//! Carrying out the engine's effects against the store (journal, records,
//! step claims) and starting steps as processes.

use super::*;

impl Service {
    pub(super) async fn apply(&mut self, fx: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = fx.into();
        while let Some(f) = queue.pop_front() {
            let now = self.clock.now_ms();
            match f {
                Effect::Open(req) => {
                    let scope = req.scope.clone();
                    let key = scope.to_string();
                    if let Some(why) = self.clock_watch.refusal() {
                        queue.extend(
                            self.engine
                                .deferred(scope, now + self.lease_ttl(), why, now),
                        );
                        continue;
                    }
                    match self
                        .store
                        .acquire_lease(&key, &self.holder, now, self.lease_ttl())
                        .await
                    {
                        Ok(Some(fence)) => {
                            self.fences.insert(key.clone(), fence);
                            // A server that died left an escalation open
                            // here: carry it on (its steps are not run again)
                            // rather than open a second one.
                            if let Some(orphan) = self.orphan_on(&key).await {
                                tracing::info!(escalation = orphan.id, scope = %key, "adopting escalation left open instead of opening another");
                                queue.extend(self.engine.adopt(orphan, now));
                                continue;
                            }
                            match self.store.next_escalation_id().await {
                                Ok(id) => queue.extend(self.engine.opened(id, req, now)),
                                Err(e) => queue.extend(self.engine.deferred(
                                    scope,
                                    now + self.lease_ttl(),
                                    format!("store error: {e}"),
                                    now,
                                )),
                            }
                        }
                        Ok(None) => {
                            let holder = self
                                .store
                                .lease_holder(&key, now)
                                .await
                                .ok()
                                .flatten()
                                .unwrap_or_else(|| "another server".into());
                            queue.extend(self.engine.deferred(
                                scope,
                                now + self.lease_ttl(),
                                format!("server {holder} holds the lease on {key}"),
                                now,
                            ));
                        }
                        Err(e) => queue.extend(self.engine.deferred(
                            scope,
                            now + self.lease_ttl(),
                            format!("store error: {e}"),
                            now,
                        )),
                    }
                }
                Effect::Run { id, attempt, level } => {
                    let Some(fence) = self.fence_of(id) else {
                        continue;
                    };
                    // The lease is renewed first, so that the step starts
                    // with a whole term ahead of it; the store then checks,
                    // on its own clock, that at least the step's grace is
                    // left.
                    let fence = match self
                        .store
                        .acquire_lease(&fence.scope, &self.holder, now, self.lease_ttl())
                        .await
                    {
                        Ok(Some(renewed)) if renewed.token == fence.token => {
                            self.fences.insert(renewed.scope.clone(), renewed.clone());
                            renewed
                        }
                        Ok(_) => {
                            self.lost(id, &fence.scope);
                            queue.retain(|f| !touches(f, id, &fence.scope));
                            continue;
                        }
                        // The claim below meets the same store error.
                        Err(_) => fence,
                    };
                    match self
                        .store
                        .claim_step(&fence, id, attempt, level, now, self.claim_grace())
                        .await
                    {
                        Ok(Claim::Claimed) => self.start_step(id, attempt, level),
                        Ok(Claim::Short) => queue.extend(self.engine.step_done(
                            id,
                            level,
                            StepOutcome::NotRun(
                                "the lease, on the store's clock, had less than the step's grace left: not started"
                                    .into(),
                            ),
                            String::new(),
                            now,
                        )),
                        Ok(Claim::Taken) => queue.extend(self.engine.step_done(
                            id,
                            level,
                            StepOutcome::NotRun("another server already ran this step".into()),
                            String::new(),
                            now,
                        )),
                        Ok(Claim::Fenced) => {
                            self.lost(id, &fence.scope);
                            queue.retain(|f| !touches(f, id, &fence.scope));
                        }
                        Err(e) => queue.extend(self.engine.step_done(
                            id,
                            level,
                            StepOutcome::Failed(format!("cannot claim the step in the store: {e}")),
                            String::new(),
                            now,
                        )),
                    }
                }
                Effect::Save(esc) => {
                    let row = esc.row();
                    let Some(fence) = self.fences.get(&row.scope).cloned() else {
                        tracing::error!(escalation = esc.id, scope = %row.scope, "no lease on the scope; the record is not saved");
                        continue;
                    };
                    match self.store.save_escalation(row, Some(&fence)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let scope = esc.scope.to_string();
                            self.lost(esc.id, &scope);
                            queue.retain(|f| !touches(f, esc.id, &scope));
                        }
                        Err(e) => {
                            tracing::error!(escalation = esc.id, error = %e, "cannot save escalation")
                        }
                    }
                }
                Effect::Journal(e) => {
                    self.metrics.journal(e.kind);
                    let row = JournalRow {
                        seq: 0,
                        escalation: e.escalation,
                        scope: e.scope.to_string(),
                        at_ms: e.at_ms,
                        kind: e.kind.as_str().to_string(),
                        text: e.text,
                        server: self.holder.clone(),
                    };
                    self.append_journal(row).await;
                }
                Effect::Notify(n) => {
                    // A notice with an ack command is a hold's, sent once
                    // (give-ups are counted from the journal).
                    if n.ack.is_some() && n.kind != crate::engine::NoticeKind::GaveUp {
                        self.metrics.held_for(n.kind.as_str());
                    }
                    if let Some(tx) = &self.notices {
                        if let Err(e) = tx.try_send(n) {
                            tracing::error!(error = %e, "the outbox is not taking notices");
                        }
                    }
                }
                Effect::Release(scope) => {
                    self.fences.remove(&scope.to_string());
                    if let Err(e) = self
                        .store
                        .release_lease(&scope.to_string(), &self.holder)
                        .await
                    {
                        tracing::warn!(scope = %scope, error = %e, "cannot release the lease");
                    }
                }
            }
        }
    }

    pub(super) fn start_step(&mut self, id: u64, attempt: u32, level: u32) {
        let Some(esc) = self.engine.escalation(id) else {
            return;
        };
        let Some(def) = self.policy.level(level).cloned() else {
            return;
        };
        let dir = self.directory.borrow().clone();
        let (node, tier) = match &esc.scope {
            Scope::Node(n) => (
                n.clone(),
                dir.get(n).map(|i| i.tiers.join(",")).unwrap_or_default(),
            ),
            Scope::Tier(t) => (String::new(), t.clone()),
            Scope::Global => (String::new(), String::new()),
        };
        let node_addr = dir.get(&node).map(|i| i.addr.clone()).unwrap_or_default();
        let scope = esc.scope.to_string();
        let level_s = level.to_string();
        let vars = [
            ("node", node.as_str()),
            ("node_addr", node_addr.as_str()),
            ("tier", tier.as_str()),
            ("scope", scope.as_str()),
            ("level", level_s.as_str()),
        ];
        let argv: Vec<String> = if def.shell {
            vec!["/bin/sh".into(), "-c".into(), def.run.join(" ")]
        } else {
            def.run.iter().map(|a| template::render(a, &vars)).collect()
        };
        let checks: Vec<String> = esc.checks.clone();
        let env = vec![
            ("GEMBA_LEVEL".to_string(), level_s.clone()),
            ("GEMBA_LEVEL_NAME".to_string(), def.name.clone()),
            ("GEMBA_SCOPE_KIND".to_string(), esc.scope.kind().to_string()),
            ("GEMBA_SCOPE".to_string(), scope.clone()),
            ("GEMBA_NODE".to_string(), node.clone()),
            ("GEMBA_NODE_ADDR".to_string(), node_addr.clone()),
            ("GEMBA_TIER".to_string(), tier.clone()),
            ("GEMBA_FAILING_CHECKS".to_string(), checks.join(",")),
            ("GEMBA_ESCALATION_ID".to_string(), id.to_string()),
            ("GEMBA_ATTEMPT".to_string(), attempt.to_string()),
            ("GEMBA_SERVER".to_string(), self.holder.clone()),
        ];
        // A step that names the node's address runs only with one the node
        // proved (a server never acts on an address a node merely claims).
        let names_addr = def.run.iter().any(|a| a.contains("{node_addr}"));
        if matches!(esc.scope, Scope::Node(_)) && names_addr && node_addr.is_empty() {
            let why = format!(
                "not run: {node} has not proved its address to this server (a signed presence from it), and the step names {{node_addr}}"
            );
            tracing::warn!(escalation = id, level, "{why}");
            let task = self.steps.spawn(async move {
                (
                    id,
                    level,
                    StepOutcome::Failed(why.clone()),
                    why,
                    Duration::ZERO,
                )
            });
            self.step_tasks
                .insert(task.id(), (id, level, tokio::time::Instant::now()));
            return;
        }
        tracing::info!(escalation = id, level, argv = ?argv, "running step");
        let spec = ExecSpec {
            argv,
            env,
            timeout: def.timeout,
            stdin: None,
        };
        let run = self.run_step.clone();
        let span = tracing::info_span!("step", escalation = id, level, scope = %scope);
        let task = self.steps.spawn(
            async move {
                let o = run(spec).await;
                let outcome = if o.success() {
                    StepOutcome::Succeeded
                } else {
                    StepOutcome::Failed(o.describe_end())
                };
                (id, level, outcome, o.combined(), o.duration)
            }
            .instrument(span),
        );
        self.step_tasks
            .insert(task.id(), (id, level, tokio::time::Instant::now()));
    }
}
