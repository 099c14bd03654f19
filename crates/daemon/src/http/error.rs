//! The API's error answers: `{"error": {"code", "message", "details"}}`, as the handlers
//! write them and the CLI reads them back.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use unisync_core::FieldViolation;

use crate::edits::EditRejected;
use crate::store::StoreError;

/// An error in the API's JSON shape: `{"error": {"code", "message", "details"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<FieldViolation>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    fn validation(details: Vec<FieldViolation>) -> Self {
        let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: format!("invalid fields: {}", fields.join(", ")),
            details,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store error while answering a request");
        let code = match error {
            // The daemon is on its way out, to restart from what is durable.
            StoreError::Failed(_) => "store_failed",
            _ => "store_unavailable",
        };
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, error.to_string())
    }
}

impl From<EditRejected> for ApiError {
    fn from(rejected: EditRejected) -> Self {
        match rejected {
            EditRejected::Invalid(violations) => ApiError::validation(violations),
            EditRejected::Store(error) => error.into(),
        }
    }
}

/// An error answer's body, as the API writes it and the CLI reads it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code`, words for people, and per-field reasons.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<FieldViolation>,
}

/// A refusal that carries the typed report of what the request did all the same (an import
/// registers its good lines when others are refused): `{"error": {...}, "report": ...}`.
/// A client that knows only the error shape reads it as one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RefusalWithReport<T> {
    pub error: ErrorDetail,
    pub report: T,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.code == "request_timeout" || self.code == "shutting_down" {
            // The rest of the body may still come: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
