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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_validates_the_postgres_store_and_never_prints_its_password() {
    crate::harness::on_postgres(async {
        const PASSWORD: &str = "pg-very-secret-pw";
        let mut setup = Setup::new(
            &hubspot_connection("timeout_secs = 3\n"),
            &[("CHECK_HUBSPOT_TOKEN", SECRET)],
        );
        // The local test database trusts its clients: a password in the URL is accepted
        // and ignored, so the check reaches the database with it.
        for (key, url) in &mut setup.envs {
            if key == "E2E_DATABASE_URL" {
                *url = url.replacen("://postgres@", &format!("://postgres:{PASSWORD}@"), 1);
                assert!(
                    url.contains(PASSWORD),
                    "the test database URL names user postgres"
                );
            }
        }
        let (code, out, err) = setup.run(&["config", "check"], None);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.contains("engine = \"postgres\""), "{out}");
        assert!(
            out.contains("url = \"postgres://postgres:[redacted]@"),
            "{out}"
        );
        assert!(out.contains("no store yet"), "{out}");
        assert!(
            !out.contains("admin.token"),
            "no admin token file is written for a PostgreSQL store: {out}"
        );
        for text in [&out, &err] {
            assert!(
                !text.contains(PASSWORD),
                "the database password was printed: {text}"
            );
        }

        // A lease the connection's pushes could not renew in time (its settle time is 6 s).
        let config = std::fs::read_to_string(&setup.config).unwrap();
        std::fs::write(
            &setup.config,
            config.replace("lease_secs = 12", "lease_secs = 5"),
        )
        .unwrap();
        let (code, out, err) = setup.run(&["config", "check"], None);
        assert_eq!(code, 2, "{out} {err}");
        assert!(err.contains("storage.lease_secs"), "{err}");
        assert!(!err.contains(PASSWORD) && !out.contains(PASSWORD));

        // An unreachable database is named without its password.
        for (key, url) in &mut setup.envs {
            if key == "E2E_DATABASE_URL" {
                *url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/test");
            }
        }
        std::fs::write(
            &setup.config,
            std::fs::read_to_string(&setup.config)
                .unwrap()
                .replace("lease_secs = 5", "lease_secs = 12"),
        )
        .unwrap();
        let (code, out, err) = setup.run(&["config", "check"], None);
        assert_eq!(code, 1, "{out} {err}");
        assert!(err.contains("storage"), "{err}");
        assert!(
            !err.contains(PASSWORD) && !out.contains(PASSWORD),
            "{out} {err}"
        );
    })
    .await;
}
