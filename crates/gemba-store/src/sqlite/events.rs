//! Change events, the followers' named values and state changes in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::timeline::*;
use crate::{SqliteStore, StoreError};

const EVENT_COLUMNS: &str =
    "id, at_ms, end_ms, kind, what, tags, text, author, link, source, origin";

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    let tags: String = r.get(5)?;
    Ok(EventRow {
        id: r.get(0)?,
        at_ms: r.get::<_, i64>(1)? as u64,
        end_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
        kind: r.get(3)?,
        what: r.get(4)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        text: r.get(6)?,
        author: r.get(7)?,
        link: r.get(8)?,
        source: r.get(9)?,
        origin: r.get(10)?,
    })
}

#[async_trait::async_trait]
impl EventStore for SqliteStore {
    async fn add_events(&self, events: Vec<EventRow>) -> Result<Vec<Option<i64>>, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(events.len());
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO timeline_events (at_ms, end_ms, kind, what, tags, text, author, link, source, origin)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(origin) DO NOTHING",
                )?;
                let mut tag = tx.prepare_cached(
                    "INSERT OR IGNORE INTO timeline_event_tags (tag, event) VALUES (?1, ?2)",
                )?;
                for e in &events {
                    let tags = serde_json::to_string(&e.tags).unwrap_or_else(|_| "[]".into());
                    let n = ins.execute(params![
                        e.at_ms as i64,
                        e.end_ms.map(|v| v as i64),
                        e.kind,
                        e.what,
                        tags,
                        e.text,
                        e.author,
                        e.link,
                        e.source,
                        e.origin
                    ])?;
                    if n == 0 {
                        ids.push(None);
                        continue;
                    }
                    let id = tx.last_insert_rowid();
                    for t in &e.tags {
                        tag.execute(params![t, id])?;
                    }
                    ids.push(Some(id));
                }
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    async fn events(&self, f: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        self.with(move |c| {
            let mut sql = format!(
                "SELECT {EVENT_COLUMNS} FROM timeline_events WHERE at_ms <= ?1 AND COALESCE(end_ms, at_ms) >= ?2"
            );
            let mut args: Vec<rusqlite::types::Value> =
                vec![(f.until_ms as i64).into(), (f.since_ms as i64).into()];
            if let Some(k) = &f.kind {
                args.push(k.clone().into());
                sql.push_str(&format!(" AND kind = ?{}", args.len()));
            }
            for t in &f.tags {
                args.push(t.clone().into());
                sql.push_str(&format!(
                    " AND id IN (SELECT event FROM timeline_event_tags WHERE tag = ?{})",
                    args.len()
                ));
            }
            args.push((f.limit as i64).into());
            sql.push_str(&format!(" ORDER BY at_ms DESC, id DESC LIMIT ?{}", args.len()));
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), event_row)?;
            rows.collect()
        })
        .await
    }

    async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {EVENT_COLUMNS} FROM timeline_events WHERE id = ?1"),
                [id],
                event_row,
            )
            .optional()
        })
        .await
    }

    async fn timeline_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT value FROM timeline_values WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn set_timeline_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let (name, value) = (name.to_string(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO timeline_values (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map(|_| ())
        })
        .await
    }

    async fn prune_events(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM timeline_event_tags WHERE event IN
                 (SELECT id FROM timeline_events WHERE COALESCE(end_ms, at_ms) < ?1)",
                [before_ms as i64],
            )?;
            let n = tx.execute(
                "DELETE FROM timeline_events WHERE COALESCE(end_ms, at_ms) < ?1",
                [before_ms as i64],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn add_changes(&self, changes: Vec<ChangeRow>) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO timeline_changes (at_ms, kind, subject, node, peer, state, previous, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for ch in &changes {
                    st.execute(params![
                        ch.at_ms as i64,
                        ch.kind,
                        ch.subject,
                        ch.node,
                        ch.peer,
                        ch.state,
                        ch.previous,
                        ch.detail
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn changes(
        &self,
        since_ms: u64,
        until_ms: u64,
        nodes: Vec<String>,
        limit: usize,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        self.with(move |c| {
            let marks = vec!["?"; nodes.len()].join(",");
            let sql = format!(
                "SELECT at_ms, kind, subject, node, peer, state, previous, detail FROM timeline_changes
                 WHERE at_ms >= ? AND at_ms <= ?
                   AND (node = '' OR node IN ({marks}) OR peer IN ({marks}))
                 ORDER BY at_ms, id LIMIT ?"
            );
            let mut args: Vec<rusqlite::types::Value> =
                vec![(since_ms as i64).into(), (until_ms as i64).into()];
            for _ in 0..2 {
                args.extend(nodes.iter().map(|n| n.clone().into()));
            }
            args.push((limit as i64).into());
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
                Ok(ChangeRow {
                    at_ms: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    subject: r.get(2)?,
                    node: r.get(3)?,
                    peer: r.get(4)?,
                    state: r.get(5)?,
                    previous: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn prune_changes(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.with(move |c| {
            c.execute(
                "DELETE FROM timeline_changes WHERE at_ms < ?1",
                [before_ms as i64],
            )
            .map(|n| n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(at_ms: u64, subject: &str) -> ChangeRow {
        ChangeRow {
            at_ms,
            kind: "check".into(),
            subject: subject.into(),
            node: "web-1".into(),
            peer: String::new(),
            state: "failing".into(),
            previous: "passing".into(),
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn changes_are_read_by_window_oldest_first_and_pruned() {
        let s = SqliteStore::in_memory().unwrap();
        s.add_changes(vec![change(30, "c"), change(10, "a"), change(20, "b")])
            .await
            .unwrap();
        let web1 = || vec!["web-1".to_string()];
        let got: Vec<String> = s
            .changes(10, 20, web1(), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.subject)
            .collect();
        assert_eq!(got, ["a", "b"]);
        // Only the nodes asked for (as node or link peer), and what is
        // about no node.
        let mut link = change(25, "db-1>web-1");
        (link.kind, link.node, link.peer) = ("link".into(), "db-1".into(), "web-1".into());
        let mut other = change(26, "db-1>db-2");
        (other.kind, other.node, other.peer) = ("link".into(), "db-1".into(), "db-2".into());
        let mut tier = change(27, "smoke@tier:web");
        tier.node = String::new();
        s.add_changes(vec![link, other, tier]).await.unwrap();
        let got: Vec<String> = s
            .changes(21, 100, web1(), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.subject)
            .collect();
        assert_eq!(got, ["db-1>web-1", "smoke@tier:web", "c"], "{got:?}");
        assert_eq!(s.prune_changes(20).await.unwrap(), 1);
        assert_eq!(s.changes(0, 100, web1(), 10).await.unwrap().len(), 4);
    }
}
