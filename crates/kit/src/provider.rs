//! What a provider crate hands the daemon: one value, registered with one line.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use unisync_core::AdapterFactory;
use unisync_sandbox::SandboxCrm;

/// A starting sandbox fake.
pub type SandboxFuture =
    Pin<Box<dyn Future<Output = std::io::Result<Arc<dyn SandboxCrm>>> + Send + 'static>>;

/// Starts a provider's fake CRM on `listen` (port 0 for any), seeded with `demo_records`
/// contacts.
pub type SandboxStart = fn(listen: SocketAddr, demo_records: usize) -> SandboxFuture;

/// A provider as the daemon registers it: everything the daemon, its CLI and its sandbox
/// mode know of a CRM comes from here. A provider crate exports one as `PROVIDER`:
///
/// ```ignore
/// pub const PROVIDER: unisync_kit::Provider = unisync_kit::Provider {
///     factory: &MyCrmFactory,
///     #[cfg(feature = "sandbox")]
///     sandbox: Some(sandbox::start),
///     #[cfg(not(feature = "sandbox"))]
///     sandbox: None,
/// };
/// ```
#[derive(Clone, Copy)]
pub struct Provider {
    /// Builds the provider's adapters; its `system()` is the `system = "..."` value of its
    /// connections, the name of its sandbox and of its `unisync sandbox --<system>` flag.
    pub factory: &'static dyn AdapterFactory,
    /// Starts the provider's fake CRM (`unisync serve --sandbox`, `unisync sandbox`); `None`
    /// when built without the provider's `sandbox` feature.
    pub sandbox: Option<SandboxStart>,
}

impl Provider {
    /// The `system` value of the provider's connections.
    pub fn system(&self) -> &'static str {
        self.factory.system()
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("system", &self.system())
            .field("sandbox", &self.sandbox.is_some())
            .finish()
    }
}
