//! The cache of values already verified, so that a value relayed by many
//! peers is verified once per node, and the CPU the checks cost.

use super::*;

/// Fingerprints of values whose signatures verified, bounded: when the
/// newer half fills, the older half is dropped. A fingerprint is SHA-256
/// over what a signature covers and the signed value itself, so a value
/// that differs in any byte (a forged payload, another signature) is
/// verified afresh.
#[derive(Default)]
pub(super) struct VerifiedValues {
    pub(super) newer: HashSet<[u8; 16]>,
    pub(super) older: HashSet<[u8; 16]>,
}

impl VerifiedValues {
    pub(super) fn fingerprint(
        node: &str,
        generation: u64,
        key: &str,
        version: u64,
        value: &str,
    ) -> [u8; 16] {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(node.as_bytes())
            .chain_update([0])
            .chain_update(generation.to_be_bytes())
            .chain_update(key.as_bytes())
            .chain_update([0])
            .chain_update(version.to_be_bytes())
            .chain_update(value.as_bytes())
            .finalize();
        digest[..16].try_into().expect("16 bytes")
    }

    pub(super) fn contains(&mut self, fp: &[u8; 16], cap: usize) -> bool {
        if self.newer.contains(fp) {
            return true;
        }
        if self.older.remove(fp) {
            self.insert(*fp, cap);
            return true;
        }
        false
    }

    pub(super) fn insert(&mut self, fp: [u8; 16], cap: usize) {
        if self.newer.len() >= cap.max(1) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(fp);
    }

    pub(super) fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }
}

/// CPU time of the calling thread, in nanoseconds.
pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok {
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    } else {
        0
    }
}
