//! Refusals of the whole connection (API disabled, a URL Salesforce does not serve, a mapped
//! field the org lacks) pause the connection as `Misconfigured` with Salesforce's code and
//! message; they never dead-letter an edit or mark a contact gone. Refusals of one record
//! stay that record's.

mod common;

use serde_json::json;
use unisync_core::{AdapterError, ErrorKind, PushItem, SourceAdapter};
use unisync_sandbox::{Fault, SandboxCrm};

use common::{adapter, city, contact, stored};

/// Pushes `items` and expects every result refused with `code`, as `Misconfigured`.
async fn expect_misconfigured(adapter: &dyn SourceAdapter, items: &[PushItem], code: &str) {
    for result in adapter.push(items).await {
        let error = result.expect_err("refused");
        assert_eq!(error.kind, ErrorKind::Misconfigured, "{error:?}");
        assert_eq!(error.code, code);
    }
}

fn misconfigured(error: AdapterError, code: &str) {
    assert_eq!(error.kind, ErrorKind::Misconfigured, "{error:?}");
    assert_eq!(error.code, code);
}

#[tokio::test]
async fn a_disabled_api_refuses_writes_reads_and_read_backs_alike() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..2).map(|_| contact(&sandbox, &[])).collect();
    sandbox.faults().set_standing(Fault::AccessRevoked);
    let one = [city(&ids[0], "Faro")];
    let error = adapter.push(&one).await.remove(0).unwrap_err();
    misconfigured(error.clone(), "API_DISABLED_FOR_ORG");
    assert_eq!(
        error.message,
        "API is not enabled for this Organization or Partner"
    );
    let both: Vec<PushItem> = ids.iter().map(|id| city(id, "Faro")).collect();
    expect_misconfigured(adapter.as_ref(), &both, "API_DISABLED_FOR_ORG").await;
    misconfigured(
        adapter.pull(None).await.unwrap_err(),
        "API_DISABLED_FOR_ORG",
    );
    sandbox.faults().clear_standing();
    assert!(adapter.push(&both).await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn an_api_version_salesforce_does_not_serve_marks_nothing_gone() {
    let sandbox = common::sandbox().await;
    let (adapter, _) = common::refresh_token_adapter(&sandbox, json!({"api_version": "v12.0"}));
    let ids: Vec<String> = (0..2).map(|_| contact(&sandbox, &[])).collect();
    let one = [city(&ids[0], "Faro")];
    let error = adapter.push(&one).await.remove(0).unwrap_err();
    misconfigured(error.clone(), "NOT_FOUND");
    assert!(
        error
            .message
            .starts_with("The requested resource does not exist"),
        "{error:?}"
    );
    let both: Vec<PushItem> = ids.iter().map(|id| city(id, "Faro")).collect();
    expect_misconfigured(adapter.as_ref(), &both, "NOT_FOUND").await;
    misconfigured(adapter.pull(None).await.unwrap_err(), "NOT_FOUND");
    for id in &ids {
        assert!(sandbox.contact(id).is_some());
        assert_eq!(stored(&sandbox, id, "MailingCity"), None);
    }
}

#[tokio::test]
async fn an_unrouted_endpoint_and_a_retired_version_are_the_connections_fault() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    sandbox.faults().set_standing(Fault::EndpointNotFound);
    let error = adapter
        .push(&[city(&id, "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    misconfigured(error, "NOT_FOUND");
    sandbox.faults().clear_standing();

    let (retired, _) = common::refresh_token_adapter(&sandbox, json!({"api_version": "v30.0"}));
    let error = retired
        .push(&[city(&id, "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    misconfigured(error, "API_VERSION_RETIRED");
}

#[tokio::test]
async fn a_record_that_does_not_exist_is_gone_once_a_query_confirms_it() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let error = adapter
        .push(&[city("003SB9999999999", "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::RecordGone);
    assert_eq!(error.code, "NOT_FOUND");
    assert_eq!(error.message, "The requested resource does not exist");
}

#[tokio::test]
async fn a_mapped_field_the_org_lacks_refuses_the_connection() {
    let sandbox = common::sandbox().await;
    let (adapter, _) = common::refresh_token_adapter(&sandbox, json!({"fields": {"city": "Town"}}));
    let id = contact(&sandbox, &[]);
    let error = adapter
        .push(&[city(&id, "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    misconfigured(error.clone(), "INVALID_FIELD");
    assert!(error.message.contains("'Town'"), "{error:?}");
    misconfigured(adapter.pull(None).await.unwrap_err(), "INVALID_FIELD");
}

#[tokio::test]
async fn a_deleted_record_in_a_collection_is_gone_alone() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..3).map(|_| contact(&sandbox, &[])).collect();
    sandbox.delete_contact(&ids[1]);
    let items: Vec<PushItem> = ids.iter().map(|id| city(id, "Faro")).collect();
    let results = adapter.push(&items).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::RecordGone);
    assert_eq!(error.code, "ENTITY_IS_DELETED");
}
