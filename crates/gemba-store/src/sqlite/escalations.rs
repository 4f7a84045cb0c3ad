//! The escalator's tables in SQLite: journal, escalations, leases with
//! their fences, step claims and the notice outbox.

use rusqlite::{params, OptionalExtension};

use super::{holds, SqliteStore};
use crate::{Claim, EscalationRow, Fence, JournalRow, OutboxRow, Pruned, Store, StoreError};

fn journal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalRow> {
    Ok(JournalRow {
        seq: r.get(0)?,
        escalation: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
        scope: r.get(2)?,
        at_ms: r.get::<_, i64>(3)? as u64,
        kind: r.get(4)?,
        text: r.get(5)?,
        server: r.get(6)?,
    })
}

fn escalation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EscalationRow> {
    Ok(EscalationRow {
        id: r.get::<_, i64>(0)? as u64,
        scope: r.get(1)?,
        phase: r.get(2)?,
        open: r.get(3)?,
        opened_ms: r.get::<_, i64>(4)? as u64,
        updated_ms: r.get::<_, i64>(5)? as u64,
        body: r.get(6)?,
    })
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        target: r.get(1)?,
        body: r.get(2)?,
        created_ms: r.get::<_, i64>(3)? as u64,
        next_ms: r.get::<_, i64>(4)? as u64,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
    })
}

const OUTBOX_COLS: &str = "id, target, body, created_ms, next_ms, attempts, last_error";
const ESC_COLS: &str = "id, scope, phase, open, opened_ms, updated_ms, body";
const JOURNAL_COLS: &str = "seq, escalation, scope, at_ms, kind, text, server";

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn append(&self, row: JournalRow) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO journal (escalation, scope, at_ms, kind, text, server) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.escalation.map(|v| v as i64), row.scope, row.at_ms as i64, row.kind, row.text, row.server],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn journal(&self, escalation: u64) -> Result<Vec<JournalRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOURNAL_COLS} FROM journal WHERE escalation = ?1 ORDER BY seq"
            ))?;
            let rows = st.query_map([escalation as i64], journal_row)?;
            rows.collect()
        })
        .await
    }

    async fn recent_journal(&self, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOURNAL_COLS} FROM journal ORDER BY seq DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit as i64], journal_row)?;
            rows.collect()
        })
        .await
    }

    async fn journal_after(&self, seq: i64, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOURNAL_COLS} FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![seq, limit as i64], journal_row)?;
            rows.collect()
        })
        .await
    }

    async fn next_escalation_id(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.execute("INSERT INTO escalation_ids (at) VALUES (0)", [])?;
            Ok(c.last_insert_rowid() as u64)
        })
        .await
    }

    async fn save_escalation(
        &self,
        row: EscalationRow,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        let fence = fence.cloned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(f) = &fence {
                if holds(&tx, f, None)? != crate::Lease::Held {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO escalations (id, scope, phase, open, opened_ms, updated_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET scope = excluded.scope, phase = excluded.phase, open = excluded.open,
                 updated_ms = excluded.updated_ms, body = excluded.body",
                params![row.id as i64, row.scope, row.phase, row.open, row.opened_ms as i64, row.updated_ms as i64, row.body],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn escalation(&self, id: u64) -> Result<Option<EscalationRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {ESC_COLS} FROM escalations WHERE id = ?1"),
                [id as i64],
                escalation_row,
            )
            .optional()
        })
        .await
    }

    async fn escalations(&self, limit: usize) -> Result<Vec<EscalationRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ESC_COLS} FROM escalations WHERE open = 1
                 UNION ALL
                 SELECT * FROM (SELECT {ESC_COLS} FROM escalations WHERE open = 0 ORDER BY updated_ms DESC LIMIT ?1)"
            ))?;
            let rows = st.query_map([limit as i64], escalation_row)?;
            let mut v: Vec<EscalationRow> = rows.collect::<Result<_, _>>()?;
            v.sort_by_key(|e| std::cmp::Reverse(e.id));
            Ok(v)
        })
        .await
    }

    async fn opened_since(&self, since_ms: u64) -> Result<Vec<EscalationRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ESC_COLS} FROM escalations WHERE opened_ms >= ?1 OR open = 1"
            ))?;
            let rows = st.query_map([since_ms as i64], escalation_row)?;
            rows.collect()
        })
        .await
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError> {
        let (scope, holder) = (scope.to_string(), holder.to_string());
        self.with(move |c| {
            let token: Option<i64> = c
                .query_row(
                    "INSERT INTO leases (scope, holder, expires_ms, fence) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT(scope) DO UPDATE SET
                       fence = CASE WHEN leases.holder = excluded.holder THEN leases.fence ELSE leases.fence + 1 END,
                       holder = excluded.holder, expires_ms = excluded.expires_ms
                     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4
                     RETURNING fence",
                    params![scope, holder, now_ms.saturating_add(ttl_ms) as i64, now_ms as i64],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(token.map(|t| Fence {
                scope,
                holder,
                token: t as u64,
            }))
        })
        .await
    }

    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError> {
        let (scope, holder) = (scope.to_string(), holder.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE leases SET expires_ms = 0 WHERE scope = ?1 AND holder = ?2",
                params![scope, holder],
            )?;
            Ok(())
        })
        .await
    }

    async fn lease_holder(&self, scope: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let scope = scope.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT holder FROM leases WHERE scope = ?1 AND expires_ms > ?2",
                params![scope, now_ms as i64],
                |r| r.get(0),
            )
            .optional()
        })
        .await
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
        let fence = fence.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            match holds(&tx, &fence, Some((now_ms, grace_ms)))? {
                crate::Lease::Held => {}
                crate::Lease::Short => return Ok(Claim::Short),
                crate::Lease::Lost => return Ok(Claim::Fenced),
            }
            let n = tx.execute(
                "INSERT INTO step_claims (escalation, attempt, level, holder, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![escalation as i64, attempt, level, fence.holder, now_ms as i64],
            )?;
            tx.commit()?;
            Ok(if n == 1 { Claim::Claimed } else { Claim::Taken })
        })
        .await
    }

    async fn enqueue_notice(
        &self,
        target: &str,
        body: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let (target, body) = (target.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO outbox (target, body, created_ms, next_ms) VALUES (?1, ?2, ?3, ?3)",
                params![target, body, now_ms as i64],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn claim_due_notices(
        &self,
        now_ms: u64,
        claim_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows: Vec<OutboxRow> = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE next_ms <= ?1 ORDER BY next_ms, id LIMIT ?2"
                ))?;
                let rows = st.query_map(params![now_ms as i64, limit as i64], outbox_row)?;
                rows.collect::<Result<_, _>>()?
            };
            for r in &rows {
                tx.execute(
                    "UPDATE outbox SET next_ms = ?1 WHERE id = ?2",
                    params![(now_ms + claim_ms) as i64, r.id],
                )?;
            }
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    async fn notice_done(&self, id: i64) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn notice_failed(
        &self,
        id: i64,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = ?1, next_ms = ?2, last_error = ?3 WHERE id = ?4",
                params![attempts, next_ms as i64, error, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn pending_notices(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {OUTBOX_COLS} FROM outbox ORDER BY id"))?;
            let rows = st.query_map([], outbox_row)?;
            rows.collect()
        })
        .await
    }

    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let cutoff = before_ms as i64;
            let journal = tx.execute(
                "DELETE FROM journal WHERE at_ms < ?1
                 AND (escalation IS NULL OR escalation NOT IN (SELECT id FROM escalations WHERE open = 1))",
                [cutoff],
            )?;
            tx.execute(
                "DELETE FROM step_claims WHERE escalation IN
                 (SELECT id FROM escalations WHERE open = 0 AND updated_ms < ?1)",
                [cutoff],
            )?;
            let escalations = tx.execute(
                "DELETE FROM escalations WHERE open = 0 AND updated_ms < ?1",
                [cutoff],
            )?;
            tx.commit()?;
            Ok(Pruned {
                journal: journal as u64,
                escalations: escalations as u64,
            })
        })
        .await
    }

    async fn schema(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT stage, version FROM schema_stages ORDER BY stage")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn probe(&self) -> Result<crate::Probe, StoreError> {
        self.with(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(crate::Probe {
                clock_ms: None,
                free_bytes: c.path().and_then(super::free_bytes),
            })
        })
        .await
    }
}
