//! The operator routes of the running daemon (admin tokens), so that CLI commands work while
//! the daemon holds the store's lock. Each answers the typed report of [`crate::ops`] that the
//! CLI makes itself when it opens the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::body::next_chunk;
use super::error::{ApiError, ErrorDetail, RefusalWithReport};
use super::state::AppState;
use crate::connections::Connections;
use crate::ops::{
    self, ApiUsageView, DeadLetterList, DeadLetterView, DropReport, Import, ImportReport, Importer,
    LineRefusal, PauseView, ReplayReport, StatusReport,
};
use crate::store::{ReplayAttempt, StoreError};

pub async fn status(State(state): State<Arc<AppState>>) -> Result<Json<StatusReport>, ApiError> {
    let connections = || state.connections.iter();
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
    wake(&state.connections, &attempts);
    Ok(Json(ReplayReport::new(&attempts)))
}

pub async fn retry_all(State(state): State<Arc<AppState>>) -> Result<Json<ReplayReport>, ApiError> {
    let attempts = state.store.replay_all_dead_letters().await?;
    state.store.flush().await?;
    wake(&state.connections, &attempts);
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
) -> Result<Response, ApiError> {
    let importer = Importer::new(&state.store, Import::Contacts(&state.connections));
    import(&state, importer, body).await
}

pub async fn import_customers(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    import(&state, Importer::new(&state.store, Import::Customers), body).await
}

/// Registers a JSONL body line by line as it arrives, so its size is bounded only by each
/// line's (`server.max_body_bytes`: a longer line is refused and skipped). Once what it
/// registered is durable, answers 200 with the report when every line was registered, 422
/// `lines_refused` naming each refused line and why (with the same report: the other lines
/// are registered), or 400 `empty_import` for a body without a record.
async fn import(
    state: &AppState,
    mut importer: Importer<'_>,
    mut body: Body,
) -> Result<Response, ApiError> {
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
                let reason = format!("longer than {max_line} bytes");
                importer.refuse(number, LineRefusal::TooLong, reason);
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
    let report = report.map_err(|empty| {
        ApiError::new(StatusCode::BAD_REQUEST, "empty_import", empty.to_string())
    })?;
    if report.failed.is_empty() {
        return Ok(Json(report).into_response());
    }
    let refusal = RefusalWithReport {
        error: ErrorDetail {
            code: "lines_refused".to_string(),
            message: refused_lines(&report),
            details: Vec::new(),
        },
        report,
    };
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(refusal)).into_response())
}

/// The refused lines in words: the first few by number and reason, and what was imported.
fn refused_lines(report: &ImportReport) -> String {
    const NAMED: usize = 3;
    let named: Vec<String> = report
        .failed
        .iter()
        .take(NAMED)
        .map(|refused| format!("line {}: {}", refused.line, refused.message))
        .collect();
    let more = report.failed.len().saturating_sub(NAMED);
    let more = if more > 0 {
        format!(" (and {more} more lines)")
    } else {
        String::new()
    };
    format!(
        "{}{more}; {} lines imported",
        named.join("; "),
        report.imported
    )
}

async fn take_line(importer: &mut Importer<'_>, number: u64, line: &[u8]) -> Result<(), ApiError> {
    match std::str::from_utf8(line) {
        Ok(text) => Ok(importer.line(number, text).await?),
        Err(err) => {
            importer.refuse(number, LineRefusal::NotUtf8, format!("not UTF-8: {err}"));
            Ok(())
        }
    }
}

pub async fn pull_contacts(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<crate::pull::PullReport>, ApiError> {
    let connection = state
        .connections
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no connection named `{name}`")))?;
    let report = crate::pull::pull_contacts(&state.store, connection)
        .await
        .map_err(|message| ApiError::new(StatusCode::BAD_GATEWAY, "pull_failed", message))?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::http::testing::serve_on_loopback;
    use crate::store::Store;

    /// An import answers 200 when every line is registered, 422 `lines_refused` naming each
    /// refused line by number and reason (the others registered), 400 `empty_import` for a
    /// body without a record.
    #[tokio::test]
    async fn an_import_with_refused_lines_answers_422_naming_each_and_an_empty_one_400() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        let base = serve_on_loopback(&store).await;
        let client = reqwest::Client::new();
        let import = |path: &'static str, body: String| {
            let request = client
                .post(format!("{base}/api/v1/admin/{path}"))
                .bearer_auth("admin-token")
                .body(body);
            async move {
                let response = request.send().await.unwrap();
                (
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap(),
                )
            }
        };
        let contact = |id: &str, source_id: &str| {
            json!({"id": id, "source_system": "hubspot", "source_id": source_id}).to_string()
        };

        let good = [contact("c1", "1"), contact("c2", "2")].join("\n");
        let (status, body) = import("contacts", good).await;
        assert_eq!(
            (status, &body),
            (200, &json!({"imported": 2, "failed": []}))
        );

        let mixed = [
            contact("c3", "3"),
            "{not json".to_string(),
            r#"{"id": "c4", "source_system": "hubspot"}"#.to_string(),
            contact(" ", "4"),
            json!({"id": "c5", "source_system": "salesforce", "source_id": "5"}).to_string(),
            contact("c6", "1"),
        ]
        .join("\n");
        let (status, body) = import("contacts", mixed).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "lines_refused", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("line 2: ")
                && message.ends_with("(and 2 more lines); 1 lines imported"),
            "{message}"
        );
        let report = &body["report"];
        assert_eq!(report["imported"], 1, "{body}");
        let refused: Vec<(u64, &str)> = report["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| {
                (
                    line["line"].as_u64().unwrap(),
                    line["code"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            refused,
            [
                (2, "malformed_json"),
                (3, "invalid_record"),
                (4, "empty_field"),
                (5, "unroutable"),
                (6, "source_id_taken"),
            ]
        );
        assert!(
            store.contact("c3").await.unwrap().is_some(),
            "the good line"
        );

        for blank in ["", "\n  \n"] {
            let (status, body) = import("customers", blank.to_string()).await;
            assert_eq!(status, 400, "{blank:?}: {body}");
            assert_eq!(body["error"]["code"], "empty_import", "{body}");
        }
    }
}
