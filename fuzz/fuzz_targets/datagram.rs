//! The datagram decoder: raw bytes as they arrive, and signed datagrams
//! with bytes changed after signing (so the fuzzer gets past the MAC).
#![no_main]

use gemba_mesh::wire::{self, GridKey, Kind, ReplayGuard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = GridKey::new(b"fuzz-grid-key-0123456789abcdef01".to_vec()).unwrap();
    let from = "127.0.0.1:7946".parse().unwrap();
    let mut guard = ReplayGuard::new(30_000, 64);
    // As received.
    if let Ok(p) = wire::open(&key, data) {
        let _ = guard.check(from, &p, p.unix_ms);
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
    wire::seal(&key, kind, 7, 1, 1_800_000_000_000, frag, payload, &mut buf);
    let flips = data[1] as usize % 4;
    for i in 0..flips {
        let at = (data[1] as usize * 31 + i * 97) % buf.len();
        buf[at] ^= 0x5a;
    }
    if let Ok(p) = wire::open(&key, &buf) {
        assert_eq!(p.payload.len(), payload.len());
        let _ = guard.check(from, &p, p.unix_ms);
    }
});
