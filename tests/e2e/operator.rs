//! The operator's side of the daemon: scoped tokens, server limits, imports through the
//! admin routes, the CLI's outputs.

use crate::harness::{Setup, TOKEN};

const ADMIN_TOKEN: &str = "e2e-admin-token";

/// A daemon with admin tokens in its config (`E2E_ADMIN_TOKENS`) and one HubSpot
/// connection no test here lets it reach.
fn setup_with_admin_tokens() -> Setup {
    Setup::with_config(
        &[
            ("E2E_ADMIN_TOKENS", ADMIN_TOKEN),
            ("E2E_HUBSPOT_TOKEN", "unused"),
        ],
        |data| {
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
api_tokens_env = "E2E_API_TOKENS"
admin_tokens_env = "E2E_ADMIN_TOKENS"

[storage]
path = "{data}"

[connections.hubspot]
system = "hubspot"
base_url = "http://127.0.0.1:1"
access_token_env = "E2E_HUBSPOT_TOKEN"
"#,
                data = data.display()
            )
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_routes_take_only_admin_tokens_and_the_cli_uses_the_configured_one() {
    let setup = setup_with_admin_tokens();
    let mut daemon = setup.serve();
    let status = |token: &'static str| {
        daemon.send(
            daemon
                .client
                .get(daemon.url("/api/v1/admin/status"))
                .bearer_auth(token),
        )
    };
    let refused = status(TOKEN).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "forbidden");
    assert_eq!(status(ADMIN_TOKEN).await.status, 200);
    let put = daemon
        .send(
            daemon
                .client
                .put(daemon.url("/api/v1/unified/contact/c1"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({"email": "ann@example.com", "first_name": "Ann"})),
        )
        .await;
    assert_eq!(put.status, 403, "{}", put.body);

    // The store is the daemon's: the CLI asks it, with the configured admin token.
    let (code, out, err) = setup.run(&["status"], None);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("hubspot"), "{out}");
    assert!(
        !setup.scratch_path("data").join("admin.token").exists(),
        "with admin tokens configured the daemon makes none of its own"
    );
    daemon.stop();
}

/// An import far larger than any request body the API takes goes through the running daemon
/// line by line; a line longer than `max_body_bytes` is refused by number and the rest go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_contact_import_goes_through_the_running_daemon() {
    let setup = setup_with_admin_tokens();
    let mut daemon = setup.serve();
    let mut lines: Vec<String> = (1..=100_000)
        .map(|n| {
            serde_json::json!({
                "id": format!("bulk_{n}"),
                "source_system": "hubspot",
                "source_id": (1_000_000 + n).to_string(),
                "email": format!("person{n}@example.com"),
                "first_name": "Bulk",
            })
            .to_string()
        })
        .collect();
    lines.insert(1, format!(r#"{{"id": "{}"}}"#, "x".repeat(70_000)));
    let input = lines.join("\n");
    assert!(input.len() > 10 * 1024 * 1024, "{} bytes", input.len());
    let (code, out, err) = setup.run(&["contacts", "import", "-"], Some(&input));
    assert_eq!(code, 1, "one line failed: {out} {err}");
    assert!(out.contains("100000 imported, 1 failed"), "{out}");
    assert!(err.contains("line 2: longer than 65536 bytes"), "{err}");
    for id in ["bulk_1", "bulk_100000"] {
        assert_eq!(daemon.contact(id).await["id"], id);
    }
    daemon.stop();
}

/// An import's refused lines are shown by number and reason, the others registered, exit 1;
/// an input without a record is refused, exit 2: alike whether the CLI asks the running
/// daemon (which answers 422 `lines_refused` with the report, or 400 `empty_import`) or
/// opens the store itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refusals_are_the_same_through_the_daemon_and_without_it() {
    let setup = setup_with_admin_tokens();
    let mut daemon = setup.serve();
    for running in [true, false] {
        if !running {
            daemon.stop();
        }
        let id = if running { "through_daemon" } else { "local" };
        let input = format!(
            "{}\n{{not json",
            serde_json::json!({"id": id, "source_system": "hubspot", "source_id": id.len().to_string()})
        );
        let (code, out, err) = setup.run(&["contacts", "import", "-"], Some(&input));
        assert_eq!(code, 1, "running {running}: {out} {err}");
        assert!(out.contains("contacts: 1 imported, 1 failed"), "{out}");
        assert!(err.contains("line 2: "), "{err}");
        let (code, out, err) = setup.run(&["customers", "import", "-"], Some("\n \n"));
        assert_eq!(code, 2, "running {running}: {out} {err}");
        assert!(err.contains("the input holds no record"), "{err}");
    }
    let daemon = setup.serve();
    for id in ["through_daemon", "local"] {
        assert_eq!(daemon.contact(id).await["id"], id);
    }
}

/// The daemon's refusals reach the operator with the API's code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_through_the_daemon_show_its_error_code_and_message() {
    let setup = setup_with_admin_tokens();
    let mut daemon = setup.serve();
    let (code, out, err) = setup.run(&["dead-letters", "show", "dl-nope"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("404") && err.contains("not_found: no dead letter `dl-nope`"),
        "{err}"
    );
    let (code, _, err) = setup.run(&["contacts", "pull", "--connection", "nope"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("not_found: no connection named `nope`"),
        "{err}"
    );
    daemon.stop();
}

/// `status` and `dead-letters list|show` print aligned tables for people, and with `--json`
/// the same reports as JSON, times in RFC 3339 and in the machine's zone; alike whether the
/// CLI asks the running daemon or opens the store itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_outputs_are_tables_for_people_and_json_for_machines() {
    use unisync_hubspot::sandbox::HubspotSandbox;
    let world = crate::world::World::<HubspotSandbox>::new().await;
    let mut daemon = world.setup.serve();
    let body = serde_json::json!({"email": crate::world::ANN_EMAIL, "first_name": "Refused"});
    let letter = crate::replay::dead_letter_of(&world, &daemon, body).await;
    for running in [true, false] {
        if !running {
            daemon.stop();
        }
        let (code, table, err) = world.setup.run(&["status"], None);
        assert_eq!(code, 0, "{err}");
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("CONNECTION  READY"), "{table}");
        let row = lines.next().unwrap();
        assert!(row.starts_with("hubspot "), "{table}");
        // Aligned: each column starts where its header does.
        let column = header.find("DEAD LETTERS").unwrap();
        assert_eq!(&row[column..column + 1], "1", "{table}");

        let (_, listed, _) = world.setup.run(&["dead-letters", "list"], None);
        let mut lines = listed.lines();
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        assert!(row.starts_with(&letter), "{listed}");
        let column = header.find("FAILED AT").unwrap();
        assert!(row[column..].starts_with("20"), "a local time: {listed}");

        let (_, shown, _) = world.setup.run(&["dead-letters", "show", &letter], None);
        assert!(shown.contains("retries_exhausted"), "{shown}");
        assert!(
            shown.contains("first_name") && shown.contains("Refused"),
            "{shown}"
        );

        let json = world.setup.run_json(&["dead-letters", "show", &letter]);
        let failed_at = json["failed_at"].as_str().unwrap();
        assert!(
            failed_at.ends_with('Z') && failed_at.contains('T'),
            "{json}"
        );
        let local = json["failed_at_local"].as_str().unwrap();
        assert_eq!(&local[..10], row[column..column + 10].trim(), "{json}");
        let status = world.setup.run_json(&["status"]);
        assert_eq!(
            status["connections"]["hubspot"]["dead_letters"], 1,
            "{status}"
        );
    }
}
