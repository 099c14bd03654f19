//! When HubSpot's daily limit resets: at midnight in the account's time zone (an account
//! setting), which the connection is given (`daily_reset_tz`) or reads once from the account
//! details API (`GET /account-info/v3/details`, field `timeZone`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// How long after a failed account details call the zone is asked for again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(15 * 60);
/// Every time zone's UTC offset is a whole number of quarter hours, so when the account's zone
/// is unknown the next quarter hour is the earliest the daily limit can reset.
const QUARTER_HOUR_SECS: i64 = 15 * 60;

/// The account's time zone, configured or learned; shared by every request of a connection.
#[derive(Debug)]
pub struct AccountZone {
    state: Mutex<ZoneState>,
}

#[derive(Debug)]
enum ZoneState {
    Known(TimeZone),
    /// Not known yet: ask HubSpot, but not before `ask_at`.
    Unknown {
        ask_at: Instant,
    },
    /// One request is asking HubSpot now.
    Asking,
}

impl AccountZone {
    /// A zone given in config: HubSpot is never asked.
    pub fn configured(zone: TimeZone) -> Self {
        AccountZone {
            state: Mutex::new(ZoneState::Known(zone)),
        }
    }

    /// A zone to ask HubSpot for, at the connection's first request.
    pub fn to_learn() -> Self {
        AccountZone {
            state: Mutex::new(ZoneState::Unknown {
                ask_at: Instant::now(),
            }),
        }
    }

    /// The zone, when known.
    pub fn get(&self) -> Option<TimeZone> {
        match &*self.state.lock().unwrap() {
            ZoneState::Known(zone) => Some(zone.clone()),
            _ => None,
        }
    }

    /// Whether the caller should ask HubSpot for the zone now; true for one caller at a time,
    /// which must then report with [`AccountZone::learned`].
    pub fn claim_question(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        match *state {
            ZoneState::Unknown { ask_at } if Instant::now() >= ask_at => {
                *state = ZoneState::Asking;
                true
            }
            _ => false,
        }
    }

    /// What the account details call taught: the zone, or nothing (asked again later).
    pub fn learned(&self, zone: Option<TimeZone>) {
        *self.state.lock().unwrap() = match zone {
            Some(zone) => ZoneState::Known(zone),
            None => ZoneState::Unknown {
                ask_at: Instant::now() + ASK_AGAIN_AFTER,
            },
        };
    }
}

/// The wait from `now` until HubSpot's daily limit resets: the next midnight in `zone`, or,
/// with no zone, the next quarter hour (never past the real reset, wherever the account is).
pub fn until_daily_reset(now: Timestamp, zone: Option<&TimeZone>) -> Duration {
    let next_midnight = zone.and_then(|zone| {
        now.to_zoned_datetime(zone.clone())
            .tomorrow()
            .and_then(|tomorrow| tomorrow.start_of_day())
            .ok()
    });
    let reset = match next_midnight {
        Some(midnight) => midnight.timestamp(),
        None => {
            let next = (now.as_second().div_euclid(QUARTER_HOUR_SECS) + 1) * QUARTER_HOUR_SECS;
            Timestamp::from_second(next).unwrap_or(now)
        }
    };
    Duration::try_from(now.duration_until(reset)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(instant: &str) -> Timestamp {
        instant.parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn the_reset_is_the_next_midnight_in_the_accounts_zone() {
        // 20:00 in New York (EST, UTC-5) is 01:00 UTC: the reset is four hours away, not 23.
        let evening = at("2026-01-15T01:00:00Z");
        assert_eq!(
            until_daily_reset(evening, Some(&zone("US/Eastern"))),
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(
            until_daily_reset(evening, Some(&zone("UTC"))),
            Duration::from_secs(23 * 3600)
        );
        // India is UTC+5:30: 01:00 UTC is 06:30 there.
        assert_eq!(
            until_daily_reset(evening, Some(&zone("Asia/Kolkata"))),
            Duration::from_secs(17 * 3600 + 1800)
        );
    }

    #[test]
    fn a_day_shortened_by_daylight_saving_is_counted_in_real_hours() {
        // 2026-03-08 is 23 hours long in New York: from 00:30 EST the reset is 22.5 h away.
        let after_midnight = at("2026-03-08T05:30:00Z");
        assert_eq!(
            until_daily_reset(after_midnight, Some(&zone("America/New_York"))),
            Duration::from_secs(22 * 3600 + 1800)
        );
    }

    #[test]
    fn an_unknown_zone_waits_for_the_next_quarter_hour() {
        assert_eq!(
            until_daily_reset(at("2026-01-15T01:07:30Z"), None),
            Duration::from_secs(7 * 60 + 30)
        );
        assert_eq!(
            until_daily_reset(at("2026-01-15T01:15:00Z"), None),
            Duration::from_secs(15 * 60)
        );
    }

    #[test]
    fn one_caller_asks_and_a_failure_waits_before_asking_again() {
        let zone = AccountZone::to_learn();
        assert!(zone.claim_question());
        assert!(!zone.claim_question(), "one question at a time");
        zone.learned(None);
        assert!(!zone.claim_question(), "not again right away");
        assert_eq!(zone.get(), None);
        let learned = AccountZone::to_learn();
        assert!(learned.claim_question());
        learned.learned(Some(TimeZone::UTC));
        assert_eq!(learned.get(), Some(TimeZone::UTC));
        assert!(!learned.claim_question());
        assert!(!AccountZone::configured(TimeZone::UTC).claim_question());
    }
}
