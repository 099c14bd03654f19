//! HTTP for providers: every answer read whole, with its status, headers and body, and every
//! failure to get one classified.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use unisync_core::AdapterError;

use crate::retry_after::retry_after;
use crate::transport::{Effect, redact, transport_error};

/// The longest a connection attempt may take. Kept apart from the request timeout so that a
/// request that never reached the CRM (`CONNECT`, retryable) is told from one that may have.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client of one connection, shared by all its requests.
#[derive(Clone, Debug)]
pub struct HttpClient {
    http: reqwest::Client,
}

/// A CRM's answer, read whole: what an adapter classifies it by.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The answer's headers (`Retry-After`, rate-limit and budget headers, `ETag`).
    pub headers: HeaderMap,
    /// The body as text (empty when there was none).
    pub body: String,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The wait the answer's `Retry-After` asks for, at most `longest` (see [`retry_after`]).
    pub fn retry_after(&self, longest: Duration) -> Option<Duration> {
        retry_after(&self.headers, SystemTime::now(), longest)
    }

    /// A failure answer with `secrets` taken out of its body: some gateways quote the
    /// request's headers, the bearer token with them, and a refusal travels far (dead
    /// letters, logs). A success is left alone: it is parsed, never shown.
    pub fn without_secrets(mut self, secrets: &[&str]) -> Answer {
        if !self.is_success() {
            self.body = redact(&self.body, secrets);
        }
        self
    }
}

impl HttpClient {
    /// A client whose requests give up after `timeout` (connecting after at most
    /// [`CONNECT_TIMEOUT`]); contacts nobody.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .user_agent(concat!("unisync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpClient { http })
    }

    /// Starts a request (add auth, query, body to it, then [`send`](Self::send) it).
    /// A URL that does not parse fails at [`send`](Self::send) as `Misconfigured`.
    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends `request` and reads the answer whole, whatever its status. `effect` says whether
    /// a lost answer may hide a landed write (see [`transport_error`]).
    pub async fn send(
        &self,
        request: RequestBuilder,
        effect: Effect,
    ) -> Result<Answer, AdapterError> {
        let lost = |err: reqwest::Error| transport_error(&err, effect);
        let response = request.send().await.map_err(lost)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(lost)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// `base` with `segments` appended as percent-encoded path segments (a CRM id can never reach
/// another route). `base` must be an http(s) URL.
pub fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("an http(s) base URL has a path")
        .pop_if_empty()
        .extend(segments);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path_and_encode_ids() {
        let base = Url::parse("http://127.0.0.1:9/proxy/").unwrap();
        let url = endpoint(&base, &["crm", "v3", "objects", "contacts", "1/../x"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/proxy/crm/v3/objects/contacts/1%2F..%2Fx"
        );
    }

    #[test]
    fn only_a_failure_answer_is_redacted() {
        let answer = |status| Answer {
            status,
            headers: HeaderMap::new(),
            body: "Bearer tok-9 refused".to_string(),
        };
        let refused = answer(StatusCode::UNAUTHORIZED).without_secrets(&["tok-9"]);
        assert_eq!(refused.body, "Bearer [redacted] refused");
        let ok = answer(StatusCode::OK).without_secrets(&["tok-9"]);
        assert_eq!(ok.body, "Bearer tok-9 refused");
    }
}
