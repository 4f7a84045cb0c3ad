//! Every gossip message is read here, in full and within fixed bounds,
//! before chitchat sees it.
//!
//! chitchat trusts what it decodes: an inconsistent delta trips one of its
//! assertions and ends its task, and a compressed block inflates to 64 KiB
//! with no cap on the total. A peer holding the grid key can send either.
//! So the receive task decodes the message itself (the wire format is
//! chitchat 0.11's: a header, a digest, and a delta as a stream of blocks
//! holding node, key-value and max-version operations), refuses what is
//! malformed, oversized or inconsistent, drops what a peer says about this
//! node, and hands chitchat a re-encoded message (uncompressed blocks)
//! holding only what passed.
//!
//! Rules, all from local settings, none from the message:
//! - the inflated delta is capped before each block is inflated;
//! - node ids follow gemba's one name grammar; generations may not lie in
//!   the future (a generation of `u64::MAX` would take a node id over);
//! - a message names at most `max_nodes` nodes, and the grid as this node
//!   has heard of it holds at most `max_nodes` ids;
//! - keys are printable ASCII up to `max_key_len`, values up to
//!   `max_value_len` without control characters, and one node id may hold
//!   at most `max_keys_per_node` distinct keys;
//! - within a node's delta, versions are non-zero and increase, and its
//!   max version is not below any of its keys' versions (chitchat asserts
//!   this and would stop gossiping otherwise);
//! - a delta about this node's own id is dropped: only this node writes
//!   its state.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use chitchat::{ChitchatMessage, Deserializable};

/// chitchat's message magic number and the one protocol version it speaks.
const MAGIC: u16 = 45_139;
const PROTOCOL_V0: u8 = 0;

const MSG_SYN: u8 = 0;
const MSG_SYN_ACK: u8 = 1;
const MSG_ACK: u8 = 2;
const MSG_BAD_CLUSTER: u8 = 3;

const BLOCK_END: u8 = 0;
const BLOCK_COMPRESSED: u8 = 1;
const BLOCK_PLAIN: u8 = 2;

const OP_NODE: u8 = 0;
const OP_KEY_VALUE: u8 = 1;
const OP_MAX_VERSION: u8 = 2;

/// What the guard lets through.
#[derive(Clone, Copy, Debug)]
pub struct GossipLimits {
    /// Node ids one message may name, and the grid may hold.
    pub max_nodes: usize,
    /// Distinct keys one node id may hold.
    pub max_keys_per_node: usize,
    pub max_key_len: usize,
    pub max_value_len: usize,
    /// Bytes a delta may inflate to, all blocks together.
    pub max_inflated: usize,
    /// How far in the future (ms) a generation may lie: generations are
    /// start times.
    pub max_generation_skew_ms: u64,
}

impl Default for GossipLimits {
    fn default() -> Self {
        GossipLimits {
            max_nodes: MAX_NODES,
            max_keys_per_node: 8_192,
            max_key_len: 128,
            max_value_len: 8_192,
            max_inflated: 1 << 20,
            max_generation_skew_ms: 24 * 3600 * 1000,
        }
    }
}

/// The most nodes a grid may have: a Syn's digest of 1,000 nodes still fits
/// one datagram.
pub const MAX_NODES: usize = 1_000;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("the delta inflates past {0} bytes")]
    Inflation(usize),
    #[error("node id {0:?} does not follow the name grammar")]
    BadNodeId(String),
    #[error("node {0:?} has a generation in the future")]
    FutureGeneration(String),
    #[error("the message names more than {0} nodes")]
    TooManyNodes(usize),
    #[error("the grid already holds {0} node ids")]
    MembershipFull(usize),
    #[error("a key of node {0:?} is not printable ASCII of at most the allowed length")]
    BadKey(String),
    #[error("a value of node {0:?} is too large or holds control characters")]
    BadValue(String),
    #[error("node {0:?} holds more keys than allowed")]
    TooManyKeys(String),
    #[error("node {0:?}: versions are zero, out of order or above its max version")]
    Versions(String),
}

impl Refusal {
    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Inflation(_) => "inflation",
            Refusal::BadNodeId(_) => "bad_node_id",
            Refusal::FutureGeneration(_) => "future_generation",
            Refusal::TooManyNodes(_) => "too_many_nodes",
            Refusal::MembershipFull(_) => "membership_full",
            Refusal::BadKey(_) => "bad_key",
            Refusal::BadValue(_) => "bad_value",
            Refusal::TooManyKeys(_) => "too_many_keys",
            Refusal::Versions(_) => "versions",
        }
    }
}

/// A message that passed, ready for chitchat.
#[derive(Debug)]
pub struct Checked {
    pub message: ChitchatMessage,
    /// Node deltas about this node's own id that were left out.
    pub dropped_self: usize,
}

/// The state the guard keeps between messages: which node ids it has heard
/// of and which keys each holds (hashed), both bounded.
pub struct GossipGuard {
    self_id: String,
    limits: GossipLimits,
    hasher: std::collections::hash_map::RandomState,
    keys: HashMap<String, HashSet<u64>>,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if self.buf.len() < n {
            return Err(Refusal::Malformed("cut short"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Refusal> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, Refusal> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> Result<&'a str, Refusal> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| Refusal::Malformed("a string is not UTF-8"))
    }
    /// A chitchat id: node id, generation, gossip address.
    fn node(&mut self) -> Result<(&'a str, u64), Refusal> {
        let id = self.str()?;
        let generation = self.u64()?;
        match self.u8()? {
            4 => self.take(4)?,
            6 => self.take(16)?,
            _ => return Err(Refusal::Malformed("an address is neither IPv4 nor IPv6")),
        };
        self.u16()?;
        Ok((id, generation))
    }
}

impl GossipGuard {
    pub fn new(self_id: &str, limits: GossipLimits) -> GossipGuard {
        GossipGuard {
            self_id: self_id.to_string(),
            limits,
            hasher: Default::default(),
            keys: HashMap::new(),
        }
    }

    /// Node ids heard of (bounded by `max_nodes`).
    pub fn members(&self) -> usize {
        self.keys.len()
    }

    /// Forgets a node id that left the grid, with its keys.
    pub fn forget(&mut self, node_id: &str) {
        self.keys.remove(node_id);
    }

    /// Keeps only the node ids `keep` says are still on the grid.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.keys.retain(|id, _| keep(id));
    }

    fn check_node(&self, id: &str, generation: u64, now_ms: u64) -> Result<(), Refusal> {
        if gemba_core::NodeId::new(id).is_err() {
            return Err(Refusal::BadNodeId(id.chars().take(80).collect()));
        }
        if generation > now_ms.saturating_add(self.limits.max_generation_skew_ms) {
            return Err(Refusal::FutureGeneration(id.to_string()));
        }
        Ok(())
    }

    fn digest(&self, r: &mut Reader<'_>, now_ms: u64) -> Result<(), Refusal> {
        let count = r.u16()? as usize;
        if count > self.limits.max_nodes {
            return Err(Refusal::TooManyNodes(self.limits.max_nodes));
        }
        for _ in 0..count {
            let (id, generation) = r.node()?;
            self.check_node(id, generation, now_ms)?;
            // heartbeat, last gc version, max version
            r.take(24)?;
        }
        Ok(())
    }

    /// Inflates a delta's blocks, never past the cap.
    fn inflate(&self, r: &mut Reader<'_>) -> Result<Vec<u8>, Refusal> {
        let cap = self.limits.max_inflated;
        let mut out = Vec::new();
        loop {
            match r.u8()? {
                BLOCK_END => return Ok(out),
                BLOCK_PLAIN => {
                    let len = r.u16()? as usize;
                    let block = r.take(len)?;
                    if out.len() + block.len() > cap {
                        return Err(Refusal::Inflation(cap));
                    }
                    out.extend_from_slice(block);
                }
                BLOCK_COMPRESSED => {
                    let len = r.u16()? as usize;
                    let block = r.take(len)?;
                    // The room left decides how large the block may grow:
                    // a block that would pass the cap fails to inflate.
                    let room = (cap - out.len()).min(u16::MAX as usize);
                    let start = out.len();
                    out.resize(start + room, 0);
                    match zstd::bulk::decompress_to_buffer(block, &mut out[start..]) {
                        Ok(n) => out.truncate(start + n),
                        Err(_) if room < u16::MAX as usize => return Err(Refusal::Inflation(cap)),
                        Err(_) => return Err(Refusal::Malformed("a block does not inflate")),
                    }
                }
                _ => return Err(Refusal::Malformed("unknown block type")),
            }
        }
    }

    /// Checks the delta's operations and returns them re-encoded without
    /// the node deltas about this node.
    fn delta(&mut self, ops: &[u8], now_ms: u64) -> Result<(Vec<u8>, usize), Refusal> {
        struct NodeDelta<'a> {
            id: &'a str,
            start: usize,
            end: usize,
            last_version: u64,
            max_version: Option<u64>,
            new_keys: Vec<u64>,
        }
        let mut r = Reader { buf: ops };
        let mut deltas: Vec<NodeDelta<'_>> = Vec::new();
        while !r.buf.is_empty() {
            let at = ops.len() - r.buf.len();
            match r.u8()? {
                OP_NODE => {
                    let (id, generation) = r.node()?;
                    self.check_node(id, generation, now_ms)?;
                    r.take(16)?; // last gc version, from version
                    if deltas.len() >= self.limits.max_nodes {
                        return Err(Refusal::TooManyNodes(self.limits.max_nodes));
                    }
                    deltas.push(NodeDelta {
                        id,
                        start: at,
                        end: at,
                        last_version: 0,
                        max_version: None,
                        new_keys: Vec::new(),
                    });
                }
                OP_KEY_VALUE => {
                    let key = r.str()?;
                    let value = r.str()?;
                    let version = r.u64()?;
                    if r.u8()? > 2 {
                        return Err(Refusal::Malformed("unknown deletion status"));
                    }
                    let d = deltas
                        .last_mut()
                        .ok_or(Refusal::Malformed("a key-value before any node"))?;
                    if key.is_empty()
                        || key.len() > self.limits.max_key_len
                        || !key.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(Refusal::BadKey(d.id.to_string()));
                    }
                    if value.len() > self.limits.max_value_len
                        || value.chars().any(|c| c.is_control())
                    {
                        return Err(Refusal::BadValue(d.id.to_string()));
                    }
                    if version == 0 || version <= d.last_version || d.max_version.is_some() {
                        return Err(Refusal::Versions(d.id.to_string()));
                    }
                    d.last_version = version;
                    d.new_keys.push(self.hasher.hash_one(key));
                }
                OP_MAX_VERSION => {
                    let max = r.u64()?;
                    let d = deltas
                        .last_mut()
                        .ok_or(Refusal::Malformed("a max version before any node"))?;
                    if max < d.last_version || d.max_version.is_some() {
                        return Err(Refusal::Versions(d.id.to_string()));
                    }
                    d.max_version = Some(max);
                }
                _ => return Err(Refusal::Malformed("unknown delta operation")),
            }
            let end = ops.len() - r.buf.len();
            if let Some(d) = deltas.last_mut() {
                d.end = end;
            }
        }
        // Membership and key counts, checked for the whole message before
        // any of it is remembered.
        let mut newcomers = HashSet::new();
        for d in &deltas {
            if d.id != self.self_id && !self.keys.contains_key(d.id) {
                newcomers.insert(d.id);
            }
        }
        if self.keys.len() + newcomers.len() > self.limits.max_nodes {
            return Err(Refusal::MembershipFull(self.limits.max_nodes));
        }
        for d in &deltas {
            if d.id == self.self_id {
                continue;
            }
            let known = self.keys.get(d.id);
            let added = d
                .new_keys
                .iter()
                .filter(|k| known.is_none_or(|s| !s.contains(k)))
                .collect::<HashSet<_>>()
                .len();
            if known.map_or(0, |s| s.len()) + added > self.limits.max_keys_per_node {
                return Err(Refusal::TooManyKeys(d.id.to_string()));
            }
        }
        let mut kept = Vec::with_capacity(ops.len());
        let mut dropped_self = 0;
        for d in deltas {
            if d.id == self.self_id {
                dropped_self += 1;
                continue;
            }
            self.keys
                .entry(d.id.to_string())
                .or_default()
                .extend(d.new_keys);
            kept.extend_from_slice(&ops[d.start..d.end]);
        }
        Ok((kept, dropped_self))
    }

    /// Checks one gossip message (already authenticated and reassembled).
    pub fn check(&mut self, message: &[u8], now_ms: u64) -> Result<Checked, Refusal> {
        let mut r = Reader { buf: message };
        if r.u16()? != MAGIC || r.u8()? != PROTOCOL_V0 {
            return Err(Refusal::Malformed("not a chitchat message"));
        }
        let kind = r.u8()?;
        let header_end = 4;
        let mut out = Vec::with_capacity(message.len());
        out.extend_from_slice(&message[..header_end]);
        let mut dropped_self = 0;
        match kind {
            MSG_SYN => {
                self.digest(&mut r, now_ms)?;
                r.str()?; // cluster id
                if !r.buf.is_empty() {
                    return Err(Refusal::Malformed("trailing bytes"));
                }
                out = message.to_vec();
            }
            MSG_SYN_ACK | MSG_ACK => {
                if kind == MSG_SYN_ACK {
                    let digest_start = message.len() - r.buf.len();
                    self.digest(&mut r, now_ms)?;
                    let digest_end = message.len() - r.buf.len();
                    out.extend_from_slice(&message[digest_start..digest_end]);
                }
                let ops = self.inflate(&mut r)?;
                if !r.buf.is_empty() {
                    return Err(Refusal::Malformed("trailing bytes"));
                }
                let (kept, dropped) = self.delta(&ops, now_ms)?;
                dropped_self = dropped;
                for block in kept.chunks(u16::MAX as usize) {
                    out.push(BLOCK_PLAIN);
                    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
                    out.extend_from_slice(block);
                }
                out.push(BLOCK_END);
            }
            MSG_BAD_CLUSTER => {
                if !r.buf.is_empty() {
                    return Err(Refusal::Malformed("trailing bytes"));
                }
                out = message.to_vec();
            }
            _ => return Err(Refusal::Malformed("unknown message type")),
        }
        let message = ChitchatMessage::deserialize(&mut &out[..])
            .map_err(|_| Refusal::Malformed("chitchat refused what passed the guard"))?;
        Ok(Checked {
            message,
            dropped_self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    /// Builds messages byte by byte, the way a hostile peer would.
    #[derive(Default)]
    struct Craft {
        ops: Vec<u8>,
    }

    fn str_bytes(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn node_bytes(out: &mut Vec<u8>, id: &str, generation: u64) {
        str_bytes(out, id);
        out.extend_from_slice(&generation.to_le_bytes());
        out.push(4);
        out.extend_from_slice(&[127, 0, 0, 1]);
        out.extend_from_slice(&7946u16.to_le_bytes());
    }

    impl Craft {
        fn node(mut self, id: &str) -> Self {
            self.ops.push(OP_NODE);
            node_bytes(&mut self.ops, id, NOW - 1000);
            self.ops.extend_from_slice(&0u64.to_le_bytes());
            self.ops.extend_from_slice(&0u64.to_le_bytes());
            self
        }
        fn kv(mut self, key: &str, value: &str, version: u64) -> Self {
            self.ops.push(OP_KEY_VALUE);
            str_bytes(&mut self.ops, key);
            str_bytes(&mut self.ops, value);
            self.ops.extend_from_slice(&version.to_le_bytes());
            self.ops.push(0);
            self
        }
        fn max_version(mut self, v: u64) -> Self {
            self.ops.push(OP_MAX_VERSION);
            self.ops.extend_from_slice(&v.to_le_bytes());
            self
        }
        /// An Ack carrying the ops in one plain block.
        fn ack(&self) -> Vec<u8> {
            let mut m = header(MSG_ACK);
            m.push(BLOCK_PLAIN);
            m.extend_from_slice(&(self.ops.len() as u16).to_le_bytes());
            m.extend_from_slice(&self.ops);
            m.push(BLOCK_END);
            m
        }
        /// A SynAck with an empty digest.
        fn syn_ack(&self) -> Vec<u8> {
            let mut m = header(MSG_SYN_ACK);
            m.extend_from_slice(&0u16.to_le_bytes());
            m.extend_from_slice(&self.ack()[4..]);
            m
        }
    }

    fn header(kind: u8) -> Vec<u8> {
        let mut m = MAGIC.to_le_bytes().to_vec();
        m.push(PROTOCOL_V0);
        m.push(kind);
        m
    }

    fn guard() -> GossipGuard {
        GossipGuard::new("me", GossipLimits::default())
    }

    #[test]
    fn what_chitchat_itself_sends_passes_unchanged() {
        use chitchat::Serializable;
        let syn = ChitchatMessage::Syn {
            cluster_id: "grid".into(),
            digest: Default::default(),
        };
        let mut bytes = Vec::new();
        syn.serialize(&mut bytes);
        assert_eq!(guard().check(&bytes, NOW).unwrap().message, syn);
        let ack = Craft::default()
            .node("web-1")
            .kv("site", "ams", 1)
            .kv("e:web-2", "u5,1,0", 2)
            .ack();
        assert!(guard().check(&ack, NOW).is_ok());
    }

    /// The crafted SynAck: a key at version 5 and then a max version of 1.
    /// chitchat asserts max_version >= every key's version when it applies
    /// the delta, and its task ends.
    #[test]
    fn a_max_version_below_a_keys_version_is_refused() {
        let m = Craft::default()
            .node("web-1")
            .kv("site", "ams", 5)
            .max_version(1)
            .syn_ack();
        assert_eq!(
            guard().check(&m, NOW).unwrap_err(),
            Refusal::Versions("web-1".into())
        );
        let zero = Craft::default().node("web-1").kv("site", "ams", 0).ack();
        assert!(matches!(
            guard().check(&zero, NOW),
            Err(Refusal::Versions(_))
        ));
    }

    #[test]
    fn a_compressed_bomb_is_refused_before_it_inflates() {
        // 64 KiB blocks of zeros compress to a few bytes each.
        let zeros = vec![0u8; 65_535];
        let block = zstd::bulk::compress(&zeros, 3).unwrap();
        let mut m = header(MSG_ACK);
        for _ in 0..40 {
            m.push(BLOCK_COMPRESSED);
            m.extend_from_slice(&(block.len() as u16).to_le_bytes());
            m.extend_from_slice(&block);
        }
        m.push(BLOCK_END);
        assert!(m.len() < 4_000, "{} bytes", m.len());
        assert_eq!(
            guard().check(&m, NOW).unwrap_err(),
            Refusal::Inflation(1 << 20)
        );
    }

    #[test]
    fn a_delta_about_this_node_is_dropped_and_the_rest_kept() {
        let m = Craft::default()
            .node("me")
            .kv("site", "evil", 99)
            .node("web-1")
            .kv("site", "ams", 1)
            .ack();
        let checked = guard().check(&m, NOW).unwrap();
        assert_eq!(checked.dropped_self, 1);
        let mut plain = Vec::new();
        chitchat::Serializable::serialize(&checked.message, &mut plain);
        let text = String::from_utf8_lossy(&plain);
        assert!(!text.contains("evil"), "{text}");
        assert!(text.contains("ams"), "{text}");
    }

    #[test]
    fn names_keys_values_and_generations_are_checked() {
        let bad_id = Craft::default().node("--opt=x").kv("k", "v", 1).ack();
        assert!(matches!(
            guard().check(&bad_id, NOW),
            Err(Refusal::BadNodeId(_))
        ));
        let ctl = Craft::default().node("web\n1").ack();
        assert!(matches!(
            guard().check(&ctl, NOW),
            Err(Refusal::BadNodeId(_))
        ));
        let key = Craft::default().node("web-1").kv("a b", "v", 1).ack();
        assert!(matches!(guard().check(&key, NOW), Err(Refusal::BadKey(_))));
        let value = Craft::default()
            .node("web-1")
            .kv("k", &"x".repeat(9_000), 1)
            .ack();
        assert!(matches!(
            guard().check(&value, NOW),
            Err(Refusal::BadValue(_))
        ));
        let value = Craft::default().node("web-1").kv("k", "a\u{7}b", 1).ack();
        assert!(matches!(
            guard().check(&value, NOW),
            Err(Refusal::BadValue(_))
        ));
        let mut takeover = header(MSG_ACK);
        let mut ops = vec![OP_NODE];
        node_bytes(&mut ops, "web-1", u64::MAX);
        ops.extend_from_slice(&[0u8; 16]);
        takeover.push(BLOCK_PLAIN);
        takeover.extend_from_slice(&(ops.len() as u16).to_le_bytes());
        takeover.extend_from_slice(&ops);
        takeover.push(BLOCK_END);
        assert!(matches!(
            guard().check(&takeover, NOW),
            Err(Refusal::FutureGeneration(_))
        ));
    }

    #[test]
    fn membership_and_keys_per_node_are_bounded() {
        let limits = GossipLimits {
            max_nodes: 3,
            max_keys_per_node: 2,
            ..GossipLimits::default()
        };
        let mut g = GossipGuard::new("me", limits);
        let m = Craft::default().node("a").node("b").node("c").ack();
        assert!(g.check(&m, NOW).is_ok());
        let m = Craft::default().node("d").ack();
        assert_eq!(g.check(&m, NOW).unwrap_err(), Refusal::MembershipFull(3));
        g.forget("a");
        assert!(g.check(&m, NOW).is_ok());
        let m = Craft::default()
            .node("b")
            .kv("k1", "v", 1)
            .kv("k2", "v", 2)
            .ack();
        assert!(g.check(&m, NOW).is_ok());
        // The same keys again are no new keys.
        assert!(g.check(&m, NOW).is_ok());
        let m = Craft::default().node("b").kv("k3", "v", 3).ack();
        assert_eq!(
            g.check(&m, NOW).unwrap_err(),
            Refusal::TooManyKeys("b".into())
        );
    }

    #[test]
    fn truncated_or_trailing_bytes_are_refused_at_every_length() {
        let m = Craft::default()
            .node("web-1")
            .kv("site", "ams", 1)
            .syn_ack();
        for cut in 0..m.len() {
            assert!(guard().check(&m[..cut], NOW).is_err(), "cut at {cut}");
        }
        let mut long = m.clone();
        long.push(0);
        assert!(guard().check(&long, NOW).is_err());
    }
}
