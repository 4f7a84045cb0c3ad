//! The state of one directed link, as its observer measures it.
//!
//! A [`LinkTracker`] takes probe outcomes (a reply with its RTT, or a loss)
//! and TCP connect results, keeps a time window of them, and decides the
//! link's [`LinkState`] with hysteresis so that one late packet neither
//! raises nor clears an alarm. [`EdgeValue`] is the compact, quantized form
//! that travels in gossip: it changes only when the state, an RTT bucket or
//! a loss bucket changes.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What an observer concludes about a directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Degraded,
    Down,
    /// Never measured yet.
    Unknown,
    /// The observer's report is too old to trust (the observer is not live).
    Stale,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Degraded => "degraded",
            LinkState::Down => "down",
            LinkState::Unknown => "unknown",
            LinkState::Stale => "stale",
        }
    }
    fn code(self) -> char {
        match self {
            LinkState::Up => 'u',
            LinkState::Degraded => 'g',
            LinkState::Down => 'd',
            LinkState::Unknown => 'n',
            LinkState::Stale => 's',
        }
    }
    fn from_code(c: char) -> Option<Self> {
        Some(match c {
            'u' => LinkState::Up,
            'g' => LinkState::Degraded,
            'd' => LinkState::Down,
            'n' => LinkState::Unknown,
            's' => LinkState::Stale,
            _ => return None,
        })
    }
    pub const ALL: [LinkState; 5] = [
        LinkState::Up,
        LinkState::Degraded,
        LinkState::Down,
        LinkState::Unknown,
        LinkState::Stale,
    ];
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The second path's last result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpPath {
    Unknown,
    Connects,
    Fails,
}

/// Thresholds a tracker decides with (from `[mesh]` config).
#[derive(Clone, Debug)]
pub struct LinkPolicy {
    pub window: Duration,
    pub down_after_lost: u32,
    pub up_after_replies: u32,
    pub degraded_loss: f64,
    pub degraded_rtt_p99: Duration,
    /// Fewer samples than this in the window do not make a loss verdict.
    pub min_samples_for_loss: usize,
}

impl LinkPolicy {
    pub fn from_config(c: &gemba_core::config::MeshConfig) -> Self {
        LinkPolicy {
            window: c.window,
            down_after_lost: c.down_after_lost,
            up_after_replies: c.up_after_replies,
            degraded_loss: c.degraded_loss,
            degraded_rtt_p99: c.degraded_rtt_p99,
            min_samples_for_loss: (c.probes_per_interval as usize * 3).max(6),
        }
    }
}

/// Full-resolution summary of a link over its window.
#[derive(Clone, Debug, Serialize)]
pub struct LinkSummary {
    pub state: LinkState,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    pub loss: f64,
    pub samples: usize,
    pub tcp: TcpPath,
    pub tcp_connect_ms: Option<f64>,
    /// Unix seconds when the current state began.
    pub since: u64,
}

/// One probe in a link's history: how long ago it was recorded and its RTT
/// (`None`: lost).
pub type ProbeOutcome = (Duration, Option<Duration>);

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    rtt: Option<Duration>,
}

/// Tracks one directed link.
#[derive(Debug)]
pub struct LinkTracker {
    samples: VecDeque<Sample>,
    consecutive_lost: u32,
    consecutive_replies: u32,
    state: LinkState,
    since_unix: u64,
    tcp: TcpPath,
    tcp_connect: Option<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl LinkTracker {
    pub fn new(now_unix: u64) -> Self {
        LinkTracker {
            samples: VecDeque::new(),
            consecutive_lost: 0,
            consecutive_replies: 0,
            state: LinkState::Unknown,
            since_unix: now_unix,
            tcp: TcpPath::Unknown,
            tcp_connect: None,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
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

    fn rtts_sorted(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.samples.iter().filter_map(|s| s.rtt).collect();
        v.sort_unstable();
        v
    }

    /// Share of probes lost in the window (as of the last record).
    pub fn loss(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let lost = self.samples.iter().filter(|s| s.rtt.is_none()).count();
        lost as f64 / self.samples.len() as f64
    }

    /// Records one probe outcome: `Some(rtt)` for a reply, `None` for a loss.
    pub fn record(
        &mut self,
        now: Instant,
        now_unix: u64,
        rtt: Option<Duration>,
        policy: &LinkPolicy,
    ) {
        self.prune(now, policy.window);
        self.samples.push_back(Sample { at: now, rtt });
        match rtt {
            Some(_) => {
                self.consecutive_replies += 1;
                self.consecutive_lost = 0;
            }
            None => {
                self.consecutive_lost += 1;
                self.consecutive_replies = 0;
            }
        }
        if self.state == LinkState::Down && self.consecutive_replies >= policy.up_after_replies {
            // Loss while the link was down is the down period itself; the
            // recovered link starts a fresh window.
            self.samples.retain(|s| s.rtt.is_some());
        }
        let next = self.decide(policy);
        if next != self.state {
            self.state = next;
            self.since_unix = now_unix;
        }
    }

    fn decide(&self, policy: &LinkPolicy) -> LinkState {
        if self.consecutive_lost >= policy.down_after_lost {
            return LinkState::Down;
        }
        match self.state {
            LinkState::Down if self.consecutive_replies < policy.up_after_replies => {
                return LinkState::Down
            }
            LinkState::Unknown | LinkState::Stale if self.consecutive_replies == 0 => {
                return self.state
            }
            _ => {}
        }
        let was_degraded = self.state == LinkState::Degraded;
        // Hysteresis: leaving degraded needs the figures clearly back below.
        let (loss_limit, rtt_limit) = if was_degraded {
            (
                policy.degraded_loss / 2.0,
                policy.degraded_rtt_p99.mul_f64(0.8),
            )
        } else {
            (policy.degraded_loss, policy.degraded_rtt_p99)
        };
        let lossy = self.samples.len() >= policy.min_samples_for_loss && self.loss() > loss_limit;
        // p99 over a short window is close to the maximum; one late packet
        // must not make a link slow, so a few must be over the limit.
        let rtts = self.rtts_sorted();
        let over = rtts.iter().rev().take_while(|r| **r > rtt_limit).count();
        let slow = percentile(&rtts, 0.99).is_some_and(|p99| p99 > rtt_limit)
            && over
                >= if was_degraded {
                    1
                } else {
                    (rtts.len() / 50).max(2)
                };
        if lossy || slow {
            LinkState::Degraded
        } else {
            LinkState::Up
        }
    }

    /// The raw probe outcomes in the window, oldest first: how long ago
    /// each was recorded and its RTT (`None`: lost).
    pub fn history(
        &mut self,
        now: Instant,
        policy: &LinkPolicy,
    ) -> Vec<(Duration, Option<Duration>)> {
        self.prune(now, policy.window);
        self.samples
            .iter()
            .map(|s| (now.duration_since(s.at), s.rtt))
            .collect()
    }

    pub fn record_tcp(&mut self, result: Option<Duration>) {
        self.tcp = if result.is_some() {
            TcpPath::Connects
        } else {
            TcpPath::Fails
        };
        self.tcp_connect = result;
    }

    pub fn summary(&mut self, now: Instant, policy: &LinkPolicy) -> LinkSummary {
        self.prune(now, policy.window);
        let rtts = self.rtts_sorted();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        LinkSummary {
            state: self.state,
            rtt_p50_ms: percentile(&rtts, 0.5).map(ms),
            rtt_p99_ms: percentile(&rtts, 0.99).map(ms),
            loss: self.loss(),
            samples: self.samples.len(),
            tcp: self.tcp,
            tcp_connect_ms: self.tcp_connect.map(ms),
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
            loss: loss_bucket(s.loss),
            tcp: s.tcp,
            since: s.since,
        }
    }
}

/// RTT buckets double from 50 µs: bucket b covers [50µs·2^(b-1), 50µs·2^b).
/// Bucket 0 is "no measurement".
const RTT_BASE_MS: f64 = 0.05;
const RTT_BUCKETS: u8 = 24;

fn bucket_bounds(b: u8) -> (f64, f64) {
    if b <= 1 {
        return (0.0, RTT_BASE_MS);
    }
    (
        RTT_BASE_MS * 2f64.powi(b as i32 - 2),
        RTT_BASE_MS * 2f64.powi(b as i32 - 1),
    )
}

fn rtt_bucket(ms: Option<f64>, previous: Option<u8>) -> u8 {
    let Some(ms) = ms else { return 0 };
    if let Some(p) = previous.filter(|p| *p > 0) {
        let (lo, hi) = bucket_bounds(p);
        if ms >= lo / 1.5 && ms < hi * 1.5 {
            return p;
        }
    }
    let mut b = 1u8;
    while b < RTT_BUCKETS && ms >= bucket_bounds(b).1 {
        b += 1;
    }
    b
}

/// A representative RTT for a bucket: its geometric middle.
pub fn rtt_bucket_ms(b: u8) -> Option<f64> {
    match b {
        0 => None,
        1 => Some(RTT_BASE_MS / 2.0),
        _ => {
            let (lo, hi) = bucket_bounds(b);
            Some((lo * hi).sqrt())
        }
    }
}

const LOSS_UPPER: [f64; 9] = [0.0, 0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.999, 1.0];

fn loss_bucket(loss: f64) -> u8 {
    LOSS_UPPER
        .iter()
        .position(|u| loss <= *u + 1e-9)
        .unwrap_or(8) as u8
}

/// The loss a bucket stands for (its upper bound).
pub fn loss_bucket_value(b: u8) -> f64 {
    LOSS_UPPER[(b as usize).min(LOSS_UPPER.len() - 1)]
}

/// A link as it travels in gossip: `u5,7,0c@1732240000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeValue {
    pub state: LinkState,
    pub p50: u8,
    pub p99: u8,
    pub loss: u8,
    pub tcp: TcpPath,
    pub since: u64,
}

impl fmt::Display for EdgeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tcp = match self.tcp {
            TcpPath::Unknown => 'n',
            TcpPath::Connects => 'c',
            TcpPath::Fails => 'f',
        };
        write!(
            f,
            "{}{},{},{}{}@{}",
            self.state.code(),
            self.p50,
            self.p99,
            self.loss,
            tcp,
            self.since
        )
    }
}

impl FromStr for EdgeValue {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (body, since) = s.split_once('@').ok_or(())?;
        let mut chars = body.chars();
        let state = LinkState::from_code(chars.next().ok_or(())?).ok_or(())?;
        let rest = chars.as_str();
        let tcp = match rest.chars().last().ok_or(())? {
            'n' => TcpPath::Unknown,
            'c' => TcpPath::Connects,
            'f' => TcpPath::Fails,
            _ => return Err(()),
        };
        let nums = &rest[..rest.len() - 1];
        let mut it = nums.split(',').map(|n| n.parse::<u8>().map_err(|_| ()));
        let p50 = it.next().ok_or(())??;
        let p99 = it.next().ok_or(())??;
        let loss = it.next().ok_or(())??;
        if it.next().is_some() || loss > 8 || p50 > RTT_BUCKETS || p99 > RTT_BUCKETS {
            return Err(());
        }
        Ok(EdgeValue {
            state,
            p50,
            p99,
            loss,
            tcp,
            since: since.parse().map_err(|_| ())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LinkPolicy {
        LinkPolicy {
            window: Duration::from_secs(30),
            down_after_lost: 4,
            up_after_replies: 2,
            degraded_loss: 0.05,
            degraded_rtt_p99: Duration::from_millis(100),
            min_samples_for_loss: 9,
        }
    }

    fn feed(t: &mut LinkTracker, start: &mut Instant, outcomes: &[Option<u64>]) {
        for o in outcomes {
            *start += Duration::from_millis(333);
            t.record(*start, 0, o.map(Duration::from_millis), &policy());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_reply_brings_unknown_link_up() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        assert_eq!(t.state(), LinkState::Unknown);
        feed(&mut t, &mut now, &[Some(1)]);
        assert_eq!(t.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_losses_take_link_down_and_replies_bring_it_back() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        feed(&mut t, &mut now, &[Some(1); 10]);
        feed(&mut t, &mut now, &[None; 3]);
        assert_ne!(t.state(), LinkState::Down, "three losses are not yet down");
        feed(&mut t, &mut now, &[None]);
        assert_eq!(t.state(), LinkState::Down);
        feed(&mut t, &mut now, &[Some(1)]);
        assert_eq!(
            t.state(),
            LinkState::Down,
            "one reply is not enough to recover"
        );
        feed(&mut t, &mut now, &[Some(1)]);
        assert_eq!(
            t.state(),
            LinkState::Up,
            "the down period does not count as loss"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_the_probes_lost_is_degraded_not_down() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        for _ in 0..20 {
            feed(&mut t, &mut now, &[Some(1), None]);
        }
        assert_eq!(t.state(), LinkState::Degraded);
        let s = t.summary(now, &policy());
        assert!((s.loss - 0.5).abs() < 0.01, "loss {}", s.loss);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_p99_is_degraded_and_recovers_with_hysteresis() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        feed(&mut t, &mut now, &[Some(150); 5]);
        assert_eq!(t.state(), LinkState::Degraded);
        // 90 ms is below the 100 ms threshold but above the 80 ms release.
        now += Duration::from_secs(31);
        feed(&mut t, &mut now, &[Some(90); 5]);
        assert_eq!(t.state(), LinkState::Degraded);
        now += Duration::from_secs(31);
        feed(&mut t, &mut now, &[Some(10); 5]);
        assert_eq!(t.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn history_lists_the_window_oldest_first() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        feed(&mut t, &mut now, &[Some(3), None, Some(5)]);
        let h = t.history(now, &policy());
        let rtts: Vec<Option<u128>> = h.iter().map(|(_, r)| r.map(|d| d.as_millis())).collect();
        assert_eq!(rtts, [Some(3), None, Some(5)]);
        assert_eq!(h[0].0, Duration::from_millis(666));
        now += Duration::from_secs(31);
        assert!(t.history(now, &policy()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn one_late_reply_does_not_make_a_link_slow() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        feed(&mut t, &mut now, &[Some(1); 20]);
        feed(&mut t, &mut now, &[Some(450)]);
        feed(&mut t, &mut now, &[Some(1); 20]);
        assert_eq!(t.state(), LinkState::Up);
        feed(&mut t, &mut now, &[Some(450)]);
        assert_eq!(
            t.state(),
            LinkState::Degraded,
            "two slow replies in 42 are a slow link"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_samples_leave_the_window() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        feed(
            &mut t,
            &mut now,
            &[
                Some(1),
                None,
                Some(1),
                None,
                Some(1),
                None,
                Some(1),
                None,
                Some(1),
                None,
            ],
        );
        now += Duration::from_secs(40);
        feed(&mut t, &mut now, &[Some(1); 10]);
        let s = t.summary(now, &policy());
        assert_eq!(s.loss, 0.0);
        assert_eq!(s.samples, 10);
        assert_eq!(t.state(), LinkState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn gossip_value_ignores_jitter_inside_a_bucket() {
        let mut now = Instant::now();
        let mut t = LinkTracker::new(0);
        feed(&mut t, &mut now, &[Some(10); 5]);
        let a = t.edge_value(now, &policy(), None);
        now += Duration::from_secs(31);
        feed(&mut t, &mut now, &[Some(11); 5]);
        let b = t.edge_value(now, &policy(), Some(&a));
        assert_eq!(a, b);
        now += Duration::from_secs(31);
        feed(&mut t, &mut now, &[Some(40); 5]);
        assert_ne!(t.edge_value(now, &policy(), Some(&b)).p50, a.p50);
    }

    #[test]
    fn edge_value_round_trips_and_rejects_garbage() {
        let v = EdgeValue {
            state: LinkState::Degraded,
            p50: 5,
            p99: 9,
            loss: 3,
            tcp: TcpPath::Fails,
            since: 1_732_240_000,
        };
        assert_eq!(v.to_string(), "g5,9,3f@1732240000");
        assert_eq!(v.to_string().parse::<EdgeValue>(), Ok(v));
        for bad in [
            "",
            "x1,2,3c@1",
            "u1,2c@1",
            "u1,2,3c",
            "u1,2,99c@1",
            "u1,2,3,4c@1",
            "u1,2,3z@1",
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
