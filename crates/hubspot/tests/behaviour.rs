//! The shared adapter behaviour suite, one test per rule, against the HubSpot sandbox with a
//! private-app token and with OAuth; and proof that the suite fails a flawed adapter.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use unisync_core::{AdapterFactory, ContactField, SourceAdapter};
use unisync_hubspot::HubspotFactory;
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_sandbox::{Faults, SandboxCrm};
use unisync_testkit::AdapterHarness;

/// HubSpot's default contact properties, from its properties documentation.
const FIELDS: &[(ContactField, &str)] = &[
    (ContactField::Email, "email"),
    (ContactField::FirstName, "firstname"),
    (ContactField::LastName, "lastname"),
    (ContactField::Phone, "phone"),
    (ContactField::MobilePhone, "mobilephone"),
    (ContactField::Fax, "fax"),
    (ContactField::Address, "address"),
    (ContactField::City, "city"),
    (ContactField::State, "state"),
    (ContactField::Zip, "zip"),
    (ContactField::Country, "country"),
    (ContactField::Position, "jobtitle"),
];

/// HubSpot's limit on a single-line text property value: 65,536 characters.
const LIMITS: &[(ContactField, usize)] = &[
    (ContactField::FirstName, 65_536),
    (ContactField::City, 65_536),
    (ContactField::Position, 65_536),
];

/// The sandbox and an adapter on it; `oauth` says which credentials the adapter uses.
struct Harness<const OAUTH: bool> {
    sandbox: HubspotSandbox,
    adapter: Arc<dyn SourceAdapter>,
}

type TokenHarness = Harness<false>;
type OAuthHarness = Harness<true>;

impl<const OAUTH: bool> AdapterHarness for Harness<OAUTH> {
    const FIELDS: &'static [(ContactField, &'static str)] = FIELDS;
    const LIMITS: &'static [(ContactField, usize)] = LIMITS;
    const REQUIRED: &'static [ContactField] = &[];
    const REFRESHES_TOKENS: bool = OAUTH;

    async fn start() -> Self {
        let sandbox = common::sandbox(3).await;
        let adapter = if OAUTH {
            common::oauth_adapter(&sandbox, Default::default())
        } else {
            common::token_adapter(&sandbox)
        };
        Harness { sandbox, adapter }
    }

    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.clone()
    }

    fn adapter_with_refused_credentials(&self) -> Arc<dyn SourceAdapter> {
        let secrets = if OAUTH {
            let oauth = self.sandbox.oauth_credentials();
            vec![
                ("client_id", oauth.client_id),
                ("client_secret", oauth.client_secret),
                ("refresh_token", "revoked-refresh-token".to_string()),
            ]
        } else {
            vec![("access_token", "pat-na1-revoked".to_string())]
        };
        let config = common::connection(&self.sandbox, json!({}), &secrets);
        HubspotFactory
            .build(&config, Arc::new(common::MemoryCredentials::default()))
            .unwrap()
    }

    fn create_record(&self, fields: &[(&str, &str)]) -> String {
        self.sandbox.create_contact(fields)
    }

    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        let mut record = self.sandbox.contact(source_id)?;
        // HubSpot stores an emptied property as "".
        record.retain(|_, value| !value.is_empty());
        Some(record)
    }

    fn delete_record(&self, source_id: &str) {
        self.sandbox.delete_contact(source_id);
    }

    fn create_customer(&self, name: &str) -> String {
        self.sandbox.create_company(name)
    }

    fn customer_links(&self, source_id: &str) -> Vec<String> {
        self.sandbox.company_ids_of(source_id)
    }

    fn faults(&self) -> &Faults {
        self.sandbox.faults()
    }
}

mod private_app_token {
    unisync_testkit::behaviour_suite!(super::TokenHarness);
}

mod oauth {
    unisync_testkit::behaviour_suite!(super::OAuthHarness);
}

/// The suite fails an adapter that drops null clears, and one that reads a deleted record as
/// a permanent refusal, naming the rule each breaks.
mod flawed {
    use unisync_testkit::{DropsNullClears, Flawed, MisreadsAMissingRecord};

    type WithoutClears = Flawed<super::TokenHarness, DropsNullClears>;
    type MisreadingDeletes = Flawed<super::TokenHarness, MisreadsAMissingRecord>;

    unisync_testkit::behaviour_rule_fails!(WithoutClears, null_clears_a_field);
    unisync_testkit::behaviour_rule_fails!(MisreadingDeletes, a_deleted_record_is_record_gone);
    unisync_testkit::behaviour_rule_fails!(MisreadingDeletes, batch_results_map_to_their_own_edits);
}
