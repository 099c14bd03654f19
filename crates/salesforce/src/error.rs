//! Salesforce's error answers, classified in one place.
//!
//! Salesforce answers errors as a JSON array `[{"message", "errorCode", "fields"}]`; a
//! collection call answers 200 and puts the same errors, keyed `statusCode`, in each record's
//! result. Both go through [`classify`], so one error code means one thing wherever it
//! appears. The CRM's code and message are kept unaltered, except the token endpoint's, which
//! may quote the credentials sent to it (see [`parse_token_error`]).
//!
//! Refusals of the whole connection are [`ErrorKind::Misconfigured`], never a dead letter:
//! - `API_DISABLED_FOR_ORG`, `API_CURRENTLY_DISABLED`: the org or the user may not use the API.
//! - `INSUFFICIENT_ACCESS_OR_READONLY` about the object rather than one record. Salesforce
//!   uses the code for both; a record's sharing is refused with "insufficient access rights
//!   on object id" (the "object id" being the record's id), anything else (a missing object
//!   permission) is about the object. So: a query or a collections call refused as a whole, a
//!   single-record write refused with any other message, or every record of a collections
//!   answer refused with the code, is the object's; one record refused among others, or a
//!   single-record write refused with the sharing message, is that record's (`Permanent`).
//! - "entity type cannot be updated: Contact", whatever its code: the user may not edit
//!   Contacts at all.
//! - `INVALID_FIELD` / `INVALID_FIELD_FOR_INSERT_UPDATE` naming a field the connection's
//!   mapping writes or reads: the field is missing from the org or not writable for the user.
//! - `NOT_FOUND` for the URL rather than a record: Salesforce answers a path it does not serve
//!   (a wrong api_version or instance) 404 `NOT_FOUND` "The requested resource does not exist",
//!   exactly as it answers a missing record on `sobjects/Contact/{Id}`. On a query or a
//!   collections call NOT_FOUND can only be the URL's (a missing record is left out of a
//!   query and reported per record in a collections answer); on a single-record URL it is
//!   `RecordGone` here and the adapter confirms it with a query before trusting it. A 410
//!   (retired API version) and a 404 without Salesforce's error body are the URL's too.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde::Deserialize;
use unisync_core::{AdapterError, ContactField, ErrorKind, FieldMapping};
use unisync_kit::retry_after;

use crate::mapping::{ACCOUNT_ID, contact_columns};

/// The longest wait a `Retry-After` can impose. A longer one (or a date far ahead) is cut to
/// this, so that a garbled or hostile header cannot park a connection for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

/// The message Salesforce gives when one record's sharing refuses the user.
const RECORD_SHARING_REFUSAL: &str = "insufficient access rights on object id";

/// One error as Salesforce reports it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct SalesforceError {
    /// `errorCode` in ordinary answers, `statusCode` in collection results.
    #[serde(alias = "errorCode", alias = "statusCode", default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// What a request was about, which decides what `NOT_FOUND` and access refusals mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `sobjects/Contact/{Id}`: a `NOT_FOUND` may be the record's or the URL's.
    OneRecord,
    /// A collections call or a query: a `NOT_FOUND` can only be the URL's, and an access
    /// refusal of the whole call only the object's.
    ManyRecords,
}

/// Where an error was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A whole answer: its HTTP status, what the request was about, and the wait its
    /// `Retry-After` header asked for.
    Answer {
        status: u16,
        scope: Scope,
        retry_after: Option<Duration>,
    },
    /// One record's result inside a 200 collections answer. `whole_batch`: every record of
    /// the answer (two or more) failed with this same code, so the call was refused, not the
    /// record.
    RecordResult { whole_batch: bool },
}

/// Classifies a whole Salesforce answer (a failed sObject, collection or query call) with
/// status `status`, headers `headers` and body `body`, for a request about `scope`. Field
/// names are translated back through `mapping`.
pub fn parse_error(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    scope: Scope,
    mapping: &FieldMapping,
) -> AdapterError {
    let origin = Origin::Answer {
        status,
        scope,
        retry_after: retry_after(headers, SystemTime::now(), MAX_RETRY_AFTER),
    };
    let first = serde_json::from_str::<Vec<SalesforceError>>(body)
        .ok()
        .and_then(|errors| errors.into_iter().next())
        .filter(|error| !error.code.is_empty());
    match first {
        Some(error) => classify(origin, &error, mapping),
        // Not Salesforce's error shape: a proxy's page, an empty body. The status decides.
        None => classify(
            origin,
            &SalesforceError {
                code: format!("HTTP_{status}"),
                message: body.trim().to_string(),
                fields: Vec::new(),
            },
            mapping,
        ),
    }
}

/// Classifies one Salesforce error reported at `origin`.
pub fn classify(origin: Origin, error: &SalesforceError, mapping: &FieldMapping) -> AdapterError {
    let code = error.code.clone();
    let message = error.message.clone();
    if refuses_the_connection(origin, error, mapping) {
        return AdapterError::misconfigured(code, message);
    }
    let (status, retry_after) = match origin {
        Origin::Answer {
            status,
            retry_after,
            ..
        } => (Some(status), retry_after),
        Origin::RecordResult { .. } => (None, None),
    };
    let retryable =
        |code, message| AdapterError::new(ErrorKind::Retryable { retry_after }, code, message);
    match (status, code.as_str()) {
        (_, "UNABLE_TO_LOCK_ROW" | "SERVER_UNAVAILABLE") => retryable(code, message),
        // The only short-window limit Salesforce has is on concurrent long-running requests;
        // it shares the code of the daily limit and is told apart by its message.
        (_, "REQUEST_LIMIT_EXCEEDED") if message.starts_with("Concurrent") => {
            AdapterError::rate_limited(code, message, retry_after)
        }
        (_, "REQUEST_LIMIT_EXCEEDED") => AdapterError::quota_exhausted(code, message, retry_after),
        (_, "ENTITY_IS_DELETED" | "NOT_FOUND") => AdapterError::record_gone(code, message),
        (Some(401), _) | (_, "INVALID_SESSION_ID") => AdapterError::unauthorized(code, message),
        (Some(429), _) => AdapterError::rate_limited(code, message, retry_after),
        (Some(status), _) if status >= 500 => retryable(code, message),
        _ => AdapterError::permanent(code, message, blamed_field(error, mapping)),
    }
}

/// Whether `error` refuses every write of the connection (see the module notes).
fn refuses_the_connection(origin: Origin, error: &SalesforceError, mapping: &FieldMapping) -> bool {
    let (status, scope) = match origin {
        Origin::Answer { status, scope, .. } => (Some(status), Some(scope)),
        Origin::RecordResult { .. } => (None, None),
    };
    match error.code.as_str() {
        "API_DISABLED_FOR_ORG" | "API_CURRENTLY_DISABLED" => true,
        "NOT_FOUND" => scope == Some(Scope::ManyRecords),
        "INSUFFICIENT_ACCESS_OR_READONLY" => match origin {
            Origin::Answer {
                scope: Scope::ManyRecords,
                ..
            } => true,
            Origin::Answer {
                scope: Scope::OneRecord,
                ..
            } => !error
                .message
                .to_ascii_lowercase()
                .starts_with(RECORD_SHARING_REFUSAL),
            Origin::RecordResult { whole_batch } => whole_batch,
        },
        "INVALID_FIELD" | "INVALID_FIELD_FOR_INSERT_UPDATE" => names_a_mapped_field(error, mapping),
        "INVALID_TYPE" => scope.is_some(),
        _ => {
            error.message.starts_with("entity type cannot be updated")
                || status == Some(410)
                || (status == Some(404) && error.code == "HTTP_404")
        }
    }
}

/// Whether the field `error` is about is one the connection's mapping writes or reads: named
/// in `fields`, or in the message as `No such column 'X' ...`.
fn names_a_mapped_field(error: &SalesforceError, mapping: &FieldMapping) -> bool {
    let quoted = error
        .message
        .split_once("No such column '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(column, _)| column);
    let mut columns = contact_columns(mapping);
    columns.extend(mapping.extra_fields());
    error
        .fields
        .iter()
        .map(String::as_str)
        .chain(quoted)
        .any(|named| {
            columns
                .iter()
                .any(|column| column.eq_ignore_ascii_case(named))
        })
}

/// The unified name of the first field Salesforce blamed; a field the table does not map is
/// named as Salesforce named it.
fn blamed_field(error: &SalesforceError, mapping: &FieldMapping) -> Option<String> {
    let crm_field = error.fields.first()?;
    let unified = if crm_field == ACCOUNT_ID {
        Some(ContactField::UnifiedCustomerId)
    } else {
        mapping.unified_field(crm_field)
    };
    Some(unified.map_or_else(|| crm_field.clone(), |field| field.name().to_string()))
}

/// Classifies why a Bulk API 2.0 job left `unprocessed` records unprocessed: `aborted`
/// (someone aborted the job), or the `Failed` job's `errorMessage`, which Salesforce writes
/// as `Code : message` (`InvalidBatch : Field name not found : Foo__c`). The records were not
/// written, so nothing is a dead letter:
/// - a column Salesforce does not know (`Field name not found`) that the connection's mapping
///   writes, or Bulk API not enabled / not permitted (`FeatureNotEnabled`, `InvalidUser`):
///   `Misconfigured`;
/// - the org's daily Bulk record allowance spent (`ExceededQuota`): `QuotaExhausted`;
/// - anything else (an abort, timeouts, lock contention, retries exhausted): `Retryable`.
pub fn classify_job_failure(
    aborted: bool,
    error_message: Option<&str>,
    mapping: &FieldMapping,
) -> AdapterError {
    if aborted {
        return AdapterError::retryable(
            "BULK_JOB_ABORTED",
            "the Bulk API job was aborted before Salesforce processed this record",
        );
    }
    let text = error_message.unwrap_or("the Bulk API job failed without a message");
    let (code, message) = match text.split_once(" : ") {
        Some((code, message)) if !code.is_empty() && !code.contains(' ') => (code, message),
        _ => ("BULK_JOB_FAILED", text),
    };
    let unknown_column = message
        .strip_prefix("Field name not found : ")
        .map(str::trim)
        .is_some_and(|column| {
            let error = SalesforceError {
                fields: vec![column.to_string()],
                ..SalesforceError::default()
            };
            column == ACCOUNT_ID || names_a_mapped_field(&error, mapping)
        });
    match code {
        _ if unknown_column => AdapterError::misconfigured(code, message),
        "FeatureNotEnabled" | "InvalidUser" => AdapterError::misconfigured(code, message),
        "ExceededQuota" => AdapterError::quota_exhausted(code, message, None),
        _ => AdapterError::retryable(code, message),
    }
}

/// The OAuth error codes Salesforce's token endpoint answers (its "OAuth 2.0 Authorization
/// Errors"). Any other `error` value is not repeated: it could be anything, a credential too.
const TOKEN_ERROR_CODES: &[&str] = &[
    "invalid_grant",
    "invalid_client_id",
    "invalid_client",
    "invalid_client_credentials",
    "invalid_request",
    "unsupported_grant_type",
    "unsupported_response_type",
    "invalid_scope",
    "access_denied",
    "inactive_user",
    "inactive_org",
    "rate_limit_exceeded",
    "redirect_uri_mismatch",
];

/// Salesforce's documented `error_description`s, which name no credential and are kept as
/// they came. Any other description is replaced: an endpoint may quote what it was sent.
const TOKEN_ERROR_DESCRIPTIONS: &[&str] = &[
    "expired access/refresh token",
    "authentication failure",
    "client identifier invalid",
    "invalid client credentials",
    "grant type not supported",
    "invalid assertion",
    "invalid assertion expiration",
    "Audience validation failed",
    "user hasn't approved this consumer",
    "inactive user",
    "inactive organization",
    "IP restricted or invalid login hours",
    "invalid user credentials",
    "invalid authorization code",
    "token validity expired",
    "no client credentials user enabled",
    "request not supported on this domain",
];

/// Classifies a refused token request (`{"error": "invalid_grant", "error_description": ..}`)
/// without ever repeating the answer's own text beyond Salesforce's known codes and
/// descriptions: the token endpoint receives the client secret and refresh token, and a
/// proxy or a misbehaving endpoint may echo them back.
/// - 5xx and 429: `Retryable`, after the wait its `Retry-After` header asks for.
/// - 404: `Misconfigured`, no token endpoint at `login_url`.
/// - any other refusal: `Unauthorized`, only new credentials help.
pub fn parse_token_error(status: u16, headers: &HeaderMap, body: &str) -> AdapterError {
    #[derive(Deserialize)]
    struct TokenError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let http_code = format!("HTTP_{status}");
    if status >= 500 || status == 429 {
        return AdapterError::new(
            ErrorKind::Retryable {
                retry_after: retry_after(headers, SystemTime::now(), MAX_RETRY_AFTER),
            },
            http_code,
            format!("the token endpoint answered HTTP {status}"),
        );
    }
    if status == 404 {
        return AdapterError::misconfigured(
            http_code,
            "no token endpoint at the login_url: HTTP 404 for /services/oauth2/token",
        );
    }
    let Ok(refusal) = serde_json::from_str::<TokenError>(body) else {
        return AdapterError::unauthorized(
            http_code,
            format!(
                "the token endpoint refused the request with HTTP {status}; its answer is not \
                 repeated, as it may quote the credentials sent"
            ),
        );
    };
    let code = TOKEN_ERROR_CODES
        .iter()
        .find(|known| **known == refusal.error)
        .map_or("TOKEN_REFUSED", |known| known);
    let message = match TOKEN_ERROR_DESCRIPTIONS
        .iter()
        .find(|known| **known == refusal.error_description)
    {
        Some(known) => known.to_string(),
        None => format!(
            "Salesforce refused the token request ({code}); its description is not repeated, \
             as it may quote the credentials sent"
        ),
    };
    AdapterError::unauthorized(code, message)
}

/// Says what is wrong with a token endpoint answer that is not the JSON expected, by the
/// kind and place of the fault only: the answer holds the tokens.
pub fn unreadable_token_answer(error: &serde_json::Error) -> AdapterError {
    AdapterError::retryable(
        "TOKEN_ANSWER",
        format!(
            "the token endpoint's answer is not the JSON Salesforce sends ({:?} error at line \
             {} column {}); its text is not repeated, as it holds the tokens",
            error.classify(),
            error.line(),
            error.column()
        ),
    )
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;
    use crate::mapping::default_mapping;

    /// A whole answer to a single-record call, without headers.
    fn parse(status: u16, body: &str) -> AdapterError {
        parse_in(status, body, Scope::OneRecord)
    }

    fn parse_in(status: u16, body: &str, scope: Scope) -> AdapterError {
        parse_error(status, &HeaderMap::new(), body, scope, &default_mapping())
    }

    fn body(code: &str, message: &str, fields: &[&str]) -> String {
        serde_json::json!([{"message": message, "errorCode": code, "fields": fields}]).to_string()
    }

    fn record_result(code: &str, message: &str, whole_batch: bool) -> AdapterError {
        let error = SalesforceError {
            code: code.into(),
            message: message.into(),
            fields: Vec::new(),
        };
        classify(
            Origin::RecordResult { whole_batch },
            &error,
            &default_mapping(),
        )
    }

    #[test]
    fn transient_answers_are_retryable() {
        let retryable = ErrorKind::Retryable { retry_after: None };
        for (status, code) in [
            (400, "UNABLE_TO_LOCK_ROW"),
            (500, "UNABLE_TO_LOCK_ROW"),
            (503, "SERVER_UNAVAILABLE"),
            (500, "UNKNOWN_EXCEPTION"),
        ] {
            let error = parse(status, &body(code, "try later", &[]));
            assert_eq!(error.kind, retryable, "{status} {code}");
            assert_eq!(error.code, code);
            assert_eq!(error.message, "try later");
        }
        let html = parse(502, "<html>Bad Gateway</html>");
        assert_eq!(html.kind, retryable);
        assert_eq!(html.code, "HTTP_502");
        assert_eq!(html.message, "<html>Bad Gateway</html>");
    }

    #[test]
    fn request_limits_are_told_apart_by_message() {
        let daily = parse(
            403,
            &body(
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
                &[],
            ),
        );
        assert_eq!(daily.kind, ErrorKind::QuotaExhausted { retry_after: None });
        assert_eq!(daily.message, "TotalRequests Limit exceeded.");
        let concurrent = parse(
            403,
            &body(
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
                &[],
            ),
        );
        assert_eq!(
            concurrent.kind,
            ErrorKind::RateLimited { retry_after: None }
        );
    }

    #[test]
    fn missing_records_are_gone() {
        for (status, code) in [(404, "NOT_FOUND"), (404, "ENTITY_IS_DELETED")] {
            let error = parse(status, &body(code, "entity is deleted", &[]));
            assert_eq!(error.kind, ErrorKind::RecordGone);
            assert_eq!(error.code, code);
        }
        for code in ["NOT_FOUND", "ENTITY_IS_DELETED"] {
            assert_eq!(
                record_result(code, "gone", false).kind,
                ErrorKind::RecordGone
            );
            assert_eq!(
                record_result(code, "gone", true).kind,
                ErrorKind::RecordGone
            );
        }
        let deleted = parse_in(
            404,
            &body("ENTITY_IS_DELETED", "entity is deleted", &[]),
            Scope::ManyRecords,
        );
        assert_eq!(deleted.kind, ErrorKind::RecordGone);
    }

    #[test]
    fn a_url_that_is_not_served_refuses_the_connection_not_the_records() {
        let unrouted = body("NOT_FOUND", "The requested resource does not exist", &[]);
        let error = parse_in(404, &unrouted, Scope::ManyRecords);
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.code, "NOT_FOUND");
        assert_eq!(error.message, "The requested resource does not exist");
        for (status, text) in [(404, "<html>Not Found</html>"), (410, "")] {
            for scope in [Scope::OneRecord, Scope::ManyRecords] {
                let error = parse_in(status, text, scope);
                assert_eq!(error.kind, ErrorKind::Misconfigured, "{status} {scope:?}");
                assert_eq!(error.code, format!("HTTP_{status}"));
            }
        }
        let retired = parse(
            410,
            &body("API_VERSION_RETIRED", "API version v30.0 is retired", &[]),
        );
        assert_eq!(retired.kind, ErrorKind::Misconfigured);
    }

    #[test]
    fn a_disabled_api_refuses_the_connection() {
        for code in ["API_DISABLED_FOR_ORG", "API_CURRENTLY_DISABLED"] {
            for scope in [Scope::OneRecord, Scope::ManyRecords] {
                let error = parse_in(403, &body(code, "API is not enabled", &[]), scope);
                assert_eq!(error.kind, ErrorKind::Misconfigured);
                assert_eq!(error.code, code);
                assert_eq!(error.message, "API is not enabled");
            }
        }
    }

    #[test]
    fn access_refusals_of_the_object_refuse_the_connection_and_of_a_record_only_it() {
        let code = "INSUFFICIENT_ACCESS_OR_READONLY";
        let sharing = "insufficient access rights on object id";
        let object = "You do not have the level of access necessary to perform the operation \
                      you requested.";
        let kind = |status, message, scope| parse_in(status, &body(code, message, &[]), scope).kind;
        assert_eq!(
            kind(403, object, Scope::OneRecord),
            ErrorKind::Misconfigured
        );
        assert_eq!(
            kind(403, sharing, Scope::ManyRecords),
            ErrorKind::Misconfigured
        );
        assert_eq!(
            kind(400, sharing, Scope::OneRecord),
            ErrorKind::Permanent { field: None }
        );
        assert_eq!(
            record_result(code, sharing, false).kind,
            ErrorKind::Permanent { field: None }
        );
        assert_eq!(
            record_result(code, sharing, true).kind,
            ErrorKind::Misconfigured
        );
        let not_editable = parse(
            400,
            &body(
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                "entity type cannot be updated: Contact",
                &[],
            ),
        );
        assert_eq!(not_editable.kind, ErrorKind::Misconfigured);
        assert_eq!(not_editable.code, "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY");
        let trigger = record_result(
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "npsp.TDTM_Contact: execution of AfterUpdate caused by: ...",
            false,
        );
        assert_eq!(trigger.kind, ErrorKind::Permanent { field: None });
    }

    #[test]
    fn a_mapped_field_the_org_lacks_refuses_the_connection() {
        let overrides = [("position".to_string(), "Job_Title__c".to_string())].into();
        let mapping = default_mapping().with_overrides(&overrides).unwrap();
        for (code, message, fields, scope) in [
            (
                "INVALID_FIELD",
                "No such column 'Job_Title__c' on sobject of type Contact",
                &[][..],
                Scope::OneRecord,
            ),
            (
                "INVALID_FIELD",
                "\nSELECT Id, job_title__c FROM Contact\n^\nERROR at Row:1:Column:12\nNo such \
                 column 'job_title__c' on entity 'Contact'.",
                &[],
                Scope::ManyRecords,
            ),
            (
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "Unable to create/update fields: Job_Title__c.",
                &["Job_Title__c"],
                Scope::OneRecord,
            ),
            (
                "INVALID_FIELD",
                "No such column 'LastModifiedDate' on entity 'Contact'.",
                &[],
                Scope::ManyRecords,
            ),
        ] {
            let error = parse_error(
                400,
                &HeaderMap::new(),
                &body(code, message, fields),
                scope,
                &mapping,
            );
            assert_eq!(error.kind, ErrorKind::Misconfigured, "{message}");
            assert_eq!(error.code, code);
            assert_eq!(error.message, message);
        }
        // A field the mapping does not name is not the connection's doing.
        let unmapped = parse(
            400,
            &body(
                "INVALID_FIELD",
                "No such column 'Birthdate'",
                &["Birthdate"],
            ),
        );
        assert_eq!(
            unmapped.kind,
            ErrorKind::Permanent {
                field: Some("Birthdate".into())
            }
        );
    }

    #[test]
    fn refused_values_are_permanent_and_name_the_unified_field() {
        for (code, crm_field, unified) in [
            ("STRING_TOO_LONG", "FirstName", "first_name"),
            ("REQUIRED_FIELD_MISSING", "LastName", "last_name"),
            ("INVALID_EMAIL_ADDRESS", "Email", "email"),
            (
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "MailingPostalCode",
                "zip",
            ),
            ("DUPLICATES_DETECTED", "Email", "email"),
            (
                "INVALID_CROSS_REFERENCE_KEY",
                "AccountId",
                "unified_customer_id",
            ),
        ] {
            let error = parse(400, &body(code, "refused as sent", &[crm_field]));
            assert_eq!(error.field(), Some(unified), "{code}");
            assert_eq!(error.code, code);
            assert_eq!(error.message, "refused as sent");
            assert!(!error.is_transient());
        }
        let unfielded = parse(
            400,
            &body("DUPLICATES_DETECTED", "Use one of these records?", &[]),
        );
        assert_eq!(unfielded.kind, ErrorKind::Permanent { field: None });
    }

    #[test]
    fn renamed_fields_are_translated_through_the_table() {
        let overrides = [("position".to_string(), "Job_Title__c".to_string())].into();
        let mapping = default_mapping().with_overrides(&overrides).unwrap();
        let error = parse_error(
            400,
            &HeaderMap::new(),
            &body("STRING_TOO_LONG", "too long", &["Job_Title__c"]),
            Scope::OneRecord,
            &mapping,
        );
        assert_eq!(error.field(), Some("position"));
    }

    #[test]
    fn expired_sessions_are_unauthorized() {
        let expired = parse(
            401,
            &body("INVALID_SESSION_ID", "Session expired or invalid", &[]),
        );
        assert_eq!(expired.kind, ErrorKind::Unauthorized);
        assert_eq!(expired.message, "Session expired or invalid");
    }

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(retry_after).unwrap(),
        );
        headers
    }

    #[test]
    fn retry_after_reaches_the_classes_that_wait() {
        let parse_with = |status, code: &str, message: &str| {
            parse_error(
                status,
                &headers("42"),
                &body(code, message, &[]),
                Scope::ManyRecords,
                &default_mapping(),
            )
            .kind
        };
        let wait = Some(Duration::from_secs(42));
        assert_eq!(
            parse_with(503, "SERVER_UNAVAILABLE", "down"),
            ErrorKind::Retryable { retry_after: wait }
        );
        assert_eq!(
            parse_with(429, "TOO_MANY", "slow down"),
            ErrorKind::RateLimited { retry_after: wait }
        );
        assert_eq!(
            parse_with(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn"),
            ErrorKind::RateLimited { retry_after: wait }
        );
        assert_eq!(
            parse_with(
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded."
            ),
            ErrorKind::QuotaExhausted { retry_after: wait }
        );
    }

    #[test]
    fn refused_grants_keep_salesforces_documented_words_only() {
        let error = parse_token_error(
            400,
            &HeaderMap::new(),
            r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
        );
        assert_eq!(error.kind, ErrorKind::Unauthorized);
        assert_eq!(error.code, "invalid_grant");
        assert_eq!(error.message, "expired access/refresh token");
        let echoed = parse_token_error(
            400,
            &HeaderMap::new(),
            r#"{"error":"invalid_grant","error_description":"bad token 5Aep861secret"}"#,
        );
        assert_eq!(echoed.code, "invalid_grant");
        assert!(!echoed.message.contains("5Aep861secret"), "{echoed:?}");
        let odd_code = parse_token_error(400, &HeaderMap::new(), r#"{"error":"5Aep861secret"}"#);
        assert_eq!(odd_code.code, "TOKEN_REFUSED");
        assert!(!odd_code.message.contains("5Aep861secret"));
        let not_json = parse_token_error(401, &HeaderMap::new(), "refresh_token=5Aep861secret");
        assert_eq!(not_json.kind, ErrorKind::Unauthorized);
        assert_eq!(not_json.code, "HTTP_401");
        assert!(!not_json.message.contains("5Aep861secret"));
        let down = parse_token_error(503, &HeaderMap::new(), "client_secret=s3cr3t");
        assert!(matches!(down.kind, ErrorKind::Retryable { .. }));
        assert!(!down.message.contains("s3cr3t"));
        assert_eq!(
            parse_token_error(404, &HeaderMap::new(), "").kind,
            ErrorKind::Misconfigured,
            "no token endpoint at the login_url"
        );
    }

    #[test]
    fn a_token_endpoint_outage_keeps_its_retry_after() {
        for status in [429, 503] {
            assert_eq!(
                parse_token_error(status, &headers("42"), "").kind,
                ErrorKind::Retryable {
                    retry_after: Some(Duration::from_secs(42))
                },
                "{status}"
            );
        }
        assert_eq!(
            parse_token_error(503, &headers("86400"), "").kind,
            ErrorKind::Retryable {
                retry_after: Some(MAX_RETRY_AFTER)
            },
            "bounded"
        );
    }

    #[test]
    fn failed_jobs_are_classified_by_their_error_message() {
        let mapping = default_mapping();
        let failure = |message: &str| classify_job_failure(false, Some(message), &mapping);
        let column = failure("InvalidBatch : Field name not found : MailingPostalCode");
        assert_eq!(column.kind, ErrorKind::Misconfigured);
        assert_eq!(column.code, "InvalidBatch");
        assert_eq!(column.message, "Field name not found : MailingPostalCode");
        assert_eq!(
            failure("InvalidBatch : Field name not found : AccountId").kind,
            ErrorKind::Misconfigured
        );
        assert_eq!(
            failure("FeatureNotEnabled : Bulk API 2.0 is not enabled").kind,
            ErrorKind::Misconfigured
        );
        assert_eq!(
            failure("ExceededQuota : daily Bulk API record limit exceeded").kind,
            ErrorKind::QuotaExhausted { retry_after: None }
        );
        let retryable = ErrorKind::Retryable { retry_after: None };
        for transient in [
            "TooManyLockFailure : too many lock failures",
            "InvalidBatch : Field name not found : Birthdate",
            "something went wrong",
        ] {
            assert_eq!(failure(transient).kind, retryable, "{transient}");
        }
        let wordless = classify_job_failure(false, None, &mapping);
        assert_eq!(
            (wordless.kind, wordless.code.as_str()),
            (retryable.clone(), "BULK_JOB_FAILED")
        );
        let aborted = classify_job_failure(true, None, &mapping);
        assert_eq!(
            (aborted.kind, aborted.code.as_str()),
            (retryable, "BULK_JOB_ABORTED")
        );
    }

    #[test]
    fn collection_results_use_status_code() {
        let result: SalesforceError = serde_json::from_str(
            r#"{"statusCode":"STRING_TOO_LONG","message":"FirstName: data value too large","fields":["FirstName"]}"#,
        )
        .unwrap();
        let error = classify(
            Origin::RecordResult { whole_batch: false },
            &result,
            &default_mapping(),
        );
        assert_eq!(error.code, "STRING_TOO_LONG");
        assert_eq!(error.field(), Some("first_name"));
        assert!(record_result("UNABLE_TO_LOCK_ROW", "", true).is_transient());
    }
}
