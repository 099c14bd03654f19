//! The operator routes of the running daemon (admin tokens), so that CLI commands work while
//! the daemon holds the store's lock. Each answers the typed report of [`crate::ops`] that the
//! CLI makes itself when it opens the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::body::next_chunk;
use super::error::ApiError;
use super::state::AppState;
use crate::connections::Connections;
use crate::ops::{
    self, ApiUsageView, DeadLetterList, DeadLetterView, DropReport, Import, Importer, PauseView,
    ReplayReport, StatusReport,
};
use crate::store::{ReplayAttempt, StoreError};

pub async fn status(State(state): State<Arc<AppState>>) -> Result<Json<StatusReport>, ApiError> {
    let in_force = state.connections.get();
    let connections = || in_force.iter();
    let names: Vec<String> = connections().map(|c| c.name().to_string()).collect();
    let in_flight = connections()
        .map(|c| {
            (
                c.name().to_string(),
                c.metrics.in_flight.load(Ordering::Relaxed),
            )
        })
        .collect();
    let disabled = connections()
        .filter(|c| !c.settings.enabled)
        .map(|c| c.name().to_string())
        .collect();
    let mut status = ops::status(&state.store, &names, &in_flight, disabled).await?;
    status.pauses = connections()
        .filter_map(|c| Some((c.name().to_string(), PauseView::new(&c.pause()?))))
        .collect();
    status.api_usage = connections()
        .filter_map(|c| {
            let usage = c.adapter().api_usage()?;
            let view = ApiUsageView {
                used: usage.used,
                limit: usage.limit,
            };
            Some((c.name().to_string(), view))
        })
        .collect();
    Ok(Json(status))
}

pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<DeadLetterList>, ApiError> {
    Ok(Json(ops::list_dead_letters(&state.store).await?))
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterView>, ApiError> {
    let letter = state
        .store
        .dead_letter_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter `{id}`")))?;
    Ok(Json(DeadLetterView::new(&letter)))
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

pub async fn retry(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ReplayReport>, ApiError> {
    let replay = settled(state.store.replay_dead_letter(&id).await, &id)?;
    state.store.flush().await?;
    let attempts = [ReplayAttempt {
        letter_id: id,
        outcome: Ok(replay),
    }];
    wake(&state.connections.get(), &attempts);
    Ok(Json(ReplayReport::new(&attempts)))
}

pub async fn retry_all(State(state): State<Arc<AppState>>) -> Result<Json<ReplayReport>, ApiError> {
    let attempts = state.store.replay_all_dead_letters().await?;
    state.store.flush().await?;
    wake(&state.connections.get(), &attempts);
    Ok(Json(ReplayReport::new(&attempts)))
}

pub async fn drop_letter(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<DropReport>, ApiError> {
    let letter = settled(state.store.drop_dead_letter(&id).await, &id)?;
    state.store.flush().await?;
    Ok(Json(DropReport {
        dropped: vec![letter.id],
    }))
}

pub async fn import_contacts(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<ops::ImportReport>, ApiError> {
    let connections = state.connections.get();
    let importer = Importer::new(&state.store, Import::Contacts(&connections));
    import(&state, importer, body).await
}

pub async fn import_customers(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<ops::ImportReport>, ApiError> {
    import(&state, Importer::new(&state.store, Import::Customers), body).await
}

/// Registers a JSONL body line by line as it arrives, so its size is bounded only by each
/// line's (`server.max_body_bytes`: a longer line is refused and skipped); answers the
/// report once what it registered is durable.
async fn import(
    state: &AppState,
    mut importer: Importer<'_>,
    mut body: Body,
) -> Result<Json<ops::ImportReport>, ApiError> {
    let max_line = state.max_body_bytes;
    let mut line = Vec::new();
    let mut number = 1;
    // Set while the rest of an overlong line is skipped.
    let mut skipping = false;
    while let Some(chunk) = next_chunk(&mut body).await {
        let mut chunk = &chunk?[..];
        while !chunk.is_empty() {
            let end = chunk.iter().position(|&b| b == b'\n');
            let (piece, rest) = match end {
                Some(at) => (&chunk[..at], &chunk[at + 1..]),
                None => (chunk, &[][..]),
            };
            chunk = rest;
            if !skipping && line.len() + piece.len() > max_line {
                importer.refuse(number, format!("longer than {max_line} bytes"));
                line.clear();
                skipping = true;
            }
            if !skipping {
                line.extend_from_slice(piece);
            }
            if end.is_some() {
                take_line(&mut importer, number, &line).await?;
                line.clear();
                skipping = false;
                number += 1;
            }
        }
    }
    if !skipping {
        take_line(&mut importer, number, &line).await?;
    }
    let report = importer.finish();
    state.store.flush().await?;
    Ok(Json(report))
}

async fn take_line(importer: &mut Importer<'_>, number: u64, line: &[u8]) -> Result<(), ApiError> {
    match std::str::from_utf8(line) {
        Ok(text) => Ok(importer.line(number, text).await?),
        Err(err) => {
            importer.refuse(number, format!("not UTF-8: {err}"));
            Ok(())
        }
    }
}

pub async fn pull_contacts(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<crate::pull::PullReport>, ApiError> {
    let connections = state.connections.get();
    let connection = connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no connection named `{name}`")))?;
    let report = crate::pull::pull_contacts(&state.store, connection)
        .await
        .map_err(|message| ApiError::new(StatusCode::BAD_GATEWAY, "pull_failed", message))?;
    Ok(Json(report))
}
