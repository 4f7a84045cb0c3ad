//! Metric series and their tiers of points in SQLite.

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
impl SeriesStore for SqliteStore {
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
}
