//! The sandbox org answers the way Salesforce's documentation says it does, for the parts the adapter
//! never provokes itself.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use unisync_salesforce::sandbox::SalesforceSandbox;
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

/// Bulk API 2.0 calls on a sandbox, by hand.
struct Bulk<'a> {
    sandbox: &'a SalesforceSandbox,
    http: reqwest::Client,
    token: String,
}

impl Bulk<'_> {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/services/data/v62.0/jobs/ingest{path}",
            self.sandbox.instance_url()
        )
    }

    async fn create(&self, request: Value) -> reqwest::Response {
        let url = self.url("");
        self.http
            .post(url)
            .bearer_auth(&self.token)
            .json(&request)
            .send()
            .await
            .unwrap()
    }

    /// A new update job on Contact; its id.
    async fn job(&self) -> String {
        let request = json!({"object": "Contact", "operation": "update", "contentType": "CSV",
                             "lineEnding": "LF"});
        let created: Value = self.create(request).await.json().await.unwrap();
        created["id"].as_str().unwrap().to_string()
    }

    async fn upload(&self, job: &str, csv: &str) -> reqwest::Response {
        let url = self.url(&format!("/{job}/batches"));
        self.http
            .put(url)
            .bearer_auth(&self.token)
            .header("Content-Type", "text/csv")
            .body(csv.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn set_state(&self, job: &str, state: &str) -> reqwest::Response {
        let url = self.url(&format!("/{job}"));
        self.http
            .patch(url)
            .bearer_auth(&self.token)
            .json(&json!({ "state": state }))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = self.url(path);
        self.http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// The job's description once it has ended, within a generous deadline.
    async fn ended(&self, job: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info: Value = self.get(&format!("/{job}")).await.json().await.unwrap();
            if ["JobComplete", "Failed", "Aborted"].contains(&info["state"].as_str().unwrap()) {
                return info;
            }
            assert!(tokio::time::Instant::now() < deadline, "{info}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }
}

async fn bulk(sandbox: &SalesforceSandbox) -> Bulk<'_> {
    let (http, token) = raw_client(sandbox).await;
    Bulk {
        sandbox,
        http,
        token,
    }
}

#[tokio::test]
async fn ingest_jobs_move_through_their_states_and_answer_csv_results() {
    let sandbox = common::sandbox().await;
    let bulk = bulk(&sandbox).await;
    let ok = common::contact(&sandbox, &[("Phone", "1"), ("Title", "Old")]);
    let gone = common::contact(&sandbox, &[]);
    assert!(sandbox.delete_contact(&gone));
    sandbox.set_bulk_processing_time(Duration::from_secs(3600));

    let answer = bulk
        .create(json!({"object": "Contact", "operation": "update", "lineEnding": "LF"}))
        .await;
    assert_eq!(answer.status(), 200);
    let created: Value = answer.json().await.unwrap();
    let job = created["id"].as_str().unwrap().to_string();
    assert!(job.starts_with("750") && job.len() == 18, "{job}");
    assert_eq!(created["state"], "Open");
    assert_eq!(created["contentType"], "CSV");
    assert_eq!(created["apiVersion"], json!(62.0));
    assert_eq!(
        created["contentUrl"],
        format!("services/data/v62.0/jobs/ingest/{job}/batches")
    );
    // Results exist only once the job has ended.
    let early = bulk.get(&format!("/{job}/successfulResults/")).await;
    assert_eq!(early.status(), 409);
    let body: Value = early.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "INVALIDJOBSTATE");

    let csv = format!(
        "Id,Title,Phone,Email\n{ok},\"CTO, acting\",#N/A,\n{gone},x,,\nnope,x,,\n{},,,bad\n",
        sandbox.short_id(&ok)
    );
    assert_eq!(bulk.upload(&job, &csv).await.status(), 201);
    let again = bulk.upload(&job, &csv).await;
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Found multiple contents for job"),
        "{body}"
    );
    let closed = bulk.set_state(&job, "UploadComplete").await;
    assert_eq!(closed.status(), 200);
    let closed: Value = closed.json().await.unwrap();
    assert_eq!(closed["state"], "UploadComplete");
    let info: Value = bulk.get(&format!("/{job}")).await.json().await.unwrap();
    assert_eq!(info["state"], "InProgress");
    assert_eq!(info["jobType"], "V2Ingest");
    assert_eq!(
        common::stored(&sandbox, &ok, "Title").as_deref(),
        Some("Old")
    );

    sandbox.set_bulk_processing_time(Duration::ZERO);
    let info = bulk.ended(&job).await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["numberRecordsProcessed"], 4);
    assert_eq!(info["numberRecordsFailed"], 3);
    assert_eq!(
        common::stored(&sandbox, &ok, "Title").as_deref(),
        Some("CTO, acting")
    );
    assert_eq!(common::stored(&sandbox, &ok, "Phone"), None, "#N/A clears");
    assert_eq!(sandbox.stats().bulk_records_processed, 4);
    assert_eq!(sandbox.bulk_records_used(), 4);

    assert_eq!(
        bulk.text(&format!("/{job}/successfulResults/")).await,
        format!(
            "\"sf__Id\",\"sf__Created\",Id,Title,Phone,Email\n\"{ok}\",\"false\",{ok},\"CTO, acting\",#N/A,\n"
        )
    );
    assert_eq!(
        bulk.text(&format!("/{job}/failedResults")).await,
        format!(
            "\"sf__Id\",\"sf__Error\",Id,Title,Phone,Email\n\
             \"{gone}\",\"ENTITY_IS_DELETED:entity is deleted:--\",{gone},x,,\n\
             \"\",\"MALFORMED_ID:Contact ID: id value of incorrect type: nope:Id --\",nope,x,,\n\
             \"{ok}\",\"INVALID_EMAIL_ADDRESS:Email: invalid email address: bad:Email --\",{},,,bad\n",
            sandbox.short_id(&ok)
        )
    );
    assert_eq!(
        bulk.text(&format!("/{job}/unprocessedrecords/")).await,
        "Id,Title,Phone,Email\n"
    );
    let abort = bulk.set_state(&job, "Aborted").await;
    assert_eq!(abort.status(), 409);
    let body: Value = abort.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"message": "Aborting already Completed Job not allowed",
                "errorCode": "INVALIDJOBSTATE", "fields": []}])
    );
    assert_eq!(sandbox.stats().bulk_jobs_created, 1);
}

#[tokio::test]
async fn ingest_jobs_refuse_what_salesforce_refuses() {
    let sandbox = common::sandbox().await;
    let bulk = bulk(&sandbox).await;
    for (request, message) in [
        (
            json!({"object": "Contac", "operation": "update"}),
            "Invalid object: Contac",
        ),
        (
            json!({"object": "Contact", "operation": "updte"}),
            "Invalid operation: updte",
        ),
        (
            json!({"object": "Contact", "operation": "update", "lineEnding": "CR"}),
            "Invalid lineEnding: CR",
        ),
    ] {
        let answer = bulk.create(request).await;
        assert_eq!(answer.status(), 400);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body[0]["errorCode"], "INVALIDJOB");
        assert_eq!(body[0]["message"], message);
    }
    let missing = bulk.get("/750SB0000000099AAA").await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "NOT_FOUND");

    // Data Salesforce cannot read fails the job as a whole; its records are unprocessed.
    let id = common::contact(&sandbox, &[]);
    for (csv, error_message) in [
        (
            format!("Id,Titel\n{id},CTO\n"),
            "InvalidBatch : Field name not found : Titel",
        ),
        (
            "Title\nCTO\n".to_string(),
            "InvalidBatch : Field name not found : Id",
        ),
        (
            format!("Id,Title\r\n{id},CTO\r\n"),
            "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting \
             is LF",
        ),
    ] {
        let job = bulk.job().await;
        assert_eq!(bulk.upload(&job, &csv).await.status(), 201);
        assert_eq!(bulk.set_state(&job, "UploadComplete").await.status(), 200);
        let info = bulk.ended(&job).await;
        assert_eq!(info["state"], "Failed");
        assert_eq!(info["errorMessage"], error_message);
        assert_eq!(info["numberRecordsProcessed"], 0);
        let unprocessed = bulk.text(&format!("/{job}/unprocessedrecords/")).await;
        if !error_message.starts_with("ClientInputError") {
            assert_eq!(unprocessed, csv, "{error_message}");
        }
    }
    assert_eq!(common::stored(&sandbox, &id, "Title"), None);
    assert_eq!(sandbox.stats().bulk_records_processed, 0);
}

#[tokio::test]
async fn bulk_calls_count_as_api_requests_and_see_the_faults() {
    let sandbox = common::sandbox().await;
    let bulk = bulk(&sandbox).await;
    let job = bulk.job().await;
    let answer = bulk.get(&format!("/{job}")).await;
    assert_eq!(
        answer.headers()["Sforce-Limit-Info"].to_str().unwrap(),
        "api-usage=2/100000"
    );
    sandbox.faults().fail_next(1, Fault::DailyLimit);
    let refused = bulk.upload(&job, "Id\n").await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    sandbox.faults().fail_next(1, Fault::ServerError(503));
    assert_eq!(bulk.set_state(&job, "UploadComplete").await.status(), 503);
    assert_eq!(sandbox.bulk_job_state(&job), Some("Open"));
    assert_eq!(sandbox.stats().requests, 2, "refused calls are not served");
}

#[tokio::test]
async fn a_job_past_the_daily_bulk_allowance_fails_with_its_records_unprocessed() {
    let sandbox = common::sandbox().await;
    let bulk = bulk(&sandbox).await;
    let id = common::contact(&sandbox, &[]);
    sandbox.set_bulk_daily_record_limit(10);
    sandbox.set_bulk_records_used(10);
    let job = bulk.job().await;
    let csv = format!("Id,Title\n{id},CTO\n");
    bulk.upload(&job, &csv).await;
    bulk.set_state(&job, "UploadComplete").await;
    let info = bulk.ended(&job).await;
    assert_eq!(info["state"], "Failed");
    assert!(
        info["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("ExceededQuota : "),
        "{info}"
    );
    assert_eq!(bulk.text(&format!("/{job}/unprocessedrecords/")).await, csv);
    assert_eq!(
        bulk.text(&format!("/{job}/successfulResults/")).await,
        "\"sf__Id\",\"sf__Created\",Id,Title\n"
    );
    assert_eq!(common::stored(&sandbox, &id, "Title"), None);
    assert_eq!(sandbox.bulk_records_used(), 10);
}
