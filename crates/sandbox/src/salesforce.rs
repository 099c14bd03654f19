//! The fake Salesforce API. Being written: for now it only listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::{Faults, SandboxCrm};

/// A running fake Salesforce.
pub struct SalesforceSandbox {
    addr: SocketAddr,
    faults: Faults,
}

impl SalesforceSandbox {
    /// Starts the fake on `listen`, seeded with `demo_records` contacts.
    pub async fn start(listen: SocketAddr, _demo_records: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        Ok(SalesforceSandbox {
            addr,
            faults: Faults::default(),
        })
    }
}

impl SandboxCrm for SalesforceSandbox {
    fn system(&self) -> &'static str {
        "salesforce"
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn connection_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    fn connection_secrets(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn faults(&self) -> &Faults {
        &self.faults
    }
}
