//! The shared adapter behaviour suite, one test per rule, against the Salesforce sandbox.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use unisync_core::{ContactField, SourceAdapter};
use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_sandbox::{Faults, SandboxCrm};
use unisync_testkit::AdapterHarness;

/// The sandbox (small query pages, so that pulling crosses several `nextRecordsUrl` hops)
/// and an adapter on its refresh-token grant.
struct SalesforceHarness {
    sandbox: SalesforceSandbox,
    adapter: Arc<dyn SourceAdapter>,
}

impl AdapterHarness for SalesforceHarness {
    /// The Contact fields of Salesforce's object reference.
    const FIELDS: &'static [(ContactField, &'static str)] = &[
        (ContactField::Email, "Email"),
        (ContactField::FirstName, "FirstName"),
        (ContactField::LastName, "LastName"),
        (ContactField::Phone, "Phone"),
        (ContactField::MobilePhone, "MobilePhone"),
        (ContactField::Fax, "Fax"),
        (ContactField::Address, "MailingStreet"),
        (ContactField::City, "MailingCity"),
        (ContactField::State, "MailingState"),
        (ContactField::Zip, "MailingPostalCode"),
        (ContactField::Country, "MailingCountry"),
        (ContactField::Position, "Title"),
    ];
    /// Their lengths, from the same reference.
    const LIMITS: &'static [(ContactField, usize)] = &[
        (ContactField::Email, 80),
        (ContactField::FirstName, 40),
        (ContactField::LastName, 80),
        (ContactField::Phone, 40),
        (ContactField::MobilePhone, 40),
        (ContactField::Fax, 40),
        (ContactField::Address, 255),
        (ContactField::City, 40),
        (ContactField::State, 80),
        (ContactField::Zip, 20),
        (ContactField::Country, 80),
        (ContactField::Position, 128),
    ];
    const REQUIRED: &'static [ContactField] = &[ContactField::LastName];
    /// Salesforce's concurrency limit names no wait (see the sandbox's fault notes).
    const RATE_LIMIT_NAMES_A_WAIT: bool = false;

    async fn start() -> Self {
        let sandbox = common::sandbox().await;
        sandbox.set_query_page_size(3);
        let adapter = common::adapter(&sandbox);
        SalesforceHarness { sandbox, adapter }
    }

    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.clone()
    }

    fn adapter_with_refused_credentials(&self) -> Arc<dyn SourceAdapter> {
        let mut secrets = self.sandbox.connection_secrets();
        secrets.insert("refresh_token".into(), "5Aep861Revoked".into());
        let config = common::connection(&self.sandbox, json!({}), secrets);
        common::build(&config, Arc::new(common::MemoryCredentials::default())).unwrap()
    }

    fn create_record(&self, fields: &[(&str, &str)]) -> String {
        common::contact(&self.sandbox, fields)
    }

    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        let record = self.sandbox.contact(source_id)?;
        Some(
            record
                .into_iter()
                .filter_map(|(field, value)| match value {
                    Value::String(text) if !text.is_empty() => Some((field, text)),
                    _ => None,
                })
                .collect(),
        )
    }

    fn delete_record(&self, source_id: &str) {
        self.sandbox.delete_contact(source_id);
    }

    fn create_customer(&self, name: &str) -> String {
        self.sandbox.create_account(name)
    }

    fn customer_links(&self, source_id: &str) -> Vec<String> {
        self.crm_record(source_id)
            .and_then(|mut record| record.remove("AccountId"))
            .into_iter()
            .collect()
    }

    fn faults(&self) -> &Faults {
        self.sandbox.faults()
    }
}

unisync_testkit::behaviour_suite!(SalesforceHarness);
