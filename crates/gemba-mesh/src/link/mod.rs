//! The state of one directed link, as its observer measures it.
//!
//! A link is probed over several *flows*: UDP probes and TCP connects that
//! leave from different source ports, so that routers which spread traffic
//! over equal-cost paths by a hash of addresses and ports (ECMP) send them
//! down different paths. A [`LinkTracker`] keeps every outcome of the window
//! with its flow, and classifies the link's loss:
//!
//! - **none** — nothing to speak of;
//! - **random** — losses spread over the flows, as congestion or a bad cable
//!   gives: the link is `degraded` once the window holds enough probes for
//!   the loss to be clearly over the threshold;
//! - **path** — some flows lose every probe while the others answer: one
//!   path is black-holed. The link is `degraded`, its loss figure is the
//!   share of flows that fail, and it never turns `down` for it;
//! - **total** — every flow loses: the link is `down`.
//!
//! # The statistics
//!
//! *Random loss rate.* `q` estimates how often a probe is lost by chance:
//! the share of the window's probes that were lost and later followed by a
//! reply on the same flow (transient losses), Laplace-smoothed as
//! `(lost + 1) / (probes + 2)` so that an empty or loss-free window never
//! gives 0. Losses already attributed to a dead path or a down period are
//! left out: those of a flow called dead, those of every flow losing when
//! a path is first called dead, a flow's second and later losses in a row
//! while a path is dead, and the losses of a down period.
//!
//! *A dead flow.* Flow `f` has lost its last `r_f` probes in a row. Under
//! random loss alone that happens with probability `q^r_f`; the flow is
//! called dead when `q^r_f < α / n` (`n` flows probed, `α` = 10⁻⁵ over the
//! whole link, Bonferroni-corrected; small because the test runs at every
//! probe), and never on fewer than 2 losses. On a healthy link (`q` ≈ 1/60)
//! that is 4 losses in a row on one flow; under 50 % random loss it takes
//! 20, which random loss almost never produces.
//!
//! *Down.* The link is down when the losses in a row, across flows, cover
//! every flow probed in the window, number at least `down_after_lost` and
//! at least `ln(α_down) / ln(q)` with `α_down` = 10⁻⁶. On a healthy link
//! one confirmation burst (one probe on every other flow) is enough; under
//! 50 % random loss it takes 20 losses in a row, so partial loss never
//! flaps a link to `down`. It comes back after `up_after_replies` replies.
//!
//! *Random loss verdict.* Degraded when the lower bound of the Wilson score
//! interval (99 %, z = 2.576) of the window's loss share is over
//! `degraded_loss`, with at least two losses: one lost probe in a fresh
//! window is never enough. It is left when that lower bound falls to half
//! the threshold (hysteresis).
//!
//! *Too few probes.* A window holding fewer than [`MIN_JUDGED`] probes
//! gives no verdict: a new link is `unknown` until a reply shows it up,
//! and is never called down or degraded on a handful of probes. RTTs and
//! losses of a link's first [`WARMUP`] never call it slow or lossy.
//!
//! *The reported loss* is the share of the window's probes that were lost,
//! including a down period or a dead path that has since recovered: the
//! figure is what the probes saw. For path loss it is the share of flows
//! that fail, the figure an application's connections would see.
//!
//! [`EdgeValue`] is the compact, quantized form that travels in gossip: it
//! changes only when the state, the loss classification, an RTT bucket or a
//! loss bucket changes.
//!
//! The tracker's statistics are one algorithm over one window, and its
//! `impl` (about 490 lines) is kept whole so that it reads in the order
//! of the explanation above; the gossip form of a link is in `edge`.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// One-character codes of link states, loss kinds and TCP summaries in
/// the gossip value (see [`EdgeValue`]).
mod codes {
    use super::{LinkState, LossKind, TcpPath};

    pub fn state(s: LinkState) -> char {
        match s {
            LinkState::Up => 'u',
            LinkState::Degraded => 'g',
            LinkState::Down => 'd',
            LinkState::Unknown => 'n',
            LinkState::Stale => 's',
        }
    }
    pub fn to_state(c: char) -> Option<LinkState> {
        Some(match c {
            'u' => LinkState::Up,
            'g' => LinkState::Degraded,
            'd' => LinkState::Down,
            'n' => LinkState::Unknown,
            's' => LinkState::Stale,
            _ => return None,
        })
    }
    pub fn kind(k: LossKind) -> char {
        match k {
            LossKind::None => 'n',
            LossKind::Random => 'r',
            LossKind::Path => 'p',
            LossKind::Total => 't',
        }
    }
    pub fn to_kind(c: char) -> Option<LossKind> {
        Some(match c {
            'n' => LossKind::None,
            'r' => LossKind::Random,
            'p' => LossKind::Path,
            't' => LossKind::Total,
            _ => return None,
        })
    }
    pub fn tcp(t: TcpPath) -> char {
        match t {
            TcpPath::Unknown => 'n',
            TcpPath::Connects => 'c',
            TcpPath::Partial => 'p',
            TcpPath::Fails => 'f',
        }
    }
    pub fn to_tcp(c: char) -> Option<TcpPath> {
        Some(match c {
            'n' => TcpPath::Unknown,
            'c' => TcpPath::Connects,
            'p' => TcpPath::Partial,
            'f' => TcpPath::Fails,
            _ => return None,
        })
    }
}

pub use gemba_core::graph::{link_reason, LinkState, LossKind, TcpPath};

mod edge;

pub use edge::*;

/// Thresholds a tracker decides with (from `[mesh]` config).
#[derive(Clone, Debug)]
pub struct LinkPolicy {
    pub window: Duration,
    pub down_after_lost: u32,
    pub up_after_replies: u32,
    pub degraded_loss: f64,
    pub degraded_rtt_p99: Duration,
}

impl LinkPolicy {
    pub fn from_config(c: &gemba_core::config::MeshConfig) -> Self {
        LinkPolicy {
            window: c.window,
            down_after_lost: c.down_after_lost,
            up_after_replies: c.up_after_replies,
            degraded_loss: c.degraded_loss,
            degraded_rtt_p99: c.degraded_rtt_p99,
        }
    }
}

/// Chance, at one probe, of calling some flow dead under random loss
/// alone. Small, because the test is repeated at every probe: at 2 probes
/// a second it is once in about a day.
const ALPHA_FLOW: f64 = 1e-5;
/// Chance, at one probe, of calling a link down under random loss alone.
const ALPHA_DOWN: f64 = 1e-6;
/// The Wilson interval's z for the random-loss verdict (99 %).
const WILSON_Z: f64 = 2.576;
/// How long after a link's first probe its RTTs and scattered losses start
/// to count towards calling it slow or lossy: both ends may be starting (a
/// process loading, a grid joining at once), and what that costs is not
/// the network's. The figures still show them, and a link that answers
/// nothing is still called down.
pub const WARMUP: Duration = Duration::from_secs(5);
/// Probes a window must hold before a link can be called down or
/// degraded: fewer say too little, and a link that just started being
/// probed is `unknown` (or `up`, once it answered) until then. The prober
/// sends this many at once to a new peer, so the wait is short.
pub const MIN_JUDGED: usize = 8;
/// Probes after the warm-up a random-loss verdict needs: with fewer, two
/// chance losses would already clear the Wilson bound.
pub const MIN_LOSS_JUDGED: usize = 20;
/// The most flows a link is probed over (a bit mask holds them).
pub const MAX_FLOWS: usize = 64;

/// One probe's outcome on one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A UDP probe answered after this RTT.
    Reply(Duration),
    /// A UDP probe lost (or answered after its timeout).
    Lost,
    /// A TCP connect reached the peer (handshake done, or refused by it).
    TcpReached(Duration),
    /// A TCP connect that got no answer in time.
    TcpLost,
}

impl Outcome {
    fn lost(self) -> bool {
        matches!(self, Outcome::Lost | Outcome::TcpLost)
    }
}

/// Per-flow figures over the window, for the API.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowSummary {
    pub flow: u8,
    /// Source port of the flow, where known.
    pub port: Option<u16>,
    pub probes: usize,
    pub lost: usize,
    /// Losses in a row, most recent last.
    pub trailing_lost: u32,
    /// This flow is called dead (see the module documentation).
    pub failing: bool,
}

/// Full-resolution summary of a link over its window.
#[derive(Clone, Debug, Serialize)]
pub struct LinkSummary {
    pub state: LinkState,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    /// Share of the window's probes lost; for path loss, the share of
    /// flows that fail.
    pub loss: f64,
    pub loss_kind: LossKind,
    /// Flows the link is probed over.
    pub flows_probed: u8,
    pub flows_failing: u8,
    pub reason: Option<String>,
    pub samples: usize,
    pub tcp: TcpPath,
    pub tcp_connect_ms: Option<f64>,
    pub flows: Vec<FlowSummary>,
    /// Unix seconds when the current state began.
    pub since: u64,
}

/// One probe in a link's history.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProbeOutcome {
    /// How long ago it was recorded.
    #[serde(serialize_with = "ser_ms")]
    pub age_ms: Duration,
    pub flow: u8,
    /// "udp" or "tcp".
    pub path: &'static str,
    #[serde(serialize_with = "ser_opt_ms")]
    pub rtt_ms: Option<Duration>,
    pub lost: bool,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    flow: u8,
    outcome: Outcome,
    /// A loss attributed to a dead path or a down period (not random
    /// loss), or a reply to a probe sent before a down period ended (its
    /// RTT measures the recovery, such as neighbour resolution on a link
    /// that came back, not the link's latency).
    explained: bool,
}

impl Sample {
    /// The RTT of a reply that measures the link's latency.
    fn rtt(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Reply(d) if !self.explained => Some(d),
            _ => None,
        }
    }
}

/// Tracks one directed link.
#[derive(Debug)]
pub struct LinkTracker {
    samples: VecDeque<Sample>,
    flows: usize,
    /// Losses in a row per flow.
    runs: Vec<u32>,
    /// Last TCP result per flow (`Some(true)`: reached).
    tcp_last: Vec<Option<bool>>,
    consecutive_lost: u32,
    consecutive_replies: u32,
    /// Flows touched by the current run of losses (bit per flow).
    run_flows: u64,
    state: LinkState,
    kind: LossKind,
    failing: u64,
    since_unix: u64,
    tcp_connect: Option<Duration>,
    /// p99 RTT as of the last record, once there are enough replies to
    /// shorten the probe timeout (kept so that sending a probe does not
    /// sort the window).
    timeout_p99: Option<Duration>,
    /// When the last down period ended.
    down_ended: Option<Instant>,
    /// When the first probe was recorded.
    first_at: Option<Instant>,
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Losses in a row that random loss at rate `q` produces with probability
/// below `alpha`.
fn runs_needed(q: f64, alpha: f64) -> u32 {
    let q = q.clamp(1e-9, 0.999);
    (alpha.ln() / q.ln()).ceil().max(1.0) as u32
}

/// Lower bound of the Wilson score interval for `k` successes in `n`.
fn wilson_lower(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (k, n, z) = (k as f64, n as f64, WILSON_Z);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt();
    ((centre - spread) / (1.0 + z * z / n)).max(0.0)
}

fn bit(flow: usize) -> u64 {
    1u64 << (flow % MAX_FLOWS)
}

impl LinkTracker {
    /// A tracker for a link probed over `flows` flows (1 to [`MAX_FLOWS`]).
    pub fn new(now_unix: u64, flows: usize) -> Self {
        let flows = flows.clamp(1, MAX_FLOWS);
        LinkTracker {
            samples: VecDeque::new(),
            flows,
            runs: vec![0; flows],
            tcp_last: vec![None; flows],
            consecutive_lost: 0,
            consecutive_replies: 0,
            run_flows: 0,
            state: LinkState::Unknown,
            kind: LossKind::None,
            failing: 0,
            since_unix: now_unix,
            tcp_connect: None,
            timeout_p99: None,
            down_ended: None,
            first_at: None,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    pub fn loss_kind(&self) -> LossKind {
        self.kind
    }

    pub fn flows(&self) -> usize {
        self.flows
    }

    /// Whether `flow` is called dead.
    pub fn is_failing(&self, flow: usize) -> bool {
        self.failing & bit(flow) != 0
    }

    /// The flows called dead, lowest first.
    pub fn failing_flows(&self) -> Vec<usize> {
        (0..self.flows).filter(|f| self.is_failing(*f)).collect()
    }

    /// How many flows are called dead.
    pub fn failing_count(&self) -> usize {
        self.failing.count_ones() as usize
    }

    /// The `k`-th flow called dead (counting round), if any is.
    pub fn nth_failing(&self, k: usize) -> Option<usize> {
        let n = self.failing_count();
        if n == 0 {
            return None;
        }
        (0..self.flows).filter(|f| self.is_failing(*f)).nth(k % n)
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(s) = self.samples.front() {
            if now.duration_since(s.at) > window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The window's RTTs that may call the link slow: those measured
    /// after [`WARMUP`], sorted.
    fn judged_rtts_sorted(&self) -> Vec<Duration> {
        let Some(first) = self.first_at else {
            return Vec::new();
        };
        let after = first + WARMUP;
        let mut v: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.at >= after)
            .filter_map(Sample::rtt)
            .collect();
        v.sort_unstable();
        v
    }

    fn rtts_sorted(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.samples.iter().filter_map(Sample::rtt).collect();
        v.sort_unstable();
        v
    }

    /// Share of the window's probes that were lost (as of the last record).
    pub fn loss(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let lost = self.samples.iter().filter(|s| s.outcome.lost()).count();
        lost as f64 / self.samples.len() as f64
    }

    /// The loss figure users see: the lost share of the window, or for a
    /// dead path the share of flows that fail.
    pub fn reported_loss(&self) -> f64 {
        if self.kind == LossKind::Path {
            return self.failing.count_ones() as f64 / self.flows as f64;
        }
        self.loss()
    }

    fn probed_mask(&self) -> u64 {
        self.samples.iter().fold(0, |m, s| m | bit(s.flow as usize))
    }

    /// The chance that a probe is lost at random (see the module docs).
    fn random_loss_rate(&self) -> f64 {
        let mut probes = 0usize;
        let mut lost = 0usize;
        // Walk newest first: a flow's losses count once a later reply on
        // that flow shows they were transient.
        let mut answered_later = 0u64;
        for s in self.samples.iter().rev() {
            let b = bit(s.flow as usize);
            if s.outcome.lost() {
                if answered_later & b != 0 && !s.explained {
                    probes += 1;
                    lost += 1;
                }
            } else {
                answered_later |= b;
                probes += 1;
            }
        }
        (lost as f64 + 1.0) / (probes as f64 + 2.0)
    }

    /// Records one probe outcome on `flow`.
    pub fn record(
        &mut self,
        now: Instant,
        now_unix: u64,
        flow: usize,
        outcome: Outcome,
        policy: &LinkPolicy,
    ) {
        let flow = flow % self.flows;
        self.first_at.get_or_insert(now);
        self.prune(now, policy.window);
        let lost = outcome.lost();
        if self.state == LinkState::Down
            && !lost
            && self.consecutive_replies + 1 >= policy.up_after_replies
        {
            // The down period is over: its losses were the outage, not
            // dead paths, so no flow carries them into the new state, and
            // the losses in the window (the outage and its ramp, such as a
            // peer restarting) are not random loss either. The loss
            // figure still counts them.
            self.runs.fill(0);
            for s in self.samples.iter_mut() {
                if s.outcome.lost() {
                    s.explained = true;
                }
            }
        }
        match outcome {
            Outcome::TcpReached(d) => {
                self.tcp_last[flow] = Some(true);
                self.tcp_connect = Some(d);
            }
            Outcome::TcpLost => self.tcp_last[flow] = Some(false),
            _ => {}
        }
        if lost {
            self.runs[flow] += 1;
            self.consecutive_lost += 1;
            self.consecutive_replies = 0;
            self.run_flows |= bit(flow);
        } else {
            self.runs[flow] = 0;
            self.consecutive_replies += 1;
            self.consecutive_lost = 0;
            self.run_flows = 0;
        }
        // A loss on a flow already known dead, or while the link is down,
        // is that fault again, not random loss; so is a second loss in a
        // row on any flow while a path is known dead (a flow of the same
        // path not yet called dead).
        let explained = match outcome {
            _ if lost => {
                self.is_failing(flow)
                    || self.state == LinkState::Down
                    || (self.kind == LossKind::Path && self.runs[flow] >= 2)
            }
            // A reply that ends or follows a down period to a probe sent
            // during it: queued behind the outage, not a latency sample.
            Outcome::Reply(rtt) => {
                self.state == LinkState::Down
                    || self
                        .down_ended
                        .is_some_and(|t| now.checked_sub(rtt).is_none_or(|sent| sent < t))
            }
            _ => false,
        };
        self.samples.push_back(Sample {
            at: now,
            flow: flow as u8,
            outcome,
            explained,
        });
        let rtts = self.rtts_sorted();
        self.timeout_p99 = (rtts.len() >= 5).then(|| percentile(&rtts, 0.99)).flatten();
        let judged = self.judged_rtts_sorted();
        let (next, kind, failing) = self.decide(policy, &judged);
        if kind == LossKind::Total || next == LinkState::Down {
            self.explain_current_run();
        }
        let path_begins = kind == LossKind::Path && self.kind != LossKind::Path;
        for f in 0..self.flows {
            // When a path is first seen dead, every flow losing at that
            // moment is most likely on it too.
            if (failing & bit(f) != 0 && !self.is_failing(f)) || (path_begins && self.runs[f] > 0) {
                self.explain_trailing(f);
            }
        }
        self.kind = kind;
        self.failing = failing;
        if next != self.state {
            if self.state == LinkState::Down {
                self.down_ended = Some(now);
            }
            self.state = next;
            self.since_unix = now_unix;
        }
    }

    /// Marks the losses of `flow` since its last reply as a dead path's.
    fn explain_trailing(&mut self, flow: usize) {
        for s in self.samples.iter_mut().rev() {
            if s.flow as usize != flow {
                continue;
            }
            if !s.outcome.lost() {
                break;
            }
            s.explained = true;
        }
    }

    /// Marks the current run of losses (every flow) as a down period's.
    fn explain_current_run(&mut self) {
        for s in self.samples.iter_mut().rev() {
            if !s.outcome.lost() {
                break;
            }
            s.explained = true;
        }
    }

    /// The state, loss kind and dead flows the window shows; `rtts` are
    /// the window's RTTs, sorted.
    fn decide(&self, policy: &LinkPolicy, rtts: &[Duration]) -> (LinkState, LossKind, u64) {
        // Too few probes for any verdict: a reply shows the link up, and
        // nothing shows it down or degraded yet.
        if self.samples.len() < MIN_JUDGED {
            let replied = self.samples.iter().any(|s| !s.outcome.lost());
            return match self.state {
                LinkState::Unknown | LinkState::Stale if replied => {
                    (LinkState::Up, LossKind::None, 0)
                }
                state => (state, self.kind, self.failing),
            };
        }
        let q = self.random_loss_rate();
        let probed = self.probed_mask();
        let n = probed.count_ones().max(1);
        // Total: the run covers every flow, long enough not to be chance.
        let need_down = policy
            .down_after_lost
            .max(n)
            .max(runs_needed(q, ALPHA_DOWN));
        if self.consecutive_lost >= need_down && self.run_flows & probed == probed {
            return (LinkState::Down, LossKind::Total, 0);
        }
        if self.state == LinkState::Down && self.consecutive_replies < policy.up_after_replies {
            return (LinkState::Down, LossKind::Total, 0);
        }
        if matches!(self.state, LinkState::Unknown | LinkState::Stale)
            && self.consecutive_replies == 0
        {
            return (self.state, LossKind::None, 0);
        }
        // Path: some flows dead, others answering.
        let need_flow = runs_needed(q, ALPHA_FLOW / n as f64).max(2);
        let mut failing = 0u64;
        for f in 0..self.flows {
            // A flow stays dead until it answers again (hysteresis).
            if self.runs[f] >= need_flow || (self.is_failing(f) && self.runs[f] > 0) {
                failing |= bit(f);
            }
        }
        if failing != 0 {
            return (LinkState::Degraded, LossKind::Path, failing);
        }
        let was_degraded = self.state == LinkState::Degraded;
        // Random loss, over the losses no fault explains, after the
        // warm-up.
        let (mut probes, mut lost) = (0usize, 0usize);
        let after = self.first_at.map(|f| f + WARMUP);
        for s in self
            .samples
            .iter()
            .filter(|s| after.is_some_and(|a| s.at >= a))
        {
            if !(s.explained && s.outcome.lost()) {
                probes += 1;
                lost += s.outcome.lost() as usize;
            }
        }
        let lower = wilson_lower(lost, probes);
        let loss_limit = if was_degraded && self.kind == LossKind::Random {
            policy.degraded_loss / 2.0
        } else {
            policy.degraded_loss
        };
        // After the warm-up, too, a handful of probes is no verdict: a
        // fresh window at 2 % loss must not read as lossy.
        let lossy = probes >= MIN_LOSS_JUDGED && lost >= 2 && lower > loss_limit;
        // Hysteresis: leaving slow needs the figures clearly back below.
        let rtt_limit = if was_degraded {
            policy.degraded_rtt_p99.mul_f64(0.8)
        } else {
            policy.degraded_rtt_p99
        };
        // p99 over a short window is close to the maximum; one late packet
        // must not make a link slow, so a few must be over the limit.
        let over = rtts.iter().rev().take_while(|r| **r > rtt_limit).count();
        let slow = rtts.len() >= MIN_JUDGED
            && percentile(rtts, 0.99).is_some_and(|p99| p99 > rtt_limit)
            && over
                >= if was_degraded {
                    1
                } else {
                    (rtts.len() / 50).max(2)
                };
        if lossy {
            (LinkState::Degraded, LossKind::Random, 0)
        } else if slow {
            (LinkState::Degraded, LossKind::None, 0)
        } else {
            (LinkState::Up, LossKind::None, 0)
        }
    }

    /// Share of `flow`'s probes in the window that were lost.
    pub fn flow_loss(&self, flow: usize) -> f64 {
        let (mut probes, mut lost) = (0usize, 0usize);
        for s in self.samples.iter().filter(|s| s.flow as usize == flow) {
            probes += 1;
            lost += s.outcome.lost() as usize;
        }
        if probes == 0 {
            0.0
        } else {
            lost as f64 / probes as f64
        }
    }

    /// A probe's timeout for this link: the configured timeout, or less
    /// once replies show the link is fast — four times its p99 RTT, never
    /// under `floor`. A confirmation burst then settles in well under a
    /// second on a healthy network.
    pub fn probe_timeout(&self, configured: Duration, floor: Duration) -> Duration {
        match self.timeout_p99 {
            Some(p99) => (p99 * 4).max(floor).min(configured),
            None => configured,
        }
    }

    /// The raw probe outcomes in the window, oldest first.
    pub fn history(&mut self, now: Instant, policy: &LinkPolicy) -> Vec<ProbeOutcome> {
        self.prune(now, policy.window);
        self.samples
            .iter()
            .map(|s| ProbeOutcome {
                age_ms: now.duration_since(s.at),
                flow: s.flow,
                path: match s.outcome {
                    Outcome::Reply(_) | Outcome::Lost => "udp",
                    _ => "tcp",
                },
                rtt_ms: match s.outcome {
                    Outcome::Reply(d) | Outcome::TcpReached(d) => Some(d),
                    _ => None,
                },
                lost: s.outcome.lost(),
            })
            .collect()
    }

    fn tcp_path(&self) -> TcpPath {
        let tried = self.tcp_last.iter().flatten().count();
        let reached = self.tcp_last.iter().flatten().filter(|r| **r).count();
        match (tried, reached) {
            (0, _) => TcpPath::Unknown,
            (t, r) if t == r => TcpPath::Connects,
            (_, 0) => TcpPath::Fails,
            _ => TcpPath::Partial,
        }
    }

    pub fn summary(&mut self, now: Instant, policy: &LinkPolicy) -> LinkSummary {
        self.summary_with_ports(now, policy, &[])
    }

    /// The summary, naming each flow's source port from `ports`.
    pub fn summary_with_ports(
        &mut self,
        now: Instant,
        policy: &LinkPolicy,
        ports: &[u16],
    ) -> LinkSummary {
        self.prune(now, policy.window);
        let rtts = self.rtts_sorted();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut flows: Vec<FlowSummary> = (0..self.flows)
            .map(|f| FlowSummary {
                flow: f as u8,
                port: ports.get(f).copied(),
                probes: 0,
                lost: 0,
                trailing_lost: self.runs[f],
                failing: self.is_failing(f),
            })
            .collect();
        for s in &self.samples {
            let f = &mut flows[s.flow as usize];
            f.probes += 1;
            f.lost += s.outcome.lost() as usize;
        }
        // Every flow is probed in turn, so the count is the flows', not
        // those that happen to be in the window yet.
        let probed = self.flows as u8;
        let failing = self.failing.count_ones() as u8;
        let loss = self.reported_loss();
        LinkSummary {
            state: self.state,
            rtt_p50_ms: percentile(&rtts, 0.5).map(ms),
            rtt_p99_ms: percentile(&rtts, 0.99).map(ms),
            loss,
            loss_kind: self.kind,
            flows_probed: probed,
            flows_failing: failing,
            reason: link_reason(self.state, self.kind, failing, probed, Some(loss)),
            samples: self.samples.len(),
            tcp: self.tcp_path(),
            tcp_connect_ms: self.tcp_connect.map(ms),
            flows,
            since: self.since_unix,
        }
    }

    /// The value to gossip now. `published` is what was last gossiped for
    /// this link: its RTT buckets are kept while the figures stay near
    /// them, so jitter does not become gossip traffic.
    pub fn edge_value(
        &mut self,
        now: Instant,
        policy: &LinkPolicy,
        published: Option<&EdgeValue>,
    ) -> EdgeValue {
        let s = self.summary(now, policy);
        let prev = published;
        let p50 = rtt_bucket(s.rtt_p50_ms, prev.map(|p| p.p50));
        let p99 = rtt_bucket(s.rtt_p99_ms, prev.map(|p| p.p99));
        EdgeValue {
            state: s.state,
            p50,
            p99,
            loss: loss_bucket_near(s.loss, prev.map(|p| p.loss)),
            tcp: s.tcp,
            kind: s.loss_kind,
            failing: s.flows_failing,
            probed: s.flows_probed,
            since: s.since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LinkPolicy {
        LinkPolicy {
            window: Duration::from_secs(30),
            down_after_lost: 3,
            up_after_replies: 2,
            degraded_loss: 0.05,
            degraded_rtt_p99: Duration::from_millis(100),
        }
    }

    /// A deterministic coin for random loss.
    struct Coin(u64);
    impl Coin {
        fn lost(&mut self, p: f64) -> bool {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 1_000_000) as f64 / 1_000_000.0 < p
        }
    }

    /// Probes a link as the prober does by default: 2 per second, rotating
    /// over `flows` flows; `lost(flow)` says whether a probe is lost.
    /// Returns the states seen after each probe.
    fn probe(
        t: &mut LinkTracker,
        now: &mut Instant,
        count: usize,
        mut lost: impl FnMut(usize) -> bool,
    ) -> Vec<LinkState> {
        let mut seen = Vec::new();
        for _ in 0..count {
            *now += Duration::from_millis(500);
            let flow = NEXT.with(|n| {
                let f = n.get();
                n.set(f + 1);
                f
            }) % t.flows();
            let o = if lost(flow) {
                Outcome::Lost
            } else {
                Outcome::Reply(Duration::from_millis(1))
            };
            t.record(*now, 0, flow, o, &policy());
            seen.push(t.state());
        }
        seen
    }

    thread_local! {
        static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn transitions_to(states: &[LinkState], to: LinkState) -> usize {
        states
            .windows(2)
            .filter(|w| w[0] != to && w[1] == to)
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn first_reply_brings_unknown_link_up() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 8);
        assert_eq!(t.state(), LinkState::Unknown);
        probe(&mut t, &mut now, 1, |_| false);
        assert_eq!(t.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handful_of_probes_never_calls_a_link_down_or_degraded() {
        let policy = policy();
        // Lost, slow or both: fewer than MIN_JUDGED probes say nothing bad.
        let mut now = Instant::now();
        let mut lossy = LinkTracker::new(0, 8);
        let mut slow = LinkTracker::new(0, 8);
        slow.record(now, 0, 0, Outcome::Reply(Duration::from_millis(1)), &policy);
        now += WARMUP;
        for k in 0..MIN_JUDGED - 1 {
            now += Duration::from_millis(5);
            lossy.record(now, 0, k, Outcome::Lost, &policy);
            slow.record(
                now,
                0,
                k,
                Outcome::Reply(Duration::from_millis(400)),
                &policy,
            );
            assert_eq!(lossy.state(), LinkState::Unknown, "after {} probes", k + 1);
            assert_eq!(slow.state(), LinkState::Up, "after {} probes", k + 2);
        }
        // The probe that completes the first window after the warm-up
        // gives the verdict.
        now += Duration::from_millis(5);
        slow.record(
            now,
            0,
            7,
            Outcome::Reply(Duration::from_millis(400)),
            &policy,
        );
        assert_eq!(slow.state(), LinkState::Degraded);
        // Slow replies in a link's first seconds (both ends starting) never
        // call it slow, however many.
        let mut starting = LinkTracker::new(0, 8);
        let t0 = Instant::now();
        for k in 0..40 {
            let at = t0 + Duration::from_millis(100 * k);
            starting.record(
                at,
                0,
                k as usize,
                Outcome::Reply(Duration::from_millis(400)),
                &policy,
            );
        }
        assert_eq!(starting.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn two_percent_random_loss_never_degrades_a_fresh_window() {
        // Many fresh windows, each as after a start or a recovery.
        let mut coin = Coin(0x2545_f491_4f6c_dd1d);
        let mut degraded = 0;
        let mut probes = 0;
        for _ in 0..200 {
            let mut now = Instant::now();
            let mut t = LinkTracker::new(0, 8);
            let states = probe(&mut t, &mut now, 120, |_| coin.lost(0.02));
            degraded += states.iter().filter(|s| **s != LinkState::Up).count();
            probes += states.len();
        }
        // 24,000 probes at 2 % loss: a fresh window must not read as
        // degraded (at most one window in a thousand, by the 99 % bound).
        assert!(
            degraded * 1000 <= probes,
            "{degraded} of {probes} probes saw a degraded link"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn random_loss_is_degraded_with_its_rate_and_never_down() {
        for (p, seed) in [(0.2, 11u64), (0.5, 12)] {
            let mut coin = Coin(seed * 0x9e37_79b9);
            let mut now = Instant::now();
            let mut t = LinkTracker::new(0, 8);
            probe(&mut t, &mut now, 2, |_| false);
            // Ten minutes at 2 probes/s.
            let states = probe(&mut t, &mut now, 1200, |_| coin.lost(p));
            assert_eq!(
                states.iter().filter(|s| **s == LinkState::Down).count(),
                0,
                "{p}: partial loss must never make the link down"
            );
            let settled = &states[60..];

            // A window of 60 probes at 20 % loss now and then holds only
            // 4 losses (a 2.6 σ dip): the link may read up for a moment,
            // but not flap.
            let up = settled.iter().filter(|s| **s == LinkState::Up).count();
            assert!(
                up * 100 <= settled.len() * 3 && transitions_to(settled, LinkState::Up) <= 2,
                "{p}: not steadily degraded: {up} up"
            );
            assert_eq!(t.loss_kind(), LossKind::Random, "{p}");
            let s = t.summary(now, &policy());
            assert!((s.loss - p).abs() < 0.12, "{p}: loss reported {}", s.loss);
            assert_eq!(s.flows_failing, 0, "{p}: no flow is a dead path");
            assert_eq!(
                s.reason.as_deref().map(|r| r.starts_with("random loss")),
                Some(true)
            );
        }
    }

    /// Dead paths as a flow hash picks them: `dead` lists the flows whose
    /// hash lands on a black-holed path.
    fn path_case(dead: &[usize]) -> (LinkTracker, Vec<LinkState>, Instant) {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 8);
        probe(&mut t, &mut now, 40, |_| false);
        let states = probe(&mut t, &mut now, 120, |f| dead.contains(&f));
        (t, states, now)
    }

    #[tokio::test(start_paused = true)]
    async fn dead_paths_are_path_loss_with_the_failing_flows_counted() {
        for dead in [&[1usize, 3, 4, 6][..], &[2, 5], &[0, 1, 2, 4, 5, 7]] {
            let (mut t, states, now) = path_case(dead);
            assert!(!states.contains(&LinkState::Down), "{dead:?}: never down");
            // Every flow is probed every 4 s (without the prober's
            // confirmation bursts); four losses in a row call a flow dead
            // on a healthy link.
            let first = states
                .iter()
                .position(|s| *s == LinkState::Degraded)
                .expect("degraded");
            assert!(
                first <= 4 * 8,
                "{dead:?}: path loss seen after {first} probes"
            );
            assert!(
                states[first..].iter().all(|s| *s == LinkState::Degraded),
                "{dead:?}: path loss must not flap"
            );
            let s = t.summary(now, &policy());
            assert_eq!(s.loss_kind, LossKind::Path, "{dead:?}");
            assert_eq!(s.flows_failing as usize, dead.len(), "{dead:?}");
            assert_eq!(s.flows_probed, 8);
            assert!((s.loss - dead.len() as f64 / 8.0).abs() < 1e-9);
            assert_eq!(
                s.reason.unwrap(),
                format!("{} of 8 flows fail (a path is black-holed)", dead.len())
            );
            assert_eq!(t.failing_flows(), dead);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovered_path_is_up_once_its_flows_answer() {
        let (mut t, _, mut now) = path_case(&[1, 3, 4, 6]);
        let states = probe(&mut t, &mut now, 8, |_| false);
        assert_eq!(
            *states.last().unwrap(),
            LinkState::Up,
            "every flow answered again: {states:?}"
        );
        // The window still holds what the probes saw.
        let s = t.summary(now, &policy());
        assert!(s.loss > 0.1, "loss {}", s.loss);
        assert_eq!(s.loss_kind, LossKind::None);
    }

    #[tokio::test(start_paused = true)]
    async fn total_loss_is_down_after_one_loss_on_every_flow() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 8);
        probe(&mut t, &mut now, 40, |_| false);
        let states = probe(&mut t, &mut now, 8, |_| true);
        assert_ne!(states[6], LinkState::Down, "seven flows lost: not all yet");
        assert_eq!(states[7], LinkState::Down);
        assert_eq!(t.loss_kind(), LossKind::Total);
        assert_eq!(
            t.summary(now, &policy()).reason.as_deref(),
            Some("all 8 flows fail")
        );
        // Back after two replies, and no flow is left looking dead.
        let states = probe(&mut t, &mut now, 2, |_| false);
        assert_eq!(states, [LinkState::Down, LinkState::Up]);
        assert!(t.failing_flows().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn reported_loss_is_the_lost_share_of_the_window_through_down_and_up() {
        // The fault that hid loss: a link going down and up again must
        // keep the losses it saw in its figure.
        let mut coin = Coin(77);
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 1);
        let mut sent = VecDeque::new();
        for _ in 0..600 {
            now += Duration::from_millis(500);
            let lost = coin.lost(0.5);
            sent.push_back((now, lost));
            while sent
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > policy().window)
            {
                sent.pop_front();
            }
            let o = if lost {
                Outcome::Lost
            } else {
                Outcome::Reply(Duration::from_millis(1))
            };
            t.record(now, 0, 0, o, &policy());
            let truth = sent.iter().filter(|(_, l)| *l).count() as f64 / sent.len() as f64;
            assert!(
                (t.loss() - truth).abs() < 1e-9,
                "reported {} while the window lost {truth}",
                t.loss()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_percent_random_loss_does_not_flap_between_up_and_down() {
        let mut coin = Coin(99);
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 8);
        probe(&mut t, &mut now, 10, |_| false);
        let states = probe(&mut t, &mut now, 240, |_| coin.lost(0.5));
        assert!(transitions_to(&states, LinkState::Down) <= 1, "{states:?}");
        assert_eq!(transitions_to(&states[20..], LinkState::Up), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_p99_is_degraded_and_recovers_with_hysteresis() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 1);
        replies(&mut t, &mut now, 1, 1);
        now += WARMUP;
        replies(&mut t, &mut now, 150, MIN_JUDGED);
        assert_eq!(t.state(), LinkState::Degraded);
        assert_eq!(
            t.summary(now, &policy()).reason.as_deref(),
            Some("slow: p99 RTT over the threshold")
        );
        // 90 ms is below the 100 ms threshold but above the 80 ms release.
        now += Duration::from_secs(31);
        replies(&mut t, &mut now, 90, MIN_JUDGED);
        assert_eq!(t.state(), LinkState::Degraded);
        now += Duration::from_secs(31);
        replies(&mut t, &mut now, 10, MIN_JUDGED);
        assert_eq!(t.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn replies_queued_behind_an_outage_do_not_make_the_link_slow() {
        // A link that comes back resolves its neighbours first: the probes
        // sent during the outage are answered late, all at once.
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 4);
        probe(&mut t, &mut now, 20, |_| false);
        let states = probe(&mut t, &mut now, 12, |_| true);
        assert_eq!(states.last(), Some(&LinkState::Down));
        for late in [900, 600, 300] {
            now += Duration::from_millis(5);
            t.record(
                now,
                0,
                0,
                Outcome::Reply(Duration::from_millis(late)),
                &policy(),
            );
        }
        let states = probe(&mut t, &mut now, 10, |_| false);
        assert!(states.iter().all(|s| *s == LinkState::Up), "{states:?}");
        let s = t.summary(now, &policy());
        assert!(s.rtt_p99_ms.unwrap() < 100.0, "{:?}", s.rtt_p99_ms);
        // A link that is slow after it came back is still called slow.
        replies(&mut t, &mut now, 150, 5);
        assert_eq!(t.state(), LinkState::Degraded);
    }

    #[tokio::test(start_paused = true)]
    async fn one_late_reply_does_not_make_a_link_slow() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 1);
        let mut rec = |ms: u64| {
            now += Duration::from_millis(333);
            t.record(
                now,
                0,
                0,
                Outcome::Reply(Duration::from_millis(ms)),
                &policy(),
            );
            t.state()
        };
        for _ in 0..20 {
            rec(1);
        }
        rec(450);
        for _ in 0..20 {
            rec(1);
        }
        assert_eq!(rec(1), LinkState::Up);
        assert_eq!(rec(450), LinkState::Degraded, "two slow replies in 42");
    }

    #[tokio::test(start_paused = true)]
    async fn history_lists_the_window_oldest_first_with_flows() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 4);
        let p = policy();
        for (flow, o) in [
            (0, Outcome::Reply(Duration::from_millis(3))),
            (1, Outcome::Lost),
            (2, Outcome::TcpReached(Duration::from_millis(5))),
        ] {
            now += Duration::from_millis(333);
            t.record(now, 0, flow, o, &p);
        }
        let h = t.history(now, &p);
        let got: Vec<(u8, &str, bool)> = h.iter().map(|o| (o.flow, o.path, o.lost)).collect();
        assert_eq!(
            got,
            [(0, "udp", false), (1, "udp", true), (2, "tcp", false)]
        );
        assert_eq!(h[0].age_ms, Duration::from_millis(666));
        assert_eq!(t.summary(now, &p).tcp, TcpPath::Connects);
        now += Duration::from_secs(31);
        assert!(t.history(now, &p).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn tcp_connects_count_on_their_flow() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 2);
        let p = policy();
        for _ in 0..10 {
            now += Duration::from_millis(500);
            t.record(now, 0, 0, Outcome::Reply(Duration::from_millis(1)), &p);
            t.record(now, 0, 0, Outcome::TcpReached(Duration::from_millis(1)), &p);
            t.record(now, 0, 1, Outcome::TcpLost, &p);
        }
        let s = t.summary(now, &p);
        assert_eq!(s.loss_kind, LossKind::Path, "flow 1 loses every connect");
        assert_eq!((s.flows_failing, s.flows_probed), (1, 2));
        assert_eq!(s.tcp, TcpPath::Partial);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_timeout_shrinks_to_the_link_but_not_below_the_floor() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 1);
        let (conf, floor) = (Duration::from_millis(500), Duration::from_millis(150));
        assert_eq!(t.probe_timeout(conf, floor), conf, "unmeasured: configured");
        for ms in [1, 1, 1, 1, 1, 1] {
            now += Duration::from_millis(500);
            t.record(
                now,
                0,
                0,
                Outcome::Reply(Duration::from_millis(ms)),
                &policy(),
            );
        }
        assert_eq!(t.probe_timeout(conf, floor), floor);
        for _ in 0..10 {
            now += Duration::from_millis(500);
            t.record(
                now,
                0,
                0,
                Outcome::Reply(Duration::from_millis(90)),
                &policy(),
            );
        }
        assert_eq!(t.probe_timeout(conf, floor), Duration::from_millis(360));
    }

    fn replies(t: &mut LinkTracker, now: &mut Instant, ms: u64, n: usize) {
        for _ in 0..n {
            *now += Duration::from_millis(333);
            t.record(
                *now,
                0,
                0,
                Outcome::Reply(Duration::from_millis(ms)),
                &policy(),
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gossip_value_ignores_jitter_inside_a_bucket() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0, 1);
        replies(&mut t, &mut now, 10, 5);
        let a = t.edge_value(now, &policy(), None);
        now += Duration::from_secs(31);
        replies(&mut t, &mut now, 11, 5);
        let b = t.edge_value(now, &policy(), Some(&a));
        assert_eq!(a, b);
        now += Duration::from_secs(31);
        replies(&mut t, &mut now, 40, 5);
        assert_ne!(t.edge_value(now, &policy(), Some(&b)).p50, a.p50);
    }

    #[test]
    fn edge_value_round_trips_and_rejects_garbage() {
        let v = EdgeValue {
            state: LinkState::Degraded,
            p50: 5,
            p99: 9,
            loss: 5,
            tcp: TcpPath::Partial,
            kind: LossKind::Path,
            failing: 4,
            probed: 8,
            since: 1_732_240_000,
        };
        assert_eq!(v.to_string(), "g5,9,5pp4/8@1732240000");
        assert_eq!(v.to_string().parse::<EdgeValue>(), Ok(v));
        for bad in [
            "",
            "x1,2,3cn0/8@1",
            "u1,2cn0/8@1",
            "u1,2,3cn0/8",
            "u1,2,99cn0/8@1",
            "u1,2,3,4cn0/8@1",
            "u1,2,3zn0/8@1",
            "u1,2,3cx0/8@1",
            "u1,2,3cn9/8@1",
            "u1,2,3cn0/65@1",
            "u1,2,3cn0/8@-1",
            "u1,2,3cn+1/8@1",
            "u1,2,3c@1",
        ] {
            assert!(bad.parse::<EdgeValue>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rtt_buckets_represent_their_range() {
        for ms in [0.02, 0.3, 1.0, 7.5, 120.0] {
            let b = rtt_bucket(Some(ms), None);
            let rep = rtt_bucket_ms(b).unwrap();
            assert!(
                rep / ms < 2.0 && ms / rep < 2.0,
                "{ms} -> bucket {b} -> {rep}"
            );
        }
        assert_eq!(loss_bucket(0.0), 0);
        assert_eq!(loss_bucket(1.0), 8);
        assert_eq!(loss_bucket(0.5), 5);
    }
}
