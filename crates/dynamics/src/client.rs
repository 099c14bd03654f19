//! HTTP to one Dataverse environment, on the provider kit: tokens from the Microsoft identity
//! platform (client credentials, single-flight, renewed ahead of expiry and once after a
//! 401), and requests paced under the service protection limits.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use unisync_core::{AdapterError, Secret};
use unisync_kit::{Answer, Effect, Fresh, HttpClient, Pacer, Token, TokenCache};

use crate::config::DynamicsConfig;
use crate::error::{MAX_RETRY_AFTER, parse_token_error};

/// Dataverse's service protection limits per user: requests in a 5-minute sliding window,
/// and concurrent requests. The pacer keeps under both, and a 429's `Retry-After` pauses it.
const REQUESTS_PER_WINDOW: u32 = 6000;
const WINDOW: Duration = Duration::from_secs(300);
const MAX_CONCURRENT_REQUESTS: u32 = 52;

/// A request body.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// A `$batch` body and its boundary.
    Batch {
        boundary: &'a str,
        text: &'a str,
    },
}

/// A client for one connection. Cheap to share; its `Debug` shows where it connects and
/// nothing of its credentials or tokens.
pub struct DataverseClient {
    http: HttpClient,
    /// `{base_url}/api/data/{version}/`: every resource is relative to it.
    api_root: Url,
    token_url: Url,
    scope: String,
    client_id: Secret,
    client_secret: Secret,
    tokens: TokenCache<Secret>,
    pacer: Pacer,
}

/// The identity platform's token answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl DataverseClient {
    /// Builds the client; contacts nobody.
    pub fn new(config: &DynamicsConfig) -> Result<Self, reqwest::Error> {
        let api_root = config
            .base_url
            .join(&format!("api/data/{}/", config.api_version))
            .expect("a version of letters, digits and dots joins any http(s) URL");
        Ok(DataverseClient {
            http: HttpClient::new(config.timeout)?,
            api_root,
            token_url: config.token_url.clone(),
            scope: config.scope(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            tokens: TokenCache::new(),
            pacer: Pacer::new(REQUESTS_PER_WINDOW, WINDOW)
                .with_max_in_flight(MAX_CONCURRENT_REQUESTS),
        })
    }

    /// The URL of `resource` (`contacts(id)`, `$batch`), relative to the service root.
    pub fn url(&self, resource: &str) -> Url {
        self.api_root
            .join(resource)
            .expect("resources are built from checked ids and names")
    }

    /// Whether `url` is under this environment's service root (a `@odata.nextLink`, a
    /// bearer token goes nowhere else).
    pub fn serves(&self, url: &Url) -> bool {
        url.origin() == self.api_root.origin() && url.path().starts_with(self.api_root.path())
    }

    /// The path of the service root (`/api/data/v9.2/`), as `$batch` requests name resources.
    pub fn root_path(&self) -> &str {
        self.api_root.path()
    }

    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Sends a Web API request when the pacer has room. A refused token is renewed once
    /// (shared with concurrent callers) and the request sent again; a second 401 is returned
    /// as it came, for the caller to classify. A 429 pauses every request of the connection
    /// for its `Retry-After`.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Answer, AdapterError> {
        let _slot = self.pacer.acquire().await;
        let token = self.tokens.token(None, || self.fetch_token()).await?;
        let mut answer = self.execute(&method, &url, headers, body, &token).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            let renewed = self
                .tokens
                .token(Some(&token), || self.fetch_token())
                .await?;
            answer = self.execute(&method, &url, headers, body, &renewed).await?;
        }
        if answer.status == StatusCode::TOO_MANY_REQUESTS
            && let Some(wait) = answer.retry_after(MAX_RETRY_AFTER)
        {
            self.pacer.pause_for(wait);
        }
        Ok(answer)
    }

    async fn execute(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Body<'_>,
        token: &Token<Secret>,
    ) -> Result<Answer, AdapterError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.value().expose())
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0")
            .header("Accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match body {
            Body::None => request,
            Body::Json(json) => request.json(json),
            Body::Batch { boundary, text } => request
                .header(
                    CONTENT_TYPE,
                    format!("multipart/mixed; boundary={boundary}"),
                )
                .body(text.to_string()),
        };
        let answer = self.http.send(request, Effect::of(method)).await?;
        Ok(answer.without_secrets(&[token.value().expose()]))
    }

    /// A new token: the client credentials grant for the environment's `.default` scope.
    async fn fetch_token(&self) -> Result<Fresh<Secret>, AdapterError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.expose()),
            ("client_secret", self.client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        let request = self
            .http
            .request(Method::POST, self.token_url.clone())
            .form(&form);
        // A token request changes nothing, so a lost answer is simply retried.
        let answer = self.http.send(request, Effect::Read).await?;
        if !answer.is_success() {
            return Err(parse_token_error(
                &answer,
                &[self.client_id.expose(), self.client_secret.expose()],
            ));
        }
        let token: TokenAnswer = serde_json::from_str(&answer.body).map_err(|_| {
            AdapterError::retryable(
                "UNREADABLE_TOKEN_ANSWER",
                "the token endpoint's answer has no access_token and expires_in",
            )
        })?;
        Ok(Fresh {
            value: Secret::new(token.access_token),
            lifetime: Some(Duration::from_secs(token.expires_in)),
        })
    }
}

impl std::fmt::Debug for DataverseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseClient")
            .field("api_root", &self.api_root.as_str())
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}
