//! The heart of unisync, and what an adapter author reads.
//!
//! - [`UnifiedContact`] and [`ContactField`]: the unified model of the update endpoint.
//! - [`ContactPatch`]: an edit, field by field; a value sets, `None` clears, absent leaves alone.
//! - [`parse_update_body`]: the update endpoint's body rules (required fields, unknown fields,
//!   read-only fields accepted and ignored).
//! - [`FieldMapping`]: unified field to CRM field, as data, with per-field limits.
//! - [`SourceAdapter`]: what a provider implements; [`AdapterError`] is how it reports a failure
//!   so that the dispatcher can decide what to do without reading strings.
//! - [`AdapterFactory`] and [`ConnectionConfig`]: how a provider is built from its config table.
//!
//! This crate knows no HTTP, no storage and no async runtime.

#![warn(missing_docs)]

mod adapter;
mod config;
mod contact;
mod error;
mod mapping;
mod patch;
mod validation;

pub use adapter::{
    AdapterFactory, ApiUsage, BulkProgress, Capabilities, ConditionalPush, ConfirmedContact,
    ContactPage, CredentialStore, CustomerLink, PushItem, PushResult, SourceAdapter, SourceContact,
};
pub use config::{ConfigError, ConnectionConfig, CrmFieldNaming, Secret};
pub use contact::{ContactField, UnifiedContact};
pub use error::{AdapterError, ErrorKind};
pub use mapping::{FieldMapping, FieldRule};
pub use patch::ContactPatch;
/// The update body parser's property as a check, for the `update_body` fuzz target.
#[cfg(feature = "fuzzing")]
pub use validation::properties::check_update_body_bytes;
pub use validation::{FieldViolation, is_valid_email, parse_update_body};
