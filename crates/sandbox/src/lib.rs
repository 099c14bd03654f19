//! Faithful fake CRM APIs on loopback, for tests, demos and adapter work.
//!
//! Each fake keeps its records in memory, answers in the CRM's own shapes (see
//! `shared/docs/crm-apis.md`), and takes [`Fault`]s to misbehave on demand. `unisync serve
//! --sandbox` and `unisync sandbox` start them through [`start`].

mod faults;
pub mod hubspot;
pub mod salesforce;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub use faults::{Fault, Faults};

/// A running fake CRM, as the daemon sees it: enough to point a connection at it.
pub trait SandboxCrm: Send + Sync {
    /// The `source_system` the fake imitates.
    fn system(&self) -> &'static str;
    /// Where it listens.
    fn addr(&self) -> SocketAddr;
    /// Connection settings (`base_url`, `login_url`, ...) that point a connection of this
    /// system at the fake.
    fn connection_settings(&self) -> serde_json::Map<String, serde_json::Value>;
    /// Secrets (by key, e.g. `access_token`) the fake accepts, for the connection to use.
    fn connection_secrets(&self) -> BTreeMap<String, String>;
    /// The fake's fault switches.
    fn faults(&self) -> &Faults;
}

/// Starts the fake for `system` on `listen` (port 0 for any), seeded with `demo_records`
/// contacts. `Ok(None)` when no fake imitates that system.
pub async fn start(
    system: &str,
    listen: SocketAddr,
    demo_records: usize,
) -> std::io::Result<Option<Arc<dyn SandboxCrm>>> {
    Ok(match system {
        "hubspot" => Some(Arc::new(
            hubspot::HubspotSandbox::start(listen, demo_records).await?,
        )),
        "salesforce" => Some(Arc::new(
            salesforce::SalesforceSandbox::start(listen, demo_records).await?,
        )),
        _ => None,
    })
}
