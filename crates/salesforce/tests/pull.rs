//! Pulling the org's contacts through `nextRecordsUrl` pages.

mod common;

use std::collections::HashSet;

use unisync_core::ContactField;

#[tokio::test]
async fn pull_pages_through_every_record_once() {
    let sandbox = common::sandbox().await;
    let account = sandbox.create_account("Acme");
    let linked = common::contact(&sandbox, &[("AccountId", &account), ("Email", "a@b.co")]);
    for n in 0..449 {
        common::contact(&sandbox, &[("FirstName", &format!("N{n}"))]);
    }
    let deleted = common::contact(&sandbox, &[]);
    sandbox.delete_contact(&deleted);
    let adapter = common::adapter(&sandbox);
    let mut cursor = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = adapter.pull(cursor.as_deref()).await.expect("pull");
        pages += 1;
        seen.extend(page.contacts);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3, "200 records a page");
    assert_eq!(seen.len(), 450);
    let unique: HashSet<&str> = seen.iter().map(|c| c.source_id.as_str()).collect();
    assert_eq!(unique.len(), 450);
    assert!(!unique.contains(deleted.as_str()));
    let first = seen.iter().find(|c| c.source_id == linked).unwrap();
    assert_eq!(first.customer_source_id.as_deref(), Some(account.as_str()));
    assert_eq!(
        first.values[&ContactField::Email].as_deref(),
        Some("a@b.co")
    );
    assert_eq!(
        first.values[&ContactField::LastName].as_deref(),
        Some("Record")
    );
    assert!(first.crm_version.is_some() && first.created_at.is_some() && first.is_active);
}

#[tokio::test]
async fn a_foreign_cursor_is_refused_before_sending_anything() {
    let sandbox = common::sandbox().await;
    let adapter = common::adapter(&sandbox);
    let error = adapter
        .pull(Some("https://elsewhere.example/steal"))
        .await
        .unwrap_err();
    assert_eq!(error.code, "INVALID_CURSOR");
    assert_eq!(sandbox.token_requests(), 0);
}
