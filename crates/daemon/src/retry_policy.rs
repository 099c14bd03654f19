//! The retry delay for the n-th failed attempt: exponential with jitter.
//!
//! The only module that uses the `backoff` crate (flagged unmaintained, RUSTSEC-2025-0012), so
//! swapping it touches this file alone. Attempt counts and next-attempt times live in the
//! store, never in an in-memory retry loop.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before the attempt that follows `failed_attempts` failures (≥ 1).
    pub fn delay(&self, failed_attempts: u32) -> Duration {
        let mut schedule = ExponentialBackoff {
            initial_interval: self.initial,
            current_interval: self.initial,
            max_interval: self.max,
            multiplier: 2.0,
            randomization_factor: 0.3,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let mut delay = self.initial;
        for _ in 0..failed_attempts.clamp(1, 64) {
            delay = schedule.next_backoff().unwrap_or(self.max);
        }
        delay.min(self.max)
    }

    /// Whether an edit that has failed `failed_attempts` times may be tried again.
    pub fn allows_another(&self, failed_attempts: u32) -> bool {
        failed_attempts < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_stops_at_the_cap() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: 3,
        };
        let first = policy.delay(1);
        assert!(
            first >= Duration::from_millis(70) && first <= Duration::from_millis(130),
            "{first:?}"
        );
        let third = policy.delay(3);
        assert!(
            third >= Duration::from_millis(280) && third <= Duration::from_millis(520),
            "{third:?}"
        );
        let capped = policy.delay(40);
        assert!(
            capped >= Duration::from_millis(1400) && capped <= Duration::from_secs(2),
            "{capped:?}"
        );
        assert!(policy.allows_another(2));
        assert!(!policy.allows_another(3));
    }
}
