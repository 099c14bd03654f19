//! The HubSpot sandbox's wire shapes, checked with raw HTTP: what the adapter relies on must
//! match HubSpot's API documentation, and the inspection counters must see what they claim.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use unisync_hubspot::sandbox::HubspotSandbox;
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

#[tokio::test]
async fn a_write_lands_even_when_the_client_hangs_up_before_the_answer() {
    use tokio::io::AsyncWriteExt;

    let sandbox = common::sandbox(0).await;
    let id = sandbox.create_contact(&[("city", "Lisbon")]);
    sandbox.faults().set_latency(Duration::from_millis(300));
    let body = json!({"properties": {"city": "Porto"}}).to_string();
    let request = format!(
        "PATCH /crm/v3/objects/contacts/{id} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        sandbox.addr(),
        sandbox.access_token(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sandbox.addr())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    // Wait until the sandbox holds the request, then hang up before its answer.
    common::eventually("the sandbox starts the write", || async {
        sandbox.stats().requests == 1
    })
    .await;
    drop(stream);
    common::eventually("the write lands after the hang-up", || async {
        sandbox.contact(&id).unwrap()["city"] == "Porto"
    })
    .await;
    assert_eq!(sandbox.stats().contacts_written, 1);
}

#[tokio::test]
async fn revoked_scopes_refuse_every_crm_call_but_not_the_token_endpoint() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[]);
    let company = sandbox.create_company("Acme");
    sandbox.faults().set_standing(Fault::AccessRevoked);
    let calls = [
        (
            reqwest::Method::GET,
            "/crm/v3/objects/contacts".to_string(),
            None,
            "read",
        ),
        (
            reqwest::Method::GET,
            format!("/crm/v3/objects/contacts/{id}"),
            None,
            "read",
        ),
        (
            reqwest::Method::PATCH,
            format!("/crm/v3/objects/contacts/{id}"),
            Some(json!({"properties": {"city": "x"}})),
            "write",
        ),
        (
            reqwest::Method::POST,
            "/crm/v3/objects/contacts/batch/update".to_string(),
            Some(json!({"inputs": [{"id": id, "properties": {"city": "x"}}]})),
            "write",
        ),
        (
            reqwest::Method::POST,
            "/crm/v3/objects/contacts/batch/read".to_string(),
            Some(json!({"inputs": [{"id": id}], "properties": []})),
            "read",
        ),
        (
            reqwest::Method::GET,
            format!("/crm/v4/objects/contacts/{id}/associations/companies"),
            None,
            "read",
        ),
        (
            reqwest::Method::PUT,
            format!("/crm/v4/objects/contacts/{id}/associations/default/companies/{company}"),
            None,
            "write",
        ),
        (
            reqwest::Method::DELETE,
            format!("/crm/v4/objects/contacts/{id}/associations/companies/{company}"),
            None,
            "write",
        ),
    ];
    for (method, path, body, access) in calls {
        let (status, _, answer) = wire.send(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(answer["category"], "MISSING_SCOPES");
        assert_eq!(
            answer["errors"][0]["context"]["requiredGranularScopes"],
            json!([format!("crm.objects.contacts.{access}")]),
            "{method} {path}"
        );
    }
    assert!(!sandbox.contact(&id).unwrap().contains_key("city"));
    assert!(sandbox.company_ids_of(&id).is_empty());

    let oauth = sandbox.oauth_credentials();
    let form = [
        ("grant_type", "refresh_token".to_string()),
        ("client_id", oauth.client_id),
        ("client_secret", oauth.client_secret),
        ("refresh_token", oauth.refresh_token),
    ];
    let token = wire
        .http
        .post(format!("{}/oauth/v1/token", wire.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
}

#[tokio::test]
async fn emails_follow_hubspots_rules_not_unisyncs() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[("email", "ann@example.com")]);
    for refused in [
        "ann@corp.example",
        "ann..lee@example.com",
        "tb.tb@yahoo.comtttt",
    ] {
        let (status, body) = wire.patch(&id, json!({"email": refused})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(body["category"], "VALIDATION_ERROR");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(r#""error":"INVALID_EMAIL","name":"email""#),
            "{message}"
        );
        assert!(message.contains(&format!("Email address {refused} is invalid")));
    }
    let long_local_part = format!("{}@example.design", "a".repeat(70));
    let (status, body) = wire.patch(&id, json!({"email": long_local_part})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn account_details_name_the_time_zone_and_count_apart_from_crm_calls() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    assert_eq!(sandbox.time_zone(), "US/Eastern");
    let (status, _, body) = wire
        .send(reqwest::Method::GET, "/account-info/v3/details", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["timeZone"], "US/Eastern");
    assert!(body["portalId"].is_u64());
    assert!(matches!(
        body["utcOffset"].as_str(),
        Some("-05:00" | "-04:00")
    ));
    sandbox.set_time_zone("Asia/Kolkata");
    sandbox.faults().fail_next(1, Fault::ServerError(503));
    let (status, _, body) = wire
        .send(reqwest::Method::GET, "/account-info/v3/details", None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "scripted faults are for contact calls"
    );
    assert_eq!(
        (
            &body["timeZone"],
            &body["utcOffset"],
            &body["utcOffsetMilliseconds"]
        ),
        (&json!("Asia/Kolkata"), &json!("+05:30"), &json!(19_800_000))
    );
    let stats = sandbox.stats();
    assert_eq!((stats.account_details, stats.requests), (2, 0));
}

#[tokio::test]
async fn association_faults_touch_association_calls_only() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[]);
    let company = sandbox.create_company("Acme");
    sandbox
        .association_faults()
        .fail_next(1, Fault::ServerError(502));
    let (status, _) = wire.patch(&id, json!({"city": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/crm/v4/objects/contacts/{id}/associations/default/companies/{company}");
    let (status, _, _) = wire.send(reqwest::Method::PUT, &path, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, _, _) = wire.send(reqwest::Method::PUT, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sandbox.company_ids_of(&id), vec![company]);
}

#[tokio::test]
async fn a_merged_away_id_reads_and_writes_as_the_new_contact() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let primary = sandbox.create_contact(&[("email", "ann@example.com"), ("city", "Lisbon")]);
    let merged = sandbox.create_contact(&[("email", "ann.lee@example.com"), ("zip", "1000")]);
    let gone = sandbox.create_contact(&[("city", "Faro")]);
    sandbox.delete_contact(&gone);
    let survivor = sandbox.merge_contacts(&primary, &merged).unwrap();
    assert!(![&primary, &merged].contains(&&survivor), "a new id");

    let (status, _, body) = wire
        .send(
            reqwest::Method::GET,
            &format!("/crm/v3/objects/contacts/{merged}?properties=city,zip,hs_merged_object_ids"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], survivor.as_str());
    assert_eq!(body["properties"]["city"], "Lisbon");
    assert_eq!(body["properties"]["zip"], "1000");
    assert_eq!(
        body["properties"]["hs_merged_object_ids"],
        format!("{primary};{merged}")
    );

    let (status, body) = wire.patch(&merged, json!({"city": "Porto"})).await;
    assert_eq!(
        (status, body["id"].as_str()),
        (StatusCode::OK, Some(survivor.as_str()))
    );
    let (status, body) = wire
        .batch(vec![
            json!({"id": primary, "properties": {"city": "Braga"}}),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["id"], survivor.as_str());
    assert_eq!(sandbox.contact(&survivor).unwrap()["city"], "Braga");

    let (status, _, body) = wire
        .send(
            reqwest::Method::POST,
            "/crm/v3/objects/contacts/batch/read",
            Some(json!({"inputs": [{"id": merged}, {"id": gone}], "properties": ["city"]})),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    assert_eq!(body["results"][0]["id"], survivor.as_str());
    assert_eq!(body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(body["errors"][0]["context"]["ids"], json!([gone]));

    let (status, _, body) = wire
        .send(
            reqwest::Method::GET,
            "/crm/v3/objects/contacts?limit=100",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|contact| contact["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [survivor.as_str()],
        "only the new contact is listed"
    );
}

#[tokio::test]
async fn a_persons_edit_moves_the_version_but_is_no_api_write() {
    let sandbox = common::sandbox(0).await;
    let wire = Wire::new(&sandbox);
    let id = sandbox.create_contact(&[("email", "ann@example.com"), ("city", "Lisbon")]);
    let taken = sandbox.create_contact(&[("email", "taken@example.com")]);
    let before = sandbox.contact(&id).unwrap()["lastmodifieddate"].clone();

    sandbox
        .edit_as_person(&id, &[("email", " Ann.Lee@Example.COM"), ("city", "")])
        .unwrap();

    let stored = sandbox.contact(&id).unwrap();
    assert_eq!(
        stored["email"], "ann.lee@example.com",
        "stored as a write stores it"
    );
    assert!(!stored.contains_key("city"), "an empty value clears");
    assert!(stored["lastmodifieddate"] > before);
    assert_eq!(
        sandbox.stats(),
        Default::default(),
        "no API request, no write counted"
    );
    let (_, _, body) = wire
        .send(
            reqwest::Method::GET,
            &format!("/crm/v3/objects/contacts/{id}"),
            None,
        )
        .await;
    assert_eq!(body["updatedAt"], stored["lastmodifieddate"].as_str());

    let refused = sandbox.edit_as_person(&id, &[("email", "not-an-email")]);
    assert!(refused.unwrap_err().contains("INVALID_EMAIL"));
    let conflict = sandbox.edit_as_person(&id, &[("email", "TAKEN@example.com")]);
    assert_eq!(
        conflict.unwrap_err(),
        format!("Contact already exists. Existing ID: {taken}")
    );
    assert!(sandbox.edit_as_person("999999", &[("city", "x")]).is_err());
    assert_eq!(
        sandbox.contact(&id).unwrap(),
        stored,
        "refused edits change nothing"
    );
}
