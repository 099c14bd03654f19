use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A misbehaviour a fake CRM can be told to show. Each fake answers it in its CRM's own
/// shape (status, headers, error body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A 5xx answer with this status.
    ServerError(u16),
    /// The CRM's short-window rate limit (HubSpot `TEN_SECONDLY_ROLLING`), with `Retry-After`
    /// seconds when `Some`.
    RateLimited { retry_after_secs: Option<u64> },
    /// The CRM's daily budget is spent (HubSpot `DAILY`, Salesforce `REQUEST_LIMIT_EXCEEDED`).
    DailyLimit,
    /// The access token is refused (expired session).
    Unauthorized,
    /// The record is locked (HubSpot 423, Salesforce `UNABLE_TO_LOCK_ROW`): retry later.
    Locked,
    /// The app may no longer make the call: HubSpot 403 `MISSING_SCOPES`, Salesforce 403
    /// `API_DISABLED_FOR_ORG`. Refreshing credentials does not help.
    AccessRevoked,
    /// The URL names no resource (wrong base URL, retired API version): HubSpot a bare 404,
    /// Salesforce 404 `NOT_FOUND` for the URI. Says nothing about any record.
    EndpointNotFound,
}

/// Fault switches shared by a fake and the test that drives it. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    scripted: VecDeque<Fault>,
    standing: Option<Fault>,
    error_rate: f64,
    latency: Duration,
}

impl Faults {
    /// The next `times` write or read requests (not token requests) answer with `fault`,
    /// after any faults already scripted.
    pub fn fail_next(&self, times: usize, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        state.scripted.extend(std::iter::repeat_n(fault, times));
    }

    /// Every write or read request answers with `fault` until [`Faults::clear_standing`]
    /// (after any scripted faults): a condition of the account, such as revoked scopes.
    pub fn set_standing(&self, fault: Fault) {
        self.state.lock().unwrap().standing = Some(fault);
    }

    /// Ends the standing fault: the account is as it should be again.
    pub fn clear_standing(&self) {
        self.state.lock().unwrap().standing = None;
    }

    /// Every request answers 503 with this probability (0.0 to 1.0).
    pub fn set_error_rate(&self, rate: f64) {
        self.state.lock().unwrap().error_rate = rate.clamp(0.0, 1.0);
    }

    /// Every request is delayed by this much before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub fn latency(&self) -> Duration {
        self.state.lock().unwrap().latency
    }

    /// Clears every switch.
    pub fn reset(&self) {
        *self.state.lock().unwrap() = FaultState::default();
    }

    /// The fault the current request must show, if any: a scripted one first, then the
    /// standing one, then a random 503 at the error rate.
    pub fn take(&self) -> Option<Fault> {
        let mut state = self.state.lock().unwrap();
        if let Some(fault) = state.scripted.pop_front() {
            return Some(fault);
        }
        if let Some(fault) = &state.standing {
            return Some(fault.clone());
        }
        (state.error_rate > 0.0 && rand::random::<f64>() < state.error_rate)
            .then_some(Fault::ServerError(503))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_faults_come_in_order_then_stop() {
        let faults = Faults::default();
        faults.fail_next(2, Fault::ServerError(502));
        faults.fail_next(1, Fault::Locked);
        assert_eq!(faults.take(), Some(Fault::ServerError(502)));
        assert_eq!(faults.take(), Some(Fault::ServerError(502)));
        assert_eq!(faults.take(), Some(Fault::Locked));
        assert_eq!(faults.take(), None);
    }

    #[test]
    fn a_standing_fault_stays_until_cleared_and_yields_to_scripted_ones() {
        let faults = Faults::default();
        faults.set_standing(Fault::AccessRevoked);
        faults.fail_next(1, Fault::Locked);
        assert_eq!(faults.take(), Some(Fault::Locked));
        assert_eq!(faults.take(), Some(Fault::AccessRevoked));
        assert_eq!(faults.take(), Some(Fault::AccessRevoked));
        faults.clear_standing();
        assert_eq!(faults.take(), None);
    }

    #[test]
    fn error_rate_one_always_fails() {
        let faults = Faults::default();
        faults.set_error_rate(1.0);
        assert_eq!(faults.take(), Some(Fault::ServerError(503)));
        faults.reset();
        assert_eq!(faults.take(), None);
    }
}
