//! The contact routes (API tokens): read a unified contact, accept an edit of it, and show
//! where its sync stands.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use unisync_core::ContactField;

use super::body::read_body;
use super::error::ApiError;
use super::state::AppState;
use crate::edits::check_edit;
use crate::store::{ContactEntry, Store};
use crate::timefmt::rfc3339;

pub async fn get_contact(
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

pub async fn put_contact(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
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
    let body = read_body(body, state.max_body_bytes).await?;
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

pub async fn get_sync(
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use unisync_core::{ContactPatch, UnifiedContact};

    use super::*;
    use crate::conflict::FieldConflict;
    use crate::http::testing::serve_on_loopback;
    use crate::store::now_ms;

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
        store
            .upsert_contact("crm", UnifiedContact::new("c1", "hubspot", "1"))
            .await
            .unwrap();
        let base = serve_on_loopback(&store).await;
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
