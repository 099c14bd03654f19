//! Salesforce's error answers, classified in one place.
//!
//! Salesforce answers errors as a JSON array `[{"message", "errorCode", "fields"}]`; a
//! collection call answers 200 and puts the same errors, keyed `statusCode`, in each record's
//! result. Both go through [`classify`], so one error code means one thing wherever it
//! appears. The CRM's code and message are kept unaltered.

use serde::Deserialize;
use unisync_core::{AdapterError, ContactField, FieldMapping};

use crate::mapping::ACCOUNT_ID;

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

/// Classifies a whole Salesforce answer with status `status` and body `body` (a failed
/// sObject, collection or query call). Field names are translated back through `mapping`.
pub fn parse_error(status: u16, body: &str, mapping: &FieldMapping) -> AdapterError {
    let first = serde_json::from_str::<Vec<SalesforceError>>(body)
        .ok()
        .and_then(|errors| errors.into_iter().next())
        .filter(|error| !error.code.is_empty());
    match first {
        Some(error) => classify(Some(status), &error, mapping),
        // Not Salesforce's error shape: a proxy's page, an empty body. The status decides.
        None => classify(
            Some(status),
            &SalesforceError {
                code: format!("HTTP_{status}"),
                message: body.trim().to_string(),
                fields: Vec::new(),
            },
            mapping,
        ),
    }
}

/// Classifies a refused token request (`{"error": "invalid_grant", "error_description": ..}`).
/// A refused grant is `Unauthorized`: only new credentials help.
pub fn parse_token_error(status: u16, body: &str) -> AdapterError {
    #[derive(Deserialize)]
    struct TokenError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    match serde_json::from_str::<TokenError>(body) {
        Ok(refusal) if status < 500 => {
            AdapterError::unauthorized(refusal.error, refusal.error_description)
        }
        _ if status >= 500 || status == 429 => {
            AdapterError::retryable(format!("HTTP_{status}"), body.trim())
        }
        _ => AdapterError::unauthorized(format!("HTTP_{status}"), body.trim()),
    }
}

/// Classifies one Salesforce error: `status` is the HTTP status of the answer that carried it,
/// `None` for a record's result inside a collection answer.
pub fn classify(
    status: Option<u16>,
    error: &SalesforceError,
    mapping: &FieldMapping,
) -> AdapterError {
    let code = error.code.clone();
    let message = error.message.clone();
    match (status, code.as_str()) {
        (_, "UNABLE_TO_LOCK_ROW" | "SERVER_UNAVAILABLE") => AdapterError::retryable(code, message),
        // The only short-window limit Salesforce has is on concurrent long-running requests;
        // it shares the code of the daily limit and is told apart by its message.
        (_, "REQUEST_LIMIT_EXCEEDED") if message.starts_with("Concurrent") => {
            AdapterError::rate_limited(code, message, None)
        }
        (_, "REQUEST_LIMIT_EXCEEDED") => AdapterError::quota_exhausted(code, message, None),
        (_, "ENTITY_IS_DELETED" | "NOT_FOUND") => AdapterError::record_gone(code, message),
        (Some(401), _) | (_, "INVALID_SESSION_ID") => AdapterError::unauthorized(code, message),
        (Some(429), _) => AdapterError::rate_limited(code, message, None),
        (Some(status), _) if status >= 500 => AdapterError::retryable(code, message),
        _ => AdapterError::permanent(code, message, blamed_field(error, mapping)),
    }
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

#[cfg(test)]
mod tests {
    use unisync_core::ErrorKind;

    use super::*;
    use crate::mapping::default_mapping;

    fn parse(status: u16, body: &str) -> AdapterError {
        parse_error(status, body, &default_mapping())
    }

    fn body(code: &str, message: &str, fields: &[&str]) -> String {
        serde_json::json!([{"message": message, "errorCode": code, "fields": fields}]).to_string()
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
            ("INVALID_FIELD", "Birthdate", "Birthdate"),
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
            &body("STRING_TOO_LONG", "too long", &["Job_Title__c"]),
            &mapping,
        );
        assert_eq!(error.field(), Some("position"));
    }

    #[test]
    fn sessions_and_retired_versions() {
        let expired = parse(
            401,
            &body("INVALID_SESSION_ID", "Session expired or invalid", &[]),
        );
        assert_eq!(expired.kind, ErrorKind::Unauthorized);
        assert_eq!(expired.message, "Session expired or invalid");
        let retired = parse(410, "");
        assert_eq!(retired.kind, ErrorKind::Permanent { field: None });
        assert_eq!(retired.code, "HTTP_410");
    }

    #[test]
    fn refused_grants_are_unauthorized_with_salesforces_words() {
        let error = parse_token_error(
            400,
            r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
        );
        assert_eq!(error.kind, ErrorKind::Unauthorized);
        assert_eq!(error.code, "invalid_grant");
        assert_eq!(error.message, "expired access/refresh token");
        assert!(matches!(
            parse_token_error(503, "down").kind,
            ErrorKind::Retryable { .. }
        ));
    }

    #[test]
    fn collection_results_use_status_code() {
        let result: SalesforceError = serde_json::from_str(
            r#"{"statusCode":"STRING_TOO_LONG","message":"FirstName: data value too large","fields":["FirstName"]}"#,
        )
        .unwrap();
        let error = classify(None, &result, &default_mapping());
        assert_eq!(error.code, "STRING_TOO_LONG");
        assert_eq!(error.field(), Some("first_name"));
        let locked = SalesforceError {
            code: "UNABLE_TO_LOCK_ROW".into(),
            ..SalesforceError::default()
        };
        assert!(classify(None, &locked, &default_mapping()).is_transient());
    }
}
