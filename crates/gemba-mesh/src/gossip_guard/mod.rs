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
//!   has heard of it (from digests and deltas) holds at most `max_nodes`
//!   ids whose digest still fits one datagram (`max_digest_bytes`: chitchat
//!   subtracts a Syn's digest from the datagram size, and a longer digest
//!   would wrap that length);
//! - keys are printable ASCII up to `max_key_len`, values up to
//!   `max_value_len` without control characters, and one node id may hold
//!   at most `max_keys_per_node` distinct keys;
//! - what the keys and values of one node id take is capped
//!   (`max_bytes_per_node`), and so is what all node ids together take
//!   (`max_total_bytes`): a node delta that would pass either is left out
//!   and counted, the rest of the message passes;
//! - within a node's delta, versions are non-zero and increase, and its
//!   max version is not below any of its keys' versions (chitchat asserts
//!   this and would stop gossiping otherwise);
//! - a delta about this node's own id is dropped: only this node writes
//!   its state.
//!
//! The guard's `impl` (about 490 lines) is one pass over one message,
//! field by field in wire order, and is kept whole; the reader, the cache
//! of verified values and the rumour encoding are beside it.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use std::sync::Arc;

use chitchat::{ChitchatMessage, Deserializable};

use crate::identity::{self, Pinned, Pins};

mod reader;
mod rumour;
mod verified;

use reader::*;
pub use rumour::*;
use verified::*;

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

/// How long a key a node no longer sends still counts towards its cap:
/// longer than chitchat keeps deleted keys (an hour).
const KEY_MEMORY_MS: u64 = 2 * 3600 * 1000;

/// chitchat's deletion status of a hard-deleted key.
const DELETED: u8 = 1;

/// A rule on values beyond their signature, from local policy (the
/// backbone's rule on who may sign a site's summary). A node delta with a
/// value it refuses is left out whole, with the reason.
pub trait ValuePolicy: Send + Sync {
    fn admit(&self, node: &str, key: &str, payload: &str) -> Result<(), &'static str>;
}

/// What the guard lets through.
#[derive(Clone, Copy, Debug)]
pub struct GossipLimits {
    /// Node ids one message may name, and the grid may hold.
    pub max_nodes: usize,
    /// Bytes this node's digest may take (each member costs its id and
    /// 53 bytes).
    pub max_digest_bytes: usize,
    /// Distinct keys one node id may hold.
    pub max_keys_per_node: usize,
    pub max_key_len: usize,
    pub max_value_len: usize,
    /// Bytes a delta may inflate to, all blocks together.
    pub max_inflated: usize,
    /// How far in the future (ms) a generation may lie: generations are
    /// start times.
    pub max_generation_skew_ms: u64,
    /// Bytes (keys and values) one node id's state may take.
    pub max_bytes_per_node: usize,
    /// Bytes the states of all node ids together may take.
    pub max_total_bytes: usize,
    /// Verified values remembered (by fingerprint), so that a copy of a
    /// value relayed again by other peers is not verified again. Up to
    /// twice this many are held: copies arrive within seconds of each
    /// other, so a few times the values a site holds is enough (16,384
    /// keep the cache under about 1 MB; 65,536 let it grow to 4 MB).
    pub verified_cache: usize,
}

impl Default for GossipLimits {
    fn default() -> Self {
        GossipLimits {
            max_nodes: MAX_NODES,
            max_digest_bytes: 60_000,
            max_keys_per_node: 8_192,
            max_key_len: 128,
            max_value_len: 8_192,
            max_inflated: 1 << 20,
            max_bytes_per_node: 1 << 20,
            max_total_bytes: 256 << 20,
            max_generation_skew_ms: 24 * 3600 * 1000,
            verified_cache: 1 << 14,
        }
    }
}

/// The most nodes a grid may have (with ids of up to 7 characters; longer
/// ids leave room for fewer, see [`GossipLimits::max_digest_bytes`]).
pub const MAX_NODES: usize = 1_000;

/// What one member costs in a digest besides its id: id length, generation,
/// an IPv6 address and port, heartbeat and two versions.
const DIGEST_ENTRY: usize = 2 + 8 + 1 + 16 + 2 + 24;

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
    /// Node ids left out because the grid is full.
    pub grid_full: HashSet<String>,
}

/// What the guard's signature checks cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Ed25519 verifications done.
    pub verified: u64,
    /// Values that arrived again and were found in the cache instead.
    pub cache_hits: u64,
    /// CPU time the verifications took on this thread, in nanoseconds.
    pub cpu_ns: u64,
}

/// The state the guard keeps between messages: which node ids it has heard
/// of and which keys each holds (hashed), both bounded.
pub struct GossipGuard {
    self_id: String,
    limits: GossipLimits,
    hasher: std::collections::hash_map::RandomState,
    /// Each node id's keys (hashed), with when each was last seen (ms) and
    /// what its key and value take.
    keys: HashMap<String, NodeKeys>,
    /// What all node ids' keys and values take.
    total_bytes: usize,
    /// What this node's digest would take: itself and every member.
    digest_bytes: usize,
    /// Whose keys values are verified with.
    pins: Arc<Pins>,
    unverified: Vec<(String, &'static str)>,
    verified: VerifiedValues,
    /// The pins' epoch the cache was filled under: a key replaced or
    /// revoked empties it.
    pins_epoch: u64,
    stats: VerifyStats,
    policy: Option<Arc<dyn ValuePolicy>>,
}

/// One node id's keys as the guard accounts for them.
#[derive(Default)]
struct NodeKeys {
    /// Key hash → (last seen, ms; bytes of key and value).
    keys: HashMap<u64, (u64, usize)>,
    bytes: usize,
}

impl NodeKeys {
    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Forgets keys not seen for [`KEY_MEMORY_MS`]; returns the bytes freed.
    fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.bytes;
        self.keys.retain(|_, (seen, size)| {
            let keep = now_ms.saturating_sub(*seen) < KEY_MEMORY_MS;
            if !keep {
                self.bytes -= *size;
            }
            keep
        });
        before - self.bytes
    }
}

impl GossipGuard {
    pub fn new(self_id: &str, limits: GossipLimits, pins: Arc<Pins>) -> GossipGuard {
        GossipGuard {
            self_id: self_id.to_string(),
            limits,
            hasher: Default::default(),
            keys: HashMap::new(),
            total_bytes: 0,
            digest_bytes: DIGEST_ENTRY + self_id.len(),
            pins_epoch: pins.epoch(),
            pins,
            unverified: Vec::new(),
            verified: VerifiedValues::default(),
            stats: VerifyStats::default(),
            policy: None,
        }
    }

    /// The guard with a rule on values beyond their signatures.
    pub fn with_policy(mut self, policy: Arc<dyn ValuePolicy>) -> GossipGuard {
        self.policy = Some(policy);
        self
    }

    /// What verification has cost so far.
    pub fn verify_stats(&self) -> VerifyStats {
        self.stats
    }

    /// Node deltas left out because their values could not be verified or
    /// would pass a byte cap, since the last call, with the reason.
    pub fn take_unverified(&mut self) -> Vec<(String, &'static str)> {
        std::mem::take(&mut self.unverified)
    }

    /// Node ids heard of (bounded by `max_nodes`).
    pub fn members(&self) -> usize {
        self.keys.len()
    }

    /// Forgets a node id that left the grid, with its keys.
    pub fn forget(&mut self, node_id: &str) {
        if let Some(k) = self.keys.remove(node_id) {
            self.digest_bytes -= DIGEST_ENTRY + node_id.len();
            self.total_bytes -= k.bytes;
        }
    }

    /// What the states of all node ids take, as the guard accounts for
    /// them (keys and values).
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Keeps only the node ids `keep` says are still on the grid.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.keys.keys().filter(|id| !keep(id)).cloned().collect();
        for id in gone {
            self.forget(&id);
        }
    }

    /// The node ids among `ids` this node has not heard of, split into
    /// those the grid has room for and those it has not (left out of the
    /// message).
    fn admit<'a>(&self, ids: &[&'a str]) -> (Vec<&'a str>, HashSet<&'a str>) {
        let mut newcomers: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| *id != self.self_id && !self.keys.contains_key(*id))
            .collect();
        newcomers.sort_unstable();
        newcomers.dedup();
        let mut count = self.keys.len();
        let mut bytes = self.digest_bytes;
        let mut admitted = Vec::new();
        let mut refused = HashSet::new();
        for id in newcomers {
            let cost = DIGEST_ENTRY + id.len();
            if count < self.limits.max_nodes && bytes + cost <= self.limits.max_digest_bytes {
                count += 1;
                bytes += cost;
                admitted.push(id);
            } else {
                refused.insert(id);
            }
        }
        (admitted, refused)
    }

    fn remember(&mut self, newcomers: Vec<&str>) {
        for id in newcomers {
            self.digest_bytes += DIGEST_ENTRY + id.len();
            self.keys.insert(id.to_string(), NodeKeys::default());
        }
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

    /// A digest's entries: node id and where the entry lies in `whole`
    /// (chitchat learns members from digests).
    fn digest<'a>(
        &self,
        r: &mut Reader<'a>,
        whole: &[u8],
        now_ms: u64,
    ) -> Result<Vec<(&'a str, usize, usize)>, Refusal> {
        let count = r.u16()? as usize;
        if count > self.limits.max_nodes + 1 {
            return Err(Refusal::TooManyNodes(self.limits.max_nodes));
        }
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let start = whole.len() - r.buf.len();
            let (id, generation) = r.node()?;
            self.check_node(id, generation, now_ms)?;
            // heartbeat, last gc version, max version
            r.take(24)?;
            ids.push((id, start, whole.len() - r.buf.len()));
        }
        Ok(ids)
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
    fn delta(
        &mut self,
        ops: &[u8],
        digest_ids: &[&str],
        now_ms: u64,
    ) -> Result<(Vec<u8>, usize, HashSet<String>), Refusal> {
        struct NodeDelta<'a> {
            id: &'a str,
            generation: u64,
            start: usize,
            end: usize,
            last_version: u64,
            max_version: Option<u64>,
            /// Where the max-version operation lies: never passed on.
            max_op: Option<(usize, usize)>,
            /// (key hash, bytes of key and value)
            new_keys: Vec<(u64, usize)>,
            /// (key, value, version, deletion status)
            kvs: Vec<(&'a str, &'a str, u64, u8)>,
        }
        let mut r = Reader { buf: ops };
        let mut deltas: Vec<NodeDelta<'_>> = Vec::new();
        while !r.buf.is_empty() {
            let at = ops.len() - r.buf.len();
            match r.u8()? {
                OP_NODE => {
                    let (id, generation) = r.node()?;
                    self.check_node(id, generation, now_ms)?;
                    // The garbage-collection point and the version the delta
                    // starts from are not signed; they are passed on,
                    // because a node whose newest change was a deletion
                    // that has since been collected legitimately sends a
                    // point past its newest value. The worst a forged one
                    // does is make a peer re-read the node's state: values
                    // the node signed, older ones at worst, until newer
                    // ones arrive.
                    r.u64()?;
                    r.u64()?;
                    if deltas.len() >= self.limits.max_nodes {
                        return Err(Refusal::TooManyNodes(self.limits.max_nodes));
                    }
                    deltas.push(NodeDelta {
                        id,
                        generation,
                        start: at,
                        end: at,
                        last_version: 0,
                        max_version: None,
                        max_op: None,
                        new_keys: Vec::new(),
                        kvs: Vec::new(),
                    });
                }
                OP_KEY_VALUE => {
                    let key = r.str()?;
                    let value = r.str()?;
                    let version = r.u64()?;
                    let status = r.u8()?;
                    if status > 2 {
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
                    d.new_keys
                        .push((self.hasher.hash_one(key), key.len() + value.len()));
                    d.kvs.push((key, value, version, status));
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
                    d.max_op = Some((at, ops.len() - r.buf.len()));
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
        let mut named: Vec<&str> = digest_ids.to_vec();
        named.extend(deltas.iter().map(|d| d.id));
        let (newcomers, refused) = self.admit(&named);
        for d in &deltas {
            if d.id == self.self_id || refused.contains(d.id) {
                continue;
            }
            let cap = self.limits.max_keys_per_node;
            if let Some(known) = self.keys.get_mut(d.id) {
                // Keys a node stopped sending (links to peers long gone)
                // stop counting after a while: the cap is on keys in use.
                if known.len() + d.new_keys.len() > cap {
                    self.total_bytes -= known.expire(now_ms);
                }
            }
            let known = self.keys.get(d.id);
            let added = d
                .new_keys
                .iter()
                .filter(|(k, _)| known.is_none_or(|s| !s.keys.contains_key(k)))
                .map(|(k, _)| k)
                .collect::<HashSet<_>>()
                .len();
            if known.map_or(0, |s| s.len()) + added > cap {
                return Err(Refusal::TooManyKeys(d.id.to_string()));
            }
        }
        self.remember(newcomers);
        let mut kept = Vec::with_capacity(ops.len());
        let mut dropped_self = 0;
        for d in deltas {
            if d.id == self.self_id {
                dropped_self += 1;
                continue;
            }
            if refused.contains(d.id) {
                continue;
            }
            // What the node's state would take with this delta (a key
            // named twice in one delta counts twice: an over-estimate).
            let (node_bytes, grows) = {
                let known = self.keys.get(d.id);
                let before = known.map_or(0, |n| n.bytes);
                let after = d.new_keys.iter().fold(before, |acc, (k, size)| {
                    let old = known.and_then(|n| n.keys.get(k)).map_or(0, |x| x.1);
                    acc.saturating_sub(old) + size
                });
                (after, after.saturating_sub(before))
            };
            if node_bytes > self.limits.max_bytes_per_node {
                self.unverified.push((d.id.to_string(), "node_bytes_cap"));
                continue;
            }
            if self.total_bytes + grows > self.limits.max_total_bytes {
                self.unverified.push((d.id.to_string(), "grid_bytes_cap"));
                continue;
            }
            if let Err(why) = self.verify(d.id, d.generation, &d.kvs) {
                self.unverified.push((d.id.to_string(), why));
                continue;
            }
            let entry = self.keys.entry(d.id.to_string()).or_default();
            for (k, size) in d.new_keys {
                let old = entry.keys.insert(k, (now_ms, size)).map_or(0, |x| x.1);
                entry.bytes = entry.bytes + size - old;
                self.total_bytes = self.total_bytes + size - old;
            }
            // Everything but the max-version operation, which no signature
            // covers: a forged one would make peers ignore the node's next
            // values.
            match d.max_op {
                Some((a, b)) => {
                    kept.extend_from_slice(&ops[d.start..a]);
                    kept.extend_from_slice(&ops[b..d.end]);
                }
                None => kept.extend_from_slice(&ops[d.start..d.end]),
            }
        }
        let refused = refused.into_iter().map(str::to_string).collect();
        Ok((kept, dropped_self, refused))
    }

    /// Whether a node delta's values were signed by the node they are
    /// about, as far as this node knows who that is. A value verified
    /// before (the same bytes for the same node, generation, key and
    /// version) is not verified again.
    fn verify(
        &mut self,
        id: &str,
        generation: u64,
        kvs: &[(&str, &str, u64, u8)],
    ) -> Result<(), &'static str> {
        // A hard deletion carries no value to sign: gemba never sends one.
        if kvs.iter().any(|kv| kv.3 == DELETED) {
            return Err("unsigned_deletion");
        }
        let epoch = self.pins.epoch();
        if epoch != self.pins_epoch {
            self.verified.clear();
            self.pins_epoch = epoch;
        }
        let cap = self.limits.verified_cache;
        let mut fresh = Vec::new();
        for &(k, v, version, _) in kvs {
            let fp = VerifiedValues::fingerprint(id, generation, k, version, v);
            if self.verified.contains(&fp, cap) {
                self.stats.cache_hits += 1;
            } else {
                fresh.push((fp, k, v, version));
            }
        }
        if fresh.is_empty() {
            // Nothing new; still refused when the node is not believed.
            return match self.pins.decide(id, None) {
                Pinned::NotEnrolled => Err("not_enrolled"),
                _ => Ok(()),
            };
        }
        let cpu_start = thread_cpu_ns();
        let result = self.verify_fresh(id, generation, &fresh);
        self.stats.cpu_ns += thread_cpu_ns().saturating_sub(cpu_start);
        result?;
        // Signed by its node; now what local policy says of it. Only then
        // is it remembered as verified.
        if let Some(policy) = &self.policy {
            for &(_, k, v, _) in &fresh {
                policy.admit(id, k, identity::payload(v).unwrap_or(""))?;
            }
        }
        for &(fp, ..) in &fresh {
            self.verified.insert(fp, cap);
        }
        Ok(())
    }

    fn verify_fresh(
        &mut self,
        id: &str,
        generation: u64,
        fresh: &[([u8; 16], &str, &str, u64)],
    ) -> Result<(), &'static str> {
        // The key the node offers for itself, if it signed it with itself.
        let offered =
            fresh
                .iter()
                .find(|kv| kv.1 == identity::ID_KEY)
                .and_then(|&(_, k, v, version)| {
                    let pk = identity::parse_public(identity::payload(v)?)?;
                    self.stats.verified += 1;
                    identity::verify(&pk, id, generation, k, version, v).then_some(pk)
                });
        let key = match self.pins.decide(id, offered) {
            Pinned::Key(k) => k,
            Pinned::NotEnrolled => return Err("not_enrolled"),
            Pinned::Unknown => return Err("unknown_identity"),
        };
        for &(_, k, v, version) in fresh {
            // The offered key verified its own value already when it is
            // the pinned one.
            let done = k == identity::ID_KEY && offered == Some(key);
            if !done {
                self.stats.verified += 1;
                if !identity::verify(&key, id, generation, k, version, v) {
                    return Err("bad_signature");
                }
            }
        }
        Ok(())
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
        let mut grid_full = HashSet::new();
        match kind {
            MSG_SYN => {
                let entries = self.digest(&mut r, message, now_ms)?;
                let cluster_start = message.len() - r.buf.len();
                r.str()?; // cluster id
                if !r.buf.is_empty() {
                    return Err(Refusal::Malformed("trailing bytes"));
                }
                let ids: Vec<&str> = entries.iter().map(|e| e.0).collect();
                let (newcomers, refused) = self.admit(&ids);
                self.remember(newcomers);
                push_digest(&mut out, message, &entries, &refused);
                out.extend_from_slice(&message[cluster_start..]);
                grid_full = refused.into_iter().map(str::to_string).collect();
            }
            MSG_SYN_ACK | MSG_ACK => {
                let mut entries = Vec::new();
                if kind == MSG_SYN_ACK {
                    entries = self.digest(&mut r, message, now_ms)?;
                }
                let ops = self.inflate(&mut r)?;
                if !r.buf.is_empty() {
                    return Err(Refusal::Malformed("trailing bytes"));
                }
                let ids: Vec<&str> = entries.iter().map(|e| e.0).collect();
                let (kept, dropped, refused) = self.delta(&ops, &ids, now_ms)?;
                if kind == MSG_SYN_ACK {
                    let refused: HashSet<&str> = refused.iter().map(String::as_str).collect();
                    push_digest(&mut out, message, &entries, &refused);
                }
                grid_full = refused;
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
            grid_full,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeIdentity;

    const NOW: u64 = 1_800_000_000_000;

    /// Builds messages byte by byte, the way a hostile peer would; values
    /// are signed by the node they are about unless `forge` is set.
    #[derive(Default)]
    struct Craft {
        ops: Vec<u8>,
        current: String,
        forge: bool,
    }

    /// One identity per test node name, for the whole test run.
    fn ident(name: &str) -> Arc<NodeIdentity> {
        use std::sync::{Mutex, OnceLock};
        static IDS: OnceLock<Mutex<HashMap<String, Arc<NodeIdentity>>>> = OnceLock::new();
        IDS.get_or_init(Default::default)
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(NodeIdentity::ephemeral()))
            .clone()
    }

    /// Pins every node name the tests use.
    fn pins() -> Arc<Pins> {
        let pins = Pins::default();
        for n in ["me", "web-1", "a", "b", "c", "d", "e"] {
            pins.decide(n, identity::parse_public(&ident(n).public()));
        }
        Arc::new(pins)
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
            self.current = id.to_string();
            self.ops.push(OP_NODE);
            node_bytes(&mut self.ops, id, NOW - 1000);
            self.ops.extend_from_slice(&0u64.to_le_bytes());
            self.ops.extend_from_slice(&0u64.to_le_bytes());
            self
        }
        fn kv(mut self, key: &str, value: &str, version: u64) -> Self {
            let signer = if self.forge {
                ident("forger")
            } else {
                ident(&self.current)
            };
            let value = signer.sign_value(&self.current, NOW - 1000, key, version, value);
            self.ops.push(OP_KEY_VALUE);
            str_bytes(&mut self.ops, key);
            str_bytes(&mut self.ops, &value);
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
        GossipGuard::new("me", GossipLimits::default(), pins())
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
        let text = plain(&checked);
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
    fn what_one_node_and_the_whole_grid_hold_is_capped_in_bytes() {
        // Signed values are about 90 bytes longer than their payload.
        let limits = GossipLimits {
            max_bytes_per_node: 1_000,
            max_total_bytes: 1_200,
            ..GossipLimits::default()
        };
        let mut g = GossipGuard::new("me", limits, pins());
        let big = "x".repeat(300);
        let m = Craft::default()
            .node("a")
            .kv("k1", &big, 1)
            .kv("k2", &big, 2)
            .ack();
        g.check(&m, NOW).unwrap();
        assert!(g.take_unverified().is_empty());
        let a_bytes = g.total_bytes();
        assert!((700..1000).contains(&a_bytes), "{a_bytes}");
        // A third value would take a past its cap: its delta is left out
        // and counted; the rest of the message passes.
        let m = Craft::default()
            .node("a")
            .kv("k3", &big, 3)
            .node("b")
            .kv("k1", "small", 1)
            .ack();
        g.check(&m, NOW).unwrap();
        assert_eq!(g.take_unverified(), [("a".to_string(), "node_bytes_cap")]);
        assert!(g.total_bytes() > a_bytes, "b's value passed");
        // Replacing a value counts its new size, not both.
        let m = Craft::default().node("a").kv("k1", "tiny", 4).ack();
        g.check(&m, NOW).unwrap();
        assert!(g.total_bytes() < a_bytes);
        // The grid's cap: c may not take what is left and more.
        let m = Craft::default()
            .node("c")
            .kv("k1", &big, 1)
            .kv("k2", &big, 2)
            .ack();
        g.check(&m, NOW).unwrap();
        assert_eq!(g.take_unverified(), [("c".to_string(), "grid_bytes_cap")]);
        assert!(g.total_bytes() <= 1_200);
        // A node that leaves gives its bytes back.
        let before = g.total_bytes();
        g.forget("a");
        assert!(g.total_bytes() < before);
    }

    #[test]
    fn membership_and_keys_per_node_are_bounded() {
        let limits = GossipLimits {
            max_nodes: 3,
            max_keys_per_node: 2,
            ..GossipLimits::default()
        };
        let mut g = GossipGuard::new("me", limits, pins());
        let m = Craft::default().node("a").node("b").node("c").ack();
        assert!(g.check(&m, NOW).is_ok());
        // A full grid leaves newcomers out and keeps the rest.
        let m = Craft::default().node("d").node("a").kv("k", "v", 1).ack();
        let checked = g.check(&m, NOW).unwrap();
        assert_eq!(checked.grid_full, HashSet::from(["d".to_string()]));
        // A digest names members too.
        let mut syn = header(MSG_SYN);
        syn.extend_from_slice(&2u16.to_le_bytes());
        node_bytes(&mut syn, "e", NOW - 1000);
        syn.extend_from_slice(&[0u8; 24]);
        node_bytes(&mut syn, "b", NOW - 1000);
        syn.extend_from_slice(&[0u8; 24]);
        str_bytes(&mut syn, "grid");
        let checked = g.check(&syn, NOW).unwrap();
        assert_eq!(checked.grid_full, HashSet::from(["e".to_string()]));
        let ChitchatMessage::Syn { cluster_id, .. } = &checked.message else {
            panic!("not a Syn")
        };
        assert_eq!(cluster_id, "grid");
        g.forget("a");
        let m = Craft::default().node("d").ack();
        assert!(g.check(&m, NOW).unwrap().grid_full.is_empty());
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
        // Keys b stopped sending hours ago no longer count.
        let later = NOW + KEY_MEMORY_MS + 1;
        let m = Craft::default().node("b").kv("k3", "v", 3).ack();
        assert!(g.check(&m, later).is_ok());
    }

    /// What chitchat is handed, as text.
    fn plain(c: &Checked) -> String {
        format!("{:?}", c.message)
    }

    #[test]
    fn values_are_believed_only_when_their_node_signed_them() {
        let mut g = guard();
        // web-1's own values pass; the same values signed by another key
        // are left out, and the rest of the message is kept.
        let mut forged = Craft {
            forge: true,
            ..Craft::default()
        }
        .node("web-1")
        .kv("c:web", "forged-failing", 7);
        forged.forge = false;
        let m = forged.node("a").kv("site", "ams-genuine", 1).ack();
        let checked = g.check(&m, NOW).unwrap();
        assert!(!plain(&checked).contains("forged-failing"));
        assert!(plain(&checked).contains("ams-genuine"));
        assert_eq!(
            g.take_unverified(),
            vec![("web-1".to_string(), "bad_signature")]
        );
        // A node nobody pinned, with no key of its own: not believed.
        let m = Craft::default().node("stranger").kv("site", "x", 1).ack();
        g.check(&m, NOW).unwrap();
        assert_eq!(
            g.take_unverified(),
            vec![("stranger".to_string(), "unknown_identity")]
        );
        // Publishing its key (signed with itself) pins it on first sight.
        let pk = ident("newcomer").public();
        let m = Craft::default()
            .node("newcomer")
            .kv(identity::ID_KEY, &pk, 1)
            .kv("site", "ams", 2)
            .ack();
        let checked = g.check(&m, NOW).unwrap();
        assert!(g.take_unverified().is_empty());
        assert!(plain(&checked).contains("ams"));
        // An impostor offering its own key for a pinned id is not believed.
        let m = Craft {
            forge: true,
            ..Craft::default()
        }
        .node("newcomer")
        .kv(identity::ID_KEY, &ident("forger").public(), 3)
        .ack();
        g.check(&m, NOW).unwrap();
        assert_eq!(
            g.take_unverified(),
            vec![("newcomer".to_string(), "bad_signature")]
        );
    }

    /// The backbone's guard: a summary of site "ams" signed by "c", a
    /// member of it that its sitting representatives ("a", "b") do not
    /// name, is left out with its node's other values; a genuine one
    /// passes; and what the guard refused once is not taken for verified
    /// when it comes again.
    #[tokio::test(start_paused = true)]
    async fn the_backbone_refuses_a_summary_signed_by_a_node_that_is_not_a_representative() {
        use crate::sites::{signed_by_test_summary, RepresentativeBook, SUMMARY_KEY};
        let book = Arc::new(RepresentativeBook::new(
            "fra",
            2,
            std::time::Duration::from_secs(30),
        ));
        let mut g = guard().with_policy(book.clone());
        let summary = |reps: &[&str]| signed_by_test_summary("ams", reps, 1);
        let genuine = Craft::default()
            .node("a")
            .kv(SUMMARY_KEY, &summary(&["a", "b"]), 1)
            .ack();
        let checked = g.check(&genuine, NOW).unwrap();
        assert!(g.take_unverified().is_empty());
        assert!(plain(&checked).contains("rep a"));
        let impostor = Craft::default()
            .node("c")
            .kv("site", "ams", 1)
            .kv(SUMMARY_KEY, &summary(&["a", "c"]), 2)
            .ack();
        for _ in 0..2 {
            let checked = g.check(&impostor, NOW).unwrap();
            assert!(!plain(&checked).contains("rep c"));
            assert_eq!(
                g.take_unverified(),
                vec![("c".to_string(), "not_representative")]
            );
        }
        assert_eq!(
            book.representatives("ams"),
            Some(vec!["a".into(), "b".into()])
        );
        // Anything else a backbone member publishes is refused too.
        let other = Craft::default().node("d").kv("e:0/1", "x", 1).ack();
        g.check(&other, NOW).unwrap();
        assert_eq!(
            g.take_unverified(),
            vec![("d".to_string(), "not_backbone_key")]
        );
    }

    #[test]
    fn a_value_relayed_by_three_peers_is_verified_once() {
        let mut g = guard();
        let value = Craft::default().node("c").kv("e:0/1", "d=u3,3,0cn0/8@1", 4);
        // The same signed value, as three peers relay it.
        for _ in 0..3 {
            let checked = g.check(&value.ack(), NOW).unwrap();
            assert!(plain(&checked).contains("d=u3,3,0cn0/8@1"));
        }
        let stats = g.verify_stats();
        assert_eq!((stats.verified, stats.cache_hits), (1, 2), "{stats:?}");
        // A copy that differs in any byte is verified afresh (and refused).
        let mut forged = Craft {
            forge: true,
            ..Craft::default()
        }
        .node("c")
        .kv("e:0/1", "d=u3,3,0cn0/8@1", 4);
        forged.forge = false;
        g.check(&forged.ack(), NOW).unwrap();
        assert_eq!(g.verify_stats().verified, 2);
        assert_eq!(
            g.take_unverified(),
            vec![("c".to_string(), "bad_signature")]
        );
        // A key replaced or revoked empties the cache.
        g.pins.forget("c");
        g.pins
            .decide("c", identity::parse_public(&ident("c").public()));
        g.check(&value.ack(), NOW).unwrap();
        assert_eq!(g.verify_stats().verified, 3);
    }

    #[test]
    fn unsigned_max_versions_and_deletions_are_not_passed_on() {
        let mut g = guard();
        // A max version far ahead would make peers ignore web-1's next
        // values: the operation is dropped, the delta kept.
        let m = Craft::default().node("web-1").max_version(1 << 60).ack();
        let checked = g.check(&m, NOW).unwrap();
        assert!(!plain(&checked).contains(&(1u64 << 60).to_string()));
        // A hard deletion (status 1) carries nothing signed.
        let mut c = Craft::default().node("web-1").kv("c:web", "x", 4);
        let last = c.ops.len() - 1;
        c.ops[last] = DELETED;
        g.check(&c.ack(), NOW).unwrap();
        assert_eq!(
            g.take_unverified(),
            vec![("web-1".to_string(), "unsigned_deletion")]
        );
    }

    #[test]
    fn membership_stops_where_a_digest_would_outgrow_a_datagram() {
        // 64-character ids: 117 bytes a member, so about 500 fit in 60 kB.
        let mut g = guard();
        let id = |i: usize| format!("{i:0>64}");
        let mut admitted = 0;
        for i in 0..1_000 {
            let m = Craft::default().node(&id(i)).ack();
            if g.check(&m, NOW).unwrap().grid_full.is_empty() {
                admitted += 1;
            } else {
                break;
            }
        }
        assert!((500..=515).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_rumour_passes_the_guard_and_decodes_as_chitchat_sends_it() {
        let id = chitchat::ChitchatId::new(
            "web-1".to_string(),
            NOW - 1000,
            "127.0.0.1:7946".parse().unwrap(),
        );
        let signed = |k: &str, v: &str, version| {
            ident("web-1").sign_value("web-1", NOW - 1000, k, version, v)
        };
        let n = NodeRumour {
            from_version: 0,
            id: id.clone(),
            last_gc_version: 0,
            kvs: vec![
                ("site".into(), signed("site", "ams", 2), 2, 0),
                ("e:0/1".into(), signed("e:0/1", "", 5), 5, 2),
            ],
        };
        let bytes = rumour(&[n]);
        let checked = guard().check(&bytes, NOW).unwrap();
        let ChitchatMessage::Ack { .. } = &checked.message else {
            panic!("not an Ack: {:?}", checked.message)
        };
        assert!(plain(&checked).contains("ams"));
        assert_eq!(
            ChitchatMessage::deserialize(&mut &bytes[..]).unwrap(),
            checked.message
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
