//! Change events, the followers' named values and state changes in PostgreSQL.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{big, text};
use crate::timeline::*;
use crate::{PgStore, StoreError};

const EVENT_COLUMNS: &str =
    "id, at_ms, end_ms, kind, what, tags, text, author, link, source, origin";

fn event_row(r: &Row) -> EventRow {
    EventRow {
        id: r.get(0),
        at_ms: r.get::<_, i64>(1) as u64,
        end_ms: r.get::<_, Option<i64>>(2).map(|v| v as u64),
        kind: r.get(3),
        what: text(r.get(4)),
        tags: serde_json::from_str(r.get::<_, &str>(5)).unwrap_or_default(),
        text: text(r.get(6)),
        author: r.get(7),
        link: r.get(8),
        source: r.get(9),
        origin: r.get(10),
    }
}

fn change_row(r: &Row) -> ChangeRow {
    ChangeRow {
        at_ms: r.get::<_, i64>(0) as u64,
        kind: r.get(1),
        subject: r.get(2),
        node: r.get(3),
        peer: r.get(4),
        state: r.get(5),
        previous: r.get(6),
        detail: text(r.get(7)),
    }
}

#[async_trait::async_trait]
impl EventStore for PgStore {
    async fn add_events(&self, events: Vec<EventRow>) -> Result<Vec<Option<i64>>, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let ins = tx
            .prepare(
                "INSERT INTO timeline_events (at_ms, end_ms, kind, what, tags, text, author, link, source, origin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (origin) DO NOTHING RETURNING id",
            )
            .await
            .map_err(f)?;
        let tag = tx
            .prepare(
                "INSERT INTO timeline_event_tags (tag, event) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(f)?;
        let mut ids = Vec::with_capacity(events.len());
        for e in &events {
            let tags = serde_json::to_string(&e.tags).unwrap_or_else(|_| "[]".into());
            let row = tx
                .query_opt(
                    &ins,
                    &[
                        &big(e.at_ms),
                        &e.end_ms.map(big),
                        &e.kind,
                        &e.what.as_bytes(),
                        &tags,
                        &e.text.as_bytes(),
                        &e.author,
                        &e.link,
                        &e.source,
                        &e.origin,
                    ],
                )
                .await
                .map_err(f)?;
            let Some(row) = row else {
                ids.push(None);
                continue;
            };
            let id: i64 = row.get(0);
            for t in &e.tags {
                tx.execute(&tag, &[t, &id]).await.map_err(f)?;
            }
            ids.push(Some(id));
        }
        tx.commit().await.map_err(f)?;
        Ok(ids)
    }

    async fn events(&self, f: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let c = self.client().await?;
        let until = big(f.until_ms);
        let since = big(f.since_ms);
        let limit = big(f.limit as u64);
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM timeline_events WHERE at_ms <= $1 AND COALESCE(end_ms, at_ms) >= $2"
        );
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&until, &since];
        if let Some(k) = &f.kind {
            args.push(k);
            sql.push_str(&format!(" AND kind = ${}", args.len()));
        }
        for t in &f.tags {
            args.push(t);
            sql.push_str(&format!(
                " AND id IN (SELECT event FROM timeline_event_tags WHERE tag = ${})",
                args.len()
            ));
        }
        args.push(&limit);
        sql.push_str(&format!(
            " ORDER BY at_ms DESC, id DESC LIMIT ${}",
            args.len()
        ));
        let rows = c.query(&sql, &args).await.map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(event_row).collect())
    }

    async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {EVENT_COLUMNS} FROM timeline_events WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.as_ref().map(event_row))
    }

    async fn timeline_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT value FROM timeline_values WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| r.get(0)))
    }

    async fn set_timeline_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO timeline_values (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn prune_events(&self, before_ms: u64) -> Result<u64, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        tx.execute(
            "DELETE FROM timeline_event_tags WHERE event IN
             (SELECT id FROM timeline_events WHERE COALESCE(end_ms, at_ms) < $1)",
            &[&big(before_ms)],
        )
        .await
        .map_err(f)?;
        let n = tx
            .execute(
                "DELETE FROM timeline_events WHERE COALESCE(end_ms, at_ms) < $1",
                &[&big(before_ms)],
            )
            .await
            .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(n)
    }

    async fn add_changes(&self, changes: Vec<ChangeRow>) -> Result<(), StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let st = tx
            .prepare(
                "INSERT INTO timeline_changes (at_ms, kind, subject, node, peer, state, previous, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .await
            .map_err(f)?;
        for ch in &changes {
            tx.execute(
                &st,
                &[
                    &big(ch.at_ms),
                    &ch.kind,
                    &ch.subject,
                    &ch.node,
                    &ch.peer,
                    &ch.state,
                    &ch.previous,
                    &ch.detail.as_bytes(),
                ],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)
    }

    async fn changes(
        &self,
        since_ms: u64,
        until_ms: u64,
        nodes: Vec<String>,
        limit: usize,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT at_ms, kind, subject, node, peer, state, previous, detail FROM timeline_changes
                 WHERE at_ms >= $1 AND at_ms <= $2
                   AND (node = '' OR node = ANY($3) OR peer = ANY($3))
                 ORDER BY at_ms, id LIMIT $4",
                &[&big(since_ms), &big(until_ms), &nodes, &big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(change_row).collect())
    }

    async fn prune_changes(&self, before_ms: u64) -> Result<u64, StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM timeline_changes WHERE at_ms < $1",
            &[&big(before_ms)],
        )
        .await
        .map_err(|e| self.failed(e))
    }
}
