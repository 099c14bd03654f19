//! Requests that get no answer, and answers that must not leak secrets: timeouts, refused
//! and dropped connections, and token endpoints that answer badly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use unisync_core::{AdapterError, AdapterFactory, ContactField, CustomerLink, ErrorKind, PushItem};
use unisync_hubspot::HubspotFactory;
use unisync_sandbox::SandboxCrm;

use common::{
    MemoryCredentials, canned_server, connection, eventually, http_answer, sandbox,
    token_adapter_with,
};

fn city_edit(id: &str, city: &str) -> PushItem {
    PushItem {
        source_id: id.to_string(),
        patch: [(ContactField::City, Some(city.to_string()))]
            .into_iter()
            .collect(),
        customer: CustomerLink::Unchanged,
    }
}

/// Settings that point an adapter at `addr` and skip the account details call.
fn pointed_at(addr: std::net::SocketAddr) -> serde_json::Value {
    json!({"base_url": format!("http://{addr}"), "daily_reset_tz": "UTC"})
}

#[tokio::test]
async fn a_write_that_times_out_is_an_unknown_outcome_and_lands_later() {
    let sandbox = sandbox(0).await;
    let id = sandbox.create_contact(&[("city", "Lisbon")]);
    let adapter = token_adapter_with(
        &sandbox,
        json!({"timeout_secs": 1, "daily_reset_tz": "UTC"}),
    );
    sandbox.faults().set_latency(Duration::from_millis(2500));

    let error = adapter
        .push(&[city_edit(&id, "Porto")])
        .await
        .remove(0)
        .unwrap_err();

    assert_eq!(error.kind, ErrorKind::OutcomeUnknown);
    assert_eq!(error.code, "TIMEOUT");
    assert_eq!(
        adapter.capabilities().request_timeout,
        Duration::from_secs(1)
    );
    eventually("the timed-out write lands at HubSpot", || async {
        sandbox
            .contact(&id)
            .unwrap()
            .get("city")
            .map(String::as_str)
            == Some("Porto")
    })
    .await;
}

#[tokio::test]
async fn a_request_that_never_left_is_retryable() {
    // Port 1 (tcpmux) is served by nothing here: a connection is refused before any byte
    // leaves. (A port freed by a dropped listener may be taken by a parallel test's server.)
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let sandbox = sandbox(0).await;
    let adapter = token_adapter_with(&sandbox, pointed_at(closed));
    let error = adapter
        .push(&[city_edit("1", "Porto")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable { retry_after: None });
    assert_eq!(error.code, "CONNECT");
}

#[tokio::test]
async fn a_connection_lost_after_sending_a_write_is_an_unknown_outcome() {
    let silent = canned_server(None).await;
    let sandbox = sandbox(0).await;
    let adapter = token_adapter_with(&sandbox, pointed_at(silent));
    let error = adapter
        .push(&[city_edit("1", "Porto")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown, "{error:?}");
    assert_eq!(error.code, "CONNECTION_LOST");
    // A lost read hides nothing that could land.
    let pulled = adapter.pull(None).await.err().unwrap();
    assert_eq!(pulled.kind, ErrorKind::Retryable { retry_after: None });
}

#[tokio::test]
async fn a_write_answer_cut_off_is_an_unknown_outcome() {
    // The status and the start of the body arrive, then the connection closes.
    let cut = canned_server(Some(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"id\":"
            .to_string(),
    ))
    .await;
    let sandbox = sandbox(0).await;
    let adapter = token_adapter_with(&sandbox, pointed_at(cut));
    let error = adapter
        .push(&[city_edit("1", "Porto")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown, "{error:?}");
    assert_eq!(error.code, "ANSWER_CUT_OFF");
}

const CLIENT_ID: &str = "cid-8d1f";
const CLIENT_SECRET: &str = "cs-27a4";
const REFRESH_TOKEN: &str = "rt-93c0";
const ISSUED_ACCESS_TOKEN: &str = "at-5e6b";
const ISSUED_REFRESH_TOKEN: &str = "rt-b7f2";

/// The error a push meets when the token endpoint answers `answer`.
async fn error_with_token_answer(answer: String) -> AdapterError {
    let token_endpoint = canned_server(Some(answer)).await;
    let sandbox = sandbox(0).await;
    let config = connection(
        &sandbox,
        pointed_at(token_endpoint),
        &[
            ("client_id", CLIENT_ID.to_string()),
            ("client_secret", CLIENT_SECRET.to_string()),
            ("refresh_token", REFRESH_TOKEN.to_string()),
        ],
    );
    let adapter = HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .unwrap();
    adapter
        .push(&[city_edit("1", "Porto")])
        .await
        .remove(0)
        .unwrap_err()
}

fn assert_no_secret(error: &AdapterError) {
    let shown = format!("{} {} {error}", error.code, error.message);
    for secret in [
        CLIENT_ID,
        CLIENT_SECRET,
        REFRESH_TOKEN,
        ISSUED_ACCESS_TOKEN,
        ISSUED_REFRESH_TOKEN,
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn a_malformed_token_answer_never_shows_the_tokens_it_holds() {
    let body = format!(
        r#"{{"token_type":"bearer","access_token":"{ISSUED_ACCESS_TOKEN}","refresh_token":"{ISSUED_REFRESH_TOKEN}","expires_in":"#
    );
    let error = error_with_token_answer(http_answer("200 OK", &body)).await;
    assert_eq!(error.code, "BAD_TOKEN_ANSWER");
    assert!(error.is_transient());
    assert_no_secret(&error);

    let wrong_type = format!(
        r#"{{"access_token":"{ISSUED_ACCESS_TOKEN}","refresh_token":"{ISSUED_REFRESH_TOKEN}","expires_in":"{ISSUED_ACCESS_TOKEN}"}}"#
    );
    let error = error_with_token_answer(http_answer("200 OK", &wrong_type)).await;
    assert_eq!(error.code, "BAD_TOKEN_ANSWER");
    assert_no_secret(&error);
}

#[tokio::test]
async fn a_refused_grant_echoing_the_refresh_token_never_shows_it() {
    let body = format!(
        r#"{{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token {REFRESH_TOKEN} for client {CLIENT_ID}","correlationId":"x"}}"#
    );
    let error = error_with_token_answer(http_answer("400 Bad Request", &body)).await;
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "BAD_REFRESH_TOKEN");
    assert!(
        error
            .message
            .starts_with("missing or unknown refresh token")
    );
    assert_no_secret(&error);

    let form_echo = format!(
        "grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token={REFRESH_TOKEN}"
    );
    for status in ["400 Bad Request", "502 Bad Gateway"] {
        let error = error_with_token_answer(http_answer(status, &form_echo)).await;
        assert_no_secret(&error);
    }
}
