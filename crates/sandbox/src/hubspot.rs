//! The fake Hubspot API. Being written: for now it only listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::{Faults, SandboxCrm};

/// A running fake Hubspot.
pub struct HubspotSandbox {
    addr: SocketAddr,
    faults: Faults,
}

impl HubspotSandbox {
    /// Starts the fake on `listen`, seeded with `demo_records` contacts.
    pub async fn start(listen: SocketAddr, _demo_records: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        Ok(HubspotSandbox {
            addr,
            faults: Faults::default(),
        })
    }
}

impl SandboxCrm for HubspotSandbox {
    fn system(&self) -> &'static str {
        "hubspot"
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
