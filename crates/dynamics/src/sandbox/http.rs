//! The fake environment's routes: the identity platform's token endpoint, and the Web API
//! behind one gate (version, token, service protection, faults).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use unisync_sandbox::Fault;

use super::multipart::{self, Answer, Operation, Part, PartAnswer};
use super::org::{OrgData, Refusal, codes, is_guid, is_selectable};
use super::throttle::retry_after_secs;
use super::{EnvState, Environment};

/// The API versions served.
const VERSIONS: &[&str] = &["v9.0", "v9.1", "v9.2"];

/// The most rows a page holds, and the default page size.
const MAX_PAGE_SIZE: usize = 5000;

/// The most requests one `$batch` may hold.
const MAX_BATCH_REQUESTS: usize = 1000;

pub(super) fn router(env: Arc<Environment>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/api/data/{*rest}", any(data))
        .fallback(|uri: Uri| async move { refused(&segment_not_found(uri.path())) })
        .with_state(env)
}

fn segment_not_found(segment: &str) -> Refusal {
    Refusal::new(
        404,
        codes::SEGMENT_NOT_FOUND,
        format!("Resource not found for the segment '{segment}'."),
    )
}

fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, odata_headers(), Json(refusal.body())).into_response()
}

fn odata_headers() -> [(&'static str, &'static str); 1] {
    [("OData-Version", "4.0")]
}

/// The identity platform's error answer.
fn token_refused(status: u16, error: &str, aadsts: u32, description: &str) -> Response {
    let trace_id = super::org::new_guid();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{aadsts}: {description} Trace ID: {trace_id} Correlation ID: {} Timestamp: {}", super::org::new_guid(), now_stamp()),
        "error_codes": [aadsts],
        "timestamp": now_stamp(),
        "trace_id": trace_id,
        "correlation_id": super::org::new_guid(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
    });
    (
        StatusCode::from_u16(status).expect("a valid status"),
        Json(body),
    )
        .into_response()
}

fn now_stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC formats")
}

/// `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant.
async fn token(
    State(env): State<Arc<Environment>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    {
        let mut state = env.state();
        state.token_requests += 1;
        if state.token_requests_in_flight > 0 {
            state.overlapping_token_requests += 1;
        }
        state.token_requests_in_flight += 1;
    }
    let _done = TokenRequestDone(&env);
    tokio::time::sleep(env.faults.latency()).await;
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if !tenant.eq_ignore_ascii_case(&env.tenant_id) {
        return token_refused(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if field("grant_type") != "client_credentials" {
        return token_refused(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let mut state = env.state();
    if field("client_id") != state.credentials.client_id {
        return token_refused(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                field("client_id")
            ),
        );
    }
    if field("client_secret") != state.credentials.client_secret {
        return token_refused(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        );
    }
    let resource = field("scope").strip_suffix("/.default").unwrap_or_default();
    if resource.trim_end_matches('/') != env.base_url {
        return token_refused(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {} was not found in the tenant.",
                field("scope")
            ),
        );
    }
    let access_token = format!("eyJ0eXAiOiJKV1Qi.{}", super::random_secret());
    let lifetime = state.token_lifetime;
    state
        .tokens
        .insert(access_token.clone(), Instant::now() + lifetime);
    Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": access_token,
    }))
    .into_response()
}

struct TokenRequestDone<'a>(&'a Environment);

impl Drop for TokenRequestDone<'_> {
    fn drop(&mut self) {
        self.0.state().token_requests_in_flight -= 1;
    }
}

/// An admitted request's place under the service protection limits, given back when it ends
/// (answered or dropped by a client that hung up).
struct Admitted {
    env: Arc<Environment>,
    since: Instant,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let now = Instant::now();
        self.env
            .state()
            .throttle
            .finish(now, now.duration_since(self.since));
    }
}

/// Every Web API request: the gate, then the resource.
async fn data(
    State(env): State<Arc<Environment>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches("/api/data/");
    let (version, resource) = path.split_once('/').unwrap_or((path, ""));
    if !VERSIONS.contains(&version) {
        return refused(&segment_not_found(version));
    }
    let _admitted = match admit(&env, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let query = query_pairs(uri.query().unwrap_or_default());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (method.clone(), target(resource)) {
        (Method::POST, Target::Batch) => {
            batch(
                env.clone(),
                version.to_string(),
                header("content-type").unwrap_or_default(),
                header("prefer").unwrap_or_default(),
                body,
            )
            .await
        }
        (method, Target::Contact(id)) if method == Method::PATCH => {
            let request = Operation {
                content_id: None,
                method: "PATCH".into(),
                url: uri.to_string(),
                headers: lower_case(&headers),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let ids = vec![id.to_ascii_lowercase()];
            let version = version.to_string();
            let answer = write_window(env.clone(), ids, move |env, state| {
                update(env, state, &version, &id, &query, &request)
            })
            .await;
            to_response(answer)
        }
        (Method::GET, target) => {
            tokio::time::sleep(env.faults.latency()).await;
            let state = env.state();
            to_response(read(
                &env,
                &state,
                version,
                &target,
                &query,
                header("prefer"),
            ))
        }
        (_, Target::Unknown(segment)) => refused(&segment_not_found(&segment)),
        _ => refused(&Refusal::new(
            405,
            codes::BAD_PAYLOAD,
            format!("The HTTP method '{method}' is not allowed on this resource."),
        )),
    }
}

/// The gate: a live token, room under the service protection limits, then any fault.
#[allow(clippy::result_large_err)]
fn admit(env: &Arc<Environment>, headers: &HeaderMap) -> Result<Admitted, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut state = env.state();
    let live = state
        .tokens
        .get(token)
        .is_some_and(|expiry| Instant::now() < *expiry);
    if !live {
        return Err(token_refused_by_api());
    }
    if let Err(throttled) = state.throttle.admit(Instant::now()) {
        return Err(too_many(&throttled.refusal, throttled.retry_after));
    }
    let admitted = Admitted {
        env: env.clone(),
        since: Instant::now(),
    };
    let refusal = match env.faults.take() {
        None => None,
        Some(Fault::Unauthorized) => {
            drop(state);
            return Err(token_refused_by_api());
        }
        Some(Fault::ServerError(status)) => Some(Refusal::new(
            status,
            codes::UNEXPECTED,
            "An unexpected error occurred.",
        )),
        Some(Fault::RateLimited { retry_after_secs }) => {
            let wait = Duration::from_secs(retry_after_secs.unwrap_or(60));
            let limits = state.throttle.limits;
            drop(state);
            return Err(too_many(
                &Refusal::new(
                    429,
                    codes::TOO_MANY_REQUESTS,
                    format!(
                        "Number of requests exceeded the limit of {} over time window of {} seconds.",
                        limits.max_requests,
                        limits.window.as_secs()
                    ),
                ),
                wait,
            ));
        }
        Some(Fault::DailyLimit) => {
            let limits = state.throttle.limits;
            drop(state);
            return Err(too_many(
                &Refusal::new(
                    429,
                    codes::EXECUTION_TIME,
                    format!(
                        "Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of {} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                        limits.max_execution_time.as_millis(),
                        limits.window.as_secs()
                    ),
                ),
                limits.window,
            ));
        }
        Some(Fault::Locked) => Some(Refusal::new(
            500,
            codes::SQL_ERROR,
            " Sql error: Generic SQL error. CRM ErrorCode: -2147204784 Sql ErrorCode: -2146232060 Sql Number: 1205",
        )),
        Some(Fault::AccessRevoked) => Some(Refusal::new(
            403,
            codes::MISSING_PRIVILEGE,
            "Principal user (Id=6c2ab16a-3a5b-4e17-9b7e-2f0e8d3c1a10, type=8, roleCount=1, privilegeCount=412, accessMode=4), is missing prvWriteContact privilege (Id=b4e9fbd5-1c3a-4bc6-9b3c-8c1d3c6e1f60) on OTC=2 for entity 'contact'.",
        )),
        Some(Fault::EndpointNotFound) => Some(segment_not_found("contacts")),
    };
    state.stats.requests += 1;
    drop(state);
    match refusal {
        Some(refusal) => Err(refused(&refusal)),
        None => Ok(admitted),
    }
}

fn token_refused_by_api() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"The access token is expired or invalid\"",
        )],
    )
        .into_response()
}

fn too_many(refusal: &Refusal, wait: Duration) -> Response {
    let mut response = refused(refusal);
    response.headers_mut().insert(
        "Retry-After",
        HeaderValue::from_str(&retry_after_secs(wait).to_string()).expect("digits"),
    );
    response
}

fn lower_case(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

/// What a resource path (after the version) names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Batch,
    Contacts,
    /// A row by the key in `contacts(...)`, as written (it may be no GUID).
    Contact(String),
    Unknown(String),
}

fn target(resource: &str) -> Target {
    let resource = resource.trim_end_matches('/');
    if resource == "$batch" {
        return Target::Batch;
    }
    if resource == "contacts" {
        return Target::Contacts;
    }
    match resource
        .strip_prefix("contacts(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(key) => Target::Contact(key.to_string()),
        None => Target::Unknown(resource.split('/').next().unwrap_or(resource).to_string()),
    }
}

/// A query string's pairs, decoded (`%XX`, and `+` for a space, as URL forms write it).
fn query_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| percent_decode(&text.replace('+', " "));
            (decode(key), decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The columns of `$select`, checked; `None` when absent (every column).
fn selected(query: &HashMap<String, String>) -> Result<Option<Vec<String>>, Refusal> {
    let Some(select) = query.get("$select") else {
        return Ok(None);
    };
    let columns: Vec<String> = select.split(',').map(|c| c.trim().to_string()).collect();
    match columns.iter().find(|column| !is_selectable(column)) {
        Some(unknown) => Err(Refusal::new(
            400,
            codes::UNKNOWN_PROPERTY,
            format!(
                "Could not find a property named '{unknown}' on type 'Microsoft.Dynamics.CRM.contact'."
            ),
        )),
        None => Ok(Some(columns)),
    }
}

fn json_answer(status: u16, headers: Vec<(String, String)>, body: &Value) -> Answer {
    let mut headers = headers;
    headers.push((
        "Content-Type".into(),
        "application/json; odata.metadata=minimal".into(),
    ));
    headers.push(("OData-Version".into(), "4.0".into()));
    Answer {
        content_id: None,
        status,
        headers,
        body: Some(body.to_string()),
    }
}

fn error_answer(refusal: &Refusal) -> Answer {
    json_answer(refusal.status, Vec::new(), &refusal.body())
}

fn to_response(answer: Answer) -> Response {
    let mut response = (
        StatusCode::from_u16(answer.status).expect("a valid status"),
        answer.body.unwrap_or_default(),
    )
        .into_response();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A GET of a row or of the contacts collection.
fn read(
    env: &Environment,
    state: &EnvState,
    version: &str,
    target: &Target,
    query: &HashMap<String, String>,
    prefer: Option<&str>,
) -> Answer {
    let select = match selected(query) {
        Ok(select) => select,
        Err(refusal) => return error_answer(&refusal),
    };
    let context = |suffix: &str| {
        format!(
            "{}/api/data/{version}/$metadata#contacts{}{suffix}",
            env.base_url,
            select
                .as_ref()
                .map(|columns| format!("({})", columns.join(",")))
                .unwrap_or_default()
        )
    };
    match target {
        Target::Contact(key) => {
            let id = key.to_ascii_lowercase();
            if !is_guid(&id) {
                return error_answer(&bad_key(key));
            }
            let Some(contact) = state.data.contact(&id) else {
                return error_answer(&Refusal::does_not_exist("contact", &id));
            };
            let mut row = contact.representation(&id, select.as_deref());
            row.insert("@odata.context".into(), Value::String(context("/$entity")));
            json_answer(
                200,
                vec![("ETag".into(), contact.etag())],
                &Value::Object(row),
            )
        }
        Target::Contacts => {
            let context = context("");
            list(env, &state.data, version, query, prefer, select, context)
        }
        Target::Batch => error_answer(&Refusal::new(
            405,
            codes::BAD_PAYLOAD,
            "The HTTP method 'GET' is not allowed on $batch.",
        )),
        Target::Unknown(segment) => error_answer(&segment_not_found(segment)),
    }
}

fn bad_key(key: &str) -> Refusal {
    Refusal::new(
        400,
        codes::BAD_PAYLOAD,
        format!("Bad Request - Error in query syntax: '{key}' is not a valid key for contacts."),
    )
}

/// One page of the contacts collection.
fn list(
    env: &Environment,
    data: &OrgData,
    version: &str,
    query: &HashMap<String, String>,
    prefer: Option<&str>,
    select: Option<Vec<String>>,
    context: String,
) -> Answer {
    let filter = match query.get("$filter").map(|f| id_filter(f)).transpose() {
        Ok(filter) => filter,
        Err(refusal) => return error_answer(&refusal),
    };
    let page_size = prefer
        .into_iter()
        .flat_map(|prefer| prefer.split(','))
        .find_map(|pref| pref.trim().strip_prefix("odata.maxpagesize="))
        .and_then(|size| size.trim().parse::<usize>().ok())
        .map(|size| size.clamp(1, MAX_PAGE_SIZE));
    let after = query
        .get("$skiptoken")
        .and_then(|token| paging_cookie(token));
    let mut rows = data
        .contacts()
        .filter(|(id, _)| filter.as_ref().is_none_or(|ids| ids.contains(*id)))
        .filter(|(id, _)| {
            after
                .as_ref()
                .is_none_or(|after| id.as_str() > after.as_str())
        });
    let size = page_size.unwrap_or(MAX_PAGE_SIZE);
    let page: Vec<(&String, &super::org::Contact)> = rows.by_ref().take(size).collect();
    let more = rows.next().is_some();
    let mut body = Map::new();
    body.insert("@odata.context".into(), Value::String(context));
    body.insert(
        "value".into(),
        Value::Array(
            page.iter()
                .map(|(id, contact)| Value::Object(contact.representation(id, select.as_deref())))
                .collect(),
        ),
    );
    if more && let Some((last, _)) = page.last() {
        let cookie = format!(
            "<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie%20page%3d%221%22%3e%3ccontactid%20last%3d%22%7b{last}%7d%22%20first%3d%22%7b{last}%7d%22%20%2f%3e%3c%2fcookie%3e\" istracking=\"False\" />"
        );
        let mut link = format!("{}/api/data/{version}/contacts?", env.base_url);
        if let Some(select) = &select {
            link.push_str(&format!("$select={}&", select.join(",")));
        }
        if let Some(filter) = query.get("$filter") {
            link.push_str(&format!("$filter={}&", percent_encode(filter)));
        }
        link.push_str(&format!("$skiptoken={}", percent_encode(&cookie)));
        body.insert("@odata.nextLink".into(), Value::String(link));
    }
    let mut headers = Vec::new();
    if let Some(size) = page_size {
        headers.push((
            "Preference-Applied".into(),
            format!("odata.maxpagesize={size}"),
        ));
    }
    json_answer(200, headers, &Value::Object(body))
}

/// The last row id of a page, from the paging cookie of a `$skiptoken`.
fn paging_cookie(token: &str) -> Option<String> {
    let decoded = percent_decode(&percent_decode(token));
    let (_, rest) = decoded.split_once("last=\"{")?;
    let (id, _) = rest.split_once('}')?;
    Some(id.to_ascii_lowercase())
}

/// The ids of a filter `contactid eq {id} or contactid eq {id} ...`.
fn id_filter(filter: &str) -> Result<Vec<String>, Refusal> {
    filter
        .split(" or ")
        .map(|term| {
            let id = term
                .trim()
                .trim_matches(['(', ')'])
                .strip_prefix("contactid eq ")
                .map(|id| id.trim().trim_matches('\'').to_ascii_lowercase())
                .filter(|id| is_guid(id));
            id.ok_or_else(|| {
                Refusal::new(
                    400,
                    codes::BAD_PAYLOAD,
                    format!("The fake Dataverse filters contacts only by contactid: '{term}'."),
                )
            })
        })
        .collect()
}

/// Runs `write` with `ids` marked in flight across the fault latency, counting writes that
/// begin while another write to the same row is in flight.
///
/// The write runs in a task of its own: Dataverse applies a request it has received whether
/// or not the client is still there for the answer, so a client that gives up waiting does not
/// stop a write from landing, late.
async fn write_window<T: Send + 'static>(
    env: Arc<Environment>,
    ids: Vec<String>,
    write: impl FnOnce(&Environment, &mut EnvState) -> T + Send + 'static,
) -> T {
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        {
            let mut state = env.state();
            for id in &ids {
                let in_flight = state.writes_in_flight.entry(id.clone()).or_default();
                *in_flight += 1;
                if *in_flight > 1 {
                    state.stats.overlapping_writes += 1;
                    *state.overlaps_by_record.entry(id.clone()).or_default() += 1;
                }
            }
        }
        tokio::time::sleep(env.faults.latency()).await;
        let mut state = env.state();
        let result = write(&env, &mut state);
        for id in &ids {
            if let Some(in_flight) = state.writes_in_flight.get_mut(id) {
                *in_flight -= 1;
                if *in_flight == 0 {
                    state.writes_in_flight.remove(id);
                }
            }
        }
        drop(state);
        // The client may have hung up; the write stands all the same.
        let _ = answer.send(result);
    });
    answered.await.expect("the write task answers")
}

/// A PATCH of `contacts({key})`: the upsert and its preconditions, then the answer.
fn update(
    env: &Environment,
    state: &mut EnvState,
    version: &str,
    key: &str,
    query: &HashMap<String, String>,
    request: &Operation,
) -> Answer {
    let id = key.to_ascii_lowercase();
    let outcome = selected(query).and_then(|select| {
        if !is_guid(&id) {
            return Err(bad_key(key));
        }
        let body = match serde_json::from_str::<Value>(&request.body) {
            Ok(Value::Object(body)) => body,
            _ => {
                return Err(Refusal::new(
                    400,
                    codes::BAD_PAYLOAD,
                    "The request body is not a JSON object of the contact's properties.",
                ));
            }
        };
        let if_match = request.header("if-match");
        let exists = state.data.contains(&id);
        match (if_match, exists) {
            (None, false) => state.data.insert(&id, &body)?,
            (Some(_), false) => return Err(Refusal::does_not_exist("contact", &id)),
            (Some(etag), true)
                if etag != "*"
                    && state.data.contact(&id).map(|c| c.etag()).as_deref() != Some(etag) =>
            {
                return Err(Refusal::new(
                    412,
                    codes::VERSION_MISMATCH,
                    "The version of the existing record doesn't match the RowVersion property provided.",
                ));
            }
            (_, true) => {
                let changes = state.data.check(&body)?;
                state.data.apply(&id, changes);
            }
        }
        state.stats.records_written += 1;
        state.data.count_write(&id);
        Ok(select)
    });
    match outcome {
        Err(refusal) => error_answer(&refusal),
        Ok(select) => {
            let contact = state.data.contact(&id).expect("just written");
            let entity_id = format!("{}/api/data/{version}/contacts({id})", env.base_url);
            let mut headers = vec![
                ("ETag".to_string(), contact.etag()),
                ("OData-EntityId".to_string(), entity_id),
            ];
            let representation = request.header("prefer").is_some_and(|prefer| {
                prefer
                    .split(',')
                    .any(|p| p.trim() == "return=representation")
            });
            if representation {
                headers.push(("Preference-Applied".into(), "return=representation".into()));
                let mut row = contact.representation(&id, select.as_deref());
                row.insert(
                    "@odata.context".into(),
                    Value::String(format!(
                        "{}/api/data/{version}/$metadata#contacts/$entity",
                        env.base_url
                    )),
                );
                json_answer(200, headers, &Value::Object(row))
            } else {
                headers.push(("OData-Version".into(), "4.0".into()));
                Answer {
                    content_id: None,
                    status: 204,
                    headers,
                    body: None,
                }
            }
        }
    }
}

/// `POST $batch`.
async fn batch(
    env: Arc<Environment>,
    version: String,
    content_type: &str,
    prefer: &str,
    body: Bytes,
) -> Response {
    let Some(boundary) = multipart::boundary(content_type) else {
        return refused(&Refusal::new(
            400,
            codes::BAD_PAYLOAD,
            "The content type of a $batch request must be multipart/mixed with a boundary.",
        ));
    };
    let parts = match multipart::parse_batch(&String::from_utf8_lossy(&body), &boundary) {
        Ok(parts) => parts,
        Err(refusal) => return refused(&refusal),
    };
    let operations = |part: &Part| match part {
        Part::Single(_) => 1,
        Part::ChangeSet(set) => set.len(),
    };
    if parts.iter().map(operations).sum::<usize>() > MAX_BATCH_REQUESTS {
        return refused(&Refusal::new(
            400,
            codes::BAD_PAYLOAD,
            format!("The number of requests in a batch cannot exceed {MAX_BATCH_REQUESTS}."),
        ));
    }
    let continue_on_error = prefer
        .split(',')
        .any(|pref| pref.trim() == "odata.continue-on-error");
    env.state().stats.batch_calls += 1;
    let written: Vec<String> = parts
        .iter()
        .flat_map(|part| match part {
            Part::Single(op) => std::slice::from_ref(op),
            Part::ChangeSet(set) => set.as_slice(),
        })
        .filter(|op| op.method == "PATCH")
        .filter_map(|op| match target(op_resource(&op.url)?.1) {
            Target::Contact(key) => Some(key.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let (status, answers) = write_window(env, written, move |env, state| {
        let mut answers = Vec::new();
        let mut status = 200;
        for part in &parts {
            let (answer, failed) = match part {
                Part::Single(op) => {
                    let answer = operation(env, state, &version, op);
                    let failed = (answer.status >= 400).then_some(answer.status);
                    (PartAnswer::Single(answer), failed)
                }
                Part::ChangeSet(set) => change_set(env, state, &version, set),
            };
            answers.push(answer);
            if let Some(failed_status) = failed
                && !continue_on_error
            {
                status = failed_status;
                break;
            }
        }
        (status, answers)
    })
    .await;
    let (boundary, body) = multipart::render(&answers);
    let mut response =
        (StatusCode::from_u16(status).expect("a valid status"), body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "Content-Type",
        HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")).expect("ASCII"),
    );
    headers.insert("OData-Version", HeaderValue::from_static("4.0"));
    if continue_on_error {
        headers.insert(
            "Preference-Applied",
            HeaderValue::from_static("odata.continue-on-error"),
        );
    }
    response
}

/// A change set: every request, or none. Answers each request, or one error for the set.
fn change_set(
    env: &Environment,
    state: &mut EnvState,
    version: &str,
    set: &[Operation],
) -> (PartAnswer, Option<u16>) {
    if set.iter().any(|op| op.method == "GET") {
        let refusal = Refusal::new(
            400,
            codes::BAD_PAYLOAD,
            "GET requests are not allowed in a change set.",
        );
        return (PartAnswer::Single(error_answer(&refusal)), Some(400));
    }
    let mut undo = Vec::new();
    let mut answers = Vec::new();
    for op in set {
        let key = op_resource(&op.url).map(|(_, resource)| target(resource));
        if let Some(Target::Contact(key)) = &key {
            undo.push((state.data.snapshot(key), state.stats.records_written));
        }
        let mut answer = operation(env, state, version, op);
        answer.content_id = op.content_id.clone();
        if answer.status >= 400 {
            for (snapshot, written) in undo.into_iter().rev() {
                state.data.restore(snapshot);
                state.stats.records_written = written;
            }
            let status = answer.status;
            return (PartAnswer::Single(answer), Some(status));
        }
        answers.push(answer);
    }
    (PartAnswer::ChangeSet(answers), None)
}

/// The version and resource of a request URL inside a batch: absolute, from the host, or
/// relative to the service root. `None` when it is not under `/api/data/`.
fn op_resource(url: &str) -> Option<(&str, &str)> {
    let path = match url.find("://") {
        Some(scheme) => &url[scheme + 3..][url[scheme + 3..].find('/')?..],
        None => url,
    };
    let path = path.split('?').next().unwrap_or(path);
    match path.strip_prefix("/api/data/") {
        Some(rest) => rest.split_once('/'),
        None => Some(("", path.trim_start_matches('/'))),
    }
}

/// One request inside a batch.
fn operation(env: &Environment, state: &mut EnvState, version: &str, op: &Operation) -> Answer {
    let Some((op_version, resource)) = op_resource(&op.url) else {
        return error_answer(&segment_not_found(&op.url));
    };
    let op_version = if op_version.is_empty() {
        version
    } else {
        op_version
    };
    if !VERSIONS.contains(&op_version) {
        return error_answer(&segment_not_found(op_version));
    }
    let query = query_pairs(op.url.split_once('?').map_or("", |(_, q)| q));
    match (op.method.as_str(), target(resource)) {
        ("PATCH", Target::Contact(key)) => update(env, state, op_version, &key, &query, op),
        ("GET", target) => read(env, state, op_version, &target, &query, op.header("prefer")),
        (_, Target::Unknown(segment)) => error_answer(&segment_not_found(&segment)),
        (method, _) => error_answer(&Refusal::new(
            405,
            codes::BAD_PAYLOAD,
            format!("The HTTP method '{method}' is not allowed on this resource."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_batch_urls_resolve() {
        assert_eq!(target("$batch"), Target::Batch);
        assert_eq!(target("contacts(abc)"), Target::Contact("abc".into()));
        assert_eq!(target("leads"), Target::Unknown("leads".into()));
        assert_eq!(
            op_resource("https://org.crm.dynamics.com/api/data/v9.2/contacts(x)?$select=a"),
            Some(("v9.2", "contacts(x)"))
        );
        assert_eq!(
            op_resource("/api/data/v9.1/contacts"),
            Some(("v9.1", "contacts"))
        );
        assert_eq!(op_resource("contacts(x)"), Some(("", "contacts(x)")));
    }

    #[test]
    fn paging_cookies_round_trip_through_next_links() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let cookie = format!(
            "<cookie pagenumber=\"2\" pagingcookie=\"%3ccookie%20page%3d%221%22%3e%3ccontactid%20last%3d%22%7b{id}%7d%22\" />"
        );
        let link_value = percent_encode(&cookie);
        let pairs = query_pairs(&format!(
            "$skiptoken={link_value}&$filter=contactid+eq+{id}"
        ));
        assert_eq!(pairs["$filter"], format!("contactid eq {id}"));
        assert_eq!(paging_cookie(&pairs["$skiptoken"]).as_deref(), Some(id));
        assert_eq!(
            id_filter(&format!(
                "contactid eq {id} or contactid eq {}",
                id.to_uppercase()
            ))
            .unwrap(),
            vec![id.to_string(), id.to_string()]
        );
        assert!(id_filter("lastname eq 'x'").is_err());
    }
}
