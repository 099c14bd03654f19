//! What the conflict check before a write relies on: batch reads of records' current values,
//! and HubSpot's own rules of when a value it holds is the one unisync would write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use unisync_core::{ContactField, CustomerLink, ErrorKind, PushItem, SourceAdapter};
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

use common::{sandbox, token_adapter};

fn ids(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

#[tokio::test]
async fn read_answers_current_values_and_versions_in_unified_terms() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    assert!(adapter.capabilities().reads_records);
    let ann = sandbox.create_contact(&[("email", "ann@example.com"), ("city", "Lisbon")]);
    let ben = sandbox.create_contact(&[("firstname", "Ben"), ("jobtitle", "CTO")]);
    sandbox
        .edit_as_person(&ann, &[("city", "Porto"), ("phone", "+351 1")])
        .unwrap();

    let read = adapter.read(&ids(&[&ben, &ann])).await.unwrap();

    let sources: Vec<&str> = read
        .iter()
        .map(|record| record.source_id.as_str())
        .collect();
    assert_eq!(sources, [ben.as_str(), ann.as_str()], "in the order asked");
    let record = &read[1];
    let mut expected: BTreeMap<ContactField, Option<String>> = adapter
        .mapping()
        .rules()
        .map(|rule| (rule.unified, None))
        .collect();
    expected.insert(ContactField::Email, Some("ann@example.com".into()));
    expected.insert(ContactField::City, Some("Porto".into()));
    expected.insert(ContactField::Phone, Some("+351 1".into()));
    assert_eq!(
        record.values, expected,
        "every mapped field, absent ones empty"
    );
    let stored = sandbox.contact(&ann).unwrap();
    assert_eq!(
        record.crm_version.as_ref(),
        Some(&stored["lastmodifieddate"]),
        "the version a person's edit moved"
    );
    assert_eq!(record.created_at.as_ref(), Some(&stored["createdate"]));
    assert!(record.is_active);
    assert_eq!(sandbox.stats().requests, 1, "one batch read");
    assert_eq!(sandbox.stats().contacts_written, 0);
}

#[tokio::test]
async fn read_leaves_out_deleted_unknown_and_merged_away_contacts() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let kept = sandbox.create_contact(&[("city", "Lisbon")]);
    let deleted = sandbox.create_contact(&[("city", "Faro")]);
    sandbox.delete_contact(&deleted);
    let primary = sandbox.create_contact(&[("city", "Porto")]);
    let merged = sandbox.create_contact(&[("city", "Braga")]);
    let survivor = sandbox.merge_contacts(&primary, &merged).unwrap();
    let unknown = "not-an-id".to_string();

    let read = adapter
        .read(&ids(&[&deleted, &kept, &merged, &unknown, &survivor]))
        .await
        .unwrap();

    let sources: Vec<&str> = read
        .iter()
        .map(|record| record.source_id.as_str())
        .collect();
    assert_eq!(sources, [kept.as_str(), survivor.as_str()]);
    assert_eq!(
        read[1].values[&ContactField::City].as_deref(),
        Some("Porto")
    );
    assert!(adapter.read(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn read_takes_a_hundred_ids_a_call() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let created: Vec<String> = (0..150)
        .map(|n| sandbox.create_contact(&[("zip", &n.to_string())]))
        .collect();

    let read = adapter.read(&created).await.unwrap();

    assert_eq!(read.len(), 150);
    assert!(
        read.iter()
            .zip(&created)
            .all(|(record, id)| record.source_id == *id)
    );
    assert_eq!(sandbox.stats().requests, 2);
}

#[tokio::test]
async fn read_failures_are_classified_like_pushes() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let id = vec![sandbox.create_contact(&[("city", "Lisbon")])];

    sandbox.faults().set_standing(Fault::AccessRevoked);
    let error = adapter.read(&id).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Misconfigured);
    assert_eq!(error.code, "MISSING_SCOPES");
    sandbox.faults().clear_standing();

    sandbox.faults().fail_next(1, Fault::ServerError(503));
    let error = adapter.read(&id).await.unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::Retryable { .. }),
        "{error:?}"
    );

    sandbox.faults().fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    let error = adapter.read(&id).await.unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::RateLimited { .. }),
        "{error:?}"
    );

    assert_eq!(adapter.read(&id).await.unwrap().len(), 1);
}

/// What HubSpot stores in `field` of contact `id` after `value` is written there.
async fn stored_after_writing(
    sandbox: &HubspotSandbox,
    adapter: &Arc<dyn SourceAdapter>,
    id: &str,
    field: ContactField,
    value: &str,
) -> Option<String> {
    let item = PushItem {
        source_id: id.to_string(),
        patch: [(field, Some(value.to_string()))].into_iter().collect(),
        customer: CustomerLink::Unchanged,
    };
    adapter.push(&[item]).await[0]
        .as_ref()
        .unwrap_or_else(|error| panic!("writing {value:?} to {field}: {error:?}"));
    let property = adapter.mapping().crm_field(field).unwrap();
    sandbox.contact(id).unwrap().get(property).cloned()
}

#[tokio::test]
async fn values_hubspot_would_store_identically_are_the_same_and_no_others() {
    let sandbox: HubspotSandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let id = sandbox.create_contact(&[]);
    let candidates: [(ContactField, &[&str]); 3] = [
        (
            ContactField::Email,
            &[
                "ann@example.com",
                "Ann@Example.COM",
                " ann@example.com ",
                "ann.lee@example.com",
                "",
            ],
        ),
        (ContactField::FirstName, &["Ann", "ann", "Ann ", " Ann", ""]),
        (ContactField::Phone, &["+351 1", "+3511", "+351 1 ", ""]),
    ];
    for (field, values) in candidates {
        let mut stored = Vec::new();
        for value in values {
            stored.push(stored_after_writing(&sandbox, &adapter, &id, field, value).await);
        }
        for (crm, held) in values.iter().zip(&stored) {
            for (ours, would_be) in values.iter().zip(&stored) {
                assert_eq!(
                    adapter.same_value(field, held.as_deref(), Some(ours)),
                    held == would_be,
                    "{field}: HubSpot holds {held:?} (written as {crm:?}); ours is {ours:?}, stored as {would_be:?}"
                );
            }
            assert_eq!(
                adapter.same_value(field, held.as_deref(), None),
                held.is_none(),
                "{field}: a clear against {held:?}"
            );
        }
    }
}
