//! `unisync serve`: the HTTP API and one dispatcher per connection, until SIGTERM or SIGINT.
//! SIGHUP (`systemctl reload`) reads the config file again and applies it while serving, or
//! refuses it whole and goes on with the config in force (see [`Running::reload`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use unisync_sandbox::SandboxCrm;

use crate::config::{Config, ConnectionSettings, StorageEngine};
use crate::connections::{Connections, check_lease};
use crate::dispatcher::Dispatchers;
use crate::http::server::ServerLimits;
use crate::http::state::Live;
use crate::http::{self, auth::Tokens, state::AppState};
use crate::providers;
use crate::pull::pull_contacts;
use crate::reload::{Reloads, restart_keys};
use crate::store::{Pruned, Retention, Store, StoreError, now_ms};
use crate::timefmt::rfc3339;
use unisync_core::Secret;

/// Contacts each built-in sandbox CRM starts with in `serve --sandbox`.
const SANDBOX_DEMO_RECORDS: usize = 25;

/// Why `serve` stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// It could not start for a reason of its config (a bad key, a missing secret).
    Start(String),
    /// It could not start for a reason of the machine: the store is locked by another
    /// process or cannot be opened, the port is in use.
    Unavailable(String),
    /// The store failed while serving (a flush or a write could not reach the disk): the
    /// daemon stopped accepting, answered what was in flight, and exits for its supervisor to
    /// restart it from the durable state.
    StoreFailed(String),
}

impl From<String> for ServeError {
    fn from(message: String) -> Self {
        ServeError::Start(message)
    }
}

/// Runs the daemon on `config`, read from `config_path` (which SIGHUP reads again), until
/// SIGTERM or SIGINT, or until its store fails.
pub async fn serve(config_path: &Path, config: Config, sandbox: bool) -> Result<(), ServeError> {
    // First of all: SIGHUP's default action ends the process. One that comes while the
    // daemon starts waits, and reloads once it serves.
    let mut signals = Signals::install()
        .map_err(|e| ServeError::Unavailable(format!("installing signal handlers: {e}")))?;
    // Without admin tokens in the config, the admin routes take one made for this run, which
    // only the daemon's user can read (beside `daemon.addr`, for the local CLI).
    let run_admin_token = generate_token();
    let sandboxes = sandbox.then(Sandboxes::default);
    let plan = Plan::read(config, &run_admin_token, sandboxes.as_ref()).await?;
    let store =
        Store::open_configured(&plan.config.storage)
            .await
            .map_err(|error| match error {
                StoreError::Misconfigured(message) => ServeError::Start(message),
                other => ServeError::Unavailable(other.to_string()),
            })?;
    let connections = Connections::build(plan.settings, &store)?;
    check_leases(&store, &connections)?;
    let config = plan.config;
    recover_in_flight(&store, &connections, config.dispatch.recovery_grace_ms).await?;
    if let Some(sandboxes) = &plan.sandboxes {
        for name in sandboxes.started_since(None) {
            if let Some(connection) = connections.get(name) {
                register_demo_contacts(&store, connection).await?;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| {
            ServeError::Unavailable(format!(
                "server.listen: cannot listen on {}: {e}",
                config.server.listen
            ))
        })?;
    let dispatchers = Dispatchers::start(&store, &connections, true);
    let pruning = tokio::spawn(prune_now_and_then(
        store.clone(),
        config.storage.retention(),
    ));
    let connection_count = connections.iter().count();
    let state = Arc::new(AppState {
        store: store.clone(),
        connections: Live::new(connections),
        tokens: Arc::new(Live::new(plan.tokens)),
        max_body_bytes: config.server.max_body_bytes,
        reloads: Reloads::default(),
    });
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Only a daemon holding a sled store answers for it; on PostgreSQL the CLI opens the
    // database itself.
    let addr_file = (config.storage.engine == StorageEngine::Sled)
        .then(|| daemon_addr_file(&config.storage.path));
    let token_file = addr_file
        .is_some()
        .then(|| admin_token_file(&config.storage.path));
    publish_run_admin_token(
        token_file.as_deref(),
        &run_admin_token,
        plan.run_admin_token_in_use,
    )?;
    if let Some(addr_file) = &addr_file {
        write_private_file(addr_file, addr.to_string().as_bytes())
            .map_err(|e| format!("writing {}: {e}", addr_file.display()))?;
    }
    tracing::info!(%addr, connections = connection_count, "unisync is serving");
    println!("unisync listening on http://{addr}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog =
        sd_notify::watchdog_enabled().map(|interval| tokio::spawn(keep_watchdog_fed(interval)));
    let limits = config.server.limits();
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_server(listener, state.clone(), limits, async {
        let _ = serving_stopped.await;
    }));
    let mut running = Running {
        config_path: config_path.to_path_buf(),
        retention: config.storage.retention(),
        started_with: config,
        sandboxes: plan.sandboxes,
        run_admin_token,
        token_file,
        store: store.clone(),
        state,
        dispatchers,
        pruning,
    };
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
            failure = store.failed() => {
                tracing::error!(%failure, "the store failed: stopping, to restart from what is on disk");
                break;
            }
            _ = signals.hangup.recv() => running = running.reload().await,
        }
    }
    tracing::info!("shutting down");
    let _ = stop_serving.send(());
    let _ = server.await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let Running {
        token_file,
        sandboxes,
        dispatchers,
        pruning,
        ..
    } = running;
    pruning.abort();
    dispatchers.stop().await;
    let flushed = store.flush().await;
    if let Some(addr_file) = &addr_file {
        let _ = std::fs::remove_file(addr_file);
    }
    if let Some(token_file) = &token_file {
        let _ = std::fs::remove_file(token_file);
    }
    drop(sandboxes);
    if let Some(failure) = store.failure() {
        return Err(ServeError::StoreFailed(failure));
    }
    flushed.map_err(|e| e.to_string())?;
    tracing::info!("unisync stopped");
    Ok(())
}

/// The signals the daemon acts on, listened to from start to stop.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// What a config asks the daemon to run, read and checked as at start (the same checks, in
/// the same words as `config check`), before any of it is applied: a reload applies all of
/// it or nothing.
struct Plan {
    config: Config,
    tokens: Tokens,
    /// The config names no admin token: the admin routes take the run's own.
    run_admin_token_in_use: bool,
    /// Each connection's settings; in `serve --sandbox`, pointed at its sandbox.
    settings: Vec<ConnectionSettings>,
    /// `serve --sandbox`: the fake CRMs the connections are pointed at.
    sandboxes: Option<Sandboxes>,
}

impl Plan {
    /// Reads the tokens and connections of `config`; in `serve --sandbox` (`sandboxes`: the
    /// ones running), points each connection at a sandbox.
    async fn read(
        config: Config,
        run_admin_token: &Secret,
        sandboxes: Option<&Sandboxes>,
    ) -> Result<Plan, String> {
        let api = config.api_tokens().map_err(|e| e.to_string())?;
        let mut admin = config.admin_tokens().map_err(|e| e.to_string())?;
        let run_admin_token_in_use = admin.is_empty();
        if run_admin_token_in_use {
            admin.push(run_admin_token.clone());
        }
        let mut settings = config.connections().map_err(|e| e.to_string())?;
        let sandboxes = match sandboxes {
            Some(running) => Some(running.point(&mut settings).await?),
            None => None,
        };
        Ok(Plan {
            config,
            tokens: Tokens { api, admin },
            run_admin_token_in_use,
            settings,
            sandboxes,
        })
    }
}

/// On a shared store, each connection's settle time must fit its lease (see
/// [`check_lease`]).
fn check_leases(store: &Store, connections: &Connections) -> Result<(), String> {
    let Some(lease_ms) = store.lease_ms() else {
        return Ok(());
    };
    for connection in connections.iter() {
        check_lease(
            &connection.settings,
            connection.settle_time(),
            Duration::from_millis(lease_ms),
        )?;
    }
    Ok(())
}

/// The daemon while it serves: the config in force and what runs from it.
struct Running {
    config_path: PathBuf,
    /// The config read at start: the keys only a restart applies keep their values from it.
    started_with: Config,
    /// What the store is pruned by: from the config in force.
    retention: Retention,
    sandboxes: Option<Sandboxes>,
    run_admin_token: Secret,
    /// sled: where the run's admin token is written while the admin routes take it.
    token_file: Option<PathBuf>,
    store: Store,
    state: Arc<AppState>,
    dispatchers: Dispatchers,
    pruning: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Reads the config file again and applies it; or refuses it whole, for the reason
    /// `config check` would give (logged, counted in `/metrics`, told to systemd as the
    /// service's status), and goes on with the config in force. Requests are served
    /// throughout and edits accepted; systemd hears `RELOADING=1` at the start and
    /// `READY=1` at the end.
    async fn reload(self) -> Running {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&reloading);
        tracing::info!(config = %self.config_path.display(), "reloading the config");
        let (running, outcome) = match self.check_next().await {
            Ok((plan, connections)) => self.apply(plan, connections).await,
            Err(reason) => (self, Err(reason)),
        };
        let at = rfc3339(now_ms());
        let status = match &outcome {
            Ok(()) => format!("config reloaded at {at}"),
            Err(reason) => {
                tracing::error!(
                    %reason,
                    "config reload refused: the config in force goes on, unchanged"
                );
                // The status is one line: a parse error's first names the file, line and column.
                let first_line = reason.lines().next().unwrap_or_default();
                format!("config reload refused at {at} (the config in force goes on): {first_line}")
            }
        };
        running.state.reloads.record(outcome.is_ok());
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        running
    }

    /// Reads and checks the config file as at start; builds the connections it names,
    /// taking over those that did not change. Nothing in force changes.
    async fn check_next(&self) -> Result<(Plan, Connections), String> {
        let config = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let mut plan = Plan::read(config, &self.run_admin_token, self.sandboxes.as_ref()).await?;
        let settings = std::mem::take(&mut plan.settings);
        let connections = self
            .state
            .connections
            .get()
            .rebuild(settings, &self.store)?;
        check_leases(&self.store, &connections)?;
        Ok((plan, connections))
    }

    /// Puts `plan` in force: the tokens for the next request; changed, added and removed
    /// connections once the pushes in flight are reconciled (the dispatchers stop, as at a
    /// shutdown, and start again on the new set); keys that take a restart are named.
    async fn apply(
        mut self,
        plan: Plan,
        connections: Connections,
    ) -> (Running, Result<(), String>) {
        // The one step that can fail comes first, while nothing has changed.
        if let Err(error) = publish_run_admin_token(
            self.token_file.as_deref(),
            &self.run_admin_token,
            plan.run_admin_token_in_use,
        ) {
            return (self, Err(error));
        }
        for key in restart_keys(&self.started_with, &plan.config) {
            tracing::warn!(
                key,
                "the config changes a key that only a restart applies: it keeps its value until then; the rest is applied"
            );
        }
        self.state.tokens.replace(Arc::new(plan.tokens));
        let in_force = self.state.connections.get();
        let changes = connections.changes_from(&in_force);
        if !changes.is_empty() {
            tracing::info!(
                added = ?changes.added,
                changed = ?changes.changed,
                removed = ?changes.removed,
                "connections change: their pushes in flight finish first"
            );
            warn_of_queued_edits(&self.store, &changes.removed).await;
            self.dispatchers.stop().await;
            let connections = Arc::new(connections);
            self.state.connections.replace(connections.clone());
            // A push that did not finish in time was stopped: its edits go back in the queue
            // after their grace, as at a start (sled; on PostgreSQL their leases expire).
            let grace_ms = plan.config.dispatch.recovery_grace_ms;
            if let Err(error) = recover_in_flight(&self.store, &connections, grace_ms).await {
                tracing::error!(%error, "queueing again the edits of pushes stopped by the reload failed");
            }
            if let Some(sandboxes) = &plan.sandboxes {
                for name in sandboxes.started_since(self.sandboxes.as_ref()) {
                    if let Some(connection) = connections.get(name)
                        && let Err(error) = register_demo_contacts(&self.store, connection).await
                    {
                        tracing::warn!(connection = name, %error, "registering the sandbox's demo contacts failed");
                    }
                }
            }
            self.dispatchers = Dispatchers::start(&self.store, &connections, true);
        }
        let retention = plan.config.storage.retention();
        if retention != self.retention {
            self.pruning.abort();
            self.pruning = tokio::spawn(prune_now_and_then(self.store.clone(), retention));
            self.retention = retention;
        }
        tracing::info!("config reloaded");
        self.sandboxes = plan.sandboxes;
        (self, Ok(()))
    }
}

/// Says, for each connection a reload removes, what the store still holds for it: kept, and
/// pushed once a connection of that name is configured again.
async fn warn_of_queued_edits(store: &Store, removed: &[String]) {
    if removed.is_empty() {
        return;
    }
    let counts = match store.counts(now_ms()).await {
        Ok(counts) => counts,
        Err(error) => {
            tracing::warn!(%error, "reading the queues of the removed connections failed");
            return;
        }
    };
    for name in removed {
        let held = counts.get(name).cloned().unwrap_or_default();
        tracing::warn!(
            connection = %name,
            queued = held.ready,
            retry_waiting = held.retry_waiting,
            dead_letters = held.dead_letters,
            "the config no longer has this connection: its edits are kept, and pushed once a connection of this name is configured again"
        );
    }
}

/// Writes the run's admin token beside the store (sled) while the admin routes take it, and
/// removes it once configured tokens take its place.
fn publish_run_admin_token(
    token_file: Option<&Path>,
    token: &Secret,
    in_use: bool,
) -> Result<(), String> {
    let Some(token_file) = token_file else {
        return Ok(());
    };
    if in_use {
        write_private_file(token_file, token.expose().as_bytes())
            .map_err(|e| format!("writing {}: {e}", token_file.display()))
    } else {
        match std::fs::remove_file(token_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {}: {e}", token_file.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Registers the demo contacts of the connection's sandbox.
async fn register_demo_contacts(
    store: &Store,
    connection: &crate::connections::Connection,
) -> Result<(), String> {
    let report = pull_contacts(store, connection).await?;
    tracing::info!(
        connection = connection.name(),
        registered = report.registered,
        "sandbox demo contacts registered"
    );
    Ok(())
}

/// How often a running daemon prunes by its retention settings.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Prunes the store by `retention` at start and every [`PRUNE_EVERY`] after; a failure is
/// logged and tried again next time.
async fn prune_now_and_then(store: Store, retention: Retention) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let pruned = match store.prune(&retention).await {
            Ok(pruned) => store.flush().await.map(|()| pruned),
            Err(error) => Err(error),
        };
        match pruned {
            Ok(pruned) if pruned == Pruned::default() => {}
            Ok(pruned) => tracing::info!(
                dead_letters = pruned.dead_letters,
                edit_ids = pruned.edit_ids,
                "pruned what is past its retention"
            ),
            Err(error) => tracing::warn!(%error, "pruning the store failed; trying again later"),
        }
    }
}

/// Queues again every edit the last stop left in flight, each after its connection's
/// recovery grace (`dispatch.recovery_grace_ms`, which a connection may override), so the
/// dead process's last requests settle first. An edit of a connection no longer configured
/// waits `default_grace_ms`.
pub async fn recover_in_flight(
    store: &Store,
    connections: &Connections,
    default_grace_ms: u64,
) -> Result<(), String> {
    let now = now_ms();
    // Edits a running bulk job holds stay in flight: the job answers for them.
    let held = crate::dispatcher::bulk::held_contacts(store)
        .await
        .map_err(|e| e.to_string())?;
    let recovered = store
        .recover_in_flight(
            |name| {
                now + connections
                    .get(name)
                    .map_or(default_grace_ms, |connection| {
                        connection.recovery_grace().as_millis() as u64
                    })
            },
            |contact| held.contains(contact),
        )
        .await
        .map_err(|e| e.to_string())?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "edits in flight at the last stop are queued again"
        );
    }
    Ok(())
}

/// Writes `contents` to `path` readable by the owner only, atomically: a reader (the CLI
/// looking for a running daemon) sees the old file or the whole new one, never a half.
fn write_private_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Where a running daemon writes the address it listens on, beside its store, so that CLI
/// commands find it even when `server.listen` names port 0.
pub fn daemon_addr_file(storage_path: &std::path::Path) -> std::path::PathBuf {
    storage_path.join("daemon.addr")
}

/// Where a running daemon without configured admin tokens writes the one it made for this
/// run (mode 0600), beside its store, for the CLI run by the same user.
pub fn admin_token_file(storage_path: &std::path::Path) -> std::path::PathBuf {
    storage_path.join("admin.token")
}

/// A fresh bearer token: 32 random bytes, as hex, from the thread's cryptographically secure
/// generator (seeded by the operating system).
fn generate_token() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Serves the API on `listener` within `limits` until `shutdown` completes and the requests
/// in progress are answered.
pub async fn run_server(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    http::server::serve(listener, http::router(state), limits, shutdown).await;
}

/// The built-in fake CRMs of `serve --sandbox`, by the connection each stands in for.
#[derive(Clone, Default)]
struct Sandboxes(BTreeMap<String, Arc<dyn SandboxCrm>>);

impl Sandboxes {
    /// Points each connection at a sandbox: the one it had (the same name and system), else
    /// one started for it, whose `_env`/`_file` secret keys give way to the sandbox's own
    /// credentials. Answers the sandboxes the connections use now.
    async fn point(&self, settings: &mut [ConnectionSettings]) -> Result<Sandboxes, String> {
        let mut in_use = BTreeMap::new();
        for connection in settings {
            let running = self
                .0
                .get(&connection.name)
                .filter(|sandbox| sandbox.system() == connection.system);
            let sandbox = match running {
                Some(sandbox) => sandbox.clone(),
                None => start_sandbox(connection).await?,
            };
            let provider = &mut connection.provider;
            provider
                .settings
                .retain(|key, _| !key.ends_with("_env") && !key.ends_with("_file"));
            provider.settings.extend(sandbox.connection_settings());
            *provider = std::mem::take(provider).with_inline_secrets(sandbox.connection_secrets());
            in_use.insert(connection.name.clone(), sandbox);
        }
        Ok(Sandboxes(in_use))
    }

    /// The connections whose sandbox was started since `before` (all of them at start).
    fn started_since<'a>(&'a self, before: Option<&Sandboxes>) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter_map(move |(name, sandbox)| {
            let kept = before
                .and_then(|before| before.0.get(name))
                .is_some_and(|old| Arc::ptr_eq(old, sandbox));
            (!kept).then_some(name.as_str())
        })
    }
}

/// Starts the built-in fake of the connection's CRM on a loopback port.
async fn start_sandbox(connection: &ConnectionSettings) -> Result<Arc<dyn SandboxCrm>, String> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let sandbox = providers::start_sandbox(&connection.system, loopback, SANDBOX_DEMO_RECORDS)
        .await
        .map_err(|e| format!("starting the {} sandbox: {e}", connection.system))?
        .ok_or_else(|| {
            format!(
                "connections.{}: no sandbox imitates `{}`",
                connection.name, connection.system
            )
        })?;
    tracing::info!(connection = %connection.name, addr = %sandbox.addr(), "sandbox CRM started");
    Ok(sandbox)
}

/// Tells systemd the daemon is alive at half its `WatchdogSec`, from the runtime itself, so a
/// wedged runtime stops the pings and systemd restarts the service.
async fn keep_watchdog_fed(interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        ticks.tick().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
