//! What unisync writes, and when it won't: only what the CRM does not hold already, and never
//! silently over what a person changed in the CRM, by the connection's `on_conflict` policy.

use serde_json::json;

use crate::crm::Crm;
use crate::harness::Daemon;
use crate::world::{ANN_EMAIL, CONTACT, World};

against_each_crm!(
    an_edit_the_crm_holds_already_makes_no_call,
    an_email_differing_only_in_case_sends_nothing,
    only_the_changed_field_of_an_edit_is_written,
    under_overwrite_ours_is_written_over_a_persons_edit,
    under_crm_wins_a_persons_edit_stays_and_reaches_the_unified_record,
    a_persons_edit_of_another_field_is_no_conflict_and_stays,
    an_edit_of_a_merged_record_follows_it_to_the_record_that_remains,
    under_hold_a_persons_edit_stays_and_the_conflict_waits_until_retry_writes_ours,
    under_hold_dropping_the_conflict_takes_the_persons_value,
);

/// Under `policy`: a person renamed Ann "Anne" in the CRM, then the edit renames her "Ours"
/// and moves her to Porto.
async fn person_and_edit_collide<C: Crm>(policy: &str) -> (World<C>, Daemon) {
    let world = World::<C>::with_connection_keys(&format!("on_conflict = \"{policy}\"")).await;
    world
        .crm
        .edit_as_person(&world.source_id, &[("first_name", "Anne")]);
    let daemon = world.setup.serve();
    put(
        &daemon,
        json!({"email": ANN_EMAIL, "first_name": "Ours", "city": "Porto"}),
    )
    .await;
    (world, daemon)
}

async fn put(daemon: &Daemon, body: serde_json::Value) {
    let answer = daemon.put_contact(CONTACT, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

async fn an_edit_the_crm_holds_already_makes_no_call<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon = world.setup.serve();
    put(
        &daemon,
        json!({"email": ANN_EMAIL, "first_name": "Ann", "last_name": "Lee", "city": "Lisbon"}),
    )
    .await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["local_was_updated"], false);
    assert_eq!(daemon.sync_state(CONTACT).await["state"], "synced");
    assert_eq!(
        world.crm.api_requests(),
        0,
        "no call for what the CRM holds"
    );
    assert_eq!(world.crm.writes().written, 0);
}

/// A CRM that stores emails in lower case (HubSpot, Salesforce) holds the edit's email
/// already and is sent nothing; one that keeps an email as sent (Dataverse) is sent the new
/// form once. Either way the unified record shows what the CRM stores.
async fn an_email_differing_only_in_case_sends_nothing<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon = world.setup.serve();
    let sent = "Ann@Example.COM";
    put(&daemon, json!({"email": sent, "first_name": "Ann"})).await;
    let synced = daemon.wait_synced(CONTACT).await;
    let stored = C::stored_email(sent);
    assert_eq!(
        synced["email"], stored,
        "the CRM's stored form is what the unified record shows"
    );
    let calls = if stored == ANN_EMAIL { 0 } else { 1 };
    assert_eq!(world.crm.api_requests(), calls);
}

async fn only_the_changed_field_of_an_edit_is_written<C: Crm>() {
    let world = World::<C>::new().await;
    // A person renamed her in the CRM; the edit repeats the name unisync last confirmed, so
    // writing it would undo the person's change: only the city may go.
    world
        .crm
        .edit_as_person(&world.source_id, &[("first_name", "Anne")]);
    let daemon = world.setup.serve();
    put(
        &daemon,
        json!({"email": ANN_EMAIL, "first_name": "Ann", "city": "Porto"}),
    )
    .await;
    daemon.wait_synced(CONTACT).await;
    assert_eq!(world.crm.writes().written, 1);
    assert_eq!(world.crm_value("city").as_deref(), Some("Porto"));
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Anne"));
}

async fn under_overwrite_ours_is_written_over_a_persons_edit<C: Crm>() {
    let world = World::<C>::new().await;
    world
        .crm
        .edit_as_person(&world.source_id, &[("first_name", "Anne")]);
    let daemon = world.setup.serve();
    put(&daemon, json!({"email": ANN_EMAIL, "first_name": "Ours"})).await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Ours");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Ours"));
}

async fn under_crm_wins_a_persons_edit_stays_and_reaches_the_unified_record<C: Crm>() {
    let (world, daemon) = person_and_edit_collide::<C>("crm_wins").await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Anne", "the person's value wins");
    assert_eq!(synced["city"], "Porto", "the other field goes through");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Anne"));
    assert_eq!(world.crm_value("city").as_deref(), Some("Porto"));
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains(&format!(
            "unisync_conflicts_total{{connection=\"{}\",policy=\"crm_wins\"}} 1",
            world.system()
        )),
        "{metrics}"
    );
}

async fn a_persons_edit_of_another_field_is_no_conflict_and_stays<C: Crm>() {
    for policy in ["overwrite", "crm_wins"] {
        let world = World::<C>::with_connection_keys(&format!("on_conflict = \"{policy}\"")).await;
        world
            .crm
            .edit_as_person(&world.source_id, &[("phone", "+1 555 0199")]);
        let daemon = world.setup.serve();
        put(&daemon, json!({"email": ANN_EMAIL, "first_name": "Ours"})).await;
        daemon.wait_synced(CONTACT).await;
        assert_eq!(
            world.crm_value("first_name").as_deref(),
            Some("Ours"),
            "{policy}"
        );
        assert_eq!(
            world.crm_value("phone").as_deref(),
            Some("+1 555 0199"),
            "{policy}: the person's phone stays"
        );
    }
}

async fn an_edit_of_a_merged_record_follows_it_to_the_record_that_remains<C: Crm>() {
    let world = World::<C>::new().await;
    let other = world.crm.create_record(&[
        ("email", "ann.lee@example.com"),
        ("first_name", "Ann"),
        ("last_name", "Lee"),
    ]);
    // A person merges the duplicate records: ours goes, the other remains.
    let survivor = world.crm.merge_records(&other, &world.source_id);
    let daemon = world.setup.serve();
    put(
        &daemon,
        json!({"email": ANN_EMAIL, "first_name": "Followed"}),
    )
    .await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["source_id"], survivor.as_str());
    assert_eq!(synced["is_active"], true);
    assert_eq!(
        world.crm.value(&survivor, "first_name").as_deref(),
        Some("Followed")
    );
    let letters = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");
    let sync = daemon.sync_state(CONTACT).await;
    assert_eq!(sync["attempts"], 0, "{sync}");
}

/// [`person_and_edit_collide`] under `hold`: answers the world, the daemon and the conflict
/// letter once the city landed.
async fn held_conflict<C: Crm>() -> (World<C>, Daemon, serde_json::Value) {
    let (world, daemon) = person_and_edit_collide::<C>("hold").await;
    let sync = daemon.wait_dead_letter(CONTACT).await;
    crate::harness::wait_for("the city to land", || async {
        (world.crm_value("city").as_deref() == Some("Porto")).then_some(())
    })
    .await;
    assert_eq!(
        world.crm_value("first_name").as_deref(),
        Some("Anne"),
        "the person's edit is kept"
    );
    assert_eq!(
        sync["fields"]["first_name"]["last_conflict"]["crm"], "Anne",
        "{sync}"
    );
    let letters = world.setup.run_json(&["dead-letters", "list"]);
    let letters = letters["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters[0].clone();
    assert_eq!(letter["kind"], "conflict", "{letter}");
    assert_eq!(
        letter["conflict"]["first_name"],
        json!({"base": "Ann", "crm": "Anne", "ours": "Ours"}),
        "{letter}"
    );
    (world, daemon, letter)
}

async fn under_hold_a_persons_edit_stays_and_the_conflict_waits_until_retry_writes_ours<C: Crm>() {
    let (world, daemon, letter) = held_conflict::<C>().await;
    let id = letter["id"].as_str().unwrap();
    world.setup.run_json(&["dead-letters", "retry", id]);
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Ours");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Ours"));
    let letters = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");
}

async fn under_hold_dropping_the_conflict_takes_the_persons_value<C: Crm>() {
    let (world, daemon, letter) = held_conflict::<C>().await;
    let id = letter["id"].as_str().unwrap();
    world.setup.run_json(&["dead-letters", "drop", id]);
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Anne");
    assert_eq!(synced["city"], "Porto");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Anne"));
}
