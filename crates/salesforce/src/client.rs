//! HTTP to one Salesforce org: sessions from the token endpoint, one retry after a refresh
//! on an expired session, and the API budget read from every answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderName};
use serde_json::Value;
use unisync_core::{AdapterError, ApiUsage, CredentialStore, Secret};
use unisync_kit::{Answer, Effect, Fresh, HttpClient, RotatingSecret, Token, TokenCache};

use crate::auth::{REFRESH_TOKEN_KEY, TokenAnswer, token_form};
use crate::config::{Grant, SalesforceConfig};
use crate::error::{parse_token_error, unreadable_token_answer};

/// A client for one connection. Cheap to share; all state is behind locks. Its `Debug` shows
/// where it connects and nothing of its credentials or sessions.
pub struct SalesforceClient {
    http: HttpClient,
    login_url: String,
    api_version: String,
    grant: Grant,
    /// The newest refresh token of a refresh-token grant (Salesforce may rotate it).
    refresh_token: Option<RotatingSecret>,
    /// The session, renewed single-flight: callers that arrive during a renewal wait for its
    /// outcome instead of starting their own.
    sessions: TokenCache<Session>,
    /// The last `Sforce-Limit-Info` reading, and when it came.
    usage: Mutex<Option<(ApiUsage, Instant)>>,
}

/// A session: the token and the instance it is valid on.
struct Session {
    access_token: Secret,
    instance_url: String,
}

/// A request body.
#[derive(Clone, Copy)]
enum Body<'a> {
    Json(&'a Value),
    /// Bulk API 2.0 job data.
    Csv(&'a str),
}

impl SalesforceClient {
    /// Builds the client; contacts nobody. A refresh token saved in `credentials` by an earlier
    /// rotation wins over the configured one (which Salesforce has revoked by then).
    pub fn new(
        config: &SalesforceConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, reqwest::Error> {
        let refresh_token = match &config.grant {
            Grant::RefreshToken { refresh_token, .. } => Some(RotatingSecret::new(
                REFRESH_TOKEN_KEY,
                refresh_token.clone(),
                credentials,
            )),
            _ => None,
        };
        Ok(SalesforceClient {
            http: HttpClient::new(config.timeout)?,
            login_url: config.login_url.clone(),
            api_version: config.api_version.clone(),
            grant: config.grant.clone(),
            refresh_token,
            sessions: TokenCache::new(),
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
        let effect = Effect::of(&method);
        let answer = self.execute(build(session.value()), effect).await?;
        if answer.status != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(answer.without_secrets(&[session.value().access_token.expose()]));
        }
        let renewed = self.session(Some(&session)).await?;
        let answer = self.execute(build(renewed.value()), effect).await?;
        Ok(answer.without_secrets(&[renewed.value().access_token.expose()]))
    }

    /// The current session, or a new one when there is none or the caller's was `refused`.
    /// A caller that waited while someone else renewed takes that renewal's outcome, so a
    /// burst of expired requests costs one token request.
    async fn session(
        &self,
        refused: Option<&Token<Session>>,
    ) -> Result<Arc<Token<Session>>, AdapterError> {
        self.sessions
            .token(refused, || async {
                match &self.refresh_token {
                    Some(refresh_token) => {
                        refresh_token
                            .with_fallback(|token| self.token_request(Some(token)))
                            .await
                    }
                    None => self.token_request(None).await,
                }
            })
            .await
    }

    /// One token request, with `refresh_token` for a refresh-token grant. A rotated refresh
    /// token is kept in memory and in the store. Sessions name no lifetime: one lives until
    /// Salesforce refuses it.
    async fn token_request(
        &self,
        refresh_token: Option<Secret>,
    ) -> Result<Fresh<Session>, AdapterError> {
        let form = token_form(&self.grant, refresh_token.as_ref(), &self.login_url)?;
        let request = self
            .http
            .request(
                Method::POST,
                format!("{}/services/oauth2/token", self.login_url),
            )
            .form(&form);
        // A token request changes no record, so a lost answer is simply retried.
        let answer = self.execute(request, Effect::Read).await?;
        if answer.status != reqwest::StatusCode::OK {
            return Err(parse_token_error(
                answer.status.as_u16(),
                &answer.headers,
                &answer.body,
            ));
        }
        let token: TokenAnswer =
            serde_json::from_str(&answer.body).map_err(|err| unreadable_token_answer(&err))?;
        if let Some(rotating) = &self.refresh_token {
            rotating.rotated(token.refresh_token);
        }
        Ok(Fresh {
            value: Session {
                access_token: Secret::new(token.access_token),
                instance_url: token.instance_url.trim_end_matches('/').to_string(),
            },
            lifetime: None,
        })
    }

    /// Sends a request and reads the answer whole, noting the API budget it reports.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        effect: Effect,
    ) -> Result<Answer, AdapterError> {
        let answer = self.http.send(request, effect).await?;
        if let Some(usage) = answer
            .headers
            .get("Sforce-Limit-Info")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_limit_info)
        {
            *self.usage.lock().unwrap() = Some((usage, Instant::now()));
        }
        Ok(answer)
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
