//! Bulk API 2.0 jobs against the sandbox org: start (create, upload, close), poll, and each
//! record's result mapped back to its item.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use unisync_core::{
    BulkProgress, ContactField, CustomerLink, ErrorKind, PushItem, PushResult, SourceAdapter,
};
use unisync_salesforce::MAX_BULK_ITEMS;
use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

use common::stub::{Reply, Stub, session_on};
use common::{adapter, contact, stored};

/// Long enough that a job held with it never finishes within a test.
const HELD: Duration = Duration::from_secs(3600);

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

/// Prepares a job of `items` and lets it run: its id.
async fn start_and_close(adapter: &Arc<dyn SourceAdapter>, items: &[PushItem]) -> String {
    let job = adapter.start_bulk_job(items).await.expect("the job starts");
    adapter.close_bulk_job(&job).await.expect("the job closes");
    job
}

/// Polls job `job` until it finishes, within a generous deadline: its results, and the polls
/// it took.
async fn finish(
    adapter: &dyn SourceAdapter,
    job: &str,
    items: &[PushItem],
) -> (Vec<PushResult>, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut polls = 0;
    loop {
        polls += 1;
        match adapter.poll_bulk_job(job, items).await.expect("the poll") {
            BulkProgress::Finished(results) => {
                assert_eq!(results.len(), items.len(), "one result per item");
                return (results, polls);
            }
            BulkProgress::Running => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "job {job} never finished"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Contacts with a phone, a title and a city to change or keep.
/// One edit per record: each moves to Faro.
fn moves_to_faro(ids: &[String]) -> Vec<PushItem> {
    ids.iter()
        .map(|id| item(id, &[(ContactField::City, Some("Faro"))]))
        .collect()
}

fn contacts(sandbox: &SalesforceSandbox, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            contact(
                sandbox,
                &[("Phone", "1"), ("Title", "Old"), ("MailingCity", "Porto")],
            )
        })
        .collect()
}

#[tokio::test]
async fn a_job_lands_every_record_with_its_values_and_clears() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    assert_eq!(adapter.capabilities().max_bulk_items, MAX_BULK_ITEMS);
    let account = sandbox.create_account("Acme");
    let ids = contacts(&sandbox, 300);
    let first_names: Vec<String> = (0..300).map(|n| format!("Ann {n}")).collect();
    let emails: Vec<String> = (0..300).map(|n| format!("Person{n}@Example.COM")).collect();
    // Three kinds of edit, each touching its own fields: one CSV header serves them all.
    let items: Vec<PushItem> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| match n % 3 {
            0 => item(
                id,
                &[
                    (ContactField::FirstName, Some(&first_names[n])),
                    (ContactField::Phone, None),
                ],
            ),
            1 => item(
                id,
                &[
                    (ContactField::Email, Some(&emails[n])),
                    (ContactField::Address, Some("1 Main St, \"B\"\nFloor 2")),
                ],
            ),
            _ => PushItem {
                customer: CustomerLink::Link {
                    id: account.clone(),
                    previous: None,
                },
                ..item(
                    id,
                    &[
                        (ContactField::City, Some("Faro")),
                        (ContactField::Position, Some("")),
                    ],
                )
            },
        })
        .collect();
    let job = start_and_close(&adapter, &items).await;
    assert_eq!(sandbox.stats().bulk_jobs_created, 1);
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    for (n, (result, item)) in results.iter().zip(&items).enumerate() {
        let confirmed = result
            .as_ref()
            .unwrap_or_else(|error| panic!("{n}: {error:?}"));
        let sent: Vec<(ContactField, Option<&str>)> = item.patch.iter().collect();
        let confirmed_values: Vec<(ContactField, Option<&str>)> = confirmed
            .values
            .iter()
            .map(|(field, value)| (*field, value.as_deref()))
            .collect();
        assert_eq!(
            confirmed_values, sent,
            "{n}: confirmed with the values sent"
        );
    }
    assert_eq!(sandbox.stats().bulk_records_processed, 300);
    for (n, id) in ids.iter().enumerate() {
        let stored = |field| stored(&sandbox, id, field);
        match n % 3 {
            0 => {
                assert_eq!(
                    stored("FirstName").as_deref(),
                    Some(first_names[n].as_str())
                );
                assert_eq!(stored("Phone"), None, "{n}: cleared with #N/A");
                assert_eq!(stored("Title").as_deref(), Some("Old"), "{n}: untouched");
            }
            1 => {
                assert_eq!(
                    stored("Email"),
                    Some(emails[n].to_lowercase()),
                    "{n}: stored as Salesforce stores emails"
                );
                assert_eq!(
                    stored("MailingStreet").as_deref(),
                    Some("1 Main St, \"B\"\nFloor 2")
                );
                assert_eq!(stored("Phone").as_deref(), Some("1"), "{n}: untouched");
            }
            _ => {
                assert_eq!(stored("MailingCity").as_deref(), Some("Faro"));
                assert_eq!(stored("AccountId"), Some(account.clone()));
                assert_eq!(stored("Title"), None, "{n}: an empty value clears");
                assert_eq!(stored("Phone").as_deref(), Some("1"), "{n}: untouched");
            }
        }
    }
}

#[tokio::test]
async fn a_refused_record_is_a_permanent_error_and_the_others_land() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 5);
    let items: Vec<PushItem> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| match n {
            2 => item(id, &[(ContactField::Email, Some("not an email"))]),
            _ => item(id, &[(ContactField::City, Some("Faro"))]),
        })
        .collect();
    let job = start_and_close(&adapter, &items).await;
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    let error = results[2].as_ref().unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Permanent {
            field: Some("email".into())
        }
    );
    assert_eq!(error.code, "INVALID_EMAIL_ADDRESS");
    assert_eq!(error.message, "Email: invalid email address: not an email");
    assert_eq!(stored(&sandbox, &ids[2], "Email"), None);
    for n in [0, 1, 3, 4] {
        assert!(results[n].is_ok(), "{n}: {:?}", results[n]);
        assert_eq!(
            stored(&sandbox, &ids[n], "MailingCity").as_deref(),
            Some("Faro")
        );
    }
}

#[tokio::test]
async fn a_job_in_progress_is_running_until_salesforce_has_processed_it() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 3);
    let items = moves_to_faro(&ids);
    sandbox.set_bulk_processing_time(HELD);
    let job = start_and_close(&adapter, &items).await;
    assert_eq!(
        adapter.poll_bulk_job(&job, &items).await.unwrap(),
        BulkProgress::Running
    );
    assert_eq!(sandbox.bulk_job_state(&job), Some("InProgress"));
    assert_eq!(
        stored(&sandbox, &ids[0], "MailingCity").as_deref(),
        Some("Porto")
    );
    sandbox.set_bulk_processing_time(Duration::ZERO);
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        stored(&sandbox, &ids[0], "MailingCity").as_deref(),
        Some("Faro")
    );
}

#[tokio::test]
async fn a_new_adapter_finishes_a_job_by_its_id_alone() {
    let sandbox = common::sandbox().await;
    let ids = contacts(&sandbox, 4);
    let items: Vec<PushItem> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| match n {
            1 => item(id, &[(ContactField::LastName, None)]),
            _ => item(id, &[(ContactField::Position, Some("CFO"))]),
        })
        .collect();
    sandbox.set_bulk_processing_time(HELD);
    let job = start_and_close(&adapter(&sandbox), &items).await;
    // As after a restart: another adapter, with its own session, knows only the job's id and
    // the items.
    sandbox.set_bulk_processing_time(Duration::ZERO);
    let restarted = adapter(&sandbox);
    let (results, _) = finish(restarted.as_ref(), &job, &items).await;
    let error = results[1].as_ref().unwrap_err();
    assert_eq!(error.code, "REQUIRED_FIELD_MISSING");
    assert_eq!(error.field(), Some("last_name"));
    for n in [0, 2, 3] {
        assert_eq!(
            results[n].as_ref().unwrap().values,
            [(ContactField::Position, Some("CFO".to_string()))].into()
        );
        assert_eq!(stored(&sandbox, &ids[n], "Title").as_deref(), Some("CFO"));
    }
    assert_eq!(sandbox.stats().bulk_jobs_created, 1, "nothing sent again");
}

#[tokio::test]
async fn an_aborted_jobs_unprocessed_records_are_retryable() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 3);
    let items = moves_to_faro(&ids);
    sandbox.set_bulk_processing_time(HELD);
    let job = start_and_close(&adapter, &items).await;
    assert!(sandbox.abort_bulk_job(&job), "an admin aborts it in Setup");
    let (results, polls) = finish(adapter.as_ref(), &job, &items).await;
    assert_eq!(polls, 1);
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Retryable { retry_after: None });
        assert_eq!(error.code, "BULK_JOB_ABORTED");
    }
    assert_eq!(
        stored(&sandbox, &ids[0], "MailingCity").as_deref(),
        Some("Porto")
    );
    assert_eq!(sandbox.stats().bulk_records_processed, 0);
}

#[tokio::test]
async fn a_job_costs_a_handful_of_calls_whatever_its_size() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 2_000);
    let items: Vec<PushItem> = ids
        .iter()
        .map(|id| item(id, &[(ContactField::Zip, Some("1000-001"))]))
        .collect();
    let before = sandbox.stats().requests;
    let job = start_and_close(&adapter, &items).await;
    assert_eq!(
        sandbox.stats().requests - before,
        3,
        "create, upload, close"
    );
    let (results, polls) = finish(adapter.as_ref(), &job, &items).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        sandbox.stats().requests - before,
        3 + polls + 2,
        "each poll, then the successful and failed results: no read-back"
    );
    assert_eq!(sandbox.stats().collection_calls, 0);
}

#[tokio::test]
async fn a_record_merged_away_is_followed_to_the_survivor() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 4);
    sandbox.merge_contacts(&ids[0], &ids[1]);
    assert!(sandbox.delete_contact(&ids[2]));
    let items = moves_to_faro(&ids);
    let job = start_and_close(&adapter, &items).await;
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    let merged = results[1].as_ref().unwrap_err();
    assert_eq!(
        merged.kind,
        ErrorKind::RecordMerged {
            survivor: ids[0].clone()
        }
    );
    assert_eq!(merged.code, "ENTITY_IS_DELETED");
    assert_eq!(results[2].as_ref().unwrap_err().kind, ErrorKind::RecordGone);
}

#[tokio::test]
async fn a_job_past_the_daily_bulk_allowance_leaves_its_records_unwritten() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 2);
    let items = moves_to_faro(&ids);
    sandbox.set_bulk_daily_record_limit(1_000);
    sandbox.set_bulk_records_used(999);
    let job = start_and_close(&adapter, &items).await;
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    assert_eq!(sandbox.bulk_job_state(&job), Some("Failed"));
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, ErrorKind::QuotaExhausted { retry_after: None });
        assert_eq!(error.code, "ExceededQuota");
    }
    assert_eq!(
        stored(&sandbox, &ids[0], "MailingCity").as_deref(),
        Some("Porto")
    );
    assert_eq!(sandbox.bulk_records_used(), 999);
}

#[tokio::test]
async fn a_mapped_field_the_org_lacks_fails_the_job_and_refuses_the_connection() {
    let sandbox = common::sandbox().await;
    let (adapter, _) =
        common::refresh_token_adapter(&sandbox, json!({"fields": {"position": "JobTitle"}}));
    let ids = contacts(&sandbox, 2);
    let items: Vec<PushItem> = ids
        .iter()
        .map(|id| item(id, &[(ContactField::Position, Some("CTO"))]))
        .collect();
    let job = start_and_close(&adapter, &items).await;
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.message, "Field name not found : JobTitle");
    }
}

#[tokio::test]
async fn an_item_that_names_no_record_fails_alone() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let ids = contacts(&sandbox, 1);
    let items = vec![
        item("not-an-id", &[(ContactField::City, Some("Faro"))]),
        // Its 15-character form names the same record.
        item(
            &sandbox.short_id(&ids[0]),
            &[(ContactField::City, Some("Faro"))],
        ),
    ];
    let job = start_and_close(&adapter, &items).await;
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    assert_eq!(results[0].as_ref().unwrap_err().code, "MALFORMED_ID");
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert_eq!(
        stored(&sandbox, &ids[0], "MailingCity").as_deref(),
        Some("Faro")
    );
    // A job of no record is not created.
    let before = sandbox.stats().requests;
    let error = adapter.start_bulk_job(&items[..1]).await.unwrap_err();
    assert_eq!(error.code, "MALFORMED_ID");
    assert_eq!(sandbox.stats().requests, before);
}

/// The job the stub org creates.
const STUB_JOB: &str = "750SB0000000001AAA";

/// A stub org that creates [`STUB_JOB`], takes its data (or hangs up on the upload, when not
/// `takes_data`), and answers the requests to the job's own URL (close, description, abort)
/// in turn with `job_answers`: a state, or `None` to hang up. Also answers the paths of the
/// Bulk API calls received, in order.
async fn stub_org(
    takes_data: bool,
    job_answers: &'static [Option<&'static str>],
) -> (Stub, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    let stub = Stub::start(move |path, url| {
        let job_path = format!("/services/data/v62.0/jobs/ingest/{STUB_JOB}");
        let job =
            |state: &str| Reply::json(200, json!({"id": STUB_JOB, "state": state}).to_string());
        if path == "/services/oauth2/token" {
            return session_on(url);
        }
        let mut calls = log.lock().unwrap();
        calls.push(path.to_string());
        match path {
            "/services/data/v62.0/jobs/ingest" => job("Open"),
            _ if path == format!("{job_path}/batches") && takes_data => Reply::json(201, ""),
            _ if path == job_path => {
                let turn = calls.iter().filter(|call| **call == job_path).count();
                match job_answers.get(turn - 1).copied().flatten() {
                    Some(state) => job(state),
                    None => Reply::HangUp,
                }
            }
            _ => Reply::HangUp,
        }
    })
    .await;
    (stub, calls)
}

fn stub_items() -> [PushItem; 1] {
    [item(
        "003SB0000000001AAA",
        &[(ContactField::City, Some("Faro"))],
    )]
}

#[tokio::test]
async fn a_job_whose_close_answer_was_lost_is_answered_if_it_runs() {
    let (stub, calls) = stub_org(true, &[None, Some("InProgress")]).await;
    let adapter = common::stub_adapter(&stub.url());
    let job = adapter.start_bulk_job(&stub_items()).await.unwrap();
    assert_eq!(job, STUB_JOB);
    adapter.close_bulk_job(&job).await.unwrap();
    assert_eq!(
        calls.lock().unwrap().len(),
        4,
        "create, upload, close, and one look at the job"
    );
}

#[tokio::test]
async fn a_job_whose_close_answer_was_lost_is_aborted_if_still_open_and_lands_nothing() {
    let (stub, calls) = stub_org(true, &[None, Some("Open"), Some("Aborted")]).await;
    let adapter = common::stub_adapter(&stub.url());
    let job = adapter.start_bulk_job(&stub_items()).await.unwrap();
    let error = adapter.close_bulk_job(&job).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Retryable { retry_after: None },
        "{error:?}"
    );
    assert_eq!(error.code, "CONNECTION_LOST");
    assert_eq!(
        calls.lock().unwrap().len(),
        5,
        "create, upload, close, a look at the job, the abort"
    );
}

#[tokio::test]
async fn a_job_whose_close_answer_was_lost_and_state_unknown_stays_unknown() {
    let (stub, _) = stub_org(true, &[None, None]).await;
    let adapter = common::stub_adapter(&stub.url());
    let job = adapter.start_bulk_job(&stub_items()).await.unwrap();
    let error = adapter.close_bulk_job(&job).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown, "{error:?}");
}

#[tokio::test]
async fn a_lost_upload_answer_aborts_the_job_and_lands_nothing() {
    let (stub, calls) = stub_org(false, &[Some("Aborted")]).await;
    let adapter = common::stub_adapter(&stub.url());
    let error = adapter.start_bulk_job(&stub_items()).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Retryable { retry_after: None },
        "never closed, the job cannot run: {error:?}"
    );
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 3, "create, upload, abort: never closed");
    assert_eq!(
        calls[2],
        format!("/services/data/v62.0/jobs/ingest/{STUB_JOB}")
    );
}

#[tokio::test]
async fn a_job_salesforce_no_longer_has_leaves_its_items_unknown() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let items = [item(
        &contacts(&sandbox, 1)[0],
        &[(ContactField::City, Some("Faro"))],
    )];
    let BulkProgress::Finished(results) = adapter
        .poll_bulk_job("750SB0000000099AAA", &items)
        .await
        .unwrap()
    else {
        panic!("a job that is gone has finished");
    };
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::OutcomeUnknown);
    assert_eq!(error.code, "BULK_JOB_NOT_FOUND");
    let refused = adapter.poll_bulk_job("750/../x", &items).await.unwrap_err();
    assert_eq!(refused.code, "INVALID_JOB_ID");
}

#[tokio::test]
async fn faults_reach_bulk_calls_and_are_classified_as_any_answer() {
    let sandbox = common::sandbox().await;
    let adapter = adapter(&sandbox);
    let items = [item(
        &contacts(&sandbox, 1)[0],
        &[(ContactField::City, Some("Faro"))],
    )];
    sandbox.faults().fail_next(1, Fault::ServerError(503));
    let error = adapter.start_bulk_job(&items).await.unwrap_err();
    assert_eq!(error.code, "SERVER_UNAVAILABLE");
    assert!(matches!(error.kind, ErrorKind::Retryable { .. }));
    let job = start_and_close(&adapter, &items).await;
    sandbox.faults().fail_next(1, Fault::AccessRevoked);
    let error = adapter.poll_bulk_job(&job, &items).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Misconfigured);
    assert_eq!(error.code, "API_DISABLED_FOR_ORG");
    let (results, _) = finish(adapter.as_ref(), &job, &items).await;
    assert!(results[0].is_ok());
}
