//! The shared store: PostgreSQL, for several gemba servers on one database
//! the team already runs and backs up. A pool of connections (tokio-postgres
//! through deadpool); every statement lives here, none in the stages.
//!
//! Migrations run per stage under a transaction-scoped advisory lock, so
//! servers starting together migrate once. Journal lines are appended under
//! an advisory lock too: followers read the journal by sequence number, and
//! with concurrent writers a sequence number taken earlier could otherwise
//! commit later and be skipped.

mod escalations;
mod events;
mod incidents;
mod market;
mod postmortems;
mod series;
mod tls;

use std::time::Duration;

use self::tls::{Check, SslModeName, TlsWish};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};

use crate::migrations::{Backend, StageSchema, STAGES};
use crate::{Connection, Fence, StoreError};

/// Advisory lock keys (any 64-bit numbers no other tool on the database
/// is likely to use: "gemba" and a number).
const MIGRATION_LOCK: i64 = 0x6765_6d62_6100_0001;
pub(crate) const JOURNAL_LOCK: i64 = 0x6765_6d62_6100_0002;
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
    /// Leases judged, and journal lines stamped, by the `now_ms` callers
    /// pass instead of PostgreSQL's clock (tests that drive time by hand).
    callers_clock: bool,
}

/// PostgreSQL's clock in ms since the epoch: what lease times are judged
/// on, so that every server sharing the database judges alike.
pub(crate) const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

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
            tls::split_url(url).map_err(|e| bad(format!("connection string: {e}")))?;
        let mut cfg: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| bad(format!("not a PostgreSQL connection string: {e}")))?;
        cfg.ssl_mode(tls.driver_mode());
        let location = shown(&cfg);
        let local = is_local(&cfg);
        let tls_config = tls::client_config(&tls).map_err(|reason| StoreError::Open {
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
            callers_clock: false,
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

    /// Judges leases by the `now_ms` callers pass, not by PostgreSQL's
    /// clock: for tests that drive time by hand (the store contract's).
    pub fn judging_leases_by_callers_clock(mut self) -> PgStore {
        self.callers_clock = true;
        self
    }

    /// The time to judge a lease at, or to stamp a journal line with:
    /// `None` is PostgreSQL's clock.
    pub(crate) fn store_now(&self, now_ms: u64) -> Option<i64> {
        self.callers_clock.then(|| big(now_ms))
    }

    pub(crate) fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Query(format!("PostgreSQL at {}: {}", self.shown, reason(&e)))
    }

    /// Whether `fence` is its scope's current lease term, and, given a
    /// time and a grace, still holds for that long after it (on
    /// PostgreSQL's clock unless judging by callers'). The row stays locked
    /// until `tx` ends, so no other server takes the lease between this
    /// check and the write.
    async fn holds(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        fence: &Fence,
        until: Option<(u64, u64)>,
    ) -> Result<crate::Lease, StoreError> {
        use crate::Lease;
        let (now, grace) = until.unwrap_or((0, 0));
        let r = tx
            .query_opt(
                &format!(
                    "SELECT holder, fence, expires_ms > COALESCE($2::bigint, {DB_NOW}),
                        expires_ms > COALESCE($2::bigint, {DB_NOW}) + $3::bigint
                     FROM leases WHERE scope = $1 FOR SHARE"
                ),
                &[&fence.scope, &self.store_now(now), &big(grace)],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let Some(r) = r else {
            return Ok(Lease::Lost);
        };
        if r.get::<_, String>(0) != fence.holder || r.get::<_, i64>(1) as u64 != fence.token {
            return Ok(Lease::Lost);
        }
        Ok(match (until, r.get::<_, bool>(2), r.get::<_, bool>(3)) {
            (None, _, _) | (Some(_), true, true) => Lease::Held,
            (Some(_), true, false) => Lease::Short,
            (Some(_), false, _) => Lease::Lost,
        })
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

/// Milliseconds and counts as PostgreSQL's BIGINT.
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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
