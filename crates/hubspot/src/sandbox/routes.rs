//! The fake HubSpot's HTTP face: routes, the gate every API call passes (token, rate limits,
//! faults), and HubSpot's answer shapes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Value, json};

use super::Shared;
use super::access::{LimitHeaders, LimitHit, TokenRefusal};
use super::store::{
    BATCH_LIMIT, BatchInput, BatchItemError, WriteError, conflict_message,
    invalid_properties_message,
};
use unisync_sandbox::Fault;

/// How long a token request takes: long enough that two overlapping refreshes are seen.
const TOKEN_REQUEST_TIME: Duration = Duration::from_millis(20);

/// The most contacts one list page holds.
const PAGE_LIMIT: usize = 100;

/// The fake's routes.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let crm = Router::new()
        .route("/crm/v3/objects/contacts", get(list_contacts))
        .route(
            "/crm/v3/objects/contacts/{id}",
            get(read_contact).patch(update_contact),
        )
        .route("/crm/v3/objects/contacts/batch/update", post(batch_update))
        .route("/crm/v3/objects/contacts/batch/read", post(batch_read))
        .route(
            "/crm/v4/objects/contacts/{id}/associations/companies",
            get(list_associations),
        )
        .route(
            "/crm/v4/objects/contacts/{id}/associations/default/companies/{company}",
            put(associate),
        )
        .route(
            "/crm/v4/objects/contacts/{id}/associations/companies/{company}",
            delete(dissociate),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), crm_gate));
    let account = Router::new()
        .route("/account-info/v3/details", get(account_details))
        .route_layer(middleware::from_fn_with_state(shared.clone(), account_gate));
    Router::new()
        .merge(crm)
        .merge(account)
        .route("/oauth/v1/token", post(issue_token))
        .fallback(|| async { not_found("resource not found") })
        .with_state(shared)
}

/// Every CRM call passes here: the bearer token, then the limits, then any fault (the
/// scripted or standing ones, then for association calls those of the association switches).
async fn crm_gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.record(|stats| stats.requests += 1);
    let fault = |request: &Request| {
        shared.faults.take().or_else(|| {
            request
                .uri()
                .path()
                .starts_with("/crm/v4/")
                .then(|| shared.association_faults.take())
                .flatten()
        })
    };
    admit(&shared, request, next, fault).await
}

/// The account details call passes the token and the limits, which it counts against as
/// every API call does, but shows no fault: the faults a test scripts are meant for the
/// contact calls it watches.
async fn account_gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    shared.record(|stats| stats.account_details += 1);
    admit(&shared, request, next, |_| None).await
}

/// The bearer token, then the limits, then the fault `fault` picks, then the route. Every
/// answer carries the rate-limit headers of the limits in force.
async fn admit(
    shared: &Shared,
    request: Request,
    next: Next,
    fault: impl FnOnce(&Request) -> Option<Fault>,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let checked = shared.tokens.lock().unwrap().check(authorization);
    let response = match checked {
        Err(refusal) => unauthorized(refusal),
        Ok(()) => {
            let (limit_headers, verdict) = shared.limits.lock().unwrap().admit();
            let mut response = match verdict {
                Err(hit) => rate_limited(hit, None),
                Ok(()) => match fault(&request) {
                    Some(fault) => fault_answer(fault, &request),
                    None => next.run(request).await,
                },
            };
            add_limit_headers(response.headers_mut(), &limit_headers);
            response
        }
    };
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        shared.record(|stats| stats.rate_limited += 1);
    }
    response
}

/// `PATCH /crm/v3/objects/contacts/{id}` (or `?idProperty=email`).
async fn update_contact(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(message) => return validation_error(message),
    };
    let Some(properties) = body.get("properties").and_then(Value::as_object) else {
        return validation_error("Invalid input JSON: properties is required".to_string());
    };
    let id = match addressed_id(&shared, &id, &query) {
        Some(id) => id,
        None => return not_found("resource not found"),
    };
    let normalised = shared.store.lock().unwrap().normalise(properties);
    let normalised = match normalised {
        Ok(normalised) => normalised,
        Err(invalid) => return validation_error(invalid_properties_message(&invalid)),
    };
    let updated = shared
        .land(vec![id.clone()], move |shared| {
            let updated = shared.store.lock().unwrap().update(&id, &normalised);
            if updated.is_ok() {
                shared.record(|stats| stats.contacts_written += 1);
            }
            updated
        })
        .await;
    match updated {
        Ok(object) => (StatusCode::OK, axum::Json(object)).into_response(),
        Err(WriteError::NotFound) => object_not_found(),
        Err(WriteError::Conflict { existing_id }) => hubspot_error(
            StatusCode::CONFLICT,
            "CONFLICT",
            conflict_message(existing_id),
        ),
    }
}

/// `GET /crm/v3/objects/contacts/{id}?properties=...`
async fn read_contact(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    shared.pause().await;
    let Some(id) = addressed_id(&shared, &id, &query) else {
        return object_not_found();
    };
    let properties = requested_properties(&query);
    let properties: Vec<&str> = properties.iter().map(String::as_str).collect();
    let with_companies = associations_requested(&query);
    match shared
        .store
        .lock()
        .unwrap()
        .read(&id, &properties, with_companies)
    {
        Some(object) => axum::Json(object).into_response(),
        None => object_not_found(),
    }
}

/// `GET /crm/v3/objects/contacts?limit=&after=&properties=&associations=companies`
async fn list_contacts(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    shared.pause().await;
    let limit = match query_value(&query, "limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(limit)) if (1..=PAGE_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return validation_error(format!("limit must be between 1 and {PAGE_LIMIT}"));
        }
    };
    let after = match query_value(&query, "after").map(str::parse::<u64>) {
        None => None,
        Some(Ok(after)) => Some(after),
        Some(Err(_)) => return validation_error("after must be a valid paging cursor".into()),
    };
    let properties = requested_properties(&query);
    let properties: Vec<&str> = properties.iter().map(String::as_str).collect();
    let with_companies = associations_requested(&query);
    let store = shared.store.lock().unwrap();
    let (ids, next) = store.page(after, limit);
    let results: Vec<Value> = ids
        .iter()
        .filter_map(|id| store.read(&id.to_string(), &properties, with_companies))
        .collect();
    let mut answer = json!({ "results": results });
    if let Some(next) = next {
        answer["paging"] = json!({"next": {"after": next.to_string()}});
    }
    axum::Json(answer).into_response()
}

/// `POST /crm/v3/objects/contacts/batch/update`
async fn batch_update(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.record(|stats| stats.batch_updates += 1);
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(message) => return validation_error(message),
    };
    let inputs = match batch_inputs(&body) {
        Ok(inputs) => inputs,
        Err(message) => return validation_error(message),
    };
    let ids: Vec<String> = inputs.iter().map(|(id, _)| id.clone()).collect();
    let started_at = now_iso();
    let outcome = shared
        .land(ids, move |shared| {
            let outcome = shared.store.lock().unwrap().batch_update(&inputs);
            if let Ok(outcome) = &outcome {
                let written = outcome.results.len() as u64;
                shared.record(|stats| stats.contacts_written += written);
            }
            outcome
        })
        .await;
    match outcome {
        Err(refusal) => validation_error(refusal.message()),
        Ok(outcome) => batch_answer(outcome.results, &outcome.errors, started_at),
    }
}

/// `POST /crm/v3/objects/contacts/batch/read`
async fn batch_read(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.pause().await;
    let body = match parse_json(&body) {
        Ok(body) => body,
        Err(message) => return validation_error(message),
    };
    let ids: Option<Vec<String>> = body
        .get("inputs")
        .and_then(Value::as_array)
        .map(|inputs| inputs.iter().filter_map(input_id).collect());
    let Some(ids) = ids.filter(|ids| ids.len() <= BATCH_LIMIT) else {
        return validation_error(format!(
            "Invalid input JSON: inputs is required and takes at most {BATCH_LIMIT} elements"
        ));
    };
    let properties: Vec<&str> = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let started_at = now_iso();
    let store = shared.store.lock().unwrap();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match store.read(&id, &properties, false) {
            Some(object) => results.push(object),
            None => missing.push(id),
        }
    }
    drop(store);
    let errors: Vec<BatchItemError> = (!missing.is_empty())
        .then(|| BatchItemError {
            category: "OBJECT_NOT_FOUND",
            message: "Could not get some CONTACT objects, they may be deleted or not exist. \
                      Check that ids are valid."
                .to_string(),
            ids: missing,
        })
        .into_iter()
        .collect();
    batch_answer(results, &errors, started_at)
}

/// `GET /crm/v4/objects/contacts/{id}/associations/companies`
async fn list_associations(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    shared.pause().await;
    let companies = shared.store.lock().unwrap().company_ids(&id);
    let Some(companies) = companies else {
        return object_not_found();
    };
    let results: Vec<Value> = companies
        .into_iter()
        .map(|company| {
            json!({
                "toObjectId": company,
                "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null}],
            })
        })
        .collect();
    axum::Json(json!({ "results": results })).into_response()
}

/// `PUT /crm/v4/objects/contacts/{id}/associations/default/companies/{company}`
async fn associate(
    State(shared): State<Arc<Shared>>,
    Path((id, company)): Path<(String, String)>,
) -> Response {
    let associated = shared
        .land(vec![id.clone()], move |shared| {
            shared.store.lock().unwrap().associate(&id, &company)
        })
        .await;
    match associated {
        Ok((contact_id, company_id)) => axum::Json(json!({
            "status": "COMPLETE",
            "results": [{
                "from": {"id": contact_id.to_string()},
                "to": {"id": company_id.to_string()},
                "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279},
            }],
            "startedAt": now_iso(),
            "completedAt": now_iso(),
        }))
        .into_response(),
        Err(message) => hubspot_error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message),
    }
}

/// `DELETE /crm/v4/objects/contacts/{id}/associations/companies/{company}`
async fn dissociate(
    State(shared): State<Arc<Shared>>,
    Path((id, company)): Path<(String, String)>,
) -> Response {
    let dissociated = shared
        .land(vec![id.clone()], move |shared| {
            shared.store.lock().unwrap().dissociate(&id, &company)
        })
        .await;
    match dissociated {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => hubspot_error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message),
    }
}

/// `GET /account-info/v3/details`: the portal's settings, among them the time zone in which
/// its daily limit resets.
async fn account_details(State(shared): State<Arc<Shared>>) -> Response {
    shared.pause().await;
    let time_zone = shared.limits.lock().unwrap().time_zone().clone();
    let offset_seconds = time_zone.zone.to_offset(jiff::Timestamp::now()).seconds();
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let minutes = offset_seconds.unsigned_abs() / 60;
    axum::Json(json!({
        "portalId": shared.portal_id,
        "accountType": "STANDARD",
        "timeZone": time_zone.name,
        "companyCurrency": "USD",
        "additionalCurrencies": [],
        "utcOffset": format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60),
        "utcOffsetMilliseconds": i64::from(offset_seconds) * 1000,
        "uiDomain": "app.hubspot.com",
        "dataHostingLocation": "na1",
    }))
    .into_response()
}

/// `POST /oauth/v1/token` (form-encoded `refresh_token` grant).
async fn issue_token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let _refreshing = shared.begin_refresh();
    tokio::time::sleep(TOKEN_REQUEST_TIME).await;
    let issued = shared.tokens.lock().unwrap().refresh(&form);
    match issued {
        Ok(issued) => axum::Json(json!({
            "token_type": "bearer",
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in_secs,
        }))
        .into_response(),
        Err(refusal) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "status": refusal.status,
                "message": refusal.message,
                "correlationId": correlation_id(),
            })),
        )
            .into_response(),
    }
}

/// The id a request addresses: the path's id, or with `idProperty=email` the id of the
/// contact with that email.
fn addressed_id(shared: &Shared, id: &str, query: &[(String, String)]) -> Option<String> {
    match query_value(query, "idProperty") {
        Some("email") => shared
            .store
            .lock()
            .unwrap()
            .find_by_email(id)
            .map(|id| id.to_string()),
        _ => Some(id.to_string()),
    }
}

fn query_value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

/// `properties=a,b` and `properties=a&properties=b` both work, as in HubSpot.
fn requested_properties(query: &[(String, String)]) -> Vec<String> {
    query
        .iter()
        .filter(|(name, _)| name == "properties")
        .flat_map(|(_, value)| value.split(','))
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

fn associations_requested(query: &[(String, String)]) -> bool {
    query
        .iter()
        .filter(|(name, _)| name == "associations")
        .flat_map(|(_, value)| value.split(','))
        .any(|object| object == "companies" || object == "company")
}

fn input_id(input: &Value) -> Option<String> {
    match input.get("id")? {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The `(id, properties)` pairs of a batch update body.
fn batch_inputs(body: &Value) -> Result<Vec<BatchInput>, String> {
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("Invalid input JSON: inputs is required")?;
    inputs
        .iter()
        .map(|input| {
            let id = input_id(input).ok_or("Invalid input JSON: every input needs an id")?;
            let properties = input
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .ok_or("Invalid input JSON: every input needs properties")?;
            Ok((id, properties))
        })
        .collect()
}

fn parse_json(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body)
        .map_err(|err| format!("Invalid input JSON on line {}: {err}", err.line()))
}

/// 200 when every input landed, 207 with `numErrors` and `errors[]` otherwise.
fn batch_answer(results: Vec<Value>, errors: &[BatchItemError], started_at: String) -> Response {
    let mut answer = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started_at,
        "completedAt": now_iso(),
    });
    if errors.is_empty() {
        return axum::Json(answer).into_response();
    }
    answer["numErrors"] = json!(errors.len());
    answer["errors"] = errors
        .iter()
        .map(|error| {
            json!({
                "status": "error",
                "category": error.category,
                "message": error.message,
                "context": {"ids": error.ids},
                "errors": [],
            })
        })
        .collect();
    (StatusCode::MULTI_STATUS, axum::Json(answer)).into_response()
}

/// HubSpot's error body: `{status, message, correlationId, category}`.
fn hubspot_error(status: StatusCode, category: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "status": "error",
        "message": message.into(),
        "correlationId": correlation_id(),
        "category": category,
    });
    (status, axum::Json(body)).into_response()
}

fn validation_error(message: String) -> Response {
    hubspot_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

fn object_not_found() -> Response {
    hubspot_error(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.",
    )
}

/// The bare 404 some HubSpot routes give: a message and nothing else.
fn not_found(message: &str) -> Response {
    let body = json!({"status": "error", "message": message, "correlationId": correlation_id()});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn unauthorized(refusal: TokenRefusal) -> Response {
    match refusal {
        TokenRefusal::Missing | TokenRefusal::Unknown => hubspot_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication \
             and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        ),
        TokenRefusal::Expired { seconds_ago } => hubspot_error(
            StatusCode::UNAUTHORIZED,
            "EXPIRED_AUTHENTICATION",
            format!("The OAuth token used to make this call expired {seconds_ago} second(s) ago."),
        ),
    }
}

/// HubSpot's 429 body, naming the policy; `Retry-After` only when given.
fn rate_limited(hit: LimitHit, retry_after_secs: Option<u64>) -> Response {
    let (policy, message) = match hit {
        LimitHit::TenSecondly => (
            "TEN_SECONDLY_ROLLING",
            "You have reached your ten_secondly_rolling limit.",
        ),
        LimitHit::Daily => ("DAILY", "You have reached your daily limit."),
    };
    let body = json!({
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "groupName": "sandbox-app",
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The answer `fault` calls for, to `request`.
fn fault_answer(fault: Fault, request: &Request) -> Response {
    match fault {
        Fault::ServerError(status) => hubspot_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "INTERNAL_ERROR",
            "internal error",
        ),
        Fault::RateLimited { retry_after_secs } => {
            rate_limited(LimitHit::TenSecondly, retry_after_secs)
        }
        Fault::DailyLimit => rate_limited(LimitHit::Daily, None),
        Fault::Unauthorized => unauthorized(TokenRefusal::Expired { seconds_ago: 1 }),
        Fault::Locked => hubspot_error(
            StatusCode::LOCKED,
            "LOCKED",
            "The record is locked by another operation; try again shortly.",
        ),
        Fault::AccessRevoked => missing_scopes(required_scope(request)),
        // What HubSpot's edge answers for a path it does not route: no JSON, no category.
        Fault::EndpointNotFound => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// The granular scope a CRM call needs: reads and writes of contacts have their own.
fn required_scope(request: &Request) -> &'static str {
    let reads = request.method() == Method::GET || request.uri().path().ends_with("/batch/read");
    if reads {
        "crm.objects.contacts.read"
    } else {
        "crm.objects.contacts.write"
    }
}

/// HubSpot's 403 for an app whose granted scopes do not cover the call.
fn missing_scopes(required_scope: &str) -> Response {
    let body = json!({
        "status": "error",
        "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        "correlationId": correlation_id(),
        "errors": [{
            "message": "One or more of the following scopes are required.",
            "context": {"requiredGranularScopes": [required_scope]},
        }],
        "links": {"scopes": "https://developers.hubspot.com/scopes"},
        "category": "MISSING_SCOPES",
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

fn add_limit_headers(headers: &mut HeaderMap, limits: &LimitHeaders) {
    let mut put = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    if let Some((max, remaining, interval)) = limits.window {
        put("x-hubspot-ratelimit-max", max);
        put("x-hubspot-ratelimit-remaining", remaining);
        put(
            "x-hubspot-ratelimit-interval-milliseconds",
            interval.as_millis() as u64,
        );
    }
    if let Some((daily, remaining)) = limits.daily {
        put("x-hubspot-ratelimit-daily", daily);
        put("x-hubspot-ratelimit-daily-remaining", remaining);
    }
}

fn correlation_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn now_iso() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats")
}
