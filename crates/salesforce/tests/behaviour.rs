//! The shared adapter behaviour suite, against the Salesforce sandbox.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use unisync_core::{ContactField, ContactPatch, SourceAdapter};
use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_sandbox::{Faults, SandboxCrm};
use unisync_testkit::{AdapterHarness, run_behaviour_suite};

struct SalesforceHarness {
    sandbox: SalesforceSandbox,
    adapter: Arc<dyn SourceAdapter>,
}

#[async_trait]
impl AdapterHarness for SalesforceHarness {
    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.clone()
    }

    async fn create_record(&self, values: &ContactPatch) -> String {
        let mapping = self.adapter.mapping();
        let fields: Vec<(&str, &str)> = values
            .iter()
            .filter_map(|(field, value)| Some((mapping.crm_field(field)?, value?)))
            .collect();
        self.sandbox.create_contact(&fields)
    }

    async fn record(&self, source_id: &str) -> Option<BTreeMap<ContactField, Option<String>>> {
        let stored = self.sandbox.contact(source_id)?;
        Some(
            self.adapter
                .mapping()
                .rules()
                .map(|rule| {
                    let value = stored.get(&rule.crm_field).and_then(|v| v.as_str());
                    (rule.unified, value.map(str::to_string))
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

    /// Salesforce's concurrency limit names no wait (see the sandbox's fault notes).
    fn rate_limit_names_a_wait(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn salesforce_passes_the_behaviour_suite() {
    let sandbox = common::sandbox().await;
    // Small pages, so pulling crosses several nextRecordsUrl hops.
    sandbox.set_query_page_size(3);
    for n in 0..7 {
        common::contact(&sandbox, &[("FirstName", &format!("Existing {n}"))]);
    }
    let adapter = common::adapter(&sandbox);
    run_behaviour_suite(&SalesforceHarness { sandbox, adapter }).await;
}
