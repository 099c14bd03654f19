//! Request pacing: a rolling window of the connection's own requests, sized by the configured
//! ceiling and by what the CRM's answers say of its limit, so that a healthy run meets
//! (almost) no 429; optionally a cap on requests in flight. Shared by every request of one
//! adapter.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest window (and pause) a pacer takes from a CRM's answer: a longer one is a broken
/// header, not a plan.
pub const LONGEST_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How often a caller looks again when every slot is taken by a request still in flight.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);

/// What one answer says of the CRM's rate-limit window (each part when it says it), read from
/// the CRM's own headers by its adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowReport {
    /// Requests the CRM allows per window.
    pub limit: Option<u64>,
    /// Requests left in the current window, counting every client of the same app.
    pub remaining: Option<u64>,
    /// The window's length.
    pub window: Option<Duration>,
}

/// Hands out request slots so that no more than the limit are sent per window.
#[derive(Debug)]
pub struct Pacer {
    ceiling: u32,
    ceiling_window: Duration,
    max_in_flight: Option<u32>,
    state: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    /// Requests allowed per window: the ceiling, or less when the CRM says so.
    limit: u32,
    window: Duration,
    in_flight: u32,
    /// When each request of the window finished. A request is charged from its end, not its
    /// start: the CRM counted it somewhere in between, so it has surely left the CRM's window
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
    /// A pacer sending at most `ceiling` requests per `window` (the configured ceiling, which
    /// the CRM's answers may lower but never raise).
    pub fn new(ceiling: u32, window: Duration) -> Self {
        Pacer {
            ceiling,
            ceiling_window: window,
            max_in_flight: None,
            state: Mutex::new(WindowState {
                limit: ceiling,
                window,
                in_flight: 0,
                finished: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    /// The same pacer, also keeping at most `max` requests in flight at once (a CRM that
    /// limits concurrent requests, as Dataverse's service protection does).
    pub fn with_max_in_flight(mut self, max: u32) -> Self {
        self.max_in_flight = Some(max.max(1));
        self
    }

    /// Waits for a free slot in the window.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let wait = self.state.lock().unwrap().try_take(Instant::now(), self);
            match wait {
                None => return Slot { pacer: self },
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Waits until the window has room for a request, without taking it.
    pub async fn wait_for_room(&self) {
        loop {
            let wait = self.state.lock().unwrap().room_after(Instant::now(), self);
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes in the CRM's view of the window from an answer: its limit and length, and
    /// requests by other clients of the same app (which `remaining` reveals).
    pub fn observe(&self, report: WindowReport) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        if let Some(window) = report.window.filter(|window| !window.is_zero()) {
            state.window = window.min(LONGEST_WINDOW);
        }
        if let Some(limit) = report.limit.filter(|limit| *limit > 0) {
            state.limit = self
                .ceiling_per(state.window)
                .min(u32::try_from(limit).unwrap_or(u32::MAX));
        }
        if let (Some(limit), Some(remaining)) = (report.limit, report.remaining) {
            state.prune(now);
            let used_by_all = limit.saturating_sub(remaining);
            let used_by_us = u64::from(state.in_flight) + state.finished.len() as u64;
            let room = u64::from(state.limit).saturating_sub(used_by_us);
            let used_by_others = used_by_all.saturating_sub(used_by_us).min(room);
            state
                .finished
                .extend(std::iter::repeat_n(now, used_by_others as usize));
        }
    }

    /// The ceiling scaled to the CRM's window, at least 1.
    fn ceiling_per(&self, window: Duration) -> u32 {
        let scaled =
            u128::from(self.ceiling) * window.as_millis() / self.ceiling_window.as_millis().max(1);
        u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
    }

    /// How full the window is: requests in flight and finished within it, over the limit.
    pub fn pressure(&self) -> f64 {
        let mut state = self.state.lock().unwrap();
        state.prune(Instant::now());
        let used = state.in_flight as usize + state.finished.len();
        (used as f64 / f64::from(state.limit.max(1))).min(1.0)
    }

    /// Holds every request back for `wait` (the CRM said the window is full), at most
    /// [`LONGEST_WINDOW`].
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait.min(LONGEST_WINDOW);
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
    fn try_take(&mut self, now: Instant, pacer: &Pacer) -> Option<Duration> {
        let wait = self.room_after(now, pacer);
        if wait.is_none() {
            self.in_flight += 1;
        }
        wait
    }

    /// `None` when a request may go now, else how long to wait before looking again.
    fn room_after(&mut self, now: Instant, pacer: &Pacer) -> Option<Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Some(until - now);
            }
            self.paused_until = None;
        }
        if pacer.max_in_flight.is_some_and(|max| self.in_flight >= max) {
            return Some(IN_FLIGHT_POLL);
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
    use super::*;

    const TEN_SECONDS: Duration = Duration::from_secs(10);

    fn report(limit: u64, remaining: u64, window_ms: u64) -> WindowReport {
        WindowReport {
            limit: Some(limit),
            remaining: Some(remaining),
            window: Some(Duration::from_millis(window_ms)),
        }
    }

    fn take(pacer: &Pacer, now: Instant) -> Option<Duration> {
        pacer.state.lock().unwrap().try_take(now, pacer)
    }

    #[test]
    fn pressure_is_the_share_of_the_window_in_use() {
        let pacer = Pacer::new(4, TEN_SECONDS);
        assert_eq!(pacer.pressure(), 0.0);
        assert!(take(&pacer, Instant::now()).is_none());
        let _ = take(&pacer, Instant::now());
        assert_eq!(pacer.pressure(), 0.5);
    }

    #[test]
    fn looking_for_room_takes_no_slot() {
        let pacer = Pacer::new(1, TEN_SECONDS);
        let now = Instant::now();
        let mut state = pacer.state.lock().unwrap();
        assert_eq!(state.room_after(now, &pacer), None);
        assert_eq!(
            state.room_after(now, &pacer),
            None,
            "looking twice still finds room"
        );
        assert_eq!(state.try_take(now, &pacer), None);
        assert!(
            state.room_after(now, &pacer).is_some(),
            "the one slot is taken"
        );
    }

    #[test]
    fn a_full_window_waits_for_the_oldest_request_to_age_out() {
        let pacer = Pacer::new(2, TEN_SECONDS);
        let now = Instant::now();
        let mut state = pacer.state.lock().unwrap();
        assert_eq!(state.try_take(now, &pacer), None);
        assert_eq!(state.try_take(now, &pacer), None);
        assert_eq!(state.try_take(now, &pacer), Some(IN_FLIGHT_POLL));
        state.in_flight = 0;
        state.finished.extend([now, now]);
        assert_eq!(state.try_take(now, &pacer), Some(TEN_SECONDS));
        assert_eq!(state.try_take(now + TEN_SECONDS, &pacer), None);
    }

    #[test]
    fn reports_lower_the_limit_and_reveal_other_clients() {
        let pacer = Pacer::new(100, TEN_SECONDS);
        pacer.observe(report(10, 4, 1_000));
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
        let pacer = Pacer::new(50, TEN_SECONDS);
        pacer.observe(report(190, 190, 10_000));
        assert_eq!(pacer.state.lock().unwrap().limit, 50);
    }

    #[test]
    fn the_ceiling_is_scaled_to_a_shorter_window() {
        let pacer = Pacer::new(100, TEN_SECONDS);
        pacer.observe(report(200, 200, 1_000));
        assert_eq!(pacer.state.lock().unwrap().limit, 10);
    }

    #[test]
    fn an_absurd_window_is_capped() {
        let pacer = Pacer::new(1, TEN_SECONDS);
        pacer.observe(WindowReport {
            limit: Some(1),
            remaining: Some(0),
            window: Some(Duration::MAX),
        });
        assert_eq!(pacer.state.lock().unwrap().window, LONGEST_WINDOW);
        assert!(take(&pacer, Instant::now()).unwrap() <= LONGEST_WINDOW);
    }

    #[test]
    fn a_pause_holds_every_request_back() {
        let pacer = Pacer::new(5, TEN_SECONDS);
        pacer.pause_for(Duration::from_secs(3));
        assert!(take(&pacer, Instant::now()).unwrap() > Duration::from_secs(2));
    }

    #[test]
    fn the_cap_on_requests_in_flight_holds_until_one_finishes() {
        let pacer = Pacer::new(100, TEN_SECONDS).with_max_in_flight(2);
        let now = Instant::now();
        assert_eq!(take(&pacer, now), None);
        assert_eq!(take(&pacer, now), None);
        assert_eq!(take(&pacer, now), Some(IN_FLIGHT_POLL));
        pacer.state.lock().unwrap().in_flight = 1;
        assert_eq!(take(&pacer, now), None);
    }
}
