//! What only Salesforce shows: sessions the org ends at its pleasure.

use std::time::Duration;

use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_sandbox::SandboxCrm;

use crate::crm::Crm;
use crate::harness::{Daemon, wait_for};
use crate::world::{ANN, CONTACT, World, rename};

/// Puts a new first name, `{prefix} {contact}`, on every contact.
async fn rename_all(daemon: &Daemon, contacts: &[String], prefix: &str) {
    for id in contacts {
        rename(daemon, id, &format!("{prefix} {id}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_while_edits_are_pushed_do_not_lose_an_edit() {
    let world = World::<SalesforceSandbox>::new().await;
    let mut contacts = vec![CONTACT.to_string()];
    for n in 2..=6 {
        let id = format!("contact_{n}");
        world.add_contact(&id, &ANN);
        contacts.push(id);
    }
    // Slow answers keep pushes in flight while the sessions end.
    world.crm.faults().set_latency(Duration::from_millis(200));
    let daemon = world.setup.serve();
    rename_all(&daemon, &contacts, "Before").await;
    // Once one edit has landed a session is in use; the others may still be on their way.
    daemon.wait_synced(CONTACT).await;
    let token_requests = world.crm.token_requests();
    world.crm.invalidate_sessions();
    // These edits go out on the ended session at the latest.
    rename_all(&daemon, &contacts, "After").await;

    for id in &contacts {
        let synced = daemon.wait_synced(id).await;
        assert_eq!(synced["first_name"], format!("After {id}"));
        let source_id = synced["source_id"].as_str().unwrap();
        assert_eq!(
            world.crm.value(source_id, "first_name"),
            Some(format!("After {id}"))
        );
    }
    assert!(
        world.crm.token_requests() > token_requests,
        "a new session was opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_of_the_daily_budget_is_left_to_the_orgs_other_integrations() {
    let world = World::<SalesforceSandbox>::new().await;
    world.crm.set_daily_limit(1_000);
    world.crm.set_api_usage(880);
    let daemon = world.setup.serve();
    // The first push learns the budget (two requests: 882 of 1,000 used, under the 90 % line).
    rename(&daemon, CONTACT, "First").await;
    daemon.wait_synced(CONTACT).await;
    world.crm.set_api_usage(950);
    let other = world.add_contact(
        "contact_2",
        &[
            ("email", "bo@example.com"),
            ("first_name", "Bo"),
            ("last_name", "Li"),
        ],
    );
    // Another integration spends the budget meanwhile; the next answer reports it.
    rename(&daemon, CONTACT, "Second").await;
    let ready = wait_for("the connection to stop at the reserve", || async {
        let body = daemon.readiness().await;
        let pause = &body["connections"]["salesforce"];
        (pause["code"] == "BUDGET_RESERVE").then_some(body)
    })
    .await;
    assert_eq!(
        ready["connections"]["salesforce"]["reason"],
        "quota_exhausted"
    );
    let requests = world.crm.stats().requests;
    let answer = daemon
        .put_contact(
            "contact_2",
            &serde_json::json!({"email": "bo@example.com", "first_name": "Held back"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let status = world.setup.run_json(&["status"]);
    assert_eq!(
        status["pauses"]["salesforce"]["code"], "BUDGET_RESERVE",
        "{status}"
    );
    let held = daemon.sync_state("contact_2").await;
    assert_eq!(held["state"], "pending", "{held}");
    assert_eq!(
        world.crm.stats().requests,
        requests,
        "nothing more is spent of the reserve"
    );
    assert_eq!(world.crm.value(&other, "first_name").as_deref(), Some("Bo"));
}
