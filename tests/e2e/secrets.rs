//! No secret in any answer, output or log. A CRM whose token endpoint misbehaves in each way
//! it can (a garbled answer holding tokens, a refusal quoting the request, a server error
//! echoing the form) and whose API echoes the bearer token; then a sweep of everything
//! unisync shows: the API's answers, `/metrics`, the CLI's output and the daemon's log.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::harness::{Daemon, Setup, wait_for};

const CLIENT_ID: &str = "client-id-4f1e0b";
const CLIENT_SECRET: &str = "client-secret-9c2d7a";
const REFRESH_TOKEN: &str = "refresh-token-77ab31";
/// What the garbled token answer calls the access token.
const ACCESS_TOKEN: &str = "access-token-5e0f42";
const SECRETS: [&str; 4] = [CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ACCESS_TOKEN];

/// How the stub's token endpoint misbehaves.
#[derive(Clone, Copy, Debug)]
enum TokenAnswer {
    /// 200 with a body that is not the documented JSON, holding the tokens.
    Garbled,
    /// 400 `invalid_grant` whose description quotes the refresh token and client secret.
    RefusedQuotingTheRequest,
    /// 500 with the request's form as its body.
    ServerErrorEchoingTheForm,
    /// A token is issued (the garbled one's), and every API call answers 401 quoting the
    /// bearer token it was sent.
    ApiEchoesTheBearer,
}

const EVERY_KIND: [TokenAnswer; 4] = [
    TokenAnswer::Garbled,
    TokenAnswer::RefusedQuotingTheRequest,
    TokenAnswer::ServerErrorEchoingTheForm,
    TokenAnswer::ApiEchoesTheBearer,
];

async fn start_stub(kind: TokenAnswer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            answer(kind, &method, &uri, &headers, &body)
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn answer(
    kind: TokenAnswer,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let form = String::from_utf8_lossy(body).into_owned();
    let token_request = method == Method::POST && uri.path().ends_with("/token");
    if token_request {
        return match kind {
            TokenAnswer::Garbled => (
                StatusCode::OK,
                format!(
                    r#"{{"access_token": "{ACCESS_TOKEN}", "refresh_token": "{REFRESH_TOKEN}", "client_secret": "{CLIENT_SECRET}", "expires_in": "#
                ),
            )
                .into_response(),
            TokenAnswer::RefusedQuotingTheRequest => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": "invalid_grant",
                    "error_description": format!("refresh token {REFRESH_TOKEN} of client {CLIENT_ID} ({CLIENT_SECRET}) is expired"),
                    "message": format!("request was {form}"),
                    "status": "BAD_REFRESH_TOKEN",
                })),
            )
                .into_response(),
            TokenAnswer::ServerErrorEchoingTheForm => {
                (StatusCode::INTERNAL_SERVER_ERROR, form).into_response()
            }
            TokenAnswer::ApiEchoesTheBearer => (
                StatusCode::OK,
                axum::Json(json!({
                    "access_token": ACCESS_TOKEN,
                    "refresh_token": REFRESH_TOKEN,
                    "expires_in": 1800,
                    "instance_url": format!("http://{}", headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default()),
                    "id": "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA",
                    "token_type": "Bearer",
                    "issued_at": "1700000000000",
                    "signature": "c2lnbmF0dXJl",
                })),
            )
                .into_response(),
        };
    }
    let bearer = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!([{
            "message": format!("Session expired or invalid: {bearer}"),
            "errorCode": "INVALID_SESSION_ID",
            "status": "error",
            "category": "INVALID_AUTHENTICATION",
        }])),
    )
        .into_response()
}

/// One connection of `system` pointed at the stub, its secrets in environment variables.
fn setup(system: &str, stub: SocketAddr) -> Setup {
    let url_key = if system == "hubspot" {
        "base_url"
    } else {
        "login_url"
    };
    let hubspot_only = if system == "hubspot" {
        "daily_reset_tz = \"UTC\"\n"
    } else {
        ""
    };
    let connection = format!(
        "[connections.{system}]\nsystem = \"{system}\"\n{url_key} = \"http://{stub}\"\n\
         client_id_env = \"SWEEP_CLIENT_ID\"\nclient_secret_env = \"SWEEP_CLIENT_SECRET\"\n\
         refresh_token_env = \"SWEEP_REFRESH_TOKEN\"\ntimeout_secs = 2\nmax_attempts = 1\n{hubspot_only}"
    );
    Setup::new(
        &connection,
        &[
            ("SWEEP_CLIENT_ID", CLIENT_ID),
            ("SWEEP_CLIENT_SECRET", CLIENT_SECRET),
            ("SWEEP_REFRESH_TOKEN", REFRESH_TOKEN),
            ("UNISYNC_LOG", "debug"),
        ],
    )
}

/// Everything an operator or client can read from a running daemon about the contact.
async fn everything_shown(daemon: &Daemon, setup: &Setup, id: &str) -> Vec<String> {
    let mut shown = Vec::new();
    for path in [
        format!("/api/v1/unified/contact/{id}"),
        format!("/api/v1/unified/contact/{id}/sync"),
        "/readyz".to_string(),
        "/metrics".to_string(),
    ] {
        let response = daemon
            .client
            .get(daemon.url(&path))
            .bearer_auth(crate::harness::TOKEN)
            .send()
            .await
            .unwrap();
        shown.push(format!("{path}: {}", response.text().await.unwrap()));
    }
    for args in [&["status"][..], &["dead-letters", "list"]] {
        let (_, out, err) = setup.run(args, None);
        shown.push(format!("unisync {args:?}: {out}{err}"));
    }
    let letters = setup.run_json(&["dead-letters", "list"]);
    for letter in letters["dead_letters"].as_array().unwrap() {
        let (_, out, err) = setup.run(
            &["dead-letters", "show", letter["id"].as_str().unwrap()],
            None,
        );
        shown.push(format!("dead letter: {out}{err}"));
    }
    shown
}

async fn sweep(system: &str, source_id: &str) {
    for kind in EVERY_KIND {
        let stub = start_stub(kind).await;
        let setup = setup(system, stub);
        setup.import_contacts(&[json!({
            "id": "contact_1", "source_system": system, "source_id": source_id,
            "email": "ann@example.com", "first_name": "Ann",
        })]);
        let log = setup.scratch_path("daemon.log");
        let mut daemon = setup.serve_logging_to(&log);
        let answer = daemon
            .put_contact(
                "contact_1",
                &json!({"email": "ann@example.com", "first_name": "Bo"}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let sync = wait_for(
            &format!("{system} {kind:?}: the failure recorded"),
            || async {
                let sync = daemon.sync_state("contact_1").await;
                (!sync["last_error"].is_null()).then_some(sync)
            },
        )
        .await;
        let mut shown = everything_shown(&daemon, &setup, "contact_1").await;
        daemon.stop();
        shown.push(format!("log: {}", std::fs::read_to_string(&log).unwrap()));
        for text in &shown {
            for secret in SECRETS {
                assert!(
                    !text.contains(secret),
                    "{system} {kind:?}: `{secret}` shown in {text}"
                );
            }
        }
        assert!(
            shown
                .iter()
                .any(|text| text.contains(sync["last_error"]["code"].as_str().unwrap())),
            "the sweep read the failure itself"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hubspot_secret_is_shown_after_any_kind_of_auth_failure() {
    sweep("hubspot", "51005").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_salesforce_secret_is_shown_after_any_kind_of_auth_failure() {
    sweep("salesforce", "003000000000001").await;
}
