//! Operator routes of the running daemon (admin tokens only), so that CLI commands work while the
//! daemon holds the store's lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::api::{ApiError, AppState, Scope, require_bearer};
use crate::connections::Connections;
use crate::ops;
use crate::store::{ReplayAttempt, StoreError};

pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/admin/status", get(status))
        .route("/api/v1/admin/dead-letters", get(list))
        .route("/api/v1/admin/dead-letters/retry-all", post(retry_all))
        .route(
            "/api/v1/admin/dead-letters/{id}",
            get(show).delete(drop_letter),
        )
        .route("/api/v1/admin/dead-letters/{id}/retry", post(retry))
        .route("/api/v1/admin/contacts", post(import_contacts))
        .route("/api/v1/admin/customers", post(import_customers))
        .route(
            "/api/v1/admin/contacts/pull/{connection}",
            post(pull_contacts),
        )
        .route_layer(middleware::from_fn_with_state(
            (state, Scope::Admin),
            require_bearer,
        ))
}

async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let names: Vec<String> = state
        .connections
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let in_flight = state
        .connections
        .iter()
        .map(|c| {
            (
                c.name().to_string(),
                c.metrics.in_flight.load(Ordering::Relaxed),
            )
        })
        .collect();
    let mut status = ops::status(&state.store, &names, &in_flight).await?;
    status["disabled"] = state
        .connections
        .iter()
        .filter(|c| !c.settings.enabled)
        .map(|c| Value::from(c.name()))
        .collect();
    let pauses: serde_json::Map<String, Value> = state
        .connections
        .iter()
        .map(|c| (c.name().to_string(), json!(c.pause())))
        .collect();
    let usage: serde_json::Map<String, Value> = state
        .connections
        .iter()
        .filter_map(|c| {
            c.adapter().api_usage().map(|u| {
                (
                    c.name().to_string(),
                    json!({"used": u.used, "limit": u.limit}),
                )
            })
        })
        .collect();
    status["pauses"] = Value::Object(pauses);
    status["api_usage"] = Value::Object(usage);
    Ok(Json(status))
}

async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ops::list_dead_letters(&state.store).await?))
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let letter = state
        .store
        .dead_letter_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter `{id}`")))?;
    Ok(Json(ops::dead_letter_json(&letter)))
}

fn settled<T>(result: Result<T, StoreError>, id: &str) -> Result<T, ApiError> {
    result.map_err(|error| match error {
        StoreError::UnknownDeadLetter(_) => ApiError::not_found(format!("no dead letter `{id}`")),
        other => other.into(),
    })
}

/// Wakes the connection of every letter whose edit went back in the queue.
fn wake(connections: &Connections, attempts: &[ReplayAttempt]) {
    for attempt in attempts {
        if let Ok(replay) = &attempt.outcome
            && !replay.superseded()
            && let Some(connection) = connections.get(&replay.letter.connection)
        {
            connection.wake.notify_one();
        }
    }
}

async fn retry(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let replay = settled(state.store.replay_dead_letter(&id).await, &id)?;
    state.store.flush().await?;
    let attempts = [ReplayAttempt {
        letter_id: id,
        outcome: Ok(replay),
    }];
    wake(&state.connections, &attempts);
    Ok(Json(ops::replay_json(&attempts)))
}

async fn retry_all(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let attempts = state.store.replay_all_dead_letters().await?;
    state.store.flush().await?;
    wake(&state.connections, &attempts);
    Ok(Json(ops::replay_json(&attempts)))
}

async fn drop_letter(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let letter = settled(state.store.drop_dead_letter(&id).await, &id)?;
    state.store.flush().await?;
    Ok(Json(json!({"dropped": [letter.id]})))
}

async fn import_contacts(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let report = ops::import_contacts(&state.store, &state.connections, body.as_ref()).await;
    imported(&state, report).await
}

async fn import_customers(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let report = ops::import_customers(&state.store, body.as_ref()).await;
    imported(&state, report).await
}

/// Answers an import's report once what it registered is durable.
async fn imported(
    state: &AppState,
    report: Result<ops::ImportReport, StoreError>,
) -> Result<Response, ApiError> {
    let report = report?;
    state.store.flush().await?;
    Ok((StatusCode::OK, Json(json!(report))).into_response())
}

async fn pull_contacts(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let connection = state
        .connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no connection named `{name}`")))?;
    let report = crate::pull::pull_contacts(&state.store, connection)
        .await
        .map_err(|message| ApiError::new(StatusCode::BAD_GATEWAY, "pull_failed", message))?;
    Ok(Json(json!(report)))
}
