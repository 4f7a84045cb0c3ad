//! The embedded SQLite store: one file in the data directory, WAL so that
//! readers never block the writer, a busy timeout so that two server
//! processes sharing the file wait for each other instead of failing, and
//! numbered migrations tracked in `PRAGMA user_version`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{EscalationRow, JournalRow, OutboxRow, Store, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: the escalator's journal, records, leases and step claims.
    "CREATE TABLE journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        escalation INTEGER,
        scope TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        server TEXT NOT NULL
    );
    CREATE INDEX journal_escalation ON journal(escalation, seq);
    CREATE TABLE escalations (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        phase TEXT NOT NULL,
        open INTEGER NOT NULL,
        opened_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX escalations_open ON escalations(open, updated_ms);
    CREATE TABLE escalation_ids (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER);
    CREATE TABLE leases (
        scope TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE step_claims (
        escalation INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        level INTEGER NOT NULL,
        holder TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (escalation, attempt, level)
    );",
    // 2: notices waiting for delivery (retried until delivered or expired).
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        next_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox(next_ms);",
];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let p = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: p.clone(),
            source,
        })?;
        Self::setup(conn, &p)
    }

    /// A private in-memory store (tests, `gemba simulate`).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn, ":memory:")
    }

    fn setup(mut conn: Connection, path: &str) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_string(),
            source,
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let v = i + 1;
            let mig = |source| StoreError::Migrate {
                path: path.to_string(),
                version: v,
                source,
            };
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(mig)?;
            // Another server may have migrated while we waited for the lock.
            let now: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(mig)?;
            if now as usize >= v {
                continue;
            }
            tx.execute_batch(sql).map_err(mig)?;
            tx.pragma_update(None, "user_version", v as i64)
                .map_err(mig)?;
            tx.commit().map_err(mig)?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| StoreError::Task("store lock poisoned".into()))?;
            f(&mut c).map_err(StoreError::Query)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
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

    async fn next_escalation_id(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.execute("INSERT INTO escalation_ids (at) VALUES (0)", [])?;
            Ok(c.last_insert_rowid() as u64)
        })
        .await
    }

    async fn save_escalation(&self, row: EscalationRow) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO escalations (id, scope, phase, open, opened_ms, updated_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET scope = excluded.scope, phase = excluded.phase, open = excluded.open,
                 updated_ms = excluded.updated_ms, body = excluded.body",
                params![row.id as i64, row.scope, row.phase, row.open, row.opened_ms as i64, row.updated_ms as i64, row.body],
            )?;
            Ok(())
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
    ) -> Result<bool, StoreError> {
        let (scope, holder) = (scope.to_string(), holder.to_string());
        self.with(move |c| {
            let n = c.execute(
                "INSERT INTO leases (scope, holder, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(scope) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4",
                params![scope, holder, (now_ms + ttl_ms) as i64, now_ms as i64],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError> {
        let (scope, holder) = (scope.to_string(), holder.to_string());
        self.with(move |c| {
            c.execute(
                "DELETE FROM leases WHERE scope = ?1 AND holder = ?2",
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
        escalation: u64,
        attempt: u32,
        level: u32,
        holder: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let holder = holder.to_string();
        self.with(move |c| {
            let n = c.execute(
                "INSERT INTO step_claims (escalation, attempt, level, holder, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![escalation as i64, attempt, level, holder, now_ms as i64],
            )?;
            Ok(n == 1)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "gemba-store-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires() {
        let s = SqliteStore::in_memory().unwrap();
        assert!(s.acquire_lease("node:a", "s1", 1000, 30_000).await.unwrap());
        assert!(!s.acquire_lease("node:a", "s2", 2000, 30_000).await.unwrap());
        assert!(
            s.acquire_lease("node:a", "s1", 20_000, 30_000)
                .await
                .unwrap(),
            "the holder renews"
        );
        assert_eq!(
            s.lease_holder("node:a", 20_001).await.unwrap().as_deref(),
            Some("s1")
        );
        assert!(
            s.acquire_lease("node:a", "s2", 50_000, 30_000)
                .await
                .unwrap(),
            "expired lease goes to the next"
        );
        s.release_lease("node:a", "s1").await.unwrap();
        assert_eq!(
            s.lease_holder("node:a", 50_001).await.unwrap().as_deref(),
            Some("s2"),
            "only the holder releases"
        );
    }

    #[tokio::test]
    async fn a_step_is_claimed_once_across_two_connections_to_one_file() {
        let d = dir();
        let a = SqliteStore::open(&d.join("gemba.db")).unwrap();
        let b = SqliteStore::open(&d.join("gemba.db")).unwrap();
        assert!(a.claim_step(7, 1, 4, "s1", 1).await.unwrap());
        assert!(!b.claim_step(7, 1, 4, "s2", 2).await.unwrap());
        assert!(b.claim_step(7, 2, 4, "s2", 3).await.unwrap());
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn records_and_journal_survive_reopening() {
        let d = dir();
        let path = d.join("gemba.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            let id = s.next_escalation_id().await.unwrap();
            s.save_escalation(EscalationRow {
                id,
                scope: "node:a".into(),
                phase: "quiescing".into(),
                open: true,
                opened_ms: 5,
                updated_ms: 6,
                body: "{}".into(),
            })
            .await
            .unwrap();
            s.append(JournalRow {
                seq: 0,
                escalation: Some(id),
                scope: "node:a".into(),
                at_ms: 5,
                kind: "decision".into(),
                text: "opened".into(),
                server: "s1".into(),
            })
            .await
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let open = s.escalations(10).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].phase, "quiescing");
        let j = s.journal(open[0].id).await.unwrap();
        assert_eq!(j[0].text, "opened");
        assert_eq!(s.next_escalation_id().await.unwrap(), open[0].id + 1);
        let _ = std::fs::remove_dir_all(d);
    }
}
