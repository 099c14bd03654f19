//! Sessions: the three OAuth grants, renewal on INVALID_SESSION_ID shared by concurrent
//! callers, refresh-token rotation, and refused credentials.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use unisync_core::{
    ContactField, CredentialStore, CustomerLink, ErrorKind, PushItem, SourceAdapter,
};
use unisync_sandbox::{Fault, SandboxCrm};

use common::{MemoryCredentials, build, connection, contact, refresh_token_adapter, stored};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn city(source_id: &str, city: &str) -> PushItem {
    PushItem {
        source_id: source_id.to_string(),
        patch: [(ContactField::City, Some(city.to_string()))]
            .into_iter()
            .collect(),
        customer: CustomerLink::Unchanged,
    }
}

async fn push_city(adapter: &dyn SourceAdapter, id: &str, value: &str) -> unisync_core::PushResult {
    adapter.push(&[city(id, value)]).await.remove(0)
}

#[tokio::test]
async fn building_contacts_nobody() {
    let sandbox = common::sandbox().await;
    let _adapter = common::adapter(&sandbox);
    assert_eq!(sandbox.token_requests(), 0);
    assert_eq!(sandbox.stats().requests, 0);
    let err = build(
        &connection(
            &sandbox,
            json!({"instance_url": "x"}),
            sandbox.connection_secrets(),
        ),
        Arc::new(MemoryCredentials::default()),
    )
    .err()
    .expect("an unknown key");
    assert_eq!(err.key, "instance_url");
}

#[tokio::test]
async fn expired_sessions_mid_run_cost_one_refresh_each() {
    let sandbox = common::sandbox().await;
    let adapter = common::adapter(&sandbox);
    let ids: Vec<String> = (0..24).map(|_| contact(&sandbox, &[])).collect();
    push_city(adapter.as_ref(), &ids[0], "warm-up")
        .await
        .expect("first session");
    assert_eq!(sandbox.token_requests(), 1);
    // Slow answers keep many pushes in flight while the sessions end.
    sandbox.faults().set_latency(Duration::from_millis(30));
    for round in 1..=2 {
        let pushes: Vec<_> = ids
            .iter()
            .map(|id| {
                let adapter = adapter.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    push_city(adapter.as_ref(), &id, &format!("Round {round}")).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        sandbox.invalidate_sessions();
        for push in pushes {
            push.await.unwrap().expect("every push lands");
        }
        assert_eq!(sandbox.token_requests(), 1 + round);
    }
    assert_eq!(sandbox.overlapping_refreshes(), 0);
    for id in &ids {
        assert_eq!(
            stored(&sandbox, id, "MailingCity").as_deref(),
            Some("Round 2")
        );
    }
}

#[tokio::test]
async fn a_second_refusal_is_unauthorized_with_salesforces_message() {
    let sandbox = common::sandbox().await;
    let adapter = common::adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    sandbox.faults().fail_next(2, Fault::Unauthorized);
    let error = push_city(adapter.as_ref(), &id, "Faro").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "INVALID_SESSION_ID");
    assert_eq!(error.message, "Session expired or invalid");
    push_city(adapter.as_ref(), &id, "Faro")
        .await
        .expect("then it works again");
}

#[tokio::test]
async fn a_refused_refresh_token_is_unauthorized() {
    let sandbox = common::sandbox().await;
    let mut secrets = sandbox.connection_secrets();
    secrets.insert("refresh_token".into(), "5Aep861revoked".into());
    let adapter = build(
        &connection(&sandbox, json!({}), secrets),
        Arc::new(MemoryCredentials::default()),
    )
    .unwrap();
    let id = contact(&sandbox, &[]);
    let error = push_city(adapter.as_ref(), &id, "Faro").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "invalid_grant");
    assert_eq!(error.message, "expired access/refresh token");
}

#[tokio::test]
async fn a_rotated_refresh_token_is_saved_and_preferred() {
    let sandbox = common::sandbox().await;
    sandbox.set_refresh_token_rotation(true);
    let configured = sandbox.credentials().refresh_token;
    let (adapter, credentials) = refresh_token_adapter(&sandbox, json!({}));
    let id = contact(&sandbox, &[]);
    push_city(adapter.as_ref(), &id, "One").await.expect("push");
    let rotated = sandbox.credentials().refresh_token;
    assert_ne!(rotated, configured);
    assert_eq!(credentials.get("refresh_token"), Some(rotated));
    // The next renewal must use the rotated token: the configured one is dead.
    sandbox.invalidate_sessions();
    push_city(adapter.as_ref(), &id, "Two")
        .await
        .expect("renewed with the rotated token");
    assert_eq!(
        credentials.get("refresh_token"),
        Some(sandbox.credentials().refresh_token)
    );
    // A restarted connection still configured with the dead token starts from the store.
    let config = connection(
        &sandbox,
        json!({}),
        sandbox_secrets_with(&sandbox, &configured),
    );
    let restarted = build(&config, credentials.clone()).unwrap();
    push_city(restarted.as_ref(), &id, "Three")
        .await
        .expect("the stored token wins");
}

#[tokio::test]
async fn a_refused_stored_refresh_token_falls_back_to_the_configured_one() {
    let sandbox = common::sandbox().await;
    let credentials = Arc::new(MemoryCredentials::default());
    // Left by an earlier rotation, since revoked; the configured token is the live one.
    credentials.save("refresh_token", "5Aep861stale").unwrap();
    let config = connection(&sandbox, json!({}), sandbox.connection_secrets());
    let adapter = build(&config, credentials).unwrap();
    let id = contact(&sandbox, &[]);
    push_city(adapter.as_ref(), &id, "Faro")
        .await
        .expect("the configured refresh token works");
    assert_eq!(
        sandbox.token_requests(),
        2,
        "the stored token, then the configured"
    );
    sandbox.invalidate_sessions();
    push_city(adapter.as_ref(), &id, "Lagos")
        .await
        .expect("renewed with the configured token straight away");
    assert_eq!(sandbox.token_requests(), 3);
}

#[tokio::test]
async fn when_both_refresh_tokens_are_refused_the_connection_is_unauthorized() {
    let sandbox = common::sandbox().await;
    let credentials = Arc::new(MemoryCredentials::default());
    credentials.save("refresh_token", "5Aep861stale").unwrap();
    let config = connection(
        &sandbox,
        json!({}),
        sandbox_secrets_with(&sandbox, "5Aep861revoked"),
    );
    let adapter = build(&config, credentials).unwrap();
    let id = contact(&sandbox, &[]);
    let error = push_city(adapter.as_ref(), &id, "Faro").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "invalid_grant");
    assert_eq!(sandbox.token_requests(), 2);
}

fn sandbox_secrets_with(
    sandbox: &unisync_salesforce::sandbox::SalesforceSandbox,
    refresh_token: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut secrets = sandbox.connection_secrets();
    secrets.insert("refresh_token".into(), refresh_token.to_string());
    secrets
}

#[tokio::test]
async fn the_client_credentials_grant_works() {
    let sandbox = common::sandbox().await;
    let credentials = sandbox.credentials();
    let config = connection(
        &sandbox,
        json!({}),
        [
            ("client_id".to_string(), credentials.client_id),
            ("client_secret".to_string(), credentials.client_secret),
        ],
    );
    let adapter = build(&config, Arc::new(MemoryCredentials::default())).unwrap();
    let id = contact(&sandbox, &[]);
    push_city(adapter.as_ref(), &id, "Faro")
        .await
        .expect("push");
    assert_eq!(
        stored(&sandbox, &id, "MailingCity").as_deref(),
        Some("Faro")
    );
}

#[tokio::test]
async fn the_jwt_bearer_grant_works_with_a_registered_key() {
    let sandbox = common::sandbox().await;
    let public_key = std::fs::read_to_string(fixture("jwt-test-key.pub.pem")).unwrap();
    sandbox.register_jwt_public_key(&public_key).unwrap();
    let credentials = sandbox.credentials();
    let jwt_adapter = |username: &str| {
        let config = connection(
            &sandbox,
            json!({"username": username, "private_key_file": fixture("jwt-test-key.pem")}),
            [("client_id".to_string(), credentials.client_id.clone())],
        );
        build(&config, Arc::new(MemoryCredentials::default())).unwrap()
    };
    let id = contact(&sandbox, &[]);
    let adapter = jwt_adapter(&credentials.username);
    push_city(adapter.as_ref(), &id, "Faro")
        .await
        .expect("push");
    assert_eq!(
        stored(&sandbox, &id, "MailingCity").as_deref(),
        Some("Faro")
    );
    let stranger = jwt_adapter("someone@else.example");
    let error = push_city(stranger.as_ref(), &id, "Lagos")
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "invalid_grant");
}

#[tokio::test]
async fn sessions_that_end_at_once_leave_the_connection_unauthorized() {
    let sandbox = common::sandbox().await;
    sandbox.set_session_lifetime(Some(Duration::ZERO));
    let adapter = common::adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    let error = push_city(adapter.as_ref(), &id, "Faro").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "INVALID_SESSION_ID");
    assert_eq!(
        sandbox.token_requests(),
        2,
        "one session, one renewal, no more"
    );
}
