//! The OpenAPI 3.1 document of every route, built into the binary.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, served at `/api/v1/openapi.json`; a test compares it with
/// [`super::routes`], so neither can drift from the other.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
