//! The shared adapter behaviour suite, against the fake Dataverse.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use unisync_core::{ContactField, ContactPatch, SourceAdapter};
use unisync_dynamics::sandbox::DynamicsSandbox;
use unisync_sandbox::{Faults, SandboxCrm};
use unisync_testkit::{AdapterHarness, run_behaviour_suite};

struct DynamicsHarness {
    sandbox: DynamicsSandbox,
    adapter: Arc<dyn SourceAdapter>,
}

/// Dataverse's column for each unified field, restated from crm-apis.md so that the suite's
/// records are built independently of the adapter's mapping.
const COLUMNS: &[(ContactField, &str)] = &[
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

#[async_trait]
impl AdapterHarness for DynamicsHarness {
    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.clone()
    }

    async fn create_record(&self, values: &ContactPatch) -> String {
        let columns: Vec<(&str, &str)> = values
            .iter()
            .filter_map(|(field, value)| {
                let (_, column) = COLUMNS.iter().find(|(f, _)| *f == field)?;
                Some((*column, value?))
            })
            .collect();
        self.sandbox.create_contact(&columns)
    }

    async fn record(&self, source_id: &str) -> Option<BTreeMap<ContactField, Option<String>>> {
        let row = self.sandbox.contact(source_id)?;
        Some(
            COLUMNS
                .iter()
                .map(|(field, column)| {
                    let value = row.get(*column).and_then(|v| v.as_str());
                    (*field, value.map(str::to_string))
                })
                .collect(),
        )
    }

    async fn delete_record(&self, source_id: &str) {
        self.sandbox.delete_contact(source_id);
    }

    fn faults(&self) -> &Faults {
        self.sandbox.faults()
    }
}

#[tokio::test]
async fn dynamics_passes_the_behaviour_suite() {
    // More rows than one pull page (500), so pulling follows @odata.nextLink.
    let sandbox = common::sandbox(501).await;
    let adapter = common::adapter(&sandbox);
    run_behaviour_suite(&DynamicsHarness { sandbox, adapter }).await;
}
