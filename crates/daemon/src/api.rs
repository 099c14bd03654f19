//! The HTTP API: the unified-contact update endpoint and its neighbours.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use unisync_core::{ContactField, FieldViolation, Secret};

use crate::connections::Connections;
use crate::edits::{EditRejected, check_edit};
use crate::metrics;
use crate::store::{ContactEntry, Store, StoreError, now_ms};
use crate::timefmt::rfc3339;

/// What every handler needs.
pub struct AppState {
    pub store: Store,
    pub connections: Arc<Connections>,
    pub tokens: Vec<Secret>,
}

/// The API's routes. `max_body_bytes` bounds every request body.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let authenticated = Router::new()
        .route(
            "/api/v1/unified/contact/{id}",
            get(get_contact).put(put_contact),
        )
        .route("/api/v1/unified/contact/{id}/sync", get(get_sync))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    Router::new()
        .merge(authenticated)
        .merge(crate::admin::routes(state.clone()))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub async fn require_bearer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        )
        .into_response();
    };
    // Compare against every token without stopping early, in constant time per token.
    let accepted = state.tokens.iter().fold(false, |found, token| {
        found | bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes()))
    });
    if !accepted {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        )
        .into_response();
    }
    next.run(request).await
}

async fn get_contact(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entry = load(&state.store, &id).await?;
    Ok(Json(json!({"data": entry.contact})).into_response())
}

async fn load(store: &Store, id: &str) -> Result<ContactEntry, ApiError> {
    store
        .contact(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no unified contact with id `{id}`")))
}

async fn put_contact(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be application/json",
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is too large",
            )
        } else {
            ApiError::new(rejection.status(), "bad_request", rejection.body_text())
        }
    })?;
    let body: Value = serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("malformed JSON: {err}"),
        )
    })?;
    let entry = load(&state.store, &id).await?;
    let edit = check_edit(&state.store, &state.connections, &entry.contact, &body).await?;
    let connection = edit.connection;
    let patch = edit.patch;
    let accepted = state
        .store
        .accept_durable(&id, &patch, connection.name())
        .await?;
    if accepted.queued {
        connection.wake.notify_one();
    }
    Ok(Json(json!({"data": accepted.contact})).into_response())
}

async fn get_sync(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entry = load(&state.store, &id).await?;
    let sync = &entry.sync;
    let mut pending_fields: Vec<&str> = [&sync.pending, &sync.in_flight]
        .into_iter()
        .flatten()
        .flat_map(|patch| patch.fields().map(ContactField::name))
        .collect();
    pending_fields.sort_unstable();
    pending_fields.dedup();
    let data = json!({
        "contact_id": entry.contact.id,
        "connection": sync.connection,
        "state": if sync.in_flight.is_some() { "in_flight" }
                 else if sync.pending.is_some() { "pending" }
                 else { "synced" },
        "pending_fields": pending_fields,
        "pending": sync.pending,
        "in_flight": sync.in_flight,
        "attempts": sync.attempts,
        "next_attempt_at": sync.next_attempt_at.map(rfc3339),
        "last_error": sync.last_error.as_ref().map(|e| json!({
            "code": e.code, "message": e.message, "class": e.class, "at": rfc3339(e.at),
        })),
        "last_confirmed_at": sync.last_confirmed_at.map(rfc3339),
        "open_dead_letters": sync.open_dead_letters,
        "crm_version": entry.crm_version,
        "fields": field_states(&entry),
    });
    Ok(Json(json!({"data": data})).into_response())
}

/// Per field, where it stands: `base` (the CRM's last confirmed value), `pending` and
/// `in_flight` (the value waiting, or being pushed; `null` clears the field) and
/// `last_conflict` (the latest open conflict letter's `letter`, `base`, `crm` and `ours`).
/// A key is present only when it applies, and a field only when one of them does.
fn field_states(entry: &ContactEntry) -> serde_json::Map<String, Value> {
    let sync = &entry.sync;
    ContactField::ALL
        .into_iter()
        .filter_map(|field| {
            let mut state = serde_json::Map::new();
            if let Some(base) = entry.base.get(&field) {
                state.insert("base".into(), json!(base));
            }
            for (key, patch) in [("pending", &sync.pending), ("in_flight", &sync.in_flight)] {
                if let Some(value) = patch.as_ref().and_then(|patch| patch.change(field)) {
                    state.insert(key.into(), json!(value));
                }
            }
            if let Some(held) = sync.held.get(&field).and_then(|held| held.last()) {
                let conflict = &held.conflict;
                let last = json!({
                    "letter": held.letter_id,
                    "base": conflict.base,
                    "crm": conflict.crm,
                    "ours": conflict.ours,
                });
                state.insert("last_conflict".into(), last);
            }
            (!state.is_empty()).then(|| (field.name().to_string(), Value::Object(state)))
        })
        .collect()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    match metrics::render(&state.store, &state.connections).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use unisync_core::{ContactPatch, Secret, UnifiedContact};

    use super::*;
    use crate::config::Config;
    use crate::conflict::FieldConflict;

    #[tokio::test]
    async fn sync_shows_each_fields_base_pending_in_flight_and_last_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        let mut contact = UnifiedContact::new("c1", "hubspot", "1");
        contact.city = Some("Lisbon".into());
        store.upsert_contact("crm", contact).await.unwrap();
        let edit = |pairs: &[(ContactField, Option<&str>)]| -> ContactPatch {
            pairs
                .iter()
                .map(|(field, value)| (*field, value.map(str::to_string)))
                .collect()
        };
        let city_and_zip = edit(&[
            (ContactField::City, Some("Faro")),
            (ContactField::Zip, Some("8000")),
        ]);
        store.accept("c1", &city_and_zip, "crm").await.unwrap();
        store.claim("crm", now_ms(), 10).await.unwrap();
        let conflict = FieldConflict {
            base: Some("Lisbon".into()),
            crm: Some("Porto".into()),
            ours: Some("Faro".into()),
        };
        let conflicts: BTreeMap<_, _> = [(ContactField::City, conflict)].into();
        let held = store.hold_conflicts("c1", &conflicts).await.unwrap();
        store
            .accept("c1", &edit(&[(ContactField::Phone, None)]), "crm")
            .await
            .unwrap();

        let fields = field_states(&store.contact("c1").await.unwrap().unwrap());
        assert_eq!(
            fields["city"],
            json!({"base": "Lisbon", "last_conflict": {
                "letter": held.letter.id, "base": "Lisbon", "crm": "Porto", "ours": "Faro",
            }})
        );
        assert_eq!(fields["zip"], json!({"base": null, "in_flight": "8000"}));
        assert_eq!(
            fields["phone"],
            json!({"base": null, "pending": null}),
            "a pending clear"
        );
        assert_eq!(fields["email"], json!({"base": null}));
    }

    /// The API over loopback, on a store whose next flush fails as a full disk would.
    #[tokio::test]
    async fn a_failed_flush_answers_503_refuses_later_writes_and_makes_the_daemon_unready() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        let config = Config::parse(
            "[connections.crm]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let mut settings = config.connections().unwrap();
        let provider = std::mem::take(&mut settings[0].provider);
        settings[0].provider = provider.with_inline_secrets([("access_token", "crm-token")]);
        let connections = Arc::new(Connections::build(settings, &store).unwrap());
        store
            .upsert_contact("crm", UnifiedContact::new("c1", "hubspot", "1"))
            .await
            .unwrap();
        let state = Arc::new(AppState {
            store: store.clone(),
            connections,
            tokens: vec![Secret::new("api-token")],
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(crate::serve::run_server(
            listener,
            state,
            65_536,
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        let put = || async {
            let response = client
                .put(format!("{base}/api/v1/unified/contact/c1"))
                .bearer_auth("api-token")
                .json(&json!({"email": "ann@example.com", "first_name": "Ann"}))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        };

        store.fail_next_flush("No space left on device");
        for attempt in ["the request waiting for the flush", "a later write"] {
            let (status, body) = put().await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{attempt}: {body}");
            assert_eq!(body["error"]["code"], "store_failed", "{attempt}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("No space left on device"), "{message}");
        }
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(ready["store"], "failed", "{ready}");
        assert!(
            ready["store_error"]
                .as_str()
                .unwrap()
                .contains("No space left on device"),
            "{ready}"
        );
        assert!(store.failed().await.contains("No space left on device"));
    }
}
