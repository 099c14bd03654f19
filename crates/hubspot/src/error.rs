//! HubSpot's failure answers turned into classified [`AdapterError`]s, in one place.
//!
//! HubSpot's own code wins: the `category` of its error body (`VALIDATION_ERROR`,
//! `OBJECT_NOT_FOUND`, ...), or for refused values the `error` embedded in the message
//! (`INVALID_EMAIL`, `PROPERTY_DOESNT_EXIST`), or the 429's `policyName`. Its message is kept
//! unaltered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use unisync_core::{AdapterError, ErrorKind, FieldMapping};

/// HubSpot's short rate-limit window, waited out when a 429 names no other wait.
pub const TEN_SECOND_WINDOW: Duration = Duration::from_secs(10);
/// How long HubSpot locks a record (423), when it does not say.
const RECORD_LOCK: Duration = Duration::from_secs(2);
const INTERVAL_HEADER: &str = "x-hubspot-ratelimit-interval-milliseconds";

/// Classifies a failed HubSpot answer. `mapping` turns the property HubSpot blames into the
/// unified field's name.
pub fn parse_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    mapping: &FieldMapping,
) -> AdapterError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let details = ErrorDetails::from_body(parsed.as_ref(), body, status);
    classify(status.as_u16(), &details, headers, mapping)
}

/// Classifies one entry of a batch answer's `errors[]` (`{status, category, message,
/// context: {ids}}`): its category stands in for the HTTP status it would have had alone.
pub fn parse_batch_error(entry: &Value, mapping: &FieldMapping) -> AdapterError {
    let details = ErrorDetails::from_body(Some(entry), "", StatusCode::MULTI_STATUS);
    let status = match details.category.as_deref() {
        Some("VALIDATION_ERROR") => 400,
        Some("MISSING_SCOPES") => 403,
        Some("OBJECT_NOT_FOUND") => 404,
        Some("CONFLICT") => 409,
        Some("LOCKED") => 423,
        Some("RATE_LIMITS") => 429,
        // An unknown per-item failure: retrying is safe, a dead letter would be a guess.
        _ => 500,
    };
    classify(status, &details, &HeaderMap::new(), mapping)
}

/// A transport failure (timeout, refused connection, broken answer): always retryable.
pub fn transport_error(error: &reqwest::Error) -> AdapterError {
    let code = if error.is_timeout() {
        "TIMEOUT"
    } else {
        "TRANSPORT"
    };
    AdapterError::retryable(code, error.to_string())
}

/// Whether a whole-batch refusal may come from one bad input, so that splitting the batch
/// lets the other inputs land: HubSpot fails a whole batch for one invalid value.
pub fn may_blame_one_input(error: &AdapterError) -> bool {
    matches!(error.kind, ErrorKind::Permanent { .. }) && error.code != "MISSING_SCOPES"
}

/// What HubSpot's error body says.
struct ErrorDetails {
    category: Option<String>,
    policy_name: Option<String>,
    message: String,
}

impl ErrorDetails {
    fn from_body(parsed: Option<&Value>, raw_body: &str, status: StatusCode) -> Self {
        let text = |key: &str| {
            parsed
                .and_then(|body| body.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let message = text("message")
            .or_else(|| Some(raw_body.trim().to_string()).filter(|body| !body.is_empty()))
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            });
        ErrorDetails {
            category: text("category"),
            policy_name: text("policyName"),
            message,
        }
    }

    fn code_or(&self, fallback: impl Into<String>) -> String {
        self.category.clone().unwrap_or_else(|| fallback.into())
    }
}

fn classify(
    status: u16,
    details: &ErrorDetails,
    headers: &HeaderMap,
    mapping: &FieldMapping,
) -> AdapterError {
    let message = details.message.clone();
    let retry_after = retry_after(headers);
    match status {
        429 => match details.policy_name.as_deref() {
            Some("DAILY") => AdapterError::quota_exhausted(
                "DAILY",
                message,
                retry_after.or_else(|| Some(until_midnight_utc(SystemTime::now()))),
            ),
            policy => AdapterError::rate_limited(
                policy.unwrap_or("TEN_SECONDLY_ROLLING"),
                message,
                retry_after
                    .or_else(|| rate_limit_interval(headers))
                    .or(Some(TEN_SECOND_WINDOW)),
            ),
        },
        401 => AdapterError::unauthorized(details.code_or("INVALID_AUTHENTICATION"), message),
        403 => AdapterError::permanent(details.code_or("MISSING_SCOPES"), message, None),
        // Only a 404 naming a missing object says the record is gone; a bare one may be a
        // wrong base URL, which must not mark records as deleted.
        404 if details.category.as_deref() == Some("OBJECT_NOT_FOUND") => {
            AdapterError::record_gone("OBJECT_NOT_FOUND", message)
        }
        404 => AdapterError::permanent("NOT_FOUND", message, None),
        409 => {
            let field = mapping
                .unified_field("email")
                .map(|field| field.name().to_string());
            AdapterError::permanent(details.code_or("CONFLICT"), message, field)
        }
        400 | 422 => match embedded_property_error(&message) {
            Some((code, property)) => {
                let field = property.map(|property| {
                    mapping
                        .unified_field(&property)
                        .map_or(property, |field| field.name().to_string())
                });
                AdapterError::permanent(code, message, field)
            }
            None => AdapterError::permanent(details.code_or("VALIDATION_ERROR"), message, None),
        },
        423 => AdapterError::new(
            ErrorKind::Retryable {
                retry_after: retry_after.or(Some(RECORD_LOCK)),
            },
            details.code_or("LOCKED"),
            message,
        ),
        408 | 477 | 500..=599 => AdapterError::new(
            ErrorKind::Retryable { retry_after },
            details.code_or(format!("HTTP_{status}")),
            message,
        ),
        _ => AdapterError::permanent(details.code_or(format!("HTTP_{status}")), message, None),
    }
}

/// The first `error` code (and property `name`) of the JSON list HubSpot embeds in a
/// validation message: `Property values were not valid: [{"error":"INVALID_EMAIL",...}]`.
fn embedded_property_error(message: &str) -> Option<(String, Option<String>)> {
    let start = message.find('[')?;
    let end = message.rfind(']')?;
    let details: Vec<Value> = serde_json::from_str(message.get(start..=end)?).ok()?;
    details.iter().find_map(|detail| {
        let code = detail.get("error")?.as_str()?.to_string();
        let property = detail
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        Some((code, property))
    })
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn rate_limit_interval(headers: &HeaderMap) -> Option<Duration> {
    let millis = headers.get(INTERVAL_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// The wait until HubSpot's daily limits reset (midnight UTC is our conservative reading of
/// "the daily reset").
fn until_midnight_utc(now: SystemTime) -> Duration {
    const DAY_SECS: u64 = 86_400;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let today = Duration::from_secs(since_epoch.as_secs() % DAY_SECS)
        + Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    Duration::from_secs(DAY_SECS) - today
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;
    use crate::mapping::default_mapping;

    fn parse(status: u16, headers: &[(&'static str, &str)], body: &str) -> AdapterError {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        parse_error(
            StatusCode::from_u16(status).unwrap(),
            &map,
            body,
            &default_mapping(),
        )
    }

    #[test]
    fn ten_secondly_429_is_rate_limited_with_retry_after_or_the_window() {
        let body = r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#;
        let error = parse(429, &[("retry-after", "3")], body);
        assert_eq!(
            error.kind,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(error.code, "TEN_SECONDLY_ROLLING");
        assert_eq!(
            error.message,
            "You have reached your ten_secondly_rolling limit."
        );
        let without_header = parse(429, &[], body);
        assert_eq!(
            without_header.kind,
            ErrorKind::RateLimited {
                retry_after: Some(TEN_SECOND_WINDOW)
            }
        );
        let no_policy = parse(
            429,
            &[("x-hubspot-ratelimit-interval-milliseconds", "1000")],
            "{}",
        );
        assert_eq!(
            no_policy.kind,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(1))
            }
        );
    }

    #[test]
    fn daily_429_is_quota_exhausted_until_the_reset() {
        let body = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#;
        let error = parse(429, &[], body);
        assert_eq!(error.code, "DAILY");
        match error.kind {
            ErrorKind::QuotaExhausted {
                retry_after: Some(wait),
            } => assert!(wait <= Duration::from_secs(86_400)),
            other => panic!("expected QuotaExhausted, got {other:?}"),
        }
        let with_header = parse(429, &[("retry-after", "60")], body);
        assert_eq!(
            with_header.kind,
            ErrorKind::QuotaExhausted {
                retry_after: Some(Duration::from_secs(60))
            }
        );
    }

    #[test]
    fn midnight_is_counted_from_the_start_of_the_utc_day() {
        let noon = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 43_200);
        assert_eq!(until_midnight_utc(noon), Duration::from_secs(43_200));
    }

    #[test]
    fn unauthorized_keeps_hubspots_category() {
        let error = parse(
            401,
            &[],
            r#"{"status":"error","message":"The OAuth token used to make this call expired 2 second(s) ago.","category":"EXPIRED_AUTHENTICATION"}"#,
        );
        assert_eq!(error.kind, ErrorKind::Unauthorized);
        assert_eq!(error.code, "EXPIRED_AUTHENTICATION");
    }

    #[test]
    fn missing_scopes_is_permanent_and_not_blamed_on_one_input() {
        let error = parse(
            403,
            &[],
            r#"{"status":"error","message":"This app hasn't been granted all required scopes to make this call.","category":"MISSING_SCOPES"}"#,
        );
        assert_eq!(error.kind, ErrorKind::Permanent { field: None });
        assert_eq!(error.code, "MISSING_SCOPES");
        assert!(!may_blame_one_input(&error));
    }

    #[test]
    fn not_found_is_record_gone_only_with_object_not_found() {
        let gone = parse(
            404,
            &[],
            r#"{"status":"error","message":"Object not found.  objectId are usually numeric.","category":"OBJECT_NOT_FOUND"}"#,
        );
        assert_eq!(gone.kind, ErrorKind::RecordGone);
        let bare = parse(
            404,
            &[],
            r#"{"status":"error","message":"resource not found"}"#,
        );
        assert_eq!(bare.kind, ErrorKind::Permanent { field: None });
        assert_eq!(bare.message, "resource not found");
    }

    #[test]
    fn validation_error_takes_the_embedded_code_and_unified_field() {
        let body = r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address x@y is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]","category":"VALIDATION_ERROR"}"#;
        let error = parse(400, &[], body);
        assert_eq!(error.code, "INVALID_EMAIL");
        assert_eq!(error.field(), Some("email"));
        assert!(
            error
                .message
                .starts_with("Property values were not valid: [{")
        );
        assert!(may_blame_one_input(&error));
        let unknown = parse(
            400,
            &[],
            r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"jobtitel\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"jobtitel\"}]","category":"VALIDATION_ERROR"}"#,
        );
        assert_eq!(unknown.code, "PROPERTY_DOESNT_EXIST");
        assert_eq!(unknown.field(), Some("jobtitel"));
        let mobile = parse(
            400,
            &[],
            r#"{"message":"Property values were not valid: [{\"error\":\"INVALID_PHONE\",\"name\":\"mobilephone\"}]","category":"VALIDATION_ERROR"}"#,
        );
        assert_eq!(mobile.field(), Some("mobile_phone"));
        let plain = parse(
            400,
            &[],
            r#"{"status":"error","message":"Invalid input JSON","category":"VALIDATION_ERROR"}"#,
        );
        assert_eq!(plain.code, "VALIDATION_ERROR");
    }

    #[test]
    fn conflict_is_permanent_naming_the_existing_contact() {
        let error = parse(
            409,
            &[],
            r#"{"status":"error","message":"Contact already exists. Existing ID: 37765128953","category":"CONFLICT"}"#,
        );
        assert_eq!(error.code, "CONFLICT");
        assert_eq!(error.field(), Some("email"));
        assert!(error.message.contains("Existing ID: 37765128953"));
    }

    #[test]
    fn locks_migrations_and_outages_are_retryable() {
        assert_eq!(
            parse(423, &[], "{}").kind,
            ErrorKind::Retryable {
                retry_after: Some(RECORD_LOCK)
            }
        );
        assert_eq!(
            parse(477, &[("retry-after", "30")], "").kind,
            ErrorKind::Retryable {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        for status in [500, 502, 503, 504, 521, 524, 526] {
            let error = parse(status, &[], "<html>bad gateway</html>");
            assert!(
                matches!(error.kind, ErrorKind::Retryable { .. }),
                "{status}: {error:?}"
            );
            assert_eq!(error.code, format!("HTTP_{status}"));
            assert_eq!(error.message, "<html>bad gateway</html>");
        }
    }

    #[test]
    fn batch_entries_are_classified_by_category() {
        let entry = serde_json::json!({"status": "error", "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects", "context": {"ids": ["1"]}});
        assert_eq!(
            parse_batch_error(&entry, &default_mapping()).kind,
            ErrorKind::RecordGone
        );
        let conflict = serde_json::json!({"status": "error", "category": "CONFLICT",
            "message": "Contact already exists. Existing ID: 5"});
        assert_eq!(
            parse_batch_error(&conflict, &default_mapping()).code,
            "CONFLICT"
        );
    }
}
