//! Rumours: the whole state of the nodes with news, pushed without a
//! digest exchange, in chitchat's own message form.

use super::*;

/// One node's state as a rumour carries it: every key above
/// `from_version`, tombstones included, in version order.
#[derive(Debug, Clone)]
pub struct NodeRumour {
    pub id: chitchat::ChitchatId,
    pub last_gc_version: u64,
    /// The version the rumour starts after: 0 for the whole state, which
    /// any peer can apply; above 0 only peers holding the node's state up
    /// to it apply it (the others get it from the gossip rounds).
    pub from_version: u64,
    /// (key, signed value, version, deletion status as chitchat sends it:
    /// 0 set, 2 deleted after a grace period)
    pub kvs: Vec<(String, String, u64, u8)>,
}

/// A chitchat Ack carrying the whole state of each node in `nodes`: what
/// gemba pushes when it has news. A peer applies it like the last message
/// of a gossip exchange (the same checks, the same signatures), and only
/// for nodes it already knows; unlike an exchange, it asks for nothing
/// back, so a push costs the news and not a copy of the peer's state.
pub fn rumour(nodes: &[NodeRumour]) -> Vec<u8> {
    let mut ops = Vec::new();
    for n in nodes {
        ops.push(OP_NODE);
        let id = n.id.node_id.as_bytes();
        ops.extend_from_slice(&(id.len() as u16).to_le_bytes());
        ops.extend_from_slice(id);
        ops.extend_from_slice(&n.id.generation_id.to_le_bytes());
        match n.id.gossip_advertise_addr {
            std::net::SocketAddr::V4(a) => {
                ops.push(4);
                ops.extend_from_slice(&a.ip().octets());
                ops.extend_from_slice(&a.port().to_le_bytes());
            }
            std::net::SocketAddr::V6(a) => {
                ops.push(6);
                ops.extend_from_slice(&a.ip().octets());
                ops.extend_from_slice(&a.port().to_le_bytes());
            }
        }
        ops.extend_from_slice(&n.last_gc_version.to_le_bytes());
        ops.extend_from_slice(&n.from_version.to_le_bytes());
        for (k, v, version, status) in &n.kvs {
            ops.push(OP_KEY_VALUE);
            ops.extend_from_slice(&(k.len() as u16).to_le_bytes());
            ops.extend_from_slice(k.as_bytes());
            ops.extend_from_slice(&(v.len() as u16).to_le_bytes());
            ops.extend_from_slice(v.as_bytes());
            ops.extend_from_slice(&version.to_le_bytes());
            ops.push(*status);
        }
    }
    let mut out = MAGIC.to_le_bytes().to_vec();
    out.push(PROTOCOL_V0);
    out.push(MSG_ACK);
    for block in ops.chunks(u16::MAX as usize) {
        out.push(BLOCK_PLAIN);
        out.extend_from_slice(&(block.len() as u16).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.push(BLOCK_END);
    out
}

/// Writes a digest holding `entries` of `message` but the `refused` ids.
pub(super) fn push_digest(
    out: &mut Vec<u8>,
    message: &[u8],
    entries: &[(&str, usize, usize)],
    refused: &HashSet<&str>,
) {
    let kept: Vec<_> = entries
        .iter()
        .filter(|(id, _, _)| !refused.contains(id))
        .collect();
    out.extend_from_slice(&(kept.len() as u16).to_le_bytes());
    for (_, start, end) in kept {
        out.extend_from_slice(&message[*start..*end]);
    }
}
