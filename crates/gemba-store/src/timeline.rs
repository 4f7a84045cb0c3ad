//! The timeline's tables behind their own trait: change events (what,
//! when, tags, who) with their tags indexed for queries, and a few named
//! values (the followers' cursors). An event may carry an origin key
//! (`journal:17`, `run:<key>`): a second event with the same origin is
//! not stored, so a follower that replays after a restart adds nothing.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A stored change event. `tags` are `key=value` or bare words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: u64,
    pub end_ms: Option<u64>,
    pub kind: String,
    pub what: String,
    pub tags: Vec<String>,
    pub text: String,
    pub author: String,
    pub link: String,
    /// Where it came from: api, graphite, grafana, escalator, market.
    pub source: String,
    pub origin: Option<String>,
}

/// Which events a query wants: those overlapping `[since_ms, until_ms]`
/// that carry every tag in `tags`, newest first, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub since_ms: u64,
    pub until_ms: u64,
    pub tags: Vec<String>,
    pub kind: Option<String>,
    pub limit: usize,
}

#[async_trait::async_trait]
pub trait TimelineStore: Send + Sync {
    /// Stores the events in one transaction; for each, its id, or `None`
    /// when an event with the same origin is stored already.
    async fn add_events(&self, events: Vec<EventRow>) -> Result<Vec<Option<i64>>, StoreError>;
    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError>;
    async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError>;
    async fn timeline_value(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_timeline_value(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// Removes events that ended before `before_ms`; returns how many.
    async fn prune_events(&self, before_ms: u64) -> Result<u64, StoreError>;
}
