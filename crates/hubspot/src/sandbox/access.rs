//! Who may call the fake HubSpot and how often: the static private-app token, OAuth tokens
//! issued by `/oauth/v1/token`, the rolling ten-second window and the daily budget, which
//! resets at midnight in the account's time zone.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// How long an OAuth access token lives unless a test says otherwise (HubSpot's 30 minutes).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(1800);
/// The account's time zone unless a test says otherwise: a portal's zone is its owner's, and
/// seldom UTC (the name is the one HubSpot's own documentation shows).
pub(super) const DEFAULT_TIME_ZONE: &str = "US/Eastern";

/// Why a bearer token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TokenRefusal {
    Missing,
    Unknown,
    Expired { seconds_ago: u64 },
}

/// Why a token request was refused, in HubSpot's OAuth error terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct GrantRefusal {
    pub status: &'static str,
    pub message: &'static str,
}

/// A freshly issued OAuth token pair.
#[derive(Clone, Debug)]
pub(super) struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_secs: u64,
}

/// The tokens the fake accepts.
#[derive(Debug)]
pub(super) struct Tokens {
    pub static_token: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// Whether each refresh hands out a new refresh token and kills the old one.
    pub rotate_refresh_tokens: bool,
    pub lifetime: Duration,
    issued: HashMap<String, Instant>,
    issued_count: u64,
    pub refreshes: u64,
    pub overlapping_refreshes: u64,
    refreshes_in_progress: usize,
}

impl Tokens {
    pub(super) fn new(portal_tag: &str) -> Self {
        Tokens {
            static_token: format!("pat-na1-{portal_tag}-sandbox"),
            client_id: format!("sandbox-client-{portal_tag}"),
            client_secret: format!("sandbox-secret-{portal_tag}"),
            refresh_token: format!("na1-refresh-{portal_tag}-0"),
            rotate_refresh_tokens: false,
            lifetime: DEFAULT_TOKEN_LIFETIME,
            issued: HashMap::new(),
            issued_count: 0,
            refreshes: 0,
            overlapping_refreshes: 0,
            refreshes_in_progress: 0,
        }
    }

    /// Checks an `Authorization` header's value.
    pub(super) fn check(&self, authorization: Option<&str>) -> Result<(), TokenRefusal> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(TokenRefusal::Missing)?;
        if token == self.static_token {
            return Ok(());
        }
        let expires_at = self.issued.get(token).ok_or(TokenRefusal::Unknown)?;
        let now = Instant::now();
        if now < *expires_at {
            Ok(())
        } else {
            Err(TokenRefusal::Expired {
                seconds_ago: now.duration_since(*expires_at).as_secs(),
            })
        }
    }

    /// Marks a refresh as started; counts it as overlapping when another is still running.
    pub(super) fn begin_refresh(&mut self) {
        if self.refreshes_in_progress > 0 {
            self.overlapping_refreshes += 1;
        }
        self.refreshes_in_progress += 1;
    }

    pub(super) fn end_refresh(&mut self) {
        self.refreshes_in_progress -= 1;
    }

    /// Answers a `refresh_token` grant.
    pub(super) fn refresh(
        &mut self,
        form: &HashMap<String, String>,
    ) -> Result<IssuedTokens, GrantRefusal> {
        let field = |name: &str| form.get(name).map(String::as_str);
        if field("grant_type") != Some("refresh_token") {
            return Err(GrantRefusal {
                status: "UNSUPPORTED_GRANT_TYPE",
                message: "grant_type must be refresh_token",
            });
        }
        if field("client_id") != Some(self.client_id.as_str()) {
            return Err(GrantRefusal {
                status: "BAD_CLIENT_ID",
                message: "missing or unknown client id",
            });
        }
        if field("client_secret") != Some(self.client_secret.as_str()) {
            return Err(GrantRefusal {
                status: "BAD_CLIENT_SECRET",
                message: "missing or invalid client secret",
            });
        }
        if field("refresh_token") != Some(self.refresh_token.as_str()) {
            return Err(GrantRefusal {
                status: "BAD_REFRESH_TOKEN",
                message: "missing or unknown refresh token",
            });
        }
        self.refreshes += 1;
        self.issued_count += 1;
        if self.rotate_refresh_tokens {
            let (stem, _) = self.refresh_token.rsplit_once('-').expect("our own format");
            self.refresh_token = format!("{stem}-{}", self.issued_count);
        }
        let access_token = format!("sandbox-access-{}-{}", self.client_id, self.issued_count);
        self.issued
            .insert(access_token.clone(), Instant::now() + self.lifetime);
        Ok(IssuedTokens {
            access_token,
            refresh_token: self.refresh_token.clone(),
            expires_in_secs: self.lifetime.as_secs().max(1),
        })
    }
}

/// The `X-HubSpot-RateLimit-*` values of one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LimitHeaders {
    /// (max, remaining, interval) of the rolling window.
    pub window: Option<(u64, u64, Duration)>,
    /// (daily limit, remaining today).
    pub daily: Option<(u64, u64)>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LimitHit {
    TenSecondly,
    Daily,
}

/// The account's time zone, as HubSpot names it.
#[derive(Clone, Debug)]
pub(super) struct AccountTimeZone {
    pub name: String,
    pub zone: TimeZone,
}

impl AccountTimeZone {
    /// The zone named `name` (an IANA name), or `None` when there is no such zone.
    pub(super) fn named(name: &str) -> Option<Self> {
        Some(AccountTimeZone {
            name: name.to_string(),
            zone: TimeZone::get(name).ok()?,
        })
    }

    fn date_at(&self, now: Timestamp) -> Date {
        self.zone.to_datetime(now).date()
    }
}

/// The rolling window and the daily budget; both off until a test sets them.
#[derive(Debug)]
pub(super) struct RateLimits {
    window: Option<RollingWindow>,
    daily: Option<DailyBudget>,
    time_zone: AccountTimeZone,
}

#[derive(Debug)]
struct RollingWindow {
    max: u64,
    interval: Duration,
    admitted: VecDeque<Instant>,
}

#[derive(Debug)]
struct DailyBudget {
    limit: u64,
    used: u64,
    /// The account's day that `used` counts.
    day: Date,
}

impl RateLimits {
    pub(super) fn new() -> Self {
        RateLimits {
            window: None,
            daily: None,
            time_zone: AccountTimeZone::named(DEFAULT_TIME_ZONE)
                .expect("the default zone is in the bundled database"),
        }
    }

    pub(super) fn set_window(&mut self, limit: Option<(u64, Duration)>) {
        self.window = limit.map(|(max, interval)| RollingWindow {
            max,
            interval,
            admitted: VecDeque::new(),
        });
    }

    /// Sets the daily budget; requests already made today keep counting.
    pub(super) fn set_daily(&mut self, limit: Option<u64>) {
        let today = self.time_zone.date_at(Timestamp::now());
        let used = self
            .daily
            .as_ref()
            .filter(|daily| daily.day == today)
            .map_or(0, |daily| daily.used);
        self.daily = limit.map(|limit| DailyBudget {
            limit,
            used,
            day: today,
        });
    }

    pub(super) fn time_zone(&self) -> &AccountTimeZone {
        &self.time_zone
    }

    /// Moves the account to another time zone; the daily budget counts on in the new zone's
    /// day.
    pub(super) fn set_time_zone(&mut self, time_zone: AccountTimeZone) {
        self.time_zone = time_zone;
    }

    /// Counts a request against the limits, or says which one refuses it. The headers
    /// describe the state after this request either way.
    pub(super) fn admit(&mut self) -> (LimitHeaders, Result<(), LimitHit>) {
        self.admit_at(Instant::now(), Timestamp::now())
    }

    /// [`RateLimits::admit`] at a given moment: `now` for the window, `wall_clock` for the
    /// account's day.
    fn admit_at(
        &mut self,
        now: Instant,
        wall_clock: Timestamp,
    ) -> (LimitHeaders, Result<(), LimitHit>) {
        let mut verdict = Ok(());
        if let Some(daily) = &mut self.daily {
            // HubSpot's daily limit resets at midnight in the account's time zone.
            let today = self.time_zone.date_at(wall_clock);
            if daily.day != today {
                daily.day = today;
                daily.used = 0;
            }
            if daily.used >= daily.limit {
                verdict = Err(LimitHit::Daily);
            }
        }
        if let Some(window) = &mut self.window {
            while window
                .admitted
                .front()
                .is_some_and(|admitted| *admitted + window.interval <= now)
            {
                window.admitted.pop_front();
            }
            if verdict.is_ok() && window.admitted.len() as u64 >= window.max {
                verdict = Err(LimitHit::TenSecondly);
            }
            if verdict.is_ok() {
                window.admitted.push_back(now);
            }
        }
        if let (Ok(()), Some(daily)) = (verdict, &mut self.daily) {
            daily.used += 1;
        }
        let headers = LimitHeaders {
            window: self.window.as_ref().map(|window| {
                let used = window.admitted.len() as u64;
                (window.max, window.max.saturating_sub(used), window.interval)
            }),
            daily: self
                .daily
                .as_ref()
                .map(|daily| (daily.limit, daily.limit.saturating_sub(daily.used))),
        };
        (headers, verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_refuses_beyond_its_max_and_reports_remaining() {
        let mut limits = RateLimits::new();
        limits.set_window(Some((2, Duration::from_secs(10))));
        assert_eq!(
            limits.admit().0.window,
            Some((2, 1, Duration::from_secs(10)))
        );
        assert!(limits.admit().1.is_ok());
        assert_eq!(limits.admit().1, Err(LimitHit::TenSecondly));
    }

    #[test]
    fn the_daily_budget_wins_over_the_window() {
        let mut limits = RateLimits::new();
        limits.set_window(Some((10, Duration::from_secs(10))));
        limits.set_daily(Some(1));
        assert!(limits.admit().1.is_ok());
        let (headers, verdict) = limits.admit();
        assert_eq!(verdict, Err(LimitHit::Daily));
        assert_eq!(headers.daily, Some((1, 0)));
    }

    #[test]
    fn the_daily_budget_resets_at_midnight_in_the_accounts_zone() {
        let mut limits = RateLimits::new();
        limits.set_time_zone(AccountTimeZone::named("US/Eastern").unwrap());
        let now = Instant::now();
        let at = |instant: &str| instant.parse::<Timestamp>().unwrap();
        // 18:30 in New York on 14 January (23:30 UTC).
        let evening = at("2026-01-14T23:30:00Z");
        limits.daily = Some(DailyBudget {
            limit: 1,
            used: 0,
            day: limits.time_zone.date_at(evening),
        });
        assert!(limits.admit_at(now, evening).1.is_ok());
        assert_eq!(limits.admit_at(now, evening).1, Err(LimitHit::Daily));
        // Midnight has passed in UTC but not in New York: still spent.
        for not_yet in ["2026-01-15T00:30:00Z", "2026-01-15T04:59:59Z"] {
            assert_eq!(
                limits.admit_at(now, at(not_yet)).1,
                Err(LimitHit::Daily),
                "{not_yet}"
            );
        }
        // Midnight in New York.
        let (headers, verdict) = limits.admit_at(now, at("2026-01-15T05:00:00Z"));
        assert!(verdict.is_ok());
        assert_eq!(headers.daily, Some((1, 0)));
    }

    #[test]
    fn refresh_checks_every_part_of_the_grant_and_rotates_on_request() {
        let mut tokens = Tokens::new("t");
        tokens.rotate_refresh_tokens = true;
        let mut form: HashMap<String, String> = [
            ("grant_type", "refresh_token"),
            ("client_id", "sandbox-client-t"),
            ("client_secret", "sandbox-secret-t"),
            ("refresh_token", "na1-refresh-t-0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let issued = tokens.refresh(&form).unwrap();
        assert_ne!(issued.refresh_token, "na1-refresh-t-0");
        assert_eq!(
            tokens.check(Some(&format!("Bearer {}", issued.access_token))),
            Ok(())
        );
        assert_eq!(
            tokens.refresh(&form).unwrap_err().status,
            "BAD_REFRESH_TOKEN"
        );
        form.insert("refresh_token".into(), issued.refresh_token);
        assert!(tokens.refresh(&form).is_ok());
        assert_eq!(
            tokens.check(Some("Bearer nope")),
            Err(TokenRefusal::Unknown)
        );
    }
}
