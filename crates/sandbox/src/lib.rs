//! What every fake CRM shares. The fakes themselves live in their provider's crate (for
//! example `unisync_hubspot::sandbox`, behind its `sandbox` feature), each faithful to its
//! CRM's documented API on loopback, for tests, demos and adapter work; the daemon starts
//! them through each provider's registration (`unisync_kit::Provider`).
//!
//! - [`Faults`] and [`Fault`]: misbehaviour on demand, which each fake shows in its CRM's own
//!   shape.
//! - [`SandboxCrm`]: what the daemon needs of a running fake to point a connection at it.

mod faults;

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
