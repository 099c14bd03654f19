//! Replaying dead letters after newer edits: a replay never puts an older value back into the
//! CRM, and says what it left out.

use serde_json::{Value, json};
use unisync_sandbox::Fault;

use crate::crm::Crm;
use crate::harness::{Daemon, wait_for};
use crate::world::{CONTACT, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot() {
    a_replay_after_a_newer_edit_keeps_the_newer_values::<unisync_hubspot::sandbox::HubspotSandbox>(
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce() {
    a_replay_after_a_newer_edit_keeps_the_newer_values::<
        unisync_salesforce::sandbox::SalesforceSandbox,
    >()
    .await;
}

async fn a_replay_after_a_newer_edit_keeps_the_newer_values<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon = world.setup.serve();
    let letter = dead_letter_of(
        &world,
        &daemon,
        json!({"email": "ann@example.com", "first_name": "Refused", "city": "Porto"}),
    )
    .await;
    put_and_land(&world, &daemon, "Newer").await;

    // `retry --all` replays only the city: the newer name (and email) stay.
    let replayed = world.setup.run_json(&["dead-letters", "retry", "--all"]);
    assert_eq!(replayed["retried"], json!([letter]), "{replayed}");
    assert_eq!(replayed["superseded"], json!([]));
    assert_eq!(
        replayed["dropped_fields"][&letter],
        json!(["email", "first_name"])
    );
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Newer");
    assert_eq!(synced["city"], "Porto");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Newer"));
    assert_eq!(world.crm_value("city").as_deref(), Some("Porto"));

    // A letter every field of which was accepted again is resolved as superseded.
    let letter = dead_letter_of(
        &world,
        &daemon,
        json!({"email": "ann@example.com", "first_name": "Refused again"}),
    )
    .await;
    put_and_land(&world, &daemon, "Final").await;
    let replayed = world.setup.run_json(&["dead-letters", "retry", &letter]);
    assert_eq!(replayed["retried"], json!([]), "{replayed}");
    assert_eq!(replayed["superseded"], json!([letter]));
    assert_eq!(
        replayed["dropped_fields"][&letter],
        json!(["email", "first_name"])
    );
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Final");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Final"));
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(listed["dead_letters"], Value::Array(Vec::new()));
}

/// Sends `body` while the CRM fails every request, until its attempts run out; answers the
/// dead letter's id.
pub async fn dead_letter_of<C: Crm>(world: &World<C>, daemon: &Daemon, body: Value) -> String {
    world.crm.faults().set_standing(Fault::ServerError(503));
    let answer = daemon.put_contact(CONTACT, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sync = daemon.wait_dead_letter(CONTACT).await;
    assert_eq!(sync["last_error"]["class"], "retries_exhausted", "{sync}");
    world.crm.faults().clear_standing();
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    listed["dead_letters"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A newer first name, accepted and landed in the CRM (the open letter keeps the record
/// marked as not synced).
async fn put_and_land<C: Crm>(world: &World<C>, daemon: &Daemon, first_name: &str) {
    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": "ann@example.com", "first_name": first_name}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for("the newer edit to land", || async {
        (world.crm_value("first_name").as_deref() == Some(first_name)).then_some(())
    })
    .await;
}
