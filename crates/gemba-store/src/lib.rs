//! The store: where servers keep what must survive a restart and be shared
//! between servers — the escalation journal, escalation records, the
//! leases that keep every step at most once, and the notices not yet
//! delivered.
//!
//! Callers see only the [`Store`] trait, written in terms of rows and
//! plain values so that a PostgreSQL implementation can sit behind it
//! without a caller changing: every operation is one statement or one
//! short transaction, time is passed in (unix ms), and the lease and step
//! claims are single conditional writes that any SQL database executes
//! atomically.
//!
//! Each stage owns its tables and numbers its own migrations
//! ([`migrations::STAGES`]), so that a new stage adds a list instead of
//! renumbering another's. [`conformance`] is the contract every
//! implementation must pass, written against the trait alone.
//!
//! Each backend is a folder (`sqlite/`, `postgres/`) holding one file
//! per group of tables: `escalations.rs` ([`Store`]), `market.rs`
//! ([`MarketStore`]), and the timeline's four traits, `events.rs`,
//! `series.rs`, `incidents.rs` and `postmortems.rs`.

pub mod conformance;
pub mod copy;
mod market;
mod migrations;
mod postgres;
mod sqlite;
pub mod throwaway;
mod timeline;

pub use market::{MarketBatch, MarketStore, NodeRow, ProblemRow, RunCounts, RunRow, StartRow};
pub use migrations::{Backend, StageSchema, STAGES};
pub use postgres::PgStore;
/// Looking for damage in an SQLite store (`gemba store check`, and at every
/// open).
pub use sqlite::check as sqlite_check;
pub use sqlite::SqliteStore;
pub use timeline::{
    ActionRow, BallotOutcome, ChangeRow, EventFilter, EventRow, EventStore, IncidentRow,
    IncidentStore, ParticipantRow, Point, PointCounts, PostmortemRow, PostmortemStore, SeriesKey,
    SeriesStore, Tier, TimelineStore,
};

use serde::{Deserialize, Serialize};

/// Why the store failed. Carries no driver types, so that callers (and a
/// second implementation) see the same errors whatever database is behind.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("cannot migrate store {path}: stage {stage} to schema {version}: {reason}")]
    Migrate {
        path: String,
        stage: &'static str,
        version: usize,
        reason: String,
    },
    #[error("store {path} has schema {found} for stage {stage}, newer than this gemba knows ({known}); upgrade gemba")]
    TooNew {
        path: String,
        stage: String,
        found: i64,
        known: usize,
    },
    #[error("store {path} is damaged: {what}. To recover: {recovery}")]
    Corrupt {
        path: String,
        what: String,
        recovery: String,
    },
    #[error("store query failed: {0}")]
    Query(String),
    /// A write built on a picture another server has changed since: read
    /// again and redo it.
    #[error("the store changed since it was read: {0}")]
    Conflict(String),
    #[error("store task failed: {0}")]
    Task(String),
}

pub use gemba_core::StoreLocation;

/// How a fence's lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lease {
    Held,
    /// Held, for less than the grace asked.
    Short,
    /// Another term, another holder, or expired.
    Lost,
}

/// A server whose clock is further than this from its store's is skewed:
/// it says so and takes no new leases until its clock is back.
pub const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// What a server whose clock is `skew_ms` off the store's is told (and
/// tells): the same words in the log, the journal and `/healthz`.
pub fn clock_skew_words(skew_ms: i64) -> String {
    format!(
        "this server's clock is {} s {} the store's: it takes no new leases until its clock is fixed (NTP)",
        (skew_ms.unsigned_abs() + 500) / 1000,
        if skew_ms > 0 { "ahead of" } else { "behind" }
    )
}

/// This host's clock (`local_ms`, read before and after) minus the store's,
/// for a store with a clock of its own; `None` for SQLite (one host, one
/// clock).
pub async fn clock_skew(
    store: &dyn Store,
    local_ms: impl Fn() -> u64,
) -> Result<(Option<i64>, Probe), StoreError> {
    let before = local_ms();
    let probe = store.probe().await?;
    let after = local_ms();
    // The store read its clock somewhere between before and after.
    let skew = probe
        .clock_ms
        .map(|c| ((before + after) / 2) as i64 - c as i64);
    Ok((skew, probe))
}

/// What [`Store::probe`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The store's own clock (PostgreSQL's), in ms since the epoch; `None`
    /// when the store's clock is this host's (SQLite).
    pub clock_ms: Option<u64>,
    /// Bytes left for the store's file on its disk (SQLite).
    pub free_bytes: Option<u64>,
}

/// Every table a server keeps, behind one handle: each stage takes the
/// trait it needs from it.
pub trait Stores: Store + MarketStore + TimelineStore {}
impl<T: Store + MarketStore + TimelineStore> Stores for T {}

/// Opens the store at `location`, creating and migrating it. SQLite's work
/// (file creation, busy waits, migrations) runs on a blocking thread, so
/// that a slow disk or a lock held by another server never stalls the
/// async threads that answer probes; PostgreSQL's is asynchronous.
pub async fn open(location: &StoreLocation) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(open_any(location).await?)
}

/// Opens the store at `location` as every stage's tables.
pub async fn open_any(location: &StoreLocation) -> Result<std::sync::Arc<dyn Stores>, StoreError> {
    match location {
        StoreLocation::Sqlite(_) => Ok(std::sync::Arc::new(open_sqlite(location).await?)),
        StoreLocation::Postgres { .. } => Ok(std::sync::Arc::new(open_postgres(location).await?)),
    }
}

/// Connects to (and migrates) the PostgreSQL store at `location`, its
/// password read from its password file if it names one.
pub async fn open_postgres(location: &StoreLocation) -> Result<PgStore, StoreError> {
    match location {
        StoreLocation::Postgres { url, password_file } => {
            let password = match password_file {
                Some(path) => Some(read_password(path)?),
                None => None,
            };
            PgStore::connect(url, password).await
        }
        other => Err(StoreError::Open {
            path: other.to_string(),
            reason: "not a PostgreSQL database (postgres://user@host:port/db)".into(),
        }),
    }
}

/// A password file's first line; refused when others may read it.
fn read_password(path: &std::path::Path) -> Result<String, StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |reason: String| StoreError::Open {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("password file: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(fail(format!(
            "password file is open to group or others (mode {:o}); chmod 600 it",
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("password file: {e}")))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(fail("password file is empty".into()));
    }
    Ok(line)
}

/// Opens (creating and migrating) the SQLite file on a blocking thread.
async fn open_sqlite(location: &StoreLocation) -> Result<SqliteStore, StoreError> {
    match location.clone() {
        StoreLocation::Sqlite(path) => {
            let shown = path.display().to_string();
            tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|e| StoreError::Open {
                    path: shown,
                    reason: format!("opening task failed: {e}"),
                })?
        }
        other => Err(StoreError::Open {
            path: other.to_string(),
            reason: "not an SQLite file".into(),
        }),
    }
}

/// Opens the market's tables at `location`: its own connection (or pool),
/// so that a large batch of reports never waits behind the escalator.
pub async fn open_market(
    location: &StoreLocation,
) -> Result<std::sync::Arc<dyn MarketStore>, StoreError> {
    Ok(open_any(location).await?)
}

/// Opens the timeline's tables at `location` on their own connection (or
/// pool); the handle also reads the market's runs.
pub async fn open_timeline(
    location: &StoreLocation,
) -> Result<std::sync::Arc<dyn Stores>, StoreError> {
    if let StoreLocation::Sqlite(_) = location {
        let s = open_sqlite(location).await?;
        s.tune_for_series().await?;
        return Ok(std::sync::Arc::new(s));
    }
    open_any(location).await
}

/// What [`Store::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    pub journal: u64,
    pub escalations: u64,
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalRow {
    pub seq: i64,
    pub escalation: Option<u64>,
    pub scope: String,
    pub at_ms: u64,
    pub kind: String,
    pub text: String,
    /// The server that wrote it.
    pub server: String,
}

/// An escalation record: indexed fields plus the full record as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EscalationRow {
    pub id: u64,
    pub scope: String,
    pub phase: String,
    pub open: bool,
    pub opened_ms: u64,
    pub updated_ms: u64,
    pub body: String,
}

/// A notice waiting for delivery to one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    /// The target, as JSON.
    pub target: String,
    /// The notice, as JSON.
    pub body: String,
    pub created_ms: u64,
    /// When it is due (next try, or the end of a sender's claim).
    pub next_ms: u64,
    pub attempts: u32,
    pub last_error: String,
}

/// Proof of a lease: the scope, its holder and the token the store gave
/// when this term of the lease began. Tokens only grow, so the store can
/// refuse the writes of a server whose lease went to another even when
/// that server (paused, cut off) does not know it yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub scope: String,
    pub holder: String,
    pub token: u64,
}

/// The answer to a step claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This server runs the step.
    Claimed,
    /// The step was claimed before (by this server or another).
    Taken,
    /// The fence is stale or the lease expired: the caller no longer
    /// manages the scope and must run nothing.
    Fenced,
    /// The lease holds, but for less than the step's grace: renew it
    /// first (a step is never started on a lease about to lapse).
    Short,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Appends a journal line; returns its sequence number.
    async fn append(&self, row: JournalRow) -> Result<i64, StoreError>;
    /// The journal of one escalation, oldest first.
    async fn journal(&self, escalation: u64) -> Result<Vec<JournalRow>, StoreError>;
    /// The newest `limit` journal lines, newest first.
    async fn recent_journal(&self, limit: usize) -> Result<Vec<JournalRow>, StoreError>;
    /// Journal lines after `seq`, oldest first, at most `limit`.
    async fn journal_after(&self, seq: i64, limit: usize) -> Result<Vec<JournalRow>, StoreError>;
    /// Allocates a new escalation id.
    async fn next_escalation_id(&self) -> Result<u64, StoreError>;
    /// Inserts or replaces an escalation record. With a fence, only while
    /// that fence is the scope's current one: false (nothing written) when
    /// the lease passed to another server since.
    async fn save_escalation(
        &self,
        row: EscalationRow,
        fence: Option<&Fence>,
    ) -> Result<bool, StoreError>;
    async fn escalation(&self, id: u64) -> Result<Option<EscalationRow>, StoreError>;
    /// Open escalations, and the newest `limit` closed ones.
    async fn escalations(&self, limit: usize) -> Result<Vec<EscalationRow>, StoreError>;
    /// Escalations opened since `since_ms` (rate-limit history).
    async fn opened_since(&self, since_ms: u64) -> Result<Vec<EscalationRow>, StoreError>;
    /// Takes or renews the lease on `scope` for `holder` until
    /// `now_ms + ttl_ms`; None when another holder's lease is still valid.
    /// The fence changes only when the holder does: a new holder gets a
    /// larger token than any before on that scope; a holder renewing (even
    /// after its lease lapsed or was released, with nobody in between)
    /// keeps its own.
    async fn acquire_lease(
        &self,
        scope: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError>;
    /// Ends `holder`'s lease on `scope` now; the scope's fence is kept, so
    /// the next term gets a larger one.
    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError>;
    /// The current holder of `scope`'s lease, if valid at `now_ms`.
    async fn lease_holder(&self, scope: &str, now_ms: u64) -> Result<Option<String>, StoreError>;
    /// Claims the right to run one step: [`Claim::Claimed`] for exactly one
    /// caller per (escalation, attempt, level), and only while `fence` is
    /// the scope's current lease and holds for at least `grace_ms` more.
    ///
    /// Lease times (here, in [`Store::acquire_lease`] and
    /// [`Store::lease_holder`]) are judged on the store's clock: PostgreSQL's
    /// own, whatever the calling server's says (`now_ms` is then unused,
    /// unless the store was set to judge by its callers' clocks, for tests
    /// that drive time by hand); for SQLite the one host's, which is
    /// `now_ms`.
    async fn claim_step(
        &self,
        fence: &Fence,
        escalation: u64,
        attempt: u32,
        level: u32,
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<Claim, StoreError>;
    /// Queues a notice for one target, due now.
    async fn enqueue_notice(
        &self,
        target: &str,
        body: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError>;
    /// Takes up to `limit` due notices and makes them not due for
    /// `claim_ms`, so that one server sends each (another takes it over
    /// if the sender stops before it reports).
    async fn claim_due_notices(
        &self,
        now_ms: u64,
        claim_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Delivered (or dropped): removes it.
    async fn notice_done(&self, id: i64) -> Result<(), StoreError>;
    /// A try failed: due again at `next_ms`.
    async fn notice_failed(
        &self,
        id: i64,
        attempts: u32,
        next_ms: u64,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Every notice not yet delivered, oldest first.
    async fn pending_notices(&self) -> Result<Vec<OutboxRow>, StoreError>;
    /// Retention: removes journal lines written before `before_ms` and
    /// closed escalations last updated before it, with their step claims.
    /// Open escalations and their journal are kept whatever their age.
    async fn prune(&self, before_ms: u64) -> Result<Pruned, StoreError>;
    /// Each stage's schema version, as migrated (stage name, version).
    async fn schema(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// A cheap look at whether the store can take work now (one query),
    /// with the store's clock when it has one of its own and the room left
    /// on a file's disk.
    async fn probe(&self) -> Result<Probe, StoreError>;
    /// For a store across the network, how its connections are protected;
    /// None for a local file.
    fn connection_security(&self) -> Option<Connection> {
        None
    }
}

/// How a server's connections to a networked store are protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// In words: "TLSv1.3, certificate and host name checked
    /// (sslmode=verify-full)", "plain: the server offers no TLS …".
    pub text: String,
    pub encrypted: bool,
    /// The database is on this machine (loopback or a Unix socket).
    pub local: bool,
}

impl Connection {
    /// Plain text crossing a network: worth a warning.
    pub fn exposed(&self) -> bool {
        !self.encrypted && !self.local
    }
}
