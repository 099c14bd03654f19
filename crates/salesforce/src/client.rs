//! HTTP to one Salesforce org: sessions from the token endpoint, one retry after a refresh
//! on an expired session, and the API budget read from every answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use unisync_core::{AdapterError, ApiUsage, CredentialStore, Secret};

use crate::auth::{REFRESH_TOKEN_KEY, TokenAnswer, token_form};
use crate::config::{Grant, SalesforceConfig};
use crate::error::{parse_token_error, transport_error, unreadable_token_answer};

/// A client for one connection. Cheap to share; all state is behind locks. Its `Debug` shows
/// where it connects and nothing of its credentials or sessions.
pub struct SalesforceClient {
    http: reqwest::Client,
    login_url: String,
    api_version: String,
    grant: Grant,
    credentials: Arc<dyn CredentialStore>,
    /// Held across a token request, so that one renewal runs at a time and callers that
    /// arrive meanwhile wait for its outcome instead of starting their own.
    auth: tokio::sync::Mutex<AuthState>,
    /// `AuthState::generation`, readable without the lock: a caller notes it before waiting,
    /// and a change means someone renewed while it waited.
    generation: AtomicU64,
    /// The last `Sforce-Limit-Info` reading, and when it came.
    usage: Mutex<Option<(ApiUsage, Instant)>>,
}

#[derive(Default)]
struct AuthState {
    /// Bumped by every renewal, successful or not.
    generation: u64,
    /// The last renewal's outcome; `None` before the first.
    outcome: Option<Result<Arc<Session>, AdapterError>>,
    /// The newest refresh token, when Salesforce rotated it or the store held one.
    refresh_token: Option<Secret>,
}

/// A session: the token and the instance it is valid on.
struct Session {
    access_token: Secret,
    instance_url: String,
    /// The renewal that made it.
    generation: u64,
}

/// A request body.
#[derive(Clone, Copy)]
enum Body<'a> {
    Json(&'a Value),
    /// Bulk API 2.0 job data.
    Csv(&'a str),
}

/// A Salesforce answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Kept for the error classifier (`Retry-After`).
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A refusal that quotes the session's access token (some gateways echo the request's
    /// headers) must not carry it into an error, a dead letter or a log.
    fn without_token(mut self, session: &Session) -> Answer {
        let token = session.access_token.expose();
        if !self.is_success() && !token.is_empty() {
            self.body = self.body.replace(token, "[redacted]");
        }
        self
    }
}

impl SalesforceClient {
    /// Builds the client; contacts nobody. A refresh token saved in `credentials` by an earlier
    /// rotation wins over the configured one (which Salesforce has revoked by then).
    pub fn new(
        config: &SalesforceConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        let refresh_token = match config.grant {
            Grant::RefreshToken { .. } => credentials.load(REFRESH_TOKEN_KEY).map(Secret::new),
            _ => None,
        };
        Ok(SalesforceClient {
            http,
            login_url: config.login_url.clone(),
            api_version: config.api_version.clone(),
            grant: config.grant.clone(),
            credentials,
            auth: tokio::sync::Mutex::new(AuthState {
                refresh_token,
                ..AuthState::default()
            }),
            generation: AtomicU64::new(0),
            usage: Mutex::new(None),
        })
    }

    /// `/services/data/{version}/{rest}`.
    pub fn data_path(&self, rest: &str) -> String {
        format!("/services/data/{}/{rest}", self.api_version)
    }

    /// The budget from the last `Sforce-Limit-Info` header seen, and when it was seen.
    pub fn api_usage(&self) -> Option<(ApiUsage, Instant)> {
        *self.usage.lock().unwrap()
    }

    /// Sends a data request to `path` (from `/services/data/`) on the org's instance. An
    /// expired session is renewed once (shared with concurrent callers) and the request sent
    /// again; a second 401 is returned as it came, for the caller to classify.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, AdapterError> {
        self.send_with_headers(method, path, query, body, &[]).await
    }

    /// [`send`](Self::send) with further request `headers` (a precondition, for one).
    pub async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(HeaderName, &str)],
    ) -> Result<Answer, AdapterError> {
        self.send_body(method, path, query, body.map(Body::Json), headers)
            .await
    }

    /// [`send`](Self::send) with a CSV body (`text/csv`), as Bulk API 2.0 uploads job data.
    pub async fn send_csv(
        &self,
        method: Method,
        path: &str,
        csv: &str,
    ) -> Result<Answer, AdapterError> {
        self.send_body(method, path, &[], Some(Body::Csv(csv)), &[])
            .await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Body<'_>>,
        headers: &[(HeaderName, &str)],
    ) -> Result<Answer, AdapterError> {
        let session = self.session(None).await?;
        let build = |session: &Session| {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", session.instance_url))
                .bearer_auth(session.access_token.expose());
            for (name, value) in headers {
                request = request.header(name.clone(), *value);
            }
            if !query.is_empty() {
                request = request.query(query);
            }
            match body {
                Some(Body::Json(json)) => request = request.json(json),
                Some(Body::Csv(csv)) => {
                    request = request
                        .header(CONTENT_TYPE, "text/csv")
                        .body(csv.to_string());
                }
                None => {}
            }
            request
        };
        // A lost answer to anything but a read may mean the request landed.
        let write = method != Method::GET;
        let answer = self.execute(build(&session), write).await?;
        if answer.status != 401 {
            return Ok(answer.without_token(&session));
        }
        let renewed = self.session(Some(session.generation)).await?;
        let answer = self.execute(build(&renewed), write).await?;
        Ok(answer.without_token(&renewed))
    }

    /// The current session, or a new one when there is none or the caller's was `refused`.
    /// A caller that waited while someone else renewed takes that renewal's outcome, so a
    /// burst of expired requests costs one token request.
    async fn session(&self, refused: Option<u64>) -> Result<Arc<Session>, AdapterError> {
        let seen = self.generation.load(Ordering::Acquire);
        let mut state = self.auth.lock().await;
        match &state.outcome {
            Some(Ok(session)) if refused != Some(session.generation) => {
                return Ok(session.clone());
            }
            Some(outcome) if state.generation != seen => return outcome.clone(),
            _ => {}
        }
        let generation = state.generation + 1;
        let outcome = self
            .request_session(&mut state)
            .await
            .map(|(access_token, instance_url)| {
                Arc::new(Session {
                    access_token,
                    instance_url,
                    generation,
                })
            });
        state.generation = generation;
        state.outcome = Some(outcome.clone());
        self.generation.store(generation, Ordering::Release);
        outcome
    }

    /// A new session. When Salesforce refuses a refresh token that an earlier rotation left in
    /// the store, the configured one is tried before giving up: the stored one may be stale
    /// (restored from an old backup, or rotated by another process) while the configured one
    /// was just replaced by an operator.
    async fn request_session(
        &self,
        state: &mut AuthState,
    ) -> Result<(Secret, String), AdapterError> {
        match self.token_request(state).await {
            Err(error) if error.code == "invalid_grant" && self.holds_a_newer_token(state) => {
                tracing::warn!(
                    code = %error.code,
                    "the stored Salesforce refresh token was refused; trying the configured one"
                );
                state.refresh_token = None;
                self.token_request(state).await
            }
            outcome => outcome,
        }
    }

    /// Whether the refresh token in use came from the store and differs from the configured.
    fn holds_a_newer_token(&self, state: &AuthState) -> bool {
        match (&self.grant, &state.refresh_token) {
            (Grant::RefreshToken { refresh_token, .. }, Some(stored)) => stored != refresh_token,
            _ => false,
        }
    }

    /// One token request with the newest refresh token. A rotated refresh token is kept in
    /// memory and in the store.
    async fn token_request(&self, state: &mut AuthState) -> Result<(Secret, String), AdapterError> {
        let form = token_form(&self.grant, state.refresh_token.as_ref(), &self.login_url)?;
        let request = self
            .http
            .post(format!("{}/services/oauth2/token", self.login_url))
            .form(&form);
        // A token request changes no record, so a lost answer is simply retried.
        let answer = self.execute(request, false).await?;
        if answer.status != 200 {
            return Err(parse_token_error(answer.status, &answer.body));
        }
        let token: TokenAnswer =
            serde_json::from_str(&answer.body).map_err(|err| unreadable_token_answer(&err))?;
        if let (Grant::RefreshToken { .. }, Some(rotated)) = (&self.grant, token.refresh_token) {
            if let Err(problem) = self.credentials.save(REFRESH_TOKEN_KEY, &rotated) {
                // The new token still works in memory; only a restart would lose it.
                tracing::error!(%problem, "could not save the rotated Salesforce refresh token");
            }
            state.refresh_token = Some(Secret::new(rotated));
        }
        let instance_url = token.instance_url.trim_end_matches('/').to_string();
        Ok((Secret::new(token.access_token), instance_url))
    }

    /// Sends a request and reads the answer whole, noting the API budget it reports. `write`:
    /// the request changes records, so a lost answer leaves its outcome unknown.
    async fn execute(&self, request: RequestBuilder, write: bool) -> Result<Answer, AdapterError> {
        let lost = |err: reqwest::Error| transport_error(&err, write);
        let response = request.send().await.map_err(lost)?;
        if let Some(usage) = response
            .headers()
            .get("Sforce-Limit-Info")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_limit_info)
        {
            *self.usage.lock().unwrap() = Some((usage, Instant::now()));
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(lost)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("login_url", &self.login_url)
            .field("api_version", &self.api_version)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// Reads `api-usage=18/5000` from a `Sforce-Limit-Info` header (`; api-bursts=..` may follow).
fn parse_limit_info(header: &str) -> Option<ApiUsage> {
    let usage = header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("api-usage="))?;
    let (used, limit) = usage.split_once('/')?;
    Some(ApiUsage {
        used: used.trim().parse().ok()?,
        limit: limit.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use unisync_core::ConnectionConfig;

    use super::*;

    struct Remembers;

    impl CredentialStore for Remembers {
        fn load(&self, _: &str) -> Option<String> {
            Some("5Aep861StoredTokenNeverShown".into())
        }

        fn save(&self, _: &str, _: &str) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn debug_output_shows_where_it_connects_and_no_secret() {
        let table = serde_json::json!({"login_url": "https://example.my.salesforce.com"});
        let connection =
            ConnectionConfig::new("sf", "salesforce", table.as_object().unwrap().clone())
                .with_inline_secrets([
                    ("client_id", "3MVG9ClientIdNeverShown"),
                    ("client_secret", "ClientSecretNeverShown"),
                    ("refresh_token", "5Aep861RefreshTokenNeverShown"),
                ]);
        let config = SalesforceConfig::from_connection(&connection).unwrap();
        let client = SalesforceClient::new(&config, Arc::new(Remembers)).unwrap();
        let shown = format!("{client:?}");
        assert!(
            shown.contains("https://example.my.salesforce.com"),
            "{shown}"
        );
        assert!(!shown.contains("NeverShown"), "{shown}");
    }

    #[test]
    fn reads_the_daily_budget() {
        assert_eq!(
            parse_limit_info("api-usage=18/5000"),
            Some(ApiUsage {
                used: 18,
                limit: 5000
            })
        );
        assert_eq!(
            parse_limit_info("api-usage=4500/5000; api-bursts=1/750"),
            Some(ApiUsage {
                used: 4500,
                limit: 5000
            })
        );
        assert_eq!(parse_limit_info("api-bursts=1/750"), None);
        assert_eq!(parse_limit_info("api-usage=x/5000"), None);
    }
}
