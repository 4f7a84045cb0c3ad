//! Incidents and the escalations they gather, in PostgreSQL.

use tokio_postgres::{Row, Transaction};

use super::{big, INCIDENT_LOCK};
use crate::timeline::*;
use crate::{PgStore, StoreError};

/// Puts escalations into incident `id`; one another incident holds stays
/// there.
async fn gather(
    tx: &Transaction<'_>,
    id: i64,
    escalations: &[u64],
) -> Result<(), tokio_postgres::Error> {
    if escalations.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = escalations.iter().map(|e| big(*e)).collect();
    tx.execute(
        "INSERT INTO incident_escalations (escalation, incident)
         SELECT e, $2 FROM UNNEST($1::BIGINT[]) AS e ON CONFLICT DO NOTHING",
        &[&ids, &id],
    )
    .await?;
    Ok(())
}

fn incident_row(r: &Row) -> IncidentRow {
    IncidentRow {
        id: r.get(0),
        opened_ms: r.get::<_, i64>(1) as u64,
        closed_ms: r.get::<_, Option<i64>>(2).map(|v| v as u64),
        version: r.get(3),
        body: r.get(4),
        escalations: r
            .get::<_, Vec<i64>>(5)
            .into_iter()
            .map(|v| v as u64)
            .collect(),
    }
}

#[async_trait::async_trait]
impl IncidentStore for PgStore {
    async fn add_incident(
        &self,
        opened_ms: u64,
        body: String,
        escalations: Vec<u64>,
    ) -> Result<(i64, bool), StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        if !escalations.is_empty() {
            // One opener at a time: the check below and the insert must not
            // interleave with another server's.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INCIDENT_LOCK])
                .await
                .map_err(f)?;
            let ids: Vec<i64> = escalations.iter().map(|e| big(*e)).collect();
            if let Some(r) = tx
                .query_opt(
                    "SELECT incident FROM incident_escalations WHERE escalation = ANY($1) LIMIT 1",
                    &[&ids],
                )
                .await
                .map_err(f)?
            {
                return Ok((r.get(0), false));
            }
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO incidents (opened_ms, closed_ms, version, body) VALUES ($1, NULL, 1, $2) RETURNING id",
                &[&big(opened_ms), &body],
            )
            .await
            .map_err(f)?
            .get(0);
        gather(&tx, id, &escalations).await.map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok((id, true))
    }

    async fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT i.id, i.opened_ms, i.closed_ms, i.version, i.body,
                    COALESCE((SELECT ARRAY_AGG(escalation ORDER BY escalation)
                              FROM incident_escalations WHERE incident = i.id), '{}')
                 FROM incidents i WHERE (NOT $1 OR i.closed_ms IS NULL)
                 ORDER BY i.id DESC LIMIT $2",
                &[&open_only, &big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(incident_row).collect())
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT i.id, i.opened_ms, i.closed_ms, i.version, i.body,
                    COALESCE((SELECT ARRAY_AGG(escalation ORDER BY escalation)
                              FROM incident_escalations WHERE incident = i.id), '{}')
                 FROM incidents i WHERE i.id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.as_ref().map(incident_row))
    }

    async fn incident_of(&self, escalation: u64) -> Result<Option<i64>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT incident FROM incident_escalations WHERE escalation = $1",
                &[&big(escalation)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| r.get(0)))
    }

    async fn update_incident(
        &self,
        id: i64,
        version: i64,
        closed_ms: Option<u64>,
        body: String,
        escalations: Vec<u64>,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "UPDATE incidents SET closed_ms = $1, body = $2, version = version + 1
                 WHERE id = $3 AND version = $4",
                &[&closed_ms.map(big), &body, &id, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        gather(&tx, id, &escalations).await.map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(true)
    }
}
