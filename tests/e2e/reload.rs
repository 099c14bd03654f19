//! `systemctl reload` (SIGHUP): the daemon reads its config file again and applies it while
//! serving — tokens for the next request, connections once their pushes in flight are
//! reconciled — or refuses it whole, says why, and goes on with the config in force.

use std::time::Duration;

use serde_json::json;
use unisync_hubspot::sandbox::HubspotSandbox;

use crate::crm::Crm;
use crate::faults::{wait_in_flight, warm_up};
use crate::harness::{Daemon, Setup};
use crate::world::{ANN_EMAIL, CONTACT, World, rename};

const CONTACT_PATH: &str = "/api/v1/unified/contact/contact_1";
const STATUS_PATH: &str = "/api/v1/admin/status";

/// Replaces `from` (which must be there) by `to` in the setup's config file.
fn rewrite_config(setup: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    assert!(text.contains(from), "`{from}` is not in the config: {text}");
    std::fs::write(&setup.config, text.replacen(from, to, 1)).unwrap();
}

/// Adds `line` to the table of connection `name`.
fn set_connection_key(setup: &Setup, name: &str, line: &str) {
    let header = format!("[connections.{name}]\n");
    rewrite_config(setup, &header, &format!("{header}{line}\n"));
}

/// The status code of a GET of `path` with bearer `token`.
async fn status_of(daemon: &Daemon, path: &str, token: &str) -> u16 {
    let request = daemon.client.get(daemon.url(path)).bearer_auth(token);
    daemon.send(request).await.status
}

/// `unisync_config_last_reload_successful` from `/metrics`.
async fn last_reload_successful(daemon: &Daemon) -> String {
    let metrics = daemon.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("unisync_config_last_reload_successful "))
        .unwrap_or_else(|| panic!("no unisync_config_last_reload_successful: {metrics}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_new_api_and_admin_tokens_in_force_and_the_old_ones_are_refused() {
    let world = World::<HubspotSandbox>::new().await;
    let api_tokens = world.setup.scratch_path("api-tokens");
    let admin_tokens = world.setup.scratch_path("admin-tokens");
    std::fs::write(&api_tokens, "api-before\n").unwrap();
    std::fs::write(&admin_tokens, "admin-before\n").unwrap();
    rewrite_config(
        &world.setup,
        "api_tokens_env = \"E2E_API_TOKENS\"",
        &format!(
            "api_tokens_file = \"{}\"\nadmin_tokens_file = \"{}\"",
            api_tokens.display(),
            admin_tokens.display()
        ),
    );
    let daemon = world.setup.serve();
    assert_eq!(status_of(&daemon, CONTACT_PATH, "api-before").await, 200);
    assert_eq!(status_of(&daemon, STATUS_PATH, "admin-before").await, 200);

    std::fs::write(&api_tokens, "api-after\n").unwrap();
    std::fs::write(&admin_tokens, "admin-after\n").unwrap();
    daemon.reload(true).await;
    for (path, token, expected) in [
        (CONTACT_PATH, "api-after", 200),
        (CONTACT_PATH, "api-before", 401),
        (STATUS_PATH, "admin-after", 200),
        (STATUS_PATH, "admin-before", 401),
        // The scopes hold as before.
        (STATUS_PATH, "api-after", 403),
        (CONTACT_PATH, "admin-after", 403),
    ] {
        assert_eq!(
            status_of(&daemon, path, token).await,
            expected,
            "{path} with {token}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_own_admin_token_opens_the_admin_routes_only_while_the_config_names_none() {
    let world = World::<HubspotSandbox>::new().await;
    let run_token_file = world.setup.scratch_path("data").join("admin.token");
    let admin_tokens = world.setup.scratch_path("admin-tokens");
    std::fs::write(&admin_tokens, "configured-admin\n").unwrap();
    let daemon = world.setup.serve();
    let run_token = std::fs::read_to_string(&run_token_file).unwrap();
    assert_eq!(status_of(&daemon, STATUS_PATH, run_token.trim()).await, 200);

    let configured = format!("admin_tokens_file = \"{}\"\n", admin_tokens.display());
    rewrite_config(
        &world.setup,
        "[server]\n",
        &format!("[server]\n{configured}"),
    );
    daemon.reload(true).await;
    assert!(
        !run_token_file.exists(),
        "a token that opens nothing is not left beside the store"
    );
    assert_eq!(status_of(&daemon, STATUS_PATH, run_token.trim()).await, 401);
    assert_eq!(
        status_of(&daemon, STATUS_PATH, "configured-admin").await,
        200
    );

    rewrite_config(&world.setup, &configured, "");
    daemon.reload(true).await;
    assert_eq!(
        std::fs::read_to_string(&run_token_file).unwrap(),
        run_token,
        "the run's token, as the CLI knew it"
    );
    assert_eq!(status_of(&daemon, STATUS_PATH, run_token.trim()).await, 200);
    assert_eq!(
        status_of(&daemon, STATUS_PATH, "configured-admin").await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_with_its_reason_and_the_config_in_force_goes_on() {
    let world = World::<HubspotSandbox>::new().await;
    let log = world.setup.scratch_path("daemon.log");
    let daemon = world.setup.serve_logging_to(&log);
    let good = std::fs::read_to_string(&world.setup.config).unwrap();
    let bad_configs = [
        (
            "a syntax error",
            format!("{good}\nthis line is not TOML\n"),
            "TOML parse error",
        ),
        (
            "no push at a time",
            good.replace(
                "[connections.hubspot]\n",
                "[connections.hubspot]\nconcurrency = 0\n",
            ),
            "connections.hubspot.concurrency: must be at least 1",
        ),
        (
            "a token variable that is not set",
            good.replace("E2E_API_TOKENS", "E2E_SURELY_UNSET_TOKENS"),
            "server.api_tokens_env: environment variable E2E_SURELY_UNSET_TOKENS is not set",
        ),
    ];
    for (what, bad, reason) in bad_configs {
        std::fs::write(&world.setup.config, bad).unwrap();
        daemon.reload(false).await;
        let logged = std::fs::read_to_string(&log).unwrap();
        let refusal = logged
            .lines()
            .rfind(|line| line.contains("config reload refused"))
            .unwrap_or_else(|| panic!("{what}: no refusal in the log: {logged}"));
        assert!(refusal.contains("ERROR"), "{what}: {refusal}");
        assert!(logged.contains(reason), "{what}: `{reason}` in {logged}");
        assert_eq!(last_reload_successful(&daemon).await, "0", "{what}");
        // The config in force goes on: its token, its connection, its pushes.
        rename(&daemon, CONTACT, what).await;
        let synced = daemon.wait_synced(CONTACT).await;
        assert_eq!(synced["first_name"], what);
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    for (variable, secret) in &world.setup.envs {
        assert!(
            !logged.contains(secret.as_str()),
            "{variable}'s value was logged"
        );
    }

    std::fs::write(&world.setup.config, good).unwrap();
    daemon.reload(true).await;
    assert_eq!(last_reload_successful(&daemon).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_a_reload_enables_pushes_the_edits_it_kept() {
    let world = World::<HubspotSandbox>::with_connection_keys("enabled = false").await;
    let daemon = world.setup.serve();
    rename(&daemon, CONTACT, "Kept").await;
    let readiness = daemon.readiness().await;
    assert_eq!(readiness["connections"]["hubspot"]["state"], "disabled");

    rewrite_config(&world.setup, "enabled = false", "enabled = true");
    daemon.reload(true).await;
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], "Kept");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Kept"));
    let readiness = daemon.readiness().await;
    assert_eq!(readiness["connections"]["hubspot"]["state"], "ok");
}

mod an_edit_in_flight_during_a_reload_is_pushed_once_and_confirmed {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubspot() {
        super::an_edit_in_flight_during_a_reload_is_pushed_once_and_confirmed::<
            unisync_hubspot::sandbox::HubspotSandbox,
        >()
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hubspot_on_postgres() {
        crate::harness::on_postgres(
            super::an_edit_in_flight_during_a_reload_is_pushed_once_and_confirmed::<
                unisync_hubspot::sandbox::HubspotSandbox,
            >(),
        )
        .await;
    }
}

/// A reload that changes the connection stops its dispatcher as a shutdown would: the push
/// in flight is answered and reconciled before the reload is done, never abandoned and
/// pushed again; edits are taken meanwhile, and the new dispatcher pushes them.
async fn an_edit_in_flight_during_a_reload_is_pushed_once_and_confirmed<C: Crm>() {
    let world = World::<C>::new().await;
    let other_email = "other@example.com";
    world.add_contact(
        "contact_2",
        &[
            ("email", other_email),
            ("first_name", "Bo"),
            ("last_name", "Ng"),
        ],
    );
    let daemon = world.setup.serve();
    warm_up(&world, &daemon).await;
    // Within the connection's 3 s request timeout: the CRM answers, late.
    world.crm.faults().set_latency(Duration::from_millis(2000));
    rename(&daemon, CONTACT, "Held").await;
    wait_in_flight(&daemon, CONTACT).await;
    set_connection_key(&world.setup, world.system(), "concurrency = 2");
    daemon.hang_up();
    world.crm.faults().set_latency(Duration::ZERO);
    let during = json!({"email": other_email, "first_name": "During"});
    let answer = daemon.put_contact("contact_2", &during).await;
    assert_eq!(
        answer.status, 200,
        "taken while the reload waits: {}",
        answer.body
    );

    daemon.wait_reloads("applied", 1).await;
    // Done only once the push in flight was reconciled.
    let held = daemon.contact(CONTACT).await;
    assert_eq!(held["local_was_updated"], false, "{held}");
    assert_eq!(held["first_name"], "Held");
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Held"));
    let sync = daemon.sync_state(CONTACT).await;
    assert_eq!(
        sync["attempts"], 0,
        "no push failed or was abandoned: {sync}"
    );
    let synced = daemon.wait_synced("contact_2").await;
    assert_eq!(synced["first_name"], "During");
    rename(&daemon, CONTACT, "After").await;
    daemon.wait_synced(CONTACT).await;
    assert_eq!(world.crm_value("first_name").as_deref(), Some("After"));
    // The warm-up, the held push, the edit taken during the reload and the one after: each
    // written once.
    let writes = world.crm.writes();
    assert_eq!((writes.written, writes.overlapping), (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sandbox_mode_a_reload_keeps_the_running_sandboxes_and_starts_one_for_a_new_connection()
{
    let setup = Setup::new(
        "[connections.hubspot]\nsystem = \"hubspot\"\naccess_token_env = \"UNUSED_IN_SANDBOX\"\n",
        &[("UNISYNC_LOG", "info")],
    );
    let log = setup.scratch_path("daemon.log");
    let daemon = setup.serve_with_logging_to(&["--sandbox"], &log);
    let started = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("sandbox CRM started")
            .count()
    };
    assert_eq!(started(), 1);
    let edit = |name: &str| json!({"email": ANN_EMAIL, "first_name": name});
    assert_eq!(
        daemon
            .put_contact("hubspot_51005", &edit("One"))
            .await
            .status,
        200
    );
    daemon.wait_synced("hubspot_51005").await;

    rewrite_config(
        &setup,
        "[connections.hubspot]\n",
        "[connections.hubspot_eu]\nsystem = \"hubspot\"\n\n[connections.hubspot]\n",
    );
    daemon.reload(true).await;
    assert_eq!(started(), 2, "one more, for the new connection only");
    // The new connection's demo contacts are registered, and its edits land.
    let answer = daemon.put_contact("hubspot_eu_51005", &edit("Two")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    daemon.wait_synced("hubspot_eu_51005").await;
    assert_eq!(
        daemon
            .put_contact("hubspot_51005", &edit("Three"))
            .await
            .status,
        200
    );
    let synced = daemon.wait_synced("hubspot_51005").await;
    assert_eq!(synced["first_name"], "Three");
    let readiness = daemon.readiness().await;
    for name in ["hubspot", "hubspot_eu"] {
        assert_eq!(readiness["connections"][name]["state"], "ok", "{readiness}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_only_a_restart_applies_are_named_at_each_reload_and_the_rest_is_applied() {
    let world = World::<HubspotSandbox>::new().await;
    let log = world.setup.scratch_path("daemon.log");
    let daemon = world.setup.serve_logging_to(&log);
    // The harness's limit is 4096 bytes; the new one would take this body.
    rewrite_config(
        &world.setup,
        "max_body_bytes = 4096",
        "max_body_bytes = 65536",
    );
    set_connection_key(&world.setup, "hubspot", "enabled = false");
    let warnings = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|line| line.contains("WARN") && line.contains("server.max_body_bytes"))
            .count()
    };
    daemon.reload(true).await;
    assert_eq!(warnings(), 1);
    let readiness = daemon.readiness().await;
    assert_eq!(
        readiness["connections"]["hubspot"]["state"], "disabled",
        "the rest is applied: {readiness}"
    );
    let large = json!({"email": ANN_EMAIL, "first_name": "x".repeat(5000)});
    assert_eq!(
        daemon.put_contact(CONTACT, &large).await.status,
        413,
        "the limit the server was bound with holds until a restart"
    );
    daemon.reload(true).await;
    assert_eq!(warnings(), 2, "said again at each reload, until a restart");
}
