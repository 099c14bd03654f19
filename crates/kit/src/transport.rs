//! Requests that got no (whole) answer, classified; secrets kept out of what is reported.

use unisync_core::AdapterError;

/// What replaces a secret found in a text that is kept.
const REDACTED: &str = "[redacted]";

/// Whether a request can change records at the CRM, which decides what a lost answer means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A read (or a token request): losing its answer changes nothing.
    Read,
    /// A write: once sent, it may land even if its answer is lost.
    Write,
}

impl Effect {
    /// The effect of a request with `method`: only `GET` and `HEAD` change nothing.
    pub fn of(method: &reqwest::Method) -> Effect {
        if matches!(*method, reqwest::Method::GET | reqwest::Method::HEAD) {
            Effect::Read
        } else {
            Effect::Write
        }
    }
}

/// Classifies a request that got no (whole) answer. One that never left (the connection was
/// refused, the host unknown) is `Retryable` with code `CONNECT`; one that could not even be
/// built names a bad URL (`Misconfigured`, `BAD_URL`). Anything else was, or may have been,
/// sent: a write may still land, so its outcome is unknown (`TIMEOUT`, `ANSWER_CUT_OFF`,
/// `CONNECTION_LOST`); a read is only a failed try (`Retryable` with the same codes).
pub fn transport_error(error: &reqwest::Error, effect: Effect) -> AdapterError {
    let message = error_chain(error);
    if error.is_builder() {
        return AdapterError::misconfigured("BAD_URL", message);
    }
    if error.is_connect() {
        return AdapterError::retryable("CONNECT", message);
    }
    let code = if error.is_timeout() {
        "TIMEOUT"
    } else if error.is_body() || error.is_decode() {
        "ANSWER_CUT_OFF"
    } else {
        "CONNECTION_LOST"
    };
    match effect {
        Effect::Read => AdapterError::retryable(code, message),
        Effect::Write => AdapterError::outcome_unknown(code, message),
    }
}

/// An error and its causes, `outer: inner: ...` (reqwest's own text names only the URL; the
/// causes under it say what happened).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` with every occurrence of `secrets` replaced by `[redacted]` (empty secrets are
/// ignored: they would match everywhere).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_string(), |text, secret| {
            text.replace(secret, REDACTED)
        })
}

/// `error` with every occurrence of `secrets` in its code and message replaced, for answers
/// that may echo what was sent (a token endpoint echoing the refresh token, a gateway quoting
/// the bearer token).
pub fn redacted(mut error: AdapterError, secrets: &[&str]) -> AdapterError {
    error.code = redact(&error.code, secrets);
    error.message = redact(&error.message, secrets);
    error
}

#[cfg(test)]
mod tests {
    use unisync_core::ErrorKind;

    use super::*;

    #[test]
    fn redaction_removes_every_secret_from_code_and_message() {
        let error = AdapterError::unauthorized(
            "BAD tok-1",
            "refresh token tok-1 or client secret cs-2 refused",
        );
        let clean = redacted(error, &["tok-1", "cs-2", ""]);
        assert_eq!(clean.code, "BAD [redacted]");
        assert_eq!(
            clean.message,
            "refresh token [redacted] or client secret [redacted] refused"
        );
        assert_eq!(clean.kind, ErrorKind::Unauthorized);
    }

    #[test]
    fn only_get_and_head_are_reads() {
        assert_eq!(Effect::of(&reqwest::Method::GET), Effect::Read);
        assert_eq!(Effect::of(&reqwest::Method::HEAD), Effect::Read);
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PATCH,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            assert_eq!(Effect::of(&method), Effect::Write, "{method}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_whatever_the_effect() {
        let http = reqwest::Client::new();
        let error = http.get("http://127.0.0.1:1/").send().await.unwrap_err();
        for effect in [Effect::Read, Effect::Write] {
            let classified = transport_error(&error, effect);
            assert_eq!(classified.code, "CONNECT");
            assert_eq!(classified.kind, ErrorKind::Retryable { retry_after: None });
        }
    }
}
