//! What only HubSpot shows: a mapped property the portal lacks, and its credentials.

use serde_json::{Value, json};
use unisync_sandbox::hubspot::HubspotSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

use crate::harness::wait_for;
use crate::world::{CONTACT, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_property_the_account_lacks_pauses_the_connection_until_it_exists() {
    // `position` is sent to a property the HubSpot account does not have: every edit of it
    // would fail the same way, so the connection pauses instead of dead-lettering them.
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
    let ready = wait_for("the connection to pause as misconfigured", || async {
        let body = daemon.readiness().await;
        (body["connections"]["hubspot"]["reason"] == "misconfigured").then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "not_ready");
    let pause = &ready["connections"]["hubspot"];
    assert_eq!(pause["code"], "PROPERTY_DOESNT_EXIST");
    assert!(
        pause["message"]
            .as_str()
            .unwrap()
            .contains("no_such_property"),
        "{pause}"
    );
    let sync = daemon.sync_state(CONTACT).await;
    assert_eq!(sync["last_error"]["class"], "misconfigured");
    assert_eq!(sync["open_dead_letters"], 0);
    assert_eq!(daemon.contact(CONTACT).await["local_was_updated"], true);
    assert_eq!(world.crm_value("position").as_deref(), Some("Engineer"));

    world.crm.define_property("no_such_property");
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["position"], "CTO");
    let record = world.crm.contact(&world.source_id).unwrap();
    assert_eq!(
        record.get("no_such_property").map(String::as_str),
        Some("CTO")
    );
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(listed["dead_letters"], Value::Array(Vec::new()));
    assert_eq!(daemon.readiness().await["status"], "ready");
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
