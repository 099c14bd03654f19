//! HubSpot's failure answers turned into classified [`AdapterError`]s, in one place.
//!
//! HubSpot's own code wins: the `category` of its error body (`VALIDATION_ERROR`,
//! `OBJECT_NOT_FOUND`, ...), or for refused values the `error` embedded in the message
//! (`INVALID_EMAIL`, `PROPERTY_DOESNT_EXIST`), or the 429's `policyName`. Its message is kept
//! unaltered.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use unisync_core::{AdapterError, ErrorKind, FieldMapping};
use unisync_kit::retry_after;

use crate::account::until_daily_reset;

/// HubSpot's short rate-limit window, waited out when a 429 names no other wait.
pub const TEN_SECOND_WINDOW: Duration = Duration::from_secs(10);
/// The longest a short-window rate limit holds the connection back, whatever an answer says.
pub const MAX_RATE_LIMIT_WAIT: Duration = unisync_kit::LONGEST_WINDOW;
/// The longest any answer holds an edit back (HubSpot's 477 migrations last "typically up to
/// 24 hours"); a longer `Retry-After` is a broken header, not a plan.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// How long HubSpot locks a record (423), when it does not say.
const RECORD_LOCK: Duration = Duration::from_secs(2);
const INTERVAL_HEADER: &str = "x-hubspot-ratelimit-interval-milliseconds";
/// The refused-value codes that name a property the connection's field table writes but the
/// portal cannot take: a mapping error that fails every edit of that field.
const MAPPING_ERRORS: [&str; 2] = ["PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"];

/// Classifies a failed HubSpot answer. `mapping` turns the property HubSpot blames into the
/// unified field's name; `daily_reset_zone` is the account's time zone, in which the `DAILY`
/// limit resets at midnight (`None`: unknown).
pub fn parse_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    mapping: &FieldMapping,
    daily_reset_zone: Option<&TimeZone>,
) -> AdapterError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let details = ErrorDetails::from_body(parsed.as_ref(), body, status);
    classify(
        status.as_u16(),
        &details,
        headers,
        mapping,
        daily_reset_zone,
    )
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
    classify(status, &details, &HeaderMap::new(), mapping, None)
}

/// Whether a whole-batch refusal may come from one bad input, so that splitting the batch
/// lets the other inputs land: HubSpot fails a whole batch for one invalid value. A refusal of
/// the connection (`Misconfigured`, `Unauthorized`) never does: every part would be refused.
pub fn may_blame_one_input(error: &AdapterError) -> bool {
    matches!(error.kind, ErrorKind::Permanent { .. })
}

/// Whether `error` refuses every request of the connection, so that sending more of a push
/// only repeats it.
pub(crate) fn refuses_the_connection(error: &AdapterError) -> bool {
    matches!(
        error.kind,
        ErrorKind::Misconfigured | ErrorKind::Unauthorized
    )
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
    daily_reset_zone: Option<&TimeZone>,
) -> AdapterError {
    let message = details.message.clone();
    let retry_after = retry_after(headers, SystemTime::now(), MAX_WAIT);
    match status {
        429 => match details.policy_name.as_deref() {
            Some("DAILY") => {
                let until_reset = until_daily_reset(Timestamp::now(), daily_reset_zone);
                AdapterError::quota_exhausted(
                    "DAILY",
                    message,
                    Some(retry_after.map_or(until_reset, |wait| wait.min(until_reset))),
                )
            }
            policy => AdapterError::rate_limited(
                policy.unwrap_or("TEN_SECONDLY_ROLLING"),
                message,
                Some(
                    retry_after
                        .or_else(|| rate_limit_interval(headers))
                        .unwrap_or(TEN_SECOND_WINDOW)
                        .min(MAX_RATE_LIMIT_WAIT),
                ),
            ),
        },
        401 => AdapterError::unauthorized(details.code_or("INVALID_AUTHENTICATION"), message),
        // A 403 is about the app (a scope it lacks, an API it may not use), never one record.
        403 => AdapterError::misconfigured(details.code_or("HTTP_403"), message),
        // Only a 404 naming a missing object says the record is gone; any other names no
        // resource at all (a wrong base URL, a retired API version), which must neither mark
        // records as deleted nor dead-letter every edit.
        404 if details.category.as_deref() == Some("OBJECT_NOT_FOUND") => {
            AdapterError::record_gone("OBJECT_NOT_FOUND", message)
        }
        404 => AdapterError::misconfigured(details.code_or("ENDPOINT_NOT_FOUND"), message),
        405 | 410 => {
            AdapterError::misconfigured(details.code_or(format!("HTTP_{status}")), message)
        }
        409 => {
            let field = mapping
                .unified_field("email")
                .map(|field| field.name().to_string());
            AdapterError::permanent(details.code_or("CONFLICT"), message, field)
        }
        400 | 422 => {
            let refused = embedded_property_errors(&message);
            if let Some(refusal) = refused.iter().find(|refusal| {
                MAPPING_ERRORS.contains(&refusal.code.as_str())
                    && refusal
                        .property
                        .as_deref()
                        .is_some_and(|property| writes_property(mapping, property))
            }) {
                return AdapterError::misconfigured(refusal.code.clone(), message);
            }
            match refused.into_iter().next() {
                Some(refusal) => {
                    let field = refusal.property.map(|property| {
                        mapping
                            .unified_field(&property)
                            .map_or(property, |field| field.name().to_string())
                    });
                    AdapterError::permanent(refusal.code, message, field)
                }
                None => AdapterError::permanent(details.code_or("VALIDATION_ERROR"), message, None),
            }
        }
        423 => AdapterError::new(
            ErrorKind::Retryable {
                retry_after: Some(retry_after.unwrap_or(RECORD_LOCK).min(MAX_WAIT)),
            },
            details.code_or("LOCKED"),
            message,
        ),
        408 | 477 | 500..=599 => AdapterError::new(
            ErrorKind::Retryable {
                retry_after: retry_after.map(|wait| wait.min(MAX_WAIT)),
            },
            details.code_or(format!("HTTP_{status}")),
            message,
        ),
        _ => AdapterError::permanent(details.code_or(format!("HTTP_{status}")), message, None),
    }
}

/// Whether the connection's field table writes `property` (as a field's main or extra target).
fn writes_property(mapping: &FieldMapping, property: &str) -> bool {
    mapping.crm_fields().contains(&property)
        || mapping.extra_fields().any(|extra| extra == property)
}

/// One refused value named in a validation message.
struct PropertyRefusal {
    code: String,
    property: Option<String>,
}

/// The `error` codes (and property `name`s) of the JSON list HubSpot embeds in a validation
/// message: `Property values were not valid: [{"error":"INVALID_EMAIL",...}]`.
fn embedded_property_errors(message: &str) -> Vec<PropertyRefusal> {
    let (Some(start), Some(end)) = (message.find('['), message.rfind(']')) else {
        return Vec::new();
    };
    let details: Vec<Value> = message
        .get(start..=end)
        .and_then(|list| serde_json::from_str(list).ok())
        .unwrap_or_default();
    details
        .iter()
        .filter_map(|detail| {
            Some(PropertyRefusal {
                code: detail.get("error")?.as_str()?.to_string(),
                property: detail
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect()
}

fn rate_limit_interval(headers: &HeaderMap) -> Option<Duration> {
    let millis = headers.get(INTERVAL_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;
    use crate::mapping::default_mapping;

    fn parse(status: u16, pairs: &[(&'static str, &str)], body: &str) -> AdapterError {
        parse_error(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            body,
            &default_mapping(),
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
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
    fn daily_429_is_quota_exhausted_with_hubspots_wait_when_it_is_shorter() {
        let body = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#;
        let error = parse(429, &[("retry-after", "60")], body);
        assert_eq!(error.code, "DAILY");
        match error.kind {
            ErrorKind::QuotaExhausted {
                retry_after: Some(wait),
            } => assert!(wait <= Duration::from_secs(60)),
            other => panic!("expected QuotaExhausted, got {other:?}"),
        }
    }

    #[test]
    fn a_daily_429_waits_until_midnight_in_the_accounts_zone_and_never_longer() {
        let body = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#;
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let classify_in = |zone: Option<&TimeZone>, extra: &[(&'static str, &str)]| {
            let error = parse_error(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(extra),
                body,
                &default_mapping(),
                zone,
            );
            match error.kind {
                ErrorKind::QuotaExhausted {
                    retry_after: Some(wait),
                } => wait,
                other => panic!("expected QuotaExhausted, got {other:?}"),
            }
        };
        // A wait ends at the zone's midnight when the reset it points at is one.
        let ends_at_midnight = |wait: Duration| {
            let end = Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(wait).unwrap())
                .unwrap()
                .to_zoned_datetime(kolkata.clone());
            let since_midnight = end.duration_since(&end.start_of_day().unwrap());
            since_midnight.as_secs() < 5 || since_midnight.as_secs() > 86_395
        };
        assert!(ends_at_midnight(classify_in(Some(&kolkata), &[])));
        assert!(
            classify_in(None, &[]) <= Duration::from_secs(15 * 60),
            "an unknown zone waits for the next quarter hour at most"
        );
        let capped = classify_in(Some(&kolkata), &[("retry-after", "999999")]);
        assert!(ends_at_midnight(capped), "never past the reset: {capped:?}");
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
    fn a_403_refuses_the_connection_and_is_not_blamed_on_one_input() {
        let error = parse(
            403,
            &[],
            r#"{"status":"error","message":"This app hasn't been granted all required scopes to make this call.","category":"MISSING_SCOPES"}"#,
        );
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.code, "MISSING_SCOPES");
        assert_eq!(
            error.message,
            "This app hasn't been granted all required scopes to make this call."
        );
        assert!(!may_blame_one_input(&error));
        assert!(refuses_the_connection(&error));
        let proxy = parse(403, &[], "<html>Forbidden</html>");
        assert_eq!(
            (proxy.kind, proxy.code.as_str()),
            (ErrorKind::Misconfigured, "HTTP_403")
        );
    }

    #[test]
    fn not_found_is_record_gone_only_with_object_not_found() {
        let gone = parse(
            404,
            &[],
            r#"{"status":"error","message":"Object not found.  objectId are usually numeric.","category":"OBJECT_NOT_FOUND"}"#,
        );
        assert_eq!(gone.kind, ErrorKind::RecordGone);
        let unrouted = parse(
            404,
            &[],
            r#"{"status":"error","message":"resource not found"}"#,
        );
        assert_eq!(unrouted.kind, ErrorKind::Misconfigured);
        assert_eq!(unrouted.code, "ENDPOINT_NOT_FOUND");
        assert_eq!(unrouted.message, "resource not found");
        let bare = parse(404, &[], "Not Found");
        assert_eq!(
            (bare.kind, bare.code.as_str(), bare.message.as_str()),
            (ErrorKind::Misconfigured, "ENDPOINT_NOT_FOUND", "Not Found")
        );
        let empty = parse(404, &[], "");
        assert_eq!(empty.kind, ErrorKind::Misconfigured);
        assert!(!may_blame_one_input(&empty));
    }

    #[test]
    fn a_retired_api_answers_like_no_endpoint_at_all() {
        // HubSpot's sunset notices: "all endpoints ... will return a 404 error response".
        for status in [404, 405, 410] {
            let error = parse(status, &[], "");
            assert_eq!(error.kind, ErrorKind::Misconfigured, "{status}");
        }
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
        assert_eq!(
            unknown.kind,
            ErrorKind::Permanent {
                field: Some("jobtitel".into())
            },
            "a property the field table does not write is the edit's problem"
        );
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
    fn a_mapped_property_the_portal_lacks_refuses_the_connection() {
        let mapping = default_mapping()
            .with_overrides(&[("position".to_string(), "jobtitel".to_string())].into())
            .unwrap();
        let body = r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address x@y is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"},{\"isValid\":false,\"message\":\"Property \\\"jobtitel\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"jobtitel\"}]","category":"VALIDATION_ERROR"}"#;
        let error = parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body,
            &mapping,
            None,
        );
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.code, "PROPERTY_DOESNT_EXIST");
        assert!(error.message.contains("jobtitel"), "{}", error.message);
        assert!(
            !may_blame_one_input(&error),
            "a mapping error never splits a batch"
        );
        let extra = default_mapping()
            .with_extra_fields(&[("position".to_string(), "persona".to_string())].into())
            .unwrap();
        let read_only = r#"{"status":"error","message":"Property values were not valid: [{\"error\":\"READ_ONLY_VALUE\",\"name\":\"persona\"}]","category":"VALIDATION_ERROR"}"#;
        let error = parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            read_only,
            &extra,
            None,
        );
        assert_eq!(error.kind, ErrorKind::Misconfigured);
    }

    #[test]
    fn retry_after_is_bounded_and_never_panics() {
        let huge = [("retry-after", "99999999999999999999")];
        assert_eq!(
            parse(429, &huge, "{}").kind,
            ErrorKind::RateLimited {
                retry_after: Some(MAX_RATE_LIMIT_WAIT)
            }
        );
        let far_date = [("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")];
        assert_eq!(
            parse(429, &far_date, "{}").kind,
            ErrorKind::RateLimited {
                retry_after: Some(MAX_RATE_LIMIT_WAIT)
            }
        );
        assert_eq!(
            parse(
                429,
                &[(
                    "x-hubspot-ratelimit-interval-milliseconds",
                    "18446744073709551615"
                )],
                "{}"
            )
            .kind,
            ErrorKind::RateLimited {
                retry_after: Some(MAX_RATE_LIMIT_WAIT)
            }
        );
        for status in [423, 477, 503] {
            assert_eq!(
                parse(status, &huge, "").kind,
                ErrorKind::Retryable {
                    retry_after: Some(MAX_WAIT)
                },
                "{status}"
            );
        }
        assert_eq!(
            parse(503, &[("retry-after", "-1")], "").kind,
            ErrorKind::Retryable { retry_after: None }
        );
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
