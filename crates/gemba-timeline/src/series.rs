//! Metric series on a server: samples from every agent (its own directly,
//! the others' from gossip) are written as raw points in batches, rolled
//! up into 1-minute and 1-hour averages (with min and max), and pruned
//! per tier, so the database stops growing. The number of series is
//! capped; a series refused by the cap is logged once and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemba_core::metrics::MetricsConfig;
use gemba_exec::Clock;
use gemba_store::{Point, SeriesKey, StoreError, Tier, TimelineStore};
use tokio::sync::mpsc;

use crate::sample::Sample;

/// Points are written at least this often...
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// ...or when this many wait.
pub const FLUSH_POINTS: usize = 10_000;
/// A bucket is rolled up this long after it ends, so late samples (gossip
/// delay) are in it.
pub const ROLL_LATE_S: u64 = 120;
/// Head points move into the raw tier in spans of this many seconds:
/// ten minutes of a series fill a page or so, so compaction writes each
/// page about once.
pub const COMPACT_EVERY_S: u64 = 600;
/// How often roll-ups and retention run.
pub const ROLL_EVERY: Duration = Duration::from_secs(60);

/// The last sample of every process on every node, for the API.
pub type Latest = Arc<Mutex<HashMap<(String, String), Sample>>>;

/// What the writer counts, for the API and /metrics.
#[derive(Default, Debug)]
pub struct WriterStats {
    pub points: AtomicU64,
    pub refused_series: AtomicU64,
    pub write_errors: AtomicU64,
}

/// Retention per tier.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub raw: Duration,
    pub minute: Duration,
    pub hour: Duration,
}

impl Retention {
    pub fn of(c: &MetricsConfig) -> Retention {
        Retention {
            raw: c.raw_retention,
            minute: c.minute_retention,
            hour: c.hour_retention,
        }
    }

    /// The finest tier that still holds `since_s` at `now_s`.
    pub fn tier_for(&self, since_s: u64, now_s: u64) -> Tier {
        let age = now_s.saturating_sub(since_s);
        if age <= self.raw.as_secs() {
            Tier::Raw
        } else if age <= self.minute.as_secs() {
            Tier::Minute
        } else {
            Tier::Hour
        }
    }
}

/// Writes samples into the store until every sender is dropped.
pub async fn write(
    store: Arc<dyn TimelineStore>,
    mut samples: mpsc::Receiver<(String, Sample)>,
    max_series: u64,
    latest: Latest,
    stats: Arc<WriterStats>,
) {
    let mut ids: HashMap<SeriesKey, Option<i64>> = HashMap::new();
    let mut waiting: Vec<(SeriesKey, u64, f64)> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            got = samples.recv() => match got {
                Some((node, s)) => {
                    let t = s.at_ms / 1000;
                    for (m, v) in &s.values {
                        waiting.push((
                            SeriesKey { node: node.clone(), process: s.name.clone(), metric: m.to_string() },
                            t,
                            *v,
                        ));
                    }
                    if let Ok(mut l) = latest.lock() {
                        l.insert((node, s.name.clone()), s);
                    }
                    if waiting.len() < FLUSH_POINTS {
                        continue;
                    }
                    true
                }
                None => false,
            },
            _ = tick.tick() => true,
        };
        if !waiting.is_empty() {
            flush(&*store, &mut ids, &mut waiting, max_series, &stats).await;
        }
        if !open {
            return;
        }
    }
}

async fn flush(
    store: &dyn TimelineStore,
    ids: &mut HashMap<SeriesKey, Option<i64>>,
    waiting: &mut Vec<(SeriesKey, u64, f64)>,
    max_series: u64,
    stats: &WriterStats,
) {
    let mut unknown: Vec<SeriesKey> = waiting
        .iter()
        .filter(|(k, _, _)| !ids.contains_key(k))
        .map(|(k, _, _)| k.clone())
        .collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        match store.series_ids(unknown.clone(), max_series).await {
            Ok(found) => {
                for (k, id) in unknown.into_iter().zip(found) {
                    if id.is_none() {
                        stats.refused_series.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            node = %k.node,
                            process = %k.process,
                            metric = %k.metric,
                            max_series,
                            "series not stored: [metrics] max_series reached"
                        );
                    }
                    ids.insert(k, id);
                }
            }
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot register metric series; points dropped");
                waiting.clear();
                return;
            }
        }
    }
    let points: Vec<(i64, u64, f64)> = waiting
        .drain(..)
        .filter_map(|(k, t, v)| ids.get(&k).copied().flatten().map(|id| (id, t, v)))
        .collect();
    let n = points.len() as u64;
    match store.write_points(points).await {
        Ok(()) => {
            stats.points.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, points = n, "cannot store metric points");
        }
    }
}

/// One pass of roll-ups and retention at `now_s`: raw points of whole
/// minutes that ended [`ROLL_LATE_S`] ago become minute buckets, whole
/// hours of minute buckets become hour buckets, and each tier loses what
/// is past its retention. Cursors live in the store, so a restart
/// neither skips nor double counts a bucket (rolling a span again
/// replaces its buckets).
pub async fn roll_once(
    store: &dyn TimelineStore,
    retention: Retention,
    now_s: u64,
) -> Result<(), StoreError> {
    // The head is compacted every COMPACT_EVERY_S, keeping the newest
    // ROLL_LATE_S in it for late samples.
    let until = now_s.saturating_sub(ROLL_LATE_S) / COMPACT_EVERY_S * COMPACT_EVERY_S;
    let done = store
        .timeline_value("compacted")
        .await?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if until > done {
        store.compact(until).await?;
        store
            .set_timeline_value("compacted", &until.to_string())
            .await?;
    }
    for (from, to, name, keep) in [
        (Tier::Raw, Tier::Minute, "rolled.minute", retention.raw),
        (Tier::Minute, Tier::Hour, "rolled.hour", retention.minute),
    ] {
        let w = to.seconds();
        let end = now_s.saturating_sub(ROLL_LATE_S + if to == Tier::Hour { 60 } else { 0 }) / w * w;
        let oldest = now_s.saturating_sub(keep.as_secs()) / w * w;
        let start = store
            .timeline_value(name)
            .await?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(oldest)
            .max(oldest);
        if end > start {
            store.roll_up(from, to, start, end).await?;
            store.set_timeline_value(name, &end.to_string()).await?;
        }
    }
    for (tier, keep) in [
        (Tier::Raw, retention.raw),
        (Tier::Minute, retention.minute),
        (Tier::Hour, retention.hour),
    ] {
        store
            .prune_points(tier, now_s.saturating_sub(keep.as_secs()))
            .await?;
    }
    Ok(())
}

/// Roll-ups and retention every [`ROLL_EVERY`], until dropped.
pub async fn roll(store: Arc<dyn TimelineStore>, retention: Retention, clock: Clock) {
    let mut every = tokio::time::interval(ROLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = roll_once(&*store, retention, clock.now_ms() / 1000).await {
            tracing::warn!(error = %e, "cannot roll up or prune metric points");
        }
    }
}

/// A series' points over a window, from the finest tier that holds it.
pub async fn read(
    store: &dyn TimelineStore,
    retention: Retention,
    series: i64,
    since_s: u64,
    until_s: u64,
    now_s: u64,
) -> Result<(Tier, Vec<Point>), StoreError> {
    let tier = retention.tier_for(since_s, now_s);
    let points = store.points(series, tier, since_s, until_s).await?;
    Ok((tier, points))
}

/// A series with its points over a window.
#[derive(Clone, Debug)]
pub struct Series {
    pub key: SeriesKey,
    pub tier: Tier,
    pub points: Vec<Point>,
}

/// The stored series of `metric` on `nodes` (all when empty) for
/// `processes` (all when empty), with their points in `[since_s,
/// until_s]`; at most `limit` series.
pub async fn select(
    t: &crate::TimelineHandle,
    nodes: &[String],
    processes: &[String],
    metric: &str,
    since_s: u64,
    until_s: u64,
    limit: usize,
) -> Result<Vec<Series>, StoreError> {
    let store = t.store();
    let now_s = t.now_ms() / 1000;
    let mut out = Vec::new();
    for (id, key) in store.series().await? {
        if key.metric != metric
            || (!nodes.is_empty() && !nodes.contains(&key.node))
            || (!processes.is_empty() && !processes.contains(&key.process))
        {
            continue;
        }
        if out.len() == limit {
            break;
        }
        let (tier, points) = read(&**store, t.retention, id, since_s, until_s, now_s).await?;
        out.push(Series { key, tier, points });
    }
    Ok(out)
}
