//! The time every stage decides by: wall-clock milliseconds that follow
//! tokio's clock, so that paused-time tests move it too.

use tokio::time::Instant;

/// Wall-clock ms that follows tokio's clock, so paused-time tests move it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock::starting_at(base_ms)
    }

    pub fn starting_at(base_ms: u64) -> Clock {
        Clock {
            base_ms,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
