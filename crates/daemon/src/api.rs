//! The HTTP API: the unified-contact update endpoint and its neighbours.

use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use unisync_core::{ContactField, FieldViolation, Secret};

use crate::connections::Connections;
use crate::edits::{EditRejected, check_edit};
use crate::http_server::BodyCut;
use crate::metrics;
use crate::store::{ContactEntry, Store, StoreError, now_ms};
use crate::timefmt::rfc3339;

/// What every handler needs.
pub struct AppState {
    pub store: Store,
    pub connections: Arc<Connections>,
    pub tokens: Tokens,
    /// The largest body of a request to the contact routes, in bytes.
    pub max_body_bytes: usize,
}

/// The bearer tokens the daemon accepts, by scope: API tokens reach the contact routes only,
/// admin tokens the admin routes only (a client that may PUT contacts cannot import a
/// contact with any source id and so write any CRM record; an operator's token does not
/// edit contacts).
pub struct Tokens {
    pub api: Vec<Secret>,
    pub admin: Vec<Secret>,
}

/// Which routes a token opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/api/v1/unified/...`
    Api,
    /// `/api/v1/admin/...`
    Admin,
}

impl Tokens {
    fn of(&self, scope: Scope) -> &[Secret] {
        match scope {
            Scope::Api => &self.api,
            Scope::Admin => &self.admin,
        }
    }
}

/// Whether `presented` is one of `tokens`: compared with every token without stopping
/// early, each in constant time.
fn is_one_of(tokens: &[Secret], presented: &str) -> bool {
    tokens.iter().fold(false, |found, token| {
        found | bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes()))
    })
}

/// One route: its method and path, who may call it (`None`: anyone), and its handler. The
/// router is built from [`routes`], and a test compares the same table with the OpenAPI
/// document, so neither can drift from the other.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub scope: Option<Scope>,
    /// Makes the route's handler for the method filter of `method`.
    pub handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
}

impl RouteSpec {
    pub const fn new(
        method: Method,
        path: &'static str,
        scope: Option<Scope>,
        handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
    ) -> Self {
        RouteSpec {
            method,
            path,
            scope,
            handler,
        }
    }
}

/// The OpenAPI 3.1 document of every route, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route the daemon serves.
pub fn routes() -> Vec<RouteSpec> {
    let contact = "/api/v1/unified/contact/{id}";
    let api = Some(Scope::Api);
    let mut routes = vec![
        RouteSpec::new(Method::PUT, contact, api, |on_method| {
            on(on_method, put_contact)
        }),
        RouteSpec::new(Method::GET, contact, api, |on_method| {
            on(on_method, get_contact)
        }),
        RouteSpec::new(
            Method::GET,
            "/api/v1/unified/contact/{id}/sync",
            api,
            |on_method| on(on_method, get_sync),
        ),
        RouteSpec::new(Method::GET, "/api/v1/openapi.json", None, |on_method| {
            on(on_method, || async {
                ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
            })
        }),
        RouteSpec::new(Method::GET, "/healthz", None, |on_method| {
            on(on_method, || async { "ok" })
        }),
        RouteSpec::new(Method::GET, "/readyz", None, |on_method| {
            on(on_method, readyz)
        }),
        RouteSpec::new(Method::GET, "/metrics", None, |on_method| {
            on(on_method, metrics_text)
        }),
    ];
    routes.extend(crate::admin::routes());
    routes.extend(crate::ui::routes());
    routes
}

/// The API's router, from [`routes`]: each route behind the bearer check of its scope.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let mut public = Router::new();
    let mut scoped: Vec<(Scope, Router<Arc<AppState>>)> =
        vec![(Scope::Api, Router::new()), (Scope::Admin, Router::new())];
    for route in routes() {
        let filter = MethodFilter::try_from(route.method.clone()).expect("a routable method");
        let handler = (route.handler)(filter);
        match route.scope {
            None => public = public.route(route.path, handler.clone()),
            Some(scope) => {
                for (of, router) in &mut scoped {
                    if *of == scope {
                        *router = std::mem::take(router).route(route.path, handler.clone());
                    }
                }
            }
        }
    }
    for (scope, router) in scoped {
        let checked = router.route_layer(middleware::from_fn_with_state(
            (state.clone(), scope),
            require_bearer,
        ));
        public = public.merge(checked);
    }
    public
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

/// The next piece of a request body: `None` at its end; 408 `request_timeout` once the
/// server's body timeout is spent.
pub async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, ApiError>> {
    loop {
        let frame =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                // Trailers carry nothing the API reads.
                Err(_) => continue,
            },
            Err(error) => return Some(Err(ApiError::from_body_error(error))),
        }
    }
}

/// A whole request body of at most `limit` bytes (413 `payload_too_large` beyond).
pub async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut whole = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        let chunk = chunk?;
        if whole.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {limit} bytes"),
            ));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.into())
}

impl ApiError {
    /// Why a request body could not be read: its time ran out (408), the server is stopping
    /// (503; either way the connection closes), or the client broke off (400).
    fn from_body_error(error: axum::Error) -> Self {
        match error.into_inner().downcast::<BodyCut>().map(|cut| *cut) {
            Ok(cut @ BodyCut::TimedOut(_)) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                cut.to_string(),
            ),
            Ok(cut @ BodyCut::ShuttingDown) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                cut.to_string(),
            ),
            Err(other) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the body: {other}"),
            ),
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

/// Lets the request through when it bears a token of `scope`: 401 `unauthorized` without a
/// known token, 403 `forbidden` with a token of the other scope.
pub async fn require_bearer(
    State((state, scope)): State<(Arc<AppState>, Scope)>,
    request: Request,
    next: Next,
) -> Response {
    let tokens = &state.tokens;
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
    let in_scope = is_one_of(tokens.of(scope), presented);
    let other_scope = match scope {
        Scope::Api => Scope::Admin,
        Scope::Admin => Scope::Api,
    };
    let of_other_scope = is_one_of(tokens.of(other_scope), presented);
    if in_scope {
        next.run(request).await
    } else if of_other_scope {
        let message = match scope {
            Scope::Api => "an admin token cannot reach the contact routes: use an API token",
            Scope::Admin => "an API token cannot reach the admin routes: use an admin token",
        };
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        )
        .into_response()
    }
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

    /// Serves the API on `store` over loopback, with one connection `crm` (a HubSpot one no
    /// request reaches), API token `api-token` and admin token `admin-token`; answers its
    /// base URL.
    async fn serve_on_loopback(store: &Store) -> String {
        let config = Config::parse(
            "[connections.crm]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let mut settings = config.connections().unwrap();
        let provider = std::mem::take(&mut settings[0].provider);
        settings[0].provider = provider.with_inline_secrets([("access_token", "crm-token")]);
        let connections = Arc::new(Connections::build(settings, store).unwrap());
        let state = Arc::new(AppState {
            store: store.clone(),
            connections,
            tokens: Tokens {
                api: vec![Secret::new("api-token")],
                admin: vec![Secret::new("admin-token")],
            },
            max_body_bytes: 65_536,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let limits = crate::config::ServerConfig::default().limits();
        tokio::spawn(crate::serve::run_server(
            listener,
            state,
            limits,
            std::future::pending(),
        ));
        base
    }

    #[tokio::test]
    async fn api_tokens_open_only_the_contact_routes_and_admin_tokens_only_the_admin_routes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        store
            .upsert_contact("crm", UnifiedContact::new("c1", "hubspot", "1"))
            .await
            .unwrap();
        let base = serve_on_loopback(&store).await;
        let client = reqwest::Client::new();
        let ask = |method: reqwest::Method, path: &str, token: Option<&str>| {
            let mut request = client.request(method, format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if path.ends_with("/contacts") {
                request = request.body(r#"{"id":"c2","source_system":"hubspot","source_id":"2"}"#);
            } else if path.contains("/unified/") {
                request = request.json(&json!({"email": "ann@example.com", "first_name": "Ann"}));
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (
                    status,
                    body["error"]["code"].as_str().unwrap_or("").to_string(),
                )
            }
        };
        let contact = "/api/v1/unified/contact/c1";
        let sync = "/api/v1/unified/contact/c1/sync";
        let import = "/api/v1/admin/contacts";
        let status = "/api/v1/admin/status";
        use reqwest::Method;
        for (method, path, token, expected) in [
            (Method::PUT, contact, Some("api-token"), (200, "")),
            (Method::GET, sync, Some("api-token"), (200, "")),
            (
                Method::PUT,
                contact,
                Some("admin-token"),
                (403, "forbidden"),
            ),
            (
                Method::GET,
                contact,
                Some("admin-token"),
                (403, "forbidden"),
            ),
            (Method::POST, import, Some("api-token"), (403, "forbidden")),
            (Method::GET, status, Some("api-token"), (403, "forbidden")),
            (Method::GET, status, Some("admin-token"), (200, "")),
            (Method::POST, import, Some("admin-token"), (200, "")),
            (Method::GET, status, None, (401, "unauthorized")),
            (
                Method::GET,
                status,
                Some("admin-token-"),
                (401, "unauthorized"),
            ),
            (
                Method::PUT,
                contact,
                Some("api-toke"),
                (401, "unauthorized"),
            ),
        ] {
            let (got_status, got_code) = ask(method.clone(), path, token).await;
            assert_eq!(
                (got_status, got_code.as_str()),
                expected,
                "{method} {path} with {token:?}"
            );
        }
        assert!(
            store.contact("c2").await.unwrap().is_some(),
            "the admin token's import"
        );
    }

    /// The OpenAPI document names exactly the routes the router serves, each with the
    /// security of its scope, and the update body field for field as the endpoint takes it.
    #[test]
    fn the_openapi_document_matches_the_route_table() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut documented = Vec::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let security = operation.get("security").unwrap_or(&document["security"]);
                let scope = match security.to_string().as_str() {
                    "[]" => None,
                    r#"[{"bearerAuth":[]}]"# => Some(Scope::Api),
                    r#"[{"adminAuth":[]}]"# => Some(Scope::Admin),
                    other => panic!("{method} {path}: security {other}"),
                };
                documented.push((method.to_uppercase(), path.clone(), scope));
            }
        }
        let mut served: Vec<_> = routes()
            .into_iter()
            .map(|route| {
                (
                    route.method.to_string(),
                    route.path.to_string(),
                    route.scope,
                )
            })
            .collect();
        documented.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        served.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(documented, served);

        let update = &document["components"]["schemas"]["ContactUpdate"];
        assert_eq!(update["required"], json!(["email", "first_name"]));
        let properties = update["properties"].as_object().unwrap();
        for field in ContactField::ALL {
            let property = &properties[field.name()];
            let expected = match field {
                ContactField::Email | ContactField::FirstName => json!("string"),
                _ => json!(["string", "null"]),
            };
            assert_eq!(property["type"], expected, "{}", field.name());
        }
        let contact = &document["components"]["schemas"]["UnifiedContact"]["properties"];
        let shown = serde_json::to_value(UnifiedContact::new("c1", "hubspot", "1")).unwrap();
        let shown: Vec<&String> = shown.as_object().unwrap().keys().collect();
        let listed: Vec<&String> = contact.as_object().unwrap().keys().collect();
        assert_eq!(listed, shown, "UnifiedContact, field for field");
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
