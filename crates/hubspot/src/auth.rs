//! Bearer tokens for requests: a static private-app token, or OAuth access tokens refreshed
//! ahead of expiry — one refresh at a time per connection, its outcome shared by every caller
//! that waited for it — with a rotated refresh token persisted through the
//! [`CredentialStore`] (both from the kit).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;
use unisync_core::{AdapterError, CredentialStore, FieldMapping, Secret};
use unisync_kit::{Effect, Fresh, HttpClient, RotatingSecret, Token, TokenCache, redacted};

use crate::error::parse_error;

/// The [`CredentialStore`] key of the latest refresh token.
pub const REFRESH_TOKEN_KEY: &str = "refresh_token";

/// The token a request was sent with, to name it when HubSpot refuses it.
pub enum Bearer {
    /// The private-app token.
    Static(Secret),
    /// An OAuth access token from the session's cache.
    OAuth(Arc<Token<Secret>>),
}

impl Bearer {
    /// The token's value, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        match self {
            Bearer::Static(token) => token.expose(),
            Bearer::OAuth(token) => token.value().expose(),
        }
    }
}

/// Where a connection's bearer tokens come from.
pub enum Credentials {
    Static(Secret),
    OAuth(Box<OAuthSession>),
}

impl Credentials {
    /// The token to send now, refreshing it first when it is (nearly) expired or when HubSpot
    /// `refused` the one sent before.
    pub async fn bearer(
        &self,
        http: &HttpClient,
        refused: Option<&Bearer>,
    ) -> Result<Bearer, AdapterError> {
        match self {
            Credentials::Static(token) => Ok(Bearer::Static(token.clone())),
            Credentials::OAuth(session) => {
                let refused = match refused {
                    Some(Bearer::OAuth(token)) => Some(token.as_ref()),
                    _ => None,
                };
                let token = session
                    .tokens
                    .token(refused, || session.refresh(http))
                    .await?;
                Ok(Bearer::OAuth(token))
            }
        }
    }

    /// Whether a refused token can be replaced (false for a static token).
    pub fn refreshes(&self) -> bool {
        matches!(self, Credentials::OAuth(_))
    }
}

/// An OAuth app's tokens for one connection.
pub struct OAuthSession {
    token_url: Url,
    client_id: Secret,
    client_secret: Secret,
    refresh_token: RotatingSecret,
    mapping: FieldMapping,
    tokens: TokenCache<Secret>,
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
        OAuthSession {
            token_url,
            client_id,
            client_secret,
            refresh_token: RotatingSecret::new(REFRESH_TOKEN_KEY, configured_refresh_token, store),
            mapping,
            tokens: TokenCache::new(),
        }
    }

    /// A new access token; a refused stored refresh token falls back to the configured one.
    async fn refresh(&self, http: &HttpClient) -> Result<Fresh<Secret>, AdapterError> {
        self.refresh_token
            .with_fallback(|refresh_token| self.grant(http, refresh_token))
            .await
    }

    /// One `refresh_token` grant. A refused grant is `Unauthorized` with HubSpot's status
    /// and message; outages and rate limits are classified as for any request. No error
    /// carries the token endpoint's body unchecked: a malformed answer may hold the very
    /// tokens it failed to deliver, and a refusal may echo the refresh token.
    async fn grant(
        &self,
        http: &HttpClient,
        refresh_token: Secret,
    ) -> Result<Fresh<Secret>, AdapterError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.expose()),
            ("client_secret", self.client_secret.expose()),
            ("refresh_token", refresh_token.expose()),
        ];
        let secrets = [
            self.client_id.expose(),
            self.client_secret.expose(),
            refresh_token.expose(),
            self.refresh_token.configured().expose(),
        ];
        // A token request changes no contact: a lost answer is only a failed try.
        let answer = http
            .send(
                http.request(Method::POST, self.token_url.clone())
                    .form(&form),
                Effect::Read,
            )
            .await?;
        let status = answer.status;
        if matches!(status.as_u16(), 400 | 401 | 403) {
            return Err(redacted(refused_grant(status, &answer.body), &secrets));
        }
        if !status.is_success() {
            let error = parse_error(status, &answer.headers, &answer.body, &self.mapping, None);
            return Err(redacted(error, &secrets));
        }
        let token: TokenAnswer = serde_json::from_str(&answer.body)
            .map_err(|err| malformed_token_answer(status, &err))?;
        self.refresh_token.rotated(token.refresh_token);
        tracing::debug!(
            expires_in = token.expires_in,
            "refreshed the HubSpot access token"
        );
        Ok(Fresh {
            value: Secret::new(token.access_token),
            lifetime: Some(Duration::from_secs(token.expires_in)),
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
