//! The shared store: PostgreSQL, for several gemba servers on one database
//! the team already runs and backs up. A pool of connections (tokio-postgres
//! through deadpool); every statement lives here, none in the stages.
//!
//! Migrations run per stage under a transaction-scoped advisory lock, so
//! servers starting together migrate once. Journal lines are appended under
//! an advisory lock too: followers read the journal by sequence number, and
//! with concurrent writers a sequence number taken earlier could otherwise
//! commit later and be skipped.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::Row;

use crate::pg_tls::{self, Check, SslModeName, TlsWish};

use crate::migrations::{Backend, StageSchema, STAGES};
use crate::{
    Claim, Connection, EscalationRow, Fence, JournalRow, OutboxRow, Pruned, Store, StoreError,
};

/// Advisory lock keys (any 64-bit numbers no other tool on the database
/// is likely to use: "gemba" and a number).
const MIGRATION_LOCK: i64 = 0x6765_6d62_6100_0001;
const JOURNAL_LOCK: i64 = 0x6765_6d62_6100_0002;
/// Market commits, one at a time: runs are followed by id too, and two
/// batches updating one problem must not interleave.
pub(crate) const MARKET_LOCK: i64 = 0x6765_6d62_6100_0003;
/// Opening an incident: the check that its escalations are in none yet
/// and the insert, one server at a time.
pub(crate) const INCIDENT_LOCK: i64 = 0x6765_6d62_6100_0004;

/// Connections per server.
const POOL_SIZE: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The location without its password, for messages.
    shown: String,
    /// What TLS the connection string asked for.
    tls: TlsWish,
    /// The protocol the first connection got ("TLSv1.3"), None if plain.
    tls_version: Option<String>,
    /// Connected over loopback or a Unix socket: plain is no exposure.
    local: bool,
}

/// Whether every host of `cfg` is this machine (a Unix socket, a loopback
/// address or `localhost`).
fn is_local(cfg: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let addrs = cfg.get_hostaddrs();
    if !addrs.is_empty() {
        return addrs.iter().all(|a| a.is_loopback());
    }
    cfg.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
    })
}

/// Where a connection string points, without its password.
fn shown(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        cfg.get_user().unwrap_or(""),
        cfg.get_dbname().unwrap_or("")
    )
}

/// What went wrong, with the server's own message when it sent one
/// (the driver's display says only "db error").
pub(crate) fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        // The driver's own words are short ("error connecting to server"):
        // the causes say what happened (connection refused, reset, ...).
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and migrates
    /// every stage. The password: in the URL, else `password`, else the
    /// `PGPASSWORD` environment variable.
    pub async fn connect(url: &str, password: Option<String>) -> Result<PgStore, StoreError> {
        let bad = |reason: String| StoreError::Open {
            path: url.split('@').next_back().unwrap_or("").to_string(),
            reason,
        };
        let (rest, tls) =
            pg_tls::split_url(url).map_err(|e| bad(format!("connection string: {e}")))?;
        let mut cfg: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| bad(format!("not a PostgreSQL connection string: {e}")))?;
        cfg.ssl_mode(tls.driver_mode());
        let location = shown(&cfg);
        let local = is_local(&cfg);
        let tls_config = pg_tls::client_config(&tls).map_err(|reason| StoreError::Open {
            path: location.clone(),
            reason,
        })?;
        if cfg.get_password().is_none() {
            if let Some(p) = password.or_else(|| std::env::var("PGPASSWORD").ok()) {
                cfg.password(p);
            }
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        cfg.application_name("gemba");
        let manager = Manager::from_config(
            cfg,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls_config),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Open {
                path: location.clone(),
                reason: e.to_string(),
            })?;
        let mut store = PgStore {
            pool,
            shown: location,
            tls,
            tls_version: None,
            local,
        };
        store.migrate().await?;
        store.tls_version = store.session_tls().await?;
        Ok(store)
    }

    /// The TLS version of a pooled connection, None when it is plain.
    async fn session_tls(&self) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                &[],
            )
            .await
            .map_err(|e| StoreError::Query(reason(&e)))?;
        Ok(row.map(|r| r.get::<_, String>(0)))
    }

    /// How the connections to the database are protected: the TLS
    /// version and how far the server's certificate is checked, in words.
    pub fn connection(&self) -> Connection {
        let mode = self.tls.mode.as_str();
        let text = match &self.tls_version {
            None if self.tls.mode == SslModeName::Disable => "plain (sslmode=disable)".into(),
            None if self.local => {
                format!("plain, on this machine: the server offers no TLS (sslmode={mode})")
            }
            None => format!("plain: the server offers no TLS (sslmode={mode})"),
            Some(v) => {
                let checked = match self.tls.check() {
                    Check::Nothing => "certificate not checked",
                    Check::Chain => "certificate chain checked",
                    Check::ChainAndName => "certificate and host name checked",
                };
                format!("{v}, {checked} (sslmode={mode})")
            }
        };
        Connection {
            text,
            encrypted: self.tls_version.is_some(),
            local: self.local,
        }
    }

    /// Where it is, without the password.
    pub fn location(&self) -> &str {
        &self.shown
    }

    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            let why = match e {
                deadpool_postgres::PoolError::Backend(e) => reason(&e),
                deadpool_postgres::PoolError::Timeout(_) => {
                    format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
                }
                e => e.to_string(),
            };
            StoreError::Query(format!("cannot reach PostgreSQL at {}: {why}", self.shown))
        })
    }

    pub(crate) fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Query(format!("PostgreSQL at {}: {}", self.shown, reason(&e)))
    }

    /// Whether `fence` is its scope's current lease term (and, given a
    /// time, unexpired then). The row stays locked until `tx` ends, so no
    /// other server takes the lease between this check and the write.
    async fn holds(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        fence: &Fence,
        now_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        let r = tx
            .query_opt(
                "SELECT holder, fence, expires_ms FROM leases WHERE scope = $1 FOR SHARE",
                &[&fence.scope],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.is_some_and(|r| {
            r.get::<_, String>(0) == fence.holder
                && r.get::<_, i64>(1) as u64 == fence.token
                && now_ms.is_none_or(|now| r.get::<_, i64>(2) > big(now))
        }))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.client().await.map_err(|e| StoreError::Open {
            path: self.shown.clone(),
            reason: e.to_string(),
        })?;
        // Under the migration lock: two servers creating it at once would
        // otherwise collide in the catalog.
        let open = |e: tokio_postgres::Error| StoreError::Open {
            path: self.shown.clone(),
            reason: reason(&e),
        };
        let tx = c.transaction().await.map_err(open)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(open)?;
        // Quietly: "already exists, skipping" at every start is no news.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
            CREATE TABLE IF NOT EXISTS gemba_schema_stages (
                stage TEXT PRIMARY KEY,
                version BIGINT NOT NULL
            )",
        )
        .await
        .map_err(open)?;
        tx.commit().await.map_err(open)?;
        for stage in STAGES {
            self.migrate_stage(&mut c, stage).await?;
        }
        Ok(())
    }

    async fn migrate_stage(&self, c: &mut Object, stage: &StageSchema) -> Result<(), StoreError> {
        let known = stage.newest(Backend::Postgres);
        for (i, sql) in stage.postgres.iter().enumerate() {
            let v = (i + 1) as i64;
            let mig = |e: tokio_postgres::Error| StoreError::Migrate {
                path: self.shown.clone(),
                stage: stage.name,
                version: v as usize,
                reason: reason(&e),
            };
            let tx = c.transaction().await.map_err(mig)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(mig)?;
            let now: i64 = tx
                .query_opt(
                    "SELECT version FROM gemba_schema_stages WHERE stage = $1",
                    &[&stage.name],
                )
                .await
                .map_err(mig)?
                .map(|r| r.get(0))
                .unwrap_or(0);
            if now as usize > known {
                return Err(StoreError::TooNew {
                    path: self.shown.clone(),
                    stage: stage.name.to_string(),
                    found: now,
                    known,
                });
            }
            if now >= v {
                continue;
            }
            tx.batch_execute(sql).await.map_err(mig)?;
            tx.execute(
                "INSERT INTO gemba_schema_stages (stage, version) VALUES ($1, $2)
                 ON CONFLICT (stage) DO UPDATE SET version = EXCLUDED.version",
                &[&stage.name, &v],
            )
            .await
            .map_err(mig)?;
            tx.commit().await.map_err(mig)?;
        }
        Ok(())
    }
}

const OUTBOX_COLS: &str = "id, target, body, created_ms, next_ms, attempts, last_error";
const ESC_COLS: &str = "id, scope, phase, open, opened_ms, updated_ms, body";
const JOURNAL_COLS: &str = "seq, escalation, scope, at_ms, kind, text, server";

fn journal_row(r: &Row) -> JournalRow {
    JournalRow {
        seq: r.get(0),
        escalation: r.get::<_, Option<i64>>(1).map(|v| v as u64),
        scope: r.get(2),
        at_ms: r.get::<_, i64>(3) as u64,
        kind: r.get(4),
        text: text(r.get(5)),
        server: r.get(6),
    }
}

fn escalation_row(r: &Row) -> EscalationRow {
    EscalationRow {
        id: r.get::<_, i64>(0) as u64,
        scope: r.get(1),
        phase: r.get(2),
        open: r.get(3),
        opened_ms: r.get::<_, i64>(4) as u64,
        updated_ms: r.get::<_, i64>(5) as u64,
        body: text(r.get(6)),
    }
}

fn outbox_row(r: &Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        target: text(r.get(1)),
        body: text(r.get(2)),
        created_ms: r.get::<_, i64>(3) as u64,
        next_ms: r.get::<_, i64>(4) as u64,
        attempts: r.get::<_, i64>(5) as u32,
        last_error: text(r.get(6)),
    }
}

/// Milliseconds and counts as PostgreSQL's BIGINT.
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn append(&self, row: JournalRow) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&JOURNAL_LOCK])
            .await
            .map_err(|e| self.failed(e))?;
        let r = tx
            .query_one(
                "INSERT INTO journal (escalation, scope, at_ms, kind, text, server)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
                &[
                    &row.escalation.map(big),
                    &row.scope,
                    &big(row.at_ms),
                    &row.kind,
                    &row.text.as_bytes(),
                    &row.server,
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(r.get(0))
    }

    async fn journal(&self, escalation: u64) -> Result<Vec<JournalRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOURNAL_COLS} FROM journal WHERE escalation = $1 ORDER BY seq"),
                &[&big(escalation)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(journal_row).collect())
    }

    async fn recent_journal(&self, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOURNAL_COLS} FROM journal ORDER BY seq DESC LIMIT $1"),
                &[&big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(journal_row).collect())
    }

    async fn journal_after(&self, seq: i64, limit: usize) -> Result<Vec<JournalRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOURNAL_COLS} FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&seq, &big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(journal_row).collect())
    }

    async fn next_escalation_id(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT nextval('escalation_ids')", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    async fn save_escalation(
        &self,
        row: EscalationRow,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        if let Some(f) = fence {
            if !self.holds(&tx, f, None).await? {
                return Ok(false);
            }
        }
        tx.execute(
            "INSERT INTO escalations (id, scope, phase, open, opened_ms, updated_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET scope = EXCLUDED.scope, phase = EXCLUDED.phase,
               open = EXCLUDED.open, updated_ms = EXCLUDED.updated_ms, body = EXCLUDED.body",
            &[
                &big(row.id),
                &row.scope,
                &row.phase,
                &row.open,
                &big(row.opened_ms),
                &big(row.updated_ms),
                &row.body.as_bytes(),
            ],
        )
        .await
        .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(true)
    }

    async fn escalation(&self, id: u64) -> Result<Option<EscalationRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {ESC_COLS} FROM escalations WHERE id = $1"),
                &[&big(id)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.as_ref().map(escalation_row))
    }

    async fn escalations(&self, limit: usize) -> Result<Vec<EscalationRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ESC_COLS} FROM escalations WHERE open
                     UNION ALL
                     (SELECT {ESC_COLS} FROM escalations WHERE NOT open ORDER BY updated_ms DESC LIMIT $1)"
                ),
                &[&big(limit as u64)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let mut v: Vec<EscalationRow> = rows.iter().map(escalation_row).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.id));
        Ok(v)
    }

    async fn opened_since(&self, since_ms: u64) -> Result<Vec<EscalationRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {ESC_COLS} FROM escalations WHERE opened_ms >= $1 OR open"),
                &[&big(since_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(escalation_row).collect())
    }

    async fn acquire_lease(
        &self,
        scope: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "INSERT INTO leases (scope, holder, expires_ms, fence) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (scope) DO UPDATE SET
                   fence = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.fence ELSE leases.fence + 1 END,
                   holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires_ms <= $4
                 RETURNING fence",
                &[&scope, &holder, &big(now_ms.saturating_add(ttl_ms)), &big(now_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| Fence {
            scope: scope.to_string(),
            holder: holder.to_string(),
            token: r.get::<_, i64>(0) as u64,
        }))
    }

    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET expires_ms = 0 WHERE scope = $1 AND holder = $2",
            &[&scope, &holder],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn lease_holder(&self, scope: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT holder FROM leases WHERE scope = $1 AND expires_ms > $2",
                &[&scope, &big(now_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| r.get(0)))
    }

    async fn claim_step(
        &self,
        fence: &Fence,
        escalation: u64,
        attempt: u32,
        level: u32,
        now_ms: u64,
    ) -> Result<Claim, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        if !self.holds(&tx, fence, Some(now_ms)).await? {
            return Ok(Claim::Fenced);
        }
        let n = tx
            .execute(
                "INSERT INTO step_claims (escalation, attempt, level, holder, at_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &big(escalation),
                    &i64::from(attempt),
                    &i64::from(level),
                    &fence.holder,
                    &big(now_ms),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(if n == 1 { Claim::Claimed } else { Claim::Taken })
    }

    async fn enqueue_notice(
        &self,
        target: &str,
        body: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "INSERT INTO outbox (target, body, created_ms, next_ms) VALUES ($1, $2, $3, $3) RETURNING id",
                &[&target.as_bytes(), &body.as_bytes(), &big(now_ms)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.get(0))
    }

    async fn claim_due_notices(
        &self,
        now_ms: u64,
        claim_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let c = self.client().await?;
        // One statement: the rows locked (others' locked rows skipped), made
        // not due for the claim, and returned as they were.
        let rows = c
            .query(
                &format!(
                    "WITH due AS (
                        SELECT id FROM outbox WHERE next_ms <= $1
                        ORDER BY next_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED
                     ), before AS (
                        SELECT {OUTBOX_COLS} FROM outbox WHERE id IN (SELECT id FROM due)
                     ), claimed AS (
                        UPDATE outbox SET next_ms = $3 WHERE id IN (SELECT id FROM due)
                     )
                     SELECT {OUTBOX_COLS} FROM before ORDER BY next_ms, id"
                ),
                &[
                    &big(now_ms),
                    &big(limit as u64),
                    &big(now_ms.saturating_add(claim_ms)),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn notice_done(&self, id: i64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM outbox WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn notice_failed(
        &self,
        id: i64,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE outbox SET attempts = $1, next_ms = $2, last_error = $3 WHERE id = $4",
            &[&i64::from(attempts), &big(next_ms), &error.as_bytes(), &id],
        )
        .await
        .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn pending_notices(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {OUTBOX_COLS} FROM outbox ORDER BY id"),
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError> {
        let mut c = self.client().await?;
        let cutoff = big(before_ms);
        let tx = c.transaction().await.map_err(|e| self.failed(e))?;
        let journal = tx
            .execute(
                "DELETE FROM journal WHERE at_ms < $1
                 AND (escalation IS NULL OR escalation NOT IN (SELECT id FROM escalations WHERE open))",
                &[&cutoff],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.execute(
            "DELETE FROM step_claims WHERE escalation IN
             (SELECT id FROM escalations WHERE NOT open AND updated_ms < $1)",
            &[&cutoff],
        )
        .await
        .map_err(|e| self.failed(e))?;
        let escalations = tx
            .execute(
                "DELETE FROM escalations WHERE NOT open AND updated_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(Pruned {
            journal,
            escalations,
        })
    }

    fn connection_security(&self) -> Option<Connection> {
        Some(self.connection())
    }

    async fn schema(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT stage, version FROM gemba_schema_stages ORDER BY stage",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn a_database_on_this_machine_is_told_from_one_across_the_network() {
        let local = |url: &str| is_local(&url.parse().unwrap());
        assert!(local("postgres://g@127.0.0.1:5432/x"));
        assert!(local("postgres://g@localhost/x"));
        assert!(local("postgres://g@[::1]:5432/x"));
        assert!(local("host=/run/postgresql user=g dbname=x"));
        assert!(!local("postgres://g@db.example.net/x"));
        assert!(!local("postgres://g@10.0.0.5/x"));
        assert!(!local("postgres://g@127.0.0.1,db.example.net/x"));
    }
}
