//! The market's tables in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::market::*;
use crate::{SqliteStore, StoreError};

fn generation(c: &rusqlite::Connection) -> Result<u64, rusqlite::Error> {
    let v: Option<String> = c
        .query_row(
            "SELECT value FROM market_values WHERE name = ?1",
            [GENERATION],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn run_row(r: &rusqlite::Row<'_>, with_body: bool) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        key: r.get(1)?,
        node: r.get(2)?,
        tool: r.get(3)?,
        started_ms: r.get::<_, i64>(4)? as u64,
        duration_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        status: r.get(6)?,
        environment: r.get(7)?,
        code_version: r.get(8)?,
        total: r.get::<_, i64>(9)? as u64,
        changed: r.get::<_, i64>(10)? as u64,
        failed: r.get::<_, i64>(11)? as u64,
        digest: r.get(12)?,
        body: if with_body { r.get(13)? } else { String::new() },
    })
}

const RUN_COLUMNS: &str = "id, key, node, tool, started_ms, duration_ms, status, environment, code_version, total, changed, failed, digest";

#[async_trait::async_trait]
impl MarketStore for SqliteStore {
    async fn known_runs(&self, keys: Vec<String>) -> Result<Vec<String>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached("SELECT 1 FROM market_runs WHERE key = ?1")?;
            let mut known = Vec::new();
            for k in keys {
                if stmt.exists([&k])? {
                    known.push(k);
                }
            }
            Ok(known)
        })
        .await
    }

    async fn commit(&self, batch: MarketBatch) -> Result<(), StoreError> {
        let stale = self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current = generation(&tx)?;
            if batch.generation.is_some_and(|g| g != current) {
                return Ok(Some(current));
            }
            tx.execute(
                "INSERT INTO market_values (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![GENERATION, (current + 1).to_string()],
            )?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO market_runs (key, node, tool, started_ms, duration_ms, status, environment, code_version, total, changed, failed, digest, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT(key) DO NOTHING",
                )?;
                for r in &batch.runs {
                    ins.execute(params![
                        r.key,
                        r.node,
                        r.tool,
                        r.started_ms as i64,
                        r.duration_ms.map(|d| d as i64),
                        r.status,
                        r.environment,
                        r.code_version,
                        r.total as i64,
                        r.changed as i64,
                        r.failed as i64,
                        r.digest,
                        r.body
                    ])?;
                }
                let mut start = tx.prepare_cached(
                    "INSERT INTO market_starts (run_id, node, started_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(run_id) DO NOTHING",
                )?;
                for s in &batch.starts {
                    start.execute(params![s.run_id, s.node, s.started_ms as i64])?;
                }
                let mut prob = tx.prepare_cached(
                    "INSERT INTO market_problems (id, signature, status, last_seen_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(id) DO UPDATE SET status = excluded.status, last_seen_ms = excluded.last_seen_ms, body = excluded.body",
                )?;
                let mut clear =
                    tx.prepare_cached("DELETE FROM market_problem_nodes WHERE problem = ?1")?;
                let mut evidence = tx.prepare_cached(
                    "INSERT INTO market_problem_nodes (problem, node, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT(problem, node) DO UPDATE SET body = excluded.body",
                )?;
                for p in &batch.problems {
                    prob.execute(params![p.id as i64, p.signature, p.status, p.last_seen_ms as i64, p.body])?;
                    if p.replace_nodes {
                        clear.execute([p.id as i64])?;
                    }
                    for (node, body) in &p.nodes {
                        evidence.execute(params![p.id as i64, node, body])?;
                    }
                }
                let mut node = tx.prepare_cached(
                    "INSERT INTO market_nodes (node, body) VALUES (?1, ?2)
                     ON CONFLICT(node) DO UPDATE SET body = excluded.body",
                )?;
                for n in &batch.nodes {
                    node.execute(params![n.node, n.body])?;
                }
                let mut fine = tx.prepare_cached(
                    "INSERT INTO market_fine (key, body) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET body = excluded.body",
                )?;
                for (key, body) in &batch.fine {
                    fine.execute(params![key, body])?;
                }
            }
            tx.commit()?;
            Ok(None)
        })
        .await?;
        match stale {
            None => Ok(()),
            Some(now) => Err(conflict(now)),
        }
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        self.with(|c| generation(c)).await
    }

    async fn problems(&self) -> Result<Vec<ProblemRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, signature, status, last_seen_ms, body FROM market_problems ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ProblemRow {
                    id: r.get::<_, i64>(0)? as u64,
                    signature: r.get(1)?,
                    status: r.get(2)?,
                    last_seen_ms: r.get::<_, i64>(3)? as u64,
                    body: r.get(4)?,
                    nodes: Vec::new(),
                    replace_nodes: false,
                })
            })?;
            let mut list: Vec<ProblemRow> = rows.collect::<Result<_, _>>()?;
            let at: std::collections::HashMap<u64, usize> =
                list.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
            let mut stmt = c.prepare("SELECT problem, node, body FROM market_problem_nodes")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id = r.get::<_, i64>(0)? as u64;
                if let Some(&i) = at.get(&id) {
                    list[i].nodes.push((r.get(1)?, r.get(2)?));
                }
            }
            Ok(list)
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT node, body FROM market_nodes ORDER BY node")?;
            let rows = stmt.query_map([], |r| {
                Ok(NodeRow {
                    node: r.get(0)?,
                    body: r.get(1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn fine(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT key, body FROM market_fine")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn recent_digests(
        &self,
        since_ms: u64,
        per_node: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // Per node through the (node, started_ms) index: a window over
        // every stored run took seconds once there were millions.
        self.with(move |c| {
            let nodes: Vec<String> = {
                let mut stmt = c.prepare("SELECT node FROM market_nodes")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut stmt = c.prepare(
                "SELECT started_ms, digest FROM market_runs
                 WHERE node = ?1 AND started_ms >= ?2 ORDER BY started_ms DESC LIMIT ?3",
            )?;
            let mut out: Vec<(u64, String, String)> = Vec::new();
            for node in nodes {
                let rows = stmt
                    .query_map(params![node, since_ms as i64, per_node as i64], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
                    })?;
                for row in rows {
                    let (at, digest) = row?;
                    out.push((at, node.clone(), digest));
                }
            }
            out.sort_by_key(|(at, _, _)| *at);
            Ok(out.into_iter().map(|(_, n, d)| (n, d)).collect())
        })
        .await
    }

    async fn node_runs(&self, node: &str, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let node = node.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM market_runs WHERE node = ?1 ORDER BY started_ms DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![node, limit as i64], |r| run_row(r, false))?;
            rows.collect()
        })
        .await
    }

    async fn runs_after(&self, id: i64, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM market_runs WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![id, limit as i64], |r| run_row(r, false))?;
            rows.collect()
        })
        .await
    }

    async fn run(&self, key: &str) -> Result<Option<RunRow>, StoreError> {
        let key = key.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS}, body FROM market_runs WHERE key = ?1"),
                [key],
                |r| run_row(r, true),
            )
            .optional()
        })
        .await
    }

    async fn run_counts(&self, since_ms: u64, until_ms: u64) -> Result<RunCounts, StoreError> {
        self.with(move |c| {
            c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(status = 'failed'), 0), COUNT(DISTINCT node)
                 FROM market_runs WHERE started_ms >= ?1 AND started_ms < ?2",
                params![since_ms as i64, until_ms as i64],
                |r| {
                    Ok(RunCounts {
                        runs: r.get::<_, i64>(0)? as u64,
                        failed: r.get::<_, i64>(1)? as u64,
                        nodes: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
        .await
    }

    async fn get_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT value FROM market_values WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn set_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let (name, value) = (name.to_string(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO market_values (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map(|_| ())
        })
        .await
    }

    async fn prune_runs(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM market_runs WHERE started_ms < ?1",
                [before_ms as i64],
            )?;
            c.execute(
                "DELETE FROM market_starts WHERE started_ms < ?1",
                [before_ms as i64],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
