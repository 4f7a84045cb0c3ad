//! Metric series and their tiers of points in PostgreSQL.

use super::big;
use crate::timeline::*;
use crate::{PgStore, StoreError};

#[async_trait::async_trait]
impl SeriesStore for PgStore {
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
}
