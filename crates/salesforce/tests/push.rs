//! Pushing edits into the sandbox org: single and collection writes, read-back, links,
//! refusals and the API budget.

mod common;

use unisync_core::{ContactField, ContactPatch, CustomerLink, ErrorKind, PushItem};
use unisync_sandbox::{Fault, SandboxCrm};

use common::{adapter, contact, stored};

fn item(source_id: &str, changes: &[(ContactField, Option<&str>)]) -> PushItem {
    PushItem {
        source_id: source_id.to_string(),
        patch: changes
            .iter()
            .map(|(field, value)| (*field, value.map(str::to_string)))
            .collect(),
        customer: CustomerLink::Unchanged,
    }
}

#[tokio::test]
async fn a_collection_reports_a_too_long_value_on_its_own_record() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..3).map(|_| contact(&sandbox, &[])).collect();
    let too_long = "x".repeat(41);
    let items = vec![
        item(&ids[0], &[(ContactField::FirstName, Some("Ann"))]),
        item(&ids[1], &[(ContactField::FirstName, Some(&too_long))]),
        item(&ids[2], &[(ContactField::Position, Some("CFO"))]),
    ];
    let results = adapter.push(&items).await;
    assert_eq!(results.len(), 3);
    assert_eq!(sandbox.stats().collection_calls, 1);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert_eq!(
        stored(&sandbox, &ids[0], "FirstName").as_deref(),
        Some("Ann")
    );
    assert_eq!(stored(&sandbox, &ids[2], "Title").as_deref(), Some("CFO"));
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.code, "STRING_TOO_LONG");
    assert_eq!(error.field(), Some("first_name"));
    assert!(error.message.contains("max length=40"), "{}", error.message);
    assert_eq!(stored(&sandbox, &ids[1], "FirstName"), None);
}

#[tokio::test]
async fn validation_refuses_what_salesforce_would_refuse() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let mut patch = ContactPatch::new();
    patch
        .set(ContactField::FirstName, "x".repeat(41))
        .set(ContactField::Zip, "1".repeat(20))
        .clear(ContactField::LastName);
    let violations: Vec<(String, String)> = adapter
        .validate(&patch)
        .into_iter()
        .map(|v| (v.field, v.code))
        .collect();
    assert_eq!(
        violations,
        vec![
            ("first_name".to_string(), "too_long".to_string()),
            ("last_name".to_string(), "required_by_crm".to_string()),
        ]
    );
    // Salesforce itself refuses the same clear, had it got through.
    let id = contact(&sandbox, &[]);
    let error = adapter
        .push(&[item(&id, &[(ContactField::LastName, None)])])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.code, "REQUIRED_FIELD_MISSING");
    assert_eq!(error.field(), Some("last_name"));
}

#[tokio::test]
async fn a_push_confirms_salesforces_stored_values_and_version() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let id = contact(&sandbox, &[("Phone", "555")]);
    let confirmed = adapter
        .push(&[item(
            &id,
            &[
                (ContactField::Position, Some("  Head of Sales ")),
                (ContactField::Phone, None),
            ],
        )])
        .await
        .remove(0)
        .expect("push");
    // Salesforce trims text; the confirmation carries what it stored.
    assert_eq!(
        confirmed.values[&ContactField::Position].as_deref(),
        Some("Head of Sales")
    );
    assert_eq!(confirmed.values[&ContactField::Phone], None);
    let record = sandbox.contact(&id).unwrap();
    let modified = record["LastModifiedDate"].as_str().unwrap();
    assert_eq!(
        confirmed.crm_version.as_deref(),
        Some(modified.replace("+0000", "Z").as_str())
    );
    assert!(confirmed.created_at.unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_deleted_contact_is_gone() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    sandbox.delete_contact(&id);
    let error = adapter
        .push(&[item(&id, &[(ContactField::City, Some("Porto"))])])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::RecordGone);
    assert_eq!(error.code, "ENTITY_IS_DELETED");
    assert_eq!(error.message, "entity is deleted");
}

#[tokio::test]
async fn links_set_and_clear_account_id_in_the_same_write() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let account = sandbox.create_account("Acme");
    let id = contact(&sandbox, &[]);
    let mut link = item(&id, &[(ContactField::Position, Some("CTO"))]);
    link.customer = CustomerLink::Link {
        id: account.clone(),
        previous: None,
    };
    let before = sandbox.stats();
    adapter.push(&[link]).await.remove(0).expect("link");
    let after = sandbox.stats();
    assert_eq!(after.records_written - before.records_written, 1);
    assert_eq!(stored(&sandbox, &id, "AccountId"), Some(account.clone()));
    assert_eq!(stored(&sandbox, &id, "Title").as_deref(), Some("CTO"));
    let mut unlink = item(&id, &[]);
    unlink.customer = CustomerLink::Unlink {
        previous: Some(account),
    };
    adapter.push(&[unlink]).await.remove(0).expect("unlink");
    assert_eq!(stored(&sandbox, &id, "AccountId"), None);
}

#[tokio::test]
async fn the_daily_limit_and_faults_are_classified() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..2).map(|_| contact(&sandbox, &[])).collect();
    let items: Vec<PushItem> = ids
        .iter()
        .map(|id| item(id, &[(ContactField::City, Some("Faro"))]))
        .collect();
    sandbox.faults().fail_next(1, Fault::Locked);
    for result in adapter.push(&items).await {
        let error = result.unwrap_err();
        assert_eq!(error.code, "UNABLE_TO_LOCK_ROW");
        assert!(matches!(error.kind, ErrorKind::Retryable { .. }));
    }
    sandbox.faults().fail_next(1, Fault::DailyLimit);
    for result in adapter.push(&items).await {
        let error = result.unwrap_err();
        assert_eq!(error.code, "REQUEST_LIMIT_EXCEEDED");
        assert_eq!(error.message, "TotalRequests Limit exceeded.");
        assert!(matches!(error.kind, ErrorKind::QuotaExhausted { .. }));
    }
    assert!(adapter.push(&items).await.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_malformed_id_fails_alone() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    let results = adapter
        .push(&[
            item("003' OR Name != '", &[(ContactField::City, Some("X"))]),
            item(&id, &[(ContactField::City, Some("Faro"))]),
        ])
        .await;
    assert_eq!(results[0].as_ref().unwrap_err().code, "MALFORMED_ID");
    assert!(results[1].is_ok());
}

#[tokio::test]
async fn a_full_batch_of_200_is_one_collection_call() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    assert_eq!(adapter.capabilities().max_batch_size, 200);
    let items: Vec<PushItem> = (0..200)
        .map(|n| {
            let id = contact(&sandbox, &[]);
            PushItem {
                patch: [(ContactField::Zip, Some(format!("{n:05}")))]
                    .into_iter()
                    .collect(),
                ..item(&id, &[])
            }
        })
        .collect();
    let results = adapter.push(&items).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(sandbox.stats().collection_calls, 1);
    assert_eq!(
        results[199].as_ref().unwrap().values[&ContactField::Zip].as_deref(),
        Some("00199")
    );
}

#[tokio::test]
async fn a_landed_write_is_confirmed_with_the_values_sent_when_the_read_back_fails() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..3).map(|_| contact(&sandbox, &[])).collect();
    // The write is the day's last request Salesforce allows; the read-back is refused.
    sandbox.set_daily_limit(1);
    let one = item(&ids[0], &[(ContactField::Position, Some("  CTO "))]);
    let confirmed = adapter
        .push(&[one])
        .await
        .remove(0)
        .expect("the write landed");
    assert_eq!(
        confirmed.values,
        [(ContactField::Position, Some("  CTO ".to_string()))].into()
    );
    assert_eq!((confirmed.crm_version, confirmed.created_at), (None, None));
    assert_eq!(stored(&sandbox, &ids[0], "Title").as_deref(), Some("CTO"));

    sandbox.set_daily_limit(sandbox.stats().requests + 1);
    // A new connection: this one stops pushing at the budget it has seen spent.
    let adapter = common::adapter(&sandbox);
    let both = vec![
        item(&ids[1], &[(ContactField::City, Some("Faro"))]),
        item(&ids[2], &[(ContactField::Phone, None)]),
    ];
    let results = adapter.push(&both).await;
    assert_eq!(
        results[0].as_ref().expect("landed").values,
        [(ContactField::City, Some("Faro".to_string()))].into()
    );
    assert_eq!(
        results[1].as_ref().expect("landed").values,
        [(ContactField::Phone, None)].into()
    );
    assert_eq!(
        stored(&sandbox, &ids[1], "MailingCity").as_deref(),
        Some("Faro")
    );
}

#[tokio::test]
async fn fifteen_and_eighteen_character_ids_name_one_record() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..3).map(|_| contact(&sandbox, &[])).collect();
    let short = sandbox.short_id(&ids[0]);
    assert_eq!(short.len(), 15);
    assert_eq!(adapter.normalize_source_id(&short).as_ref(), Ok(&ids[0]));
    assert_eq!(
        adapter.normalize_source_id(&ids[1].to_lowercase()).as_ref(),
        Ok(&ids[1])
    );
    assert!(adapter.normalize_source_id("003' OR Id != '").is_err());

    let confirmed = adapter
        .push(&[item(&short, &[(ContactField::City, Some("Faro"))])])
        .await
        .remove(0)
        .expect("the 15-character id names the record");
    assert_eq!(
        confirmed.values[&ContactField::City].as_deref(),
        Some("Faro")
    );
    assert!(confirmed.crm_version.is_some(), "read back, not assumed");

    let items = vec![
        item(&short, &[(ContactField::City, Some("Braga"))]),
        item(
            &ids[1].to_lowercase(),
            &[(ContactField::City, Some("Braga"))],
        ),
        item(
            &sandbox.short_id(&ids[2]),
            &[(ContactField::City, Some("Braga"))],
        ),
    ];
    for (result, id) in adapter.push(&items).await.into_iter().zip(&ids) {
        let confirmed = result.expect("each id names its record");
        assert!(confirmed.crm_version.is_some());
        assert_eq!(
            stored(&sandbox, id, "MailingCity").as_deref(),
            Some("Braga")
        );
    }
    let pulled: Vec<String> = adapter
        .pull(None)
        .await
        .unwrap()
        .contacts
        .into_iter()
        .map(|contact| contact.source_id)
        .collect();
    assert_eq!(pulled, ids);
}
