//! The embedded SQLite store: one file in the data directory, WAL so that
//! readers never block the writer, a busy timeout so that two server
//! processes sharing the file wait for each other instead of failing, and
//! numbered migrations tracked in `PRAGMA user_version`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::migrations::{StageSchema, STAGES};
use crate::{Claim, EscalationRow, Fence, JournalRow, OutboxRow, Pruned, Store, StoreError};

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

/// `PRAGMA user_version` of stores written before stages had their own
/// versions held the escalator's version (1 or 2). Stores now hold this
/// value there instead, so that an older gemba refuses them as too new
/// rather than misreading the schema.
const STAGED_USER_VERSION: i64 = 1000;

/// How often opening is tried again while another server holds the file
/// (100 ms apart).
const OPEN_TRIES: u32 = 100;

fn is_locked(e: &StoreError) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("database is busy")
}

fn reason(e: rusqlite::Error) -> String {
    e.to_string()
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`. Blocking: call
    /// it through [`crate::open`] from async code.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            gemba_core::secret::create_private_dir(dir).map_err(|e| StoreError::Open {
                path: p.clone(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        // A new store is open to its owner only; SQLite gives its -wal and
        // -shm files the mode of the store file.
        gemba_core::secret::touch_private(path).map_err(|e| StoreError::Open {
            path: p.clone(),
            reason: format!("cannot create {}: {e}", path.display()),
        })?;
        // Servers starting together on a new file race for it: switching
        // it to WAL and the first migration can answer "locked" before the
        // busy timeout applies. The loser waits and opens it again.
        let mut tries = 0;
        loop {
            let opened = Connection::open(path)
                .map_err(|e| StoreError::Open {
                    path: p.clone(),
                    reason: reason(e),
                })
                .and_then(|conn| Self::setup(conn, &p));
            match opened {
                Err(e) if tries < OPEN_TRIES && is_locked(&e) => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// A private in-memory store (tests, `gemba simulate`).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: ":memory:".into(),
            reason: reason(e),
        })?;
        Self::setup(conn, ":memory:")
    }

    fn setup(mut conn: Connection, path: &str) -> Result<SqliteStore, StoreError> {
        let open_err = |e| StoreError::Open {
            path: path.to_string(),
            reason: reason(e),
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let legacy: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if legacy > STAGED_USER_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                stage: "store".into(),
                found: legacy,
                known: STAGED_USER_VERSION as usize,
            });
        }
        {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(open_err)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_stages (
                    stage TEXT PRIMARY KEY,
                    version INTEGER NOT NULL
                )",
            )
            .map_err(open_err)?;
            if (1..STAGED_USER_VERSION).contains(&legacy) {
                tx.execute(
                    "INSERT OR IGNORE INTO schema_stages (stage, version) VALUES ('escalator', ?1)",
                    [legacy],
                )
                .map_err(open_err)?;
            }
            tx.pragma_update(None, "user_version", STAGED_USER_VERSION)
                .map_err(open_err)?;
            tx.commit().map_err(open_err)?;
        }
        for stage in STAGES {
            migrate_stage(&mut conn, path, stage)?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| StoreError::Task("store lock poisoned".into()))?;
            f(&mut c).map_err(|e| StoreError::Query(reason(e)))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Whether `fence` is its scope's current lease term (and, given a time,
/// unexpired then).
fn holds(c: &Connection, fence: &Fence, now_ms: Option<u64>) -> Result<bool, rusqlite::Error> {
    let row: Option<(String, i64, i64)> = c
        .query_row(
            "SELECT holder, fence, expires_ms FROM leases WHERE scope = ?1",
            [&fence.scope],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.is_some_and(|(holder, token, expires)| {
        holder == fence.holder
            && token as u64 == fence.token
            && now_ms.is_none_or(|now| expires > now as i64)
    }))
}

/// Brings one stage up to its newest schema, one transaction per step.
/// Another server may migrate the same file at the same time: each step
/// re-reads the version under the write lock.
fn migrate_stage(conn: &mut Connection, path: &str, stage: &StageSchema) -> Result<(), StoreError> {
    for (i, sql) in stage.sqlite.iter().enumerate() {
        let v = i + 1;
        let mig = |e| StoreError::Migrate {
            path: path.to_string(),
            stage: stage.name,
            version: v,
            reason: reason(e),
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(mig)?;
        let now: i64 = tx
            .query_row(
                "SELECT version FROM schema_stages WHERE stage = ?1",
                [stage.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(mig)?
            .unwrap_or(0);
        if now as usize > stage.sqlite.len() {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                stage: stage.name.to_string(),
                found: now,
                known: stage.sqlite.len(),
            });
        }
        if now as usize >= v {
            continue;
        }
        tx.execute_batch(sql).map_err(mig)?;
        tx.execute(
            "INSERT INTO schema_stages (stage, version) VALUES (?1, ?2)
             ON CONFLICT(stage) DO UPDATE SET version = excluded.version",
            params![stage.name, v as i64],
        )
        .map_err(mig)?;
        tx.commit().map_err(mig)?;
    }
    Ok(())
}

fn journal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JournalRow> {
    Ok(JournalRow {
        seq: r.get(0)?,
        escalation: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
        scope: r.get(2)?,
        at_ms: r.get::<_, i64>(3)? as u64,
        kind: r.get(4)?,
        text: r.get(5)?,
        server: r.get(6)?,
    })
}

fn escalation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EscalationRow> {
    Ok(EscalationRow {
        id: r.get::<_, i64>(0)? as u64,
        scope: r.get(1)?,
        phase: r.get(2)?,
        open: r.get(3)?,
        opened_ms: r.get::<_, i64>(4)? as u64,
        updated_ms: r.get::<_, i64>(5)? as u64,
        body: r.get(6)?,
    })
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        target: r.get(1)?,
        body: r.get(2)?,
        created_ms: r.get::<_, i64>(3)? as u64,
        next_ms: r.get::<_, i64>(4)? as u64,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
    })
}

const OUTBOX_COLS: &str = "id, target, body, created_ms, next_ms, attempts, last_error";
const ESC_COLS: &str = "id, scope, phase, open, opened_ms, updated_ms, body";
const JOURNAL_COLS: &str = "seq, escalation, scope, at_ms, kind, text, server";

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn append(&self, row: JournalRow) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO journal (escalation, scope, at_ms, kind, text, server) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.escalation.map(|v| v as i64), row.scope, row.at_ms as i64, row.kind, row.text, row.server],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn journal(&self, escalation: u64) -> Result<Vec<JournalRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOURNAL_COLS} FROM journal WHERE escalation = ?1 ORDER BY seq"
            ))?;
            let rows = st.query_map([escalation as i64], journal_row)?;
            rows.collect()
        })
        .await
    }

    async fn recent_journal(&self, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOURNAL_COLS} FROM journal ORDER BY seq DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit as i64], journal_row)?;
            rows.collect()
        })
        .await
    }

    async fn journal_after(&self, seq: i64, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOURNAL_COLS} FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![seq, limit as i64], journal_row)?;
            rows.collect()
        })
        .await
    }

    async fn next_escalation_id(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.execute("INSERT INTO escalation_ids (at) VALUES (0)", [])?;
            Ok(c.last_insert_rowid() as u64)
        })
        .await
    }

    async fn save_escalation(
        &self,
        row: EscalationRow,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        let fence = fence.cloned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(f) = &fence {
                if !holds(&tx, f, None)? {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO escalations (id, scope, phase, open, opened_ms, updated_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET scope = excluded.scope, phase = excluded.phase, open = excluded.open,
                 updated_ms = excluded.updated_ms, body = excluded.body",
                params![row.id as i64, row.scope, row.phase, row.open, row.opened_ms as i64, row.updated_ms as i64, row.body],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn escalation(&self, id: u64) -> Result<Option<EscalationRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {ESC_COLS} FROM escalations WHERE id = ?1"),
                [id as i64],
                escalation_row,
            )
            .optional()
        })
        .await
    }

    async fn escalations(&self, limit: usize) -> Result<Vec<EscalationRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ESC_COLS} FROM escalations WHERE open = 1
                 UNION ALL
                 SELECT * FROM (SELECT {ESC_COLS} FROM escalations WHERE open = 0 ORDER BY updated_ms DESC LIMIT ?1)"
            ))?;
            let rows = st.query_map([limit as i64], escalation_row)?;
            let mut v: Vec<EscalationRow> = rows.collect::<Result<_, _>>()?;
            v.sort_by_key(|e| std::cmp::Reverse(e.id));
            Ok(v)
        })
        .await
    }

    async fn opened_since(&self, since_ms: u64) -> Result<Vec<EscalationRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ESC_COLS} FROM escalations WHERE opened_ms >= ?1 OR open = 1"
            ))?;
            let rows = st.query_map([since_ms as i64], escalation_row)?;
            rows.collect()
        })
        .await
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError> {
        let (scope, holder) = (scope.to_string(), holder.to_string());
        self.with(move |c| {
            let token: Option<i64> = c
                .query_row(
                    "INSERT INTO leases (scope, holder, expires_ms, fence) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT(scope) DO UPDATE SET
                       fence = CASE WHEN leases.holder = excluded.holder THEN leases.fence ELSE leases.fence + 1 END,
                       holder = excluded.holder, expires_ms = excluded.expires_ms
                     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4
                     RETURNING fence",
                    params![scope, holder, now_ms.saturating_add(ttl_ms) as i64, now_ms as i64],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(token.map(|t| Fence {
                scope,
                holder,
                token: t as u64,
            }))
        })
        .await
    }

    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError> {
        let (scope, holder) = (scope.to_string(), holder.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE leases SET expires_ms = 0 WHERE scope = ?1 AND holder = ?2",
                params![scope, holder],
            )?;
            Ok(())
        })
        .await
    }

    async fn lease_holder(&self, scope: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let scope = scope.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT holder FROM leases WHERE scope = ?1 AND expires_ms > ?2",
                params![scope, now_ms as i64],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn claim_step(
        &self,
        fence: &Fence,
        escalation: u64,
        attempt: u32,
        level: u32,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        let fence = fence.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !holds(&tx, &fence, Some(now_ms))? {
                return Ok(Claim::Fenced);
            }
            let n = tx.execute(
                "INSERT INTO step_claims (escalation, attempt, level, holder, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![escalation as i64, attempt, level, fence.holder, now_ms as i64],
            )?;
            tx.commit()?;
            Ok(if n == 1 { Claim::Claimed } else { Claim::Taken })
        })
        .await
    }

    async fn enqueue_notice(
        &self,
        target: &str,
        body: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let (target, body) = (target.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO outbox (target, body, created_ms, next_ms) VALUES (?1, ?2, ?3, ?3)",
                params![target, body, now_ms as i64],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn claim_due_notices(
        &self,
        now_ms: u64,
        claim_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows: Vec<OutboxRow> = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE next_ms <= ?1 ORDER BY next_ms, id LIMIT ?2"
                ))?;
                let rows = st.query_map(params![now_ms as i64, limit as i64], outbox_row)?;
                rows.collect::<Result<_, _>>()?
            };
            for r in &rows {
                tx.execute(
                    "UPDATE outbox SET next_ms = ?1 WHERE id = ?2",
                    params![(now_ms + claim_ms) as i64, r.id],
                )?;
            }
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    async fn notice_done(&self, id: i64) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn notice_failed(
        &self,
        id: i64,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = ?1, next_ms = ?2, last_error = ?3 WHERE id = ?4",
                params![attempts, next_ms as i64, error, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn pending_notices(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {OUTBOX_COLS} FROM outbox ORDER BY id"))?;
            let rows = st.query_map([], outbox_row)?;
            rows.collect()
        })
        .await
    }

    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let cutoff = before_ms as i64;
            let journal = tx.execute(
                "DELETE FROM journal WHERE at_ms < ?1
                 AND (escalation IS NULL OR escalation NOT IN (SELECT id FROM escalations WHERE open = 1))",
                [cutoff],
            )?;
            tx.execute(
                "DELETE FROM step_claims WHERE escalation IN
                 (SELECT id FROM escalations WHERE open = 0 AND updated_ms < ?1)",
                [cutoff],
            )?;
            let escalations = tx.execute(
                "DELETE FROM escalations WHERE open = 0 AND updated_ms < ?1",
                [cutoff],
            )?;
            tx.commit()?;
            Ok(Pruned {
                journal: journal as u64,
                escalations: escalations as u64,
            })
        })
        .await
    }

    async fn schema(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT stage, version FROM schema_stages ORDER BY stage")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        use std::hash::{BuildHasher, Hasher};
        let suffix = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let d = std::env::temp_dir().join(format!("gemba-store-{}-{suffix}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[cfg(unix)]
    #[test]
    fn a_new_store_and_its_directory_are_open_to_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        // Under the usual umask (022), files would be readable by all.
        let data = d.join("data").join("store");
        let path = data.join("gemba.db");
        let store = SqliteStore::open(&path).unwrap();
        // Something written while the store is open, so the WAL and its
        // index exist.
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE probe_write(x); INSERT INTO probe_write VALUES (1);")
            .unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.join("data")), 0o700);
        assert_eq!(mode(&data), 0o700);
        for f in ["gemba.db", "gemba.db-wal", "gemba.db-shm"] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
        drop((c, store));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn servers_opening_a_new_file_at_once_all_get_it() {
        let d = dir();
        let path = d.join("gemba.db");
        let opened: Vec<Result<SqliteStore, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| SqliteStore::open(&path)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in opened {
            assert!(o.is_ok(), "{:?}", o.err());
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_store_from_before_stage_versions_keeps_its_rows_and_gains_the_new_schema() {
        let d = dir();
        let path = d.join("gemba.db");
        {
            // The layout of a store written by the previous release:
            // escalator schema 1, its version in user_version.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(STAGES[0].sqlite[0]).unwrap();
            c.execute(
                "INSERT INTO journal (escalation, scope, at_ms, kind, text, server) VALUES (1, 'node:a', 5, 'decision', 'kept', 's1')",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO leases (scope, holder, expires_ms) VALUES ('node:a', 's1', 1000)",
                [],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.journal(1).await.unwrap()[0].text, "kept");
        assert_eq!(
            s.schema().await.unwrap(),
            vec![
                ("escalator".to_string(), 3),
                ("market".to_string(), 2),
                ("timeline".to_string(), 6)
            ],
            "migrations 2 and 3 (the outbox, fences) ran on top of the old schema, and the later stages' tables were added"
        );
        let held = s.acquire_lease("node:a", "s1", 500, 1000).await.unwrap();
        let next = s.acquire_lease("node:a", "s2", 2000, 1000).await.unwrap();
        assert!(
            held.unwrap().token < next.unwrap().token,
            "a lease from before fences is renewed, then passes on with a larger fence"
        );
        s.enqueue_notice("t", "{}", 1).await.unwrap();
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_store_from_a_newer_gemba_is_refused_by_name() {
        let d = dir();
        let path = d.join("gemba.db");
        drop(SqliteStore::open(&path).unwrap());
        {
            let c = Connection::open(&path).unwrap();
            c.execute(
                "UPDATE schema_stages SET version = 99 WHERE stage = 'escalator'",
                [],
            )
            .unwrap();
        }
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(
            err.to_string()
                .contains("schema 99 for stage escalator, newer than this gemba knows"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_a_clear_open_error() {
        let d = dir();
        let path = d.join("gemba.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot open store {}", path.display())),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
