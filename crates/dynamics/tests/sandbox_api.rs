//! The fake Dataverse over HTTP, checked against Microsoft's documented behaviour with plain
//! requests (no adapter involved).

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use unisync_dynamics::sandbox::{DynamicsSandbox, ServiceProtection, codes};
use unisync_sandbox::{Fault, SandboxCrm};

async fn sandbox() -> DynamicsSandbox {
    DynamicsSandbox::start(SocketAddr::from(([127, 0, 0, 1], 0)), 0)
        .await
        .unwrap()
}

async fn token(sandbox: &DynamicsSandbox) -> String {
    let credentials = sandbox.credentials();
    let answer: Value = reqwest::Client::new()
        .post(sandbox.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &credentials.client_id),
            ("client_secret", &credentials.client_secret),
            ("scope", &format!("{}/.default", sandbox.base_url())),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 3599);
    answer["access_token"].as_str().unwrap().to_string()
}

fn contact_url(sandbox: &DynamicsSandbox, id: &str) -> String {
    format!("{}/api/data/v9.2/contacts({id})", sandbox.base_url())
}

async fn patch(
    sandbox: &DynamicsSandbox,
    token: &str,
    id: &str,
    if_match: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .patch(contact_url(sandbox, id))
        .bearer_auth(token)
        .header("Prefer", "return=representation")
        .json(&body);
    if let Some(etag) = if_match {
        request = request.header("If-Match", etag);
    }
    request.send().await.unwrap()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_token_endpoint_refuses_as_the_identity_platform_does() {
    let sandbox = sandbox().await;
    let credentials = sandbox.credentials();
    let scope = format!("{}/.default", sandbox.base_url());
    let client = reqwest::Client::new();
    for (url, client_id, secret, scope, status, error) in [
        (
            sandbox
                .token_url()
                .replace(&sandbox.tenant_id(), "contoso.onmicrosoft.com"),
            credentials.client_id.as_str(),
            credentials.client_secret.as_str(),
            scope.as_str(),
            400,
            "invalid_request",
        ),
        (
            sandbox.token_url(),
            "unknown-app",
            credentials.client_secret.as_str(),
            scope.as_str(),
            400,
            "unauthorized_client",
        ),
        (
            sandbox.token_url(),
            credentials.client_id.as_str(),
            "wrong",
            scope.as_str(),
            401,
            "invalid_client",
        ),
        (
            sandbox.token_url(),
            credentials.client_id.as_str(),
            credentials.client_secret.as_str(),
            "https://other.crm.dynamics.com/.default",
            400,
            "invalid_resource",
        ),
    ] {
        let answer = client
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), status, "{error}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], error);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS")
        );
        assert!(body["error_codes"][0].is_u64());
    }
    assert_eq!(sandbox.token_requests(), 4);
    let old = credentials.client_secret;
    sandbox.rotate_client_secret();
    let answer = client
        .post(sandbox.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", credentials.client_id.as_str()),
            ("client_secret", old.as_str()),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_patch_with_if_match_star_updates_and_never_creates() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    let id = sandbox.create_contact(&[("firstname", "Ann"), ("telephone1", "+1 555")]);
    let answer = patch(
        &sandbox,
        &token,
        &id,
        Some("*"),
        json!({"firstname": "Anna", "telephone1": null}),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let etag = answer.headers()["etag"].to_str().unwrap().to_string();
    let row: Value = answer.json().await.unwrap();
    assert_eq!(row["firstname"], "Anna");
    assert_eq!(row["telephone1"], Value::Null);
    assert_eq!(row["@odata.etag"], etag);
    assert_eq!(row["contactid"], id);
    assert_eq!(sandbox.writes_to(&id), 1);

    sandbox.delete_contact(&id);
    let gone = patch(&sandbox, &token, &id, Some("*"), json!({"firstname": "X"})).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(gone).await, codes::DOES_NOT_EXIST);
    assert!(sandbox.contact(&id).is_none(), "If-Match: * never creates");
    // Without If-Match a PATCH is an upsert: the row comes back.
    let created = patch(&sandbox, &token, &id, None, json!({"firstname": "X"})).await;
    assert_eq!(created.status(), StatusCode::OK);
    assert!(sandbox.contact(&id).is_some());
}

#[tokio::test]
async fn an_etag_if_match_fails_with_412_once_the_row_moved() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    let etag = sandbox.contact(&id).unwrap()["@odata.etag"]
        .as_str()
        .unwrap()
        .to_string();
    sandbox.edit_as_person(&id, &[("jobtitle", "CEO")]);
    let refused = patch(
        &sandbox,
        &token,
        &id,
        Some(&etag),
        json!({"firstname": "Bo"}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(refused).await, codes::VERSION_MISMATCH);
    let current = sandbox.contact(&id).unwrap()["@odata.etag"]
        .as_str()
        .unwrap()
        .to_string();
    let landed = patch(
        &sandbox,
        &token,
        &id,
        Some(&current),
        json!({"firstname": "Bo"}),
    )
    .await;
    assert_eq!(landed.status(), StatusCode::OK);
    assert_eq!(sandbox.writes_to(&id), 1, "a person's edit is no API write");
}

#[tokio::test]
async fn values_are_checked_like_dataverse_and_binds_link_and_unlink() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    let long = patch(
        &sandbox,
        &token,
        &id,
        Some("*"),
        json!({"lastname": "x".repeat(51)}),
    )
    .await;
    assert_eq!(long.status(), StatusCode::BAD_REQUEST);
    let body: Value = long.json().await.unwrap();
    assert_eq!(body["error"]["code"], codes::TOO_LONG);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'lastname'")
    );
    let account = sandbox.create_account("Contoso");
    let bind = json!({"parentcustomerid_account@odata.bind": format!("/accounts({account})")});
    let linked: Value = patch(&sandbox, &token, &id, Some("*"), bind)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(linked["_parentcustomerid_value"], account);
    let unlink = json!({"parentcustomerid_account@odata.bind": null});
    let unlinked: Value = patch(&sandbox, &token, &id, Some("*"), unlink)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unlinked["_parentcustomerid_value"], Value::Null);
    let nowhere = json!({"parentcustomerid_account@odata.bind": "/accounts(00000000-0000-0000-0000-000000000001)"});
    let missing = patch(&sandbox, &token, &id, Some("*"), nowhere).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

fn batch_body(boundary: &str, sets: &[(String, Value)]) -> String {
    let mut body = String::new();
    for (n, (url, patch)) in sets.iter().enumerate() {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Type: multipart/mixed; boundary=changeset_{n}\r\n\r\n--changeset_{n}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {}\r\n\r\nPATCH {url} HTTP/1.1\r\nContent-Type: application/json\r\nIf-Match: *\r\n\r\n{patch}\r\n--changeset_{n}--\r\n",
            n + 1
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body
}

#[tokio::test]
async fn a_failed_change_set_rolls_back_only_itself() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    let ann = sandbox.create_contact(&[("firstname", "Ann")]);
    let bo = sandbox.create_contact(&[("firstname", "Bo")]);
    let sets = vec![
        (
            format!("/api/data/v9.2/contacts({ann})"),
            json!({"firstname": "x".repeat(60)}),
        ),
        (
            format!("/api/data/v9.2/contacts({bo})"),
            json!({"firstname": "Bob"}),
        ),
    ];
    let send = |prefer: Option<&'static str>| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/data/v9.2/$batch", sandbox.base_url()))
            .bearer_auth(&token)
            .header("Content-Type", "multipart/mixed; boundary=\"batch_test\"")
            .body(batch_body("batch_test", &sets));
        if let Some(prefer) = prefer {
            request = request.header("Prefer", prefer);
        }
        request.send()
    };
    // Without continue-on-error the batch stops at the first failure, with its status.
    let stopped = send(None).await.unwrap();
    assert_eq!(stopped.status(), StatusCode::BAD_REQUEST);
    let text = stopped.text().await.unwrap();
    assert!(
        text.contains(codes::TOO_LONG) && !text.contains("HTTP/1.1 204"),
        "{text}"
    );
    assert_eq!(sandbox.contact(&bo).unwrap()["firstname"], "Bo");

    let answer = send(Some("odata.continue-on-error")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let text = answer.text().await.unwrap();
    let failed = text.find(codes::TOO_LONG).expect("the first set's error");
    let landed = text
        .find("HTTP/1.1 204 No Content")
        .expect("the second set's answer");
    assert!(failed < landed, "answers come in request order: {text}");
    assert_eq!(sandbox.contact(&ann).unwrap()["firstname"], "Ann");
    assert_eq!(sandbox.contact(&bo).unwrap()["firstname"], "Bob");
    assert_eq!((sandbox.writes_to(&ann), sandbox.writes_to(&bo)), (0, 1));
    assert_eq!(sandbox.stats().batch_calls, 2);
}

#[tokio::test]
async fn pages_follow_next_links_and_filters_select_rows() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    let ids: Vec<String> = (0..5)
        .map(|n| sandbox.create_contact(&[("firstname", &format!("P{n}"))]))
        .collect();
    let client = reqwest::Client::new();
    let mut url = format!(
        "{}/api/data/v9.2/contacts?$select=firstname",
        sandbox.base_url()
    );
    let mut seen = Vec::new();
    loop {
        let page: Value = client
            .get(&url)
            .bearer_auth(&token)
            .header("Prefer", "odata.maxpagesize=2")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for row in page["value"].as_array().unwrap() {
            seen.push(row["contactid"].as_str().unwrap().to_string());
            assert!(row.get("lastname").is_none(), "only the selected columns");
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
    let filtered: Value = client
        .get(format!(
            "{}/api/data/v9.2/contacts?$filter=contactid eq {} or contactid eq {}",
            sandbox.base_url(),
            ids[0],
            ids[3]
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn service_protection_answers_429_with_retry_after() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    sandbox.set_service_protection(ServiceProtection {
        max_requests: 2,
        ..ServiceProtection::default()
    });
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    let client = reqwest::Client::new();
    let get = || {
        client
            .get(contact_url(&sandbox, &id))
            .bearer_auth(&token)
            .send()
    };
    assert!(get().await.unwrap().status().is_success());
    assert!(get().await.unwrap().status().is_success());
    let limited = get().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((299..=300).contains(&wait), "{wait}");
    assert_eq!(error_code(limited).await, codes::TOO_MANY_REQUESTS);
    assert_eq!(sandbox.stats().throttled, 1);
}

#[tokio::test]
async fn faults_answer_in_dataverse_shapes_and_late_writes_land() {
    let sandbox = sandbox().await;
    let token = token(&sandbox).await;
    let id = sandbox.create_contact(&[("firstname", "Ann")]);
    for (fault, status, code) in [
        (Fault::AccessRevoked, 403, Some(codes::MISSING_PRIVILEGE)),
        (Fault::EndpointNotFound, 404, Some(codes::SEGMENT_NOT_FOUND)),
        (Fault::Locked, 500, Some(codes::SQL_ERROR)),
        (
            Fault::RateLimited {
                retry_after_secs: Some(7),
            },
            429,
            Some(codes::TOO_MANY_REQUESTS),
        ),
        (Fault::Unauthorized, 401, None),
    ] {
        sandbox.faults().fail_next(1, fault.clone());
        let answer = patch(&sandbox, &token, &id, Some("*"), json!({"firstname": "F"})).await;
        assert_eq!(answer.status().as_u16(), status, "{fault:?}");
        if status == 429 {
            assert_eq!(answer.headers()["retry-after"], "7");
        }
        match code {
            Some(code) => assert_eq!(error_code(answer).await, code),
            None => assert!(answer.headers().contains_key("www-authenticate")),
        }
    }
    assert_eq!(sandbox.contact(&id).unwrap()["firstname"], "Ann");

    sandbox.faults().set_latency(Duration::from_millis(300));
    let hung_up = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap()
        .patch(contact_url(&sandbox, &id))
        .bearer_auth(&token)
        .header("If-Match", "*")
        .json(&json!({"firstname": "Late"}))
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sandbox.contact(&id).unwrap()["firstname"] != "Late" {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
