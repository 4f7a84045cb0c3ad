//! The timeline's tables in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::timeline::*;
use crate::{SqliteStore, StoreError};

/// Rows per INSERT into the head: one statement per hundred points.
const HEAD_ROWS: usize = 100;

fn insert_many(rows: usize) -> String {
    let mut sql = String::from("INSERT OR REPLACE INTO timeline_head (t, series, v) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?)");
    }
    sql
}

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

const PARTICIPANT_COLUMNS: &str = "token_hash, incident, name, seal_key, slot, claimed";

fn participant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ParticipantRow> {
    Ok(ParticipantRow {
        token_hash: r.get(0)?,
        incident: r.get(1)?,
        name: r.get(2)?,
        seal_key: r.get(3)?,
        slot: r.get(4)?,
        claimed: r.get(5)?,
    })
}

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

/// Page cache of the timeline's connection: series points are written a
/// batch at a time into a tree ordered by series, so each batch touches a
/// page per series; with these pages cached it does not read them back.
const SERIES_CACHE_KIB: i64 = 32 * 1024;

impl SqliteStore {
    /// Settings for the connection that writes series.
    pub async fn tune_for_series(&self) -> Result<(), StoreError> {
        self.with(|c| c.pragma_update(None, "cache_size", -SERIES_CACHE_KIB))
            .await
    }
}

#[async_trait::async_trait]
impl TimelineStore for SqliteStore {
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

    async fn series_ids(
        &self,
        keys: Vec<SeriesKey>,
        max_series: u64,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(keys.len());
            {
                let mut count: u64 =
                    tx.query_row("SELECT COUNT(*) FROM timeline_series", [], |r| {
                        r.get::<_, i64>(0)
                    })? as u64;
                let mut find = tx.prepare_cached(
                    "SELECT id FROM timeline_series WHERE node = ?1 AND process = ?2 AND metric = ?3",
                )?;
                let mut ins = tx.prepare_cached(
                    "INSERT INTO timeline_series (node, process, metric) VALUES (?1, ?2, ?3)",
                )?;
                for k in &keys {
                    let id: Option<i64> = find
                        .query_row(params![k.node, k.process, k.metric], |r| r.get(0))
                        .optional()?;
                    match id {
                        Some(id) => out.push(Some(id)),
                        None if count < max_series => {
                            ins.execute(params![k.node, k.process, k.metric])?;
                            count += 1;
                            out.push(Some(tx.last_insert_rowid()));
                        }
                        None => out.push(None),
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn series(&self) -> Result<Vec<(i64, SeriesKey)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, node, process, metric FROM timeline_series ORDER BY node, process, metric",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    SeriesKey {
                        node: r.get(1)?,
                        process: r.get(2)?,
                        metric: r.get(3)?,
                    },
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn write_points(&self, mut points: Vec<(i64, u64, f64)>) -> Result<(), StoreError> {
        // In the head's key order: appends at its end.
        points.sort_unstable_by_key(|p| (p.1, p.0));
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut many = tx.prepare_cached(&insert_many(HEAD_ROWS))?;
                let mut one = tx.prepare_cached(&insert_many(1))?;
                let mut chunks = points.chunks_exact(HEAD_ROWS);
                for chunk in &mut chunks {
                    let args = chunk.iter().flat_map(|(s, t, v)| {
                        [
                            rusqlite::types::Value::Integer(*t as i64),
                            rusqlite::types::Value::Integer(*s),
                            rusqlite::types::Value::Real(*v),
                        ]
                    });
                    many.execute(rusqlite::params_from_iter(args))?;
                }
                for (s, t, v) in chunks.remainder() {
                    one.execute(params![*t as i64, s, v])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn compact(&self, before_s: u64) -> Result<u64, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT OR REPLACE INTO timeline_raw (series, t, v)
                 SELECT series, t, v FROM timeline_head WHERE t < ?1 ORDER BY series, t",
                [before_s as i64],
            )?;
            tx.execute("DELETE FROM timeline_head WHERE t < ?1", [before_s as i64])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn roll_up(
        &self,
        from: Tier,
        to: Tier,
        start_s: u64,
        end_s: u64,
    ) -> Result<u64, StoreError> {
        let width = to.seconds().max(1) as i64;
        let sql = match from {
            Tier::Raw => format!(
                "INSERT OR REPLACE INTO {to} (series, t, avg, min, max, n)
                 SELECT series, (t / {width}) * {width}, AVG(v), MIN(v), MAX(v), COUNT(*)
                 FROM (SELECT series, t, v FROM timeline_raw WHERE t >= ?1 AND t < ?2
                       UNION ALL SELECT series, t, v FROM timeline_head WHERE t >= ?1 AND t < ?2)
                 GROUP BY series, t / {width}",
                to = to.table()
            ),
            _ => format!(
                "INSERT OR REPLACE INTO {to} (series, t, avg, min, max, n)
                 SELECT series, (t / {width}) * {width}, SUM(avg * n) / SUM(n), MIN(min), MAX(max), SUM(n)
                 FROM {from} WHERE t >= ?1 AND t < ?2 GROUP BY series, t / {width}",
                to = to.table(),
                from = from.table()
            ),
        };
        self.with(move |c| {
            c.execute(&sql, params![start_s as i64, end_s as i64])
                .map(|n| n as u64)
        })
        .await
    }

    async fn prune_points(&self, tier: Tier, before_s: u64) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM {} WHERE t < ?1", tier.table());
        self.with(move |c| {
            let mut n = c.execute(&sql, [before_s as i64])? as u64;
            if tier == Tier::Raw {
                n += c.execute("DELETE FROM timeline_head WHERE t < ?1", [before_s as i64])? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn points(
        &self,
        series: i64,
        tier: Tier,
        since_s: u64,
        until_s: u64,
    ) -> Result<Vec<Point>, StoreError> {
        let sql = match tier {
            Tier::Raw => "SELECT t, v, v, v FROM timeline_raw WHERE series = ?1 AND t >= ?2 AND t <= ?3
                 UNION ALL
                 SELECT t, v, v, v FROM timeline_head WHERE series = ?1 AND t >= ?2 AND t <= ?3
                 ORDER BY 1"
                .to_string(),
            _ => format!(
                "SELECT t, avg, min, max FROM {} WHERE series = ?1 AND t >= ?2 AND t <= ?3 ORDER BY t",
                tier.table()
            ),
        };
        self.with(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(params![series, since_s as i64, until_s as i64], |r| {
                Ok(Point {
                    t: r.get::<_, i64>(0)? as u64,
                    v: r.get(1)?,
                    min: r.get(2)?,
                    max: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn point_counts(&self) -> Result<PointCounts, StoreError> {
        self.with(|c| {
            let n = |c: &rusqlite::Connection, t: &str| -> rusqlite::Result<u64> {
                c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
            };
            Ok(PointCounts {
                raw: n(c, "timeline_raw")? + n(c, "timeline_head")?,
                minute: n(c, "timeline_minute")?,
                hour: n(c, "timeline_hour")?,
                series: n(c, "timeline_series")?,
            })
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

    async fn add_postmortem(
        &self,
        incident: i64,
        expires_ms: u64,
        body: String,
        participants: Vec<ParticipantRow>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO postmortems (incident, phase, expires_ms, version, body)
                 VALUES (?1, 'round', ?2, 1, ?3)",
                params![incident, expires_ms as i64, body],
            )?;
            if n == 0 {
                return Ok(false);
            }
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO pm_participants (token_hash, incident, name, seal_key, slot, claimed)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                )?;
                for p in &participants {
                    st.execute(params![p.token_hash, incident, p.name, p.seal_key, p.claimed])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn postmortem(&self, incident: i64) -> Result<Option<PostmortemRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT incident, phase, expires_ms, version, body,
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = ?1),
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = ?1 AND {CAST})
                 FROM postmortems WHERE incident = ?1"
                ),
                [incident],
                |r| {
                    Ok(PostmortemRow {
                        incident: r.get(0)?,
                        phase: r.get(1)?,
                        expires_ms: r.get::<_, i64>(2)? as u64,
                        version: r.get(3)?,
                        body: r.get(4)?,
                        ballots: r.get::<_, i64>(5)? as u64,
                        ballots_cast: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn participant(&self, token_hash: String) -> Result<Option<ParticipantRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE token_hash = ?1"),
                [token_hash],
                participant_row,
            )
            .optional()
        })
        .await
    }

    async fn participants(&self, incident: i64) -> Result<Vec<ParticipantRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE incident = ?1 ORDER BY token_hash"
            ))?;
            let rows = st.query_map([incident], participant_row)?;
            rows.collect()
        })
        .await
    }

    async fn update_postmortem(
        &self,
        incident: i64,
        version: i64,
        phase: String,
        body: String,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE postmortems SET phase = ?1, body = ?2, version = version + 1
                 WHERE incident = ?3 AND version = ?4",
                params![phase, body, incident, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            let forget = phase != "voting";
            if forget {
                // Zeroes the freed bytes so the slots do not linger in the
                // file's free pages.
                tx.pragma_update(None, "secure_delete", true)?;
                tx.execute(
                    "UPDATE pm_participants SET slot = NULL WHERE incident = ?1 AND slot IS NOT NULL",
                    [incident],
                )?;
            }
            tx.commit()?;
            if forget {
                c.pragma_update(None, "secure_delete", false)?;
                // The write-ahead log still holds the pages as they were:
                // copy them home and empty it.
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            }
            Ok(true)
        })
        .await
    }

    async fn open_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        ballots: Vec<(String, String)>,
        slots: Vec<(String, String)>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE postmortems SET phase = 'voting', body = ?1, version = version + 1
                 WHERE incident = ?2 AND version = ?3 AND phase = 'round'",
                params![body, incident, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO pm_ballots (token_hash, incident, content) VALUES (?1, ?2, ?3)",
                )?;
                let mut ballots = ballots;
                ballots.sort();
                for (hash, filler) in &ballots {
                    st.execute(params![hash, incident, filler])?;
                }
                let mut st = tx.prepare_cached(
                    "UPDATE pm_participants SET slot = ?1 WHERE token_hash = ?2 AND incident = ?3",
                )?;
                for (who, slot) in &slots {
                    st.execute(params![slot, who, incident])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn cast_ballot(
        &self,
        token_hash: String,
        content: String,
        now_ms: u64,
    ) -> Result<BallotOutcome, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let found: Option<(i64, bool, String, i64)> = tx
                .query_row(
                    "SELECT b.incident, (b.content IS NOT NULL AND substr(b.content, 1, 1) <> 'u'),
                        p.phase, p.expires_ms
                     FROM pm_ballots b JOIN postmortems p ON p.incident = b.incident
                     WHERE b.token_hash = ?1",
                    [&token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((incident, cast, phase, expires_ms)) = found else {
                return Ok(BallotOutcome::Unknown);
            };
            if phase != "voting" || now_ms >= expires_ms as u64 {
                return Ok(BallotOutcome::NotOpen);
            }
            if cast {
                return Ok(BallotOutcome::Repeated);
            }
            // In place: the content has its filler's length, so the row
            // keeps its place in the page (storage order stays hash order).
            tx.pragma_update(None, "secure_delete", true)?;
            tx.execute(
                "UPDATE pm_ballots SET content = ?1 WHERE token_hash = ?2
                 AND (content IS NULL OR substr(content, 1, 1) = 'u')",
                params![content, token_hash],
            )?;
            tx.commit()?;
            c.pragma_update(None, "secure_delete", false)?;
            Ok(BallotOutcome::Cast(incident))
        })
        .await
    }

    async fn close_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        cast: u64,
        scrub_uncast: String,
        scrub_cast: String,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now_cast: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM pm_ballots WHERE incident = ?1 AND {CAST}"),
                [incident],
                |r| r.get(0),
            )?;
            if now_cast as u64 != cast {
                return Ok(false);
            }
            let n = tx.execute(
                "UPDATE postmortems SET phase = 'closed', body = ?1, version = version + 1
                 WHERE incident = ?2 AND version = ?3 AND phase = 'voting'",
                params![body, incident, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            tx.pragma_update(None, "secure_delete", true)?;
            tx.execute(
                "UPDATE pm_participants SET slot = NULL WHERE incident = ?1 AND slot IS NOT NULL",
                [incident],
            )?;
            tx.execute(
                &format!(
                    "UPDATE pm_ballots SET content = CASE WHEN {CAST} THEN ?1 ELSE ?2 END
                     WHERE incident = ?3"
                ),
                params![scrub_cast, scrub_uncast, incident],
            )?;
            tx.commit()?;
            c.pragma_update(None, "secure_delete", false)?;
            // The write-ahead log still holds the pages as they were: copy
            // them home and empty it.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(true)
        })
        .await
    }

    async fn claim_seat(
        &self,
        old_hash: String,
        old_slot: Option<String>,
        new_hash: String,
        seal_key: String,
        slot: Option<String>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE pm_participants SET token_hash = ?1, seal_key = ?2, slot = ?3, claimed = 1
                 WHERE token_hash = ?4 AND claimed = 0 AND slot IS ?5",
                params![new_hash, seal_key, slot, old_hash, old_slot],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn ballot(&self, token_hash: String) -> Result<Option<(i64, bool)>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT incident, {CAST} FROM pm_ballots WHERE token_hash = ?1"),
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }

    async fn ballot_contents(&self, incident: i64) -> Result<Vec<String>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT content FROM pm_ballots WHERE incident = ?1 AND {CAST} ORDER BY token_hash"
            ))?;
            let rows = st.query_map([incident], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn add_action(&self, a: ActionRow) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO pm_actions (incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)",
                params![
                    a.incident,
                    a.proposal,
                    a.text,
                    a.owner,
                    a.due_ms as i64,
                    a.created_ms as i64
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn actions(
        &self,
        open_only: bool,
        incident: Option<i64>,
    ) -> Result<Vec<ActionRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by
                 FROM pm_actions
                 WHERE (?1 = 0 OR done_ms IS NULL) AND (?2 IS NULL OR incident = ?2)
                 ORDER BY id LIMIT 10000",
            )?;
            let rows = st.query_map(params![open_only as i64, incident], |r| {
                Ok(ActionRow {
                    id: r.get(0)?,
                    incident: r.get(1)?,
                    proposal: r.get(2)?,
                    text: r.get(3)?,
                    owner: r.get(4)?,
                    due_ms: r.get::<_, i64>(5)? as u64,
                    created_ms: r.get::<_, i64>(6)? as u64,
                    done_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    done_by: r.get(8)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn finish_action(&self, id: i64, done_ms: u64, by: String) -> Result<bool, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE pm_actions SET done_ms = ?1, done_by = ?2 WHERE id = ?3 AND done_ms IS NULL",
                params![done_ms as i64, by, id],
            )?;
            Ok(n == 1)
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
