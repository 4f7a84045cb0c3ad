//! A link's summary as it travels in gossip: RTT and loss in buckets
//! (with hysteresis, so that noise does not make news), and the compact
//! text form of an edge.

use super::*;

/// RTT buckets double from 50 µs: bucket b covers [50µs·2^(b-1), 50µs·2^b).
/// Bucket 0 is "no measurement".
pub(super) const RTT_BASE_MS: f64 = 0.05;
pub(super) const RTT_BUCKETS: u8 = 24;

pub(super) fn bucket_bounds(b: u8) -> (f64, f64) {
    if b <= 1 {
        return (0.0, RTT_BASE_MS);
    }
    (
        RTT_BASE_MS * 2f64.powi(b as i32 - 2),
        RTT_BASE_MS * 2f64.powi(b as i32 - 1),
    )
}

pub(super) fn rtt_bucket(ms: Option<f64>, previous: Option<u8>) -> u8 {
    let Some(ms) = ms else { return 0 };
    // The published bucket stands while the figure stays within a factor
    // of two beyond its bounds: jitter is not news.
    if let Some(p) = previous.filter(|p| *p > 0) {
        let (lo, hi) = bucket_bounds(p);
        if ms >= lo / 2.0 && ms < hi * 2.0 {
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

pub(super) const LOSS_UPPER: [f64; 9] = [0.0, 0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.999, 1.0];

pub(super) fn loss_bucket(loss: f64) -> u8 {
    LOSS_UPPER
        .iter()
        .position(|u| loss <= *u + 1e-9)
        .unwrap_or(8) as u8
}

/// The loss bucket, keeping `previous` while the figure stays in a
/// neighbouring bucket: a probe or two entering or leaving the window is
/// not news.
pub(super) fn loss_bucket_near(loss: f64, previous: Option<u8>) -> u8 {
    let b = loss_bucket(loss);
    match previous {
        Some(p) if b.abs_diff(p) <= 1 => p,
        _ => b,
    }
}

/// The loss a bucket stands for (its upper bound).
pub fn loss_bucket_value(b: u8) -> f64 {
    LOSS_UPPER[(b as usize).min(LOSS_UPPER.len() - 1)]
}

/// A link as it travels in gossip: `g5,7,5cp4/8@1732240000` is state,
/// RTT p50 and p99 buckets, loss bucket, TCP path, loss kind, failing and
/// probed flows, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeValue {
    pub state: LinkState,
    pub p50: u8,
    pub p99: u8,
    pub loss: u8,
    pub tcp: TcpPath,
    pub kind: LossKind,
    pub failing: u8,
    pub probed: u8,
    pub since: u64,
}

impl fmt::Display for EdgeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{},{},{}{}{}{}/{}@{}",
            codes::state(self.state),
            self.p50,
            self.p99,
            self.loss,
            codes::tcp(self.tcp),
            codes::kind(self.kind),
            self.failing,
            self.probed,
            self.since
        )
    }
}

impl FromStr for EdgeValue {
    type Err = ();

    /// Parses what a peer gossiped: anything else than the exact shape is
    /// refused, and counts are bounded.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() > 48 || !s.is_ascii() {
            return Err(());
        }
        let (body, since) = s.split_once('@').ok_or(())?;
        let state = codes::to_state(body.chars().next().ok_or(())?).ok_or(())?;
        let rest = &body[1..];
        let (left, probed) = rest.split_once('/').ok_or(())?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(probed) || !digits(since) {
            return Err(());
        }
        let probed: u8 = probed.parse().map_err(|_| ())?;
        let failing_at = left.rfind(|c: char| !c.is_ascii_digit()).ok_or(())? + 1;
        let failing: u8 = left[failing_at..].parse().map_err(|_| ())?;
        let head = &left[..failing_at];
        if head.len() < 3 {
            return Err(());
        }
        let mut tail = head[head.len() - 2..].chars();
        let tcp = codes::to_tcp(tail.next().ok_or(())?).ok_or(())?;
        let kind = codes::to_kind(tail.next().ok_or(())?).ok_or(())?;
        let nums = &head[..head.len() - 2];
        let mut it = nums.split(',').map(|n| {
            if digits(n) {
                n.parse::<u8>().map_err(|_| ())
            } else {
                Err(())
            }
        });
        let p50 = it.next().ok_or(())??;
        let p99 = it.next().ok_or(())??;
        let loss = it.next().ok_or(())??;
        if it.next().is_some()
            || loss > 8
            || p50 > RTT_BUCKETS
            || p99 > RTT_BUCKETS
            || probed as usize > MAX_FLOWS
            || failing > probed
        {
            return Err(());
        }
        Ok(EdgeValue {
            state,
            p50,
            p99,
            loss,
            tcp,
            kind,
            failing,
            probed,
            since: since.parse().map_err(|_| ())?,
        })
    }
}
