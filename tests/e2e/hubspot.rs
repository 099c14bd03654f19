//! What only HubSpot shows: its property validation codes, and a replay once the portal
//! has the property.

use serde_json::{Value, json};
use unisync_sandbox::hubspot::HubspotSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

use crate::world::{CONTACT, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_validation_error_becomes_a_dead_letter_that_lands_when_retried_after_the_fix() {
    // `position` is sent to a property the HubSpot account does not have.
    let world = World::<HubspotSandbox>::with_connection_keys(
        "fields = { position = \"no_such_property\" }",
    )
    .await;
    let daemon = world.setup.serve();
    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": "ann@example.com", "first_name": "Ann", "position": "CTO"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let sync = daemon.wait_dead_letter(CONTACT).await;
    assert_eq!(sync["last_error"]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(sync["last_error"]["class"], "permanent");
    assert_eq!(daemon.contact(CONTACT).await["local_was_updated"], true);

    // The CLI reaches the running daemon for the dead letters.
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["error"]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(letters[0]["contact_id"], CONTACT);
    assert!(
        letters[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_such_property")
    );
    assert_eq!(world.crm_value("position").as_deref(), Some("Engineer"));

    world.crm.define_property("no_such_property");
    let letter_id = letters[0]["id"].as_str().unwrap();
    let retried = world.setup.run_json(&["dead-letters", "retry", letter_id]);
    assert_eq!(retried["retried"], json!([letter_id]));
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["position"], "CTO");
    let record = world.crm.contact(&world.source_id).unwrap();
    assert_eq!(
        record.get("no_such_property").map(String::as_str),
        Some("CTO")
    );
    assert_eq!(daemon.sync_state(CONTACT).await["open_dead_letters"], 0);
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(listed["dead_letters"], Value::Array(Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_make_the_daemon_unready_and_keep_the_edit() {
    // A private-app token cannot be refreshed: a 401 is final until an operator acts.
    let world = World::<HubspotSandbox>::new().await;
    world.crm.faults().fail_next(3, Fault::Unauthorized);
    let daemon = world.setup.serve();
    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": "ann@example.com", "first_name": "Locked Out"}),
        )
        .await;
    assert_eq!(answer.status, 200, "edits are still accepted");
    let ready = crate::harness::wait_for("the connection to pause", || async {
        let answer = daemon.send(daemon.client.get(daemon.url("/readyz"))).await;
        (answer.status == 503).then_some(answer.body)
    })
    .await;
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["connections"]["hubspot"]["reason"], "unauthorized");
    assert!(ready["connections"]["hubspot"]["code"].is_string());
    let sync = daemon.sync_state(CONTACT).await;
    assert_eq!(sync["last_error"]["class"], "unauthorized");
    assert_eq!(
        sync["open_dead_letters"], 0,
        "the edit waits; it is not dropped"
    );
    assert_eq!(daemon.contact(CONTACT).await["local_was_updated"], true);
}
