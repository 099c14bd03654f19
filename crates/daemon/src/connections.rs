//! The configured connections at run time: each one's adapter, pause state and figures, and
//! the routing of a contact to its connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use unisync_core::{ApiUsage, CredentialStore, SourceAdapter, UnifiedContact};

use crate::config::ConnectionSettings;
use crate::providers;
use crate::store::{Store, now_ms};
use crate::traffic::RecentTraffic;

/// The longest an adaptive linger stretches to.
pub const MAX_LINGER: Duration = Duration::from_secs(30);
/// How long a connection that reached its budget's reserve waits before a push brings a
/// fresh reading, when the CRM's budget has no fixed reset (Salesforce's rolling 24 hours).
pub const RESERVE_RECHECK: Duration = Duration::from_secs(15 * 60);
/// The linger of a connection whose short rate-limit window is full: a call is scarce then,
/// and a batch that waits this long for company costs no more.
pub const PRESSURE_LINGER: Duration = Duration::from_secs(2);

/// Why a connection is not pushing right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The CRM's short-window rate limit: resumes by itself.
    RateLimited,
    /// The CRM's daily budget is spent: resumes at the reset.
    QuotaExhausted,
    /// The CRM refuses the credentials even after a refresh.
    Unauthorized,
    /// The CRM refuses every write of this connection for a reason of the account or the
    /// configuration (a missing scope, an API disabled, a wrong URL or version, a mapped
    /// field it does not have).
    Misconfigured,
}

impl PauseReason {
    /// The reason as the API, the CLI and the status page name it.
    pub fn name(&self) -> &'static str {
        match self {
            PauseReason::RateLimited => "rate_limited",
            PauseReason::QuotaExhausted => "quota_exhausted",
            PauseReason::Unauthorized => "unauthorized",
            PauseReason::Misconfigured => "misconfigured",
        }
    }

    /// Whether the pause lifts only when a probe push goes through: the CRM refuses the
    /// connection as it is, and nothing but a change on the CRM's side or in the config
    /// ends that. Such a pause makes the daemon unready.
    pub fn lifts_by_probe(&self) -> bool {
        matches!(self, PauseReason::Unauthorized | PauseReason::Misconfigured)
    }
}

/// A pause, with the CRM's own words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub reason: PauseReason,
    /// When the pause ends; for a pause that lifts by probe, when the next probe goes.
    pub until_ms: u64,
    pub code: String,
    pub message: String,
    /// Probes the CRM refused in a row (pauses that lift by probe): each one waits longer.
    pub failed_probes: u32,
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
    /// Fields of pushed edits the CRM held already, so not sent.
    pub fields_unchanged: AtomicU64,
    /// Edits with nothing left to send: confirmed without a call.
    pub edits_unchanged: AtomicU64,
    /// Reads of the CRM's current values before a write (conflict policies).
    pub read_calls: AtomicU64,
    /// Fields a person changed in the CRM that ours would have overwritten.
    pub conflicts: AtomicU64,
    /// Conditional writes the CRM refused because the record changed after the read.
    pub modified_since_read: AtomicU64,
    /// Contacts re-pointed at the record that remained after the CRM merged theirs.
    pub merges_followed: AtomicU64,
    /// Bulk jobs started.
    pub bulk_jobs: AtomicU64,
    /// Calls and landings of the last minutes.
    pub recent: RecentTraffic,
}

impl ConnectionMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One configured connection, ready to push.
pub struct Connection {
    pub settings: ConnectionSettings,
    adapter: RwLock<Arc<dyn SourceAdapter>>,
    /// Where the adapter keeps the credentials that change at run time (a rotated refresh
    /// token), when it was built from config: [`Connection::renew_adapter`] builds it again
    /// from them.
    credentials: Option<Arc<dyn CredentialStore>>,
    /// Rung when an edit joins the connection's queue.
    pub wake: Notify,
    /// Rung when the connection's pause begins or ends: a leader on a shared store reports
    /// it then (see `dispatcher::leadership`).
    pub pause_changed: Notify,
    pub metrics: ConnectionMetrics,
    pause: Mutex<Option<Pause>>,
    /// The budget reading the reserve last paused the connection on.
    reserve_paused_on: Mutex<Option<ApiUsage>>,
}

impl Connection {
    pub fn new(settings: ConnectionSettings, adapter: Arc<dyn SourceAdapter>) -> Connection {
        Connection {
            settings,
            adapter: RwLock::new(adapter),
            credentials: None,
            wake: Notify::new(),
            pause_changed: Notify::new(),
            metrics: ConnectionMetrics::default(),
            pause: Mutex::new(None),
            reserve_paused_on: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The connection's adapter now (see [`Connection::renew_adapter`]).
    pub fn adapter(&self) -> Arc<dyn SourceAdapter> {
        self.adapter.read().unwrap().clone()
    }

    /// Builds the adapter afresh, from config and the credentials kept in the store: a node
    /// that takes over the connection's leadership pushes with the refresh token its last
    /// leader rotated (adapters read the stored one when built), and starts its pacing and
    /// token from the CRM's answers, not from what this process saw when it last led.
    pub fn renew_adapter(&self) -> Result<(), String> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let adapter = build_adapter(&self.settings, credentials.clone())?;
        *self.adapter.write().unwrap() = adapter;
        Ok(())
    }

    /// The pause in force now, if any. A pause that lifts by probe stays after its time,
    /// until a probe goes through.
    pub fn pause(&self) -> Option<Pause> {
        let pause = self.pause.lock().unwrap();
        pause
            .clone()
            .filter(|p| p.until_ms > now_ms() || p.reason.lifts_by_probe())
    }

    /// How long a contact waits after a push whose outcome is unknown before it is pushed
    /// again: the configured `settle_ms`, else twice the adapter's request timeout.
    pub fn settle_time(&self) -> Duration {
        settle_time(&self.settings, self.adapter().as_ref())
    }

    /// How long a ready edit may wait for its batch to fill now: the connection's linger,
    /// stretched up to four times as the CRM's daily budget runs from half used to spent (a
    /// call then carries more edits when calls are scarce), never past [`MAX_LINGER`]; and
    /// while the CRM's short rate-limit window is more than half full, at least a share of
    /// [`PRESSURE_LINGER`] growing with it, whatever the configured linger.
    pub fn linger(&self) -> Duration {
        let pressure = ((self.adapter().rate_limit_pressure() - 0.5) * 2.0).clamp(0.0, 1.0);
        self.budget_linger().max(PRESSURE_LINGER.mul_f64(pressure))
    }

    fn budget_linger(&self) -> Duration {
        let base = self
            .settings
            .dispatch
            .max_linger_ms
            .map(Duration::from_millis)
            .unwrap_or(self.adapter().capabilities().default_linger);
        let used = self
            .adapter()
            .api_usage()
            .map(|usage| usage.used as f64 / usage.limit.max(1) as f64)
            .unwrap_or(0.0);
        let stretch = 1.0 + 3.0 * ((used - 0.5) * 2.0).clamp(0.0, 1.0);
        base.mul_f64(stretch).min(MAX_LINGER.max(base))
    }

    /// Whether pushing must stop to leave the reserve of the CRM's daily budget to others:
    /// answers how long to pause. A reading that already paused the connection once lets
    /// one batch through after the pause, so that a fresh reading comes back (the budget may
    /// have reset, or be rolling). Answers the pause and the reading it stands on.
    pub fn reserve_pause(&self) -> Option<(Duration, ApiUsage)> {
        let usage = self.adapter().api_usage()?;
        let line = usage.limit as f64 * (1.0 - self.settings.dispatch.reserve_share);
        let mut paused_on = self.reserve_paused_on.lock().unwrap();
        if (usage.used as f64) < line || *paused_on == Some(usage) {
            *paused_on = None;
            return None;
        }
        *paused_on = Some(usage);
        let wait = self
            .adapter()
            .budget_resets_in()
            .unwrap_or(RESERVE_RECHECK)
            .max(Duration::from_secs(1));
        Some((wait, usage))
    }

    /// How long edits a stopped process left in flight wait at the next start: at least the
    /// settle time, because the dead process's last requests may still land until then.
    pub fn recovery_grace(&self) -> Duration {
        Duration::from_millis(self.settings.dispatch.recovery_grace_ms).max(self.settle_time())
    }

    /// Pauses the connection after the CRM refused it as a whole (`reason` lifts by probe).
    /// The first refusal, and each refused probe after it, waits longer by `probe_waits`;
    /// refusals from pushes that were already in flight when the pause began do not count
    /// again. Answers whether the connection was running until now.
    pub fn pause_until_probe(
        &self,
        reason: PauseReason,
        code: &str,
        message: &str,
        probe_waits: impl Fn(u32) -> Duration,
    ) -> bool {
        let now = now_ms();
        let failed_probes = {
            let current = self.pause.lock().unwrap();
            match current.as_ref() {
                Some(old) if old.reason == reason && old.until_ms > now => return false,
                Some(old) if old.reason.lifts_by_probe() => old.failed_probes + 1,
                _ => 1,
            }
        };
        self.set_pause(Pause {
            reason,
            until_ms: now + probe_waits(failed_probes).as_millis() as u64,
            code: code.to_string(),
            message: message.to_string(),
            failed_probes,
        })
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
            self.pause_changed.notify_one();
        }
        running
    }

    /// A push went through: whatever paused the connection is over.
    pub fn clear_pause(&self) {
        if self.pause.lock().unwrap().take().is_some() {
            self.pause_changed.notify_one();
        }
    }

    /// Ends `probed`, the pause a probe was sent under, unless the probe's own answer paused
    /// the connection again meanwhile: the CRM took the connection's request, whatever it
    /// said about the edits in it.
    pub fn end_probed_pause(&self, probed: &Pause) {
        let mut current = self.pause.lock().unwrap();
        if current.as_ref() == Some(probed) {
            *current = None;
            self.pause_changed.notify_one();
        }
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
            let credentials: Arc<dyn CredentialStore> = Arc::new(StoreCredentials {
                store: store.clone(),
                connection: connection.name.clone(),
            });
            let adapter = build_adapter(&connection, credentials.clone())?;
            let mut built = Connection::new(connection, adapter);
            built.credentials = Some(credentials);
            by_name.insert(built.settings.name.clone(), Arc::new(built));
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

/// How long a contact waits after a push whose outcome is unknown: the connection's
/// `settle_ms`, else twice its adapter's request timeout.
pub fn settle_time(connection: &ConnectionSettings, adapter: &dyn SourceAdapter) -> Duration {
    connection
        .dispatch
        .settle_ms
        .map(Duration::from_millis)
        .unwrap_or(2 * adapter.capabilities().request_timeout)
}

/// A settle time shorter than the request timeout would let a timed-out request land after
/// the push that follows it.
fn check_settle_time(
    connection: &ConnectionSettings,
    adapter: &dyn SourceAdapter,
) -> Result<(), String> {
    let timeout = adapter.capabilities().request_timeout;
    match connection.dispatch.settle_ms {
        Some(settle) if Duration::from_millis(settle) < timeout => Err(format!(
            "connections.{}.settle_ms: {settle} ms is shorter than the request timeout ({} ms); a request that timed out could still land after the next push",
            connection.name,
            timeout.as_millis()
        )),
        _ => Ok(()),
    }
}

/// On a shared store, a push holds its edits' leases only until the connection's settle time
/// before they end (a request sent later might still land after another node took the edit
/// over), and renews them every quarter of their length: a lease shorter than twice the
/// settle time would leave no renewal in time.
pub fn check_lease(
    connection: &ConnectionSettings,
    settle: Duration,
    lease: Duration,
) -> Result<(), String> {
    if lease < 2 * settle {
        return Err(format!(
            "storage.lease_secs: {} s is less than twice the settle time of connection `{}` ({} ms); a push could not renew its leases in time. Raise lease_secs to at least {} s, or lower the connection's settle_ms or timeout_secs",
            lease.as_secs(),
            connection.name,
            settle.as_millis(),
            (2 * settle).as_secs_f64().ceil() as u64
        ));
    }
    Ok(())
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
    let adapter = factory
        .build(&connection.provider, credentials)
        .map_err(|err| err.to_string())?;
    check_settle_time(connection, adapter.as_ref())?;
    if connection.on_conflict.reads_first() && !adapter.capabilities().reads_records {
        return Err(format!(
            "connections.{}.on_conflict: `{}` reads records before writing, which the {} adapter cannot do",
            connection.name,
            connection.on_conflict.name(),
            connection.system
        ));
    }
    Ok(adapter)
}

#[cfg(test)]
mod tests {
    use super::PauseReason;

    #[test]
    fn a_pause_reasons_name_is_its_json_form() {
        for reason in [
            PauseReason::RateLimited,
            PauseReason::QuotaExhausted,
            PauseReason::Unauthorized,
            PauseReason::Misconfigured,
        ] {
            assert_eq!(serde_json::json!(reason.name()), serde_json::json!(reason));
        }
    }
}
