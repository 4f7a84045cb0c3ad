//! The agent's side of metrics: sample every `[metrics] interval` (on a
//! blocking thread: it reads /proc), send each sample to the grid's
//! servers (directly, not through gossip: every node relaying every node's
//! samples would cost the grid N²), hand it to this node's own server when
//! it is one, and keep the newest values on `/metrics` for Prometheus.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemba_core::metrics::MetricsConfig;
use gemba_exec::Clock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::sample::{self, Sample, Sampler, HOST, HOST_METRICS, PROCESS_METRICS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabel {
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessStateLabel {
    process: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwitchLabel {
    process: String,
    /// `voluntary` or `involuntary`.
    kind: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type F64Counter = Counter<f64, AtomicU64>;

/// Sample values that gemba keeps as rates or counts for its own charts
/// and Prometheus gets in its own shapes (counters, one state label).
fn exported_apart(metric: &str) -> bool {
    metric.starts_with("tcp_")
        || matches!(
            metric,
            "cpu_percent"
                | "ctx_voluntary_per_s"
                | "ctx_involuntary_per_s"
                | "restarts"
                | "cpu_seconds"
                | "ctx_voluntary"
                | "ctx_involuntary"
        )
}

/// The newest samples on `/metrics`, named as Prometheus asks: gauges
/// `gemba_process_<metric>{process}` and `gemba_host_<metric>`; counters
/// `gemba_process_restarts_total`, `gemba_process_cpu_seconds_total` and
/// `gemba_process_context_switches_total{kind}` (for `rate()`); TCP
/// connections as one gauge with a `state` label
/// (`gemba_process_tcp_connections{process, state}`,
/// `gemba_host_tcp_connections{state}`).
#[derive(Clone)]
pub struct Exporter {
    process: Vec<(&'static str, Family<ProcessLabel, F64Gauge>)>,
    host: Vec<(&'static str, F64Gauge)>,
    process_tcp: Family<ProcessStateLabel, F64Gauge>,
    host_tcp: Family<StateLabel, F64Gauge>,
    restarts: Family<ProcessLabel, F64Counter>,
    cpu: Family<ProcessLabel, F64Counter>,
    switches: Family<SwitchLabel, F64Counter>,
    /// The cumulative values last seen, per process and metric: counters
    /// move by the difference (from zero again when the process restarted).
    seen: Arc<Mutex<HashMap<(String, &'static str), f64>>>,
}

impl Exporter {
    pub fn register(registry: &mut Registry) -> Exporter {
        let process = PROCESS_METRICS
            .iter()
            .filter(|m| !exported_apart(m))
            .map(|m| {
                let f = Family::<ProcessLabel, F64Gauge>::default();
                registry.register(
                    format!("gemba_process_{m}"),
                    format!("{m} of a [[process]], sampled from /proc"),
                    f.clone(),
                );
                (*m, f)
            })
            .collect();
        let host = HOST_METRICS
            .iter()
            .filter(|m| !exported_apart(m))
            .map(|m| {
                let g = F64Gauge::default();
                registry.register(
                    format!("gemba_host_{m}"),
                    format!("{m} of this machine, sampled from /proc"),
                    g.clone(),
                );
                (*m, g)
            })
            .collect();
        let process_tcp = Family::<ProcessStateLabel, F64Gauge>::default();
        registry.register(
            "gemba_process_tcp_connections",
            "TCP connections of a [[process]] by state",
            process_tcp.clone(),
        );
        let host_tcp = Family::<StateLabel, F64Gauge>::default();
        registry.register(
            "gemba_host_tcp_connections",
            "TCP connections of this machine by state",
            host_tcp.clone(),
        );
        let restarts = Family::<ProcessLabel, F64Counter>::default();
        registry.register(
            "gemba_process_restarts",
            "Times a [[process]] was seen started again",
            restarts.clone(),
        );
        let cpu = Family::<ProcessLabel, F64Counter>::default();
        registry.register(
            "gemba_process_cpu_seconds",
            "CPU time of a [[process]] (user and system)",
            cpu.clone(),
        );
        let switches = Family::<SwitchLabel, F64Counter>::default();
        registry.register(
            "gemba_process_context_switches",
            "Context switches of a [[process]], voluntary or involuntary",
            switches.clone(),
        );
        Exporter {
            process,
            host,
            process_tcp,
            host_tcp,
            restarts,
            cpu,
            switches,
            seen: Arc::default(),
        }
    }

    /// How far a cumulative value moved since it was last seen (all of it
    /// after a restart, when it starts again from zero).
    fn moved(&self, process: &str, metric: &'static str, now: f64) -> f64 {
        let Ok(mut seen) = self.seen.lock() else {
            return 0.0;
        };
        let before = seen.insert((process.to_string(), metric), now);
        match before {
            Some(b) if now >= b => now - b,
            // The first look counts everything so far; a value that went
            // back started again.
            _ => now,
        }
    }

    pub fn show(&self, s: &Sample) {
        let tcp = s
            .values
            .iter()
            .filter_map(|(m, v)| m.strip_prefix("tcp_").map(|state| (state, *v)));
        if s.name == HOST {
            for (m, g) in &self.host {
                if let Some(v) = s.values.get(m) {
                    g.set(*v);
                }
            }
            for (state, v) in tcp {
                self.host_tcp
                    .get_or_create(&StateLabel {
                        state: state.to_string(),
                    })
                    .set(v);
            }
            return;
        }
        let label = ProcessLabel {
            process: s.name.clone(),
        };
        for (m, f) in &self.process {
            match s.values.get(m) {
                Some(v) => {
                    f.get_or_create(&label).set(*v);
                }
                // Gone: `up` says 0, the rest disappear rather than lie.
                None if *m == "up" => {
                    f.get_or_create(&label).set(0.0);
                }
                None => {
                    f.remove(&label);
                }
            }
        }
        let mut states = 0;
        for (state, v) in tcp {
            states += 1;
            self.process_tcp
                .get_or_create(&ProcessStateLabel {
                    process: s.name.clone(),
                    state: state.to_string(),
                })
                .set(v);
        }
        if states == 0 {
            // Gone or unreadable: no states rather than stale ones.
            for state in PROCESS_METRICS
                .iter()
                .filter_map(|m| m.strip_prefix("tcp_"))
            {
                self.process_tcp.remove(&ProcessStateLabel {
                    process: s.name.clone(),
                    state: state.to_string(),
                });
            }
        }
        // Counters: restarts count across the process's lives; CPU time
        // and switches restart from zero with it, and count on from there.
        if let Some(v) = s.values.get("restarts") {
            let d = self.moved(&s.name, "restarts", *v);
            self.restarts.get_or_create(&label).inc_by(d);
        }
        if let Some(v) = s.values.get("cpu_seconds") {
            let d = self.moved(&s.name, "cpu_seconds", *v);
            self.cpu.get_or_create(&label).inc_by(d);
        }
        for (metric, kind) in [
            ("ctx_voluntary", "voluntary"),
            ("ctx_involuntary", "involuntary"),
        ] {
            if let Some(v) = s.values.get(metric) {
                let d = self.moved(&s.name, metric, *v);
                self.switches
                    .get_or_create(&SwitchLabel {
                        process: s.name.clone(),
                        kind: kind.into(),
                    })
                    .inc_by(d);
            }
        }
    }
}

/// A fraction in [0, 1) that stays the same for a node id.
fn phase_of(node: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 1_000) as f64 / 1_000.0
}

/// Samples until dropped. `publish(name, value)` sends a sample to the
/// servers; `to_server` takes this node's samples when it is a server.
pub async fn run<P, Fut>(
    config: MetricsConfig,
    clock: Clock,
    exporter: Option<Exporter>,
    publish: P,
    to_server: Option<mpsc::Sender<(String, Sample)>>,
    recent: Option<gemba_core::metrics::RecentSamples>,
    node: String,
) where
    P: Fn(String, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sampler = Sampler::new(&config.processes, config.max_processes as usize);
    if !sampler.skipped().is_empty() {
        tracing::warn!(
            max_processes = config.max_processes,
            skipped = ?sampler.skipped(),
            "more [[process]] entries than [metrics] max_processes: these are not sampled"
        );
    }
    let mut sampler = Some(sampler);
    // The first sample at once, the next ones at a phase of this node's
    // own: nodes started together (a fleet rebooted, a benchmark on one
    // machine) do not all read /proc in the same instant.
    let period = config.interval.max(Duration::from_secs(1));
    let phase = period.mul_f64(phase_of(&node));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            every.tick().await;
        }
        let Some(mut s) = sampler.take() else { return };
        let at = clock.now_ms();
        let (back, samples) = match tokio::task::spawn_blocking(move || {
            let out = s.sample(at);
            (s, out)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the sampler failed; metrics stop on this node");
                return;
            }
        };
        sampler = Some(back);
        for s in samples {
            if let Some(ex) = &exporter {
                ex.show(&s);
            }
            if let Some(r) = &recent {
                r.push(
                    &s.name,
                    gemba_core::metrics::RecentSample {
                        at_ms: s.at_ms,
                        values: s.values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                        unavailable: s.unavailable.clone(),
                    },
                );
            }
            publish(s.name.to_string(), sample::encode(&s)).await;
            if let Some(tx) = &to_server {
                let _ = tx.try_send((node.clone(), s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[(&'static str, f64)]) -> Sample {
        Sample {
            name: "shop".into(),
            at_ms: 0,
            values: values.iter().copied().collect(),
            unavailable: None,
            partial: Vec::new(),
        }
    }

    fn scrape(r: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, r).unwrap();
        out
    }

    #[test]
    fn counters_only_go_up_and_tcp_states_are_one_metric_with_a_label() {
        let mut r = Registry::default();
        let e = Exporter::register(&mut r);
        e.show(&sample(&[
            ("up", 1.0),
            ("rss_bytes", 1e6),
            ("restarts", 2.0),
            ("cpu_seconds", 5.0),
            ("cpu_percent", 12.0),
            ("ctx_voluntary", 10.0),
            ("ctx_involuntary", 1.0),
            ("tcp_established", 3.0),
            ("tcp_time_wait", 4.0),
        ]));
        let m = scrape(&r);
        for line in [
            "gemba_process_restarts_total{process=\"shop\"} 2.0",
            "gemba_process_cpu_seconds_total{process=\"shop\"} 5.0",
            "gemba_process_context_switches_total{process=\"shop\",kind=\"voluntary\"} 10.0",
            "gemba_process_tcp_connections{process=\"shop\",state=\"established\"} 3.0",
            "gemba_process_tcp_connections{process=\"shop\",state=\"time_wait\"} 4.0",
            "gemba_process_rss_bytes{process=\"shop\"} 1000000.0",
        ] {
            assert!(m.contains(line), "{line} missing from\n{m}");
        }
        for gone in [
            "gemba_process_cpu_percent",
            "gemba_process_tcp_established",
            "gemba_process_restarts{",
        ] {
            assert!(!m.contains(gone), "{gone} in\n{m}");
        }
        // Later: 2 more CPU seconds; then the process restarted (its CPU
        // time starts again from 1 s): the counter goes on from 7 to 8.
        e.show(&sample(&[("cpu_seconds", 7.0), ("restarts", 2.0)]));
        e.show(&sample(&[("cpu_seconds", 1.0), ("restarts", 3.0)]));
        let m = scrape(&r);
        assert!(
            m.contains("gemba_process_cpu_seconds_total{process=\"shop\"} 8.0"),
            "{m}"
        );
        assert!(
            m.contains("gemba_process_restarts_total{process=\"shop\"} 3.0"),
            "{m}"
        );
        // Gone: no TCP states left standing.
        e.show(&sample(&[]));
        assert!(!scrape(&r).contains("gemba_process_tcp_connections{"));
    }
}
