//! The toolkit every unisync provider crate builds on, so that a new CRM is its mapping, its
//! error classifier and its fake, and nothing it would otherwise copy from another provider.
//!
//! - [`HttpClient`] and [`Answer`]: requests whose answers carry status, headers and body,
//!   with transport failures already classified ([`transport_error`], by [`Effect`]).
//! - [`retry_after`]: the `Retry-After` header in seconds or as an HTTP date, bounded.
//! - [`TokenCache`]: bearer tokens fetched once for all concurrent callers (single-flight),
//!   renewed ahead of expiry or when the CRM refuses one; a failed fetch is the answer of every
//!   caller that waited for it.
//! - [`RotatingSecret`]: a refresh token the CRM may rotate, persisted through the daemon's
//!   [`CredentialStore`](unisync_core::CredentialStore), falling back to the configured one.
//! - [`Pacer`]: request slots under a rate limit, learnt from the CRM's answers, paused by a
//!   429, optionally capped in concurrent requests.
//! - [`redacted`]: an error with the secrets a CRM might echo taken out.
//! - [`Provider`]: the one value a provider crate exports to be registered in the daemon:
//!   its adapter factory and its sandbox fake.

#![warn(missing_docs)]

mod http;
mod pacer;
mod provider;
mod retry_after;
mod token;
mod transport;

pub use http::{Answer, CONNECT_TIMEOUT, HttpClient, endpoint};
pub use pacer::{LONGEST_WINDOW, Pacer, Slot, WindowReport};
pub use provider::{Provider, SandboxFuture, SandboxStart};
pub use retry_after::retry_after;
pub use token::{Fresh, RotatingSecret, Token, TokenCache};
pub use transport::{Effect, redact, redacted, transport_error};
