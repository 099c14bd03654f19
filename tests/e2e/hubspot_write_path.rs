//! The write path against the HubSpot sandbox: accept, persist, push, reconcile.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use unisync_sandbox::hubspot::HubspotSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

use crate::harness::{Daemon, Setup, TOKEN, wait_for};

async fn sandbox() -> HubspotSandbox {
    HubspotSandbox::start(SocketAddr::from(([127, 0, 0, 1], 0)), 0)
        .await
        .expect("start the HubSpot sandbox")
}

/// A daemon with one HubSpot connection pointed at `crm`, and one registered contact
/// `contact_1` whose HubSpot record holds a full set of properties.
struct World {
    crm: HubspotSandbox,
    setup: Setup,
    source_id: String,
}

impl World {
    async fn new(extra_connection_keys: &str) -> World {
        let crm = sandbox().await;
        let source_id = crm.create_contact(&[
            ("email", "ann@example.com"),
            ("firstname", "Ann"),
            ("lastname", "Lee"),
            ("phone", "+1 555 0100"),
            ("mobilephone", "+1 555 0101"),
            ("city", "Lisbon"),
            ("jobtitle", "Engineer"),
        ]);
        let setup = Setup::new(
            &format!(
                "[connections.hubspot]\nsystem = \"hubspot\"\nbase_url = \"{}\"\naccess_token_env = \"E2E_HUBSPOT_TOKEN\"\n{extra_connection_keys}\n",
                crm.base_url()
            ),
            &[("E2E_HUBSPOT_TOKEN", &crm.access_token())],
        );
        setup.import_contacts(&[json!({
            "id": "contact_1",
            "source_system": "hubspot",
            "source_id": source_id,
            "email": "ann@example.com",
            "first_name": "Ann",
            "last_name": "Lee",
            "phone": "+1 555 0100",
            "mobile_phone": "+1 555 0101",
            "city": "Lisbon",
            "position": "Engineer",
            "external_system_data": {"custom_field": "value"},
        })]);
        World {
            crm,
            setup,
            source_id,
        }
    }

    fn crm_property(&self, name: &str) -> Option<String> {
        self.crm
            .contact(&self.source_id)
            .expect("record")
            .get(name)
            .cloned()
    }

    fn crm_record(&self) -> std::collections::BTreeMap<String, String> {
        self.crm.contact(&self.source_id).expect("record")
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_put_changes_only_its_fields_and_null_clears() {
    let world = World::new("").await;
    let daemon = world.setup.serve();
    let before = world.crm_record();

    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "Ann.New@Example.COM", "first_name": "Annie"}),
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

    let synced = daemon.wait_synced("contact_1").await;
    assert_eq!(
        synced["email"], "ann.new@example.com",
        "HubSpot's normalised email is reconciled"
    );
    let after = world.crm_record();
    assert_eq!(after["email"], "ann.new@example.com");
    assert_eq!(after["firstname"], "Annie");
    for (name, value) in &before {
        if ![
            "email",
            "firstname",
            "lastmodifieddate",
            "updatedAt",
            "hs_lastmodifieddate",
        ]
        .contains(&name.as_str())
        {
            assert_eq!(after.get(name), Some(value), "{name} must not change");
        }
    }

    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "ann.new@example.com", "first_name": "Annie", "phone": null}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["data"]["phone"], Value::Null);
    daemon.wait_synced("contact_1").await;
    assert_eq!(
        world.crm_property("phone").unwrap_or_default(),
        "",
        "null clears phone"
    );
    assert_eq!(world.crm_property("city").as_deref(), Some("Lisbon"));

    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "ann.new@example.com", "first_name": "Annie",
                    "position": "CTO", "mobile_phone": "+351 900 000 000"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    daemon.wait_synced("contact_1").await;
    assert_eq!(world.crm_property("jobtitle").as_deref(), Some("CTO"));
    assert_eq!(
        world.crm_property("mobilephone").as_deref(),
        Some("+351 900 000 000")
    );
    let sync = daemon.sync_state("contact_1").await;
    assert_eq!(sync["state"], "synced");
    assert!(sync["last_confirmed_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_answer_the_documented_errors_and_change_nothing() {
    let world = World::new("").await;
    let daemon = world.setup.serve();
    let url = daemon.url("/api/v1/unified/contact/contact_1");
    let good = json!({"email": "x@example.com", "first_name": "X"});
    let before_crm = world.crm_record();
    let before = daemon.contact("contact_1").await;

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

    let malformed = daemon
        .send(
            daemon
                .client
                .put(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{\"email\": "),
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.body["error"]["code"], "malformed_json");

    let too_large = daemon
        .send(
            daemon
                .client
                .put(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"email\": \"{}@example.com\", \"first_name\": \"X\"}}",
                    "a".repeat(8000)
                )),
        )
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

    for (body, field, code) in [
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
    ] {
        let answer = daemon.put_contact("contact_1", &body).await;
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
        daemon.contact("contact_1").await,
        before,
        "the record is unchanged"
    );
    let sync = daemon.sync_state("contact_1").await;
    assert_eq!(sync["state"], "synced");
    assert_eq!(sync["pending"], Value::Null);
    assert_eq!(world.crm_record(), before_crm, "nothing reached the CRM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_puts_to_one_contact_leave_the_last_values_without_overlapping_pushes() {
    let world = World::new("").await;
    world.crm.faults().set_latency(Duration::from_millis(20));
    let daemon = world.setup.serve();
    for n in 0..50 {
        let answer = daemon
            .put_contact(
                "contact_1",
                &json!({"email": format!("ann{n}@example.com"), "first_name": format!("Ann {n}"), "city": format!("City {n}")}),
            )
            .await;
        assert_eq!(answer.status, 200);
    }
    let synced = daemon.wait_synced("contact_1").await;
    assert_eq!(synced["first_name"], "Ann 49");
    let record = world.crm_record();
    assert_eq!(record["firstname"], "Ann 49");
    assert_eq!(record["email"], "ann49@example.com");
    assert_eq!(record["city"], "City 49");
    let stats = world.crm.stats();
    assert_eq!(
        stats.overlapping_writes, 0,
        "pushes for one contact never overlap"
    );
    assert!(
        stats.contacts_written < 50,
        "pending edits are coalesced: {}",
        stats.contacts_written
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_acknowledged_before_a_kill_reaches_the_crm_after_restart() {
    let world = World::new("").await;
    // The CRM is slow, so the push is in flight (or still queued) when the daemon dies.
    world.crm.faults().set_latency(Duration::from_secs(2));
    let mut daemon = world.setup.serve();
    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "ann@example.com", "first_name": "Survivor"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    daemon.kill_hard();
    assert_eq!(
        world.crm_property("firstname").as_deref(),
        Some("Ann"),
        "not pushed before the kill"
    );

    world.crm.faults().set_latency(Duration::ZERO);
    let daemon = world.setup.serve();
    let synced = daemon.wait_synced("contact_1").await;
    assert_eq!(synced["first_name"], "Survivor");
    assert_eq!(world.crm_property("firstname").as_deref(), Some("Survivor"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_outages_are_retried_until_the_edit_lands() {
    let world = World::new("").await;
    world.crm.faults().fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(1),
        },
    );
    world.crm.faults().fail_next(4, Fault::ServerError(503));
    world.crm.faults().fail_next(1, Fault::ServerError(502));
    let daemon = world.setup.serve();
    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "ann@example.com", "first_name": "Persistent"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let synced = daemon.wait_synced("contact_1").await;
    assert_eq!(synced["first_name"], "Persistent");
    assert_eq!(
        world.crm_property("firstname").as_deref(),
        Some("Persistent")
    );
    let dead = world.setup.run(&["dead-letters", "list"], None);
    assert_eq!(dead.0, 0, "{}", dead.2);
    let listed: Value = serde_json::from_str(&dead.1).unwrap();
    assert_eq!(listed["dead_letters"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_validation_error_becomes_a_dead_letter_with_hubspots_code() {
    // `position` is sent to a property the HubSpot account does not have.
    let world = World::new("fields = { position = \"no_such_property\" }").await;
    let daemon = world.setup.serve();
    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "ann@example.com", "first_name": "Ann", "position": "CTO"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let sync = wait_for("the dead letter", || async {
        let sync = daemon.sync_state("contact_1").await;
        (sync["open_dead_letters"] == 1).then_some(sync)
    })
    .await;
    assert_eq!(sync["last_error"]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(sync["last_error"]["class"], "permanent");
    assert_eq!(daemon.contact("contact_1").await["local_was_updated"], true);

    // The CLI reaches the running daemon for the dead letters.
    let (code, out, err) = world.setup.run(&["dead-letters", "list"], None);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["error"]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(letters[0]["contact_id"], "contact_1");
    assert!(
        letters[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_such_property")
    );
    assert_eq!(world.crm_property("jobtitle").as_deref(), Some("Engineer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer() {
    let world = World::new("").await;
    let daemon: Daemon = world.setup.serve();
    let health = daemon.send(daemon.client.get(daemon.url("/healthz"))).await;
    assert_eq!(health.status, 200);
    let ready = daemon.send(daemon.client.get(daemon.url("/readyz"))).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["connections"]["hubspot"]["state"], "ok");
    let metrics = daemon
        .client
        .get(daemon.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("unisync_queue_ready{connection=\"hubspot\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_push_in_flight_finish() {
    let world = World::new("").await;
    world.crm.faults().set_latency(Duration::from_millis(500));
    let mut daemon = world.setup.serve();
    let answer = daemon
        .put_contact(
            "contact_1",
            &json!({"email": "ann@example.com", "first_name": "Graceful"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    wait_for("the push to start", || async {
        (daemon.sync_state("contact_1").await["state"] == "in_flight").then_some(())
    })
    .await;
    daemon.stop();
    assert_eq!(world.crm_property("firstname").as_deref(), Some("Graceful"));
    let (code, out, err) = world.setup.run(&["status"], None);
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        status["connections"]["hubspot"]["in_flight"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{status}"
    );
}
