//! The `metric` check: a sampled metric of a `[[process]]` (or the host)
//! on this node over `warn` / `crit`, in every sample of the last `for`
//! (or in the newest when `for` is 0). It reads the samples the agent's
//! sampler keeps for an hour; it measures nothing itself, so "restart the
//! service when its connections pass 500 for 5 minutes" is one check and
//! one level.

use gemba_core::metrics::RecentSamples;
use gemba_core::CheckKind;

use crate::nagios::{Perf, Status};

fn over(v: f64, t: Option<f64>) -> bool {
    t.is_some_and(|t| v >= t)
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// Judges a metric check against `samples` at `now_ms`; `interval` is how
/// often the agent samples (older newest samples are stale).
pub fn check(
    kind: &CheckKind,
    samples: Option<&RecentSamples>,
    now_ms: u64,
    interval_ms: u64,
) -> (Status, String, Vec<Perf>) {
    let CheckKind::Metric {
        process,
        metric,
        warn,
        crit,
        for_,
    } = kind
    else {
        return (Status::Unknown, "not a metric check".into(), vec![]);
    };
    let Some(samples) = samples else {
        return (
            Status::Unknown,
            "METRIC UNKNOWN - metric checks read the samples of a running agent".into(),
            vec![],
        );
    };
    let what = if process == gemba_core::metrics::HOST {
        format!("{metric} of this host")
    } else {
        format!("{metric} of {process}")
    };
    let Some(latest) = samples.latest(process) else {
        return (
            Status::Unknown,
            format!(
                "METRIC UNKNOWN - no samples of {process} yet (is it a [[process]] of this node?)"
            ),
            vec![],
        );
    };
    if latest.at_ms + 3 * interval_ms.max(1000) < now_ms {
        return (
            Status::Unknown,
            format!(
                "METRIC UNKNOWN - the newest sample of {process} is {} s old",
                (now_ms - latest.at_ms) / 1000
            ),
            vec![],
        );
    }
    if let Some(why) = &latest.unavailable {
        return (
            Status::Unknown,
            format!("METRIC UNKNOWN - {process} is unavailable: {why}"),
            vec![],
        );
    }
    let Some(&value) = latest.values.get(metric) else {
        return (
            Status::Unknown,
            format!(
                "METRIC UNKNOWN - {process} has no {metric} in its samples (not readable here?)"
            ),
            vec![],
        );
    };
    let perf = vec![Perf {
        label: metric.clone(),
        value,
        uom: String::new(),
        warn: warn.map(fmt),
        crit: crit.map(fmt),
        min: None,
        max: None,
    }];
    let for_ms = for_.as_millis() as u64;
    let window: Vec<f64> = if for_ms == 0 {
        vec![value]
    } else {
        let since = latest.at_ms.saturating_sub(for_ms);
        let (before, inside) = samples.since(process, since);
        // The window counts only when samples cover it: one from before
        // its start, and none missing the metric.
        let vals: Vec<Option<f64>> = inside
            .iter()
            .map(|s| s.values.get(metric).copied())
            .collect();
        if before.is_none() || vals.iter().any(Option::is_none) {
            let state = if over(value, *crit) || over(value, *warn) {
                format!(
                    "over its threshold, but samples cover less than {}",
                    gemba_core::HumanDuration(*for_)
                )
            } else {
                "within thresholds".into()
            };
            return (
                Status::Ok,
                format!("METRIC OK - {what} is {} ({state})", fmt(value)),
                perf,
            );
        }
        let mut v: Vec<f64> = vals.into_iter().flatten().collect();
        if let Some(b) = before.and_then(|b| b.values.get(metric).copied()) {
            v.push(b);
        }
        v
    };
    let lowest = window.iter().copied().fold(f64::INFINITY, f64::min);
    let during = if for_ms == 0 {
        String::new()
    } else {
        format!(" for {}", gemba_core::HumanDuration(*for_))
    };
    if over(lowest, *crit) {
        (
            Status::Critical,
            format!(
                "METRIC CRITICAL - {what} is {} (crit {}){during}",
                fmt(value),
                fmt(crit.unwrap_or_default())
            ),
            perf,
        )
    } else if over(lowest, *warn) {
        (
            Status::Warning,
            format!(
                "METRIC WARNING - {what} is {} (warn {}){during}",
                fmt(value),
                fmt(warn.unwrap_or_default())
            ),
            perf,
        )
    } else {
        (
            Status::Ok,
            format!("METRIC OK - {what} is {}", fmt(value)),
            perf,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use gemba_core::metrics::RecentSample;

    use super::*;

    fn kind(for_s: u64) -> CheckKind {
        CheckKind::Metric {
            process: "shop".into(),
            metric: "tcp_established".into(),
            warn: Some(400.0),
            crit: Some(500.0),
            for_: Duration::from_secs(for_s),
        }
    }

    fn feed(r: &RecentSamples, values: &[(u64, f64)]) {
        for (at, v) in values {
            r.push(
                "shop",
                RecentSample {
                    at_ms: *at,
                    values: BTreeMap::from([("tcp_established".to_string(), *v)]),
                    unavailable: None,
                },
            );
        }
    }

    #[test]
    fn over_crit_for_the_whole_window_is_critical_and_a_dip_is_not() {
        let r = RecentSamples::default();
        let series: Vec<(u64, f64)> = (0..40)
            .map(|i| (i * 10_000, 450.0 + i as f64 * 5.0))
            .collect();
        feed(&r, &series);
        let now = 39 * 10_000;
        let (st, text, perf) = check(&kind(60), Some(&r), now, 10_000);
        assert_eq!(st, Status::Critical, "{text}");
        assert_eq!(
            text,
            "METRIC CRITICAL - tcp_established of shop is 645 (crit 500) for 1m"
        );
        assert_eq!(perf[0].crit.as_deref(), Some("500"));
        // One sample under crit inside the window: only a warning.
        feed(&r, &[(400_000, 480.0), (410_000, 700.0)]);
        let (st, _, _) = check(&kind(60), Some(&r), 410_000, 10_000);
        assert_eq!(st, Status::Warning);
        // The newest alone without `for`.
        let (st, _, _) = check(&kind(0), Some(&r), 410_000, 10_000);
        assert_eq!(st, Status::Critical);
    }

    #[test]
    fn missing_stale_or_unavailable_samples_are_unknown_not_failures() {
        let r = RecentSamples::default();
        assert_eq!(check(&kind(0), Some(&r), 1000, 10_000).0, Status::Unknown);
        assert_eq!(check(&kind(0), None, 1000, 10_000).0, Status::Unknown);
        feed(&r, &[(0, 900.0)]);
        let (st, text, _) = check(&kind(0), Some(&r), 60_000, 10_000);
        assert_eq!(st, Status::Unknown);
        assert!(text.contains("60 s old"), "{text}");
        r.push(
            "shop",
            RecentSample {
                at_ms: 70_000,
                values: BTreeMap::new(),
                unavailable: Some("no process named shop is running".into()),
            },
        );
        let (st, text, _) = check(&kind(0), Some(&r), 70_000, 10_000);
        assert_eq!(st, Status::Unknown);
        assert!(text.contains("no process named shop"), "{text}");
    }

    #[test]
    fn a_window_not_yet_covered_is_ok_and_says_so() {
        let r = RecentSamples::default();
        feed(&r, &[(0, 900.0), (10_000, 900.0)]);
        let (st, text, _) = check(&kind(300), Some(&r), 10_000, 10_000);
        assert_eq!(st, Status::Ok);
        assert!(text.contains("samples cover less than 5m"), "{text}");
    }
}
