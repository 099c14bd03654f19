//! HubSpot over HTTP: one place that paces requests, attaches the bearer token, refreshes
//! it once on a 401, learns the account's time zone, and turns failures into classified
//! errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use unisync_core::{AdapterError, ApiUsage, CredentialStore, ErrorKind, FieldMapping};
use unisync_kit::{Effect, HttpClient, Pacer, WindowReport, endpoint, redacted};

use crate::account::{AccountZone, until_daily_reset};
use crate::auth::{Credentials, OAuthSession};
use crate::config::{HubspotAuth, HubspotConfig};
use crate::error::{TEN_SECOND_WINDOW, parse_error};

/// The account details API, which names the account's time zone.
const ACCOUNT_DETAILS: [&str; 3] = ["account-info", "v3", "details"];

/// The HTTP client of one HubSpot connection, shared by all its pushes and pulls.
pub struct HubspotClient {
    http: HttpClient,
    base_url: Url,
    credentials: Credentials,
    pacer: Pacer,
    mapping: FieldMapping,
    usage: Mutex<Option<ApiUsage>>,
    zone: AccountZone,
}

impl HubspotClient {
    /// Builds the client; contacts nobody.
    pub fn new(
        config: &HubspotConfig,
        store: Arc<dyn CredentialStore>,
    ) -> Result<Self, reqwest::Error> {
        let http = HttpClient::new(config.timeout)?;
        let credentials = match &config.auth {
            HubspotAuth::AccessToken(token) => Credentials::Static(token.clone()),
            HubspotAuth::OAuth {
                client_id,
                client_secret,
                refresh_token,
            } => Credentials::OAuth(Box::new(OAuthSession::new(
                endpoint(&config.base_url, &["oauth", "v1", "token"]),
                client_id.clone(),
                client_secret.clone(),
                refresh_token.clone(),
                store,
                config.mapping.clone(),
            ))),
        };
        Ok(HubspotClient {
            http,
            base_url: config.base_url.clone(),
            credentials,
            pacer: Pacer::new(config.requests_per_10s, TEN_SECOND_WINDOW),
            mapping: config.mapping.clone(),
            usage: Mutex::new(None),
            zone: match &config.daily_reset_tz {
                Some(zone) => AccountZone::configured(zone.clone()),
                None => AccountZone::to_learn(),
            },
        })
    }

    pub fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }

    /// Waits until the rate limit leaves room for a request.
    pub async fn wait_for_room(&self) {
        self.pacer.wait_for_room().await;
    }

    /// How long until the daily budget resets: midnight in the account's time zone (or the
    /// next quarter hour while the zone is unknown, which is never past the real reset).
    pub fn budget_resets_in(&self) -> Duration {
        until_daily_reset(jiff::Timestamp::now(), self.zone.get().as_ref())
    }

    /// The daily budget as HubSpot last reported it.
    /// How full HubSpot's short window is, from the pacer's view.
    pub fn rate_limit_pressure(&self) -> f64 {
        self.pacer.pressure()
    }

    pub fn api_usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().unwrap()
    }

    /// Sends one request to the path made of `segments` (each percent-encoded) and returns
    /// the 2xx answer's JSON body (`Null` when empty), or the classified failure. `effect`
    /// says whether a lost answer may hide a landed write. A 401 with OAuth refreshes the
    /// token and tries once more.
    pub async fn send(
        &self,
        effect: Effect,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, AdapterError> {
        self.learn_account_zone().await;
        self.exchange(effect, method, segments, query, body).await
    }

    /// Reads the account's time zone from HubSpot, once, at the connection's first request:
    /// by the time the daily limit is spent, the details call would be refused as well. A
    /// failure is not the caller's (the zone stays unknown, and is asked for again later).
    async fn learn_account_zone(&self) {
        if !self.zone.claim_question() {
            return;
        }
        let answer = self
            .exchange(Effect::Read, Method::GET, &ACCOUNT_DETAILS, &[], None)
            .await;
        let zone = match answer {
            Ok(details) => {
                let name = details["timeZone"].as_str().unwrap_or_default();
                let zone = TimeZone::get(name).ok();
                if zone.is_none() {
                    tracing::warn!(
                        time_zone = name,
                        "HubSpot named an account time zone unisync does not know; once the daily limit is spent, it is tried again every quarter hour"
                    );
                }
                zone
            }
            Err(error) => {
                tracing::info!(code = %error.code, message = %error.message, "could not read the HubSpot account's time zone; asking again later");
                None
            }
        };
        self.zone.learned(zone);
    }

    /// One request, with the token refreshed and the request sent again once on a 401.
    async fn exchange(
        &self,
        effect: Effect,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, AdapterError> {
        let url = endpoint(&self.base_url, segments);
        let mut refused = None;
        loop {
            let slot = self.pacer.acquire().await;
            let token = self
                .credentials
                .bearer(&self.http, refused.as_ref())
                .await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose());
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = self.http.send(request, effect).await?;
            drop(slot);
            self.pacer.observe(window_report(&answer.headers));
            self.record_usage(&answer.headers);
            let status = answer.status;
            if status.is_success() {
                if answer.body.trim().is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(&answer.body).map_err(|err| {
                    AdapterError::retryable("BAD_RESPONSE", format!("{err}: {}", answer.body))
                });
            }
            if status == StatusCode::UNAUTHORIZED
                && refused.is_none()
                && self.credentials.refreshes()
            {
                refused = Some(token);
                continue;
            }
            let zone = self.zone.get();
            let error = parse_error(
                status,
                &answer.headers,
                &answer.body,
                &self.mapping,
                zone.as_ref(),
            );
            // HubSpot has no reason to echo the token, but an error travels far (status pages,
            // dead letters): make sure it never carries one.
            let error = redacted(error, &[token.expose()]);
            if let ErrorKind::RateLimited {
                retry_after: Some(wait),
            } = error.kind
            {
                tracing::debug!(?wait, code = %error.code, "HubSpot rate limit hit; pausing the connection");
                self.pacer.pause_for(wait);
            }
            return Err(error);
        }
    }

    fn record_usage(&self, headers: &HeaderMap) {
        let number = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.parse().ok() };
        if let (Some(limit), Some(remaining)) = (
            number("x-hubspot-ratelimit-daily"),
            number("x-hubspot-ratelimit-daily-remaining"),
        ) {
            *self.usage.lock().unwrap() = Some(ApiUsage {
                used: limit.saturating_sub(remaining),
                limit,
            });
        }
    }
}

/// What HubSpot's `X-HubSpot-RateLimit-*` headers say of its short window.
fn window_report(headers: &HeaderMap) -> WindowReport {
    let number = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.parse().ok() };
    WindowReport {
        limit: number("x-hubspot-ratelimit-max"),
        remaining: number("x-hubspot-ratelimit-remaining"),
        window: number("x-hubspot-ratelimit-interval-milliseconds").map(Duration::from_millis),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn the_window_is_read_from_hubspots_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-hubspot-ratelimit-max", "190"),
            ("x-hubspot-ratelimit-remaining", "4"),
            ("x-hubspot-ratelimit-interval-milliseconds", "10000"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        assert_eq!(
            window_report(&headers),
            WindowReport {
                limit: Some(190),
                remaining: Some(4),
                window: Some(Duration::from_secs(10)),
            }
        );
        assert_eq!(window_report(&HeaderMap::new()), WindowReport::default());
    }
}
