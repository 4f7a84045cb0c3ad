//! The datagram decoder: raw bytes as they arrive, and signed datagrams
//! with bytes changed after signing (so the fuzzer gets past the MAC).
#![no_main]

use gemba_mesh::wire::{self, GridKey, Kind, ReplayGuard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = GridKey::new(b"fuzz-grid-key-0123456789abcdef01".to_vec()).unwrap();
    let mut guard = ReplayGuard::new(30_000, 64);
    // As received.
    if let Ok(p) = wire::open(&key, data) {
        let _ = guard.check(&p, p.unix_ms);
    }
    // Signed, then perhaps tampered with: the first byte picks the kind
    // and fragment, the second how many bytes to flip.
    if data.len() < 2 {
        return;
    }
    let kind = match data[0] % 3 {
        0 => Kind::Gossip,
        1 => Kind::ProbeRequest,
        _ => Kind::ProbeReply,
    };
    let payload = &data[2..data.len().min(2 + wire::MAX_FRAGMENT_PAYLOAD)];
    let frag = (data[0] >> 4, (data[0] >> 2) % 4);
    let mut buf = Vec::new();
    let sender = "fuzz-sender";
    let recipient = if data[0] & 1 == 0 {
        "fuzz-node"
    } else {
        wire::ANY_RECIPIENT
    };
    let header = wire::Header {
        kind,
        session: 7,
        counter: 1,
        unix_ms: 1_800_000_000_000,
        frag,
        sender,
        recipient,
    };
    wire::seal(&key, &header, payload, &mut buf);
    let flips = data[1] as usize % 4;
    for i in 0..flips {
        let at = (data[1] as usize * 31 + i * 97) % buf.len();
        buf[at] ^= 0x5a;
    }
    if let Ok(p) = wire::open(&key, &buf) {
        if flips == 0 {
            assert_eq!(p.payload, payload);
            assert_eq!((p.sender, p.recipient), (sender, recipient));
        }
        let _ = guard.check(&p, p.unix_ms);
    }
});
