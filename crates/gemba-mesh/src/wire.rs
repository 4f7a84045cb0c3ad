//! The authenticated datagram format every mesh packet uses, gossip and
//! probes alike.
//!
//! ```text
//! magic "gm" | version 2 | kind | session u64 | counter u64 | unix ms u64 | frag idx | frag count
//!   | sender len u8 | sender node id | recipient len u8 | recipient node id | payload | HMAC-SHA256
//! ```
//!
//! The MAC covers everything before it and is keyed by the grid key, so a
//! node without the key cannot inject state or poll targets. It covers the
//! sender's node id and the recipient's, so a captured datagram is good for
//! one recipient only, whatever address it is resent from; the recipient
//! is `*` only in gossip to a peer not known yet (a seed, at join). The
//! timestamp bounds how long a captured packet stays usable, and the
//! (session, counter) pair with a sliding window per sender node id
//! rejects replays inside that bound, from any source address. Gossip messages larger than one datagram are split into fragments,
//! each signed on its own, because a chitchat message can already fill a
//! whole UDP datagram before gemba adds its header.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const MAGIC: [u8; 2] = *b"gm";
pub const VERSION: u8 = 2;
/// The fixed part of the header, up to the sender's id.
const FIXED_LEN: usize = 2 + 1 + 1 + 8 + 8 + 8 + 1 + 1;
/// Node ids are at most this long (the one name grammar).
const MAX_ID: usize = 64;
/// The longest header: both ids at their longest.
pub const HEADER_LEN: usize = FIXED_LEN + 2 + 2 * MAX_ID;
pub const MAC_LEN: usize = 32;
/// Largest datagram gemba sends or accepts (the IPv4 UDP payload limit).
pub const MAX_DATAGRAM: usize = 65_507;
/// Largest payload carried by one fragment.
pub const MAX_FRAGMENT_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - MAC_LEN;
/// The recipient of gossip to a peer whose node id is not known yet.
pub const ANY_RECIPIENT: &str = "*";
/// Largest reassembled gossip message (chitchat never exceeds one datagram,
/// plus room for gemba's framing).
pub const MAX_MESSAGE: usize = 2 * MAX_FRAGMENT_PAYLOAD;

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gossip = 1,
    ProbeRequest = 2,
    ProbeReply = 3,
    /// An agent's metric samples, sent to each server directly (not
    /// gossiped), signed by the agent's own key.
    Samples = 4,
    /// Gossip of the backbone between sites' representatives: its own
    /// chitchat cluster, on the same socket.
    Backbone = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Gossip),
            2 => Some(Kind::ProbeRequest),
            3 => Some(Kind::ProbeReply),
            4 => Some(Kind::Samples),
            5 => Some(Kind::Backbone),
            _ => None,
        }
    }
}

/// Why a received datagram was dropped; each is a label of the
/// `gemba_mesh_dropped_packets_total` counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than a header and MAC.
    Truncated,
    /// Longer than any datagram gemba sends.
    Oversized,
    /// Not gemba's magic or version, or an unknown kind.
    Malformed,
    /// The MAC does not verify: wrong grid key or tampered content.
    BadSignature,
    /// Timestamp outside the accepted window.
    Expired,
    /// Already seen, or from an older session of the same sender.
    Replayed,
    /// Signed but the content does not decode.
    Undecodable,
    /// Signed for another recipient (or for any, where that is not
    /// allowed).
    Misdirected,
    /// The receiving queue was full.
    Overloaded,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::BadSignature,
        DropReason::Expired,
        DropReason::Replayed,
        DropReason::Undecodable,
        DropReason::Misdirected,
        DropReason::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::BadSignature => "bad_signature",
            DropReason::Expired => "expired",
            DropReason::Replayed => "replayed",
            DropReason::Undecodable => "undecodable",
            DropReason::Misdirected => "misdirected",
            DropReason::Overloaded => "overloaded",
        }
    }
}

/// The shared secret of a grid. Keeps the HMAC state keyed once, so signing
/// a datagram costs only the hash of its content.
#[derive(Clone)]
pub struct GridKey(HmacSha256);

impl GridKey {
    pub const MIN_LEN: usize = 16;

    pub fn new(bytes: Vec<u8>) -> Result<GridKey, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "grid key is {} bytes; it must be at least {}",
                bytes.len(),
                Self::MIN_LEN
            ));
        }
        Ok(GridKey(
            HmacSha256::new_from_slice(&bytes).expect("HMAC accepts keys of any length"),
        ))
    }

    fn mac(&self) -> HmacSha256 {
        self.0.clone()
    }
}

impl std::fmt::Debug for GridKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GridKey(..)")
    }
}

/// A verified datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: Kind,
    pub session: u64,
    pub counter: u64,
    pub unix_ms: u64,
    pub frag_index: u8,
    pub frag_count: u8,
    /// The sending node's id.
    pub sender: &'a str,
    /// The node id it was signed for, or [`ANY_RECIPIENT`].
    pub recipient: &'a str,
    pub payload: &'a [u8],
}

/// What is signed with a payload.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    pub kind: Kind,
    pub session: u64,
    pub counter: u64,
    pub unix_ms: u64,
    /// (index, count)
    pub frag: (u8, u8),
    pub sender: &'a str,
    pub recipient: &'a str,
}

/// Writes one signed datagram into `out` (cleared first).
///
/// # Panics
///
/// When an id is longer than 64 bytes: ids follow the name grammar.
pub fn seal(key: &GridKey, h: &Header<'_>, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_FRAGMENT_PAYLOAD);
    assert!(h.sender.len() <= MAX_ID && h.recipient.len() <= MAX_ID);
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(h.kind as u8);
    out.extend_from_slice(&h.session.to_be_bytes());
    out.extend_from_slice(&h.counter.to_be_bytes());
    out.extend_from_slice(&h.unix_ms.to_be_bytes());
    out.push(h.frag.0);
    out.push(h.frag.1);
    out.push(h.sender.len() as u8);
    out.extend_from_slice(h.sender.as_bytes());
    out.push(h.recipient.len() as u8);
    out.extend_from_slice(h.recipient.as_bytes());
    out.extend_from_slice(payload);
    let mut mac = key.mac();
    mac.update(out);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(&tag);
}

/// Checks framing and signature; does not check time, replay or the
/// recipient.
pub fn open<'a>(key: &GridKey, datagram: &'a [u8]) -> Result<Packet<'a>, DropReason> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DropReason::Oversized);
    }
    if datagram.len() < FIXED_LEN + 2 + MAC_LEN {
        return Err(DropReason::Truncated);
    }
    if datagram[..2] != MAGIC || datagram[2] != VERSION {
        return Err(DropReason::Malformed);
    }
    let kind = Kind::from_byte(datagram[3]).ok_or(DropReason::Malformed)?;
    let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(tag)
        .map_err(|_| DropReason::BadSignature)?;
    let u64_at = |at: usize| u64::from_be_bytes(signed[at..at + 8].try_into().expect("8 bytes"));
    let frag_index = signed[28];
    let frag_count = signed[29];
    if frag_count == 0 || frag_index >= frag_count {
        return Err(DropReason::Malformed);
    }
    // Signed, but a key holder may still have written anything here.
    let id_at = |at: usize| -> Result<(&'a str, usize), DropReason> {
        let len = *signed.get(at).ok_or(DropReason::Malformed)? as usize;
        let bytes = signed
            .get(at + 1..at + 1 + len)
            .ok_or(DropReason::Malformed)?;
        let id = std::str::from_utf8(bytes).map_err(|_| DropReason::Malformed)?;
        Ok((id, at + 1 + len))
    };
    let (sender, next) = id_at(FIXED_LEN)?;
    let (recipient, payload_at) = id_at(next)?;
    if !gemba_core::ids::is_name(sender)
        || !(recipient == ANY_RECIPIENT || gemba_core::ids::is_name(recipient))
    {
        return Err(DropReason::Malformed);
    }
    Ok(Packet {
        kind,
        session: u64_at(4),
        counter: u64_at(12),
        unix_ms: u64_at(20),
        frag_index,
        frag_count,
        sender,
        recipient,
        payload: &signed[payload_at..],
    })
}

const WINDOW_BITS: u64 = 1024;

/// Per-sender anti-replay state: the sender's current session and a sliding
/// window of the counters seen in it.
#[derive(Debug)]
struct SenderWindow {
    session: u64,
    session_first_ms: u64,
    highest: u64,
    seen: [u64; (WINDOW_BITS / 64) as usize],
    last_use: u64,
}

impl SenderWindow {
    fn new(session: u64, counter: u64, unix_ms: u64, tick: u64) -> Self {
        let mut w = SenderWindow {
            session,
            session_first_ms: unix_ms,
            highest: counter,
            seen: [0; (WINDOW_BITS / 64) as usize],
            last_use: tick,
        };
        w.mark(counter);
        w
    }

    fn bit(counter: u64) -> (usize, u64) {
        let slot = counter % WINDOW_BITS;
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }

    fn mark(&mut self, counter: u64) {
        let (i, b) = Self::bit(counter);
        self.seen[i] |= b;
    }

    fn accept(&mut self, counter: u64) -> bool {
        if counter > self.highest {
            // Clear the slots the window slides over.
            let advance = (counter - self.highest).min(WINDOW_BITS);
            for c in (self.highest + 1)..=(self.highest + advance) {
                let (i, b) = Self::bit(c);
                self.seen[i] &= !b;
            }
            self.highest = counter;
            self.mark(counter);
            return true;
        }
        if self.highest - counter >= WINDOW_BITS {
            return false;
        }
        let (i, b) = Self::bit(counter);
        if self.seen[i] & b != 0 {
            return false;
        }
        self.seen[i] |= b;
        true
    }
}

/// Rejects replayed and stale datagrams, by sender node id (not by source
/// address: a datagram resent from elsewhere is the same datagram).
/// Bounded: the least recently used sender is forgotten when `max_senders`
/// is reached; only holders of the grid key can add senders.
#[derive(Debug)]
pub struct ReplayGuard {
    max_age_ms: u64,
    max_senders: usize,
    senders: HashMap<String, SenderWindow>,
    tick: u64,
}

impl ReplayGuard {
    pub fn new(max_age_ms: u64, max_senders: usize) -> Self {
        ReplayGuard {
            max_age_ms,
            max_senders,
            senders: HashMap::new(),
            tick: 0,
        }
    }

    /// Accepts a verified packet at local time `now_ms`, or says why not.
    pub fn check(&mut self, p: &Packet<'_>, now_ms: u64) -> Result<(), DropReason> {
        if p.unix_ms.abs_diff(now_ms) > self.max_age_ms {
            return Err(DropReason::Expired);
        }
        self.tick += 1;
        let tick = self.tick;
        match self.senders.get_mut(p.sender) {
            Some(w) if w.session == p.session => {
                w.last_use = tick;
                if w.accept(p.counter) {
                    Ok(())
                } else {
                    Err(DropReason::Replayed)
                }
            }
            Some(w) => {
                // A new session from the same address is a restarted sender;
                // a session that started before the current one is a replay.
                if p.unix_ms < w.session_first_ms {
                    return Err(DropReason::Replayed);
                }
                *w = SenderWindow::new(p.session, p.counter, p.unix_ms, tick);
                Ok(())
            }
            None => {
                if self.senders.len() >= self.max_senders {
                    if let Some(oldest) = self
                        .senders
                        .iter()
                        .min_by_key(|(_, w)| w.last_use)
                        .map(|(a, _)| a.clone())
                    {
                        self.senders.remove(&oldest);
                    }
                }
                self.senders.insert(
                    p.sender.to_string(),
                    SenderWindow::new(p.session, p.counter, p.unix_ms, tick),
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> GridKey {
        GridKey::new(b"0123456789abcdef-test-key".to_vec()).unwrap()
    }

    fn from(sender: &str, recipient: &str, counter: u64, ms: u64, session: u64) -> Vec<u8> {
        let mut out = Vec::new();
        seal(
            &key(),
            &Header {
                kind: Kind::ProbeRequest,
                session,
                counter,
                unix_ms: ms,
                frag: (0, 1),
                sender,
                recipient,
            },
            b"hello",
            &mut out,
        );
        out
    }

    fn packet(counter: u64, ms: u64, session: u64) -> Vec<u8> {
        from("web-1", "web-2", counter, ms, session)
    }

    #[test]
    fn sealed_packet_opens_with_the_same_key_only() {
        let d = packet(1, 1000, 7);
        let p = open(&key(), &d).unwrap();
        assert_eq!(p.payload, b"hello");
        assert_eq!((p.session, p.counter, p.unix_ms), (7, 1, 1000));
        assert_eq!((p.sender, p.recipient), ("web-1", "web-2"));
        let other = GridKey::new(b"another-key-of-16-bytes".to_vec()).unwrap();
        assert_eq!(open(&other, &d), Err(DropReason::BadSignature));
    }

    #[test]
    fn tampered_truncated_and_garbage_datagrams_are_rejected() {
        let mut d = packet(1, 1000, 7);
        let n = d.len();
        // The recipient's id is signed: rewriting it breaks the MAC.
        let at = d.len() - MAC_LEN - 5 - 1;
        d[at] ^= 1;
        assert_eq!(open(&key(), &d), Err(DropReason::BadSignature));
        assert_eq!(open(&key(), &d[..10]), Err(DropReason::Truncated));
        assert_eq!(open(&key(), &vec![0u8; n]), Err(DropReason::Malformed));
        assert_eq!(
            open(&key(), &vec![0u8; MAX_DATAGRAM + 1]),
            Err(DropReason::Oversized)
        );
        // Signed, but the sender's id is not a name.
        let d = from("--x", "web-2", 1, 1000, 7);
        assert_eq!(open(&key(), &d), Err(DropReason::Malformed));
        let d = from("web-1", "*", 1, 1000, 7);
        assert_eq!(open(&key(), &d).unwrap().recipient, ANY_RECIPIENT);
    }

    #[test]
    fn replayed_packet_is_rejected_but_reordered_ones_pass() {
        let mut g = ReplayGuard::new(30_000, 16);
        for c in [5, 3, 4, 9] {
            let d = packet(c, 1000, 7);
            assert_eq!(
                g.check(&open(&key(), &d).unwrap(), 1000),
                Ok(()),
                "counter {c}"
            );
        }
        let d = packet(4, 1000, 7);
        assert_eq!(
            g.check(&open(&key(), &d).unwrap(), 1000),
            Err(DropReason::Replayed)
        );
        // Far behind the window.
        let d = packet(9 + WINDOW_BITS + 5, 1000, 7);
        g.check(&open(&key(), &d).unwrap(), 1000).unwrap();
        let d = packet(6, 1000, 7);
        assert_eq!(
            g.check(&open(&key(), &d).unwrap(), 1000),
            Err(DropReason::Replayed)
        );
        // Another sender's counters are its own.
        let d = from("web-3", "web-2", 4, 1000, 7);
        assert_eq!(g.check(&open(&key(), &d).unwrap(), 1000), Ok(()));
    }

    #[test]
    fn old_and_future_packets_are_expired() {
        let mut g = ReplayGuard::new(30_000, 16);
        let d = packet(1, 1_000, 7);
        assert_eq!(
            g.check(&open(&key(), &d).unwrap(), 40_000),
            Err(DropReason::Expired)
        );
        let d = packet(2, 100_000, 7);
        assert_eq!(
            g.check(&open(&key(), &d).unwrap(), 40_000),
            Err(DropReason::Expired)
        );
    }

    #[test]
    fn restarted_sender_is_accepted_and_its_old_session_is_not() {
        let mut g = ReplayGuard::new(30_000, 16);
        let old = packet(100, 10_000, 1);
        g.check(&open(&key(), &old).unwrap(), 10_000).unwrap();
        let new = packet(1, 12_000, 2);
        g.check(&open(&key(), &new).unwrap(), 12_000).unwrap();
        assert_eq!(
            g.check(&open(&key(), &old).unwrap(), 12_500),
            Err(DropReason::Replayed)
        );
    }

    #[test]
    fn sender_table_is_bounded() {
        let mut g = ReplayGuard::new(30_000, 4);
        for i in 0..100 {
            let d = from(&format!("n{i}"), "web-2", 1, 1000, 1);
            g.check(&open(&key(), &d).unwrap(), 1000).unwrap();
        }
        assert_eq!(g.senders.len(), 4);
    }
}
