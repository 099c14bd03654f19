//! The sandbox org answers the way crm-apis.md says Salesforce does, for the parts the adapter
//! never provokes itself.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use unisync_sandbox::salesforce::SalesforceSandbox;
use unisync_sandbox::{Fault, SandboxCrm};

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

/// A client and a session token on `sandbox`.
async fn raw_client(sandbox: &SalesforceSandbox) -> (reqwest::Client, String) {
    let http = reqwest::Client::new();
    let token = session(&http, sandbox).await;
    (http, token)
}

#[tokio::test]
async fn a_write_received_is_applied_even_when_the_client_hangs_up() {
    let sandbox = common::sandbox().await;
    let (_, token) = raw_client(&sandbox).await;
    let id = common::contact(&sandbox, &[]);
    sandbox.faults().set_latency(Duration::from_millis(800));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let sent = impatient
        .patch(format!(
            "{}/services/data/v62.0/sobjects/Contact/{id}",
            sandbox.instance_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"Title": "Landed late"}))
        .send()
        .await;
    assert!(sent.unwrap_err().is_timeout());
    assert!(common::eventually_stored(&sandbox, &id, "Title", "Landed late").await);
    sandbox.faults().set_latency(Duration::ZERO);
    let records: Vec<Value> = (0..2)
        .map(|_| {
            let id = common::contact(&sandbox, &[]);
            json!({"attributes": {"type": "Contact"}, "id": id, "Title": "Batch landed late"})
        })
        .collect();
    sandbox.faults().set_latency(Duration::from_millis(800));
    let sent = impatient
        .patch(format!(
            "{}/services/data/v62.0/composite/sobjects",
            sandbox.instance_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"allOrNone": false, "records": records}))
        .send()
        .await;
    assert!(sent.unwrap_err().is_timeout());
    for record in &records {
        let id = record["id"].as_str().unwrap();
        assert!(common::eventually_stored(&sandbox, id, "Title", "Batch landed late").await);
    }
}

#[tokio::test]
async fn urls_salesforce_does_not_serve_answer_not_found_for_the_uri() {
    let sandbox = common::sandbox().await;
    let (http, token) = raw_client(&sandbox).await;
    let id = common::contact(&sandbox, &[]);
    let not_found =
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]);
    for path in [
        format!("/services/data/v12.0/sobjects/Contact/{id}"),
        "/services/data/v99.0/query?q=SELECT+Id+FROM+Contact".to_string(),
        "/services/data/v62.5/query?q=SELECT+Id+FROM+Contact".to_string(),
        format!("/services/data/v62.0/sobjects/Contakt/{id}"),
        "/services/data/v62.0/nothing/here".to_string(),
    ] {
        let answer = http
            .get(format!("{}{path}", sandbox.instance_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404, "{path}");
        assert_eq!(answer.json::<Value>().await.unwrap(), not_found, "{path}");
    }
    let retired = http
        .get(format!(
            "{}/services/data/v30.0/sobjects/Contact/{id}",
            sandbox.instance_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(retired.status(), 410);
}

#[tokio::test]
async fn queries_and_collections_see_the_faults_too() {
    let sandbox = common::sandbox().await;
    let (http, token) = raw_client(&sandbox).await;
    let id = common::contact(&sandbox, &[]);
    let url = |path: &str| format!("{}/services/data/v62.0/{path}", sandbox.instance_url());
    let query = || {
        http.get(url("query"))
            .query(&[("q", "SELECT Id FROM Contact")])
            .bearer_auth(&token)
            .send()
    };
    let collection = || {
        http.patch(url("composite/sobjects"))
            .bearer_auth(&token)
            .json(&json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Contact"}, "id": id, "Title": "x"}
            ]}))
            .send()
    };
    sandbox.faults().set_standing(Fault::AccessRevoked);
    for answer in [query().await.unwrap(), collection().await.unwrap()] {
        assert_eq!(answer.status(), 403);
        let errors: Value = answer.json().await.unwrap();
        assert_eq!(errors[0]["errorCode"], "API_DISABLED_FOR_ORG");
    }
    sandbox.faults().set_standing(Fault::EndpointNotFound);
    for answer in [query().await.unwrap(), collection().await.unwrap()] {
        assert_eq!(answer.status(), 404);
        let errors: Value = answer.json().await.unwrap();
        assert_eq!(errors[0]["errorCode"], "NOT_FOUND");
    }
    sandbox.faults().clear_standing();
    assert_eq!(query().await.unwrap().status(), 200);
}

#[tokio::test]
async fn email_fields_follow_salesforces_rules_and_are_stored_in_lower_case() {
    let sandbox = common::sandbox().await;
    let (http, token) = raw_client(&sandbox).await;
    let id = common::contact(&sandbox, &[]);
    let write = |email: &str| {
        http.patch(format!(
            "{}/services/data/v62.0/sobjects/Contact/{id}",
            sandbox.instance_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"Email": email}))
        .send()
    };
    // Accepted by Salesforce though RFC 5322 refuses them.
    for email in ["Taro..Yamada@Example.jp", "taro.@example.jp"] {
        assert_eq!(write(email).await.unwrap().status(), 204, "{email}");
        assert_eq!(
            common::stored(&sandbox, &id, "Email"),
            Some(email.to_lowercase())
        );
    }
    // Refused by Salesforce though other validators accept them.
    for email in [".ann@example.com", "ann@bücher.de", "ann@[192.0.2.1]"] {
        let answer = write(email).await.unwrap();
        assert_eq!(answer.status(), 400, "{email}");
        let errors: Value = answer.json().await.unwrap();
        assert_eq!(
            errors,
            json!([{
                "message": format!("Email: invalid email address: {email}"),
                "errorCode": "INVALID_EMAIL_ADDRESS",
                "fields": ["Email"],
            }])
        );
    }
}

#[tokio::test]
async fn fifteen_character_ids_are_accepted_and_eighteen_answered() {
    let sandbox = common::sandbox().await;
    let (http, token) = raw_client(&sandbox).await;
    let account = sandbox.create_account("Acme");
    let ids: Vec<String> = (0..2).map(|_| common::contact(&sandbox, &[])).collect();
    let short: Vec<String> = ids.iter().map(|id| sandbox.short_id(id)).collect();
    assert!(ids.iter().all(|id| id.len() == 18));
    let url = |path: &str| format!("{}/services/data/v62.0/{path}", sandbox.instance_url());

    let patched = http
        .patch(url(&format!("sobjects/Contact/{}", short[0])))
        .bearer_auth(&token)
        .json(&json!({"Title": "Short", "AccountId": sandbox.short_id(&account)}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204);
    assert_eq!(
        common::stored(&sandbox, &ids[0], "AccountId"),
        Some(account.clone())
    );
    let read: Value = http
        .get(url(&format!("sobjects/Contact/{}", short[0])))
        .query(&[("fields", "Id,Title")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&read["Id"], &read["Title"]),
        (&json!(ids[0]), &json!("Short"))
    );

    let results: Value = http
        .patch(url("composite/sobjects"))
        .bearer_auth(&token)
        .json(&json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Contact"}, "id": short[1], "Title": "Short too"},
            {"attributes": {"type": "Contact"}, "id": "003nope", "Title": "x"},
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        results[0],
        json!({"id": ids[1], "success": true, "errors": []})
    );
    assert_eq!(results[1]["errors"][0]["statusCode"], "MALFORMED_ID");

    let soql = format!(
        "SELECT Id FROM Contact WHERE Id IN ('{}', '{}')",
        short[0],
        ids[1].to_lowercase()
    );
    let found: Value = http
        .get(url("query"))
        .query(&[("q", soql.as_str())])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found: Vec<&str> = found["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["Id"].as_str().unwrap())
        .collect();
    assert_eq!(found, ids);

    // A 15-character id is case-sensitive: another case is another (missing) record.
    let other_case = http
        .get(url(&format!(
            "sobjects/Contact/{}",
            short[0].to_lowercase()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other_case.status(), 404);
}

#[tokio::test]
async fn merged_contacts_are_deleted_and_found_only_by_query_all() {
    let sandbox = common::sandbox().await;
    let (http, token) = raw_client(&sandbox).await;
    let master = common::contact(&sandbox, &[("Title", "CTO")]);
    let loser = common::contact(&sandbox, &[("Title", "CEO")]);
    sandbox.merge_contacts(&master, &sandbox.short_id(&loser));
    let url = |path: &str| format!("{}/services/data/v62.0/{path}", sandbox.instance_url());
    let soql = format!(
        "SELECT Id, Title, IsDeleted, MasterRecordId FROM Contact WHERE Id IN ('{master}', '{loser}')"
    );
    let run = |resource: &str| {
        http.get(url(resource))
            .query(&[("q", soql.as_str())])
            .bearer_auth(&token)
            .send()
    };
    let live: Value = run("query").await.unwrap().json().await.unwrap();
    assert_eq!(live["totalSize"], 1);
    assert_eq!(
        (&live["records"][0]["Id"], &live["records"][0]["Title"]),
        (&json!(master), &json!("CTO")),
        "the master keeps its values"
    );
    assert_eq!(live["records"][0]["MasterRecordId"], Value::Null);
    let all: Value = run("queryAll").await.unwrap().json().await.unwrap();
    assert_eq!(all["totalSize"], 2);
    let merged = &all["records"][1];
    assert_eq!(
        (
            &merged["Id"],
            &merged["IsDeleted"],
            &merged["MasterRecordId"]
        ),
        (&json!(loser), &json!(true), &json!(master))
    );
    let write = http
        .patch(url(&format!("sobjects/Contact/{loser}")))
        .bearer_auth(&token)
        .json(&json!({"Title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 404);
    assert_eq!(
        write.json::<Value>().await.unwrap(),
        json!([{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}])
    );
    assert_eq!(sandbox.contact(&loser), None);

    // queryAll pages like query, under its own resource.
    sandbox.set_query_page_size(1);
    let first: Value = run("queryAll").await.unwrap().json().await.unwrap();
    let next = first["nextRecordsUrl"].as_str().unwrap();
    assert!(next.contains("/queryAll/"), "{next}");
    let second: Value = http
        .get(format!("{}{next}", sandbox.instance_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["records"][0]["Id"], json!(loser));
}

#[tokio::test]
async fn if_unmodified_since_refuses_a_write_to_a_record_changed_after_it() {
    let sandbox = common::sandbox().await;
    let (http, token) = raw_client(&sandbox).await;
    let id = common::contact(&sandbox, &[("Title", "CTO")]);
    let stamp = common::stored(&sandbox, &id, "LastModifiedDate").unwrap();
    let modified = time::OffsetDateTime::parse(
        &stamp.replace("+0000", "Z"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let http_date = |at: time::OffsetDateTime| httpdate::fmt_http_date(at.into());
    let write = |title: &'static str, since: String| {
        http.patch(format!(
            "{}/services/data/v62.0/sobjects/Contact/{id}",
            sandbox.instance_url()
        ))
        .bearer_auth(&token)
        .header("If-Unmodified-Since", since)
        .json(&json!({"Title": title}))
        .send()
    };
    let refused = write("Early", http_date(modified - time::Duration::seconds(1)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 412);
    let errors: Value = refused.json().await.unwrap();
    assert_eq!(errors[0]["errorCode"], "PRECONDITION_FAILED");
    assert_eq!(
        common::stored(&sandbox, &id, "Title").as_deref(),
        Some("CTO")
    );

    // The header's second covers the record's LastModifiedDate within it.
    let landed = write("On time", http_date(modified)).await.unwrap();
    assert_eq!(landed.status(), 204);
    assert_eq!(
        common::stored(&sandbox, &id, "Title").as_deref(),
        Some("On time")
    );

    // A person's edit a second later: a write prepared before it is refused.
    let before = sandbox.stats();
    sandbox.advance_clock(Duration::from_secs(1));
    sandbox.edit_as_person(&id, &[("Title", " Chief  "), ("Phone", "555")]);
    assert_eq!(sandbox.stats(), before, "not an API request");
    assert_eq!(
        common::stored(&sandbox, &id, "Title").as_deref(),
        Some("Chief")
    );
    let after_edit = common::stored(&sandbox, &id, "LastModifiedDate").unwrap();
    assert!(after_edit > stamp);
    let refused = write("Stale", http_date(modified)).await.unwrap();
    assert_eq!(refused.status(), 412);

    let malformed = write("x", "yesterday".to_string()).await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        common::stored(&sandbox, &id, "Title").as_deref(),
        Some("Chief")
    );
}
