//! What the HubSpot adapter's tests share: a sandbox on loopback and adapters pointed at it.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use unisync_core::{AdapterFactory, ConnectionConfig, CredentialStore, SourceAdapter};
use unisync_hubspot::HubspotFactory;
use unisync_sandbox::hubspot::HubspotSandbox;

/// Enough that the pacer never holds the tests back unless a test sets a limit.
pub const TEST_REQUESTS_PER_10S: u64 = 10_000;

/// A fake HubSpot on 127.0.0.1, any port, with `demo_records` contacts.
pub async fn sandbox(demo_records: usize) -> HubspotSandbox {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    HubspotSandbox::start(listen, demo_records).await.unwrap()
}

/// A connection table for the sandbox, with `extra` settings and in-memory secrets.
pub fn connection(
    sandbox: &HubspotSandbox,
    extra: Value,
    secrets: &[(&str, String)],
) -> ConnectionConfig {
    let mut settings = json!({
        "base_url": sandbox.base_url(),
        "requests_per_10s": TEST_REQUESTS_PER_10S,
    });
    settings
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    ConnectionConfig::new(
        "hubspot-test",
        "hubspot",
        settings.as_object().unwrap().clone(),
    )
    .with_inline_secrets(secrets.iter().map(|(key, value)| (*key, value.clone())))
}

/// An adapter using the sandbox's static private-app token.
pub fn token_adapter(sandbox: &HubspotSandbox) -> Arc<dyn SourceAdapter> {
    let config = connection(
        sandbox,
        json!({}),
        &[("access_token", sandbox.access_token())],
    );
    HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .unwrap()
}

/// An adapter using the sandbox's OAuth app, keeping refresh tokens in `store`.
pub fn oauth_adapter(
    sandbox: &HubspotSandbox,
    store: Arc<MemoryCredentials>,
) -> Arc<dyn SourceAdapter> {
    let oauth = sandbox.oauth_credentials();
    let config = connection(
        sandbox,
        json!({}),
        &[
            ("client_id", oauth.client_id),
            ("client_secret", oauth.client_secret),
            ("refresh_token", oauth.refresh_token),
        ],
    );
    HubspotFactory.build(&config, store).unwrap()
}

/// A [`CredentialStore`] in memory.
#[derive(Default)]
pub struct MemoryCredentials {
    values: Mutex<BTreeMap<String, String>>,
}

impl CredentialStore for MemoryCredentials {
    fn load(&self, key: &str) -> Option<String> {
        self.values.lock().unwrap().get(key).cloned()
    }

    fn save(&self, key: &str, value: &str) -> Result<(), String> {
        self.values
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }
}
