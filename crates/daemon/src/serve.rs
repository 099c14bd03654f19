//! `unisync serve`: the HTTP API and one dispatcher per connection, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConnectionSettings, StorageEngine};
use crate::connections::Connections;
use crate::dispatcher::Dispatchers;
use crate::http::server::ServerLimits;
use crate::http::{self, auth::Tokens, state::AppState};
use crate::providers;
use crate::pull::pull_contacts;
use crate::store::{Pruned, Retention, Store, StoreError, now_ms};
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

/// Runs the daemon until SIGTERM or SIGINT, or until its store fails.
pub async fn serve(config: Config, sandbox: bool) -> Result<(), ServeError> {
    let api_tokens = config.api_tokens().map_err(|e| e.to_string())?;
    let mut admin_tokens = config.admin_tokens().map_err(|e| e.to_string())?;
    // Without admin tokens in the config, the admin routes take one made for this run, which
    // only the daemon's user can read (beside `daemon.addr`, for the local CLI).
    let run_admin_token = admin_tokens.is_empty().then(generate_token);
    admin_tokens.extend(run_admin_token.clone());
    let mut settings = config.connections().map_err(|e| e.to_string())?;
    let mut sandboxes = Vec::new();
    if sandbox {
        for connection in &mut settings {
            sandboxes.push(point_at_sandbox(connection).await?);
        }
    }
    let store = Store::open_configured(&config.storage)
        .await
        .map_err(|error| match error {
            StoreError::Misconfigured(message) => ServeError::Start(message),
            other => ServeError::Unavailable(other.to_string()),
        })?;
    let connections = Arc::new(Connections::build(settings, &store)?);
    if let Some(lease_ms) = store.lease_ms() {
        for connection in connections.iter() {
            crate::connections::check_lease(
                &connection.settings,
                connection.settle_time(),
                std::time::Duration::from_millis(lease_ms),
            )?;
        }
    }
    recover_in_flight(&store, &connections, config.dispatch.recovery_grace_ms).await?;
    if sandbox {
        for connection in connections.iter() {
            let report = pull_contacts(&store, connection).await?;
            tracing::info!(
                connection = connection.name(),
                registered = report.registered,
                "sandbox demo contacts registered"
            );
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
    let state = Arc::new(AppState {
        store: store.clone(),
        connections: connections.clone(),
        tokens: Arc::new(Tokens {
            api: api_tokens,
            admin: admin_tokens,
        }),
        max_body_bytes: config.server.max_body_bytes,
    });
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Only a daemon holding a sled store answers for it; on PostgreSQL the CLI opens the
    // database itself.
    let addr_file = (config.storage.engine == StorageEngine::Sled)
        .then(|| daemon_addr_file(&config.storage.path));
    let token_file = addr_file
        .as_ref()
        .and(run_admin_token.as_ref())
        .map(|token| (admin_token_file(&config.storage.path), token));
    if let Some((token_file, token)) = &token_file {
        write_private_file(token_file, token.expose().as_bytes())
            .map_err(|e| format!("writing {}: {e}", token_file.display()))?;
    }
    if let Some(addr_file) = &addr_file {
        write_private_file(addr_file, addr.to_string().as_bytes())
            .map_err(|e| format!("writing {}: {e}", addr_file.display()))?;
    }
    tracing::info!(%addr, connections = connections.iter().count(), "unisync is serving");
    println!("unisync listening on http://{addr}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog =
        sd_notify::watchdog_enabled().map(|interval| tokio::spawn(keep_watchdog_fed(interval)));
    let failing_store = store.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            failure = failing_store.failed() => {
                tracing::error!(%failure, "the store failed: stopping, to restart from what is on disk");
            }
        }
    };
    run_server(listener, state, config.server.limits(), shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    pruning.abort();
    dispatchers.stop().await;
    let flushed = store.flush().await;
    if let Some(addr_file) = &addr_file {
        let _ = std::fs::remove_file(addr_file);
    }
    if let Some((token_file, _)) = &token_file {
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

/// Starts the built-in fake of the connection's CRM and points the connection at it: its
/// `_env`/`_file` secret keys give way to the sandbox's own credentials.
async fn point_at_sandbox(
    connection: &mut ConnectionSettings,
) -> Result<Arc<dyn unisync_sandbox::SandboxCrm>, String> {
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
    let provider = &mut connection.provider;
    provider
        .settings
        .retain(|key, _| !key.ends_with("_env") && !key.ends_with("_file"));
    provider.settings.extend(sandbox.connection_settings());
    *provider = std::mem::take(provider).with_inline_secrets(sandbox.connection_secrets());
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

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}
