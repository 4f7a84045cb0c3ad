//! Who manages an escalation: recovering after a start, adopting what an
//! expired holder left open, renewing leases, and letting go when another
//! server took a lease over.

use super::*;

impl Service {
    /// Explains an escalation this server does not manage.
    pub(super) async fn elsewhere(&self, id: u64, fallback: String) -> String {
        let Ok(Some(row)) = self.store.escalation(id).await else {
            return fallback;
        };
        if !row.open {
            return format!("escalation {id} is {}", row.phase);
        }
        match self
            .store
            .lease_holder(&row.scope, self.clock.now_ms())
            .await
        {
            Ok(Some(h)) if h != self.holder => {
                format!("escalation {id} is handled by server {h}; ask it")
            }
            _ => fallback,
        }
    }

    /// After a start: rate-limit history and the escalations this server
    /// (or an expired holder) left open.
    pub(super) async fn recover(&mut self) {
        let now = self.clock.now_ms();
        let rows = match self.store.opened_since(now.saturating_sub(3_600_000)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read escalations from the store");
                return;
            }
        };
        for row in rows {
            let Some(esc) = parse_row(&row) else { continue };
            if row.open {
                self.try_adopt(esc).await;
            } else {
                self.engine.remember(&esc);
            }
        }
    }

    pub(super) async fn try_adopt(&mut self, esc: Escalation) {
        let now = self.clock.now_ms();
        let scope = esc.scope.to_string();
        // A server whose clock is off takes no new lease, adopted or not.
        if self.clock_watch.refusal().is_some() {
            self.engine.remember(&esc);
            return;
        }
        match self
            .store
            .acquire_lease(&scope, &self.holder, now, self.lease_ttl())
            .await
        {
            Ok(Some(fence)) => {
                tracing::info!(escalation = esc.id, scope = %scope, fence = fence.token, "adopting escalation");
                self.fences.insert(scope, fence);
                let fx = self.engine.adopt(esc, now);
                self.apply(fx).await;
            }
            Ok(None) => self.engine.remember(&esc),
            Err(e) => tracing::warn!(scope = %scope, error = %e, "cannot take the lease"),
        }
    }

    pub(super) async fn adopt_orphans(&mut self) {
        let Ok(rows) = self.store.escalations(0).await else {
            return;
        };
        for row in rows.into_iter().filter(|r| r.open) {
            if self.engine.escalation(row.id).is_some() {
                continue;
            }
            if let Some(esc) = parse_row(&row) {
                let now = self.clock.now_ms();
                if let Ok(None) = self.store.lease_holder(&row.scope, now).await {
                    self.try_adopt(esc).await;
                }
            }
        }
    }

    pub(super) async fn renew_leases(&mut self) {
        let now = self.clock.now_ms();
        let mine: Vec<(u64, String)> = self
            .engine
            .open_escalations()
            .map(|e| (e.id, e.scope.to_string()))
            .collect();
        for (id, scope) in mine {
            match self
                .store
                .acquire_lease(&scope, &self.holder, now, self.lease_ttl())
                .await
            {
                Ok(Some(fence)) => {
                    if self
                        .fences
                        .get(&scope)
                        .is_some_and(|f| f.token != fence.token)
                    {
                        // The lease lapsed (a pause, the store out of reach)
                        // and this is a new term: someone may have acted in
                        // between, so the record is re-read and verified.
                        tracing::warn!(escalation = id, scope = %scope, "the lease lapsed before it was renewed; taking the escalation over afresh");
                        self.fences.insert(scope.clone(), fence);
                        self.engine.relinquish(id);
                        self.readopt(id, &scope).await;
                    } else {
                        self.fences.insert(scope, fence);
                    }
                }
                Ok(None) => self.lost(id, &scope),
                Err(e) => tracing::warn!(scope = %scope, error = %e, "cannot renew the lease"),
            }
        }
    }

    /// An open escalation on `scope` in the store that this server does
    /// not manage.
    pub(super) async fn orphan_on(&self, scope: &str) -> Option<Escalation> {
        let rows = match self.store.escalations(0).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(scope = %scope, error = %e, "cannot read open escalations");
                return None;
            }
        };
        rows.iter()
            .filter(|r| r.open && r.scope == scope && self.engine.escalation(r.id).is_none())
            .find_map(parse_row)
    }

    /// The fence of the lease under which escalation `id` is managed.
    pub(super) fn fence_of(&self, id: u64) -> Option<Fence> {
        let esc = self.engine.escalation(id)?;
        let fence = self.fences.get(&esc.scope.to_string()).cloned();
        if fence.is_none() {
            tracing::error!(escalation = id, scope = %esc.scope, "no lease on the scope; nothing is run");
        }
        fence
    }

    /// The store refused this server's fence on `scope`: another server
    /// took the lease over. Stop managing the escalation; write nothing more.
    pub(super) fn lost(&mut self, id: u64, scope: &str) {
        tracing::warn!(escalation = id, scope = %scope, "lost the lease to another server; it takes over");
        self.fences.remove(scope);
        self.engine.relinquish(id);
    }

    /// Takes escalation `id` over again from its stored record, as another
    /// server would: a step that was running is verified, not re-run.
    pub(super) async fn readopt(&mut self, id: u64, scope: &str) {
        match self.store.escalation(id).await {
            Ok(Some(row)) if row.open => {
                if let Some(esc) = parse_row(&row) {
                    let now = self.clock.now_ms();
                    let fx = self.engine.adopt(esc, now);
                    self.apply(fx).await;
                }
            }
            // Ended by the server that held it meanwhile: nothing to manage,
            // so the lease just renewed is given back.
            Ok(_) => {
                self.fences.remove(scope);
                if let Err(e) = self.store.release_lease(scope, &self.holder).await {
                    tracing::warn!(scope = %scope, error = %e, "cannot release the lease");
                }
            }
            Err(e) => tracing::warn!(escalation = id, error = %e, "cannot re-read the escalation"),
        }
    }
}
