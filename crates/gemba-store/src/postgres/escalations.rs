//! The escalator's tables in PostgreSQL: journal, escalations, leases
//! with their fences, step claims and the notice outbox.

use super::DB_NOW;
use tokio_postgres::Row;

use super::{big, text, PgStore, JOURNAL_LOCK};
use crate::{
    Claim, Connection, EscalationRow, Fence, JournalRow, OutboxRow, Pruned, Store, StoreError,
};

const OUTBOX_COLS: &str = "id, target, body, created_ms, next_ms, attempts, last_error";
const ESC_COLS: &str = "id, scope, phase, open, opened_ms, updated_ms, body";
const JOURNAL_COLS: &str = "seq, escalation, scope, at_ms, kind, text, server";

fn journal_row(r: &Row) -> JournalRow {
    JournalRow {
        seq: r.get(0),
        escalation: r.get::<_, Option<i64>>(1).map(|v| v as u64),
        scope: r.get(2),
        at_ms: r.get::<_, i64>(3) as u64,
        kind: r.get(4),
        text: text(r.get(5)),
        server: r.get(6),
    }
}

fn escalation_row(r: &Row) -> EscalationRow {
    EscalationRow {
        id: r.get::<_, i64>(0) as u64,
        scope: r.get(1),
        phase: r.get(2),
        open: r.get(3),
        opened_ms: r.get::<_, i64>(4) as u64,
        updated_ms: r.get::<_, i64>(5) as u64,
        body: text(r.get(6)),
    }
}

fn outbox_row(r: &Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        target: text(r.get(1)),
        body: text(r.get(2)),
        created_ms: r.get::<_, i64>(3) as u64,
        next_ms: r.get::<_, i64>(4) as u64,
        attempts: r.get::<_, i64>(5) as u32,
        last_error: text(r.get(6)),
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn append(&self, row: JournalRow) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&JOURNAL_LOCK])
            .await
            .map_err(|e| self.failed(e))?;
        let r = tx
            .query_one(
                // Stamped on the store's clock, under the journal's lock:
                // times follow the sequence whatever the writer's clock.
                &format!(
                    "INSERT INTO journal (escalation, scope, at_ms, kind, text, server)
                     VALUES ($1, $2, COALESCE($3::bigint, {DB_NOW}), $4, $5, $6) RETURNING seq"
                ),
                &[
                    &row.escalation.map(big),
                    &row.scope,
                    &self.store_now(row.at_ms),
                    &row.kind,
                    &row.text.as_bytes(),
                    &row.server,
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(r.get(0))
    }

    async fn journal(&self, escalation: u64) -> Result<Vec<JournalRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOURNAL_COLS} FROM journal WHERE escalation = $1 ORDER BY seq"),
                &[&big(escalation)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(journal_row).collect())
    }

    async fn recent_journal(&self, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOURNAL_COLS} FROM journal ORDER BY seq DESC LIMIT $1"),
                &[&big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(journal_row).collect())
    }

    async fn journal_after(&self, seq: i64, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOURNAL_COLS} FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&seq, &big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(journal_row).collect())
    }

    async fn next_escalation_id(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT nextval('escalation_ids')", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    async fn save_escalation(
        &self,
        row: EscalationRow,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        if let Some(f) = fence {
            if self.holds(&tx, f, None).await? != crate::Lease::Held {
                return Ok(false);
            }
        }
        tx.execute(
            "INSERT INTO escalations (id, scope, phase, open, opened_ms, updated_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET scope = EXCLUDED.scope, phase = EXCLUDED.phase,
               open = EXCLUDED.open, updated_ms = EXCLUDED.updated_ms, body = EXCLUDED.body",
            &[
                &big(row.id),
                &row.scope,
                &row.phase,
                &row.open,
                &big(row.opened_ms),
                &big(row.updated_ms),
                &row.body.as_bytes(),
            ],
        )
        .await
        .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(true)
    }

    async fn escalation(&self, id: u64) -> Result<Option<EscalationRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {ESC_COLS} FROM escalations WHERE id = $1"),
                &[&big(id)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.as_ref().map(escalation_row))
    }

    async fn escalations(&self, limit: usize) -> Result<Vec<EscalationRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ESC_COLS} FROM escalations WHERE open
                     UNION ALL
                     (SELECT {ESC_COLS} FROM escalations WHERE NOT open ORDER BY updated_ms DESC LIMIT $1)"
                ),
                &[&big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let mut v: Vec<EscalationRow> = rows.iter().map(escalation_row).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.id));
        Ok(v)
    }

    async fn opened_since(&self, since_ms: u64) -> Result<Vec<EscalationRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {ESC_COLS} FROM escalations WHERE opened_ms >= $1 OR open"),
                &[&big(since_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(escalation_row).collect())
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!(
                    "INSERT INTO leases (scope, holder, expires_ms, fence)
                     VALUES ($1, $2, COALESCE($4::bigint, {DB_NOW}) + $3::bigint, 1)
                     ON CONFLICT (scope) DO UPDATE SET
                       fence = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.fence ELSE leases.fence + 1 END,
                       holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms
                     WHERE leases.holder = EXCLUDED.holder OR leases.expires_ms <= COALESCE($4::bigint, {DB_NOW})
                     RETURNING fence"
                ),
                &[&scope, &holder, &big(ttl_ms), &self.store_now(now_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| Fence {
            scope: scope.to_string(),
            holder: holder.to_string(),
            token: r.get::<_, i64>(0) as u64,
        }))
    }

    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET expires_ms = 0 WHERE scope = $1 AND holder = $2",
            &[&scope, &holder],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn lease_holder(&self, scope: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!(
                    "SELECT holder FROM leases WHERE scope = $1 AND expires_ms > COALESCE($2::bigint, {DB_NOW})"
                ),
                &[&scope, &self.store_now(now_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| r.get(0)))
    }

    async fn claim_step(
        &self,
        fence: &Fence,
        escalation: u64,
        attempt: u32,
        level: u32,
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<Claim, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        match self.holds(&tx, fence, Some((now_ms, grace_ms))).await? {
            crate::Lease::Held => {}
            crate::Lease::Short => return Ok(Claim::Short),
            crate::Lease::Lost => return Ok(Claim::Fenced),
        }
        let n = tx
            .execute(
                "INSERT INTO step_claims (escalation, attempt, level, holder, at_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &big(escalation),
                    &i64::from(attempt),
                    &i64::from(level),
                    &fence.holder,
                    &big(now_ms),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(if n == 1 { Claim::Claimed } else { Claim::Taken })
    }

    async fn enqueue_notice(
        &self,
        target: &str,
        body: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "INSERT INTO outbox (target, body, created_ms, next_ms) VALUES ($1, $2, $3, $3) RETURNING id",
                &[&target.as_bytes(), &body.as_bytes(), &big(now_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.get(0))
    }

    async fn claim_due_notices(
        &self,
        now_ms: u64,
        claim_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let c = self.client().await?;
        // One statement: the rows locked (others' locked rows skipped), made
        // not due for the claim, and returned as they were.
        let rows = c
            .query(
                &format!(
                    "WITH due AS (
                        SELECT id FROM outbox WHERE next_ms <= $1
                        ORDER BY next_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED
                     ), before AS (
                        SELECT {OUTBOX_COLS} FROM outbox WHERE id IN (SELECT id FROM due)
                     ), claimed AS (
                        UPDATE outbox SET next_ms = $3 WHERE id IN (SELECT id FROM due)
                     )
                     SELECT {OUTBOX_COLS} FROM before ORDER BY next_ms, id"
                ),
                &[
                    &big(now_ms),
                    &big(limit as u64),
                    &big(now_ms.saturating_add(claim_ms)),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn notice_done(&self, id: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM outbox WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn notice_failed(
        &self,
        id: i64,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE outbox SET attempts = $1, next_ms = $2, last_error = $3 WHERE id = $4",
            &[&i64::from(attempts), &big(next_ms), &error.as_bytes(), &id],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn pending_notices(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {OUTBOX_COLS} FROM outbox ORDER BY id"),
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        let mut c = self.client().await?;
        let cutoff = big(before_ms);
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        let journal = tx
            .execute(
                "DELETE FROM journal WHERE at_ms < $1
                 AND (escalation IS NULL OR escalation NOT IN (SELECT id FROM escalations WHERE open))",
                &[&cutoff],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.execute(
            "DELETE FROM step_claims WHERE escalation IN
             (SELECT id FROM escalations WHERE NOT open AND updated_ms < $1)",
            &[&cutoff],
        )
        .await
        .map_err(|e| self.failed(e))?;
        let escalations = tx
            .execute(
                "DELETE FROM escalations WHERE NOT open AND updated_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(Pruned {
            journal,
            escalations,
        })
    }

    fn connection_security(&self) -> Option<Connection> {
        Some(self.connection())
    }

    async fn schema(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT stage, version FROM gemba_schema_stages ORDER BY stage",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn probe(&self) -> Result<crate::Probe, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(crate::Probe {
            clock_ms: Some(r.get::<_, i64>(0).max(0) as u64),
            free_bytes: None,
        })
    }
}
