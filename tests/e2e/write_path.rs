//! The write path against each sandbox CRM: accept, persist, push, reconcile, and what the
//! operator sees and does when the CRM refuses or limits.
//!
//! Each scenario is one generic function; `against_each_crm!` turns it into one test per
//! CRM (`scenario::hubspot`, `scenario::salesforce`).

use std::time::Duration;

use serde_json::{Value, json};
use unisync_sandbox::Fault;

use crate::crm::Crm;
use crate::harness::{Daemon, TOKEN, wait_for};
use crate::world::{CONTACT, World, rename};

against_each_crm!(
    partial_put_changes_only_its_fields_and_null_clears,
    rejected_requests_answer_the_documented_errors_and_change_nothing,
    rapid_puts_to_one_contact_leave_the_last_values_without_overlapping_pushes,
    an_edit_acknowledged_before_a_kill_reaches_the_crm_after_restart,
    rate_limits_and_outages_are_retried_until_the_edit_lands,
    sigterm_lets_the_push_in_flight_finish,
    health_and_readiness_answer,
    a_spent_daily_budget_pauses_the_connection_as_quota_exhausted,
    a_short_window_rate_limit_is_no_quota_exhaustion_and_the_edit_lands,
    unified_customer_id_links_and_unlinks_the_crm_customer,
    contacts_pull_registers_every_crm_record_once,
    an_edit_of_a_deleted_record_is_a_dead_letter_and_dropping_it_restores_the_crm_values,
    every_acknowledged_edit_survives_repeated_kills,
    concurrent_edits_answered_200_survive_a_kill_mid_stream,
);

const SEED_FIELDS: [&str; 27] = [
    "id",
    "source_system",
    "source_system_img_url",
    "source_id",
    "external_system_provider_id",
    "external_system_config_id",
    "external_system_data",
    "supporting_data_definition_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "mobile_phone",
    "fax",
    "address",
    "city",
    "country",
    "state",
    "zip",
    "position",
    "is_primary",
    "unified_customer_id",
    "source_system_customer_id",
    "local_was_deleted",
    "local_was_updated",
    "source_data_created_at",
    "is_active",
];

async fn partial_put_changes_only_its_fields_and_null_clears<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon = world.setup.serve();
    let before = world.crm.record(&world.source_id);

    let sent_email = "Ann.New@Example.COM";
    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": sent_email, "first_name": "Annie"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let data = &answer.body["data"];
    let keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in SEED_FIELDS {
        assert!(keys.contains(&field), "response lacks {field}");
    }
    assert_eq!(keys.len(), SEED_FIELDS.len(), "{keys:?}");
    assert_eq!(data["local_was_updated"], true);
    assert_eq!(data["first_name"], "Annie");
    assert_eq!(data["phone"], "+1 555 0100", "absent fields are unchanged");
    assert_eq!(
        data["external_system_data"],
        json!({"custom_field": "value"})
    );

    let synced = daemon.wait_synced(CONTACT).await;
    let stored_email = C::stored_email(sent_email);
    assert_eq!(
        synced["email"], stored_email,
        "the CRM's normalised email is reconciled"
    );
    let after = world.crm.record(&world.source_id);
    assert_eq!(after["email"].as_deref(), Some(stored_email.as_str()));
    assert_eq!(after["first_name"].as_deref(), Some("Annie"));
    for (field, value) in &before {
        if !["email", "first_name"].contains(field) {
            assert_eq!(&after[field], value, "{field} must not change");
        }
    }

    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": stored_email, "first_name": "Annie", "phone": null}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["data"]["phone"], Value::Null);
    daemon.wait_synced(CONTACT).await;
    assert_eq!(world.crm_value("phone"), None, "null clears phone");
    assert_eq!(world.crm_value("city").as_deref(), Some("Lisbon"));

    let answer = daemon
        .put_contact(
            CONTACT,
            &json!({"email": stored_email, "first_name": "Annie",
                    "position": "CTO", "mobile_phone": "+351 900 000 000"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    daemon.wait_synced(CONTACT).await;
    assert_eq!(world.crm_value("position").as_deref(), Some("CTO"));
    assert_eq!(
        world.crm_value("mobile_phone").as_deref(),
        Some("+351 900 000 000")
    );
    let sync = daemon.sync_state(CONTACT).await;
    assert_eq!(sync["state"], "synced");
    assert!(sync["last_confirmed_at"].is_string());
}

async fn rejected_requests_answer_the_documented_errors_and_change_nothing<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon = world.setup.serve();
    let url = daemon.url(&format!("/api/v1/unified/contact/{CONTACT}"));
    let good = json!({"email": "x@example.com", "first_name": "X"});
    let before_crm = world.crm.crm_record(&world.source_id);
    let before = daemon.contact(CONTACT).await;

    let no_token = daemon.send(daemon.client.put(&url).json(&good)).await;
    let wrong_token = daemon
        .send(daemon.client.put(&url).bearer_auth("nope").json(&good))
        .await;
    for answer in [&no_token, &wrong_token] {
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["error"]["code"], "unauthorized");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    let unknown = daemon.put_contact("contact_404", &good).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"]["code"], "not_found");

    let json_body = |body: String| {
        daemon
            .client
            .put(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    let malformed = daemon.send(json_body("{\"email\": ".to_string())).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.body["error"]["code"], "malformed_json");

    let too_large = daemon
        .send(json_body(format!(
            "{{\"email\": \"{}@example.com\", \"first_name\": \"X\"}}",
            "a".repeat(8000)
        )))
        .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.body["error"]["code"], "payload_too_large");

    let not_json = daemon
        .send(
            daemon
                .client
                .put(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "text/plain")
                .body(good.to_string()),
        )
        .await;
    assert_eq!(not_json.status, 415);
    assert_eq!(not_json.body["error"]["code"], "unsupported_media_type");

    let mut invalid = vec![
        (json!({"first_name": "X"}), "email", "required"),
        (
            json!({"email": "not-an-email", "first_name": "X"}),
            "email",
            "invalid_email",
        ),
        (
            json!({"email": "x@example.com", "first_name": ""}),
            "first_name",
            "empty",
        ),
        (
            json!({"email": "x@example.com", "first_name": "X", "firstname": "Y"}),
            "firstname",
            "unknown_field",
        ),
    ];
    // A field the CRM cannot leave empty is refused at the API, not dead-lettered later.
    for field in C::REQUIRED_FIELDS {
        let mut body = good.clone();
        body[*field] = Value::Null;
        invalid.push((body, field, "required_by_crm"));
    }
    for (body, field, code) in invalid {
        let answer = daemon.put_contact(CONTACT, &body).await;
        assert_eq!(answer.status, 422, "{body}");
        let error = &answer.body["error"];
        assert_eq!(error["code"], "validation_failed");
        assert!(error["message"].is_string());
        let details = error["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["field"] == field && d["code"] == code),
            "{body}: {details:?}"
        );
    }

    assert_eq!(
        daemon.contact(CONTACT).await,
        before,
        "the record is unchanged"
    );
    let sync = daemon.sync_state(CONTACT).await;
    assert_eq!(sync["state"], "synced");
    assert_eq!(sync["pending"], Value::Null);
    assert_eq!(
        world.crm.crm_record(&world.source_id),
        before_crm,
        "nothing reached the CRM"
    );
}

async fn rapid_puts_to_one_contact_leave_the_last_values_without_overlapping_pushes<C: Crm>() {
    let world = World::<C>::new().await;
    // Overlapping writes only show while the CRM is still answering the first one.
    world.crm.faults().set_latency(Duration::from_millis(20));
    let daemon = world.setup.serve();
    for n in 0..50 {
        let answer = daemon
            .put_contact(
                CONTACT,
                &json!({"email": format!("ann{n}@example.com"), "first_name": format!("Ann {n}"), "city": format!("City {n}")}),
            )
            .await;
        assert_eq!(answer.status, 200);
    }
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Ann 49");
    let record = world.crm.record(&world.source_id);
    assert_eq!(record["first_name"].as_deref(), Some("Ann 49"));
    assert_eq!(record["email"].as_deref(), Some("ann49@example.com"));
    assert_eq!(record["city"].as_deref(), Some("City 49"));
    let writes = world.crm.writes();
    assert_eq!(
        writes.overlapping, 0,
        "pushes for one contact never overlap"
    );
    assert!(
        writes.written < 50,
        "pending edits are coalesced: {}",
        writes.written
    );
}

async fn an_edit_acknowledged_before_a_kill_reaches_the_crm_after_restart<C: Crm>() {
    let world = World::<C>::new().await;
    // The CRM is slow, so the push is in flight (or still queued) when the daemon dies.
    world.crm.faults().set_latency(Duration::from_secs(2));
    let mut daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Survivor").await;
    daemon.kill_hard();
    assert_eq!(
        world.crm_value("first_name").as_deref(),
        Some("Ann"),
        "not pushed before the kill"
    );

    world.crm.faults().set_latency(Duration::ZERO);
    let daemon = world.setup.serve();
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Survivor");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Survivor"));
}

async fn rate_limits_and_outages_are_retried_until_the_edit_lands<C: Crm>() {
    let world = World::<C>::new().await;
    let faults = world.crm.faults();
    faults.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    faults.fail_next(4, Fault::ServerError(503));
    faults.fail_next(1, Fault::ServerError(502));
    let daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Persistent").await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Persistent");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Persistent"));
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(listed["dead_letters"], json!([]));
}

async fn sigterm_lets_the_push_in_flight_finish<C: Crm>() {
    let world = World::<C>::new().await;
    world.crm.faults().set_latency(Duration::from_millis(500));
    let mut daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Graceful").await;
    wait_for("the push to start", || async {
        (daemon.sync_state(CONTACT).await["state"] == "in_flight").then_some(())
    })
    .await;
    daemon.stop();
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Graceful"));
    let status = world.setup.run_json(&["status"]);
    assert_eq!(
        status["connections"][world.system()]["in_flight"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{status}"
    );
}

async fn health_and_readiness_answer<C: Crm>() {
    let world = World::<C>::new().await;
    let daemon: Daemon = world.setup.serve();
    let health = daemon.send(daemon.client.get(daemon.url("/healthz"))).await;
    assert_eq!(health.status, 200);
    let ready = daemon.send(daemon.client.get(daemon.url("/readyz"))).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["connections"][world.system()]["state"], "ok");
    let metrics = daemon.metrics().await;
    let queue_ready = format!("unisync_queue_ready{{connection=\"{}\"}} 0", world.system());
    assert!(metrics.contains(&queue_ready), "{metrics}");

    // Once an edit landed: what it cost, and how long the (empty) queue takes to drain.
    rename(&daemon, CONTACT, "Measured").await;
    daemon.wait_synced(CONTACT).await;
    let metrics = daemon.metrics().await;
    let labels = format!("{{connection=\"{}\"}}", world.system());
    for family in [
        "unisync_calls_per_landed_edit",
        "unisync_queue_drain_seconds",
    ] {
        let line = metrics
            .lines()
            .find(|line| line.starts_with(&format!("{family}{labels}")))
            .unwrap_or_else(|| panic!("no {family}: {metrics}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{line}");
    }
    assert!(
        metrics.contains(&format!("unisync_queue_drain_seconds{labels} 0")),
        "{metrics}"
    );
}

async fn a_spent_daily_budget_pauses_the_connection_as_quota_exhausted<C: Crm>() {
    let world = World::<C>::new().await;
    world.crm.faults().fail_next(1, Fault::DailyLimit);
    let daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Tomorrow").await;
    let system = world.system();
    let connection = wait_for("the connection to pause", || async {
        let connection = daemon.readiness().await["connections"][system].clone();
        (connection["state"] == "paused").then_some(connection)
    })
    .await;
    assert_eq!(connection["reason"], "quota_exhausted", "{connection}");
    assert!(connection["until"].is_string(), "{connection}");

    // `status` is answered by the running daemon, which knows its pauses.
    let status = world.setup.run_json(&["status"]);
    assert_eq!(
        status["pauses"][system]["reason"], "quota_exhausted",
        "{status}"
    );
    assert_eq!(daemon.contact(CONTACT).await["local_was_updated"], true);
    assert_eq!(
        daemon.sync_state(CONTACT).await["state"],
        "pending",
        "the edit waits for the reset"
    );
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Ann"));
}

async fn a_short_window_rate_limit_is_no_quota_exhaustion_and_the_edit_lands<C: Crm>() {
    let world = World::<C>::new().await;
    world.crm.faults().fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    let daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Patient").await;
    let system = world.system();
    let synced = wait_for("the edit to land", || async {
        let connection = daemon.readiness().await["connections"][system].clone();
        assert_ne!(connection["reason"], "quota_exhausted", "{connection}");
        let contact = daemon.contact(CONTACT).await;
        (contact["local_was_updated"] == false).then_some(contact)
    })
    .await;
    assert_eq!(synced["first_name"], "Patient");
    let status = world.setup.run_json(&["status"]);
    assert_ne!(status["pauses"][system]["reason"], "quota_exhausted");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Patient"));
}

async fn unified_customer_id_links_and_unlinks_the_crm_customer<C: Crm>() {
    let world = World::<C>::new().await;
    let customer_source_id = world.crm.create_customer("Northwind Traders");
    world.setup.import(
        "customers",
        &[
            json!({"id": "cust_1", "source_system": world.system(), "source_id": customer_source_id}),
            json!({"id": "cust_elsewhere", "source_system": "pipedrive", "source_id": "42"}),
        ],
    );
    let daemon = world.setup.serve();
    let before = daemon.contact(CONTACT).await;

    let link_to = |customer_id: Option<&str>| {
        json!({"email": "ann@example.com", "first_name": "Ann",
               "unified_customer_id": customer_id})
    };
    for (customer_id, code) in [
        ("cust_404", "unknown_customer"),
        ("cust_elsewhere", "customer_in_other_system"),
    ] {
        let refused = daemon
            .put_contact(CONTACT, &link_to(Some(customer_id)))
            .await;
        assert_eq!(refused.status, 422, "{}", refused.body);
        let details = refused.body["error"]["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d["field"] == "unified_customer_id" && d["code"] == code),
            "{customer_id}: {details:?}"
        );
    }
    assert_eq!(daemon.contact(CONTACT).await, before, "nothing changed");

    let answer = daemon.put_contact(CONTACT, &link_to(Some("cust_1"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["data"]["unified_customer_id"], "cust_1");
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["unified_customer_id"], "cust_1");
    assert_eq!(synced["source_system_customer_id"], customer_source_id);
    assert_eq!(
        world.crm.customer_links(&world.source_id),
        vec![customer_source_id]
    );

    let answer = daemon.put_contact(CONTACT, &link_to(None)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["unified_customer_id"], Value::Null);
    assert_eq!(synced["source_system_customer_id"], Value::Null);
    assert_eq!(
        world.crm.customer_links(&world.source_id),
        Vec::<String>::new(),
        "null unlinks"
    );
}

async fn contacts_pull_registers_every_crm_record_once<C: Crm>() {
    let world = World::<C>::new().await;
    let unregistered: Vec<String> = ["Bea", "Cai", "Dov"]
        .iter()
        .map(|name| {
            let email = format!("{}@example.com", name.to_lowercase());
            world.crm.create_record(&[
                ("email", &email),
                ("first_name", name),
                ("last_name", "Pulled"),
            ])
        })
        .collect();
    let system = world.system();
    let pull = |expected: &str| {
        let (code, out, err) = world
            .setup
            .run(&["contacts", "pull", "--connection", system], None);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.contains(expected), "{out}");
    };
    // contact_1 is already registered by its source id: it is updated, not registered again.
    pull("3 registered, 1 updated");
    pull("0 registered, 4 updated");

    let daemon = world.setup.serve();
    for source_id in &unregistered {
        let contact = daemon.contact(&format!("{system}_{source_id}")).await;
        assert_eq!(contact["source_id"], *source_id);
        assert_eq!(contact["source_system"], system);
        assert_eq!(contact["external_system_config_id"], system);
        assert_eq!(contact["last_name"], "Pulled");
        assert_eq!(contact["is_active"], true);
    }
    let registered = daemon.contact(CONTACT).await;
    assert_eq!(registered["source_id"], world.source_id);
    assert_eq!(registered["first_name"], "Ann");
    let twin = daemon
        .get(&format!(
            "/api/v1/unified/contact/{system}_{}",
            world.source_id
        ))
        .await;
    assert_eq!(twin.status, 404, "contact_1 is registered once");

    // With the daemon holding the store, the command asks the daemon to pull.
    let late = world.crm.create_record(&[
        ("email", "eve@example.com"),
        ("first_name", "Eve"),
        ("last_name", "Late"),
    ]);
    pull("1 registered, 4 updated");
    assert_eq!(
        daemon.contact(&format!("{system}_{late}")).await["first_name"],
        "Eve"
    );
}

async fn an_edit_of_a_deleted_record_is_a_dead_letter_and_dropping_it_restores_the_crm_values<
    C: Crm,
>() {
    let world = World::<C>::new().await;
    world.crm.delete_record(&world.source_id);
    let daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Ghost").await;
    let sync = daemon.wait_dead_letter(CONTACT).await;
    assert_eq!(sync["last_error"]["code"], C::DELETED_RECORD_CODE, "{sync}");
    assert_eq!(sync["last_error"]["class"], "record_gone");
    let contact = daemon.contact(CONTACT).await;
    assert_eq!(contact["is_active"], false);
    assert_eq!(contact["first_name"], "Ghost");

    let listed = world.setup.run_json(&["dead-letters", "list"]);
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{listed}");
    assert_eq!(letters[0]["contact_id"], CONTACT);
    assert_eq!(letters[0]["error"]["code"], C::DELETED_RECORD_CODE);
    let letter_id = letters[0]["id"].as_str().unwrap();

    let dropped = world.setup.run_json(&["dead-letters", "drop", letter_id]);
    assert_eq!(dropped["dropped"], json!([letter_id]));
    let contact = daemon.contact(CONTACT).await;
    assert_eq!(contact["first_name"], "Ann", "the CRM's value is back");
    assert_eq!(contact["local_was_updated"], false);
    let listed = world.setup.run_json(&["dead-letters", "list"]);
    assert_eq!(listed["dead_letters"], json!([]));
}

/// Rounds of edits to several contacts, each round ended by `kill -9` right after a 200 (with
/// pushes still in flight, the CRM being slow): after a last restart, every contact holds the
/// last value it was acknowledged with, and no two pushes for one contact ever overlapped.
async fn every_acknowledged_edit_survives_repeated_kills<C: Crm>() {
    const CONTACTS: usize = 6;
    let world = World::<C>::new().await;
    let mut ids = vec![CONTACT.to_string()];
    let mut source_ids = vec![world.source_id.clone()];
    for n in 1..CONTACTS {
        let id = format!("crash_{n}");
        let email = format!("crash{n}@example.com");
        source_ids.push(world.add_contact(
            &id,
            &[
                ("email", &email),
                ("first_name", "Start"),
                ("last_name", "Crash"),
            ],
        ));
        ids.push(id);
    }
    world.crm.faults().set_latency(Duration::from_millis(40));
    let mut acknowledged: Vec<Option<String>> = vec![None; CONTACTS];
    for (round, edits_before_kill) in [7usize, 12, 5].into_iter().enumerate() {
        let mut daemon = world.setup.serve();
        for k in 0..edits_before_kill {
            let n = (k * 5 + round) % CONTACTS;
            let name = format!("Round {round} edit {k}");
            let email = if n == 0 {
                "ann@example.com".to_string()
            } else {
                format!("crash{n}@example.com")
            };
            let answer = daemon
                .put_contact(&ids[n], &json!({"email": email, "first_name": name}))
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            acknowledged[n] = Some(name);
        }
        daemon.kill_hard();
    }
    world.crm.faults().set_latency(Duration::ZERO);
    let daemon = world.setup.serve();
    for (n, id) in ids.iter().enumerate() {
        let synced = daemon.wait_synced(id).await;
        if let Some(name) = &acknowledged[n] {
            assert_eq!(synced["first_name"], *name, "{id}");
            assert_eq!(
                world.crm.value(&source_ids[n], "first_name").as_ref(),
                Some(name),
                "{id} in the CRM"
            );
        }
    }
    assert_eq!(world.crm.writes().overlapping, 0);
}

/// Clients PUT edits to their own contacts all at once, so the accept writer takes them in
/// batches; `kill -9` lands while requests are in flight. After a restart every contact
/// holds the last edit it was answered 200 for, or a later one (applied and flushed, its
/// answer cut off by the kill): an answer is never ahead of the disk.
async fn concurrent_edits_answered_200_survive_a_kill_mid_stream<C: Crm>() {
    const CLIENTS: usize = 12;
    let world = World::<C>::new().await;
    let ids: Vec<String> = (0..CLIENTS)
        .map(|n| {
            let id = format!("burst_{n}");
            let email = format!("burst{n}@example.com");
            world.add_contact(
                &id,
                &[
                    ("email", &email),
                    ("first_name", "Start"),
                    ("last_name", "Burst"),
                ],
            );
            id
        })
        .collect();
    world.crm.faults().set_latency(Duration::from_millis(40));
    let mut daemon = world.setup.serve();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(vec![None::<usize>; CLIENTS]));
    let clients: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let (client, url) = (daemon.client.clone(), daemon.url(&format!("/api/v1/unified/contact/{id}")));
            let answered = answered.clone();
            tokio::spawn(async move {
                for k in 0.. {
                    let body = json!({"email": format!("burst{n}@example.com"), "first_name": format!("edit {k}")});
                    let sent = client.put(&url).bearer_auth(TOKEN).json(&body).send().await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            answered.lock().unwrap()[n] = Some(k)
                        }
                        // The kill: what was not answered proves nothing.
                        _ => break,
                    }
                }
            })
        })
        .collect();
    wait_for("200 answered edits", || async {
        let total: usize = answered
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|k| k + 1)
            .sum();
        (total >= 200).then_some(())
    })
    .await;
    daemon.kill_hard();
    for client in clients {
        client.await.unwrap();
    }
    world.crm.faults().set_latency(Duration::ZERO);
    let daemon = world.setup.serve();
    let answered = answered.lock().unwrap().clone();
    for (n, id) in ids.iter().enumerate() {
        let stored = daemon.contact(id).await["first_name"]
            .as_str()
            .unwrap()
            .to_string();
        let stored_k: Option<usize> = stored.strip_prefix("edit ").and_then(|k| k.parse().ok());
        assert!(
            stored_k >= answered[n],
            "{id}: answered 200 for edit {:?}, the store holds {stored}",
            answered[n]
        );
    }
}
