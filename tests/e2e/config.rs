//! `unisync config check` and start-up refusals: what an operator sees before anything runs.

use crate::harness::Setup;

const SECRET: &str = "pat-na1-very-secret-token";

fn hubspot_connection(extra: &str) -> String {
    format!(
        "[connections.hubspot]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\naccess_token_env = \"CHECK_HUBSPOT_TOKEN\"\n{extra}"
    )
}

#[test]
fn config_check_prints_the_effective_config_without_secrets() {
    let setup = Setup::new(&hubspot_connection(""), &[("CHECK_HUBSPOT_TOKEN", SECRET)]);
    let (code, out, err) = setup.run(&["config", "check"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[connections.hubspot]"), "{out}");
    assert!(
        out.contains("access_token_env = \"CHECK_HUBSPOT_TOKEN\""),
        "{out}"
    );
    assert!(out.contains("config ok"), "{out}");
    for text in [&out, &err] {
        assert!(!text.contains(SECRET), "a secret was printed: {text}");
        assert!(
            !text.contains(crate::harness::TOKEN),
            "an API token was printed: {text}"
        );
    }
}

#[test]
fn unknown_keys_and_missing_secrets_are_named_and_refused() {
    let typo = Setup::new(
        &hubspot_connection("acess_token_env = \"X\"\n"),
        &[("CHECK_HUBSPOT_TOKEN", SECRET)],
    );
    let (code, _out, err) = typo.run(&["config", "check"], None);
    assert_eq!(code, 2);
    assert!(err.contains("connections.hubspot.acess_token_env"), "{err}");

    let unset = Setup::new(&hubspot_connection(""), &[]);
    let (code, _out, err) = unset.run(&["config", "check"], None);
    assert_eq!(code, 2);
    assert!(err.contains("CHECK_HUBSPOT_TOKEN"), "{err}");
    let (code, _out, err) = unset.run(&["serve"], None);
    assert_eq!(code, 2, "the daemon refuses to start: {err}");
    assert!(err.contains("CHECK_HUBSPOT_TOKEN"), "{err}");

    let unknown_system = Setup::new("[connections.crm]\nsystem = \"pipedrive\"\n", &[]);
    let (code, _out, err) = unknown_system.run(&["config", "check"], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("pipedrive") && err.contains("hubspot"),
        "{err}"
    );
}

#[test]
fn a_settle_time_shorter_than_the_request_timeout_is_refused() {
    let setup = Setup::new(
        &hubspot_connection("timeout_secs = 2\nsettle_ms = 1500\n"),
        &[("CHECK_HUBSPOT_TOKEN", SECRET)],
    );
    let (code, _out, err) = setup.run(&["config", "check"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connections.hubspot.settle_ms"), "{err}");

    let setup = Setup::new(
        &hubspot_connection("timeout_secs = 2\n"),
        &[("CHECK_HUBSPOT_TOKEN", SECRET)],
    );
    let (code, out, err) = setup.run(&["config", "check"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("settle_ms = 4000"), "twice the timeout: {out}");
}

#[test]
fn a_store_another_daemon_holds_and_a_port_in_use_are_runtime_failures() {
    let setup = Setup::new(&hubspot_connection(""), &[("CHECK_HUBSPOT_TOKEN", SECRET)]);
    let mut daemon = setup.serve();
    let (code, _out, err) = setup.run(&["serve"], None);
    assert_eq!(code, 1, "the store is locked: {err}");
    assert!(err.contains("locked"), "{err}");
    daemon.stop();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = Setup::new(&hubspot_connection(""), &[("CHECK_HUBSPOT_TOKEN", SECRET)]);
    let config = std::fs::read_to_string(&busy.config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&busy.config, config).unwrap();
    let (code, _out, err) = busy.run(&["serve"], None);
    assert_eq!(code, 1, "the port is in use: {err}");
    assert!(err.contains("server.listen"), "{err}");
}
