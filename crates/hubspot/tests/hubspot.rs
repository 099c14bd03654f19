//! HubSpot-specific adapter behaviour against the sandbox: batch answers, whole-batch
//! refusals, merged records, conflicts, limits, OAuth under load, links and pulls.

mod common;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use unisync_core::{
    AdapterFactory, ContactField, ContactPatch, CredentialStore, CustomerLink, ErrorKind, PushItem,
    SourceAdapter,
};
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_hubspot::{HubspotFactory, REFRESH_TOKEN_KEY};
use unisync_sandbox::{Fault, SandboxCrm};

use common::{
    MemoryCredentials, connection, oauth_adapter, sandbox, token_adapter, token_adapter_with,
};

fn edit(id: &str, changes: &[(ContactField, &str)]) -> PushItem {
    PushItem {
        source_id: id.to_string(),
        patch: changes
            .iter()
            .map(|(field, value)| (*field, Some(value.to_string())))
            .collect(),
        customer: CustomerLink::Unchanged,
    }
}

fn link(id: &str, customer: CustomerLink) -> PushItem {
    PushItem {
        source_id: id.to_string(),
        patch: ContactPatch::new(),
        customer,
    }
}

fn contact(sandbox: &HubspotSandbox, tag: &str) -> String {
    sandbox.create_contact(&[
        ("email", &format!("{tag}@example.com")),
        ("firstname", "Seed"),
        ("city", "Lisbon"),
    ])
}

fn property(sandbox: &HubspotSandbox, id: &str, name: &str) -> Option<String> {
    sandbox.contact(id).unwrap().get(name).cloned()
}

#[tokio::test]
async fn the_factory_checks_config_and_contacts_nobody() {
    let sandbox = sandbox(0).await;
    let mut config = connection(&sandbox, json!({}), &[("access_token", "pat".into())]);
    config.settings["base_url"] = json!("http://127.0.0.1:1");
    let adapter = HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .unwrap();
    assert_eq!(adapter.system(), "hubspot");
    assert_eq!(adapter.capabilities().max_batch_size, 100);
    assert_eq!(sandbox.stats().requests, 0);
    config.settings.insert("acess_token_env".into(), json!("X"));
    let error = HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .err()
        .unwrap();
    assert_eq!(error.key, "acess_token_env");
}

#[tokio::test]
async fn a_write_confirms_hubspots_normalised_values_and_version() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let id = contact(&sandbox, "ann");
    let results = adapter
        .push(&[edit(&id, &[(ContactField::Email, "Ann.Lee@Example.COM")])])
        .await;
    let confirmed = results[0].as_ref().unwrap();
    let stored = sandbox.contact(&id).unwrap();
    assert_eq!(
        confirmed.values[&ContactField::Email].as_deref(),
        Some("ann.lee@example.com")
    );
    assert_eq!(
        confirmed.crm_version.as_deref(),
        Some(stored["lastmodifieddate"].as_str())
    );
    assert_eq!(
        confirmed.created_at.as_deref(),
        Some(stored["createdate"].as_str())
    );
}

#[tokio::test]
async fn a_batch_with_mixed_results_reports_each_item() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let landing: Vec<String> = (0..3)
        .map(|n| contact(&sandbox, &format!("mixed{n}")))
        .collect();
    let gone = contact(&sandbox, "gone");
    sandbox.delete_contact(&gone);
    let taken = contact(&sandbox, "taken");
    let clashing = contact(&sandbox, "clashing");
    let mut items: Vec<PushItem> = landing
        .iter()
        .map(|id| edit(id, &[(ContactField::City, "Porto")]))
        .collect();
    items.push(edit(&gone, &[(ContactField::City, "Porto")]));
    items.push(edit(
        &clashing,
        &[(ContactField::Email, "taken@example.com")],
    ));

    let results = adapter.push(&items).await;

    assert_eq!(results.len(), items.len());
    for (id, result) in landing.iter().zip(&results) {
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(property(&sandbox, id, "city").as_deref(), Some("Porto"));
    }
    let missing = results[3].as_ref().unwrap_err();
    assert_eq!(missing.kind, ErrorKind::RecordGone);
    let conflict = results[4].as_ref().unwrap_err();
    assert_eq!(conflict.code, "CONFLICT");
    assert!(conflict.message.contains(&format!("Existing ID: {taken}")));
    assert_eq!(sandbox.stats().batch_updates, 1, "one call for the batch");
}

#[tokio::test]
async fn one_invalid_email_fails_alone_and_the_rest_of_the_batch_lands() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let ids: Vec<String> = (0..40)
        .map(|n| contact(&sandbox, &format!("valid{n}")))
        .collect();
    let items: Vec<PushItem> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| match n {
            17 => edit(id, &[(ContactField::Email, "not-an-email")]),
            _ => edit(id, &[(ContactField::Position, "Buyer")]),
        })
        .collect();

    let results = adapter.push(&items).await;

    for (n, (id, result)) in ids.iter().zip(&results).enumerate() {
        if n == 17 {
            let error = result.as_ref().unwrap_err();
            assert_eq!(error.code, "INVALID_EMAIL");
            assert_eq!(error.field(), Some("email"));
            assert!(!error.is_transient());
            assert!(error.message.contains("not-an-email"), "{}", error.message);
            assert_eq!(
                property(&sandbox, id, "email").as_deref(),
                Some("valid17@example.com")
            );
        } else {
            assert!(result.is_ok(), "item {n}: {result:?}");
            assert_eq!(property(&sandbox, id, "jobtitle").as_deref(), Some("Buyer"));
        }
    }
    assert!(
        sandbox.stats().requests <= 2 * 7 + 1,
        "the bad edit is found by halving, not one by one: {:?}",
        sandbox.stats()
    );
}

fn merged_into(survivor: &str) -> ErrorKind {
    ErrorKind::RecordMerged {
        survivor: survivor.to_string(),
    }
}

#[tokio::test]
async fn a_write_to_a_merged_away_contact_names_the_survivor() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let primary = contact(&sandbox, "primary");
    let merged = contact(&sandbox, "merged");
    let other = contact(&sandbox, "other");
    let deleted = contact(&sandbox, "deleted");
    sandbox.delete_contact(&deleted);
    let survivor = sandbox.merge_contacts(&primary, &merged).unwrap();

    let results = adapter
        .push(&[
            edit(&merged, &[(ContactField::Position, "CFO")]),
            edit(&other, &[(ContactField::Position, "CEO")]),
            edit(&deleted, &[(ContactField::Position, "COO")]),
        ])
        .await;

    let error = results[0].as_ref().unwrap_err();
    assert_eq!(error.kind, merged_into(&survivor));
    assert!(error.is_transient(), "pushed again at the survivor");
    assert!(error.message.contains(&merged) && error.message.contains(&survivor));
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!(
        results[2].as_ref().unwrap_err().kind,
        ErrorKind::RecordGone,
        "a deleted contact is gone, not merged"
    );
    assert_eq!(
        sandbox.stats().requests,
        2,
        "one batch, then one read of the id its answer lacked, and no second write"
    );
    assert_eq!(sandbox.stats().contacts_written, 2);

    // One write alone (a PATCH), and a company link alone (a read first).
    let single = adapter
        .push(&[edit(&primary, &[(ContactField::City, "Faro")])])
        .await;
    assert_eq!(single[0].as_ref().unwrap_err().kind, merged_into(&survivor));
    let single = adapter
        .push(&[edit(&deleted, &[(ContactField::City, "Faro")])])
        .await;
    assert_eq!(single[0].as_ref().unwrap_err().kind, ErrorKind::RecordGone);
    let company = sandbox.create_company("Northwind");
    let linked = adapter
        .push(&[link(
            &merged,
            CustomerLink::Link {
                id: company.clone(),
                previous: None,
            },
        )])
        .await;
    assert_eq!(linked[0].as_ref().unwrap_err().kind, merged_into(&survivor));
    assert!(
        sandbox.company_ids_of(&survivor).is_empty(),
        "no link was made"
    );
    let gone = adapter
        .push(&[link(
            &deleted,
            CustomerLink::Link {
                id: company,
                previous: None,
            },
        )])
        .await;
    assert_eq!(gone[0].as_ref().unwrap_err().kind, ErrorKind::RecordGone);

    let at_survivor = adapter
        .push(&[edit(&survivor, &[(ContactField::City, "Faro")])])
        .await;
    assert!(at_survivor[0].is_ok(), "{at_survivor:?}");
    assert_eq!(
        property(&sandbox, &survivor, "city").as_deref(),
        Some("Faro")
    );
}

#[tokio::test]
async fn edits_of_a_survivor_and_an_id_merged_into_it_are_told_apart() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let primary = contact(&sandbox, "first");
    let merged = contact(&sandbox, "second");
    let survivor = sandbox.merge_contacts(&primary, &merged).unwrap();

    // HubSpot answers both inputs with the survivor's id: neither answer can be matched.
    let results = adapter
        .push(&[
            edit(&merged, &[(ContactField::Position, "CFO")]),
            edit(&survivor, &[(ContactField::City, "Faro")]),
        ])
        .await;

    assert_eq!(
        results[0].as_ref().unwrap_err().kind,
        merged_into(&survivor)
    );
    let confirmed = results[1].as_ref().unwrap();
    assert_eq!(
        confirmed.values,
        [(ContactField::City, Some("Faro".to_string()))].into(),
        "the survivor's own write confirms its own values"
    );
}

#[tokio::test]
async fn a_merged_away_id_answered_as_not_found_is_still_followed() {
    let not_found = json!({"status": "error", "category": "OBJECT_NOT_FOUND",
        "message": "Object not found.  objectId are usually numeric."})
    .to_string();
    let batch = json!({"status": "COMPLETE", "numErrors": 1,
        "results": [{"id": "2", "properties": {}, "updatedAt": "2026-01-02T00:00:00.000Z"}],
        "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects", "context": {"ids": ["1"]}}]})
    .to_string();
    let read = json!({"status": "COMPLETE", "results": [{"id": "9",
        "properties": {"hs_merged_object_ids": "1;5"}, "updatedAt": "2026-01-02T00:00:00.000Z"}]})
    .to_string();
    let (addr, _) = common::routed_server(vec![
        (
            "/batch/update",
            common::http_answer("207 Multi-Status", &batch),
        ),
        ("/batch/read", common::http_answer("200 OK", &read)),
        (
            "/contacts/1 ",
            common::http_answer("404 Not Found", &not_found),
        ),
    ])
    .await;
    let sandbox = sandbox(0).await;
    let adapter = token_adapter_with(
        &sandbox,
        json!({"base_url": format!("http://{addr}"), "daily_reset_tz": "UTC"}),
    );

    let batched = adapter
        .push(&[
            edit("1", &[(ContactField::Position, "CFO")]),
            edit("2", &[(ContactField::Position, "CFO")]),
        ])
        .await;
    let alone = adapter
        .push(&[edit("1", &[(ContactField::Position, "CFO")])])
        .await;

    assert_eq!(batched[0].as_ref().unwrap_err().kind, merged_into("9"));
    assert!(batched[1].is_ok());
    assert_eq!(alone[0].as_ref().unwrap_err().kind, merged_into("9"));
}

#[tokio::test]
async fn an_id_a_batch_answer_lacks_but_hubspot_still_holds_is_written_alone() {
    let contact = |id: &str| {
        json!({"id": id, "properties": {"jobtitle": "CFO"}, "archived": false,
               "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-02T00:00:00.000Z"})
    };
    let batch = json!({"status": "COMPLETE", "results": [contact("2")]}).to_string();
    let read = json!({"status": "COMPLETE", "results": [contact("1")]}).to_string();
    let single = contact("1").to_string();
    let (addr, received) = common::routed_server(vec![
        ("/batch/update", common::http_answer("200 OK", &batch)),
        ("/batch/read", common::http_answer("200 OK", &read)),
        ("/contacts/1", common::http_answer("200 OK", &single)),
    ])
    .await;
    let sandbox = sandbox(0).await;
    let adapter = token_adapter_with(
        &sandbox,
        json!({"base_url": format!("http://{addr}"), "daily_reset_tz": "UTC"}),
    );

    let results = adapter
        .push(&[
            edit("1", &[(ContactField::Position, "CFO")]),
            edit("2", &[(ContactField::Position, "CFO")]),
        ])
        .await;

    for result in &results {
        let confirmed = result.as_ref().unwrap();
        assert_eq!(
            confirmed.crm_version.as_deref(),
            Some("2026-01-02T00:00:00.000Z")
        );
    }
    let paths: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|line| line.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        paths,
        [
            "POST /crm/v3/objects/contacts/batch/update",
            "POST /crm/v3/objects/contacts/batch/read",
            "PATCH /crm/v3/objects/contacts/1",
        ]
    );
}

#[tokio::test]
async fn a_conflict_names_the_existing_contact() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let existing = contact(&sandbox, "owner");
    let id = contact(&sandbox, "editor");
    let results = adapter
        .push(&[edit(&id, &[(ContactField::Email, "OWNER@example.com")])])
        .await;
    let error = results[0].as_ref().unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Permanent {
            field: Some("email".into())
        }
    );
    assert_eq!(error.code, "CONFLICT");
    assert_eq!(
        error.message,
        format!("Contact already exists. Existing ID: {existing}")
    );
}

#[tokio::test]
async fn daily_and_ten_secondly_limits_are_told_apart() {
    let sandbox = sandbox(0).await;
    let id = contact(&sandbox, "limits");
    let city = [(ContactField::City, "Faro")];
    // A configured zone: no account details call takes the one request of the window.
    let in_zone = || token_adapter_with(&sandbox, json!({"daily_reset_tz": "UTC"}));
    sandbox.set_rate_limit(1, Duration::from_secs(10));
    // Another client of the same app spends the window before this adapter has seen a header.
    assert!(in_zone().push(&[edit(&id, &city)]).await[0].is_ok());
    let error = in_zone().push(&[edit(&id, &city)]).await[0]
        .clone()
        .unwrap_err();
    assert_eq!(error.code, "TEN_SECONDLY_ROLLING");
    assert_eq!(
        error.kind,
        ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(10))
        }
    );

    sandbox.remove_rate_limit();
    sandbox.set_daily_limit(Some(1));
    let adapter = in_zone();
    assert!(adapter.push(&[edit(&id, &city)]).await[0].is_ok());
    let usage = adapter.api_usage().unwrap();
    assert_eq!((usage.used, usage.limit), (1, 1));
    let error = adapter.push(&[edit(&id, &city)]).await[0]
        .clone()
        .unwrap_err();
    assert_eq!(error.code, "DAILY");
    assert!(matches!(
        error.kind,
        ErrorKind::QuotaExhausted { retry_after: Some(wait) } if wait <= Duration::from_secs(86_400)
    ));
}

/// The wait a `DAILY` refusal of `adapter`'s next push asks for.
async fn daily_wait(adapter: &Arc<dyn SourceAdapter>, id: &str) -> Duration {
    let error = adapter
        .push(&[edit(id, &[(ContactField::City, "Faro")])])
        .await
        .remove(0)
        .unwrap_err();
    match error.kind {
        ErrorKind::QuotaExhausted {
            retry_after: Some(wait),
        } => wait,
        other => panic!("expected the daily limit, got {other:?}"),
    }
}

/// Asserts that `wait`, from now, ends at midnight in `zone` (give or take a few seconds).
fn assert_ends_at_midnight_in(wait: Duration, zone: &str) {
    let end = Timestamp::now()
        .checked_add(SignedDuration::try_from(wait).unwrap())
        .unwrap()
        .in_tz(zone)
        .unwrap();
    let time = end.time();
    let past_midnight =
        i32::from(time.hour()) * 3600 + i32::from(time.minute()) * 60 + i32::from(time.second());
    assert!(
        !(5..86_395).contains(&past_midnight),
        "a wait of {wait:?} ends at {end}, not at midnight in {zone}"
    );
}

#[tokio::test]
async fn the_daily_limit_waits_until_midnight_in_the_accounts_time_zone() {
    let sandbox = sandbox(0).await;
    // India is UTC+5:30 all year: its midnight is never UTC's.
    sandbox.set_time_zone("Asia/Kolkata");
    let id = contact(&sandbox, "daily");
    let adapter = token_adapter(&sandbox);
    assert!(
        adapter
            .push(&[edit(&id, &[(ContactField::City, "Goa")])])
            .await[0]
            .is_ok()
    );
    sandbox.set_daily_limit(Some(0));
    assert_ends_at_midnight_in(daily_wait(&adapter, &id).await, "Asia/Kolkata");
    daily_wait(&adapter, &id).await;
    assert_eq!(
        sandbox.stats().account_details,
        1,
        "the account's zone is read once"
    );

    // A zone in config wins, and HubSpot is not asked.
    let configured = token_adapter_with(&sandbox, json!({"daily_reset_tz": "America/Los_Angeles"}));
    assert_ends_at_midnight_in(daily_wait(&configured, &id).await, "America/Los_Angeles");
    assert_eq!(sandbox.stats().account_details, 1);
}

#[tokio::test]
async fn revoked_scopes_refuse_the_connection_with_one_call_and_lift_when_granted() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let ids: Vec<String> = (0..40)
        .map(|n| contact(&sandbox, &format!("scoped{n}")))
        .collect();
    let items: Vec<PushItem> = ids
        .iter()
        .map(|id| edit(id, &[(ContactField::Position, "Buyer")]))
        .collect();
    sandbox.faults().set_standing(Fault::AccessRevoked);

    let results = adapter.push(&items).await;

    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.code, "MISSING_SCOPES");
        assert!(
            error.message.contains("required scopes"),
            "{}",
            error.message
        );
    }
    assert_eq!(
        sandbox.stats().requests,
        1,
        "one refused call tells the connection is refused: no splitting"
    );
    let company = sandbox.create_company("Northwind");
    let link_only = adapter
        .push(&[link(
            &ids[0],
            CustomerLink::Link {
                id: company,
                previous: None,
            },
        )])
        .await;
    assert_eq!(
        link_only[0].as_ref().unwrap_err().kind,
        ErrorKind::Misconfigured
    );
    let pulled = adapter.pull(None).await.err().unwrap();
    assert_eq!(pulled.kind, ErrorKind::Misconfigured);

    sandbox.faults().clear_standing();
    for result in adapter.push(&items).await {
        result.expect("the edits land once the scope is granted");
    }
}

#[tokio::test]
async fn revoked_scopes_are_told_from_a_refused_token() {
    let sandbox = sandbox(0).await;
    let id = contact(&sandbox, "oauth-scoped");
    let adapter = oauth_adapter(&sandbox, Default::default());
    sandbox.faults().set_standing(Fault::AccessRevoked);
    let error = adapter
        .push(&[edit(&id, &[(ContactField::Zip, "1")])])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Misconfigured);
    assert_eq!(
        sandbox.token_refreshes(),
        1,
        "the token endpoint still works"
    );
}

#[tokio::test]
async fn a_wrong_base_url_or_retired_api_refuses_the_connection_and_marks_nothing_gone() {
    let sandbox = sandbox(0).await;
    let ids: Vec<String> = (0..10)
        .map(|n| contact(&sandbox, &format!("routed{n}")))
        .collect();
    let items: Vec<PushItem> = ids
        .iter()
        .map(|id| edit(id, &[(ContactField::City, "Porto")]))
        .collect();
    let misrouted = token_adapter_with(
        &sandbox,
        json!({"base_url": format!("{}/hubspot-proxy/", sandbox.base_url())}),
    );
    for result in misrouted.push(&items).await {
        let error = result.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.code, "ENDPOINT_NOT_FOUND");
    }

    let adapter = token_adapter(&sandbox);
    sandbox.faults().set_standing(Fault::EndpointNotFound);
    let before = sandbox.stats().requests;
    for result in adapter.push(&items).await {
        let error = result.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured, "{error:?}");
        assert_eq!(error.message, "Not Found");
    }
    assert_eq!(sandbox.stats().requests - before, 1);
}

#[tokio::test]
async fn a_mapped_property_the_portal_lacks_refuses_the_connection_without_splitting() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter_with(&sandbox, json!({"fields": {"position": "jobtitel"}}));
    let ids: Vec<String> = (0..20)
        .map(|n| contact(&sandbox, &format!("mapped{n}")))
        .collect();
    let items: Vec<PushItem> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| match n % 2 {
            0 => edit(id, &[(ContactField::Position, "Buyer")]),
            _ => edit(id, &[(ContactField::City, "Braga")]),
        })
        .collect();

    let results = adapter.push(&items).await;

    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Misconfigured);
        assert_eq!(error.code, "PROPERTY_DOESNT_EXIST");
        assert!(error.message.contains("jobtitel"), "{}", error.message);
    }
    assert_eq!(sandbox.stats().requests, 1, "no splitting");
}

#[tokio::test]
async fn a_failed_company_link_after_landed_fields_is_reported_beside_them() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let id = contact(&sandbox, "half-linked");
    let company = sandbox.create_company("Globex");
    let mut item = edit(&id, &[(ContactField::City, "Braga")]);
    item.customer = CustomerLink::Link {
        id: "424242".into(),
        previous: None,
    };

    let confirmed = adapter.push(&[item.clone()]).await.remove(0).unwrap();

    assert_eq!(
        confirmed.values[&ContactField::City].as_deref(),
        Some("Braga")
    );
    assert!(confirmed.crm_version.is_some());
    let link_error = confirmed.link_error.expect("the link failed");
    assert_eq!(
        link_error.kind,
        ErrorKind::Permanent {
            field: Some("unified_customer_id".into())
        }
    );

    sandbox
        .association_faults()
        .fail_next(1, Fault::ServerError(503));
    item.patch = [(ContactField::City, Some("Faro".to_string()))]
        .into_iter()
        .collect();
    item.customer = CustomerLink::Link {
        id: company.clone(),
        previous: None,
    };
    let confirmed = adapter.push(&[item]).await.remove(0).unwrap();
    assert_eq!(property(&sandbox, &id, "city").as_deref(), Some("Faro"));
    assert!(matches!(
        confirmed.link_error.map(|error| error.kind),
        Some(ErrorKind::Retryable { .. })
    ));
    assert!(sandbox.company_ids_of(&id).is_empty());
}

#[tokio::test]
async fn faults_are_classified_in_hubspots_terms() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let id = contact(&sandbox, "faults");
    let item = edit(&id, &[(ContactField::Zip, "1")]);
    let push = || adapter.push(std::slice::from_ref(&item));
    sandbox.faults().fail_next(1, Fault::Locked);
    let locked = push().await.remove(0).unwrap_err();
    assert_eq!(
        locked.kind,
        ErrorKind::Retryable {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    sandbox.faults().fail_next(1, Fault::ServerError(502));
    assert!(matches!(
        push().await.remove(0).unwrap_err().kind,
        ErrorKind::Retryable { .. }
    ));
    sandbox.faults().fail_next(1, Fault::Unauthorized);
    let unauthorized = push().await.remove(0).unwrap_err();
    assert_eq!(unauthorized.kind, ErrorKind::Unauthorized);
    assert_eq!(unauthorized.code, "EXPIRED_AUTHENTICATION");
    assert!(push().await.remove(0).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_one_pace_and_meet_no_429() {
    let sandbox = sandbox(0).await;
    sandbox.set_rate_limit(5, Duration::from_millis(500));
    let adapter = token_adapter(&sandbox);
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let adapter = adapter.clone();
            let id = contact(&sandbox, &format!("paced{task}"));
            tokio::spawn(async move {
                for n in 0..5 {
                    let value = n.to_string();
                    let result = adapter
                        .push(&[edit(&id, &[(ContactField::Zip, &value)])])
                        .await;
                    result[0].as_ref().expect("paced pushes land");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = sandbox.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.contacts_written, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_expiring_every_second_never_fail_concurrent_pushes() {
    let sandbox = sandbox(0).await;
    sandbox.set_token_lifetime(Duration::from_secs(1));
    sandbox.set_refresh_token_rotation(true);
    sandbox.faults().set_latency(Duration::from_millis(40));
    let store = Arc::new(MemoryCredentials::default());
    let adapter = oauth_adapter(&sandbox, store.clone());
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let adapter = adapter.clone();
            let ids: Vec<String> = (0..3)
                .map(|n| contact(&sandbox, &format!("oauth{task}-{n}")))
                .collect();
            tokio::spawn(async move {
                for round in 0..50 {
                    let value = format!("Round {round}");
                    let items: Vec<PushItem> = ids
                        .iter()
                        .map(|id| edit(id, &[(ContactField::Position, &value)]))
                        .collect();
                    for result in adapter.push(&items).await {
                        result.expect("no push fails while tokens expire");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(sandbox.overlapping_refreshes(), 0);
    assert!(
        sandbox.token_refreshes() >= 2,
        "tokens expired and were refreshed"
    );
    assert_eq!(sandbox.stats().overlapping_writes, 0);
    assert_eq!(
        store.load(REFRESH_TOKEN_KEY),
        Some(sandbox.oauth_credentials().refresh_token),
        "the rotated refresh token is persisted"
    );
}

#[tokio::test]
async fn a_stored_rotated_refresh_token_wins_over_the_configured_one() {
    let sandbox = sandbox(0).await;
    sandbox.set_refresh_token_rotation(true);
    let id = contact(&sandbox, "rotated");
    let store = Arc::new(MemoryCredentials::default());
    let first_run = oauth_adapter(&sandbox, store.clone());
    // Built now, with the refresh token the first run is about to retire.
    let second_run_config = sandbox.oauth_credentials();
    assert!(
        first_run
            .push(&[edit(&id, &[(ContactField::Zip, "1")])])
            .await[0]
            .is_ok()
    );
    let config = connection(
        &sandbox,
        json!({}),
        &[
            ("client_id", second_run_config.client_id),
            ("client_secret", second_run_config.client_secret),
            ("refresh_token", second_run_config.refresh_token),
        ],
    );
    let second_run = HubspotFactory.build(&config, store).unwrap();
    assert!(
        second_run
            .push(&[edit(&id, &[(ContactField::Zip, "2")])])
            .await[0]
            .is_ok()
    );
}

#[tokio::test]
async fn a_401_refreshes_once_and_a_refused_refresh_is_unauthorized() {
    let sandbox = sandbox(0).await;
    let id = contact(&sandbox, "refresh");
    let adapter = oauth_adapter(&sandbox, Default::default());
    sandbox.faults().fail_next(1, Fault::Unauthorized);
    assert!(
        adapter
            .push(&[edit(&id, &[(ContactField::Zip, "1")])])
            .await[0]
            .is_ok()
    );
    assert_eq!(
        sandbox.token_refreshes(),
        2,
        "the first token, then one after the 401"
    );

    let oauth = sandbox.oauth_credentials();
    let config = connection(
        &sandbox,
        json!({}),
        &[
            ("client_id", oauth.client_id),
            ("client_secret", oauth.client_secret),
            ("refresh_token", "revoked".to_string()),
        ],
    );
    let revoked = HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .unwrap();
    let error = revoked
        .push(&[edit(&id, &[(ContactField::Zip, "2")])])
        .await[0]
        .clone()
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert_eq!(error.code, "BAD_REFRESH_TOKEN");
    assert_eq!(error.message, "missing or unknown refresh token");
}

#[tokio::test]
async fn links_create_replace_and_remove_company_associations() {
    let sandbox = sandbox(0).await;
    let adapter = token_adapter(&sandbox);
    let id = contact(&sandbox, "linked");
    let first = sandbox.create_company("Northwind");
    let second = sandbox.create_company("Globex");

    let mut with_field = edit(&id, &[(ContactField::City, "Braga")]);
    with_field.customer = CustomerLink::Link {
        id: first.clone(),
        previous: None,
    };
    let confirmed = adapter.push(&[with_field]).await.remove(0).unwrap();
    assert_eq!(sandbox.company_ids_of(&id), vec![first.clone()]);
    assert_eq!(
        confirmed.values[&ContactField::City].as_deref(),
        Some("Braga")
    );

    let replaced = adapter
        .push(&[link(
            &id,
            CustomerLink::Link {
                id: second.clone(),
                previous: Some(first),
            },
        )])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(sandbox.company_ids_of(&id), vec![second]);
    assert!(
        replaced.crm_version.is_some(),
        "a link-only push still reports the version"
    );

    let unlinked = adapter
        .push(&[link(&id, CustomerLink::Unlink { previous: None })])
        .await;
    assert!(unlinked[0].is_ok());
    assert!(sandbox.company_ids_of(&id).is_empty());

    let error = adapter
        .push(&[link(
            &id,
            CustomerLink::Link {
                id: "424242".into(),
                previous: None,
            },
        )])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::Permanent {
            field: Some("unified_customer_id".into())
        },
        "an unknown company does not make the contact gone"
    );
}

#[tokio::test]
async fn pull_pages_through_every_record_once_with_its_company() {
    let sandbox = sandbox(250).await;
    let adapter = token_adapter(&sandbox);
    let mut cursor: Option<String> = None;
    let mut pulled = Vec::new();
    loop {
        let page = adapter.pull(cursor.as_deref()).await.unwrap();
        pulled.extend(page.contacts);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut ids: Vec<&str> = pulled.iter().map(|c| c.source_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), pulled.len()), (250, 250));
    let linked: Vec<_> = pulled
        .iter()
        .filter(|c| c.customer_source_id.is_some())
        .collect();
    assert_eq!(linked.len(), 84, "every third demo contact has a company");
    let sample = linked[0];
    assert_eq!(
        sandbox.company_ids_of(&sample.source_id),
        vec![sample.customer_source_id.clone().unwrap()]
    );
    let stored = sandbox.contact(&sample.source_id).unwrap();
    assert_eq!(
        sample.values[&ContactField::Email].as_ref(),
        stored.get("email")
    );
    assert_eq!(sample.values[&ContactField::Fax], None);
    assert_eq!(sample.crm_version.as_ref(), stored.get("lastmodifieddate"));
    assert!(sample.is_active);
}

#[tokio::test]
async fn extra_fields_from_config_are_written_beside_the_main_property() {
    let sandbox = sandbox(0).await;
    sandbox.define_property("persona_title");
    let config = connection(
        &sandbox,
        json!({"extra_fields": {"position": "persona_title"}}),
        &[("access_token", sandbox.access_token())],
    );
    let adapter = HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .unwrap();
    let id = contact(&sandbox, "extra");
    let results = adapter
        .push(&[edit(&id, &[(ContactField::Position, "Buyer")])])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(
        property(&sandbox, &id, "jobtitle").as_deref(),
        Some("Buyer")
    );
    assert_eq!(
        property(&sandbox, &id, "persona_title").as_deref(),
        Some("Buyer")
    );

    let unmapped = connection(
        &sandbox,
        json!({"extra_fields": {"unified_customer_id": "company_copy"}}),
        &[("access_token", sandbox.access_token())],
    );
    let error = HubspotFactory
        .build(&unmapped, Arc::new(MemoryCredentials::default()))
        .err()
        .expect("an extra field needs a mapped unified field");
    assert_eq!(error.key, "extra_fields");
}
