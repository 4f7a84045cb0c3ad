//! Trends around change events: does a metric start growing steadily
//! after an event, when it was flat before — or stop growing after a
//! later one?
//!
//! The method, chosen to shrug off spikes and restarts:
//! - The window before an event runs back to the previous change event
//!   (deploy or git) of the same node, at most 7 days; the window after
//!   runs to the next one, or to now. Each window is reduced to at most
//!   [`BUCKETS`] bucket means.
//! - The slope of each window is the Theil–Sen estimate: the median of
//!   the slopes between every pair of points. A few outliers (a restart
//!   dropping connections to zero) do not move a median.
//! - Growth must be steady: at least 75 % of the pairs that differ rise
//!   (Kendall's concordance), and the rise over the window is at least
//!   three times the spread (median absolute deviation around the fitted
//!   line) and at least [`MIN_RISE`] of the metric's unit.
//! - "Was flat": the slope before is under a quarter of the slope after.
//!   "Back to flat": a window that grew is followed by one whose slope is
//!   under a quarter of it (or that falls).

use gemba_store::EventRow;

use crate::chart::short;
use crate::event::format_ms;

/// Bucket means a window is reduced to.
pub const BUCKETS: usize = 240;
/// Points a window needs (after bucketing) to be judged.
pub const MIN_POINTS: usize = 8;
/// The smallest rise that counts (one unit: a connection, a file, a byte
/// would be noise for bytes, so bytes need 1 MiB).
pub const MIN_RISE: f64 = 3.0;
const MIN_RISE_BYTES: f64 = 1024.0 * 1024.0;

/// The metrics trends are looked for in: what leaks.
pub const WATCHED: &[&str] = &[
    "tcp_established",
    "tcp_close_wait",
    "tcp_time_wait",
    "ephemeral_ports",
    "fds",
    "threads",
    "rss_bytes",
];

/// How a window behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Units per second (Theil–Sen).
    pub slope: f64,
    /// Share of differing pairs that rise (0..=1).
    pub rising: f64,
    /// Median absolute deviation around the fitted line.
    pub spread: f64,
    pub span_s: f64,
    pub points: usize,
}

impl Fit {
    fn rise(&self) -> f64 {
        self.slope * self.span_s
    }

    /// Grows steadily: concordant, well over its spread and the floor.
    pub fn grows(&self, floor: f64) -> bool {
        self.slope > 0.0
            && self.rising >= 0.75
            && self.rise() >= 3.0 * self.spread
            && self.rise() >= floor
    }
}

/// Bucket means: at most `n` points, each the mean of its time slice.
pub fn buckets(points: &[(u64, f64)], n: usize) -> Vec<(f64, f64)> {
    if points.len() <= n {
        return points.iter().map(|(t, v)| (*t as f64, *v)).collect();
    }
    let (t0, t1) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
    let width = ((t1 - t0) / n as f64).max(1.0);
    let mut out: Vec<(f64, f64, usize)> = Vec::with_capacity(n);
    for (t, v) in points {
        let b = ((*t as f64 - t0) / width).floor();
        match out.last_mut() {
            Some(last) if last.0 == b => {
                last.1 += v;
                last.2 += 1;
            }
            _ => out.push((b, *v, 1)),
        }
    }
    out.into_iter()
        .map(|(b, sum, k)| (t0 + (b + 0.5) * width, sum / k as f64))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The fit of a window: a process manager restarting a leaking process
/// turns its growth into a saw, so the window is cut at every reset (a
/// fall of over half the window's range from one point to the next) and
/// each long enough piece is fitted alone; the pieces' median slope,
/// concordance and spread stand for the window, their spans add up.
pub fn fit(points: &[(u64, f64)]) -> Option<Fit> {
    let p = buckets(points, BUCKETS);
    if p.len() < MIN_POINTS {
        return None;
    }
    let lo = p.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let hi = p.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
    let mut pieces: Vec<&[(f64, f64)]> = Vec::new();
    let mut start = 0;
    for i in 1..p.len() {
        if p[i - 1].1 - p[i].1 > (hi - lo) / 2.0 && hi > lo {
            pieces.push(&p[start..i]);
            start = i;
        }
    }
    pieces.push(&p[start..]);
    let fits: Vec<Fit> = pieces
        .iter()
        .filter(|piece| piece.len() >= MIN_POINTS)
        .filter_map(|piece| fit_piece(piece))
        .collect();
    if pieces.len() == 1 || fits.is_empty() {
        return fit_piece(&p);
    }
    let mid = |f: fn(&Fit) -> f64| median(&mut fits.iter().map(f).collect::<Vec<_>>());
    Some(Fit {
        slope: mid(|f| f.slope),
        rising: mid(|f| f.rising),
        spread: mid(|f| f.spread),
        span_s: fits.iter().map(|f| f.span_s).sum(),
        points: fits.iter().map(|f| f.points).sum(),
    })
}

/// The Theil–Sen fit of points with no reset in them.
fn fit_piece(p: &[(f64, f64)]) -> Option<Fit> {
    if p.len() < MIN_POINTS {
        return None;
    }
    let mut slopes = Vec::with_capacity(p.len() * (p.len() - 1) / 2);
    let (mut up, mut differ) = (0usize, 0usize);
    for i in 0..p.len() {
        for j in i + 1..p.len() {
            let dt = p[j].0 - p[i].0;
            let dv = p[j].1 - p[i].1;
            if dt > 0.0 {
                slopes.push(dv / dt);
            }
            if dv != 0.0 {
                differ += 1;
                if dv > 0.0 {
                    up += 1;
                }
            }
        }
    }
    let slope = median(&mut slopes);
    let mut intercepts: Vec<f64> = p.iter().map(|(t, v)| v - slope * t).collect();
    let intercept = median(&mut intercepts);
    let mut dev: Vec<f64> = p
        .iter()
        .map(|(t, v)| (v - (intercept + slope * t)).abs())
        .collect();
    Some(Fit {
        slope,
        rising: if differ == 0 {
            0.0
        } else {
            up as f64 / differ as f64
        },
        spread: median(&mut dev),
        span_s: p[p.len() - 1].0 - p[0].0,
        points: p.len(),
    })
}

/// What happened to a metric around an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Flat before, growing steadily after.
    StartedGrowing { before: Fit, after: Fit },
    /// Growing before, flat (or falling) after.
    StoppedGrowing { before: Fit, after: Fit },
}

/// Judges the windows around an event (`floor`: the smallest rise that
/// counts for this metric).
pub fn judge(before: &[(u64, f64)], after: &[(u64, f64)], floor: f64) -> Option<Verdict> {
    let (b, a) = (fit(before)?, fit(after)?);
    if a.grows(floor) && b.slope < a.slope / 4.0 {
        return Some(Verdict::StartedGrowing {
            before: b,
            after: a,
        });
    }
    if b.grows(floor) && a.slope < b.slope / 4.0 {
        return Some(Verdict::StoppedGrowing {
            before: b,
            after: a,
        });
    }
    None
}

/// The smallest rise that counts for `metric`.
pub fn floor_of(metric: &str) -> f64 {
    if metric.ends_with("_bytes") {
        MIN_RISE_BYTES
    } else {
        MIN_RISE
    }
}

/// A duration in words: 40 s, 12 min, 3 h, 7 days.
pub fn span_words(s: f64) -> String {
    let s = s.max(0.0);
    if s < 120.0 {
        format!("{:.0} s", s)
    } else if s < 2.0 * 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} days", s / 86_400.0)
    }
}

/// The rate of a slope per hour, as a label.
pub fn per_hour(slope_per_s: f64, metric: &str) -> String {
    short(slope_per_s * 3600.0, metric.ends_with("_bytes"))
}

/// One callout on an event: several nodes with the same verdict share it.
#[derive(Clone, Debug, PartialEq)]
pub struct Callout {
    pub process: String,
    pub metric: String,
    pub nodes: Vec<String>,
    pub started: bool,
    /// Units per hour after (started) or before (stopped), the median
    /// over the nodes.
    pub rate_per_h: f64,
    pub text: String,
}

/// The sentence a callout reads as.
pub fn sentence(
    metric: &str,
    process: &str,
    nodes: &[String],
    event: &EventRow,
    verdict: &Verdict,
) -> String {
    let on = if nodes.len() > 4 {
        format!(
            "{} and {} more nodes",
            nodes[..3].join(", "),
            nodes.len() - 3
        )
    } else {
        nodes.join(", ")
    };
    let what = if process == crate::sample::HOST {
        format!("{metric} on {on}")
    } else {
        format!("{metric} of {process} on {on}")
    };
    let when = format_ms(event.at_ms);
    let hhmm = when.get(11..16).unwrap_or(&when);
    let ev = format!("{} {} ({hhmm})", event.kind, event.what);
    match verdict {
        Verdict::StartedGrowing { before, after } => format!(
            "{what} grows ~{}/h since {ev}, was flat for {} before",
            per_hour(after.slope, metric),
            span_words(before.span_s)
        ),
        Verdict::StoppedGrowing { before, after } => {
            let how = if after.slope < 0.0 && -after.slope * after.span_s >= 3.0 * after.spread {
                format!("falls ~{}/h after", per_hour(-after.slope, metric))
            } else {
                "back to flat after".to_string()
            };
            format!(
                "{what} {how} {ev}; it grew ~{}/h for {} before",
                per_hour(before.slope, metric),
                span_words(before.span_s)
            )
        }
    }
}

/// The most series one event's callouts look at.
pub const MAX_SERIES: usize = 500;
/// How far back the window before an event reaches at most.
pub const BEFORE_MAX_S: u64 = 7 * 86_400;

/// The callouts of an event: every watched metric of the processes (and
/// host) on the event's host — every node when it names none; only the
/// process its `service=` tag names, when one is sampled under that name.
pub async fn callouts(
    t: &crate::TimelineHandle,
    event: &EventRow,
) -> Result<Vec<Callout>, gemba_store::StoreError> {
    let store = t.store();
    let now_ms = t.now_ms();
    let e_ms = event.at_ms;
    if e_ms >= now_ms {
        return Ok(Vec::new());
    }
    let host = event.tags.iter().find_map(|x| x.strip_prefix("host="));
    let service = event.tags.iter().find_map(|x| x.strip_prefix("service="));
    let all = store.series().await?;
    let service_sampled = service.is_some_and(|s| all.iter().any(|(_, k)| k.process == s));
    // Change events that bound the windows.
    let mut bounds = Vec::new();
    for kind in ["deploy", "git"] {
        bounds.extend(
            store
                .events(gemba_store::EventFilter {
                    since_ms: e_ms.saturating_sub(BEFORE_MAX_S * 1000),
                    until_ms: now_ms,
                    tags: Vec::new(),
                    kind: Some(kind.into()),
                    limit: 1000,
                })
                .await?
                .into_iter()
                .filter(|b| b.id != event.id),
        );
    }
    let mut judged: Vec<(crate::series::Series, Verdict)> = Vec::new();
    let mut looked = 0;
    for (id, key) in all {
        if !WATCHED.contains(&key.metric.as_str())
            || host.is_some_and(|h| h != key.node)
            || (service_sampled
                && key.process != crate::sample::HOST
                && Some(key.process.as_str()) != service)
        {
            continue;
        }
        looked += 1;
        if looked > MAX_SERIES {
            break;
        }
        let applies = |b: &EventRow| {
            b.tags
                .iter()
                .find_map(|x| x.strip_prefix("host="))
                .is_none_or(|h| h == key.node)
        };
        let prev = bounds
            .iter()
            .filter(|b| b.at_ms < e_ms && applies(b))
            .map(|b| b.at_ms)
            .max();
        let next = bounds
            .iter()
            .filter(|b| b.at_ms > e_ms && applies(b))
            .map(|b| b.at_ms)
            .min();
        let since_s = prev
            .unwrap_or(0)
            .max(e_ms.saturating_sub(BEFORE_MAX_S * 1000))
            / 1000;
        let until_s = next.unwrap_or(now_ms).min(now_ms) / 1000;
        let e_s = e_ms / 1000;
        // Raw points where they are kept; the minute buckets when the
        // raw window is too short to judge.
        let raw_from = (now_ms / 1000).saturating_sub(t.retention.raw.as_secs());
        let mut verdict = None;
        let mut tier = gemba_store::Tier::Raw;
        for (try_tier, from) in [
            (gemba_store::Tier::Raw, since_s.max(raw_from)),
            (gemba_store::Tier::Minute, since_s),
        ] {
            if try_tier == gemba_store::Tier::Minute && since_s >= raw_from {
                break;
            }
            let points = store.points(id, try_tier, from, until_s).await?;
            let split = |keep: fn(u64, u64) -> bool| -> Vec<(u64, f64)> {
                points
                    .iter()
                    .filter(|p| keep(p.t, e_s))
                    .map(|p| (p.t, p.v))
                    .collect()
            };
            let before = split(|t, e| t < e);
            let after = split(|t, e| t > e);
            verdict = judge(&before, &after, floor_of(&key.metric));
            tier = try_tier;
            if verdict.is_some() {
                break;
            }
        }
        if let Some(v) = verdict {
            judged.push((
                crate::series::Series {
                    key,
                    tier,
                    points: Vec::new(),
                },
                v,
            ));
        }
    }
    // Nodes with the same process, metric and verdict share a callout.
    let mut groups: std::collections::BTreeMap<(String, String, bool), Vec<(String, Verdict)>> =
        Default::default();
    for (s, v) in judged {
        let started = matches!(v, Verdict::StartedGrowing { .. });
        groups
            .entry((s.key.process, s.key.metric, started))
            .or_default()
            .push((s.key.node, v));
    }
    let mut out = Vec::new();
    for ((process, metric, started), mut members) in groups {
        let rate = |v: &Verdict| match v {
            Verdict::StartedGrowing { after, .. } => after.slope,
            Verdict::StoppedGrowing { before, .. } => before.slope,
        };
        members.sort_by(|a, b| rate(&a.1).total_cmp(&rate(&b.1)));
        let nodes: Vec<String> = {
            let mut n: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
            n.sort();
            n
        };
        let mid = &members[members.len() / 2].1;
        out.push(Callout {
            text: sentence(&metric, &process, &nodes, event, mid),
            rate_per_h: rate(mid) * 3600.0,
            process,
            metric,
            nodes,
            started,
        });
    }
    // The processes first (the machine's own figures follow), the
    // fastest change first.
    out.sort_by(|a, b| {
        (a.process == crate::sample::HOST)
            .cmp(&(b.process == crate::sample::HOST))
            .then(b.rate_per_h.abs().total_cmp(&a.rate_per_h.abs()))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flat for `flat` samples, then a leak of `rate` a sample reset to 0
    /// every `every` samples (a process manager restarting it).
    fn saw(flat: u64, leaking: u64, rate: f64, every: u64) -> Vec<(u64, f64)> {
        (0..flat)
            .map(|i| (i * 10, 5.0))
            .chain((0..leaking).map(|i| ((flat + i) * 10, 5.0 + rate * (i % every) as f64)))
            .collect()
    }

    #[test]
    fn growth_through_restarts_is_growth_and_flat_is_flat() {
        let all = saw(100, 120, 8.0, 40);
        let (before, after) = all.split_at(100);
        let v = judge(before, after, MIN_RISE).expect("a verdict");
        let Verdict::StartedGrowing { after: a, .. } = v else {
            panic!("{v:?}")
        };
        assert!((a.slope * 10.0 - 8.0).abs() < 0.01, "{a:?}");
        // The reverse: growing (through restarts) before, flat after.
        let v = judge(after, before, MIN_RISE).expect("a verdict");
        assert!(matches!(v, Verdict::StoppedGrowing { .. }), "{v:?}");
        // Noise around a level is no trend.
        let noise: Vec<(u64, f64)> = (0..200)
            .map(|i| (i * 10, 100.0 + ((i * 7919) % 13) as f64))
            .collect();
        let (b, a) = noise.split_at(100);
        assert_eq!(judge(b, a, MIN_RISE), None);
        // A rise under the floor is no trend either.
        let tiny = saw(100, 100, 0.01, 1000);
        let (b, a) = tiny.split_at(100);
        assert_eq!(judge(b, a, MIN_RISE), None);
    }
}
