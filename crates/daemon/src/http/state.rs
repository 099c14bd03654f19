//! What every handler needs.

use std::sync::{Arc, PoisonError, RwLock};

use super::auth::Tokens;
use crate::connections::Connections;
use crate::reload::Reloads;
use crate::store::Store;

/// The daemon's shared parts, as the handlers see them.
pub struct AppState {
    pub store: Store,
    pub connections: Live<Connections>,
    pub tokens: Arc<Live<Tokens>>,
    /// The largest body of a request to the contact routes, in bytes (and the longest line
    /// of an admin import).
    pub max_body_bytes: usize,
    pub reloads: Reloads,
}

impl AppState {
    /// Tells the dispatcher of connection `name` that an edit joined its queue: the
    /// connection in force now, after the edit was written, and not the one the request
    /// began with, which a reload may have replaced meanwhile (its dispatcher stopped, the
    /// new one may have looked at the queue before the edit was in it).
    pub fn wake(&self, name: &str) {
        if let Some(connection) = self.connections.get().get(name) {
            connection.wake.notify_one();
        }
    }
}

/// A part of the daemon that a config reload replaces while it runs. A reader takes the one
/// in force and keeps it for as long as it uses it: a request is served by one config from
/// its start to its answer, and a reload never waits for requests.
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Arc::new(value)))
    }

    /// The one in force now.
    pub fn get(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `value` in force, for every reader from now on.
    pub fn replace(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}
