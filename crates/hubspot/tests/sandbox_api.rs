//! The HubSpot sandbox's wire shapes, checked with raw HTTP: what the adapter relies on must
//! match `shared/docs/crm-apis.md`, and the inspection counters must see what they claim.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use unisync_sandbox::hubspot::HubspotSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

struct Wire {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Wire {
    fn new(sandbox: &HubspotSandbox) -> Self {
        Wire {
            http: reqwest::Client::new(),
            base: sandbox.base_url(),
            token: sandbox.access_token(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn patch(&self, id: &str, properties: Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(
                reqwest::Method::PATCH,
                &format!("/crm/v3/objects/contacts/{id}"),
                Some(json!({ "properties": properties })),
            )
            .await;
        (status, body)
    }

    async fn batch(&self, inputs: Vec<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(
                reqwest::Method::POST,
                "/crm/v3/objects/contacts/batch/update",
                Some(json!({ "inputs": inputs })),
            )
            .await;
        (status, body)
    }
}

#[tokio::test]
async fn single_patch_answers_the_object_and_empty_clears() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[("email", "a@example.com"), ("phone", "1")]);
    let (status, body) = wire
        .patch(&id, json!({"email": "B@Example.com", "phone": ""}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["properties"]["email"], "b@example.com");
    assert_eq!(body["archived"], false);
    assert!(body["createdAt"].is_string() && body["updatedAt"].is_string());
    assert!(!sandbox.contact(&id).unwrap().contains_key("phone"));
}

#[tokio::test]
async fn batches_answer_200_207_and_whole_batch_400s() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let a = sandbox.create_contact(&[("city", "x")]);
    let b = sandbox.create_contact(&[("city", "x")]);
    let input = |id: &str, properties: Value| json!({"id": id, "properties": properties});

    let (status, body) = wire.batch(vec![input(&a, json!({"city": "y"}))]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("COMPLETE"))
    );

    let (status, body) = wire
        .batch(vec![
            input(&a, json!({"city": "z"})),
            input("999999", json!({"city": "z"})),
        ])
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(body["errors"][0]["context"]["ids"], json!(["999999"]));

    let (status, body) = wire
        .batch(vec![
            input(&a, json!({"city": "w"})),
            input(&a, json!({"city": "v"})),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Duplicate IDs")
    );

    let (status, body) = wire
        .batch(vec![
            input(&a, json!({"city": "w"})),
            input(&b, json!({"email": "nope"})),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["category"], "VALIDATION_ERROR");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("Property values were not valid: [{"));
    assert!(message.contains(r#""error":"INVALID_EMAIL","name":"email""#));
    assert_eq!(
        sandbox.contact(&a).unwrap()["city"],
        "z",
        "nothing of it landed"
    );

    let too_many = (0..101).map(|n| input(&n.to_string(), json!({}))).collect();
    let (status, body) = wire.batch(too_many).await;
    assert_eq!(
        (status, body["category"].as_str()),
        (StatusCode::BAD_REQUEST, Some("VALIDATION_ERROR"))
    );
}

#[tokio::test]
async fn limits_answer_with_headers_and_hubspots_429() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[]);
    sandbox.set_rate_limit(1, Duration::from_secs(10));
    let path = format!("/crm/v3/objects/contacts/{id}");
    let (status, headers, _) = wire.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-hubspot-ratelimit-max"], "1");
    assert_eq!(headers["x-hubspot-ratelimit-remaining"], "0");
    assert_eq!(
        headers["x-hubspot-ratelimit-interval-milliseconds"],
        "10000"
    );
    let (status, _, body) = wire.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(sandbox.stats().rate_limited, 1);

    sandbox.remove_rate_limit();
    sandbox.faults().fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(4),
        },
    );
    let (status, headers, _) = wire.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (StatusCode::TOO_MANY_REQUESTS, &"4".parse().unwrap())
    );
}

#[tokio::test]
async fn tokens_are_checked_and_refreshed_in_hubspots_shapes() {
    let sandbox = common::sandbox(0).await;
    let mut wire = Wire::new(&sandbox);
    wire.token = "wrong".into();
    let (status, _, body) = wire
        .send(reqwest::Method::GET, "/crm/v3/objects/contacts", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");

    let oauth = sandbox.oauth_credentials();
    let refresh = |refresh_token: String| {
        let oauth = oauth.clone();
        let http = wire.http.clone();
        let url = format!("{}/oauth/v1/token", wire.base);
        async move {
            let form = [
                ("grant_type", "refresh_token".to_string()),
                ("client_id", oauth.client_id),
                ("client_secret", oauth.client_secret),
                ("refresh_token", refresh_token),
            ];
            let response = http.post(url).form(&form).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = refresh("bad".into()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BAD_REFRESH_TOKEN"))
    );
    let ((first, issued), _) = tokio::join!(
        refresh(oauth.refresh_token.clone()),
        refresh(oauth.refresh_token.clone())
    );
    assert_eq!(first, StatusCode::OK);
    assert_eq!(issued["expires_in"], 1800);
    assert_eq!(
        sandbox.overlapping_refreshes(),
        1,
        "two refreshes at once are seen"
    );
    wire.token = issued["access_token"].as_str().unwrap().to_string();
    let (status, _, _) = wire
        .send(reqwest::Method::GET, "/crm/v3/objects/contacts", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn overlapping_writes_to_one_contact_are_counted() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[]);
    let other = sandbox.create_contact(&[]);
    sandbox.faults().set_latency(Duration::from_millis(100));
    tokio::join!(
        wire.patch(&id, json!({"city": "a"})),
        wire.patch(&other, json!({"city": "b"}))
    );
    assert_eq!(sandbox.stats().overlapping_writes, 0, "different contacts");
    tokio::join!(
        wire.patch(&id, json!({"city": "a"})),
        wire.patch(&id, json!({"city": "b"}))
    );
    assert_eq!(sandbox.stats().overlapping_writes, 1);
}
