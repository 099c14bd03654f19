//! The sandbox org answers the way crm-apis.md says Salesforce does, for the parts the adapter
//! never provokes itself.

mod common;

use serde_json::{Value, json};
use unisync_sandbox::salesforce::SalesforceSandbox;

/// A session token from the sandbox's refresh-token grant.
async fn session(http: &reqwest::Client, sandbox: &SalesforceSandbox) -> String {
    let credentials = sandbox.credentials();
    let answer: Value = http
        .post(format!("{}/services/oauth2/token", sandbox.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &credentials.client_id),
            ("client_secret", &credentials.client_secret),
            ("refresh_token", &credentials.refresh_token),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["instance_url"], sandbox.instance_url());
    assert_eq!(answer["token_type"], "Bearer");
    assert!(answer.get("expires_in").is_none());
    answer["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn token_refusals_are_oauth_errors() {
    let sandbox = common::sandbox().await;
    let answer = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", sandbox.base_url()))
        .form(&[("grant_type", "client_credentials"), ("client_id", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_id");
}

#[tokio::test]
async fn data_answers_carry_the_budget_and_refuse_what_salesforce_refuses() {
    let sandbox = common::sandbox().await;
    let http = reqwest::Client::new();
    let token = session(&http, &sandbox).await;
    let id = common::contact(&sandbox, &[("Email", "a@b.co")]);
    let url = |path: &str| format!("{}/services/data/v62.0/{path}", sandbox.instance_url());
    let query_contacts = |url: String| {
        http.get(url)
            .query(&[("q", "SELECT Id FROM Contact")])
            .bearer_auth(&token)
            .send()
    };

    let read = http
        .get(url(&format!("sobjects/Contact/{id}")))
        .query(&[("fields", "Email,LastName,LastModifiedDate")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.headers()["Sforce-Limit-Info"].to_str().unwrap(),
        "api-usage=1/100000"
    );
    let record: Value = read.json().await.unwrap();
    assert_eq!(record["Email"], "a@b.co");
    assert_eq!(record["attributes"]["type"], "Contact");
    assert!(record.get("Phone").is_none(), "only the fields asked for");

    let records: Vec<Value> = (0..201)
        .map(|_| json!({"attributes": {"type": "Contact"}, "id": id, "Title": "x"}))
        .collect();
    let too_many = http
        .patch(url("composite/sobjects"))
        .bearer_auth(&token)
        .json(&json!({"allOrNone": false, "records": records}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    let errors: Value = too_many.json().await.unwrap();
    assert_eq!(errors[0]["errorCode"], "EXCEEDED_ID_LIMIT");

    let bad_email = http
        .patch(url(&format!("sobjects/Contact/{id}")))
        .bearer_auth(&token)
        .json(&json!({"Email": "not-an-email"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_email.status(), 400);
    let errors: Value = bad_email.json().await.unwrap();
    assert_eq!(errors[0]["errorCode"], "INVALID_EMAIL_ADDRESS");
    assert_eq!(errors[0]["fields"], json!(["Email"]));

    let retired = query_contacts(format!(
        "{}/services/data/v30.0/query",
        sandbox.instance_url()
    ))
    .await
    .unwrap();
    assert_eq!(retired.status(), 410);

    sandbox.set_daily_limit(3);
    let over = query_contacts(url("query")).await.unwrap();
    assert_eq!(over.status(), 403);
    let errors: Value = over.json().await.unwrap();
    assert_eq!(errors[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");

    sandbox.invalidate_sessions();
    let expired = query_contacts(url("query")).await.unwrap();
    assert_eq!(expired.status(), 401);
    let errors: Value = expired.json().await.unwrap();
    assert_eq!(
        errors,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}])
    );
}
