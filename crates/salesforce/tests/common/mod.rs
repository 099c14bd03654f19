//! What the Salesforce adapter tests share: a sandbox org on loopback, and adapters pointed at it.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod stub;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use unisync_core::{
    AdapterFactory, ConfigError, ConnectionConfig, ContactField, CredentialStore, CustomerLink,
    PushItem, SourceAdapter,
};
use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_salesforce::{SalesforceAdapter, SalesforceConfig, SalesforceFactory};
use unisync_sandbox::SandboxCrm;

/// A credential store in memory, which tests can read.
#[derive(Default)]
pub struct MemoryCredentials(Mutex<HashMap<String, String>>);

impl MemoryCredentials {
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.lock().unwrap().get(key).cloned()
    }
}

impl CredentialStore for MemoryCredentials {
    fn load(&self, key: &str) -> Option<String> {
        self.get(key)
    }

    fn save(&self, key: &str, value: &str) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }
}

/// A fresh sandbox org on 127.0.0.1, with no demo records.
pub async fn sandbox() -> SalesforceSandbox {
    SalesforceSandbox::start("127.0.0.1:0".parse().unwrap(), 0)
        .await
        .expect("start the sandbox")
}

/// A connection table pointing at `sandbox`, with extra `settings` and `secrets` in memory.
pub fn connection(
    sandbox: &SalesforceSandbox,
    settings: Value,
    secrets: impl IntoIterator<Item = (String, String)>,
) -> ConnectionConfig {
    let mut table = sandbox.connection_settings();
    table.extend(settings.as_object().unwrap().clone());
    ConnectionConfig::new("salesforce", "salesforce", table).with_inline_secrets(secrets)
}

/// The secrets of [`stub_adapter`]: distinctive, so a test can look for them anywhere.
pub const STUB_SECRETS: [(&str, &str); 3] = [
    ("client_id", "3MVG9stubClientIdNeverShown"),
    ("client_secret", "StubClientSecretNeverShown"),
    ("refresh_token", "5Aep861StubRefreshTokenNeverShown"),
];

/// An adapter on the refresh-token grant with [`STUB_SECRETS`], logging in at `login_url`.
pub fn stub_adapter(login_url: &str) -> Arc<dyn SourceAdapter> {
    let table = json!({"login_url": login_url});
    let config = ConnectionConfig::new(
        "salesforce",
        "salesforce",
        table.as_object().unwrap().clone(),
    )
    .with_inline_secrets(STUB_SECRETS);
    build(&config, Arc::new(MemoryCredentials::default())).expect("build the adapter")
}

pub fn build(
    config: &ConnectionConfig,
    credentials: Arc<dyn CredentialStore>,
) -> Result<Arc<dyn SourceAdapter>, ConfigError> {
    SalesforceFactory.build(config, credentials)
}

/// An adapter on the refresh-token grant the sandbox hands out, and its credential store.
pub fn refresh_token_adapter(
    sandbox: &SalesforceSandbox,
    settings: Value,
) -> (Arc<dyn SourceAdapter>, Arc<MemoryCredentials>) {
    let credentials = Arc::new(MemoryCredentials::default());
    let config = connection(sandbox, settings, sandbox.connection_secrets());
    let adapter = build(&config, credentials.clone()).expect("build the adapter");
    (adapter, credentials)
}

/// The adapter with default settings, as its own type: for what only Salesforce offers
/// ([`SalesforceAdapter::push_if_unmodified`]).
pub fn salesforce_adapter(sandbox: &SalesforceSandbox) -> SalesforceAdapter {
    let config = connection(sandbox, json!({}), sandbox.connection_secrets());
    let settings = SalesforceConfig::from_connection(&config).expect("a valid connection");
    SalesforceAdapter::new(settings, Arc::new(MemoryCredentials::default()))
        .expect("build the adapter")
}

/// The adapter with default settings.
pub fn adapter(sandbox: &SalesforceSandbox) -> Arc<dyn SourceAdapter> {
    refresh_token_adapter(sandbox, json!({})).0
}

/// A contact with a last name (Salesforce requires one) and the given fields.
pub fn contact(sandbox: &SalesforceSandbox, fields: &[(&str, &str)]) -> String {
    let mut all = vec![("LastName", "Record")];
    all.extend_from_slice(fields);
    sandbox.create_contact(&all)
}

/// An edit setting the contact's city.
pub fn city(source_id: &str, city: &str) -> PushItem {
    PushItem {
        source_id: source_id.to_string(),
        patch: [(ContactField::City, Some(city.to_string()))]
            .into_iter()
            .collect(),
        customer: CustomerLink::Unchanged,
    }
}

/// Waits, up to a generous deadline, until `field` of contact `id` holds `value`; false when
/// it never does.
pub async fn eventually_stored(
    sandbox: &SalesforceSandbox,
    id: &str,
    field: &str,
    value: &str,
) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if stored(sandbox, id, field).as_deref() == Some(value) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A stored field's value as text (`None` for null).
pub fn stored(sandbox: &SalesforceSandbox, id: &str, field: &str) -> Option<String> {
    sandbox.contact(id).expect("the contact exists")[field]
        .as_str()
        .map(str::to_string)
}
