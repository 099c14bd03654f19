//! What only Dynamics 365 shows: change sets, ETags, binds, merges, tokens and privileges.

mod common;

use std::time::Duration;

use serde_json::{Map, Value, json};
use unisync_core::{
    ConditionalPush, ContactField, ContactPatch, CustomerLink, ErrorKind, PushItem,
};
use unisync_sandbox::{Fault, SandboxCrm};

fn item(id: &str, values: &[(ContactField, Option<&str>)], customer: CustomerLink) -> PushItem {
    let mut patch = ContactPatch::new();
    for (field, value) in values {
        match value {
            Some(value) => patch.set(*field, *value),
            None => patch.clear(*field),
        };
    }
    PushItem {
        source_id: id.to_string(),
        patch,
        customer,
    }
}

fn city(id: &str, value: &str) -> PushItem {
    item(
        id,
        &[(ContactField::City, Some(value))],
        CustomerLink::Unchanged,
    )
}

#[tokio::test]
async fn a_batch_refusal_is_its_contacts_alone_and_names_the_field() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    let ann = sandbox.create_contact(&[("firstname", "Ann")]);
    let bo = sandbox.create_contact(&[("firstname", "Bo")]);
    let too_long = item(
        &ann,
        &[(ContactField::Zip, Some(&"9".repeat(21)))],
        CustomerLink::Unchanged,
    );
    let results = adapter.push(&[too_long, city(&bo, "Porto")]).await;
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Permanent {
            field: Some("zip".into())
        }
    );
    assert_eq!(error.code, "0x80044331");
    let confirmed = results[1].as_ref().unwrap();
    assert_eq!(
        confirmed.values[&ContactField::City].as_deref(),
        Some("Porto")
    );
    assert_eq!(
        confirmed.crm_version,
        sandbox.contact(&bo).unwrap()["@odata.etag"]
            .as_str()
            .map(str::to_string)
    );
    assert_eq!((sandbox.writes_to(&ann), sandbox.writes_to(&bo)), (0, 1));
    assert_eq!(sandbox.stats().batch_calls, 1);
}

#[tokio::test]
async fn a_write_under_the_stored_etag_is_refused_once_a_person_changed_the_row() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    let read = adapter.read(std::slice::from_ref(&id)).await.unwrap();
    let version = read[0].crm_version.clone().expect("rows carry their ETag");
    sandbox.edit_as_person(&id, &[("jobtitle", "CEO")]);
    let outcome = adapter
        .push_if_unmodified(&city(&id, "Faro"), &version)
        .await
        .unwrap();
    assert_eq!(outcome, ConditionalPush::ModifiedSince);
    assert_eq!(sandbox.writes_to(&id), 0);
    let current = adapter.read(std::slice::from_ref(&id)).await.unwrap()[0]
        .crm_version
        .clone()
        .unwrap();
    let landed = adapter
        .push_if_unmodified(&city(&id, "Faro"), &current)
        .await
        .unwrap();
    assert!(matches!(landed, ConditionalPush::Landed(_)));
}

#[tokio::test]
async fn accounts_are_bound_and_unbound_and_a_missing_one_is_blamed_not_the_contact() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    let account = sandbox.create_account("Contoso");
    let link = CustomerLink::Link {
        id: account.clone(),
        previous: None,
    };
    adapter
        .push(&[item(&id, &[], link)])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(
        sandbox.contact(&id).unwrap()["_parentcustomerid_value"],
        account
    );
    let unlink = CustomerLink::Unlink {
        previous: Some(account),
    };
    adapter
        .push(&[item(&id, &[], unlink)])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(
        sandbox.contact(&id).unwrap()["_parentcustomerid_value"],
        Value::Null
    );

    let nowhere = CustomerLink::Link {
        id: "00000000-0000-4000-8000-000000000001".into(),
        previous: None,
    };
    let error = adapter
        .push(&[item(&id, &[], nowhere.clone())])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Permanent {
            field: Some("unified_customer_id".into())
        }
    );
    sandbox.delete_contact(&id);
    let gone = adapter
        .push(&[item(&id, &[], nowhere)])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(gone.kind, ErrorKind::RecordGone);
    assert!(
        sandbox.contact(&id).is_none(),
        "If-Match: * never recreates a deleted contact"
    );
}

#[tokio::test]
async fn a_write_to_a_merged_contact_names_the_row_kept() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    let kept = sandbox.create_contact(&[("firstname", "Ann")]);
    let merged = sandbox.create_contact(&[("firstname", "Anne")]);
    sandbox.merge_contacts(&kept, &merged);
    let error = adapter
        .push(&[city(&merged, "Porto")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::RecordMerged { survivor: kept });
}

#[tokio::test]
async fn tokens_are_fetched_once_for_concurrent_pushes_and_renewed_after_a_401() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    sandbox.faults().set_latency(Duration::from_millis(50));
    let ids: Vec<String> = (0..6)
        .map(|n| sandbox.create_contact(&[("firstname", &format!("P{n}"))]))
        .collect();
    let pushes = ids.iter().map(|id| {
        let adapter = adapter.clone();
        let item = city(id, "Lisbon");
        async move { adapter.push(&[item]).await.remove(0) }
    });
    for result in futures_join(pushes).await {
        result.unwrap();
    }
    assert_eq!(sandbox.token_requests(), 1);
    sandbox.invalidate_tokens();
    adapter
        .push(&[city(&ids[0], "Braga")])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(sandbox.token_requests(), 2);
    assert_eq!(sandbox.overlapping_token_requests(), 0);

    // A secret an administrator replaced: the renewal is refused, and says so.
    sandbox.rotate_client_secret();
    sandbox.invalidate_tokens();
    let error = adapter
        .push(&[city(&ids[0], "Faro")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "invalid_client");
    assert!(!error.message.contains(&sandbox.credentials().client_secret));
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn refusals_of_the_connection_pause_it_and_outages_are_retried() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    for (fault, expected) in [
        (Fault::AccessRevoked, ErrorKind::Misconfigured),
        (Fault::EndpointNotFound, ErrorKind::Misconfigured),
        (Fault::Locked, ErrorKind::Retryable { retry_after: None }),
        (
            Fault::ServerError(503),
            ErrorKind::Retryable { retry_after: None },
        ),
    ] {
        sandbox.faults().fail_next(1, fault.clone());
        let error = adapter.push(&[city(&id, "X")]).await.remove(0).unwrap_err();
        assert_eq!(error.kind, expected, "{fault:?}");
    }
    let wrong_version = common::adapter_with(&sandbox, settings(json!({"api_version": "v8.0"})));
    let error = wrong_version
        .push(&[city(&id, "X")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Misconfigured);
    let wrong_resource = common::adapter_with(
        &sandbox,
        settings(json!({"base_url": "http://127.0.0.1:1"})),
    );
    let error = wrong_resource
        .push(&[city(&id, "X")])
        .await
        .remove(0)
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

fn settings(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn a_write_whose_answer_never_came_is_outcome_unknown_and_lands_late() {
    let sandbox = common::sandbox(0).await;
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    let adapter = common::adapter_with(&sandbox, settings(json!({"timeout_secs": 1})));
    adapter.push(&[city(&id, "Warm")]).await.remove(0).unwrap();
    sandbox.faults().set_latency(Duration::from_millis(1500));
    let error = adapter
        .push(&[city(&id, "Late")])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sandbox.contact(&id).unwrap()["address1_city"] != "Late" {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_answer_the_rows_asked_in_order_and_values_over_the_limits_are_refused_first() {
    let sandbox = common::sandbox(0).await;
    let adapter = common::adapter(&sandbox);
    let a = sandbox.create_contact(&[("firstname", "A")]);
    let b = sandbox.create_contact(&[("firstname", "B")]);
    let asked = vec![b.to_uppercase(), a.clone(), "not-a-guid".into(), b.clone()];
    let rows = adapter.read(&asked).await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|row| row.source_id.as_str()).collect();
    assert_eq!(ids, vec![b.as_str(), a.as_str()]);
    assert_eq!(
        rows[1].values[&ContactField::FirstName].as_deref(),
        Some("A")
    );

    let mut patch = ContactPatch::new();
    patch
        .set(ContactField::FirstName, "x".repeat(51))
        .set(ContactField::Email, "x".repeat(100))
        .clear(ContactField::LastName);
    let violations: Vec<String> = adapter
        .validate(&patch)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(violations, vec!["first_name".to_string()]);
}
