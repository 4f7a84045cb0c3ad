//! The embedded SQLite store: one file in the data directory, WAL so that
//! readers never block the writer, a busy timeout so that two server
//! processes sharing the file wait for each other instead of failing, and
//! numbered migrations tracked in `PRAGMA user_version`.

pub mod check;
mod escalations;
mod events;
mod incidents;
mod market;
mod postmortems;
mod series;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::migrations::{StageSchema, STAGES};
use crate::{Fence, Lease, StoreError};

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
        // A damaged file is found before anything is written to it.
        if let Some(damage) = check::check_conn(&conn, check::Depth::Quick) {
            return Err(StoreError::Corrupt {
                path: path.to_string(),
                what: damage.describe(),
                recovery: check::Damage::recovery(path),
            });
        }
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

/// Bytes an unprivileged writer may still use on the file system holding
/// `path` (`None` for an in-memory store or when it cannot be read).
pub(super) fn free_bytes(path: &str) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    if path.is_empty() {
        return None;
    }
    let dir = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable
    // statvfs the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether `fence` is its scope's current lease term, and, given a time
/// and a grace, still holds for that long after it.
pub(super) fn holds(
    c: &Connection,
    fence: &Fence,
    until: Option<(u64, u64)>,
) -> Result<Lease, rusqlite::Error> {
    let row: Option<(String, i64, i64)> = c
        .query_row(
            "SELECT holder, fence, expires_ms FROM leases WHERE scope = ?1",
            [&fence.scope],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match row {
        Some((holder, token, expires)) if holder == fence.holder && token as u64 == fence.token => {
            match until {
                Some((now, _)) if expires <= now as i64 => Lease::Lost,
                Some((now, grace)) if expires <= now.saturating_add(grace) as i64 => Lease::Short,
                _ => Lease::Held,
            }
        }
        _ => Lease::Lost,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

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
            err.to_string().starts_with(&format!(
                "store {} is damaged: the file cannot be read as a store (file is not a database). To recover: restore",
                path.display()
            )),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
