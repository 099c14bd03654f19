//! What a connection spent and achieved over the last minutes, in per-second buckets, so
//! that `/metrics` can tell API calls per landed edit and how fast a queue drains, at a cost
//! that does not grow with the traffic.

use std::sync::Mutex;
use std::time::Instant;

/// How far back the figures look.
pub const WINDOW_SECS: u64 = 300;

/// Calls to the CRM and edits landed, second by second, over the last [`WINDOW_SECS`].
#[derive(Debug)]
pub struct RecentTraffic {
    started: Instant,
    buckets: Mutex<Vec<Bucket>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// The second since `started` this bucket counts; another second reuses it.
    second: u64,
    calls: u64,
    landed: u64,
}

/// The window's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub calls: u64,
    pub landed: u64,
    /// The seconds the window covers (less than [`WINDOW_SECS`] just after start).
    pub seconds: u64,
}

impl Default for RecentTraffic {
    fn default() -> Self {
        RecentTraffic {
            started: Instant::now(),
            buckets: Mutex::new(vec![Bucket::default(); WINDOW_SECS as usize]),
        }
    }
}

impl RecentTraffic {
    /// One call to the CRM (a batch write, a read, a bulk job's start).
    pub fn call(&self) {
        self.count(|bucket| bucket.calls += 1);
    }

    /// One edit the CRM confirmed.
    pub fn landed(&self) {
        self.count(|bucket| bucket.landed += 1);
    }

    fn count(&self, add: impl FnOnce(&mut Bucket)) {
        let second = self.started.elapsed().as_secs();
        let mut buckets = self.buckets.lock().unwrap();
        let bucket = &mut buckets[(second % WINDOW_SECS) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::default()
            };
        }
        add(bucket);
    }

    /// The calls and landings of the last [`WINDOW_SECS`] seconds.
    pub fn totals(&self) -> Totals {
        let now = self.started.elapsed().as_secs();
        let buckets = self.buckets.lock().unwrap();
        let recent = buckets
            .iter()
            .filter(|bucket| now - bucket.second.min(now) < WINDOW_SECS);
        let (calls, landed) = recent.fold((0, 0), |(calls, landed), bucket| {
            (calls + bucket.calls, landed + bucket.landed)
        });
        Totals {
            calls,
            landed,
            seconds: (now + 1).min(WINDOW_SECS),
        }
    }
}

impl Totals {
    /// Calls per landed edit; `None` before anything landed.
    pub fn calls_per_landed(&self) -> Option<f64> {
        (self.landed > 0).then(|| self.calls as f64 / self.landed as f64)
    }

    /// How long `queued` edits take to land at the window's pace; `None` while nothing lands.
    pub fn seconds_to_drain(&self, queued: u64) -> Option<f64> {
        (self.landed > 0).then(|| queued as f64 * self.seconds as f64 / self.landed as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_landings_add_up_within_the_window() {
        let traffic = RecentTraffic::default();
        assert_eq!(traffic.totals().calls_per_landed(), None);
        for _ in 0..3 {
            traffic.call();
        }
        for _ in 0..300 {
            traffic.landed();
        }
        let totals = traffic.totals();
        assert_eq!((totals.calls, totals.landed), (3, 300));
        assert_eq!(totals.calls_per_landed(), Some(0.01));
        assert_eq!(
            totals.seconds_to_drain(600),
            Some(2.0 * totals.seconds as f64)
        );
        assert_eq!(Totals::default().seconds_to_drain(10), None);
    }
}
