//! A Dynamics adapter pointed at a fake Dataverse, as the daemon would build it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value};
use unisync_core::{AdapterFactory, ConnectionConfig, CredentialStore, SourceAdapter};
use unisync_dynamics::DynamicsFactory;
use unisync_dynamics::sandbox::DynamicsSandbox;
use unisync_sandbox::SandboxCrm;

/// A credential store that keeps nothing: client credentials never rotate.
pub struct NoStore;

impl CredentialStore for NoStore {
    fn load(&self, _: &str) -> Option<String> {
        None
    }

    fn save(&self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
}

pub async fn sandbox(demo_records: usize) -> DynamicsSandbox {
    DynamicsSandbox::start(SocketAddr::from(([127, 0, 0, 1], 0)), demo_records)
        .await
        .expect("start the fake Dataverse")
}

/// The adapter of a connection pointed at `sandbox`, with `extra` settings.
pub fn adapter_with(
    sandbox: &DynamicsSandbox,
    extra: Map<String, Value>,
) -> Arc<dyn SourceAdapter> {
    let mut settings = sandbox.connection_settings();
    settings.extend(extra);
    let config = ConnectionConfig::new("d365", "dynamics", settings)
        .with_inline_secrets(sandbox.connection_secrets());
    DynamicsFactory
        .build(&config, Arc::new(NoStore))
        .expect("the sandbox's settings are a valid connection")
}

pub fn adapter(sandbox: &DynamicsSandbox) -> Arc<dyn SourceAdapter> {
    adapter_with(sandbox, Map::new())
}
