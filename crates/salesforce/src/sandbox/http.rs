//! The fake org's routes: the token endpoint, and the data API behind [`admit`] (version,
//! session, faults, daily limit, `Sforce-Limit-Info`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::header::IF_UNMODIFIED_SINCE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ids::resolve;
use super::org::{Refusal, SfError, is_contact_field};
use super::{Org, OrgState, bulk, random_token, soql};
use unisync_sandbox::Fault;

/// Salesforce's cap on records in one collections call.
const MAX_COLLECTION_RECORDS: usize = 200;

/// The most job data one upload may carry.
const MAX_JOB_DATA_BYTES: usize = 150 * 1024 * 1024;

/// The API versions served. Versions from the REST API's first (20.0) up to the oldest served
/// are retired (410); any other version never existed and its URLs name nothing (404).
const FIRST_REST_VERSION: f64 = 20.0;
const OLDEST_VERSION: f64 = 41.0;
const NEWEST_VERSION: f64 = 68.0;

/// The longest a JWT bearer assertion may stay valid.
const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(super) fn router(org: Arc<Org>) -> Router {
    let data = Router::new()
        .route(
            "/services/data/{version}/sobjects/Contact/{id}",
            get(read_contact).patch(update_contact),
        )
        .route(
            "/services/data/{version}/composite/sobjects",
            patch(update_collection),
        )
        .route(
            "/services/data/{version}/jobs/ingest",
            post(bulk::create_job),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job}",
            get(bulk::describe).patch(bulk::change_state),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job}/batches",
            // A job's data may be up to 150 MB (Salesforce's limit), past axum's default.
            put(bulk::upload).layer(DefaultBodyLimit::max(MAX_JOB_DATA_BYTES)),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job}/{resource}",
            get(bulk::results),
        )
        .route(
            "/services/data/{version}/jobs/ingest/{job}/{resource}/",
            get(bulk::results),
        )
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .route("/services/data/{version}/queryAll", get(query_all))
        .route(
            "/services/data/{version}/queryAll/{locator}",
            get(query_more),
        )
        .route_layer(middleware::from_fn_with_state(org.clone(), admit));
    Router::new()
        .route("/services/oauth2/token", post(token))
        .merge(data)
        .fallback(|| async { uri_not_found() })
        .with_state(org)
}

/// Salesforce's answer to a URL it does not serve (a wrong API version, object or path). Its
/// body is the one a missing record's URL gets, without `fields`.
pub(super) fn uri_not_found() -> Response {
    let body =
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]);
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

pub(super) fn refused(refusal: Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(refusal.errors)).into_response()
}

pub(super) fn refused_one(status: u16, code: &str, message: &str) -> Response {
    refused(Refusal::one(status, SfError::new(code, message, &[])))
}

/// Marks a collections call whose rows are locked by a [`Fault::Locked`].
#[derive(Clone, Copy)]
struct LockedRows;

/// What every data request goes through before its handler.
async fn admit(State(org): State<Arc<Org>>, mut request: Request, next: Next) -> Response {
    // Record writes take their delay inside their write window (see `write_window`).
    if request.method() != Method::PATCH || request.uri().path().contains("/jobs/") {
        tokio::time::sleep(org.faults.latency()).await;
    }
    let version = request.uri().path().split('/').nth(3).unwrap_or_default();
    match version
        .strip_prefix('v')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.fract() == 0.0)
    {
        Some(n) if (OLDEST_VERSION..=NEWEST_VERSION).contains(&n) => {}
        Some(n) if (FIRST_REST_VERSION..OLDEST_VERSION).contains(&n) => {
            return refused_one(
                410,
                "API_VERSION_RETIRED",
                &format!("API version {version} is retired and no longer available."),
            );
        }
        _ => return uri_not_found(),
    }
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let admitted = {
        let mut state = org.state();
        let live = state
            .sessions
            .get(&token)
            .is_some_and(|expiry| expiry.is_none_or(|at| Instant::now() < at));
        if !live {
            return session_refused();
        }
        let collection = request.uri().path().ends_with("/composite/sobjects");
        match org.faults.take() {
            Some(Fault::Unauthorized) => return session_refused(),
            Some(Fault::ServerError(503)) => Err((
                503,
                "SERVER_UNAVAILABLE",
                "Server temporarily unavailable".to_string(),
            )),
            Some(Fault::ServerError(status)) => Err((
                status,
                "UNKNOWN_EXCEPTION",
                format!("An unexpected error occurred. Please include this ErrorId if you contact support: {}-{}", rand::random_range(100_000..999_999), status),
            )),
            Some(Fault::Locked) if collection => {
                request.extensions_mut().insert(LockedRows);
                Ok(())
            }
            Some(Fault::Locked) => Err((
                400,
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records".to_string(),
            )),
            Some(Fault::DailyLimit) => Err((
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.".to_string(),
            )),
            Some(Fault::AccessRevoked) => Err((
                403,
                "API_DISABLED_FOR_ORG",
                "API is not enabled for this Organization or Partner".to_string(),
            )),
            Some(Fault::EndpointNotFound) => return uri_not_found(),
            Some(Fault::RateLimited { .. }) => Err((
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.".to_string(),
            )),
            None if state.api_used >= state.daily_limit => Err((
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.".to_string(),
            )),
            None => Ok(()),
        }
        .inspect(|()| {
            state.api_used += 1;
            state.stats.requests += 1;
            if collection {
                state.stats.collection_calls += 1;
            }
        })
    };
    let mut response = match admitted {
        Ok(()) => next.run(request).await,
        Err((status, code, message)) => refused_one(status, code, &message),
    };
    let usage = {
        let state = org.state();
        format!("api-usage={}/{}", state.api_used, state.daily_limit)
    };
    response.headers_mut().insert(
        "Sforce-Limit-Info",
        HeaderValue::from_str(&usage).expect("ASCII"),
    );
    response
}

fn session_refused() -> Response {
    refused_one(401, "INVALID_SESSION_ID", "Session expired or invalid")
}

pub(super) fn json_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|err| {
        Refusal::one(
            400,
            SfError::new(
                "JSON_PARSER_ERROR",
                format!("The request body is not valid JSON: {err}"),
                &[],
            ),
        )
    })
}

/// One record of a collections call: its id and the fields to write.
type RecordUpdate = (String, Map<String, Value>);

/// Runs `write` with `ids` marked in flight across the fault latency, counting writes that
/// begin while another write to the same record is in flight.
///
/// The write runs in a task of its own: Salesforce applies a request it has received whether
/// or not the client is still there for the answer, so a client that gives up waiting (or
/// loses its connection) does not stop a write from landing, late.
async fn write_window<T: Send + 'static>(
    org: Arc<Org>,
    ids: Vec<String>,
    write: impl FnOnce(&mut OrgState) -> T + Send + 'static,
) -> T {
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let marks = WritesInFlight::begin(&org, &ids);
        tokio::time::sleep(org.faults.latency()).await;
        let result = write(&mut org.state());
        drop(marks);
        // The client may have hung up; the write stands all the same.
        let _ = answer.send(result);
    });
    answered.await.expect("the write task answers")
}

/// Records marked as being written; the marks go when this drops.
struct WritesInFlight<'a> {
    org: &'a Org,
    ids: &'a [String],
}

impl<'a> WritesInFlight<'a> {
    fn begin(org: &'a Org, ids: &'a [String]) -> Self {
        let mut state = org.state();
        for id in ids {
            let in_flight = state.writes_in_flight.entry(id.clone()).or_default();
            *in_flight += 1;
            if *in_flight > 1 {
                state.stats.overlapping_writes += 1;
                *state.overlaps_by_record.entry(id.clone()).or_default() += 1;
            }
        }
        WritesInFlight { org, ids }
    }
}

impl Drop for WritesInFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.org.state();
        for id in self.ids {
            if let Some(in_flight) = state.writes_in_flight.get_mut(id) {
                *in_flight -= 1;
                if *in_flight == 0 {
                    state.writes_in_flight.remove(id);
                }
            }
        }
    }
}

async fn update_contact(
    State(org): State<Arc<Org>>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match json_body(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return refused_one(400, "JSON_PARSER_ERROR", "Expected a JSON object"),
        Err(refusal) => return refused(refusal),
    };
    let unmodified_since = match unmodified_since(&headers) {
        Ok(since) => since,
        Err(refusal) => return refused(refusal),
    };
    // Either form of the id names the record; what is no id names no record.
    let id = resolve(&id).unwrap_or(id);
    write_window(org, vec![id.clone()], move |state| {
        // The precondition is checked when the write is applied, so nothing lands between.
        let checked = unmodified_since
            .map_or(Ok(()), |since| {
                state.data.check_unmodified_since(&id, since)
            })
            .and_then(|()| state.data.check_update(&id, &fields));
        match checked {
            Ok(changes) => {
                state.data.apply_update(&id, changes);
                state.stats.records_written += 1;
                StatusCode::NO_CONTENT.into_response()
            }
            Err(refusal) => refused(refusal),
        }
    })
    .await
}

async fn update_collection(
    State(org): State<Arc<Org>>,
    locked: Option<axum::Extension<LockedRows>>,
    body: Bytes,
) -> Response {
    let locked = locked.is_some();
    let body = match json_body(&body) {
        Ok(body) => body,
        Err(refusal) => return refused(refusal),
    };
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return refused_one(400, "JSON_PARSER_ERROR", "records is required");
    };
    if records.len() > MAX_COLLECTION_RECORDS {
        return refused_one(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Each record: its id and its fields, or why it cannot even be tried.
    let requests: Vec<Result<RecordUpdate, SfError>> = records
        .iter()
        .map(|record| {
            let mut fields = record.as_object().cloned().unwrap_or_default();
            let kind = fields.remove("attributes");
            if kind
                .as_ref()
                .and_then(|a| a.get("type"))
                .and_then(Value::as_str)
                != Some("Contact")
            {
                return Err(SfError::new(
                    "INVALID_TYPE",
                    "Must send a concrete entity type.",
                    &[],
                ));
            }
            match fields.remove("id").or_else(|| fields.remove("Id")) {
                // Either form of the id; results name the record by its 18 characters.
                Some(Value::String(id)) => match resolve(&id) {
                    Some(id) => Ok((id, fields)),
                    None => Err(SfError::new(
                        "MALFORMED_ID",
                        format!("Contact ID: id value of incorrect type: {id}"),
                        &["Id"],
                    )),
                },
                _ => Err(SfError::new(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                    &[],
                )),
            }
        })
        .collect();
    let ids: Vec<String> = requests
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(id, _)| id.clone()))
        .collect();
    let results = write_window(org, ids, move |state| {
        let checked: Vec<Result<_, SfError>> = requests
            .into_iter()
            .map(|request| {
                let (id, fields) = request?;
                if locked {
                    return Err(SfError::new(
                        "UNABLE_TO_LOCK_ROW",
                        format!("unable to obtain exclusive access to this record or 1 records: {id}"),
                        &[],
                    ));
                }
                let changes = state
                    .data
                    .check_update(&id, &fields)
                    .map_err(|refusal| refusal.errors[0].clone())?;
                Ok((id, changes))
            })
            .collect();
        let roll_back = all_or_none && checked.iter().any(Result::is_err);
        checked
            .into_iter()
            .map(|outcome| match outcome {
                Ok((_, _)) if roll_back => json!({"success": false, "errors": [SfError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    &[],
                ).as_record_error()]}),
                Ok((id, changes)) => {
                    state.data.apply_update(&id, changes);
                    state.stats.records_written += 1;
                    json!({"id": id, "success": true, "errors": []})
                }
                Err(error) => json!({"success": false, "errors": [error.as_record_error()]}),
            })
            .collect::<Vec<_>>()
    })
    .await;
    Json(results).into_response()
}

/// The `If-Unmodified-Since` date of a request, in Unix seconds; a value that is no HTTP date
/// is refused with 400, as Salesforce documents for PATCH requests.
fn unmodified_since(headers: &HeaderMap) -> Result<Option<i64>, Refusal> {
    let Some(value) = headers.get(IF_UNMODIFIED_SINCE) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| httpdate::parse_http_date(text).ok())
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_secs()).ok())
        .map(Some)
        .ok_or_else(|| {
            Refusal::one(
                400,
                SfError::new(
                    "INVALID_HEADER_TYPE",
                    format!("Invalid If-Unmodified-Since header: {value:?}"),
                    &[],
                ),
            )
        })
}

#[derive(Deserialize)]
struct FieldsParam {
    fields: Option<String>,
}

async fn read_contact(
    State(org): State<Arc<Org>>,
    Path((_version, id)): Path<(String, String)>,
    Query(params): Query<FieldsParam>,
) -> Response {
    let fields: Vec<String> = match params.fields {
        Some(list) => list.split(',').map(|f| f.trim().to_string()).collect(),
        None => match org.state().data.contact(&id) {
            Some(all) => all.into_keys().collect(),
            None => Vec::new(),
        },
    };
    if let Some(unknown) = fields.iter().find(|f| !is_contact_field(f)) {
        return refused_one(
            400,
            "INVALID_FIELD",
            &format!("No such column '{unknown}' on entity 'Contact'."),
        );
    }
    match org.state().data.read(&id, &fields) {
        Ok(record) => Json(record).into_response(),
        Err(refusal) => refused(refusal),
    }
}

#[derive(Deserialize)]
struct QueryParam {
    q: String,
}

/// `query`: live records only.
async fn query(
    State(org): State<Arc<Org>>,
    Path(version): Path<String>,
    Query(params): Query<QueryParam>,
) -> Response {
    run_query(&org, &version, &params.q, Resource::Query)
}

/// `queryAll`: the recycle bin too (deleted and merged-away records, with `IsDeleted` and
/// `MasterRecordId`).
async fn query_all(
    State(org): State<Arc<Org>>,
    Path(version): Path<String>,
    Query(params): Query<QueryParam>,
) -> Response {
    run_query(&org, &version, &params.q, Resource::QueryAll)
}

/// The two query resources; a result's further pages are under the resource that ran it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Resource {
    Query,
    QueryAll,
}

impl Resource {
    fn path(self) -> &'static str {
        match self {
            Resource::Query => "query",
            Resource::QueryAll => "queryAll",
        }
    }
}

fn run_query(org: &Org, version: &str, soql: &str, resource: Resource) -> Response {
    let parsed = match soql::parse(soql) {
        Ok(parsed) => parsed,
        Err(error) => return refused(Refusal::one(400, error)),
    };
    let mut state = org.state();
    let all_rows = matches!(resource, Resource::QueryAll);
    let records = Arc::new(state.data.query(&parsed, all_rows));
    let locator = format!("01gSB{}", random_token(13));
    state
        .query_results
        .insert(locator.clone(), (resource, records.clone()));
    query_page(
        version,
        resource,
        &locator,
        &records,
        0,
        state.query_page_size,
    )
}

async fn query_more(
    State(org): State<Arc<Org>>,
    Path((version, locator)): Path<(String, String)>,
) -> Response {
    let state = org.state();
    let found = locator.rsplit_once('-').and_then(|(key, offset)| {
        let (resource, records) = state.query_results.get(key)?;
        Some((
            key,
            *resource,
            records.clone(),
            offset.parse::<usize>().ok()?,
        ))
    });
    match found {
        Some((key, resource, records, offset)) if offset <= records.len() => query_page(
            &version,
            resource,
            key,
            &records,
            offset,
            state.query_page_size,
        ),
        _ => refused_one(400, "INVALID_QUERY_LOCATOR", "invalid query locator"),
    }
}

/// The page of `records` from `offset`, with a `nextRecordsUrl` when more follow.
fn query_page(
    version: &str,
    resource: Resource,
    locator: &str,
    records: &[Value],
    offset: usize,
    page_size: usize,
) -> Response {
    let end = (offset + page_size).min(records.len());
    let mut page = json!({
        "totalSize": records.len(),
        "done": end == records.len(),
        "records": records[offset..end],
    });
    if end < records.len() {
        page["nextRecordsUrl"] = Value::String(format!(
            "/services/data/{version}/{}/{locator}-{end}",
            resource.path()
        ));
    }
    Json(page).into_response()
}

/// The token endpoint: refresh-token, client-credentials and JWT-bearer grants.
async fn token(State(org): State<Arc<Org>>, Form(form): Form<HashMap<String, String>>) -> Response {
    {
        let mut state = org.state();
        state.token_requests += 1;
        state.token_requests_in_flight += 1;
        if state.token_requests_in_flight > 1 {
            state.overlapping_refreshes += 1;
        }
    }
    tokio::time::sleep(org.faults.latency()).await;
    let mut state = org.state();
    state.token_requests_in_flight -= 1;
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let credentials = state.credentials.clone();
    let client_checked = || {
        if field("client_id") != credentials.client_id {
            Err(("invalid_client_id", "client identifier invalid"))
        } else if field("client_secret") != credentials.client_secret {
            Err(("invalid_client", "invalid client credentials"))
        } else {
            Ok(())
        }
    };
    let granted = match field("grant_type") {
        "refresh_token" => client_checked().and_then(|()| {
            if field("refresh_token") == credentials.refresh_token {
                Ok(())
            } else {
                Err(("invalid_grant", "expired access/refresh token"))
            }
        }),
        "client_credentials" => client_checked(),
        JWT_BEARER_GRANT => check_assertion(&state, &org.base_url, field("assertion")),
        _ => Err(("unsupported_grant_type", "grant type not supported")),
    };
    if let Err((error, description)) = granted {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
    }
    let access_token = format!("00DSB0000000001!{}", random_token(96));
    let expiry = state
        .session_lifetime
        .map(|lifetime| Instant::now() + lifetime);
    state.sessions.insert(access_token.clone(), expiry);
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string();
    let mut answer = json!({
        "access_token": access_token,
        "instance_url": org.base_url,
        "id": format!("{}/id/00DSB0000000001AAA/005SB0000000001AAA", org.base_url),
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": random_token(43) + "=",
    });
    if field("grant_type") == "refresh_token" && state.rotate_refresh_tokens {
        let rotated = format!("5Aep861{}", random_token(40));
        state.credentials.refresh_token = rotated.clone();
        answer["refresh_token"] = Value::String(rotated);
    }
    Json(answer).into_response()
}

#[derive(Deserialize)]
struct AssertionClaims {
    sub: String,
    exp: u64,
}

/// A JWT bearer assertion is good when a trusted key signed it (RS256), `iss` is the client
/// id, `aud` this login server, `sub` the org's user, and `exp` is near in the future.
fn check_assertion(
    state: &super::OrgState,
    audience: &str,
    assertion: &str,
) -> Result<(), (&'static str, &'static str)> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[&state.credentials.client_id]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    let claims = state
        .jwt_keys
        .iter()
        .find_map(|key| jsonwebtoken::decode::<AssertionClaims>(assertion, key, &validation).ok())
        .ok_or(("invalid_grant", "invalid assertion"))?
        .claims;
    if claims.sub != state.credentials.username {
        return Err(("invalid_grant", "user hasn't approved this consumer"));
    }
    let latest = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(MAX_ASSERTION_LIFETIME_SECS);
    if claims.exp > latest.as_secs() {
        return Err(("invalid_grant", "invalid assertion expiration"));
    }
    Ok(())
}
