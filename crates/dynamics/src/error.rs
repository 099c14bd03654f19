//! Dataverse's error answers, classified in one place.
//!
//! The Web API answers errors as `{"error": {"code": "0x8004....", "message": "..."}}`, with
//! the same shape inside each part of a `$batch` answer; both go through [`parse_error`], so
//! one code means one thing wherever it appears. The class comes from the status and the
//! code; the message is kept as Dataverse wrote it (and only read for the column it names).
//!
//! - 429 for requests or concurrent requests (service protection): `RateLimited` with the
//!   `Retry-After` wait; 429 `0x80072321`, the combined execution time of the 5-minute window
//!   spent, is `QuotaExhausted` until `Retry-After`: a budget rather than a rate, whose wait
//!   grows while a client keeps sending.
//! - 401: `Unauthorized` (the client has already fetched a new token once).
//! - 403: `Misconfigured`: the application user lacks a privilege (`0x80040220`, missing
//!   `prvWriteContact` and the like) or is disabled; no edit can fix that.
//! - 404 `0x80040217` (the row does not exist), or a Dataverse error without a code:
//!   `RecordGone`. A 404 for a URL segment (`0x8006088a`: a wrong version or entity set) or
//!   without Dataverse's body: `Misconfigured`.
//! - 400 `0x80060888` naming a column the mapping writes (the environment has no such
//!   column): `Misconfigured`; any other 4xx: `Permanent`, with the unified field of the
//!   column the message names (`'firstname'`), e.g. `0x80044331` (value too long).
//! - 5xx (`0x80044150` SQL errors, deadlocks included): `Retryable`.

use std::time::Duration;

use serde::Deserialize;
use unisync_core::{AdapterError, ContactField, ErrorKind, FieldMapping};
use unisync_kit::Answer;

use crate::mapping::PARENT_ACCOUNT_BIND;

/// The longest `Retry-After` taken from Dataverse (its 5-minute window, twice): a longer one
/// is a broken header.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Dataverse's code for a row that does not exist (the contact, or an account a bind names).
pub const DOES_NOT_EXIST: &str = "0x80040217";

/// Dataverse's code for a property the entity type does not have.
const UNKNOWN_PROPERTY: &str = "0x80060888";

/// Dataverse's code for the execution time of the 5-minute window spent.
const EXECUTION_TIME_SPENT: &str = "0x80072321";

/// Dataverse's code for a URL segment that names nothing.
const SEGMENT_NOT_FOUND: &str = "0x8006088a";

/// One error as Dataverse reports it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct DataverseError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: DataverseError,
}

/// Classifies a failed Web API answer (a whole answer, or one part of a `$batch` answer).
/// Columns named in messages are translated back through `mapping`.
pub fn parse_error(answer: &Answer, mapping: &FieldMapping) -> AdapterError {
    let status = answer.status.as_u16();
    let error = serde_json::from_str::<ErrorBody>(&answer.body)
        .ok()
        .map(|body| body.error);
    let Some(error) = error else {
        // Not Dataverse's shape: a gateway's page, an empty 401. The status decides.
        let code = format!("HTTP_{status}");
        let message = answer.body.trim().chars().take(500).collect::<String>();
        return match status {
            401 => AdapterError::unauthorized(code, message),
            403 | 404 | 405 | 410 => AdapterError::misconfigured(code, message),
            429 => AdapterError::rate_limited(code, message, answer.retry_after(MAX_RETRY_AFTER)),
            500.. => AdapterError::new(
                ErrorKind::Retryable {
                    retry_after: answer.retry_after(MAX_RETRY_AFTER),
                },
                code,
                message,
            ),
            _ => AdapterError::permanent(code, message, None),
        };
    };
    let DataverseError { code, message } = error.clone();
    let label = if code.is_empty() {
        format!("HTTP_{status}")
    } else {
        code.clone()
    };
    match status {
        429 if code == EXECUTION_TIME_SPENT => {
            AdapterError::quota_exhausted(label, message, answer.retry_after(MAX_RETRY_AFTER))
        }
        429 => AdapterError::rate_limited(label, message, answer.retry_after(MAX_RETRY_AFTER)),
        401 => AdapterError::unauthorized(label, message),
        403 => AdapterError::misconfigured(label, message),
        404 if code == DOES_NOT_EXIST || code.is_empty() => {
            AdapterError::record_gone(label, message)
        }
        404 | 405 | 410 => AdapterError::misconfigured(label, message),
        500.. => AdapterError::new(
            ErrorKind::Retryable {
                retry_after: answer.retry_after(MAX_RETRY_AFTER),
            },
            label,
            message,
        ),
        _ if code == UNKNOWN_PROPERTY && names_a_written_column(&message, mapping) => {
            AdapterError::misconfigured(label, message)
        }
        _ if code == SEGMENT_NOT_FOUND => AdapterError::misconfigured(label, message),
        _ => {
            let field = blamed_field(&message, mapping);
            AdapterError::permanent(label, message, field)
        }
    }
}

/// The quoted names in a message (`'firstname'`).
fn quoted(message: &str) -> impl Iterator<Item = &str> {
    message.split('\'').skip(1).step_by(2)
}

/// Whether the message names a column the mapping writes (or the account bind).
fn names_a_written_column(message: &str, mapping: &FieldMapping) -> bool {
    quoted(message).any(|name| {
        mapping.unified_field(name).is_some()
            || mapping.extra_fields().any(|extra| extra == name)
            || PARENT_ACCOUNT_BIND.starts_with(name)
    })
}

/// The unified field of the first column the message names, as `Permanent` reports it.
fn blamed_field(message: &str, mapping: &FieldMapping) -> Option<String> {
    quoted(message).find_map(|name| {
        mapping
            .unified_field(name)
            .map(|field| field.name().to_string())
            .or_else(|| {
                PARENT_ACCOUNT_BIND
                    .starts_with(name)
                    .then(|| ContactField::UnifiedCustomerId.name().to_string())
            })
    })
}

/// The identity platform's error answer (`error`, `error_description`, `error_codes`).
#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Classifies a refused token request. The description is cut before its trace ids and has
/// `secrets` (the client id and secret, which some descriptions quote) taken out:
/// - `invalid_client`, `unauthorized_client` and other refusals of the app's credentials:
///   `Unauthorized`;
/// - `invalid_resource`, `invalid_scope`, an unknown tenant (`invalid_request`): the
///   connection's `base_url` or `tenant_id` is wrong: `Misconfigured`;
/// - 429, 5xx, `temporarily_unavailable`: `Retryable`.
pub fn parse_token_error(answer: &Answer, secrets: &[&str]) -> AdapterError {
    let status = answer.status.as_u16();
    let Ok(refusal) = serde_json::from_str::<TokenError>(&answer.body) else {
        let code = format!("TOKEN_HTTP_{status}");
        let message = "the token endpoint's answer is not the identity platform's error";
        return if status == 429 || status >= 500 {
            AdapterError::retryable(code, message)
        } else {
            AdapterError::misconfigured(code, message)
        };
    };
    let description = refusal
        .error_description
        .split(" Trace ID:")
        .next()
        .unwrap_or_default();
    let message = unisync_kit::redact(description, secrets);
    let code = refusal.error;
    match code.as_str() {
        _ if status == 429 || status >= 500 => AdapterError::retryable(code, message),
        "temporarily_unavailable" => AdapterError::retryable(code, message),
        "invalid_resource" | "invalid_scope" | "invalid_request" => {
            AdapterError::misconfigured(code, message)
        }
        _ => AdapterError::unauthorized(code, message),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use serde_json::json;

    use super::*;
    use crate::mapping::default_mapping;

    fn answer(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.to_string(),
        }
    }

    fn dataverse(status: u16, code: &str, message: &str) -> AdapterError {
        parse_error(
            &answer(status, json!({"error": {"code": code, "message": message}})),
            &default_mapping(),
        )
    }

    #[test]
    fn codes_decide_the_class() {
        let gone = dataverse(404, DOES_NOT_EXIST, "contact With Id = x Does Not Exist");
        assert_eq!(gone.kind, ErrorKind::RecordGone);
        assert_eq!(gone.code, DOES_NOT_EXIST);
        assert_eq!(
            dataverse(404, "", "account With Id = x Does Not Exist").kind,
            ErrorKind::RecordGone
        );
        let segment = dataverse(
            404,
            SEGMENT_NOT_FOUND,
            "Resource not found for the segment 'contacts'.",
        );
        assert_eq!(segment.kind, ErrorKind::Misconfigured);
        let privilege = dataverse(
            403,
            "0x80040220",
            "Principal user ... is missing prvWriteContact privilege",
        );
        assert_eq!(privilege.kind, ErrorKind::Misconfigured);
        let deadlock = dataverse(
            500,
            "0x80044150",
            "Sql error: Generic SQL error. Sql Number: 1205",
        );
        assert_eq!(deadlock.kind, ErrorKind::Retryable { retry_after: None });
        let unknown = dataverse(
            400,
            UNKNOWN_PROPERTY,
            "The property 'jobtitle' does not exist on type 'Microsoft.Dynamics.CRM.contact'.",
        );
        assert_eq!(unknown.kind, ErrorKind::Misconfigured);
        let other = dataverse(
            400,
            UNKNOWN_PROPERTY,
            "The property 'foo' does not exist on type 'Microsoft.Dynamics.CRM.contact'.",
        );
        assert!(matches!(other.kind, ErrorKind::Permanent { field: None }));
    }

    #[test]
    fn validation_names_the_unified_field() {
        let long = dataverse(
            400,
            "0x80044331",
            "A validation error occurred.  The length of the 'address1_postalcode' attribute of the 'contact' entity exceeded the maximum allowed length of '20'.",
        );
        assert_eq!(
            long.kind,
            ErrorKind::Permanent {
                field: Some("zip".into())
            }
        );
        assert_eq!(long.field(), Some("zip"));
    }

    #[test]
    fn throttling_carries_retry_after_and_foreign_bodies_go_by_status() {
        let mut limited = answer(
            429,
            json!({"error": {"code": "0x80072322", "message": "Number of requests exceeded the limit of 6000 over time window of 300 seconds."}}),
        );
        limited
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("37"));
        assert_eq!(
            parse_error(&limited, &default_mapping()).kind,
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(37))
            }
        );
        let mut spent = answer(
            429,
            json!({"error": {"code": EXECUTION_TIME_SPENT, "message": "Combined execution time of incoming requests exceeded limit"}}),
        );
        spent
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("300"));
        assert_eq!(
            parse_error(&spent, &default_mapping()).kind,
            ErrorKind::QuotaExhausted {
                retry_after: Some(Duration::from_secs(300))
            }
        );
        let empty = Answer {
            status: StatusCode::UNAUTHORIZED,
            headers: HeaderMap::new(),
            body: String::new(),
        };
        assert_eq!(
            parse_error(&empty, &default_mapping()).kind,
            ErrorKind::Unauthorized
        );
        let page = Answer {
            status: StatusCode::NOT_FOUND,
            headers: HeaderMap::new(),
            body: "<html>".into(),
        };
        assert_eq!(
            parse_error(&page, &default_mapping()).kind,
            ErrorKind::Misconfigured
        );
    }

    #[test]
    fn token_refusals_are_classified_without_secrets() {
        let refused = |status, error: &str, description: &str| {
            parse_token_error(
                &answer(
                    status,
                    json!({"error": error, "error_description": format!("{description} Trace ID: 1 Correlation ID: 2"), "error_codes": [1]}),
                ),
                &["app-id-42", "s3cret"],
            )
        };
        let secret = refused(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
        assert_eq!(secret.kind, ErrorKind::Unauthorized);
        assert_eq!(
            secret.message,
            "AADSTS7000215: Invalid client secret provided."
        );
        let app = refused(
            400,
            "unauthorized_client",
            "AADSTS700016: Application with identifier 'app-id-42' was not found in the directory.",
        );
        assert_eq!(app.kind, ErrorKind::Unauthorized);
        assert!(!app.message.contains("app-id-42"));
        assert_eq!(
            refused(
                400,
                "invalid_resource",
                "AADSTS500011: The resource principal named x was not found in the tenant."
            )
            .kind,
            ErrorKind::Misconfigured
        );
        assert_eq!(
            refused(400, "invalid_request", "AADSTS90002: Tenant 'x' not found.").kind,
            ErrorKind::Misconfigured
        );
        assert!(refused(503, "temporarily_unavailable", "AADSTS50196").is_transient());
    }
}
