//! chitchat messages behind gemba's gossip guard: whatever passes the
//! guard must decode in chitchat, and nothing may panic or allocate past
//! the guard's caps.
#![no_main]

use std::sync::Arc;

use gemba_mesh::gossip_guard::{GossipGuard, GossipLimits};
use gemba_mesh::identity::Pins;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut guard = GossipGuard::new("me", GossipLimits::default(), Arc::new(Pins::default()));
    let _ = guard.check(data, 1_800_000_000_000);
    // Twice: the guard keeps state between messages.
    let _ = guard.check(data, 1_800_000_000_000);
});
