//! The `Retry-After` header (RFC 9110 §10.2.3), read defensively.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The wait a `Retry-After` header asks for, as of `now`: whole seconds, or an HTTP date (now
/// or past: no wait), at most `longest` (a number too large for the clock, or a date far
/// ahead, is `longest`: a garbled or hostile header must not park a connection for days).
/// `None` without the header or with one that is neither (negative, fractions, words).
pub fn retry_after(headers: &HeaderMap, now: SystemTime, longest: Duration) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // Too many digits for a u64 is a very long wait, not no wait.
        value.parse().map_or(Duration::MAX, Duration::from_secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or_default()
    };
    Some(wait.min(longest))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    const LONGEST: Duration = Duration::from_secs(600);

    fn read(value: &str, now: SystemTime) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers, now, LONGEST)
    }

    #[test]
    fn seconds_and_dates_are_read_and_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(read("7", now), Some(Duration::from_secs(7)));
        assert_eq!(read(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(read("86400", now), Some(LONGEST));
        assert_eq!(read("99999999999999999999999", now), Some(LONGEST));
        let soon = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(read(&soon, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(read(&past, now), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(400 * 86_400));
        assert_eq!(read(&far, now), Some(LONGEST));
    }

    #[test]
    fn anything_else_is_no_header() {
        let now = SystemTime::now();
        for value in ["-5", "1.5", "soon", ""] {
            assert_eq!(read(value, now), None, "{value:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now, LONGEST), None);
    }
}
