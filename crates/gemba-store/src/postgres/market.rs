//! The market's tables in PostgreSQL.

use tokio_postgres::Row;

use super::{big, text, MARKET_LOCK};
use crate::market::*;
use crate::{PgStore, StoreError};

/// A statement through the connection's statement cache: the second time
/// it costs one round trip instead of two (parse, then execute).
async fn exec_one(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let st = tx.prepare_cached(sql).await?;
    tx.query_one(&st, params).await
}

impl PgStore {
    async fn read_generation(
        &self,
        c: &impl deadpool_postgres::GenericClient,
    ) -> Result<u64, StoreError> {
        let r = c
            .query_opt(
                "SELECT value FROM market_values WHERE name = $1",
                &[&GENERATION],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.and_then(|r| text(r.get(0)).parse().ok()).unwrap_or(0))
    }
}

const RUN_COLUMNS: &str = "id, key, node, tool, started_ms, duration_ms, status, environment, code_version, total, changed, failed, digest";

/// The pairs with each key once, its last value kept (one statement may
/// not update a row twice).
fn last_wins<'a>(
    pairs: impl DoubleEndedIterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(&str, &str)> = pairs.rev().filter(|(k, _)| seen.insert(*k)).collect();
    out.reverse();
    out
}

fn run_row(r: &Row, with_body: bool) -> RunRow {
    RunRow {
        id: r.get(0),
        key: text(r.get(1)),
        node: r.get(2),
        tool: text(r.get(3)),
        started_ms: r.get::<_, i64>(4) as u64,
        duration_ms: r.get::<_, Option<i64>>(5).map(|v| v as u64),
        status: text(r.get(6)),
        environment: text(r.get(7)),
        code_version: text(r.get(8)),
        total: r.get::<_, i64>(9) as u64,
        changed: r.get::<_, i64>(10) as u64,
        failed: r.get::<_, i64>(11) as u64,
        digest: text(r.get(12)),
        body: if with_body {
            text(r.get(13))
        } else {
            String::new()
        },
    }
}

#[async_trait::async_trait]
impl MarketStore for PgStore {
    async fn known_runs(&self, keys: Vec<String>) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        // Planned for these keys every time (an unnamed statement, sent
        // with its parameter types in one round trip): a cached statement
        // gets a generic plan, made once while the table was small, and
        // that plan scanned the whole runs table for every batch.
        let rows = c
            .query_typed(
                "SELECT key FROM market_runs WHERE key = ANY($1)",
                &[(&bytes, tokio_postgres::types::Type::BYTEA_ARRAY)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let found: std::collections::HashSet<String> =
            rows.into_iter().map(|r| text(r.get(0))).collect();
        Ok(keys.into_iter().filter(|k| found.contains(k)).collect())
    }

    async fn commit(&self, batch: MarketBatch) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        let f = |e| self.failed(e);
        // The lock and the generation in one round trip.
        let row = exec_one(
            &tx,
            "SELECT pg_advisory_xact_lock($1)::TEXT,
                    (SELECT value FROM market_values WHERE name = $2)",
            &[&MARKET_LOCK, &GENERATION],
        )
        .await
        .map_err(f)?;
        let current: u64 = row
            .get::<_, Option<Vec<u8>>>(1)
            .and_then(|v| text(v).parse().ok())
            .unwrap_or(0);
        if batch.generation.is_some_and(|g| g != current) {
            return Err(conflict(current));
        }
        // Each table's rows in one statement (arrays unnested), and the
        // statements pipelined: sent one after the other without waiting
        // for each answer, run by the server in the order sent (the
        // problem rows' deletes before their inserts). Prepared first (from
        // the connection's cache), so that nothing is sent out of order.
        let next = (current + 1).to_string();
        let next = next.as_bytes();
        let r = &batch.runs;
        let bytes = |f: &dyn Fn(&RunRow) -> &str| -> Vec<&[u8]> {
            r.iter().map(|x| f(x).as_bytes()).collect()
        };
        let keys = bytes(&|x| &x.key);
        let nodes: Vec<&str> = r.iter().map(|x| x.node.as_str()).collect();
        let tools = bytes(&|x| &x.tool);
        let started: Vec<i64> = r.iter().map(|x| big(x.started_ms)).collect();
        let durations: Vec<Option<i64>> = r.iter().map(|x| x.duration_ms.map(big)).collect();
        let statuses = bytes(&|x| &x.status);
        let envs = bytes(&|x| &x.environment);
        let versions = bytes(&|x| &x.code_version);
        let totals: Vec<i64> = r.iter().map(|x| big(x.total)).collect();
        let changed: Vec<i64> = r.iter().map(|x| big(x.changed)).collect();
        let failed: Vec<i64> = r.iter().map(|x| big(x.failed)).collect();
        let digests = bytes(&|x| &x.digest);
        let bodies = bytes(&|x| &x.body);

        let start_ids: Vec<&[u8]> = batch.starts.iter().map(|s| s.run_id.as_bytes()).collect();
        let start_nodes: Vec<&str> = batch.starts.iter().map(|s| s.node.as_str()).collect();
        let start_ms: Vec<i64> = batch.starts.iter().map(|s| big(s.started_ms)).collect();

        // One row per problem and per (problem, node): one statement may
        // not update a row twice, so the last of each wins.
        let mut seen = std::collections::HashSet::new();
        let problems: Vec<&ProblemRow> = batch
            .problems
            .iter()
            .rev()
            .filter(|p| seen.insert(p.id))
            .collect();
        let p_ids: Vec<i64> = problems.iter().map(|p| big(p.id)).collect();
        let p_sigs: Vec<&[u8]> = problems.iter().map(|p| p.signature.as_bytes()).collect();
        let p_status: Vec<&str> = problems.iter().map(|p| p.status.as_str()).collect();
        let p_seen: Vec<i64> = problems.iter().map(|p| big(p.last_seen_ms)).collect();
        let p_bodies: Vec<&[u8]> = problems.iter().map(|p| p.body.as_bytes()).collect();
        let replaced: Vec<i64> = problems
            .iter()
            .filter(|p| p.replace_nodes)
            .map(|p| big(p.id))
            .collect();
        let (mut e_problems, mut e_nodes, mut e_bodies) = (Vec::new(), Vec::new(), Vec::new());
        for p in &problems {
            for (n, b) in last_wins(p.nodes.iter().map(|(n, b)| (n.as_str(), b.as_str()))) {
                e_problems.push(big(p.id));
                e_nodes.push(n);
                e_bodies.push(b.as_bytes());
            }
        }
        let node_rows = last_wins(
            batch
                .nodes
                .iter()
                .map(|n| (n.node.as_str(), n.body.as_str())),
        );
        let node_names: Vec<&str> = node_rows.iter().map(|(n, _)| *n).collect();
        let node_bodies: Vec<&[u8]> = node_rows.iter().map(|(_, b)| b.as_bytes()).collect();
        let fine_rows = last_wins(batch.fine.iter().map(|(k, b)| (k.as_str(), b.as_str())));
        let fine_keys: Vec<&[u8]> = fine_rows.iter().map(|(k, _)| k.as_bytes()).collect();
        let fine_bodies: Vec<&[u8]> = fine_rows.iter().map(|(_, b)| b.as_bytes()).collect();

        type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
        let mut work: Vec<(&str, Params)> = vec![(
            "INSERT INTO market_values (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            vec![&GENERATION, &next],
        )];
        if !r.is_empty() {
            work.push((
                "INSERT INTO market_runs (key, node, tool, started_ms, duration_ms, status, environment, code_version, total, changed, failed, digest, body)
                 SELECT * FROM UNNEST($1::BYTEA[], $2::TEXT[], $3::BYTEA[], $4::BIGINT[], $5::BIGINT[], $6::BYTEA[], $7::BYTEA[], $8::BYTEA[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BYTEA[], $13::BYTEA[])
                 ON CONFLICT (key) DO NOTHING",
                vec![
                    &keys, &nodes, &tools, &started, &durations, &statuses, &envs, &versions,
                    &totals, &changed, &failed, &digests, &bodies,
                ],
            ));
        }
        if !start_ids.is_empty() {
            work.push((
                "INSERT INTO market_starts (run_id, node, started_ms)
                 SELECT * FROM UNNEST($1::BYTEA[], $2::TEXT[], $3::BIGINT[])
                 ON CONFLICT (run_id) DO NOTHING",
                vec![&start_ids, &start_nodes, &start_ms],
            ));
        }
        if !p_ids.is_empty() {
            work.push((
                "INSERT INTO market_problems (id, signature, status, last_seen_ms, body)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::TEXT[], $4::BIGINT[], $5::BYTEA[])
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, last_seen_ms = EXCLUDED.last_seen_ms, body = EXCLUDED.body",
                vec![&p_ids, &p_sigs, &p_status, &p_seen, &p_bodies],
            ));
        }
        if !replaced.is_empty() {
            work.push((
                "DELETE FROM market_problem_nodes WHERE problem = ANY($1::BIGINT[])",
                vec![&replaced],
            ));
        }
        if !e_problems.is_empty() {
            work.push((
                "INSERT INTO market_problem_nodes (problem, node, body)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BYTEA[])
                 ON CONFLICT (problem, node) DO UPDATE SET body = EXCLUDED.body",
                vec![&e_problems, &e_nodes, &e_bodies],
            ));
        }
        if !node_names.is_empty() {
            work.push((
                "INSERT INTO market_nodes (node, body) SELECT * FROM UNNEST($1::TEXT[], $2::BYTEA[])
                 ON CONFLICT (node) DO UPDATE SET body = EXCLUDED.body",
                vec![&node_names, &node_bodies],
            ));
        }
        if !fine_keys.is_empty() {
            work.push((
                "INSERT INTO market_fine (key, body) SELECT * FROM UNNEST($1::BYTEA[], $2::BYTEA[])
                 ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body",
                vec![&fine_keys, &fine_bodies],
            ));
        }
        let statements =
            futures_util::future::try_join_all(work.iter().map(|(sql, _)| tx.prepare_cached(sql)))
                .await
                .map_err(f)?;
        futures_util::future::try_join_all(
            statements
                .iter()
                .zip(&work)
                .map(|(st, (_, params))| tx.execute(st, params)),
        )
        .await
        .map_err(f)?;
        tx.commit().await.map_err(f)
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        self.read_generation(&c).await
    }

    async fn problems(&self) -> Result<Vec<ProblemRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, signature, status, last_seen_ms, body FROM market_problems ORDER BY id",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let mut list: Vec<ProblemRow> = rows
            .iter()
            .map(|r| ProblemRow {
                id: r.get::<_, i64>(0) as u64,
                signature: text(r.get(1)),
                status: r.get(2),
                last_seen_ms: r.get::<_, i64>(3) as u64,
                body: text(r.get(4)),
                nodes: Vec::new(),
                replace_nodes: false,
            })
            .collect();
        let at: std::collections::HashMap<u64, usize> =
            list.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
        let rows = c
            .query("SELECT problem, node, body FROM market_problem_nodes", &[])
            .await
            .map_err(|e| self.failed(e))?;
        for r in rows {
            if let Some(&i) = at.get(&(r.get::<_, i64>(0) as u64)) {
                list[i].nodes.push((r.get(1), text(r.get(2))));
            }
        }
        Ok(list)
    }

    async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT node, body FROM market_nodes ORDER BY node", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                node: r.get(0),
                body: text(r.get(1)),
            })
            .collect())
    }

    async fn fine(&self) -> Result<Vec<(String, String)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT key, body FROM market_fine", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .into_iter()
            .map(|r| (text(r.get(0)), text(r.get(1))))
            .collect())
    }

    async fn recent_digests(
        &self,
        since_ms: u64,
        per_node: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // Per node through the (node, started_ms) index, in one statement.
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT n.node, r.digest FROM market_nodes n
                 CROSS JOIN LATERAL (
                    SELECT started_ms, digest FROM market_runs
                    WHERE node = n.node AND started_ms >= $1
                    ORDER BY started_ms DESC LIMIT $2
                 ) r
                 ORDER BY r.started_ms",
                &[&big(since_ms), &big(per_node as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), text(r.get(1))))
            .collect())
    }

    async fn node_runs(&self, node: &str, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM market_runs WHERE node = $1 ORDER BY started_ms DESC LIMIT $2"
                ),
                &[&node, &big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| run_row(r, false)).collect())
    }

    async fn runs_after(&self, id: i64, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM market_runs WHERE id > $1 ORDER BY id LIMIT $2"
                ),
                &[&id, &big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| run_row(r, false)).collect())
    }

    async fn run(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {RUN_COLUMNS}, body FROM market_runs WHERE key = $1"),
                &[&key.as_bytes()],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| run_row(&r, true)))
    }

    async fn run_counts(&self, since_ms: u64, until_ms: u64) -> Result<RunCounts, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        // Grouped by node (a hash of 100,000 nodes; work_mem raised for
        // this statement so it stays in memory) rather than COUNT(DISTINCT),
        // which sorts every run of the day.
        let tx = c.transaction().await.map_err(f)?;
        tx.execute("SELECT set_config('work_mem', '32MB', true)", &[])
            .await
            .map_err(f)?;
        let r = tx
            .query_one(
                "SELECT COALESCE(SUM(runs), 0)::BIGINT, COALESCE(SUM(failed), 0)::BIGINT, COUNT(*)
                 FROM (SELECT node, COUNT(*) AS runs,
                              COUNT(*) FILTER (WHERE status = 'failed'::bytea) AS failed
                       FROM market_runs WHERE started_ms >= $1 AND started_ms < $2
                       GROUP BY node) AS per_node",
                &[&big(since_ms), &big(until_ms)],
            )
            .await
            .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(RunCounts {
            runs: r.get::<_, i64>(0) as u64,
            failed: r.get::<_, i64>(1) as u64,
            nodes: r.get::<_, i64>(2) as u64,
        })
    }

    async fn get_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt("SELECT value FROM market_values WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| text(r.get(0))))
    }

    async fn set_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO market_values (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value.as_bytes()],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn prune_runs(&self, before_ms: u64) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        let n = tx
            .execute(
                "DELETE FROM market_runs WHERE started_ms < $1",
                &[&big(before_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.execute(
            "DELETE FROM market_starts WHERE started_ms < $1",
            &[&big(before_ms)],
        )
        .await
        .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(n)
    }
}
