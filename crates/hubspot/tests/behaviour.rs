//! The shared adapter behaviour suite, run against the HubSpot sandbox with a private-app
//! token and with OAuth.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use unisync_core::{ContactField, ContactPatch, SourceAdapter};
use unisync_hubspot::mapping::properties_of;
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_sandbox::{Faults, SandboxCrm};
use unisync_testkit::{AdapterHarness, run_behaviour_suite};

struct HubspotHarness {
    sandbox: HubspotSandbox,
    adapter: Arc<dyn SourceAdapter>,
}

#[async_trait]
impl AdapterHarness for HubspotHarness {
    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.clone()
    }

    async fn create_record(&self, values: &ContactPatch) -> String {
        let properties = properties_of(self.adapter.mapping(), values);
        let pairs: Vec<(&str, &str)> = properties
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default()))
            .collect();
        self.sandbox.create_contact(&pairs)
    }

    async fn record(&self, source_id: &str) -> Option<BTreeMap<ContactField, Option<String>>> {
        let stored = self.sandbox.contact(source_id)?;
        Some(
            self.adapter
                .mapping()
                .rules()
                .map(|rule| (rule.unified, stored.get(&rule.crm_field).cloned()))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_with_a_private_app_token() {
    let sandbox = common::sandbox(3).await;
    let adapter = common::token_adapter(&sandbox);
    run_behaviour_suite(&HubspotHarness { sandbox, adapter }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_with_oauth() {
    let sandbox = common::sandbox(3).await;
    let adapter = common::oauth_adapter(&sandbox, Default::default());
    run_behaviour_suite(&HubspotHarness { sandbox, adapter }).await;
}
