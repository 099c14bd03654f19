//! The shared adapter behaviour suite, one test per rule, against the fake Dataverse; and
//! proof that the suite fails a flawed adapter.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use unisync_core::{AdapterFactory, ConnectionConfig, ContactField, SourceAdapter};
use unisync_dynamics::DynamicsFactory;
use unisync_dynamics::sandbox::DynamicsSandbox;
use unisync_sandbox::{Faults, SandboxCrm};
use unisync_testkit::AdapterHarness;

/// More rows than one pull page (500), so that pulling follows `@odata.nextLink`.
const DEMO_ROWS: usize = 501;

struct DynamicsHarness {
    sandbox: DynamicsSandbox,
    adapter: Arc<dyn SourceAdapter>,
}

impl AdapterHarness for DynamicsHarness {
    /// The contact table's columns, from Dataverse's entity reference.
    const FIELDS: &'static [(ContactField, &'static str)] = &[
        (ContactField::Email, "emailaddress1"),
        (ContactField::FirstName, "firstname"),
        (ContactField::LastName, "lastname"),
        (ContactField::Phone, "telephone1"),
        (ContactField::MobilePhone, "mobilephone"),
        (ContactField::Fax, "fax"),
        (ContactField::Address, "address1_line1"),
        (ContactField::City, "address1_city"),
        (ContactField::State, "address1_stateorprovince"),
        (ContactField::Zip, "address1_postalcode"),
        (ContactField::Country, "address1_country"),
        (ContactField::Position, "jobtitle"),
    ];
    /// Their maximum lengths, from the same reference.
    const LIMITS: &'static [(ContactField, usize)] = &[
        (ContactField::Email, 100),
        (ContactField::FirstName, 50),
        (ContactField::LastName, 50),
        (ContactField::Phone, 50),
        (ContactField::MobilePhone, 50),
        (ContactField::Fax, 50),
        (ContactField::Address, 250),
        (ContactField::City, 80),
        (ContactField::State, 50),
        (ContactField::Zip, 20),
        (ContactField::Country, 80),
        (ContactField::Position, 100),
    ];
    /// `lastname` is only "application required" (enforced by forms, not the Web API).
    const REQUIRED: &'static [ContactField] = &[];

    /// Dataverse keeps any text in `emailaddress1`; it refuses a value longer than the column
    /// (`0x80044331`).
    fn refused_value() -> (ContactField, String) {
        (ContactField::FirstName, "x".repeat(51))
    }

    async fn start() -> Self {
        let sandbox = common::sandbox(DEMO_ROWS).await;
        let adapter = common::adapter(&sandbox);
        DynamicsHarness { sandbox, adapter }
    }

    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.clone()
    }

    fn adapter_with_refused_credentials(&self) -> Arc<dyn SourceAdapter> {
        let mut secrets = self.sandbox.connection_secrets();
        secrets.insert("client_secret".into(), "not-the-app's-secret".into());
        let config = ConnectionConfig::new("d365", "dynamics", self.sandbox.connection_settings())
            .with_inline_secrets(secrets);
        DynamicsFactory
            .build(&config, Arc::new(common::NoStore))
            .unwrap()
    }

    fn create_record(&self, fields: &[(&str, &str)]) -> String {
        self.sandbox.create_contact(fields)
    }

    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        let row = self.sandbox.contact(source_id)?;
        Some(
            row.into_iter()
                .filter_map(|(column, value)| match value {
                    Value::String(text) if !text.is_empty() => Some((column, text)),
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
        let row = self.sandbox.contact(source_id).unwrap_or_default();
        match row.get("_parentcustomerid_value") {
            Some(Value::String(account)) => vec![account.clone()],
            _ => Vec::new(),
        }
    }

    fn faults(&self) -> &Faults {
        self.sandbox.faults()
    }
}

unisync_testkit::behaviour_suite!(DynamicsHarness);

/// The suite fails an adapter that drops null clears, and one that reads a deleted record as
/// a permanent refusal, naming the rule each breaks.
mod flawed {
    use unisync_testkit::{DropsNullClears, Flawed, MisreadsAMissingRecord};

    type WithoutClears = Flawed<super::DynamicsHarness, DropsNullClears>;
    type MisreadingDeletes = Flawed<super::DynamicsHarness, MisreadsAMissingRecord>;

    unisync_testkit::behaviour_rule_fails!(WithoutClears, null_clears_a_field);
    unisync_testkit::behaviour_rule_fails!(MisreadingDeletes, a_deleted_record_is_record_gone);
}
