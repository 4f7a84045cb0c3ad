//! The market's tables behind their own trait: runs (indexed fields, the
//! digest detectors replay at start, and the full parsed run), Chef run
//! starts, problems, node summaries and a few named values (the PuppetDB
//! cursor, the last publication). [`MarketStore::commit`] writes a batch
//! of runs with the problems and nodes they changed in one transaction:
//! what it acknowledges is all stored, or none of it.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A stored run. `body` is the parsed run as JSON; lists leave it out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub id: i64,
    pub key: String,
    pub node: String,
    pub tool: String,
    pub started_ms: u64,
    pub duration_ms: Option<u64>,
    pub status: String,
    pub environment: String,
    pub code_version: String,
    pub total: u64,
    pub changed: u64,
    pub failed: u64,
    /// What detectors replay at start, as JSON.
    pub digest: String,
    pub body: String,
}

/// A Chef run that started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartRow {
    pub run_id: String,
    pub node: String,
    pub started_ms: u64,
}

/// A problem: indexed fields, the record as JSON, and its evidence per
/// node in rows of their own (a problem on many nodes is rewritten one
/// node at a time, not whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProblemRow {
    pub id: u64,
    pub signature: String,
    pub status: String,
    pub last_seen_ms: u64,
    pub body: String,
    /// (node, evidence as JSON): in a commit, the rows to write; loaded,
    /// every row.
    pub nodes: Vec<(String, String)>,
    /// In a commit: `nodes` is all of them; drop the stored rows first.
    pub replace_nodes: bool,
}

/// A node's summary as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub node: String,
    pub body: String,
}

/// One commit: runs with what they changed.
#[derive(Clone, Debug, Default)]
pub struct MarketBatch {
    pub runs: Vec<RunRow>,
    pub starts: Vec<StartRow>,
    pub problems: Vec<ProblemRow>,
    pub nodes: Vec<NodeRow>,
    /// Changed entries of the detectors' index of resources that ran fine
    /// (resource key, JSON).
    pub fine: Vec<(String, String)>,
    /// The market's generation the writer's memory was built from: the
    /// commit is refused ([`StoreError::Conflict`]) when another server
    /// committed since, so problems computed from an old picture never
    /// overwrite newer ones. None writes regardless (tools, imports).
    pub generation: Option<u64>,
}

/// Counts over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCounts {
    pub runs: u64,
    pub failed: u64,
    pub nodes: u64,
}

/// Where the market's generation is kept, among the named values.
pub(crate) const GENERATION: &str = "generation";

pub(crate) fn conflict(now: u64) -> StoreError {
    StoreError::Conflict(format!(
        "another server wrote the market since (it is at generation {now})"
    ))
}

#[async_trait::async_trait]
pub trait MarketStore: Send + Sync {
    /// Which of `keys` are stored already.
    async fn known_runs(&self, keys: Vec<String>) -> Result<Vec<String>, StoreError>;
    /// Writes the batch in one transaction, and counts one more market
    /// generation. A run whose key is stored is left as it is.
    async fn commit(&self, batch: MarketBatch) -> Result<(), StoreError>;
    /// The market's generation: how many commits it has seen.
    async fn generation(&self) -> Result<u64, StoreError>;
    async fn problems(&self) -> Result<Vec<ProblemRow>, StoreError>;
    async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError>;
    /// The detectors' index of resources that ran fine (key, JSON).
    async fn fine(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Digests of each node's newest `per_node` runs since `since_ms`
    /// (node, digest), oldest first.
    async fn recent_digests(
        &self,
        since_ms: u64,
        per_node: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// A node's newest runs, without bodies.
    async fn node_runs(&self, node: &str, limit: usize) -> Result<Vec<RunRow>, StoreError>;
    /// Runs stored after row `id`, oldest first, without bodies.
    async fn runs_after(&self, id: i64, limit: usize) -> Result<Vec<RunRow>, StoreError>;
    /// One run with its body.
    async fn run(&self, key: &str) -> Result<Option<RunRow>, StoreError>;
    async fn run_counts(&self, since_ms: u64, until_ms: u64) -> Result<RunCounts, StoreError>;
    async fn get_value(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_value(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// Removes runs started before `before_ms`; returns how many.
    async fn prune_runs(&self, before_ms: u64) -> Result<u64, StoreError>;
}
