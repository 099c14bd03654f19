//! What only HubSpot shows: a mapped property the portal lacks, and its credentials.

use serde_json::{Value, json};
use unisync_hubspot::sandbox::HubspotSandbox;
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

/// Renames `contact_1` and links it to the customer `cust_1`, HubSpot company `company`.
async fn rename_and_link(world: &World<HubspotSandbox>, company: &str) -> crate::harness::Daemon {
    world.setup.import(
        "customers",
        &[json!({"id": "cust_1", "source_system": "hubspot", "source_id": company})],
    );
    let daemon = world.setup.serve();
    let body = json!({"email": "ann@example.com", "first_name": "Linked", "unified_customer_id": "cust_1"});
    let answer = daemon.put_contact(CONTACT, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_company_link_is_retried_alone_after_the_fields_landed() {
    let world = World::<HubspotSandbox>::new().await;
    let company = world.crm.create_company("Northwind Traders");
    world
        .crm
        .association_faults()
        .fail_next(2, Fault::ServerError(503));
    let daemon = rename_and_link(&world, &company).await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Linked");
    assert_eq!(synced["source_system_customer_id"], company);
    assert_eq!(world.crm.company_ids_of(&world.source_id), [company]);
    assert_eq!(
        world.crm.stats().contacts_written,
        1,
        "the landed fields were not sent again with the link's retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_company_link_is_a_dead_letter_of_the_link_alone() {
    let world = World::<HubspotSandbox>::new().await;
    // Registered as a customer, but HubSpot has no such company.
    let daemon = rename_and_link(&world, "999999999").await;
    let sync = daemon.wait_dead_letter(CONTACT).await;
    assert_eq!(sync["in_flight"], Value::Null, "{sync}");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Linked"));
    let letters = world.setup.run_json(&["dead-letters", "list"]);
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["patch"],
        json!({"unified_customer_id": "cust_1"}),
        "only the link is kept; the name landed"
    );
    let contact = daemon.contact(CONTACT).await;
    assert_eq!(contact["first_name"], "Linked");
    assert_eq!(
        contact["is_active"], true,
        "the contact is there; the company is not"
    );
    assert_eq!(letters[0]["error"]["field"], "unified_customer_id");
}
