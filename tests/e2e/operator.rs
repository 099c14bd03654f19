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
