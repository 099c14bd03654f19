//! The store's notion of now: milliseconds since the Unix epoch that never go backwards.
//!
//! Every time the queue holds (a not-before, a pause's end) is a time of this clock plus a
//! wait. Were it the wall clock, a step back (NTP, a VM restored from a snapshot) would leave
//! every queued edit waiting for the lost time again. So the clock reads the wall once, when
//! the process first asks, and then counts with the monotonic clock; across restarts the
//! store keeps a high-water mark the clock is raised to at open. A step forward of the wall
//! clock is not followed within a process, and after a restart it only makes waits end early,
//! so nothing is stranded either way. The price: after a backwards step, times shown to
//! operators run ahead of the wall clock until it catches up.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A monotonic clock anchored to a wall time.
pub struct Clock {
    origin: Instant,
    /// The wall time at `origin`, in ms since the epoch; only ever raised.
    offset: AtomicU64,
}

impl Clock {
    /// A clock that reads `wall_ms` now and counts on from there.
    pub fn starting_at(wall_ms: u64) -> Clock {
        Clock {
            origin: Instant::now(),
            offset: AtomicU64::new(wall_ms),
        }
    }

    pub fn now(&self) -> u64 {
        self.offset.load(Ordering::Acquire) + self.origin.elapsed().as_millis() as u64
    }

    /// Makes now at least `floor` from here on (and keeps counting from there).
    pub fn raise_to(&self, floor: u64) {
        let elapsed = self.origin.elapsed().as_millis() as u64;
        self.offset
            .fetch_max(floor.saturating_sub(elapsed), Ordering::AcqRel);
    }
}

/// The process's clock, anchored to the wall clock when first read.
pub static CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::starting_at(wall_ms()));

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_is_only_raised() {
        let clock = Clock::starting_at(1_000_000);
        let first = clock.now();
        assert!(first >= 1_000_000);
        clock.raise_to(5_000_000);
        let raised = clock.now();
        assert!(raised >= 5_000_000);
        clock.raise_to(2_000_000);
        assert!(clock.now() >= raised, "a lower floor changes nothing");
    }
}
