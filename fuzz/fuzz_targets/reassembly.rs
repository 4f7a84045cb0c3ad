//! Fragment reassembly: any sequence of fragments from a few senders.
#![no_main]

use gemba_mesh::endpoint::Reassembly;
use gemba_mesh::wire::{Kind, Packet, MAX_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembly::default();
    let now = tokio::time::Instant::now();
    // Each fragment: sender, session, counter (2 bytes), index, count,
    // payload length, payload.
    let mut rest = data;
    while rest.len() >= 7 {
        let (head, tail) = rest.split_at(7);
        let len = (head[6] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let from = std::net::SocketAddr::from(([127, 0, 0, head[0] % 4], 7946));
        let p = Packet {
            kind: Kind::Gossip,
            session: head[1] as u64 % 3,
            counter: u16::from_le_bytes([head[2], head[3]]) as u64,
            unix_ms: 0,
            frag_index: head[4],
            frag_count: head[5],
            sender: "fuzz-sender",
            recipient: "fuzz-node",
            payload,
        };
        if let Some(message) = r.add(from, &p, now) {
            assert!(message.len() <= MAX_MESSAGE);
        }
    }
});
