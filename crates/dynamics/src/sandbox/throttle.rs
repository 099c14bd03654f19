//! Dataverse's service protection limits, per user: requests and combined execution time in
//! a 5-minute sliding window, and concurrent requests.
//!
//! A request over a window limit is answered 429 with `Retry-After` (seconds until the window
//! has room again). Refused requests count in the window too, so a client that keeps sending
//! while throttled stays throttled longer, as Dataverse extends the wait for such clients.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::org::{Refusal, codes};

/// The limits, per user (Dataverse's defaults per web server: 6,000 requests and 1,200
/// seconds of execution time in 300 seconds, 52 concurrent requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceProtection {
    pub window: Duration,
    pub max_requests: usize,
    pub max_execution_time: Duration,
    pub max_concurrent: usize,
}

impl Default for ServiceProtection {
    fn default() -> Self {
        ServiceProtection {
            window: Duration::from_secs(300),
            max_requests: 6000,
            max_execution_time: Duration::from_secs(1200),
            max_concurrent: 52,
        }
    }
}

/// A refusal by a limit: the error and the wait to announce.
#[derive(Debug)]
pub struct Throttled {
    pub refusal: Refusal,
    pub retry_after: Duration,
}

/// The window's requests and their execution times, and the requests being served.
#[derive(Default)]
pub struct Throttle {
    pub limits: ServiceProtection,
    /// When each request in the window arrived.
    arrivals: VecDeque<Instant>,
    /// When each request in the window finished, and how long it ran.
    executions: VecDeque<(Instant, Duration)>,
    in_flight: usize,
    /// Requests refused by a limit.
    pub throttled: u64,
}

impl Throttle {
    /// Admits a request arriving `now`, or says which limit refuses it. An admitted request
    /// must be [`finish`](Self::finish)ed.
    pub fn admit(&mut self, now: Instant) -> Result<(), Throttled> {
        let window = self.limits.window;
        while self
            .arrivals
            .front()
            .is_some_and(|at| now.duration_since(*at) >= window)
        {
            self.arrivals.pop_front();
        }
        while self
            .executions
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= window)
        {
            self.executions.pop_front();
        }
        self.arrivals.push_back(now);
        let refused = if self.in_flight >= self.limits.max_concurrent {
            Some(Throttled {
                refusal: Refusal::new(
                    429,
                    codes::CONCURRENT_REQUESTS,
                    format!(
                        "Number of concurrent requests exceeded the limit of {}.",
                        self.limits.max_concurrent
                    ),
                ),
                retry_after: Duration::from_secs(1),
            })
        } else if self.arrivals.len() > self.limits.max_requests {
            // Room again once enough of the oldest arrivals leave the window.
            let excess = self.arrivals.len() - self.limits.max_requests;
            let frees_at = self.arrivals[excess - 1] + window;
            Some(Throttled {
                refusal: Refusal::new(
                    429,
                    codes::TOO_MANY_REQUESTS,
                    format!(
                        "Number of requests exceeded the limit of {} over time window of {} seconds.",
                        self.limits.max_requests,
                        window.as_secs()
                    ),
                ),
                retry_after: frees_at.saturating_duration_since(now),
            })
        } else {
            let used: Duration = self.executions.iter().map(|(_, ran)| *ran).sum();
            (used > self.limits.max_execution_time).then(|| {
                let mut over = used - self.limits.max_execution_time;
                let mut frees_at = now;
                for (at, ran) in &self.executions {
                    frees_at = *at + window;
                    if *ran >= over {
                        break;
                    }
                    over -= *ran;
                }
                Throttled {
                    refusal: Refusal::new(
                        429,
                        codes::EXECUTION_TIME,
                        format!(
                            "Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of {} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                            self.limits.max_execution_time.as_millis(),
                            window.as_secs()
                        ),
                    ),
                    retry_after: frees_at.saturating_duration_since(now),
                }
            })
        };
        match refused {
            Some(throttled) => {
                self.throttled += 1;
                Err(throttled)
            }
            None => {
                self.in_flight += 1;
                Ok(())
            }
        }
    }

    /// An admitted request finished at `now` after running `ran`.
    pub fn finish(&mut self, now: Instant, ran: Duration) {
        self.in_flight -= 1;
        self.executions.push_back((now, ran));
    }
}

/// `Retry-After` in whole seconds, rounded up so that a client waiting it finds room.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_requests: usize, max_concurrent: usize, exec_secs: u64) -> Throttle {
        Throttle {
            limits: ServiceProtection {
                window: Duration::from_secs(300),
                max_requests,
                max_execution_time: Duration::from_secs(exec_secs),
                max_concurrent,
            },
            ..Throttle::default()
        }
    }

    #[test]
    fn requests_over_the_window_wait_until_the_oldest_leaves_it() {
        let mut throttle = throttle(2, 10, 1000);
        let start = Instant::now();
        for n in 0..2 {
            throttle.admit(start + Duration::from_secs(n)).unwrap();
            throttle.finish(start + Duration::from_secs(n), Duration::ZERO);
        }
        let refused = throttle
            .admit(start + Duration::from_secs(10))
            .err()
            .unwrap();
        assert_eq!(refused.refusal.code, codes::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Duration::from_secs(290));
        // Sending on while throttled keeps the window full: the refused requests count.
        assert!(throttle.admit(start + Duration::from_secs(100)).is_err());
        assert!(throttle.admit(start + Duration::from_secs(305)).is_err());
        assert!(throttle.admit(start + Duration::from_secs(700)).is_ok());
    }

    #[test]
    fn concurrency_and_execution_time_are_limited() {
        let mut throttle = throttle(100, 1, 5);
        let start = Instant::now();
        throttle.admit(start).unwrap();
        let busy = throttle.admit(start).err().unwrap();
        assert_eq!(busy.refusal.code, codes::CONCURRENT_REQUESTS);
        throttle.finish(start, Duration::from_secs(6));
        let slow = throttle
            .admit(start + Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(slow.refusal.code, codes::EXECUTION_TIME);
        assert_eq!(slow.retry_after, Duration::from_secs(299));
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }
}
