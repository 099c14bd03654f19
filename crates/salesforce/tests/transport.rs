//! Requests that get no answer. A write that may have reached Salesforce has an unknown
//! outcome (it may still land, late); one that never left (connection refused) is simply
//! retryable; so is a lost read, which changes nothing.

mod common;

use std::time::Duration;

use serde_json::json;
use unisync_core::ErrorKind;
use unisync_sandbox::SandboxCrm;

use common::stub::{Reply, Stub, session_on};
use common::{city, contact, eventually_stored, stub_adapter};

#[tokio::test]
async fn a_write_that_times_out_is_of_unknown_outcome_and_still_lands() {
    let sandbox = common::sandbox().await;
    let (adapter, _) = common::refresh_token_adapter(&sandbox, json!({"timeout_secs": 1}));
    let id = contact(&sandbox, &[]);
    adapter
        .push(&[city(&id, "Warm-up")])
        .await
        .remove(0)
        .expect("a session first");
    // Salesforce answers later than the client waits.
    sandbox.faults().set_latency(Duration::from_millis(2500));
    let error = adapter
        .push(&[city(&id, "Late")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown, "{error:?}");
    assert_eq!(error.code, "TIMEOUT");
    assert!(
        eventually_stored(&sandbox, &id, "MailingCity", "Late").await,
        "the write Salesforce received lands after the client gave up"
    );
}

#[tokio::test]
async fn a_read_that_times_out_is_retryable() {
    let sandbox = common::sandbox().await;
    let (adapter, _) = common::refresh_token_adapter(&sandbox, json!({"timeout_secs": 1}));
    adapter.pull(None).await.expect("a session first");
    sandbox.faults().set_latency(Duration::from_millis(2500));
    let error = adapter.pull(None).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Retryable { retry_after: None },
        "{error:?}"
    );
    assert_eq!(error.code, "TIMEOUT");
}

#[tokio::test]
async fn a_connection_lost_after_the_write_was_sent_is_of_unknown_outcome() {
    let stub = Stub::start(|path, url| match path {
        "/services/oauth2/token" => session_on(url),
        _ => Reply::HangUp,
    })
    .await;
    let adapter = stub_adapter(&stub.url());
    let error = adapter
        .push(&[city("003SB0000000001", "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown, "{error:?}");
    assert_eq!(error.code, "CONNECTION_LOST");
}

#[tokio::test]
async fn a_write_that_could_not_connect_was_never_sent_and_is_retryable() {
    // Port 1 (tcpmux) is served by nothing here: a connection is refused before any byte
    // leaves. (A port freed by a dropped listener may be taken by a parallel test's server.)
    let closed = "http://127.0.0.1:1".to_string();
    let stub = Stub::start(move |path, _| match path {
        "/services/oauth2/token" => session_on(&closed),
        _ => Reply::HangUp,
    })
    .await;
    let adapter = stub_adapter(&stub.url());
    let error = adapter
        .push(&[city("003SB0000000001", "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Retryable { retry_after: None },
        "{error:?}"
    );
    assert_eq!(error.code, "CONNECT");
}

#[tokio::test]
async fn a_retry_after_header_reaches_the_classifier() {
    let stub = Stub::start(|path, url| match path {
        "/services/oauth2/token" => session_on(url),
        _ => Reply::Answer {
            status: 503,
            headers: vec![("Retry-After", "7".to_string())],
            body: json!([{"errorCode": "SERVER_UNAVAILABLE", "message": "down for maintenance"}])
                .to_string(),
        },
    })
    .await;
    let adapter = stub_adapter(&stub.url());
    let error = adapter
        .push(&[city("003SB0000000001", "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Retryable {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(error.code, "SERVER_UNAVAILABLE");
    assert_eq!(error.message, "down for maintenance");
}

#[tokio::test]
async fn a_retry_after_from_the_token_endpoint_reaches_the_classifier() {
    let stub = Stub::start(|path, _| match path {
        "/services/oauth2/token" => Reply::Answer {
            status: 503,
            headers: vec![("Retry-After", "9".to_string())],
            body: String::new(),
        },
        _ => Reply::HangUp,
    })
    .await;
    let adapter = stub_adapter(&stub.url());
    let error = adapter
        .push(&[city("003SB0000000001", "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Retryable {
            retry_after: Some(Duration::from_secs(9))
        },
        "{error:?}"
    );
}
