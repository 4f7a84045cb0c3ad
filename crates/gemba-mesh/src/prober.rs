//! The prober: sends sequenced UDP probe trains to every target and a TCP
//! connect as a second path, and feeds the outcomes to the link trackers.
//!
//! Sending never waits for a peer: probes go out on the node's one socket,
//! replies arrive through the endpoint's receive task, each probe expires on
//! its own deadline, and each TCP connect runs in its own task under its own
//! timeout. A dead, silent or half-open peer therefore costs the others
//! nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicU64;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use crate::endpoint::{unix_ms, Endpoint, ProbeReply};
use crate::link::{LinkPolicy, LinkState, LinkSummary, LinkTracker};
use crate::metrics::{LinkStateLabel, MeshMetrics, TargetLabel};
use crate::net::Net;

/// A peer to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub addr: SocketAddr,
}

/// Timing of the prober (from `[mesh]` config).
#[derive(Clone, Debug)]
pub struct ProbeTiming {
    pub interval: Duration,
    pub probes_per_interval: u32,
    pub timeout: Duration,
    pub tcp_interval: Duration,
    pub tcp_timeout: Duration,
}

/// Link trackers by target id, shared with the publisher and the API.
#[derive(Default)]
pub struct LinkTable {
    pub trackers: HashMap<String, LinkTracker>,
}

pub type SharedLinks = Arc<Mutex<LinkTable>>;

/// Full-resolution view of this node's outgoing links.
pub fn link_summaries(links: &SharedLinks, policy: &LinkPolicy) -> Vec<(String, LinkSummary)> {
    let now = Instant::now();
    let mut table = links.lock().expect("link table lock");
    let mut v: Vec<(String, LinkSummary)> = table
        .trackers
        .iter_mut()
        .map(|(id, t)| (id.clone(), t.summary(now, policy)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub struct Prober {
    pub endpoint: Arc<Endpoint>,
    pub net: Arc<dyn Net>,
    pub timing: ProbeTiming,
    pub policy: LinkPolicy,
    pub targets: watch::Receiver<Vec<Target>>,
    pub replies: mpsc::Receiver<ProbeReply>,
    pub links: SharedLinks,
    pub metrics: Arc<MeshMetrics>,
    /// Woken whenever a link changes state, so it is published at once.
    pub changes: Arc<Notify>,
}

/// A target's metric handles, looked up once rather than per probe.
#[derive(Clone)]
struct TargetMetrics {
    sent: Counter,
    lost: Counter,
    rtt: Histogram,
    loss: Gauge<f64, AtomicU64>,
}

impl TargetMetrics {
    fn new(m: &MeshMetrics, target: &str) -> Self {
        let label = TargetLabel {
            target: target.to_string(),
        };
        TargetMetrics {
            sent: m.probes_sent.get_or_create(&label).clone(),
            lost: m.probes_lost.get_or_create(&label).clone(),
            rtt: m.probe_rtt.get_or_create(&label).clone(),
            loss: m.link_loss.get_or_create(&label).clone(),
        }
    }
}

struct Outstanding {
    target: Arc<str>,
    addr: SocketAddr,
    sent_at: Instant,
    metrics: TargetMetrics,
}

impl Prober {
    pub async fn run(mut self) {
        let spacing = self.timing.interval / self.timing.probes_per_interval.max(1);
        let mut probe_tick = tokio::time::interval(spacing);
        probe_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tcp_tick = tokio::time::interval(self.timing.tcp_interval);
        tcp_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (tcp_tx, mut tcp_rx) = mpsc::channel::<(String, Option<Duration>)>(1024);
        let mut tcp_in_flight: HashSet<String> = HashSet::new();
        let mut outstanding: HashMap<u64, Outstanding> = HashMap::new();
        let mut deadlines: VecDeque<(Instant, u64)> = VecDeque::new();
        let mut next_id: u64 = 1;
        let mut targets: Vec<Target> = self.targets.borrow().clone();
        let mut target_metrics = self.sync_trackers(&targets);

        loop {
            let next_deadline = deadlines.front().map(|(d, _)| *d);
            tokio::select! {
                _ = probe_tick.tick() => {
                    let now = Instant::now();
                    for (t, (name, m)) in targets.iter().zip(&target_metrics) {
                        let id = next_id;
                        next_id += 1;
                        m.sent.inc();
                        outstanding.insert(id, Outstanding { target: name.clone(), addr: t.addr, sent_at: now, metrics: m.clone() });
                        deadlines.push_back((now + self.timing.timeout, id));
                        self.endpoint.send_probe(t.addr, id).await;
                    }
                }
                Some(reply) = self.replies.recv() => {
                    // A reply after the timeout is a loss, even when it
                    // arrives before the deadline branch has run.
                    let matches = outstanding.get(&reply.probe_id).is_some_and(|o| {
                        o.addr == reply.from && reply.received_at.saturating_duration_since(o.sent_at) <= self.timing.timeout
                    });
                    if matches {
                        let o = outstanding.remove(&reply.probe_id).expect("checked");
                        let rtt = reply.received_at.saturating_duration_since(o.sent_at);
                        o.metrics.rtt.observe(rtt.as_secs_f64());
                        self.record(&o.target, &o.metrics, Some(rtt));
                    }
                }
                _ = sleep_until_opt(next_deadline) => {
                    let now = Instant::now();
                    while let Some(&(deadline, id)) = deadlines.front() {
                        if deadline > now {
                            break;
                        }
                        deadlines.pop_front();
                        if let Some(o) = outstanding.remove(&id) {
                            o.metrics.lost.inc();
                            self.record(&o.target, &o.metrics, None);
                        }
                    }
                }
                _ = tcp_tick.tick() => {
                    let from = self.endpoint.local_addr();
                    for t in &targets {
                        if !tcp_in_flight.insert(t.id.clone()) {
                            continue;
                        }
                        let net = self.net.clone();
                        let tx = tcp_tx.clone();
                        let (id, addr, timeout) = (t.id.clone(), t.addr, self.timing.tcp_timeout);
                        tokio::spawn(async move {
                            let start = Instant::now();
                            let result = match tokio::time::timeout(timeout, net.tcp_connect(from, addr)).await {
                                Ok(Ok(())) => Some(start.elapsed()),
                                _ => None,
                            };
                            let _ = tx.send((id, result)).await;
                        });
                    }
                }
                Some((id, result)) = tcp_rx.recv() => {
                    tcp_in_flight.remove(&id);
                    if result.is_none() {
                        self.metrics.tcp_connect_failures.get_or_create(&TargetLabel { target: id.clone() }).inc();
                    }
                    if let Some(t) = self.links.lock().expect("link table lock").trackers.get_mut(&id) {
                        t.record_tcp(result);
                    }
                }
                changed = self.targets.changed() => {
                    if changed.is_err() {
                        return; // the node is shutting down
                    }
                    targets = self.targets.borrow_and_update().clone();
                    target_metrics = self.sync_trackers(&targets);
                    let known: HashSet<&str> = targets.iter().map(|t| t.id.as_str()).collect();
                    outstanding.retain(|_, o| known.contains(&*o.target));
                }
            }
        }
    }

    fn sync_trackers(&self, targets: &[Target]) -> Vec<(Arc<str>, TargetMetrics)> {
        let mut table = self.links.lock().expect("link table lock");
        let wanted: HashSet<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        let gone: Vec<String> = table
            .trackers
            .keys()
            .filter(|k| !wanted.contains(k.as_str()))
            .cloned()
            .collect();
        for id in gone {
            table.trackers.remove(&id);
            for s in LinkState::ALL {
                self.metrics.link_state.remove(&LinkStateLabel {
                    target: id.clone(),
                    state: s.as_str(),
                });
            }
            self.metrics
                .link_loss
                .remove(&TargetLabel { target: id.clone() });
        }
        let now = unix_ms() / 1000;
        for t in targets {
            table
                .trackers
                .entry(t.id.clone())
                .or_insert_with(|| LinkTracker::new(now));
        }
        targets
            .iter()
            .map(|t| {
                (
                    Arc::from(t.id.as_str()),
                    TargetMetrics::new(&self.metrics, &t.id),
                )
            })
            .collect()
    }

    fn record(&self, target: &str, metrics: &TargetMetrics, rtt: Option<Duration>) {
        let mut table = self.links.lock().expect("link table lock");
        let Some(t) = table.trackers.get_mut(target) else {
            return;
        };
        let before = t.state();
        t.record(Instant::now(), unix_ms() / 1000, rtt, &self.policy);
        let after = t.state();
        metrics.loss.set(t.loss());
        drop(table);
        if before != after {
            tracing::info!(
                target_node = target,
                from = before.as_str(),
                to = after.as_str(),
                "link state changed"
            );
            for s in LinkState::ALL {
                self.metrics
                    .link_state
                    .get_or_create(&LinkStateLabel {
                        target: target.into(),
                        state: s.as_str(),
                    })
                    .set((s == after) as i64);
            }
            self.changes.notify_one();
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
