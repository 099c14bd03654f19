//! unisync's HubSpot adapter: contacts pushed through HubSpot's CRM v3 API (single PATCH and
//! batch update, up to 100 per call), company links through v4 associations, pulls by
//! paging the contact list, reads before a write by batch read (up to 100 per call). A write
//! to a contact HubSpot merged into another is reported as `RecordMerged`, naming the
//! survivor.
//!
//! - [`config`]: the connection's settings ([`HubspotConfig`]).
//! - [`mapping`]: unified fields to HubSpot properties, as data.
//! - [`error`]: [`parse_error`], the one place HubSpot's answers are classified.
//! - `client`, `auth`: HTTP, bearer tokens (static or OAuth refresh), and pacing to HubSpot's
//!   rate-limit headers, on the provider toolkit ([`unisync_kit`]).
//! - `account`: the account's time zone, in which the daily limit resets.
//! - [`HubspotAdapter`]: the [`SourceAdapter`].

mod account;
mod adapter;
mod auth;
mod client;
pub mod config;
pub mod error;
pub mod mapping;
#[cfg(feature = "sandbox")]
pub mod sandbox;

use std::sync::Arc;

use unisync_core::{AdapterFactory, ConfigError, ConnectionConfig, CredentialStore, SourceAdapter};

pub use adapter::{BATCH_LIMIT, HubspotAdapter};
pub use auth::REFRESH_TOKEN_KEY;
pub use config::{HubspotAuth, HubspotConfig};
pub use error::parse_error;
pub use mapping::default_mapping;

/// Builds HubSpot adapters from `[connections.NAME]` tables with `system = "hubspot"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HubspotFactory;

impl AdapterFactory for HubspotFactory {
    fn system(&self) -> &'static str {
        "hubspot"
    }

    fn build(
        &self,
        config: &ConnectionConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Arc<dyn SourceAdapter>, ConfigError> {
        let settings = HubspotConfig::from_connection(config)?;
        let adapter = HubspotAdapter::new(&settings, credentials).map_err(|err| {
            config.error("base_url", format!("cannot build the HTTP client: {err}"))
        })?;
        Ok(Arc::new(adapter))
    }
}

/// HubSpot as the daemon registers it (one line in its `providers.rs`).
pub const PROVIDER: unisync_kit::Provider = unisync_kit::Provider {
    factory: &HubspotFactory,
    #[cfg(feature = "sandbox")]
    sandbox: Some(start_sandbox),
    #[cfg(not(feature = "sandbox"))]
    sandbox: None,
};

/// Starts the fake HubSpot on `listen`, seeded with `demo_records` contacts.
#[cfg(feature = "sandbox")]
fn start_sandbox(listen: std::net::SocketAddr, demo_records: usize) -> unisync_kit::SandboxFuture {
    Box::pin(async move {
        let sandbox = sandbox::HubspotSandbox::start(listen, demo_records).await?;
        Ok(Arc::new(sandbox) as Arc<dyn unisync_sandbox::SandboxCrm>)
    })
}
