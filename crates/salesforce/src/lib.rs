//! The Salesforce adapter: pushes unified contact edits into Salesforce Contacts.
//!
//! - [`SalesforceFactory`] builds a [`SalesforceAdapter`] from a `system = "salesforce"`
//!   connection (keys in [`config`]).
//! - One edit is a `PATCH .../sobjects/Contact/{Id}`; several go in one collections call
//!   (`allOrNone: false`, up to 200), each record's result mapped to its own item; then one
//!   SOQL query reads back what Salesforce stored.
//! - Sessions come from the OAuth token endpoint (refresh token, client credentials or JWT
//!   bearer) and are renewed on `INVALID_SESSION_ID`, once per expiry for all callers (the
//!   kit's `TokenCache`); a `Retry-After` of any answer, the token endpoint's too, is kept.
//! - `Sforce-Limit-Info` is read from every answer and reported as the connection's API usage;
//!   the daemon's budget governor (`reserve_share`) stops pushing before the budget is spent.
//! - Record ids are kept in their 18-character, case-safe form
//!   ([`SourceAdapter::normalize_source_id`]): a 15-character id is the same record.
//! - A write that landed is confirmed even when reading it back fails (with the values sent);
//!   a write whose answer was lost is `OutcomeUnknown`.
//! - A write to a record a merge deleted is `RecordMerged` with the record that survives,
//!   found with `queryAll` (`IsDeleted`, `MasterRecordId`) through up to five merges; a record
//!   deleted without a merge stays `RecordGone`.
//! - [`SourceAdapter::read`] reads a batch's current values
//!   in one SOQL query, for the conflict check; `same_value` holds values Salesforce stores
//!   alike (trimmed, empty as none, Email in lower case) for the same.
//! - Big work goes as Bulk API 2.0 ingest jobs (`SourceAdapter::start_bulk_job`,
//!   `poll_bulk_job`; up to [`MAX_BULK_ITEMS`] a job): create, upload one CSV, close; then
//!   poll, and map the job's successful, failed and unprocessed records back to each item,
//!   classified like collections results. Nothing is kept between start and poll, so a job
//!   survives a restart by its id alone.
//! - [`SalesforceAdapter::push_if_unmodified`] writes one record only if it was not modified
//!   after a given version (`If-Unmodified-Since`, one-second precision), and tells a refusal
//!   for that reason ([`ConditionalPush::ModifiedSince`](unisync_core::ConditionalPush::ModifiedSince)) from every other outcome.
//! - [`parse_error`] is the one place Salesforce's answers are classified; refusals of the
//!   whole connection (API disabled, access to Contacts, a mapped field the org lacks, a URL
//!   Salesforce does not serve) are `Misconfigured`, never a dead letter. Token endpoint
//!   answers are never repeated in errors beyond Salesforce's known codes and descriptions.

mod adapter;
mod auth;
mod bulk;
mod client;
pub mod config;
mod error;
mod id;
pub mod mapping;
#[cfg(feature = "sandbox")]
pub mod sandbox;

use std::sync::Arc;

use unisync_core::{AdapterFactory, ConfigError, ConnectionConfig, CredentialStore, SourceAdapter};

pub use adapter::{MAX_BULK_ITEMS, SalesforceAdapter};
pub use config::{Grant, SalesforceConfig};
pub use error::{SalesforceError, classify, classify_job_failure, parse_error, parse_token_error};
pub use mapping::default_mapping;

/// The `system` value of Salesforce connections.
pub const SYSTEM: &str = "salesforce";

/// Builds Salesforce adapters from config.
#[derive(Clone, Copy, Debug, Default)]
pub struct SalesforceFactory;

impl AdapterFactory for SalesforceFactory {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn build(
        &self,
        config: &ConnectionConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Arc<dyn SourceAdapter>, ConfigError> {
        let settings = SalesforceConfig::from_connection(config)?;
        let adapter = SalesforceAdapter::new(settings, credentials).map_err(|err| {
            config.error(
                "timeout_secs",
                format!("cannot build the HTTP client: {err}"),
            )
        })?;
        Ok(Arc::new(adapter))
    }
}

/// Salesforce as the daemon registers it (one line in its `providers.rs`).
pub const PROVIDER: unisync_kit::Provider = unisync_kit::Provider {
    factory: &SalesforceFactory,
    #[cfg(feature = "sandbox")]
    sandbox: Some(start_sandbox),
    #[cfg(not(feature = "sandbox"))]
    sandbox: None,
};

/// Starts the fake Salesforce on `listen`, seeded with `demo_records` contacts.
#[cfg(feature = "sandbox")]
fn start_sandbox(listen: std::net::SocketAddr, demo_records: usize) -> unisync_kit::SandboxFuture {
    Box::pin(async move {
        let sandbox = sandbox::SalesforceSandbox::start(listen, demo_records).await?;
        Ok(Arc::new(sandbox) as Arc<dyn unisync_sandbox::SandboxCrm>)
    })
}
