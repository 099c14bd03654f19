//! The Microsoft Dynamics 365 (Dataverse) adapter: pushes unified contact edits into
//! Dataverse contacts through the Web API.
//!
//! - [`DynamicsFactory`] builds a [`DynamicsAdapter`] from a `system = "dynamics"` connection
//!   (keys in [`config`]); [`PROVIDER`] registers it (and, with the `sandbox` feature, the
//!   fake Dataverse) in the daemon.
//! - Tokens come from the Microsoft identity platform (client credentials, scope
//!   `{base_url}/.default`), fetched once for all callers and renewed ahead of expiry or
//!   after a 401 (the kit's token cache).
//! - One edit is a `PATCH contacts({id})` with `If-Match: *` (an update, never a create) and
//!   `Prefer: return=representation`, whose row is the confirmation; several go in one
//!   `$batch`, each contact in a change set of its own so that one refusal rolls back only
//!   its own contact. The account link is `parentcustomerid_account@odata.bind`
//!   (`/accounts(id)`, `null` unlinks), in the same write.
//! - The row's ETag is the CRM version: [`SourceAdapter::push_if_unmodified`] writes with
//!   `If-Match: <etag>` and tells a 412 apart; [`SourceAdapter::read`] reads a batch's rows
//!   for the conflict policies.
//! - Requests are paced under Dataverse's service protection limits (requests in a 5-minute
//!   window, concurrent requests); a 429 pauses the connection for its `Retry-After`.
//! - [`parse_error`] is the one place Dataverse's answers are classified.
//!
//! [`SourceAdapter::push_if_unmodified`]: unisync_core::SourceAdapter::push_if_unmodified
//! [`SourceAdapter::read`]: unisync_core::SourceAdapter::read

mod adapter;
mod batch;
mod client;
pub mod config;
mod error;
pub mod mapping;
#[cfg(feature = "sandbox")]
pub mod sandbox;

use std::sync::Arc;

use unisync_core::{AdapterFactory, ConfigError, ConnectionConfig, CredentialStore, SourceAdapter};

pub use adapter::DynamicsAdapter;
pub use config::DynamicsConfig;
pub use error::{DataverseError, parse_error, parse_token_error};
pub use mapping::default_mapping;

/// The `system` value of Dynamics 365 connections.
pub const SYSTEM: &str = "dynamics";

/// Builds Dynamics 365 adapters from config.
#[derive(Clone, Copy, Debug, Default)]
pub struct DynamicsFactory;

impl AdapterFactory for DynamicsFactory {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn build(
        &self,
        config: &ConnectionConfig,
        _credentials: Arc<dyn CredentialStore>,
    ) -> Result<Arc<dyn SourceAdapter>, ConfigError> {
        let settings = DynamicsConfig::from_connection(config)?;
        let adapter = DynamicsAdapter::new(settings).map_err(|err| {
            config.error(
                "timeout_secs",
                format!("cannot build the HTTP client: {err}"),
            )
        })?;
        Ok(Arc::new(adapter))
    }
}

/// The provider as the daemon registers it: the factory, and the fake Dataverse when built
/// with the `sandbox` feature.
pub const PROVIDER: unisync_kit::Provider = unisync_kit::Provider {
    factory: &DynamicsFactory,
    #[cfg(feature = "sandbox")]
    sandbox: Some(sandbox::start),
    #[cfg(not(feature = "sandbox"))]
    sandbox: None,
};
