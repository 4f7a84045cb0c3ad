//! Incidents and the escalations they gather, in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::timeline::*;
use crate::{SqliteStore, StoreError};

/// Puts escalations into incident `id`; one another incident holds
/// stays there.
fn gather_escalations(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    escalations: &[u64],
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO incident_escalations (escalation, incident) VALUES (?1, ?2)",
    )?;
    for e in escalations {
        st.execute(params![*e as i64, id])?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl IncidentStore for SqliteStore {
    async fn add_incident(
        &self,
        opened_ms: u64,
        body: String,
        escalations: Vec<u64>,
    ) -> Result<(i64, bool), StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for e in &escalations {
                let held: Option<i64> = tx
                    .query_row(
                        "SELECT incident FROM incident_escalations WHERE escalation = ?1",
                        params![*e as i64],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(id) = held {
                    return Ok((id, false));
                }
            }
            tx.execute(
                "INSERT INTO incidents (opened_ms, closed_ms, version, body) VALUES (?1, NULL, 1, ?2)",
                params![opened_ms as i64, body],
            )?;
            let id = tx.last_insert_rowid();
            gather_escalations(&tx, id, &escalations)?;
            tx.commit()?;
            Ok((id, true))
        })
        .await
    }

    async fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        let ids: Vec<i64> = self
            .with(move |c| {
                let sql = if open_only {
                    "SELECT id FROM incidents WHERE closed_ms IS NULL ORDER BY id DESC LIMIT ?1"
                } else {
                    "SELECT id FROM incidents ORDER BY id DESC LIMIT ?1"
                };
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map([limit as i64], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.incident(id).await? {
                out.push(row);
            }
        }
        Ok(out)
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>, StoreError> {
        self.with(move |c| {
            let Some(mut row) = c
                .query_row(
                    "SELECT id, opened_ms, closed_ms, version, body FROM incidents WHERE id = ?1",
                    [id],
                    |r| {
                        Ok(IncidentRow {
                            id: r.get(0)?,
                            opened_ms: r.get::<_, i64>(1)? as u64,
                            closed_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                            version: r.get(3)?,
                            body: r.get(4)?,
                            escalations: Vec::new(),
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT escalation FROM incident_escalations WHERE incident = ?1 ORDER BY escalation",
            )?;
            row.escalations = st
                .query_map([id], |r| r.get::<_, i64>(0).map(|v| v as u64))?
                .collect::<Result<_, _>>()?;
            Ok(Some(row))
        })
        .await
    }

    async fn incident_of(&self, escalation: u64) -> Result<Option<i64>, StoreError> {
        self.with(move |c| {
            c.query_row(
                "SELECT incident FROM incident_escalations WHERE escalation = ?1",
                [escalation as i64],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn update_incident(
        &self,
        id: i64,
        version: i64,
        closed_ms: Option<u64>,
        body: String,
        escalations: Vec<u64>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE incidents SET closed_ms = ?1, body = ?2, version = version + 1
                 WHERE id = ?3 AND version = ?4",
                params![closed_ms.map(|v| v as i64), body, id, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            gather_escalations(&tx, id, &escalations)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
