//! HTTP to one Salesforce org: sessions from the token endpoint, one retry after a refresh
//! on an expired session, and the API budget read from every answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use unisync_core::{AdapterError, ApiUsage, CredentialStore, Secret};

use crate::auth::{REFRESH_TOKEN_KEY, TokenAnswer, token_form};
use crate::config::{Grant, SalesforceConfig};
use crate::error::parse_token_error;

/// A client for one connection. Cheap to share; all state is behind locks.
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

/// A Salesforce answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
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
        let session = self.session(None).await?;
        let build = |session: &Session| {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", session.instance_url))
                .bearer_auth(session.access_token.expose());
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            request
        };
        let answer = self.execute(build(&session)).await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        let renewed = self.session(Some(session.generation)).await?;
        self.execute(build(&renewed)).await
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

    /// One token request. A rotated refresh token is kept in memory and in the store.
    async fn request_session(
        &self,
        state: &mut AuthState,
    ) -> Result<(Secret, String), AdapterError> {
        let form = token_form(&self.grant, state.refresh_token.as_ref(), &self.login_url)?;
        let request = self
            .http
            .post(format!("{}/services/oauth2/token", self.login_url))
            .form(&form);
        let answer = self.execute(request).await?;
        if answer.status != 200 {
            return Err(parse_token_error(answer.status, &answer.body));
        }
        let token: TokenAnswer = serde_json::from_str(&answer.body).map_err(|err| {
            AdapterError::retryable("TOKEN_ANSWER", format!("unreadable token answer: {err}"))
        })?;
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

    /// Sends a request and reads the answer whole, noting the API budget it reports.
    async fn execute(&self, request: RequestBuilder) -> Result<Answer, AdapterError> {
        let response = request.send().await.map_err(transport_error)?;
        if let Some(usage) = response
            .headers()
            .get("Sforce-Limit-Info")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_limit_info)
        {
            *self.usage.lock().unwrap() = Some((usage, Instant::now()));
        }
        let status = response.status().as_u16();
        let body = response.text().await.map_err(transport_error)?;
        Ok(Answer { status, body })
    }
}

/// Timeouts and broken connections: the request may or may not have landed, and repeating
/// an edit is harmless.
fn transport_error(err: reqwest::Error) -> AdapterError {
    let code = if err.is_timeout() {
        "TIMEOUT"
    } else {
        "TRANSPORT"
    };
    AdapterError::retryable(code, err.to_string())
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
    use super::*;

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
