//! Peers whose packets arrive stamped too far from this node's clock: they
//! are dropped as expired (a replay guard cannot tell an old packet from a
//! skewed clock), but not silently. Each such peer is counted
//! (`gemba_mesh_expired_packets_total{peer}`), said in the log once a
//! minute, and listed, so that the console shows it as "clock skew"
//! instead of a node that is simply missing. Only packets that carry the
//! grid key's signature reach here, and the table is bounded.

use std::collections::HashMap;

/// Peers remembered at most; beyond, a new peer replaces the one heard
/// from longest ago.
const MAX_PEERS: usize = 1024;
/// How often the log says it again for one peer.
const SAY_EVERY_MS: u64 = 60_000;
/// A peer not heard from this long is no longer listed.
const FORGET_AFTER_MS: u64 = 10 * 60_000;

/// One peer whose packets were dropped as expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skewed {
    pub peer: String,
    /// Its packets' time minus this node's clock, last seen (ms).
    pub skew_ms: i64,
    /// Packets dropped for it.
    pub dropped: u64,
    /// When the last one arrived (this node's clock).
    pub last_ms: u64,
    said_ms: u64,
}

#[derive(Debug, Default)]
pub struct SkewTable {
    peers: HashMap<String, Skewed>,
}

impl SkewTable {
    /// Notes a packet from `peer` stamped `sent_ms`, dropped at `now_ms`;
    /// `true` when the log should say so now.
    pub fn note(&mut self, peer: &str, sent_ms: u64, now_ms: u64) -> bool {
        let skew_ms = sent_ms as i64 - now_ms as i64;
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
            if let Some(oldest) = self
                .peers
                .values()
                .min_by_key(|s| s.last_ms)
                .map(|s| s.peer.clone())
            {
                self.peers.remove(&oldest);
            }
        }
        let s = self.peers.entry(peer.to_string()).or_insert(Skewed {
            peer: peer.to_string(),
            skew_ms,
            dropped: 0,
            last_ms: now_ms,
            said_ms: 0,
        });
        s.skew_ms = skew_ms;
        s.dropped += 1;
        s.last_ms = now_ms;
        if s.said_ms == 0 || now_ms.saturating_sub(s.said_ms) >= SAY_EVERY_MS {
            s.said_ms = now_ms;
            return true;
        }
        false
    }

    /// The peers heard from within the last ten minutes, by name.
    pub fn list(&self, now_ms: u64) -> Vec<Skewed> {
        let mut v: Vec<Skewed> = self
            .peers
            .values()
            .filter(|s| now_ms.saturating_sub(s.last_ms) < FORGET_AFTER_MS)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.peer.cmp(&b.peer));
        v
    }
}

/// The log's words for a skewed peer.
pub fn describe(s: &Skewed) -> String {
    format!(
        "packets from {} are stamped {} s {} this node's clock: dropped as expired ({} so far); one of the two clocks is off (check NTP on both)",
        s.peer,
        (s.skew_ms.unsigned_abs() + 500) / 1000,
        if s.skew_ms > 0 { "ahead of" } else { "behind" },
        s.dropped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_peer_is_counted_said_once_a_minute_and_forgotten_later() {
        let mut t = SkewTable::default();
        let now = 1_000_000_000;
        assert!(t.note("n2", now + 300_000, now), "said at once");
        assert!(!t.note("n2", now + 301_000, now + 1_000));
        assert!(t.note("n2", now + 360_000, now + 60_000), "a minute on");
        let l = t.list(now + 60_000);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].dropped, l[0].skew_ms), (3, 300_000));
        assert!(describe(&l[0]).contains("n2 are stamped 300 s ahead of"));
        assert!(t.list(now + 60_000 + FORGET_AFTER_MS).is_empty());
        for i in 0..(MAX_PEERS + 10) {
            t.note(&format!("p{i}"), now, now + i as u64);
        }
        assert_eq!(t.peers.len(), MAX_PEERS, "bounded");
    }
}
