//! The timeline's tables in PostgreSQL.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Transaction};

use crate::postgres::{big, text, INCIDENT_LOCK};
use crate::timeline::*;
use crate::{PgStore, StoreError};

const EVENT_COLUMNS: &str =
    "id, at_ms, end_ms, kind, what, tags, text, author, link, source, origin";
const PARTICIPANT_COLUMNS: &str = "token_hash, incident, name, seal_key, slot, claimed";

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

fn participant_row(r: &Row) -> ParticipantRow {
    ParticipantRow {
        token_hash: r.get(0),
        incident: r.get(1),
        name: r.get(2),
        seal_key: r.get(3),
        slot: r.get(4),
        claimed: r.get(5),
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

fn action_row(r: &Row) -> ActionRow {
    ActionRow {
        id: r.get(0),
        incident: r.get(1),
        proposal: r.get(2),
        text: r.get(3),
        owner: r.get(4),
        due_ms: r.get::<_, i64>(5) as u64,
        created_ms: r.get::<_, i64>(6) as u64,
        done_ms: r.get::<_, Option<i64>>(7).map(|v| v as u64),
        done_by: r.get(8),
    }
}

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

#[async_trait::async_trait]
impl TimelineStore for PgStore {
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

    async fn series_ids(
        &self,
        keys: Vec<SeriesKey>,
        max_series: u64,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        // One writer of new series at a time, so the cap holds across
        // servers.
        tx.execute(
            "LOCK TABLE timeline_series IN SHARE ROW EXCLUSIVE MODE",
            &[],
        )
        .await
        .map_err(f)?;
        let mut count = tx
            .query_one("SELECT COUNT(*) FROM timeline_series", &[])
            .await
            .map_err(f)?
            .get::<_, i64>(0) as u64;
        let find = tx
            .prepare(
                "SELECT id FROM timeline_series WHERE node = $1 AND process = $2 AND metric = $3",
            )
            .await
            .map_err(f)?;
        let ins = tx
            .prepare(
                "INSERT INTO timeline_series (node, process, metric) VALUES ($1, $2, $3) RETURNING id",
            )
            .await
            .map_err(f)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            let found = tx
                .query_opt(&find, &[&k.node, &k.process, &k.metric])
                .await
                .map_err(f)?;
            match found {
                Some(r) => out.push(Some(r.get(0))),
                None if count < max_series => {
                    let r = tx
                        .query_one(&ins, &[&k.node, &k.process, &k.metric])
                        .await
                        .map_err(f)?;
                    count += 1;
                    out.push(Some(r.get(0)));
                }
                None => out.push(None),
            }
        }
        tx.commit().await.map_err(f)?;
        Ok(out)
    }

    async fn series(&self) -> Result<Vec<(i64, SeriesKey)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, node, process, metric FROM timeline_series ORDER BY node, process, metric",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    SeriesKey {
                        node: r.get(1),
                        process: r.get(2),
                        metric: r.get(3),
                    },
                )
            })
            .collect())
    }

    async fn write_points(&self, mut points: Vec<(i64, u64, f64)>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        // A second value for the same series and second replaces the
        // first: the last one given wins.
        points.sort_by_key(|p| (p.1, p.0));
        points.dedup_by(|later, earlier| {
            if (later.0, later.1) == (earlier.0, earlier.1) {
                earlier.2 = later.2;
                true
            } else {
                false
            }
        });
        let series: Vec<i64> = points.iter().map(|p| p.0).collect();
        let ts: Vec<i64> = points.iter().map(|p| big(p.1)).collect();
        let vs: Vec<f64> = points.iter().map(|p| p.2).collect();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO timeline_head (t, series, v)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::DOUBLE PRECISION[])
             ON CONFLICT (t, series) DO UPDATE SET v = EXCLUDED.v",
            &[&ts, &series, &vs],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn compact(&self, before_s: u64) -> Result<u64, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "WITH moved AS (DELETE FROM timeline_head WHERE t < $1 RETURNING series, t, v)
                 INSERT INTO timeline_raw (series, t, v) SELECT series, t, v FROM moved
                 ORDER BY series, t
                 ON CONFLICT (series, t) DO UPDATE SET v = EXCLUDED.v",
                &[&big(before_s)],
            )
            .await
            .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(n)
    }

    async fn roll_up(
        &self,
        from: Tier,
        to: Tier,
        start_s: u64,
        end_s: u64,
    ) -> Result<u64, StoreError> {
        let width = to.seconds().max(1) as i64;
        let upsert = "ON CONFLICT (series, t) DO UPDATE SET avg = EXCLUDED.avg, min = EXCLUDED.min, max = EXCLUDED.max, n = EXCLUDED.n";
        let sql = match from {
            Tier::Raw => format!(
                "INSERT INTO {to} (series, t, avg, min, max, n)
                 SELECT series, (t / {width}) * {width}, AVG(v), MIN(v), MAX(v), COUNT(*)
                 FROM (SELECT series, t, v FROM timeline_raw WHERE t >= $1 AND t < $2
                       UNION ALL SELECT series, t, v FROM timeline_head WHERE t >= $1 AND t < $2) p
                 GROUP BY series, t / {width} {upsert}",
                to = to.table()
            ),
            _ => format!(
                "INSERT INTO {to} (series, t, avg, min, max, n)
                 SELECT series, (t / {width}) * {width}, SUM(avg * n) / SUM(n), MIN(min), MAX(max), SUM(n)::BIGINT
                 FROM {from} WHERE t >= $1 AND t < $2 GROUP BY series, t / {width} {upsert}",
                to = to.table(),
                from = from.table()
            ),
        };
        let c = self.client().await?;
        c.execute(&sql, &[&big(start_s), &big(end_s)])
            .await
            .map_err(|e| self.failed(e))
    }

    async fn prune_points(&self, tier: Tier, before_s: u64) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let mut n = c
            .execute(
                &format!("DELETE FROM {} WHERE t < $1", tier.table()),
                &[&big(before_s)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if tier == Tier::Raw {
            n += c
                .execute("DELETE FROM timeline_head WHERE t < $1", &[&big(before_s)])
                .await
                .map_err(|e| self.failed(e))?;
        }
        Ok(n)
    }

    async fn points(
        &self,
        series: i64,
        tier: Tier,
        since_s: u64,
        until_s: u64,
    ) -> Result<Vec<Point>, StoreError> {
        let sql = match tier {
            Tier::Raw => "SELECT t, v, v, v FROM timeline_raw WHERE series = $1 AND t >= $2 AND t <= $3
                 UNION ALL
                 SELECT t, v, v, v FROM timeline_head WHERE series = $1 AND t >= $2 AND t <= $3
                 ORDER BY 1"
                .to_string(),
            _ => format!(
                "SELECT t, avg, min, max FROM {} WHERE series = $1 AND t >= $2 AND t <= $3 ORDER BY t",
                tier.table()
            ),
        };
        let c = self.client().await?;
        let rows = c
            .query(&sql, &[&series, &big(since_s), &big(until_s)])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| Point {
                t: r.get::<_, i64>(0) as u64,
                v: r.get(1),
                min: r.get(2),
                max: r.get(3),
            })
            .collect())
    }

    async fn point_counts(&self) -> Result<PointCounts, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT (SELECT COUNT(*) FROM timeline_raw) + (SELECT COUNT(*) FROM timeline_head),
                        (SELECT COUNT(*) FROM timeline_minute),
                        (SELECT COUNT(*) FROM timeline_hour),
                        (SELECT COUNT(*) FROM timeline_series)",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(PointCounts {
            raw: r.get::<_, i64>(0) as u64,
            minute: r.get::<_, i64>(1) as u64,
            hour: r.get::<_, i64>(2) as u64,
            series: r.get::<_, i64>(3) as u64,
        })
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

    async fn add_postmortem(
        &self,
        incident: i64,
        expires_ms: u64,
        body: String,
        participants: Vec<ParticipantRow>,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "INSERT INTO postmortems (incident, phase, expires_ms, version, body)
                 VALUES ($1, 'round', $2, 1, $3) ON CONFLICT DO NOTHING",
                &[&incident, &big(expires_ms), &body],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        for p in &participants {
            tx.execute(
                "INSERT INTO pm_participants (token_hash, incident, name, seal_key, slot, claimed)
                 VALUES ($1, $2, $3, $4, NULL, $5)",
                &[&p.token_hash, &incident, &p.name, &p.seal_key, &p.claimed],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn postmortem(&self, incident: i64) -> Result<Option<PostmortemRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!(
                    "SELECT incident, phase, expires_ms, version, body,
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = $1),
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = $1 AND {CAST})
                 FROM postmortems WHERE incident = $1"
                ),
                &[&incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| PostmortemRow {
            incident: r.get(0),
            phase: r.get(1),
            expires_ms: r.get::<_, i64>(2) as u64,
            version: r.get(3),
            body: r.get(4),
            ballots: r.get::<_, i64>(5) as u64,
            ballots_cast: r.get::<_, i64>(6) as u64,
        }))
    }

    async fn participant(&self, token_hash: String) -> Result<Option<ParticipantRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE token_hash = $1"),
                &[&token_hash],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.as_ref().map(participant_row))
    }

    async fn participants(&self, incident: i64) -> Result<Vec<ParticipantRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE incident = $1 ORDER BY token_hash"
                ),
                &[&incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(participant_row).collect())
    }

    async fn update_postmortem(
        &self,
        incident: i64,
        version: i64,
        phase: String,
        body: String,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "UPDATE postmortems SET phase = $1, body = $2, version = version + 1
                 WHERE incident = $3 AND version = $4",
                &[&phase, &body, &incident, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        if phase != "voting" {
            tx.execute(
                "UPDATE pm_participants SET slot = NULL WHERE incident = $1 AND slot IS NOT NULL",
                &[&incident],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn open_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        ballots: Vec<(String, String)>,
        slots: Vec<(String, String)>,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "UPDATE postmortems SET phase = 'voting', body = $1, version = version + 1
                 WHERE incident = $2 AND version = $3 AND phase = 'round'",
                &[&body, &incident, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        // In hash order, one statement: the rows' order says nothing of who
        // holds which.
        let mut ballots = ballots;
        ballots.sort();
        let (hashes, fillers): (Vec<String>, Vec<String>) = ballots.into_iter().unzip();
        tx.execute(
            "INSERT INTO pm_ballots (token_hash, incident, content)
             SELECT h, $3, f FROM UNNEST($1::TEXT[], $2::TEXT[]) AS t(h, f) ORDER BY h",
            &[&hashes, &fillers, &incident],
        )
        .await
        .map_err(f)?;
        for (who, slot) in &slots {
            tx.execute(
                "UPDATE pm_participants SET slot = $1 WHERE token_hash = $2 AND incident = $3",
                &[slot, who, &incident],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn cast_ballot(
        &self,
        token_hash: String,
        content: String,
        now_ms: u64,
    ) -> Result<BallotOutcome, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        // The post-mortem's row locked: closing waits for this ballot, or
        // this ballot sees it closed.
        let found = tx
            .query_opt(
                "SELECT b.incident, (b.content IS NOT NULL AND substr(b.content, 1, 1) <> 'u'),
                    p.phase, p.expires_ms
                 FROM pm_ballots b JOIN postmortems p ON p.incident = b.incident
                 WHERE b.token_hash = $1 FOR UPDATE",
                &[&token_hash],
            )
            .await
            .map_err(f)?;
        let Some(r) = found else {
            return Ok(BallotOutcome::Unknown);
        };
        let (incident, cast, phase, expires_ms): (i64, bool, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if phase != "voting" || big(now_ms) >= expires_ms {
            return Ok(BallotOutcome::NotOpen);
        }
        if cast {
            return Ok(BallotOutcome::Repeated);
        }
        tx.execute(
            "UPDATE pm_ballots SET content = $1 WHERE token_hash = $2
             AND (content IS NULL OR substr(content, 1, 1) = 'u')",
            &[&content, &token_hash],
        )
        .await
        .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(BallotOutcome::Cast(incident))
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
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        // The post-mortem's row first: a ballot being cast holds it, and
        // once this holds it no ballot gets in.
        let n = tx
            .execute(
                "UPDATE postmortems SET phase = 'closed', body = $1, version = version + 1
                 WHERE incident = $2 AND version = $3 AND phase = 'voting'",
                &[&body, &incident, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        let now_cast: i64 = tx
            .query_one(
                &format!("SELECT COUNT(*) FROM pm_ballots WHERE incident = $1 AND {CAST}"),
                &[&incident],
            )
            .await
            .map_err(f)?
            .get(0);
        if now_cast as u64 != cast {
            return Ok(false);
        }
        tx.execute(
            "UPDATE pm_participants SET slot = NULL WHERE incident = $1 AND slot IS NOT NULL",
            &[&incident],
        )
        .await
        .map_err(f)?;
        tx.execute(
            &format!(
                "UPDATE pm_ballots SET content = CASE WHEN {CAST} THEN $1 ELSE $2 END
                 WHERE incident = $3"
            ),
            &[&scrub_cast, &scrub_uncast, &incident],
        )
        .await
        .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn claim_seat(
        &self,
        old_hash: String,
        old_slot: Option<String>,
        new_hash: String,
        seal_key: String,
        slot: Option<String>,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE pm_participants SET token_hash = $1, seal_key = $2, slot = $3, claimed = TRUE
                 WHERE token_hash = $4 AND NOT claimed AND slot IS NOT DISTINCT FROM $5",
                &[&new_hash, &seal_key, &slot, &old_hash, &old_slot],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(n == 1)
    }

    async fn ballot(&self, token_hash: String) -> Result<Option<(i64, bool)>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT incident, {CAST} FROM pm_ballots WHERE token_hash = $1"),
                &[&token_hash],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| (r.get(0), r.get(1))))
    }

    async fn ballot_contents(&self, incident: i64) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT content FROM pm_ballots WHERE incident = $1 AND {CAST} ORDER BY token_hash"
                ),
                &[&incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn add_action(&self, a: ActionRow) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "INSERT INTO pm_actions (incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL) RETURNING id",
                &[
                    &a.incident,
                    &a.proposal,
                    &a.text,
                    &a.owner,
                    &big(a.due_ms),
                    &big(a.created_ms),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.get(0))
    }

    async fn actions(
        &self,
        open_only: bool,
        incident: Option<i64>,
    ) -> Result<Vec<ActionRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by
                 FROM pm_actions
                 WHERE (NOT $1 OR done_ms IS NULL) AND ($2::BIGINT IS NULL OR incident = $2)
                 ORDER BY id LIMIT 10000",
                &[&open_only, &incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(action_row).collect())
    }

    async fn finish_action(&self, id: i64, done_ms: u64, by: String) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE pm_actions SET done_ms = $1, done_by = $2 WHERE id = $3 AND done_ms IS NULL",
                &[&big(done_ms), &by, &id],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(n == 1)
    }
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
