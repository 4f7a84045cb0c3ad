//! The agent's side of metrics: sample every `[metrics] interval` (on a
//! blocking thread: it reads /proc), send each sample to the grid's
//! servers (directly, not through gossip: every node relaying every node's
//! samples would cost the grid N²), hand it to this node's own server when
//! it is one, and keep the newest values on `/metrics` for Prometheus.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gemba_core::metrics::MetricsConfig;
use gemba_exec::Clock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::sample::{self, Sample, Sampler, HOST, HOST_METRICS, PROCESS_METRICS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabel {
    process: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// The newest samples as Prometheus gauges: `gemba_process_<metric>
/// {process}` and `gemba_host_<metric>`.
#[derive(Clone)]
pub struct Exporter {
    process: Vec<(&'static str, Family<ProcessLabel, F64Gauge>)>,
    host: Vec<(&'static str, F64Gauge)>,
}

impl Exporter {
    pub fn register(registry: &mut Registry) -> Exporter {
        let process = PROCESS_METRICS
            .iter()
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
        Exporter { process, host }
    }

    pub fn show(&self, s: &Sample) {
        if s.name == HOST {
            for (m, g) in &self.host {
                if let Some(v) = s.values.get(m) {
                    g.set(*v);
                }
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
