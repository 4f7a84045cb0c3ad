//! The prober: sends sequenced UDP probes to every target, rotating over
//! the probe flows (source ports), and TCP connects on the same flows as a
//! second path, and feeds the outcomes to the link trackers.
//!
//! Sending never waits for a peer: probes go out on the flow sockets,
//! replies arrive through the endpoint's receive tasks, each probe expires
//! on its own deadline, and each TCP connect runs in its own task under its
//! own timeout. A dead, silent or half-open peer therefore costs the others
//! nothing.
//!
//! A lost scheduled probe is confirmed at once: a burst of one probe on
//! every other flow, [`BURST_SPACING`] apart, instead of waiting for the
//! next scheduled probes. A black hole is then `down` within a second, one
//! dead path shows its failing flows within a few, and the steady-state
//! rate stays the configured one. A reply on a flow called dead likewise
//! sends a burst over the other dead flows, so a repaired path is seen
//! repaired at once. Bursts are not sent for losses that are already
//! explained (a dead flow, a down link), and at most one of each kind
//! (confirming a loss, rechecking dead flows) per target per
//! [`BURST_GAP`]: a link with heavy random loss costs at most one probe
//! per flow per second more, and a recheck of dead flows never holds back
//! the confirmation of a new loss. A peer seen for the first time gets one
//! probe on every flow at once, so its link is judged within a second of
//! joining instead of after a whole rotation.
//!
//! Replies waiting in the channel are taken before any deadline is judged,
//! so a probe whose reply has arrived is never counted lost because the
//! prober woke late. TCP connects are spread over their interval instead
//! of starting all at once.
//!
//! Why one file: the prober's `impl` (about 450 lines) is one event loop
//! (schedule, send, expire, burst, connect) over one set of timers; kept
//! whole, its timing can be read in one place.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use crate::link::{LinkPolicy, LinkState, LinkSummary, LinkTracker, LossKind, Outcome, MIN_JUDGED};
use crate::metrics::{FlowLabel, LinkStateLabel, LossKindLabel, MeshMetrics, TargetLabel};
use crate::net::Net;

/// Time between the probes of a confirmation burst.
pub const BURST_SPACING: Duration = Duration::from_millis(5);
/// The least time between two bursts to one target.
pub const BURST_GAP: Duration = Duration::from_secs(1);
/// How far apart the first probes of new peers start.
pub const INTRO_SPREAD: Duration = Duration::from_millis(1);
/// The shortest timeout a fast link's probes get (see
/// [`LinkTracker::probe_timeout`]).
pub const TIMEOUT_FLOOR: Duration = Duration::from_millis(100);

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
    /// The source port of each probe flow.
    pub flow_ports: Vec<u16>,
}

pub type SharedLinks = Arc<Mutex<LinkTable>>;

/// Full-resolution view of this node's outgoing links.
pub fn link_summaries(links: &SharedLinks, policy: &LinkPolicy) -> Vec<(String, LinkSummary)> {
    let now = Instant::now();
    let mut table = links.lock().expect("link table lock");
    let LinkTable {
        trackers,
        flow_ports,
    } = &mut *table;
    let mut v: Vec<(String, LinkSummary)> = trackers
        .iter_mut()
        .map(|(id, t)| (id.clone(), t.summary_with_ports(now, policy, flow_ports)))
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
    failing: Gauge,
    bursts: Counter,
    /// Loss over the window, by flow.
    flow_loss: Vec<Gauge<f64, AtomicU64>>,
}

impl TargetMetrics {
    fn new(m: &MeshMetrics, target: &str, flows: usize) -> Self {
        let label = TargetLabel {
            target: target.to_string(),
        };
        TargetMetrics {
            sent: m.probes_sent.get_or_create(&label).clone(),
            lost: m.probes_lost.get_or_create(&label).clone(),
            rtt: m.probe_rtt.get_or_create(&label).clone(),
            loss: m.link_loss.get_or_create(&label).clone(),
            failing: m.failing_flows.get_or_create(&label).clone(),
            bursts: m.confirm_bursts.get_or_create(&label).clone(),
            flow_loss: (0..flows)
                .map(|f| {
                    m.flow_loss
                        .get_or_create(&FlowLabel {
                            target: target.to_string(),
                            flow: f.to_string(),
                        })
                        .clone()
                })
                .collect(),
        }
    }
}

/// Per-target scheduling state.
struct Schedule {
    addr: SocketAddr,
    metrics: TargetMetrics,
    next_flow: usize,
    next_tcp_flow: usize,
    /// Alternates scheduled probes between the rotation and dead flows.
    dead_turn: bool,
    next_dead: usize,
    /// When the last burst confirming a loss went out.
    last_burst: Option<Instant>,
    /// When the last burst checking dead flows went out.
    last_check: Option<Instant>,
}

/// Why a burst of probes goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Burst {
    /// A scheduled probe was lost: the other flows, at once.
    Confirm,
    /// A dead flow answered: the other dead flows, at once.
    Recheck,
    /// A new peer: every flow, so that its link has a verdict soon.
    Introduce,
}

struct Outstanding {
    target: Arc<str>,
    flow: usize,
    sent_at: Instant,
    timeout: Duration,
    /// Sent on schedule (a loss may start a burst), not by a burst.
    scheduled: bool,
}

/// A probe of a burst, waiting for its time.
struct Queued {
    target: Arc<str>,
    flow: usize,
}

/// The state of one running prober loop.
struct Run {
    /// By target id.
    schedules: HashMap<Arc<str>, Schedule>,
    outstanding: HashMap<u64, Outstanding>,
    /// Probe deadlines: time, probe id.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Burst probes to send, by time then sequence.
    queued: BTreeMap<(Instant, u64), Queued>,
    next_id: u64,
}

impl Prober {
    pub async fn run(mut self) {
        let flows = self.endpoint.flow_count();
        let spacing = self.timing.interval / self.timing.probes_per_interval.max(1);
        let mut probe_tick = tokio::time::interval(spacing);
        probe_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tcp_tick = tokio::time::interval(self.timing.tcp_interval);
        tcp_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (tcp_tx, mut tcp_rx) = mpsc::channel::<(Arc<str>, usize, Option<Outcome>)>(1024);
        let mut tcp_in_flight: HashSet<(Arc<str>, usize)> = HashSet::new();
        let targets: Vec<Target> = self.targets.borrow().clone();
        let (schedules, new) = self.sync_trackers(&targets, HashMap::new());
        let mut run = Run {
            schedules,
            outstanding: HashMap::new(),
            deadlines: BTreeSet::new(),
            queued: BTreeMap::new(),
            next_id: 1,
        };
        Self::introduce(&mut run, &new, flows);
        let flow_addrs = self.endpoint.flow_addrs();
        let (_, closed) = mpsc::channel(1);
        let mut replies = std::mem::replace(&mut self.replies, closed);

        loop {
            let next_deadline = run.deadlines.first().map(|(d, _)| *d);
            let next_queued = run.queued.keys().next().map(|(d, _)| *d);
            tokio::select! {
                _ = probe_tick.tick() => {
                    let names: Vec<Arc<str>> = run.schedules.keys().cloned().collect();
                    for name in names {
                        self.send(&mut run, &name, None).await;
                    }
                }
                _ = sleep_until_opt(next_queued) => {
                    let now = Instant::now();
                    while let Some(entry) = run.queued.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let q = entry.remove();
                        self.send(&mut run, &q.target, Some(q.flow)).await;
                    }
                }
                Some(reply) = replies.recv() => self.on_reply(&mut run, reply),
                _ = sleep_until_opt(next_deadline) => {
                    // Replies that arrived in time but wait in the queue
                    // are taken first: they are no loss.
                    while let Ok(reply) = replies.try_recv() {
                        self.on_reply(&mut run, reply);
                    }
                    let now = Instant::now();
                    while run.deadlines.first().is_some_and(|(d, _)| *d <= now) {
                        let (_, id) = run.deadlines.pop_first().expect("checked");
                        let Some(o) = run.outstanding.remove(&id) else { continue };
                        let Some(s) = run.schedules.get(&o.target) else { continue };
                        s.metrics.lost.inc();
                        let news = self.is_news(&o.target, o.flow);
                        self.record(&o.target, s, o.flow, Outcome::Lost);
                        if o.scheduled && news {
                            self.burst_over_others(&mut run, &o.target, o.flow, flows);
                        }
                    }
                }
                _ = tcp_tick.tick() => {
                    // Spread over the interval: one node's connects (and
                    // a grid's, when its nodes started together) do not
                    // all hit the kernels at the same instant.
                    // Each connect is over (done or timed out) before the
                    // next tick.
                    let count = run.schedules.len().max(1) as u32;
                    let spread = self.timing.tcp_interval.saturating_sub(self.timing.tcp_timeout);
                    for (k, (name, s)) in run.schedules.iter_mut().enumerate() {
                        let offset = spread / count * k as u32;
                        let flow = s.next_tcp_flow % flows;
                        s.next_tcp_flow = s.next_tcp_flow.wrapping_add(1);
                        if !tcp_in_flight.insert((name.clone(), flow)) {
                            continue;
                        }
                        let from = flow_addrs[flow];
                        let net = self.net.clone();
                        let tx = tcp_tx.clone();
                        let (name, addr, timeout) = (name.clone(), s.addr, self.timing.tcp_timeout);
                        tokio::spawn(async move {
                            tokio::time::sleep(offset).await;
                            let start = Instant::now();
                            let outcome = match tokio::time::timeout(timeout, net.tcp_connect(from, addr)).await {
                                Ok(Ok(())) => Some(Outcome::TcpReached(start.elapsed())),
                                // A refusal comes from the peer: the path works.
                                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                    Some(Outcome::TcpReached(start.elapsed()))
                                }
                                // The flow's port is taken locally: no
                                // measurement, not a loss.
                                Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable) => {
                                    tracing::debug!(%from, error = %e, "tcp probe cannot use its flow's port");
                                    None
                                }
                                Ok(Err(_)) | Err(_) => Some(Outcome::TcpLost),
                            };
                            let _ = tx.send((name, flow, outcome)).await;
                        });
                    }
                }
                Some((name, flow, outcome)) = tcp_rx.recv() => {
                    tcp_in_flight.remove(&(name.clone(), flow));
                    let Some(outcome) = outcome else { continue };
                    if outcome == Outcome::TcpLost {
                        self.metrics.tcp_connect_failures.get_or_create(&TargetLabel { target: name.to_string() }).inc();
                    }
                    if let Some(s) = run.schedules.get(&name) {
                        self.record(&name, s, flow, outcome);
                    }
                }
                changed = self.targets.changed() => {
                    if changed.is_err() {
                        return; // the node is shutting down
                    }
                    let targets = self.targets.borrow_and_update().clone();
                    let (schedules, new) = self.sync_trackers(&targets, std::mem::take(&mut run.schedules));
                    run.schedules = schedules;
                    Self::introduce(&mut run, &new, flows);
                    let schedules = &run.schedules;
                    run.outstanding.retain(|_, o| schedules.contains_key(&o.target));
                    let outstanding = &run.outstanding;
                    run.deadlines.retain(|(_, id)| outstanding.contains_key(id));
                    run.queued.retain(|_, q| schedules.contains_key(&q.target));
                }
            }
        }
    }

    /// A probe reply: a loss if it came after the probe's timeout, even
    /// when it is read before the deadline was handled; no reply at all
    /// when it came from another address or on another flow.
    fn on_reply(&self, run: &mut Run, reply: ProbeReply) {
        let matches = run.outstanding.get(&reply.probe_id).is_some_and(|o| {
            reply.flow == o.flow
                && run
                    .schedules
                    .get(&o.target)
                    .is_some_and(|s| s.addr == reply.from)
                && reply.received_at.saturating_duration_since(o.sent_at) <= o.timeout
        });
        if !matches {
            return;
        }
        let o = run.outstanding.remove(&reply.probe_id).expect("checked");
        run.deadlines
            .remove(&(o.sent_at + o.timeout, reply.probe_id));
        let rtt = reply.received_at.saturating_duration_since(o.sent_at);
        let s = run.schedules.get(&o.target).expect("checked");
        s.metrics.rtt.observe(rtt.as_secs_f64());
        let was_dead = self.record(&o.target, s, o.flow, Outcome::Reply(rtt));
        if was_dead {
            self.burst_over_dead(run, &o.target, o.flow);
        }
    }

    /// Sends a probe to `target` on `flow`, or on schedule (`None`): the
    /// next flow of the rotation, and while some flows are dead, every
    /// other probe on one of them so that a repaired path is noticed soon.
    async fn send(&self, run: &mut Run, target: &Arc<str>, flow: Option<usize>) {
        let Some(s) = run.schedules.get_mut(target) else {
            return;
        };
        let (timeout, next_dead) = {
            let table = self.links.lock().expect("link table lock");
            let t = table.trackers.get(&**target);
            (
                t.map(|t| {
                    t.probe_timeout(self.timing.timeout, TIMEOUT_FLOOR.min(self.timing.timeout))
                })
                .unwrap_or(self.timing.timeout),
                t.and_then(|t| t.nth_failing(s.next_dead)),
            )
        };
        let scheduled = flow.is_none();
        let flow = flow.unwrap_or_else(|| {
            s.dead_turn = !s.dead_turn;
            match next_dead.filter(|_| s.dead_turn) {
                Some(dead) => {
                    s.next_dead = s.next_dead.wrapping_add(1);
                    dead
                }
                None => {
                    s.next_flow = s.next_flow.wrapping_add(1);
                    (s.next_flow - 1) % self.endpoint.flow_count()
                }
            }
        });
        let id = run.next_id;
        run.next_id += 1;
        let now = Instant::now();
        s.metrics.sent.inc();
        run.outstanding.insert(
            id,
            Outstanding {
                target: target.clone(),
                flow,
                sent_at: now,
                timeout,
                scheduled,
            },
        );
        run.deadlines.insert((now + timeout, id));
        self.endpoint.send_probe(flow, s.addr, target, id).await;
    }

    /// Whether a loss on `flow` would be news: the link is measured and
    /// not down, and the flow is not already dead. Random loss still
    /// bursts: a path dying on a lossy link must not take minutes to see,
    /// and [`BURST_GAP`] bounds what it costs.
    fn is_news(&self, target: &str, flow: usize) -> bool {
        let table = self.links.lock().expect("link table lock");
        table.trackers.get(target).is_some_and(|t| {
            !matches!(t.state(), LinkState::Down | LinkState::Unknown) && !t.is_failing(flow)
        })
    }

    /// Probes new peers at once, [`MIN_JUDGED`] probes each over every
    /// flow, so that their links have a verdict within a fraction of a
    /// second instead of several probe intervals. Peers start a
    /// millisecond apart, so a node joining a large grid does not send
    /// them all in the same instant.
    fn introduce(run: &mut Run, new: &[Arc<str>], flows: usize) {
        for (i, target) in new.iter().enumerate() {
            let offset = INTRO_SPREAD * i as u32;
            Self::burst_at(
                run,
                target,
                Burst::Introduce,
                offset,
                (0..MIN_JUDGED.max(flows)).map(|k| k % flows.max(1)),
            );
        }
    }

    /// Queues a burst over `flows` to `target`, unless one of the same kind
    /// went out less than [`BURST_GAP`] ago: a check of dead flows does not
    /// hold back the confirmation of a new loss, nor the other way round.
    fn burst(
        run: &mut Run,
        target: &Arc<str>,
        kind: Burst,
        flows: impl IntoIterator<Item = usize>,
    ) {
        Self::burst_at(run, target, kind, Duration::ZERO, flows)
    }

    /// [`Self::burst`], starting `offset` from now.
    fn burst_at(
        run: &mut Run,
        target: &Arc<str>,
        kind: Burst,
        offset: Duration,
        flows: impl IntoIterator<Item = usize>,
    ) {
        let now = Instant::now();
        let Some(s) = run.schedules.get_mut(target) else {
            return;
        };
        let last = match kind {
            Burst::Confirm => &mut s.last_burst,
            Burst::Recheck => &mut s.last_check,
            Burst::Introduce => &mut None,
        };
        if last.is_some_and(|at| now.duration_since(at) < BURST_GAP) {
            return;
        }
        *last = Some(now);
        s.metrics.bursts.inc();
        for (k, flow) in flows.into_iter().enumerate() {
            let seq = run.next_id;
            run.next_id += 1;
            run.queued.insert(
                (now + offset + BURST_SPACING * k as u32, seq),
                Queued {
                    target: target.clone(),
                    flow,
                },
            );
        }
    }

    /// Confirms a lost probe on the other flows.
    fn burst_over_others(&self, run: &mut Run, target: &Arc<str>, lost_flow: usize, flows: usize) {
        if flows > 1 {
            Self::burst(
                run,
                target,
                Burst::Confirm,
                (1..flows).map(move |k| (lost_flow + k) % flows),
            );
        }
    }

    /// A dead flow answered: checks the other dead flows at once.
    fn burst_over_dead(&self, run: &mut Run, target: &Arc<str>, answered: usize) {
        let dead: Vec<usize> = {
            let table = self.links.lock().expect("link table lock");
            table
                .trackers
                .get(&**target)
                .map(LinkTracker::failing_flows)
                .unwrap_or_default()
                .into_iter()
                .filter(|f| *f != answered)
                .collect()
        };
        if !dead.is_empty() {
            Self::burst(run, target, Burst::Recheck, dead);
        }
    }

    /// Keeps trackers and metrics in line with `targets`; a target whose
    /// address is unchanged keeps its schedule from `old`. Also returns the
    /// targets that are new (or moved).
    fn sync_trackers(
        &self,
        targets: &[Target],
        mut old: HashMap<Arc<str>, Schedule>,
    ) -> (HashMap<Arc<str>, Schedule>, Vec<Arc<str>>) {
        let mut table = self.links.lock().expect("link table lock");
        let flows = self.endpoint.flow_count();
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
            for kind in LossKind::ALL {
                self.metrics.loss_kind.remove(&LossKindLabel {
                    target: id.clone(),
                    kind: kind.as_str(),
                });
            }
            for f in 0..flows {
                self.metrics.flow_loss.remove(&FlowLabel {
                    target: id.clone(),
                    flow: f.to_string(),
                });
            }
            let label = TargetLabel { target: id.clone() };
            let m = &self.metrics;
            m.link_loss.remove(&label);
            m.failing_flows.remove(&label);
            m.probes_sent.remove(&label);
            m.probes_lost.remove(&label);
            m.probe_rtt.remove(&label);
            m.tcp_connect_failures.remove(&label);
            m.confirm_bursts.remove(&label);
        }
        let now = unix_ms() / 1000;
        for t in targets {
            table
                .trackers
                .entry(t.id.clone())
                .or_insert_with(|| LinkTracker::new(now, flows));
        }
        let mut new = Vec::new();
        let schedules = targets
            .iter()
            .map(|t| {
                let kept = old
                    .remove_entry(t.id.as_str())
                    .filter(|(_, s)| s.addr == t.addr);
                kept.unwrap_or_else(|| {
                    new.push(Arc::from(t.id.as_str()));
                    let schedule = Schedule {
                        addr: t.addr,
                        metrics: TargetMetrics::new(&self.metrics, &t.id, flows),
                        // Targets start at different flows, so one node's
                        // probes are spread over its flows at every instant.
                        next_flow: t.addr.port() as usize + t.id.len(),
                        next_tcp_flow: t.id.len(),
                        dead_turn: false,
                        next_dead: 0,
                        last_burst: None,
                        last_check: None,
                    };
                    (Arc::from(t.id.as_str()), schedule)
                })
            })
            .collect();
        (schedules, new)
    }

    /// Records an outcome; returns whether `flow` was called dead before.
    fn record(&self, target: &str, s: &Schedule, flow: usize, outcome: Outcome) -> bool {
        let mut table = self.links.lock().expect("link table lock");
        let Some(t) = table.trackers.get_mut(target) else {
            return false;
        };
        let was_dead = t.is_failing(flow);
        let before = (t.state(), t.loss_kind(), t.failing_count());
        t.record(
            Instant::now(),
            unix_ms() / 1000,
            flow,
            outcome,
            &self.policy,
        );
        let after = (t.state(), t.loss_kind(), t.failing_count());
        s.metrics.loss.set(t.reported_loss());
        s.metrics.failing.set(after.2 as i64);
        if let Some(g) = s.metrics.flow_loss.get(flow) {
            g.set(t.flow_loss(flow));
        }
        drop(table);
        if before != after {
            tracing::info!(
                target_node = target,
                from = before.0.as_str(),
                to = after.0.as_str(),
                loss_kind = after.1.as_str(),
                failing_flows = after.2,
                "link state changed"
            );
            for st in LinkState::ALL {
                self.metrics
                    .link_state
                    .get_or_create(&LinkStateLabel {
                        target: target.into(),
                        state: st.as_str(),
                    })
                    .set((st == after.0) as i64);
            }
            for kind in LossKind::ALL {
                self.metrics
                    .loss_kind
                    .get_or_create(&LossKindLabel {
                        target: target.into(),
                        kind: kind.as_str(),
                    })
                    .set((kind == after.1) as i64);
            }
            self.changes.notify_one();
        }
        was_dead
    }
}

/// Sleeps until `deadline`, or for ever when there is none (a `select!`
/// arm that never fires).
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
