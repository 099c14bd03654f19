//! Bearer tokens for requests: a static private-app token, or OAuth access tokens refreshed
//! ahead of expiry — one refresh at a time per connection — with a rotated refresh token
//! persisted through the [`CredentialStore`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use unisync_core::{AdapterError, CredentialStore, FieldMapping, Secret};

use crate::error::{Effect, parse_error, redacted, transport_error};

/// The [`CredentialStore`] key of the latest refresh token.
pub const REFRESH_TOKEN_KEY: &str = "refresh_token";
/// The most a token is refreshed ahead of its expiry.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where a connection's bearer tokens come from.
pub enum Credentials {
    Static(Secret),
    OAuth(Box<OAuthSession>),
}

impl Credentials {
    /// The token to send now, refreshing it first when it is (nearly) expired.
    pub async fn bearer(&self, http: &reqwest::Client) -> Result<Secret, AdapterError> {
        match self {
            Credentials::Static(token) => Ok(token.clone()),
            Credentials::OAuth(session) => session.bearer(http).await,
        }
    }

    /// HubSpot refused `used`: forget it, so the next [`bearer`](Self::bearer) refreshes.
    /// False when there is nothing to refresh (a static token).
    pub async fn reject(&self, used: &Secret) -> bool {
        match self {
            Credentials::Static(_) => false,
            Credentials::OAuth(session) => {
                session.reject(used).await;
                true
            }
        }
    }
}

/// An OAuth app's tokens for one connection.
pub struct OAuthSession {
    token_url: Url,
    client_id: Secret,
    client_secret: Secret,
    /// The refresh token from config: the fallback when a stored one is refused.
    configured_refresh_token: Secret,
    store: Arc<dyn CredentialStore>,
    mapping: FieldMapping,
    /// Held across a refresh, so concurrent callers wait for the one refresh in flight.
    state: Mutex<SessionState>,
}

struct SessionState {
    refresh_token: Secret,
    access: Option<AccessToken>,
}

struct AccessToken {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: u64,
}

impl OAuthSession {
    /// A session that refreshes at `token_url`; a refresh token saved by an earlier run wins
    /// over the configured one.
    pub fn new(
        token_url: Url,
        client_id: Secret,
        client_secret: Secret,
        configured_refresh_token: Secret,
        store: Arc<dyn CredentialStore>,
        mapping: FieldMapping,
    ) -> Self {
        let refresh_token = store
            .load(REFRESH_TOKEN_KEY)
            .map(Secret::new)
            .unwrap_or_else(|| configured_refresh_token.clone());
        OAuthSession {
            token_url,
            client_id,
            client_secret,
            configured_refresh_token,
            store,
            mapping,
            state: Mutex::new(SessionState {
                refresh_token,
                access: None,
            }),
        }
    }

    async fn bearer(&self, http: &reqwest::Client) -> Result<Secret, AdapterError> {
        let mut state = self.state.lock().await;
        if let Some(access) = &state.access
            && Instant::now() < access.refresh_at
        {
            return Ok(access.value.clone());
        }
        let refreshed = match self.refresh(http, &mut state).await {
            Err(error)
                if error.kind == unisync_core::ErrorKind::Unauthorized
                    && state.refresh_token != self.configured_refresh_token =>
            {
                tracing::warn!(code = %error.code, "the stored HubSpot refresh token was refused; trying the configured one");
                state.refresh_token = self.configured_refresh_token.clone();
                self.refresh(http, &mut state).await
            }
            other => other,
        }?;
        let value = refreshed.value.clone();
        state.access = Some(refreshed);
        Ok(value)
    }

    async fn reject(&self, used: &Secret) {
        let mut state = self.state.lock().await;
        if state
            .access
            .as_ref()
            .is_some_and(|access| access.value == *used)
        {
            state.access = None;
        }
    }

    /// One `refresh_token` grant. A refused grant is `Unauthorized` with HubSpot's status
    /// and message; outages and rate limits are classified as for any request. No error
    /// carries the token endpoint's body unchecked: a malformed answer may hold the very
    /// tokens it failed to deliver, and a refusal may echo the refresh token.
    async fn refresh(
        &self,
        http: &reqwest::Client,
        state: &mut SessionState,
    ) -> Result<AccessToken, AdapterError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.expose()),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", state.refresh_token.expose()),
        ];
        let secrets = [
            self.client_id.expose(),
            self.client_secret.expose(),
            state.refresh_token.expose(),
            self.configured_refresh_token.expose(),
        ];
        // A token request changes no contact: a lost answer is only a failed try.
        let response = http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|err| transport_error(&err, Effect::Read))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|err| transport_error(&err, Effect::Read))?;
        if matches!(status.as_u16(), 400 | 401 | 403) {
            return Err(redacted(refused_grant(status, &body), &secrets));
        }
        if !status.is_success() {
            let error = parse_error(status, &headers, &body, &self.mapping, None);
            return Err(redacted(error, &secrets));
        }
        let answer: TokenAnswer =
            serde_json::from_str(&body).map_err(|err| malformed_token_answer(status, &err))?;
        let received_at = Instant::now();
        if let Some(rotated) = answer
            .refresh_token
            .filter(|token| token != state.refresh_token.expose())
        {
            if let Err(err) = self.store.save(REFRESH_TOKEN_KEY, &rotated) {
                tracing::error!(%err, "could not persist HubSpot's new refresh token");
            }
            state.refresh_token = Secret::new(rotated);
        }
        tracing::debug!(
            expires_in = answer.expires_in,
            "refreshed the HubSpot access token"
        );
        let lifetime = Duration::from_secs(answer.expires_in);
        Ok(AccessToken {
            value: Secret::new(answer.access_token),
            refresh_at: received_at + lifetime - (lifetime / 5).min(MAX_REFRESH_MARGIN),
        })
    }
}

/// HubSpot answers a bad grant with `{"status": "BAD_REFRESH_TOKEN", "message": ...}`;
/// OAuth servers in general with `{"error": ..., "error_description": ...}`. Anything else in
/// the body is left out: it says nothing a person could act on, and may echo the grant.
fn refused_grant(status: reqwest::StatusCode, body: &str) -> AdapterError {
    let parsed: Value = serde_json::from_str(body).unwrap_or_default();
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_string);
    let code = text("status")
        .or_else(|| text("error"))
        .unwrap_or_else(|| "REFRESH_REFUSED".to_string());
    let message = text("message")
        .or_else(|| text("error_description"))
        .unwrap_or_else(|| format!("HubSpot's token endpoint refused the grant ({status})"));
    AdapterError::unauthorized(code, message)
}

/// A success answer that is no token answer. Only where the JSON broke is told, never what it
/// held (serde's own message may quote a value, and the values are tokens).
fn malformed_token_answer(status: reqwest::StatusCode, error: &serde_json::Error) -> AdapterError {
    AdapterError::retryable(
        "BAD_TOKEN_ANSWER",
        format!(
            "HubSpot's token endpoint answered {status} with a body that is not a token \
             answer ({:?} error at line {}, column {})",
            error.classify(),
            error.line(),
            error.column()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_grants_keep_hubspots_status_and_message() {
        let error = refused_grant(
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token","correlationId":"x"}"#,
        );
        assert_eq!(error.kind, unisync_core::ErrorKind::Unauthorized);
        assert_eq!(error.code, "BAD_REFRESH_TOKEN");
        assert_eq!(error.message, "missing or unknown refresh token");
        let oauth = refused_grant(
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant","error_description":"expired"}"#,
        );
        assert_eq!(
            (oauth.code.as_str(), oauth.message.as_str()),
            ("invalid_grant", "expired")
        );
        let echo = refused_grant(
            reqwest::StatusCode::BAD_REQUEST,
            "grant_type=refresh_token&refresh_token=na1-secret",
        );
        assert!(!echo.message.contains("na1-secret"), "{}", echo.message);
    }

    #[test]
    fn a_malformed_token_answer_tells_where_not_what() {
        let body =
            r#"{"access_token": "at-secret", "refresh_token": "rt-secret", "expires_in": "later"}"#;
        // `TokenAnswer` has no `Debug` on purpose: it holds tokens.
        let error = serde_json::from_str::<TokenAnswer>(body)
            .err()
            .expect("a string is no number");
        let error = malformed_token_answer(reqwest::StatusCode::OK, &error);
        assert_eq!(error.code, "BAD_TOKEN_ANSWER");
        assert!(error.message.contains("line 1"), "{}", error.message);
        assert!(!error.message.contains("secret"), "{}", error.message);
        assert!(!error.message.contains("later"), "{}", error.message);
    }
}
