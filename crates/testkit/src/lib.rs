//! The behaviour suite every unisync adapter runs against its sandbox CRM.
//!
//! A provider crate implements [`AdapterHarness`] in its tests (an adapter pointed at its
//! sandbox, plus ways to create and read sandbox records) and calls [`run_behaviour_suite`].
//! Each check is also a public function, so a failure names the behaviour that broke.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use unisync_core::{
    AdapterError, ContactField, ContactPatch, CustomerLink, ErrorKind, PushItem, SourceAdapter,
};
use unisync_sandbox::{Fault, Faults};

/// An adapter wired to a running sandbox, and the sandbox's test controls.
#[async_trait]
pub trait AdapterHarness: Send + Sync {
    /// The adapter under test, pointed at the sandbox.
    fn adapter(&self) -> Arc<dyn SourceAdapter>;

    /// Creates a record in the sandbox CRM holding `values`; returns its CRM id.
    async fn create_record(&self, values: &ContactPatch) -> String;

    /// The record's values as the sandbox CRM stores them, in unified terms (an empty CRM
    /// value is `None`); `None` when there is no such record.
    async fn record(&self, source_id: &str) -> Option<BTreeMap<ContactField, Option<String>>>;

    /// Deletes a record in the sandbox CRM behind the adapter's back.
    async fn delete_record(&self, source_id: &str);

    /// The sandbox's fault switches.
    fn faults(&self) -> &Faults;

    /// Whether the CRM says how long to wait when its short-window rate limit is hit
    /// (HubSpot's `Retry-After`). Salesforce's only short-window limit, on concurrent
    /// long-running requests, names no wait; `rate_limits_are_classified` then expects
    /// `RateLimited` without one.
    fn rate_limit_names_a_wait(&self) -> bool {
        true
    }
}

/// Runs every behaviour check; panics naming the first that fails.
pub async fn run_behaviour_suite(harness: &dyn AdapterHarness) {
    partial_update_leaves_other_fields_alone(harness).await;
    null_clears_a_field(harness).await;
    push_reports_the_crms_stored_values(harness).await;
    batch_reports_each_item_on_its_own(harness).await;
    missing_record_is_not_retried(harness).await;
    server_errors_are_retryable(harness).await;
    rate_limits_are_classified(harness).await;
    pull_pages_through_every_record(harness).await;
    harness.faults().reset();
}

fn patch(values: &[(ContactField, &str)]) -> ContactPatch {
    values
        .iter()
        .map(|(field, value)| (*field, Some(value.to_string())))
        .collect()
}

fn seed_values(tag: &str) -> ContactPatch {
    patch(&[
        (ContactField::Email, &format!("{tag}@example.com")),
        (ContactField::FirstName, "Seed"),
        (ContactField::LastName, "Record"),
        (ContactField::Phone, "+1 555 0100"),
        (ContactField::City, "Lisbon"),
    ])
}

fn item(source_id: &str, patch: ContactPatch) -> PushItem {
    PushItem {
        source_id: source_id.to_string(),
        patch,
        customer: CustomerLink::Unchanged,
    }
}

async fn push_one(harness: &dyn AdapterHarness, item: PushItem) -> Result<(), AdapterError> {
    let mut results = harness.adapter().push(std::slice::from_ref(&item)).await;
    assert_eq!(results.len(), 1, "push must return one result per item");
    results.pop().unwrap().map(|_| ())
}

/// Fields the edit does not name keep their CRM values.
pub async fn partial_update_leaves_other_fields_alone(harness: &dyn AdapterHarness) {
    let id = harness.create_record(&seed_values("partial")).await;
    let edit = patch(&[
        (ContactField::Email, "partial@example.com"),
        (ContactField::FirstName, "Changed"),
    ]);
    push_one(harness, item(&id, edit)).await.expect("push");
    let stored = harness.record(&id).await.expect("record exists");
    assert_eq!(stored[&ContactField::FirstName].as_deref(), Some("Changed"));
    assert_eq!(stored[&ContactField::Phone].as_deref(), Some("+1 555 0100"));
    assert_eq!(stored[&ContactField::City].as_deref(), Some("Lisbon"));
    assert_eq!(stored[&ContactField::LastName].as_deref(), Some("Record"));
}

/// A `None` in the patch empties the CRM field; absent fields stay.
pub async fn null_clears_a_field(harness: &dyn AdapterHarness) {
    let id = harness.create_record(&seed_values("clear")).await;
    let mut edit = ContactPatch::new();
    edit.clear(ContactField::Phone);
    push_one(harness, item(&id, edit)).await.expect("push");
    let stored = harness.record(&id).await.expect("record exists");
    assert_eq!(stored.get(&ContactField::Phone).cloned().flatten(), None);
    assert_eq!(stored[&ContactField::City].as_deref(), Some("Lisbon"));
}

/// A successful push returns what the CRM stored for the fields it changed.
pub async fn push_reports_the_crms_stored_values(harness: &dyn AdapterHarness) {
    let id = harness.create_record(&seed_values("confirm")).await;
    let edit = patch(&[(ContactField::Position, "Head of Sales")]);
    let results = harness.adapter().push(&[item(&id, edit)]).await;
    let confirmed = results.into_iter().next().unwrap().expect("push");
    let stored = harness.record(&id).await.expect("record exists");
    assert_eq!(
        confirmed
            .values
            .get(&ContactField::Position)
            .cloned()
            .flatten(),
        stored[&ContactField::Position],
    );
    assert_eq!(
        stored[&ContactField::Position].as_deref(),
        Some("Head of Sales")
    );
}

/// In a batch, one item's failure is that item's alone.
pub async fn batch_reports_each_item_on_its_own(harness: &dyn AdapterHarness) {
    let adapter = harness.adapter();
    let size = adapter.capabilities().max_batch_size.clamp(1, 5);
    let mut items = Vec::new();
    for n in 0..size {
        let id = harness
            .create_record(&seed_values(&format!("batch{n}")))
            .await;
        items.push(item(
            &id,
            patch(&[(ContactField::City, &format!("City {n}"))]),
        ));
    }
    let gone = harness.create_record(&seed_values("batchgone")).await;
    harness.delete_record(&gone).await;
    items.push(item(&gone, patch(&[(ContactField::City, "Nowhere")])));
    let batch_size = adapter.capabilities().max_batch_size;
    let mut results = Vec::new();
    for chunk in items.chunks(batch_size) {
        results.extend(adapter.push(chunk).await);
    }
    assert_eq!(results.len(), items.len(), "one result per item");
    let (last, rest) = results.split_last().unwrap();
    for (n, result) in rest.iter().enumerate() {
        assert!(result.is_ok(), "item {n} should land: {result:?}");
        let stored = harness.record(&items[n].source_id).await.unwrap();
        assert_eq!(
            stored[&ContactField::City].as_deref(),
            Some(format!("City {n}").as_str())
        );
    }
    let error = last
        .as_ref()
        .expect_err("the deleted record's edit must fail");
    assert!(
        !error.is_transient(),
        "a missing record is not transient: {error:?}"
    );
}

/// An edit of a record the CRM does not have fails for good, with the CRM's code.
pub async fn missing_record_is_not_retried(harness: &dyn AdapterHarness) {
    let id = harness.create_record(&seed_values("missing")).await;
    harness.delete_record(&id).await;
    let error = push_one(harness, item(&id, patch(&[(ContactField::City, "X")])))
        .await
        .expect_err("push to a deleted record");
    assert!(
        matches!(
            error.kind,
            ErrorKind::RecordGone | ErrorKind::Permanent { .. }
        ),
        "{error:?}"
    );
    assert!(!error.code.is_empty() && !error.message.is_empty());
}

/// A 5xx is retryable and leaves the record as it was.
pub async fn server_errors_are_retryable(harness: &dyn AdapterHarness) {
    let id = harness.create_record(&seed_values("outage")).await;
    harness.faults().fail_next(1, Fault::ServerError(503));
    let error = push_one(harness, item(&id, patch(&[(ContactField::City, "Porto")])))
        .await
        .expect_err("503");
    assert!(
        matches!(error.kind, ErrorKind::Retryable { .. }),
        "{error:?}"
    );
    let stored = harness.record(&id).await.unwrap();
    assert_eq!(stored[&ContactField::City].as_deref(), Some("Lisbon"));
    push_one(harness, item(&id, patch(&[(ContactField::City, "Porto")])))
        .await
        .expect("the retry lands");
}

/// The short-window rate limit is `RateLimited`, carrying the CRM's Retry-After when it names
/// one.
pub async fn rate_limits_are_classified(harness: &dyn AdapterHarness) {
    let id = harness.create_record(&seed_values("limited")).await;
    harness.faults().fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(3),
        },
    );
    let error = push_one(harness, item(&id, patch(&[(ContactField::City, "Faro")])))
        .await
        .expect_err("rate limited");
    match error.kind {
        ErrorKind::RateLimited { retry_after } => {
            let expected = harness
                .rate_limit_names_a_wait()
                .then_some(std::time::Duration::from_secs(3));
            assert_eq!(retry_after, expected)
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

/// Pulling pages through every record exactly once.
pub async fn pull_pages_through_every_record(harness: &dyn AdapterHarness) {
    let created = harness.create_record(&seed_values("pulled")).await;
    let adapter = harness.adapter();
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = adapter.pull(cursor.as_deref()).await.expect("pull");
        seen.extend(page.contacts.into_iter().map(|c| c.source_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no record twice");
    assert!(seen.contains(&created), "the new record is pulled");
}
