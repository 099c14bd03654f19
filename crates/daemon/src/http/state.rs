//! What every handler needs.

use std::sync::Arc;

use super::auth::Tokens;
use crate::connections::Connections;
use crate::store::Store;

/// The daemon's shared parts, as the handlers see them.
pub struct AppState {
    pub store: Store,
    pub connections: Arc<Connections>,
    pub tokens: Arc<Tokens>,
    /// The largest body of a request to the contact routes, in bytes (and the longest line
    /// of an admin import).
    pub max_body_bytes: usize,
}
