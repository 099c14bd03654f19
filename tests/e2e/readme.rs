//! The README's promises: the shipped config starts the daemon with `--sandbox`, and its curl
//! example works as written.

use serde_json::json;

use crate::harness::{Setup, wait_for};

/// The README's example contact: the sandbox HubSpot's first demo contact.
const README_CONTACT: &str = "hubspot_51005";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_runs_the_sandbox_and_the_readme_example_lands() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/unisync.toml"
    ))
    .expect("config/unisync.toml");
    // Only the port and the store's place change, so tests can run side by side.
    let setup = Setup::with_config(&[("UNISYNC_API_TOKENS", "dev-token")], |data| {
        shipped
            .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
            .replace("path = \"data\"", &format!("path = \"{}\"", data.display()))
    });
    let daemon = setup.serve_with(&["--sandbox"]);
    let answer = daemon
        .send(
            daemon
                .client
                .put(daemon.url(&format!("/api/v1/unified/contact/{README_CONTACT}")))
                .bearer_auth("dev-token")
                .json(&json!({"email": "JohnDoe@Gmail.com", "first_name": "John"})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["data"]["local_was_updated"], true);
    let synced = wait_for("the README example to sync", || async {
        let answer = daemon
            .send(
                daemon
                    .client
                    .get(daemon.url(&format!("/api/v1/unified/contact/{README_CONTACT}")))
                    .bearer_auth("dev-token"),
            )
            .await;
        (answer.body["data"]["local_was_updated"] == false).then_some(answer.body)
    })
    .await;
    assert_eq!(synced["data"]["email"], "johndoe@gmail.com");
    let ready = daemon.send(daemon.client.get(daemon.url("/readyz"))).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["connections"]["salesforce"]["state"], "ok");
}
