//! Request pacing: a rolling window of the connection's own requests, sized by HubSpot's
//! `X-HubSpot-RateLimit-*` headers under the configured ceiling, so a healthy run meets
//! (almost) no 429. Shared by every push of one adapter.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use crate::error::{MAX_RATE_LIMIT_WAIT, TEN_SECOND_WINDOW};

/// How often a caller looks again when every slot is taken by a request still in flight.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);

/// Hands out request slots so that no more than the limit are sent per window.
#[derive(Debug)]
pub struct Pacer {
    ceiling: u32,
    state: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    /// Requests allowed per window: the ceiling, or less when HubSpot's headers say so.
    limit: u32,
    window: Duration,
    in_flight: u32,
    /// When each request of the window finished. A request is charged from its end, not its
    /// start: HubSpot counted it somewhere in between, so it has surely left HubSpot's window
    /// one window after it finished.
    finished: VecDeque<Instant>,
    /// No request before this (after a 429).
    paused_until: Option<Instant>,
}

/// A request's place in the window; dropping it marks the request finished.
#[derive(Debug)]
pub struct Slot<'a> {
    pacer: &'a Pacer,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.pacer.state.lock().unwrap();
        state.in_flight -= 1;
        state.finished.push_back(Instant::now());
    }
}

impl Pacer {
    /// A pacer sending at most `ceiling` requests per ten seconds.
    pub fn new(ceiling: u32) -> Self {
        Pacer {
            ceiling,
            state: Mutex::new(WindowState {
                limit: ceiling,
                window: TEN_SECOND_WINDOW,
                in_flight: 0,
                finished: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    /// Waits for a free slot in the window.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let wait = self.state.lock().unwrap().try_take(Instant::now());
            match wait {
                None => return Slot { pacer: self },
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Waits until the window has room for a request, without taking it.
    pub async fn wait_for_room(&self) {
        loop {
            let wait = self.state.lock().unwrap().room_after(Instant::now());
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes in HubSpot's view of the window from an answer's headers: its limit and
    /// interval, and requests by other clients of the same app (which `Remaining` reveals).
    pub fn observe(&self, headers: &HeaderMap) {
        let number = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.parse().ok() };
        let max = number("x-hubspot-ratelimit-max");
        let remaining = number("x-hubspot-ratelimit-remaining");
        let interval = number("x-hubspot-ratelimit-interval-milliseconds");
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        if let Some(interval) = interval.filter(|millis| *millis > 0) {
            // A window longer than any wait HubSpot may impose is a broken header.
            state.window = Duration::from_millis(interval).min(MAX_RATE_LIMIT_WAIT);
        }
        if let Some(max) = max.filter(|max| *max > 0) {
            state.limit = self
                .ceiling_per(state.window)
                .min(u32::try_from(max).unwrap_or(u32::MAX));
        }
        if let (Some(max), Some(remaining)) = (max, remaining) {
            state.prune(now);
            let used_by_all = max.saturating_sub(remaining);
            let used_by_us = u64::from(state.in_flight) + state.finished.len() as u64;
            let room = u64::from(state.limit).saturating_sub(used_by_us);
            let used_by_others = used_by_all.saturating_sub(used_by_us).min(room);
            state
                .finished
                .extend(std::iter::repeat_n(now, used_by_others as usize));
        }
    }

    /// The ceiling (given per ten seconds) scaled to HubSpot's window, at least 1.
    fn ceiling_per(&self, window: Duration) -> u32 {
        let scaled = u128::from(self.ceiling) * window.as_millis() / TEN_SECOND_WINDOW.as_millis();
        u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
    }

    /// How full the window is: requests in flight and finished within it, over the limit.
    pub fn pressure(&self) -> f64 {
        let mut state = self.state.lock().unwrap();
        state.prune(Instant::now());
        let used = state.in_flight as usize + state.finished.len();
        (used as f64 / f64::from(state.limit.max(1))).min(1.0)
    }

    /// Holds every request back for `wait` (HubSpot said the window is full).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.state.lock().unwrap();
        state.paused_until = Some(state.paused_until.map_or(until, |paused| paused.max(until)));
    }
}

impl WindowState {
    fn prune(&mut self, now: Instant) {
        while self
            .finished
            .front()
            .is_some_and(|finished| *finished + self.window <= now)
        {
            self.finished.pop_front();
        }
    }

    /// Takes a slot (`None`), or says how long to wait before trying again.
    fn try_take(&mut self, now: Instant) -> Option<Duration> {
        let wait = self.room_after(now);
        if wait.is_none() {
            self.in_flight += 1;
        }
        wait
    }

    /// `None` when a request may go now, else how long to wait before looking again.
    fn room_after(&mut self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Some(until - now);
            }
            self.paused_until = None;
        }
        self.prune(now);
        if (self.in_flight as usize + self.finished.len()) < self.limit as usize {
            return None;
        }
        Some(match self.finished.front() {
            Some(oldest) => (*oldest + self.window).saturating_duration_since(now),
            None => IN_FLIGHT_POLL,
        })
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(max: u64, remaining: u64, interval_ms: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-hubspot-ratelimit-max", max),
            ("x-hubspot-ratelimit-remaining", remaining),
            ("x-hubspot-ratelimit-interval-milliseconds", interval_ms),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
        headers
    }

    #[test]
    fn pressure_is_the_share_of_the_window_in_use() {
        let pacer = Pacer::new(4);
        assert_eq!(pacer.pressure(), 0.0);
        let first = pacer.state.lock().unwrap().try_take(Instant::now());
        assert!(first.is_none());
        let _ = pacer.state.lock().unwrap().try_take(Instant::now());
        assert_eq!(pacer.pressure(), 0.5);
    }

    #[test]
    fn looking_for_room_takes_no_slot() {
        let pacer = Pacer::new(1);
        let now = Instant::now();
        let mut state = pacer.state.lock().unwrap();
        assert_eq!(state.room_after(now), None);
        assert_eq!(
            state.room_after(now),
            None,
            "looking twice still finds room"
        );
        assert_eq!(state.try_take(now), None);
        assert!(state.room_after(now).is_some(), "the one slot is taken");
    }

    #[test]
    fn a_full_window_waits_for_the_oldest_request_to_age_out() {
        let pacer = Pacer::new(2);
        let now = Instant::now();
        let mut state = pacer.state.lock().unwrap();
        assert_eq!(state.try_take(now), None);
        assert_eq!(state.try_take(now), None);
        assert_eq!(state.try_take(now), Some(IN_FLIGHT_POLL));
        state.in_flight = 0;
        state.finished.extend([now, now]);
        assert_eq!(state.try_take(now), Some(TEN_SECOND_WINDOW));
        assert_eq!(state.try_take(now + TEN_SECOND_WINDOW), None);
    }

    #[test]
    fn headers_lower_the_limit_and_reveal_other_clients() {
        let pacer = Pacer::new(100);
        pacer.observe(&headers(10, 4, 1_000));
        let state = pacer.state.lock().unwrap();
        assert_eq!(state.limit, 10);
        assert_eq!(state.window, Duration::from_secs(1));
        assert_eq!(
            state.finished.len(),
            6,
            "six requests of others fill the window"
        );
    }

    #[test]
    fn the_ceiling_wins_over_a_larger_tier() {
        let pacer = Pacer::new(50);
        pacer.observe(&headers(190, 190, 10_000));
        assert_eq!(pacer.state.lock().unwrap().limit, 50);
    }

    #[test]
    fn the_ceiling_is_scaled_to_a_shorter_window() {
        let pacer = Pacer::new(100);
        pacer.observe(&headers(200, 200, 1_000));
        assert_eq!(pacer.state.lock().unwrap().limit, 10);
    }

    #[test]
    fn an_absurd_interval_header_is_capped() {
        let pacer = Pacer::new(1);
        pacer.observe(&headers(1, 0, u64::MAX));
        let mut state = pacer.state.lock().unwrap();
        assert_eq!(state.window, MAX_RATE_LIMIT_WAIT);
        assert!(state.try_take(Instant::now()).unwrap() <= MAX_RATE_LIMIT_WAIT);
    }

    #[test]
    fn a_pause_holds_every_request_back() {
        let pacer = Pacer::new(5);
        pacer.pause_for(Duration::from_secs(3));
        let wait = pacer
            .state
            .lock()
            .unwrap()
            .try_take(Instant::now())
            .unwrap();
        assert!(wait > Duration::from_secs(2));
    }
}
