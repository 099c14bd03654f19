//! No credential in any error: whatever the token endpoint answers, the error a push reports
//! (and the daemon stores, serves and logs) holds none of the secrets sent or received.

mod common;

use serde_json::json;
use unisync_core::{AdapterError, ErrorKind};

use common::stub::{Reply, Stub};
use common::{STUB_SECRETS, city, stub_adapter};

/// Tokens the stub's token endpoint hands out in a broken answer.
const ISSUED: [&str; 2] = [
    "00DSTUB!IssuedAccessTokenNeverShown",
    "5Aep861IssuedRefreshNeverShown",
];

/// The error of a push through a token endpoint that answers `token_answer`.
async fn push_error(token_answer: impl Fn() -> Reply + Send + Sync + 'static) -> AdapterError {
    let stub = Stub::start(move |path, _| match path {
        "/services/oauth2/token" => token_answer(),
        _ => Reply::HangUp,
    })
    .await;
    stub_adapter(&stub.url())
        .push(&[city("003SB0000000001", "Faro")])
        .await
        .remove(0)
        .unwrap_err()
}

fn assert_no_secret(error: &AdapterError) {
    let shown = format!("{error} {error:?}");
    for secret in STUB_SECRETS.iter().map(|(_, value)| *value).chain(ISSUED) {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn a_malformed_token_answer_does_not_repeat_the_tokens() {
    let error = push_error(|| {
        Reply::json(
            200,
            format!(
                r#"{{"access_token": "{}", "refresh_token": "{}", "instance_url": ["x"]"#,
                ISSUED[0], ISSUED[1]
            ),
        )
    })
    .await;
    assert_eq!(error.code, "TOKEN_ANSWER");
    assert!(matches!(error.kind, ErrorKind::Retryable { .. }));
    assert_no_secret(&error);
}

#[tokio::test]
async fn a_refusal_quoting_the_credentials_is_not_repeated() {
    let description = format!(
        "refresh token {} of client {} with secret {} is revoked",
        STUB_SECRETS[2].1, STUB_SECRETS[0].1, STUB_SECRETS[1].1
    );
    let error = push_error(move || {
        Reply::json(
            400,
            json!({"error": "invalid_grant", "error_description": description}).to_string(),
        )
    })
    .await;
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "invalid_grant");
    assert_no_secret(&error);
}

#[tokio::test]
async fn an_answer_echoing_the_form_is_not_repeated() {
    let form: String = STUB_SECRETS
        .iter()
        .map(|(key, value)| format!("{key}={value}&"))
        .collect();
    for status in [400, 401, 500, 503] {
        let echoed = form.clone();
        let error = push_error(move || Reply::json(status, format!("bad request: {echoed}"))).await;
        assert_eq!(error.code, format!("HTTP_{status}"));
        assert_no_secret(&error);
    }
}
