//! The configured connections at run time: each one's adapter, pause state and figures, and
//! the routing of a contact to its connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;
use unisync_core::{CredentialStore, SourceAdapter, UnifiedContact};

use crate::config::ConnectionSettings;
use crate::providers;
use crate::store::{Store, now_ms};

/// Why a connection is not pushing right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The CRM's short-window rate limit: resumes by itself.
    RateLimited,
    /// The CRM's daily budget is spent: resumes at the reset.
    QuotaExhausted,
    /// The CRM refuses the credentials even after a refresh: needs an operator.
    Unauthorized,
}

/// A pause, with the CRM's own words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub reason: PauseReason,
    pub until_ms: u64,
    pub code: String,
    pub message: String,
}

/// Counters for `/metrics`, per connection.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    pub pushed_ok: AtomicU64,
    pub pushed_retry: AtomicU64,
    pub pushed_rate_limited: AtomicU64,
    pub pushed_dead_letter: AtomicU64,
    pub push_calls: AtomicU64,
    pub push_micros_total: AtomicU64,
    pub rate_limit_waits: AtomicU64,
    pub in_flight: AtomicU64,
}

impl ConnectionMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One configured connection, ready to push.
pub struct Connection {
    pub settings: ConnectionSettings,
    pub adapter: Arc<dyn SourceAdapter>,
    /// Rung when an edit joins the connection's queue.
    pub wake: Notify,
    pub metrics: ConnectionMetrics,
    pause: Mutex<Option<Pause>>,
}

impl Connection {
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The pause in force now, if any.
    pub fn pause(&self) -> Option<Pause> {
        let pause = self.pause.lock().unwrap();
        pause
            .clone()
            .filter(|p| p.until_ms > now_ms() || p.reason == PauseReason::Unauthorized)
    }

    /// Pauses the connection until `pause.until_ms` (an existing longer pause stands).
    /// Answers whether the connection was running until now (a new wait, not a longer one).
    pub fn set_pause(&self, pause: Pause) -> bool {
        let mut current = self.pause.lock().unwrap();
        let now = now_ms();
        let running = current.as_ref().is_none_or(|old| old.until_ms <= now);
        let keep = current
            .as_ref()
            .is_some_and(|old| old.until_ms > pause.until_ms && old.until_ms > now);
        if !keep {
            *current = Some(pause);
        }
        running
    }

    /// A push went through: whatever paused the connection is over.
    pub fn clear_pause(&self) {
        *self.pause.lock().unwrap() = None;
    }
}

/// Every configured connection, by name.
pub struct Connections {
    by_name: BTreeMap<String, Arc<Connection>>,
}

/// Keeps an adapter's changing credentials in the store's `meta` tree, scoped to its connection.
struct StoreCredentials {
    store: Store,
    connection: String,
}

impl CredentialStore for StoreCredentials {
    fn load(&self, key: &str) -> Option<String> {
        self.store
            .meta(&format!("credential/{}/{key}", self.connection))
            .ok()
            .flatten()
    }

    fn save(&self, key: &str, value: &str) -> Result<(), String> {
        self.store
            .set_meta(&format!("credential/{}/{key}", self.connection), value)
            .map_err(|err| err.to_string())
    }
}

impl Connections {
    /// Builds every connection's adapter through its provider's factory.
    pub fn build(settings: Vec<ConnectionSettings>, store: &Store) -> Result<Connections, String> {
        let mut by_name = BTreeMap::new();
        for connection in settings {
            let credentials = Arc::new(StoreCredentials {
                store: store.clone(),
                connection: connection.name.clone(),
            });
            let adapter = build_adapter(&connection, credentials)?;
            by_name.insert(
                connection.name.clone(),
                Arc::new(Connection {
                    settings: connection,
                    adapter,
                    wake: Notify::new(),
                    metrics: ConnectionMetrics::default(),
                    pause: Mutex::new(None),
                }),
            );
        }
        Ok(Connections { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Connection>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Connection>> {
        self.by_name.values()
    }

    /// The connection a contact's edits go to: the one named by its
    /// `external_system_config_id`, else the one connection of its `source_system`.
    pub fn route(&self, contact: &UnifiedContact) -> Result<&Arc<Connection>, String> {
        if let Some(name) = contact
            .external_system_config_id
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            return self.get(name).ok_or_else(|| {
                format!("no connection is named `{name}` (the contact's external_system_config_id)")
            });
        }
        let mut serving = self
            .by_name
            .values()
            .filter(|connection| connection.settings.system == contact.source_system);
        match (serving.next(), serving.next()) {
            (Some(connection), None) => Ok(connection),
            (None, _) => Err(format!(
                "no connection serves source_system `{}`",
                contact.source_system
            )),
            (Some(_), Some(_)) => Err(format!(
                "several connections serve source_system `{}`: the contact needs an external_system_config_id",
                contact.source_system
            )),
        }
    }
}

/// Builds one connection's adapter with its provider's factory; the error names the key.
pub fn build_adapter(
    connection: &ConnectionSettings,
    credentials: Arc<dyn CredentialStore>,
) -> Result<Arc<dyn SourceAdapter>, String> {
    let factories = providers::factories();
    let factory = factories
        .iter()
        .find(|factory| factory.system() == connection.system)
        .ok_or_else(|| {
            let known: Vec<&str> = factories.iter().map(|f| f.system()).collect();
            format!(
                "connections.{}.system: unknown system `{}` (known: {})",
                connection.name,
                connection.system,
                known.join(", ")
            )
        })?;
    factory
        .build(&connection.provider, credentials)
        .map_err(|err| err.to_string())
}
