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

mod sqlite;

pub use sqlite::SqliteStore;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot migrate store {path} to schema {version}: {source}")]
    Migrate {
        path: String,
        version: usize,
        source: rusqlite::Error,
    },
    #[error("store {path} has schema version {found}, newer than this gemba knows ({known}); upgrade gemba")]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
    #[error("store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("store task failed: {0}")]
    Task(String),
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

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Appends a journal line; returns its sequence number.
    async fn append(&self, row: JournalRow) -> Result<i64, StoreError>;
    /// The journal of one escalation, oldest first.
    async fn journal(&self, escalation: u64) -> Result<Vec<JournalRow>, StoreError>;
    /// The newest `limit` journal lines, newest first.
    async fn recent_journal(&self, limit: usize) -> Result<Vec<JournalRow>, StoreError>;
    /// Allocates a new escalation id.
    async fn next_escalation_id(&self) -> Result<u64, StoreError>;
    /// Inserts or replaces an escalation record.
    async fn save_escalation(&self, row: EscalationRow) -> Result<(), StoreError>;
    async fn escalation(&self, id: u64) -> Result<Option<EscalationRow>, StoreError>;
    /// Open escalations, and the newest `limit` closed ones.
    async fn escalations(&self, limit: usize) -> Result<Vec<EscalationRow>, StoreError>;
    /// Escalations opened since `since_ms` (rate-limit history).
    async fn opened_since(&self, since_ms: u64) -> Result<Vec<EscalationRow>, StoreError>;
    /// Takes or renews the lease on `scope` for `holder` until
    /// `now_ms + ttl_ms`; false when another holder's lease is still valid.
    async fn acquire_lease(
        &self,
        scope: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError>;
    async fn release_lease(&self, scope: &str, holder: &str) -> Result<(), StoreError>;
    /// The current holder of `scope`'s lease, if valid at `now_ms`.
    async fn lease_holder(&self, scope: &str, now_ms: u64) -> Result<Option<String>, StoreError>;
    /// Claims the right to run one step; true for exactly one caller per
    /// (escalation, attempt, level).
    async fn claim_step(
        &self,
        escalation: u64,
        attempt: u32,
        level: u32,
        holder: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;
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
}
