//! What real CRMs do to a connector and the sandboxes now do too: refuse the whole
//! connection, answer too late, apply a write whose client already gave up. Each scenario
//! ends with the CRM holding the last accepted value and nothing dead-lettered that the CRM
//! never refused.

use std::time::Duration;

use serde_json::{Value, json};
use unisync_sandbox::Fault;

use crate::crm::Crm;
use crate::harness::{Daemon, wait_for};
use crate::world::{ANN_EMAIL, CONTACT, World, rename};

against_each_crm!(
    revoked_access_pauses_the_connection_and_every_edit_lands_once_it_is_granted,
    a_write_that_timed_out_and_landed_late_never_overwrites_a_newer_value,
    a_write_left_in_flight_by_a_kill_never_lands_after_the_newer_value,
);

/// `/readyz`: its status code and body.
async fn readiness(daemon: &Daemon) -> (u16, Value) {
    let answer = daemon.send(daemon.client.get(daemon.url("/readyz"))).await;
    (answer.status, answer.body)
}

/// Waits until the contact's push is in flight (claimed and sent to the CRM).
pub async fn wait_in_flight(daemon: &Daemon, id: &str) {
    wait_for(&format!("a push of {id} in flight"), || async {
        (daemon.sync_state(id).await["state"] == "in_flight").then_some(())
    })
    .await;
}

/// Lands one edit first, so that the connection has its credentials and the next request
/// the CRM sees is the write under test (one write in the CRM's count).
pub async fn warm_up<C: Crm>(world: &World<C>, daemon: &Daemon) {
    rename(daemon, CONTACT, "Warm").await;
    daemon.wait_synced(CONTACT).await;
    assert_eq!(world.crm.writes().written, 1);
}

/// Waits until the CRM has taken `writes` contact writes, answered or not.
pub async fn wait_writes<C: Crm>(crm: &C, writes: u64) {
    wait_for(&format!("{writes} writes in the CRM"), || async {
        (crm.writes().written >= writes).then_some(())
    })
    .await;
}

async fn revoked_access_pauses_the_connection_and_every_edit_lands_once_it_is_granted<C: Crm>() {
    let world = World::<C>::new().await;
    let mut contacts = vec![(CONTACT.to_string(), ANN_EMAIL.to_string())];
    for n in 2..=5 {
        let id = format!("contact_{n}");
        let email = format!("person{n}@example.com");
        world.add_contact(
            &id,
            &[("email", &email), ("first_name", "X"), ("last_name", "Y")],
        );
        contacts.push((id, email));
    }
    world.crm.faults().set_standing(Fault::AccessRevoked);
    let daemon = world.setup.serve();
    for (id, email) in &contacts {
        let body = json!({"email": email, "first_name": format!("Granted {id}")});
        let answer = daemon.put_contact(id, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let contacts: Vec<String> = contacts.into_iter().map(|(id, _)| id).collect();
    let body = wait_for("the connection to pause as misconfigured", || async {
        let (status, body) = readiness(&daemon).await;
        let paused = body["connections"][world.system()]["reason"] == "misconfigured";
        (status == 503 && paused).then_some(body)
    })
    .await;
    let pause = &body["connections"][world.system()];
    assert_eq!(pause["code"], C::ACCESS_REVOKED_CODE, "{body}");
    assert!(
        pause["message"].as_str().is_some_and(|m| !m.is_empty()),
        "the CRM's words are shown: {body}"
    );
    let status = world.setup.run_json(&["status"]);
    assert_eq!(
        status["pauses"][world.system()]["reason"],
        "misconfigured",
        "{status}"
    );
    let letters = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(letters["dead_letters"], serde_json::json!([]), "{letters}");

    world.crm.faults().clear_standing();
    for id in &contacts {
        let synced = daemon.wait_synced(id).await;
        assert_eq!(synced["first_name"], format!("Granted {id}"));
    }
    let (status, body) = readiness(&daemon).await;
    assert_eq!(status, 200, "{body}");
    let letters = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(letters["dead_letters"], serde_json::json!([]), "{letters}");
    for id in &contacts {
        let sync = daemon.sync_state(id).await;
        assert_eq!(sync["attempts"], 0, "{sync}");
    }
    assert_eq!(
        world.crm_value("first_name").as_deref(),
        Some(format!("Granted {CONTACT}").as_str())
    );
}

async fn a_write_that_timed_out_and_landed_late_never_overwrites_a_newer_value<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon = world.setup.serve();
    warm_up(&world, &daemon).await;
    // Slower than the connection's 3 s request timeout: the daemon gives up on the request,
    // and the CRM applies it anyway when it gets to it.
    world.crm.faults().set_latency(Duration::from_secs(4));
    rename(&daemon, CONTACT, "Stale").await;
    wait_in_flight(&daemon, CONTACT).await;
    world.crm.faults().set_latency(Duration::ZERO);
    rename(&daemon, CONTACT, "Fresh").await;

    wait_writes(&world.crm, 3).await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Fresh");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Fresh"));
}

async fn a_write_left_in_flight_by_a_kill_never_lands_after_the_newer_value<C: Crm>() {
    let world = World::<C>::new().await;
    let mut daemon = world.setup.serve();
    warm_up(&world, &daemon).await;
    // Slower than the configured recovery grace (500 ms), within the request timeout (3 s).
    world.crm.faults().set_latency(Duration::from_millis(2500));
    rename(&daemon, CONTACT, "Stale").await;
    wait_in_flight(&daemon, CONTACT).await;
    rename(&daemon, CONTACT, "Fresh").await;
    daemon.kill_hard();
    world.crm.faults().set_latency(Duration::ZERO);

    let daemon = world.setup.serve();
    wait_writes(&world.crm, 3).await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Fresh");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Fresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_queued_for_a_renamed_connection_are_named_by_config_check_and_status() {
    use unisync_hubspot::sandbox::HubspotSandbox;
    use unisync_sandbox::SandboxCrm;
    let world = World::<HubspotSandbox>::new().await;
    world.crm.faults().set_standing(Fault::AccessRevoked);
    let mut daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Waiting").await;
    wait_for("the edit to be refused", || async {
        let (status, _) = readiness(&daemon).await;
        (status == 503).then_some(())
    })
    .await;
    daemon.stop();

    let config = std::fs::read_to_string(&world.setup.config).unwrap();
    let renamed = config.replace("[connections.hubspot]", "[connections.hubspot_eu]");
    std::fs::write(&world.setup.config, renamed).unwrap();
    let (code, out, err) = world.setup.run(&["config", "check"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning") && out.contains("connection `hubspot`"),
        "{out}"
    );
    let status = world.setup.run_json(&["status"]);
    assert_eq!(
        status["unconfigured"],
        serde_json::json!(["hubspot"]),
        "{status}"
    );
    // Queued again after the refusal: waiting for its retry.
    let queued = &status["connections"]["hubspot"];
    assert_eq!(
        queued["ready"].as_u64().unwrap() + queued["retry_waiting"].as_u64().unwrap(),
        1,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_connection_keeps_its_edits_and_pushes_them_once_enabled() {
    use unisync_hubspot::sandbox::HubspotSandbox;
    let world = World::<HubspotSandbox>::with_connection_keys("enabled = false").await;
    let mut daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Kept").await;
    let (status, body) = readiness(&daemon).await;
    assert_eq!(status, 200, "disabled by choice is no fault: {body}");
    assert_eq!(body["connections"]["hubspot"]["state"], "disabled");
    let status = world.setup.run_json(&["status"]);
    assert_eq!(
        status["disabled"],
        serde_json::json!(["hubspot"]),
        "{status}"
    );
    // Queued again after the refusal: waiting for its retry.
    let queued = &status["connections"]["hubspot"];
    assert_eq!(
        queued["ready"].as_u64().unwrap() + queued["retry_waiting"].as_u64().unwrap(),
        1,
        "{status}"
    );
    daemon.stop();
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Ann"));

    let config = std::fs::read_to_string(&world.setup.config).unwrap();
    std::fs::write(
        &world.setup.config,
        config.replace("enabled = false", "enabled = true"),
    )
    .unwrap();
    let daemon = world.setup.serve();
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Kept");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Kept"));
}
