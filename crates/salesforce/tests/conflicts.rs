//! What change-only writes and the conflict policies build on: Salesforce's rules of sameness,
//! reading records before a write, following merged records, and the conditional write.

mod common;

use std::time::Duration;

use serde_json::json;
use unisync_core::ConditionalPush;
use unisync_core::{ContactField, CustomerLink, ErrorKind, PushItem, SourceAdapter};
use unisync_sandbox::{Fault, SandboxCrm};

use common::stub::{Reply, Stub, session_on};
use common::{adapter, contact, salesforce_adapter, stored, stub_adapter};

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

/// The record's LastModifiedDate as the adapter writes versions (RFC 3339).
fn version(sandbox: &unisync_salesforce::sandbox::SalesforceSandbox, id: &str) -> String {
    stored(sandbox, id, "LastModifiedDate")
        .unwrap()
        .replace("+0000", "Z")
}

#[tokio::test]
async fn same_value_holds_exactly_where_salesforce_stores_alike() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    // What we send, and what Salesforce stores from it: the same to Salesforce.
    for (field, ours) in [
        (ContactField::Email, Some("  Ann.Lee@Example.COM ")),
        (ContactField::Position, Some("\tHead of Sales\n")),
        (ContactField::FirstName, Some(" Ann ")),
        (ContactField::Phone, Some("")),
        (ContactField::Phone, Some("  ")),
        (ContactField::Fax, None),
    ] {
        let confirmed = adapter
            .push(&[item(&id, &[(field, ours)])])
            .await
            .remove(0)
            .expect("push");
        let crm = confirmed.values[&field].as_deref();
        assert!(
            adapter.same_value(field, crm, ours),
            "{field:?}: Salesforce stored {crm:?} for {ours:?}"
        );
    }
    // Values Salesforce keeps apart.
    for (field, crm, ours) in [
        (ContactField::FirstName, Some("ann"), Some("Ann")),
        (
            ContactField::Email,
            Some("ann@example.com"),
            Some("bob@example.com"),
        ),
        (ContactField::Email, Some("ann@example.com"), None),
        (ContactField::City, Some("Porto"), Some("\u{a0}Porto")),
        (
            ContactField::Address,
            Some("1 Main St\nFloor 2"),
            Some("1 Main St Floor 2"),
        ),
    ] {
        assert!(
            !adapter.same_value(field, crm, ours),
            "{field:?}: {crm:?} {ours:?}"
        );
    }
    // A value Salesforce keeps apart is written as it should be.
    adapter
        .push(&[item(&id, &[(ContactField::City, Some("\u{a0}Porto"))])])
        .await
        .remove(0)
        .expect("push");
    assert_eq!(
        stored(&sandbox, &id, "MailingCity").as_deref(),
        Some("\u{a0}Porto")
    );
}

#[tokio::test]
async fn read_answers_current_values_in_one_query() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    assert!(adapter.capabilities().reads_records);
    let account = sandbox.create_account("Acme");
    let linked = contact(
        &sandbox,
        &[("AccountId", &account), ("Email", "ann@example.com")],
    );
    let plain = contact(&sandbox, &[("Title", "CTO")]);
    let deleted = contact(&sandbox, &[]);
    sandbox.delete_contact(&deleted);
    sandbox.edit_as_person(&plain, &[("Title", "CEO"), ("Phone", "555")]);
    // A warm-up, so that the session is not counted below.
    adapter.read(std::slice::from_ref(&plain)).await.unwrap();

    let requests = sandbox.stats().requests;
    let asked = vec![
        sandbox.short_id(&plain),
        "003' OR Id != '".to_string(),
        deleted.clone(),
        linked.to_lowercase(),
        plain.clone(),
    ];
    let records = adapter.read(&asked).await.expect("read");
    assert_eq!(sandbox.stats().requests - requests, 1, "one query");
    let ids: Vec<&str> = records.iter().map(|r| r.source_id.as_str()).collect();
    assert_eq!(ids, [plain.as_str(), linked.as_str()]);
    let (read_plain, read_linked) = (&records[0], &records[1]);
    assert_eq!(
        read_plain.values[&ContactField::Position].as_deref(),
        Some("CEO")
    );
    assert_eq!(
        read_plain.values[&ContactField::Phone].as_deref(),
        Some("555")
    );
    assert_eq!(read_plain.values[&ContactField::Email], None);
    assert_eq!(
        read_plain.crm_version.as_deref(),
        Some(version(&sandbox, &plain).as_str())
    );
    assert!(read_plain.is_active);
    assert_eq!(
        read_linked.customer_source_id.as_deref(),
        Some(account.as_str())
    );
    assert_eq!(
        read_linked.values[&ContactField::Email].as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(adapter.read(&[]).await.unwrap(), Vec::new());
}

#[tokio::test]
async fn read_errors_are_classified_like_the_rest() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let id = contact(&sandbox, &[]);
    let ids = vec![id];
    sandbox.faults().fail_next(1, Fault::DailyLimit);
    let error = adapter.read(&ids).await.unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::QuotaExhausted { .. }),
        "{error:?}"
    );
    sandbox.faults().fail_next(1, Fault::AccessRevoked);
    let error = adapter.read(&ids).await.unwrap_err();
    assert_eq!(
        (error.kind, error.code.as_str()),
        (ErrorKind::Misconfigured, "API_DISABLED_FOR_ORG")
    );
    sandbox.faults().fail_next(1, Fault::ServerError(503));
    let error = adapter.read(&ids).await.unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::Retryable { .. }),
        "{error:?}"
    );
    assert_eq!(adapter.read(&ids).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_write_to_a_merged_contact_names_the_record_that_survives() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let master = contact(&sandbox, &[("Title", "CTO")]);
    let loser = contact(&sandbox, &[("Title", "CEO")]);
    sandbox.merge_contacts(&master, &loser);
    let written = sandbox.stats().records_written;
    let error = adapter
        .push(&[item(&loser, &[(ContactField::Position, Some("CFO"))])])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::RecordMerged {
            survivor: master.clone()
        }
    );
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("ENTITY_IS_DELETED", "entity is deleted")
    );
    assert_eq!(sandbox.stats().records_written, written);
    assert_eq!(stored(&sandbox, &master, "Title").as_deref(), Some("CTO"));
}

#[tokio::test]
async fn a_collection_follows_merges_per_record_and_leaves_deleted_records_gone() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids: Vec<String> = (0..5).map(|_| contact(&sandbox, &[])).collect();
    // 1 into 0; 3 into 2, and 2 into 4 later: a chain.
    sandbox.merge_contacts(&ids[0], &ids[1]);
    sandbox.merge_contacts(&ids[2], &ids[3]);
    sandbox.merge_contacts(&ids[4], &ids[2]);
    let deleted = contact(&sandbox, &[]);
    sandbox.delete_contact(&deleted);
    let live = contact(&sandbox, &[]);
    let items: Vec<PushItem> = [&ids[3], &deleted, &live]
        .into_iter()
        .map(|id| item(id, &[(ContactField::City, Some("Faro"))]))
        .collect();
    let results = adapter.push(&items).await;
    assert_eq!(sandbox.stats().collection_calls, 1);
    let kinds: Vec<ErrorKind> = results
        .iter()
        .map(|result| match result {
            Ok(_) => ErrorKind::Retryable { retry_after: None },
            Err(error) => error.kind.clone(),
        })
        .collect();
    assert_eq!(
        kinds[0],
        ErrorKind::RecordMerged {
            survivor: ids[4].clone()
        }
    );
    assert_eq!(kinds[1], ErrorKind::RecordGone);
    assert!(results[2].is_ok(), "{:?}", results[2]);

    // 0, which 1 was merged into, is deleted in turn.
    sandbox.delete_contact(&ids[0]);
    let error = adapter
        .push(&[item(&ids[1], &[(ContactField::City, Some("Faro"))])])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::RecordGone,
        "merged into a record deleted since: nothing survives"
    );
}

#[tokio::test]
async fn a_chain_of_merges_is_followed_only_so_far() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    // Each merged into the next: 0 → 1 → ... → 6, six merges.
    let chain: Vec<String> = (0..7).map(|_| contact(&sandbox, &[])).collect();
    for pair in chain.windows(2) {
        sandbox.merge_contacts(&pair[1], &pair[0]);
    }
    let results = adapter
        .push(&[
            item(&chain[1], &[(ContactField::City, Some("Faro"))]),
            item(&chain[0], &[(ContactField::City, Some("Faro"))]),
        ])
        .await;
    assert_eq!(
        results[0].as_ref().unwrap_err().kind,
        ErrorKind::RecordMerged {
            survivor: chain[6].clone()
        },
        "five merges are followed"
    );
    assert_eq!(
        results[1].as_ref().unwrap_err().kind,
        ErrorKind::RecordGone,
        "six are not"
    );
}

#[tokio::test]
async fn merged_cannot_be_told_from_deleted_when_query_all_fails() {
    let stub = Stub::start(|path, url| {
        if path.ends_with("/oauth2/token") {
            session_on(url)
        } else if path.contains("/sobjects/Contact/") {
            Reply::json(
                404,
                json!([{"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}])
                    .to_string(),
            )
        } else {
            Reply::json(
                503,
                json!([{"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable"}])
                    .to_string(),
            )
        }
    })
    .await;
    let adapter = stub_adapter(&stub.url());
    let error = adapter
        .push(&[item(
            "003SB0000000001AAA",
            &[(ContactField::City, Some("Faro"))],
        )])
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::Retryable { .. }),
        "not given up for gone: {error:?}"
    );
    assert_eq!(error.code, "SERVER_UNAVAILABLE");
}

#[tokio::test]
async fn a_conditional_write_lands_on_a_record_unmodified_since() {
    let sandbox = common::sandbox().await;
    let adapter = salesforce_adapter(&sandbox);
    let id = contact(&sandbox, &[("Title", "CTO")]);
    let read = adapter
        .read(std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    let since = read.crm_version.unwrap();
    let outcome = adapter
        .push_if_unmodified(
            &item(
                &sandbox.short_id(&id),
                &[(ContactField::Position, Some(" CEO "))],
            ),
            &since,
        )
        .await
        .expect("the conditional write");
    let ConditionalPush::Landed(confirmed) = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert_eq!(
        confirmed.values[&ContactField::Position].as_deref(),
        Some("CEO")
    );
    assert_eq!(
        confirmed.crm_version.as_deref(),
        Some(version(&sandbox, &id).as_str())
    );
    assert!(confirmed.crm_version.unwrap() > since);
    assert_eq!(stored(&sandbox, &id, "Title").as_deref(), Some("CEO"));
}

#[tokio::test]
async fn a_conditional_write_is_refused_after_a_persons_edit() {
    let sandbox = common::sandbox().await;
    let adapter = salesforce_adapter(&sandbox);
    let id = contact(&sandbox, &[("Title", "CTO")]);
    let since = adapter
        .read(std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0)
        .crm_version
        .unwrap();
    // A person edits the record a second later.
    sandbox.advance_clock(Duration::from_secs(1));
    let before = sandbox.stats();
    sandbox.edit_as_person(&id, &[("Title", "Chief Executive")]);
    assert_eq!(sandbox.stats(), before, "a person's edit is no API request");
    let outcome = adapter
        .push_if_unmodified(&item(&id, &[(ContactField::Position, Some("CEO"))]), &since)
        .await
        .expect("an answer");
    assert_eq!(outcome, ConditionalPush::ModifiedSince);
    assert_eq!(
        stored(&sandbox, &id, "Title").as_deref(),
        Some("Chief Executive")
    );
    assert_eq!(sandbox.stats().records_written, before.records_written);

    // With the version read after the edit, the write lands.
    let since = version(&sandbox, &id);
    let outcome = adapter
        .push_if_unmodified(&item(&id, &[(ContactField::Position, Some("CEO"))]), &since)
        .await
        .unwrap();
    assert!(matches!(outcome, ConditionalPush::Landed(_)), "{outcome:?}");
    assert_eq!(stored(&sandbox, &id, "Title").as_deref(), Some("CEO"));
}

#[tokio::test]
async fn a_conditional_write_is_classified_like_a_push() {
    let sandbox = common::sandbox().await;
    let adapter = salesforce_adapter(&sandbox);
    let master = contact(&sandbox, &[]);
    let loser = contact(&sandbox, &[]);
    let since = version(&sandbox, &loser);
    sandbox.merge_contacts(&master, &loser);
    let error = adapter
        .push_if_unmodified(&item(&loser, &[(ContactField::City, Some("Faro"))]), &since)
        .await
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::RecordMerged {
            survivor: master.clone()
        }
    );
    let since = version(&sandbox, &master);
    let error = adapter
        .push_if_unmodified(&item(&master, &[(ContactField::LastName, None)]), &since)
        .await
        .unwrap_err();
    assert_eq!(error.code, "REQUIRED_FIELD_MISSING");
    assert_eq!(error.field(), Some("last_name"));

    let requests = sandbox.stats().requests;
    for (id, since, code) in [
        (master.as_str(), "yesterday", "INVALID_VERSION"),
        ("003nope", since.as_str(), "MALFORMED_ID"),
    ] {
        let error = adapter
            .push_if_unmodified(&item(id, &[(ContactField::City, Some("Faro"))]), since)
            .await
            .unwrap_err();
        assert_eq!(
            (&error.kind, error.code.as_str()),
            (&ErrorKind::Permanent { field: None }, code)
        );
    }
    assert_eq!(sandbox.stats().requests, requests, "nothing was sent");
}
