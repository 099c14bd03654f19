//! Faithful fake CRM APIs on loopback, for tests, demos and adapter work.
//!
//! Each fake keeps its records in memory, answers in the CRM's own shapes (see
//! `shared/docs/crm-apis.md`), and takes [`Fault`]s to misbehave on demand. The daemon starts them through
//! each provider's registration (`unisync_kit::Provider`).

mod faults;
pub mod hubspot;
pub mod salesforce;

use std::collections::BTreeMap;
use std::net::SocketAddr;

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
