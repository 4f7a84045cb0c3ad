//! The timeline as the rest of the node sees it: add and query events,
//! and the followers that turn what other stages stored into events —
//! escalation decisions and steps from the journal, configuration runs
//! that changed or failed something from the market's runs. Followers
//! read from a cursor kept in the store and tag every event with its
//! origin, so a restart neither loses nor repeats one.

use gemba_core::journal::JournalKind;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::duration::HumanDuration;
use gemba_core::ids::is_name;
use gemba_exec::Clock;
use gemba_store::{EventFilter, EventRow, MarketStore, Store, StoreError, TimelineStore};

use crate::event::{self, EventError, NewEvent, Source};

/// The most events one query returns.
pub const MAX_LIMIT: usize = 5000;
/// What a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 500;
/// What a query covers when it names no start: the last 7 days.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(7 * 86_400);
/// How often followers look for new journal lines and runs.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);
/// Lines or runs a follower reads per pass.
const FOLLOW_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("{0}")]
    Invalid(#[from] EventError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds and queries events, reads metric series; cheap to clone.
#[derive(Clone)]
pub struct TimelineHandle {
    store: Arc<dyn TimelineStore>,
    clock: Clock,
    /// The newest sample of every process on every node.
    pub latest: crate::series::Latest,
    pub stats: Arc<crate::series::WriterStats>,
    pub retention: crate::series::Retention,
}

/// A query as it arrives (strings from a URL or the CLI).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub since: Option<String>,
    pub until: Option<String>,
    pub tags: Vec<String>,
    pub kind: Option<String>,
    pub limit: Option<usize>,
}

/// A point in time as a query names it: RFC 3339, unix seconds, `now`, or
/// a duration back from now (`2d`, `90m`, also written `-2d`).
pub fn point(text: &str, now_ms: u64) -> Result<u64, EventError> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Ok(s) = t.parse::<u64>() {
        if s > 100_000_000_000 {
            return Err(EventError(format!(
                "{s} looks like milliseconds; use unix seconds, RFC 3339 or a duration like 2d"
            )));
        }
        return Ok(s * 1000);
    }
    if let Ok(d) = t.trim_start_matches('-').parse::<HumanDuration>() {
        return Ok(now_ms.saturating_sub(d.0.as_millis() as u64));
    }
    event::parse_time(t).map_err(|why| {
        EventError(format!(
            "{why}; use RFC 3339, unix seconds, now, or a duration back from now like 2d"
        ))
    })
}

impl Query {
    /// The filter this query means at `now_ms`, or why it is wrong.
    pub fn filter(&self, now_ms: u64) -> Result<EventFilter, EventError> {
        let until_ms = match &self.until {
            Some(u) => point(u, now_ms).map_err(|e| EventError(format!("until: {e}")))?,
            None => now_ms + event::FUTURE_MS,
        };
        let since_ms = match &self.since {
            Some(s) => point(s, now_ms).map_err(|e| EventError(format!("since: {e}")))?,
            None => now_ms.saturating_sub(DEFAULT_SINCE.as_millis() as u64),
        };
        if since_ms > until_ms {
            return Err(EventError("since is after until".into()));
        }
        if self.tags.len() > event::MAX_TAGS {
            return Err(EventError(format!(
                "{} tags; at most {}",
                self.tags.len(),
                event::MAX_TAGS
            )));
        }
        let tags = self
            .tags
            .iter()
            .map(|t| event::tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(k) = &self.kind {
            if !event::KINDS.contains(&k.as_str()) {
                return Err(EventError(format!(
                    "kind {k:?} is not one of {}",
                    event::KINDS.join(", ")
                )));
            }
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(EventError(format!(
                "limit {limit} is out of range 1..={MAX_LIMIT}"
            )));
        }
        Ok(EventFilter {
            since_ms,
            until_ms,
            tags,
            kind: self.kind.clone(),
            limit,
        })
    }
}

impl TimelineHandle {
    pub fn new(store: Arc<dyn TimelineStore>, clock: Clock) -> TimelineHandle {
        TimelineHandle {
            store,
            clock,
            latest: Default::default(),
            stats: Default::default(),
            retention: crate::series::Retention::of(&Default::default()),
        }
    }

    /// With the series kept as `[metrics]` says.
    pub fn with_retention(mut self, retention: crate::series::Retention) -> TimelineHandle {
        self.retention = retention;
        self
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Stores a checked event; its id, or `None` when its origin is stored.
    pub async fn add(&self, e: NewEvent) -> Result<Option<i64>, TimelineError> {
        let ids = self.store.add_events(vec![e.into_row()]).await?;
        Ok(ids.into_iter().next().flatten())
    }

    pub async fn add_all(&self, es: Vec<NewEvent>) -> Result<Vec<Option<i64>>, TimelineError> {
        Ok(self
            .store
            .add_events(es.into_iter().map(NewEvent::into_row).collect())
            .await?)
    }

    pub async fn query(&self, q: &Query) -> Result<Vec<EventRow>, TimelineError> {
        let f = q.filter(self.clock.now_ms())?;
        Ok(self.store.events(f).await?)
    }

    pub async fn filtered(&self, f: EventFilter) -> Result<Vec<EventRow>, TimelineError> {
        Ok(self.store.events(f).await?)
    }

    pub async fn event(&self, id: i64) -> Result<Option<EventRow>, TimelineError> {
        Ok(self.store.event(id).await?)
    }

    pub fn store(&self) -> &Arc<dyn TimelineStore> {
        &self.store
    }
}

/// The journal kinds that are changes worth a marker: what the escalator
/// decided and did, and where a human came in.
const JOURNAL_KINDS: &[JournalKind] = &[
    JournalKind::Decision,
    JournalKind::StepStart,
    JournalKind::StepEnd,
    JournalKind::CrashLoop,
    JournalKind::GiveUp,
    JournalKind::Resolved,
    JournalKind::Approved,
    JournalKind::Acknowledged,
];

/// The event a journal line becomes, if it is one worth a marker.
pub fn journal_event(row: &gemba_store::JournalRow) -> Option<NewEvent> {
    let kind = JournalKind::parse(&row.kind)?;
    if !JOURNAL_KINDS.contains(&kind) {
        return None;
    }
    let mut tags = vec!["kind=escalation".to_string(), format!("step={}", row.kind)];
    // A scope is `node:web-1`, `tier:web` or `global`.
    match row.scope.split_once(':') {
        Some((k, v)) if is_name(k) && is_name(v) => {
            tags.push(format!("scope={k}.{v}"));
            if k == "node" {
                tags.push(format!("host={v}"));
            }
        }
        _ if is_name(&row.scope) => tags.push(format!("scope={}", row.scope)),
        _ => {}
    }
    if let Some(id) = row.escalation {
        tags.push(format!("escalation={id}"));
    }
    let first = row.text.lines().next().unwrap_or("");
    // The journal's text says what happened ("attempt 1: running level 2
    // (restart)"); the kind is in the tags.
    let what: String = format!("{}: {first}", row.scope)
        .chars()
        .take(event::MAX_WHAT)
        .collect();
    Some(NewEvent {
        at_ms: row.at_ms,
        end_ms: None,
        kind: "escalation".into(),
        what,
        tags,
        text: row.text.chars().take(event::MAX_TEXT).collect(),
        author: row.server.chars().take(event::MAX_AUTHOR).collect(),
        link: String::new(),
        source: Source::Escalator,
        origin: Some(format!("journal:{}", row.seq)),
    })
}

/// The event a configuration run becomes: only runs that changed or
/// failed something (an unchanged run every 30 minutes is no change).
pub fn run_event(r: &gemba_store::RunRow) -> Option<NewEvent> {
    if r.changed == 0 && r.failed == 0 && r.status != "failed" {
        return None;
    }
    let kind = match r.tool.as_str() {
        "chef" => "chef",
        _ => "puppet",
    };
    let mut tags = vec![format!("kind={kind}"), format!("status={}", r.status)];
    for (k, v) in [("host", &r.node), ("env", &r.environment)] {
        if is_name(v) {
            tags.push(format!("{k}={v}"));
        }
    }
    let what = format!(
        "{} run on {}: {} changed, {} failed",
        r.tool, r.node, r.changed, r.failed
    );
    let end_ms = r
        .duration_ms
        .map(|d| r.started_ms + d)
        .filter(|&e| e > r.started_ms);
    Some(NewEvent {
        at_ms: r.started_ms,
        end_ms,
        kind: kind.into(),
        what,
        tags,
        text: if r.code_version.is_empty() {
            String::new()
        } else {
            format!("code version {}", r.code_version)
        },
        author: String::new(),
        link: format!("/market/nodes/{}", r.node),
        source: Source::Market,
        origin: Some(format!("run:{}", r.key)),
    })
}

/// One pass of a follower: read what is after the cursor, store the
/// events, then the cursor. Returns how many rows it read.
async fn follow_once<T, F, R>(
    timeline: &TimelineHandle,
    cursor_name: &str,
    read: F,
    to_event: fn(&T) -> Option<NewEvent>,
    position: fn(&T) -> i64,
) -> Result<usize, TimelineError>
where
    F: FnOnce(i64) -> R,
    R: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let store = timeline.store();
    let cursor: i64 = store
        .timeline_value(cursor_name)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rows = read(cursor).await?;
    let Some(last) = rows.last().map(position) else {
        return Ok(0);
    };
    let events: Vec<NewEvent> = rows.iter().filter_map(to_event).collect();
    if !events.is_empty() {
        timeline.add_all(events).await?;
    }
    store
        .set_timeline_value(cursor_name, &last.to_string())
        .await?;
    Ok(rows.len())
}

/// Escalation decisions and steps become events, until the task is
/// dropped.
pub async fn follow_journal(timeline: TimelineHandle, journal: Arc<dyn Store>) {
    loop {
        let j = journal.clone();
        match follow_once(
            &timeline,
            "cursor.journal",
            |c| async move { j.journal_after(c, FOLLOW_BATCH).await },
            journal_event,
            |r: &gemba_store::JournalRow| r.seq,
        )
        .await
        {
            Ok(n) if n == FOLLOW_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot turn journal lines into events"),
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Configuration runs that changed or failed something become events,
/// until the task is dropped.
pub async fn follow_runs(timeline: TimelineHandle, market: Arc<dyn MarketStore>) {
    loop {
        let m = market.clone();
        match follow_once(
            &timeline,
            "cursor.runs",
            |c| async move { m.runs_after(c, FOLLOW_BATCH).await },
            run_event,
            |r: &gemba_store::RunRow| r.id,
        )
        .await
        {
            Ok(n) if n == FOLLOW_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot turn configuration runs into events"),
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Removes events that ended before `retention` ago, hourly.
pub async fn prune(timeline: TimelineHandle, retention: Duration) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let before = timeline
            .now_ms()
            .saturating_sub(retention.as_millis() as u64);
        match timeline.store().prune_events(before).await {
            Ok(n) if n > 0 => tracing::info!(events = n, "removed events past the retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune events"),
        }
    }
}
