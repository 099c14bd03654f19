//! `unisync backfill`: many edits at once, in full batches, under the CRM's rate limit.

use std::time::Duration;

use serde_json::{Value, json};
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

use crate::crm::Crm;
use crate::fleet::{edits_file, registered_records};
use crate::harness::Setup;

const EDITS: usize = 10_000;

fn backfill(setup: &Setup, file: &str, extra: &[&str]) -> (i32, Value, String) {
    let report = setup.scratch_path("report.json");
    let mut args = vec![
        "backfill",
        "--input",
        "-",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = setup.run(&args, Some(file));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_default())
        .unwrap_or(Value::Null);
    (code, report, format!("{out}\n{err}"))
}

/// Starts `unisync backfill` on `edits` in the background, for a test to kill.
fn start_backfill(setup: &Setup, edits: &str) -> std::process::Child {
    let file = setup.scratch_path("edits.jsonl");
    std::fs::write(&file, edits).unwrap();
    setup
        .command()
        .args(["backfill", "--input", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Backfills one edit for each of `EDITS` contacts; checks every edit landed once and the
/// records hold the new values.
fn backfill_everyone<C: Crm>(crm: &C, setup: &Setup, source_ids: &[String]) {
    let written_before = crm.writes().written;
    let (code, report, output) = backfill(setup, &edits_file(EDITS), &[]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["landed"], EDITS as u64, "{report}");
    assert_eq!(report["dead_letters"], json!([]));
    assert_eq!(
        crm.writes().written - written_before,
        EDITS as u64,
        "each edit written once"
    );
    assert_eq!(crm.writes().overlapping, 0);
    for n in [0, EDITS / 2, EDITS - 1] {
        assert_eq!(
            crm.value(&source_ids[n], "first_name"),
            Some(format!("Edited {n}"))
        );
        assert_eq!(
            crm.value(&source_ids[n], "city").as_deref(),
            Some("Backfill City")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hubspot_edits_go_out_in_full_batches_without_tripping_the_rate_limit() {
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, source_ids) = registered_records(&crm, EDITS);
    // A binding limit, scaled down from HubSpot's 100 per 10 s so the test stays short.
    crm.set_rate_limit(20, Duration::from_secs(1));
    let before = crm.stats();
    backfill_everyone(&crm, &setup, &source_ids);
    let stats = crm.stats();
    let requests = stats.requests - before.requests;
    let per_request = EDITS as f64 / requests as f64;
    assert!(
        per_request >= 90.0,
        "{per_request:.1} contacts per request ({requests} requests)"
    );
    let rate_limited = stats.rate_limited - before.rate_limited;
    assert!(
        (rate_limited as f64) < 0.01 * requests as f64,
        "{rate_limited} of {requests} requests met a 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_edits_under_the_bulk_threshold_go_out_in_full_collections() {
    const UNDER_THRESHOLD: usize = 1_500;
    let crm = <SalesforceSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, UNDER_THRESHOLD);
    let before = crm.stats();
    let (code, report, output) = backfill(&setup, &edits_file(UNDER_THRESHOLD), &[]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["landed"], UNDER_THRESHOLD as u64, "{report}");
    let stats = crm.stats();
    let calls = stats.collection_calls - before.collection_calls;
    let per_call = UNDER_THRESHOLD as f64 / calls.max(1) as f64;
    assert!(
        per_call >= 150.0,
        "{per_call:.1} records per collections call ({calls} calls)"
    );
    assert_eq!(stats.bulk_jobs_created, 0);
}

/// The edits file with contact 7's email one that Salesforce refuses (an internationalised
/// domain) though unisync's own check lets it through.
fn edits_with_one_refused_by_salesforce(count: usize) -> String {
    edits_file(count).replace("person7@example.com", "person7@exämple.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_backfill_over_the_threshold_runs_as_one_bulk_job_with_every_record_reconciled()
 {
    let crm = <SalesforceSandbox as Crm>::start().await;
    let (setup, source_ids) = registered_records(&crm, EDITS);
    let before = crm.stats();
    let (code, report, output) =
        backfill(&setup, &edits_with_one_refused_by_salesforce(EDITS), &[]);
    assert_eq!(code, 1, "one edit failed: {output}");
    assert_eq!(report["landed"], EDITS as u64 - 1, "{report}");
    let letters = report["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{report}");
    assert_eq!(letters[0]["contact_id"], "contact_7");
    assert_eq!(letters[0]["error"]["code"], "INVALID_EMAIL_ADDRESS");
    let stats = crm.stats();
    assert_eq!(stats.bulk_jobs_created - before.bulk_jobs_created, 1);
    assert_eq!(
        stats.collection_calls, before.collection_calls,
        "no collections call"
    );
    assert_eq!(
        stats.records_written - before.records_written,
        EDITS as u64 - 1,
        "each landed edit written once"
    );
    for n in [0, EDITS / 2, EDITS - 1] {
        assert_eq!(
            crm.value(&source_ids[n], "first_name"),
            Some(format!("Edited {n}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_left_running_by_a_kill_is_resumed_without_sending_its_records_twice() {
    const EDITS_OVER_THRESHOLD: usize = 2_500;
    let crm = <SalesforceSandbox as Crm>::start().await;
    let (setup, source_ids) = registered_records(&crm, EDITS_OVER_THRESHOLD);
    // The job stays in progress until the test lets it finish.
    crm.set_bulk_processing_time(Duration::from_secs(3600));
    let mut first = start_backfill(&setup, &edits_file(EDITS_OVER_THRESHOLD));
    crate::harness::wait_for("the bulk job to run", || async {
        let jobs = crm.bulk_jobs();
        (jobs.len() == 1 && jobs[0].1 == "InProgress").then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();

    crm.set_bulk_processing_time(Duration::ZERO);
    let daemon = setup.serve();
    for n in [0, EDITS_OVER_THRESHOLD - 1] {
        daemon.wait_synced(&format!("contact_{n}")).await;
        assert_eq!(
            crm.value(&source_ids[n], "first_name"),
            Some(format!("Edited {n}"))
        );
    }
    crate::harness::wait_for("every record reconciled", || async {
        let status = setup.run_json(&["status"]);
        let counts = &status["connections"]["salesforce"];
        (counts["ready"] == 0 && counts["in_flight"] == 0).then_some(())
    })
    .await;
    let stats = crm.stats();
    assert_eq!(
        stats.bulk_jobs_created, 1,
        "the job was resumed, not sent again"
    );
    assert_eq!(stats.records_written, EDITS_OVER_THRESHOLD as u64);
    assert_eq!(stats.collection_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_edited_on_several_lines_ends_with_its_last_values_in_file_order() {
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, source_ids) = registered_records(&crm, 50);
    let line = |id: &str, extra: Value| {
        let mut line =
            json!({"unified_contact_id": id, "email": format!("person{}@example.com", &id[8..])});
        line.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        line.to_string()
    };
    let mut file = vec![
        line("contact_0", json!({"first_name": "A", "city": "One"})),
        line("contact_1", json!({"first_name": "B"})),
        line("contact_0", json!({"edit_id": "x", "first_name": "C"})),
        line("contact_0", json!({"first_name": "C", "city": "Two"})),
        // The edit id of line 3 again, in the same run: applied once.
        line("contact_2", json!({"edit_id": "x", "first_name": "Never"})),
    ];
    // Other contacts' lines between them, so that accepts run side by side.
    for n in 0..300 {
        let other = format!("contact_{}", 3 + n % 47);
        file.insert(2, line(&other, json!({"first_name": format!("F{n}")})));
    }

    let (code, report, output) = backfill(&setup, &file.join("\n"), &[]);
    assert_eq!(code, 0, "{output}\n{report}");
    assert_eq!(report["accepted"], 304, "{report}");
    assert_eq!(report["duplicates_skipped"], 1, "{report}");
    assert_eq!(report["contacts"], 49, "{report}");
    assert_eq!(
        crm.value(&source_ids[0], "first_name").as_deref(),
        Some("C")
    );
    assert_eq!(crm.value(&source_ids[0], "city").as_deref(), Some("Two"));
    assert_eq!(
        crm.value(&source_ids[1], "first_name").as_deref(),
        Some("B")
    );
    assert_eq!(
        crm.value(&source_ids[3], "first_name").as_deref(),
        Some("F0")
    );
    assert_eq!(
        crm.value(&source_ids[2], "first_name").as_deref(),
        Some("Person"),
        "the repeated edit id was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_crm_refuses_is_reported_with_its_pause_and_its_edits_stay_queued() {
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, 3);
    // Every request refused as a revoked token would be, for as long as the backfill runs.
    crm.faults().fail_next(10_000, Fault::Unauthorized);

    let (code, report, output) = backfill(&setup, &edits_file(3), &[]);
    assert_eq!(code, 1, "edits left queued make the run fail: {output}");
    assert_eq!(report["left_queued"], 3, "{report}");
    let pause = &report["paused_connections"]["hubspot"];
    assert_eq!(pause["reason"], "unauthorized", "{report}");
    assert!(
        pause["until"]
            .as_str()
            .is_some_and(|until| until.ends_with('Z')),
        "{report}"
    );
    assert!(
        output.contains("connection hubspot paused (unauthorized: "),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_by_number_and_applied_edits_are_not_applied_twice() {
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, source_ids) = registered_records(&crm, 3);
    let file = [
        json!({"unified_contact_id": "contact_0", "edit_id": "a", "email": "person0@example.com", "first_name": "Zero"}).to_string(),
        "{not json".to_string(),
        json!({"unified_contact_id": "contact_1", "email": "bad", "first_name": "One"}).to_string(),
        json!({"unified_contact_id": "nobody", "email": "x@example.com", "first_name": "X"}).to_string(),
        json!({"unified_contact_id": "contact_2", "edit_id": "c", "email": "person2@example.com", "first_name": "Two", "phone": null}).to_string(),
    ]
    .join("\n");

    let (code, report, output) = backfill(&setup, &file, &["--dry-run"]);
    assert_eq!(code, 1, "bad lines make the run fail: {output}");
    assert_eq!(report["accepted"], 2);
    assert_eq!(
        crm.contact(&source_ids[0]).unwrap()["firstname"],
        "Person",
        "a dry run changes nothing"
    );

    let (code, report, output) = backfill(&setup, &file, &[]);
    assert_eq!(code, 1, "{output}");
    let lines: Vec<u64> = report["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| failure["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4], "{report}");
    assert!(output.contains("line 3: email"), "{output}");
    assert_eq!(report["landed"], 2);
    assert_eq!(
        crm.value(&source_ids[0], "first_name").as_deref(),
        Some("Zero")
    );
    assert_eq!(
        crm.value(&source_ids[2], "first_name").as_deref(),
        Some("Two")
    );

    // The same file again: the edits with an edit_id were applied already.
    let written_before = crm.writes().written;
    let (_, report, output) = backfill(&setup, &file, &[]);
    assert_eq!(report["duplicates_skipped"], 2, "{output}");
    assert_eq!(report["accepted"], 0);
    assert_eq!(crm.writes().written, written_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_input_file_is_bad_input() {
    let setup = Setup::new("", &[]);
    let (code, _out, err) = setup.run(&["backfill", "--input", "/nonexistent/edits.jsonl"], None);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/edits.jsonl"), "{err}");
}

against_each_crm!(a_backfill_killed_midway_and_run_again_resends_at_most_what_was_in_flight);

/// A backfill without edit ids is killed with `kill -9` after some batches landed, then run
/// again on the same file: every edit the CRM already holds is confirmed without a write,
/// so at most the batch in flight at the kill is written twice.
async fn a_backfill_killed_midway_and_run_again_resends_at_most_what_was_in_flight<C: Crm>() {
    const CONTACTS: usize = 1_000;
    let crm = C::start().await;
    let (setup, source_ids) = registered_records(&crm, CONTACTS);
    // One push at a time, each slow enough to stop the run between two of them.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let system = crm.system();
    let config = config.replace(
        &format!("[connections.{system}]\n"),
        &format!("[connections.{system}]\nconcurrency = 1\n"),
    );
    std::fs::write(&setup.config, config).unwrap();
    crm.faults().set_latency(Duration::from_millis(300));
    let without_edit_ids: String = edits_file(CONTACTS)
        .lines()
        .map(|line| {
            let mut edit: Value = serde_json::from_str(line).unwrap();
            edit.as_object_mut().unwrap().remove("edit_id");
            edit.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut first = start_backfill(&setup, &without_edit_ids);
    let half = CONTACTS as u64 / 2;
    crate::harness::wait_for("half the edits to land", || async {
        (crm.writes().written >= half).then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let landed_before = crm.writes().written;
    assert!(landed_before < CONTACTS as u64, "killed midway");

    crm.faults().set_latency(Duration::ZERO);
    let (code, report, output) = backfill(&setup, &without_edit_ids, &[]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["dead_letters"], json!([]), "{report}");
    let batch = C::BATCH_LIMIT as u64;
    let written = crm.writes().written;
    assert!(
        written <= CONTACTS as u64 + batch,
        "{written} writes for {CONTACTS} edits: only the batch in flight at the kill may repeat"
    );
    for n in [0, CONTACTS / 2, CONTACTS - 1] {
        assert_eq!(
            crm.value(&source_ids[n], "first_name"),
            Some(format!("Edited {n}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_backfill_runs_beside_serving_daemons_which_push_its_edits() {
    crate::harness::on_postgres(async {
        const COUNT: usize = 300;
        let crm = <SalesforceSandbox as Crm>::start().await;
        let (setup, source_ids) = registered_records(&crm, COUNT);
        let daemons = [setup.serve(), setup.serve()];
        crate::harness::wait_for("a daemon to lead the connection", || async {
            let status = setup.run_json(&["status"]);
            status["leaders"]["salesforce"]["node"]
                .is_string()
                .then_some(())
        })
        .await;
        let (code, report, output) = backfill(&setup, &edits_file(COUNT), &[]);
        assert_eq!(code, 0, "{output}");
        assert_eq!(report["landed"], COUNT as u64, "{report}");
        assert_eq!(
            report["push_calls"], 0,
            "the leading daemon pushed: {report}"
        );
        assert_eq!(crm.writes().written, COUNT as u64, "each edit written once");
        assert_eq!(crm.writes().overlapping, 0);
        for n in [0, COUNT - 1] {
            assert_eq!(
                crm.value(&source_ids[n], "first_name"),
                Some(format!("Edited {n}"))
            );
            let contact = daemons[n % 2].contact(&format!("contact_{n}")).await;
            assert_eq!(contact["first_name"], format!("Edited {n}"));
        }
    })
    .await;
}
