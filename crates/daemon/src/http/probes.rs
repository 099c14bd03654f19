//! The probes: liveness, readiness and Prometheus metrics, open to anyone.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::AppState;
use crate::metrics;
use crate::store::now_ms;
use crate::timefmt::rfc3339;

/// 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut stuck = false;
    let connections: serde_json::Map<String, Value> = state
        .connections
        .iter()
        .map(|connection| {
            let status = match connection.pause() {
                // Its edits are kept; it pushes nothing until enabled again, by choice.
                _ if !connection.settings.enabled => json!({"state": "disabled"}),
                None => json!({"state": "ok"}),
                Some(pause) => {
                    stuck |= pause.reason.lifts_by_probe();
                    json!({
                        "state": "paused",
                        "reason": pause.reason,
                        "until": rfc3339(pause.until_ms),
                        "code": pause.code,
                        "message": pause.message,
                    })
                }
            };
            (connection.name().to_string(), status)
        })
        .collect();
    let store_failure = state.store.failure();
    let store = if store_failure.is_some() {
        "failed"
    } else if state.store.next_ready_at("").await.is_ok() {
        "open"
    } else {
        "unavailable"
    };
    let ready = store == "open" && !stuck;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": store,
        "connections": connections,
        "checked_at": rfc3339(now_ms()),
    });
    if let Some(failure) = store_failure {
        body["store_error"] = json!(failure);
    }
    (status, Json(body)).into_response()
}

pub async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    match metrics::render(&state.store, &state.connections).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}
