//! The daemon's configuration: one typed struct, read from TOML and checked at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::conflict::OnConflict;
use serde::Deserialize;
use unisync_core::{ConnectionConfig, Secret};

/// Where the config file is looked for when neither `--config` nor `$UNISYNC_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/unisync.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub dispatch: DispatchConfig,
    #[serde(default)]
    pub connections: BTreeMap<String, toml::Table>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// An environment variable holding comma-separated bearer tokens.
    pub api_tokens_env: Option<String>,
    /// A file holding one bearer token per line.
    pub api_tokens_file: Option<PathBuf>,
    /// An environment variable holding comma-separated bearer tokens for the admin routes
    /// (`/api/v1/admin/...`), which API tokens cannot reach.
    pub admin_tokens_env: Option<String>,
    /// A file holding one admin bearer token per line.
    pub admin_tokens_file: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a request's head may take to arrive, from its first byte, in milliseconds.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// How long a request's body may take to arrive, all waits for its bytes together, in
    /// milliseconds.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long a connection may stay open without a request in progress, in milliseconds.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Connections open at once; more wait until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl ServerConfig {
    /// The HTTP server's limits.
    pub fn limits(&self) -> crate::http::server::ServerLimits {
        crate::http::server::ServerLimits {
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            body_timeout: std::time::Duration::from_millis(self.body_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
        }
    }

    fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
        ] {
            if value == 0 {
                return Err(format!("server.{key}: must be at least 1"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sled` (embedded, one process: the default) or `postgres` (several daemons on one
    /// database).
    #[serde(default)]
    pub engine: StorageEngine,
    /// sled: the store's directory.
    #[serde(default = "default_storage_path")]
    pub path: PathBuf,
    /// sled's page cache, in MiB (its default of 1 GiB is far more than a queue needs).
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
    /// postgres: an environment variable holding the connection URL
    /// (`postgres://user:password@host:5432/db`, or a libpq key=value string).
    pub url_env: Option<String>,
    /// postgres: a file holding the connection URL (its first line).
    pub url_file: Option<PathBuf>,
    /// postgres: connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// postgres: how long a claimed edit stays this node's, in seconds. After that any node
    /// may push it again, so it must be longer than a push can take (its request timeouts
    /// and rate-limit waits included).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// sled: dead letters older than this many days are dropped (as `dead-letters drop`
    /// does); 0 keeps them until an operator settles them.
    #[serde(default = "default_retention_days")]
    pub dead_letter_retention_days: u64,
    /// sled: how long a backfill's `edit_id` is remembered (a re-run within it skips the
    /// edit), in days; 0 remembers every id for good.
    #[serde(default = "default_retention_days")]
    pub edit_id_retention_days: u64,
}

impl StorageConfig {
    /// postgres: how long a claim holds, in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        self.lease_secs * 1_000
    }

    /// What the store prunes, from the retention settings. Days beyond what milliseconds can
    /// count (more than 500 million years) keep everything, as they say.
    pub fn retention(&self) -> crate::store::Retention {
        let days = |days: u64| (days > 0).then(|| days.saturating_mul(24 * 60 * 60 * 1000));
        crate::store::Retention {
            dead_letters_ms: days(self.dead_letter_retention_days),
            edit_ids_ms: days(self.edit_id_retention_days),
        }
    }
}

/// Which engine holds the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    #[default]
    Sled,
    Postgres,
}

/// Defaults for every connection's dispatcher; a connection table may override each key.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Attempts per edit before a retryable failure becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Pushes of one connection that may be in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The first retry delay, in milliseconds; later ones double, with jitter.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// The longest retry delay, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// How long edits that were in flight when the process died wait at the next start, so
    /// that the dead process's last requests are answered before the same contacts are
    /// pushed again (a late old write must not land after a newer one).
    #[serde(default = "default_recovery_grace_ms")]
    pub recovery_grace_ms: u64,
    /// How long after a request whose outcome is unknown (timed out, connection lost after
    /// sending) the contact waits before its next push, so that the old request, which the
    /// CRM may still apply, cannot land after a newer one. Unset: twice the connection's
    /// request timeout. Never less than the request timeout.
    #[serde(default)]
    pub settle_ms: Option<u64>,
    /// The longest a ready edit waits for its batch to fill (Kafka's linger.ms), stretched
    /// as the CRM's daily budget runs low. Unset: the adapter's default (Salesforce 1 s,
    /// HubSpot none: it batches while its rate limit binds).
    #[serde(default)]
    pub max_linger_ms: Option<u64>,
    /// The share of the CRM's daily API budget left to the account's other integrations and
    /// users: pushing pauses once the rest is used, until the budget resets.
    #[serde(default = "default_reserve_share")]
    pub reserve_share: f64,
    /// Ready edits of one connection above which they go as a bulk job (Salesforce Bulk API
    /// 2.0), for adapters that run bulk jobs.
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_storage_path() -> PathBuf {
    PathBuf::from("data")
}
fn default_cache_mib() -> u64 {
    64
}
fn default_retention_days() -> u64 {
    30
}

fn default_pool_size() -> usize {
    8
}
fn default_lease_secs() -> u64 {
    300
}
fn default_max_attempts() -> u32 {
    10
}
fn default_concurrency() -> usize {
    4
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_bulk_threshold() -> u64 {
    2_000
}
fn default_reserve_share() -> f64 {
    0.1
}
fn default_recovery_grace_ms() -> u64 {
    3_000
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            api_tokens_env: None,
            api_tokens_file: None,
            admin_tokens_env: None,
            admin_tokens_file: None,
            max_body_bytes: default_max_body_bytes(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            engine: StorageEngine::default(),
            path: default_storage_path(),
            cache_mib: default_cache_mib(),
            url_env: None,
            url_file: None,
            pool_size: default_pool_size(),
            lease_secs: default_lease_secs(),
            dead_letter_retention_days: default_retention_days(),
            edit_id_retention_days: default_retention_days(),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            max_attempts: default_max_attempts(),
            concurrency: default_concurrency(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            recovery_grace_ms: default_recovery_grace_ms(),
            settle_ms: None,
            max_linger_ms: None,
            reserve_share: default_reserve_share(),
            bulk_threshold: default_bulk_threshold(),
        }
    }
}

/// One connection as the daemon sees it: its dispatch settings and the provider's own table.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionSettings {
    pub name: String,
    pub system: String,
    /// The `external_system_provider_id` shown on the connection's contacts.
    pub provider_id: Option<String>,
    /// The logo shown as `source_system_img_url` on the connection's contacts.
    pub img_url: Option<String>,
    pub dispatch: DispatchConfig,
    /// What to do with a field a person changed in the CRM since unisync last confirmed it.
    pub on_conflict: OnConflict,
    /// `enabled = false`: the connection's edits are accepted and kept, and nothing is
    /// pushed until it is enabled again.
    pub enabled: bool,
    pub provider: ConnectionConfig,
}

/// The longest lease: the edits of a daemon that died wait this long before another pushes
/// them, and the store adds it to the clock (a lease of any `u64` would overflow that).
const MAX_LEASE_SECS: u64 = 7 * 24 * 60 * 60;

impl StorageConfig {
    /// The keys of one engine are refused with the other's, so that a half-switched config
    /// is not silently read as the engine it names.
    fn check(&self) -> Result<(), String> {
        let url_sources = [self.url_env.is_some(), self.url_file.is_some()];
        match self.engine {
            StorageEngine::Sled if url_sources.contains(&true) => Err(
                "storage.url_env / storage.url_file: set only with engine = \"postgres\"".into(),
            ),
            StorageEngine::Postgres if url_sources == [false, false] => {
                Err("storage.url_env: engine = \"postgres\" needs url_env or url_file".into())
            }
            StorageEngine::Postgres if url_sources == [true, true] => {
                Err("storage.url_env / storage.url_file: set one of them, not both".into())
            }
            StorageEngine::Postgres if self.lease_secs == 0 => {
                Err("storage.lease_secs: must be at least 1".into())
            }
            StorageEngine::Postgres if self.lease_secs > MAX_LEASE_SECS => Err(format!(
                "storage.lease_secs: at most {MAX_LEASE_SECS} (a week): the edits of a daemon that died wait that long for another"
            )),
            _ => Ok(()),
        }
    }

    /// The PostgreSQL connection URL, from `url_env` or `url_file`; `None` for sled. Checked
    /// to parse; the error never shows the URL (it holds the password).
    pub fn postgres_url(&self) -> Result<Option<Secret>, ConfigLoadError> {
        let invalid = |key: &str, problem: String| {
            ConfigLoadError::Invalid(format!("storage.{key}: {problem}"))
        };
        let (key, url) = match (&self.url_env, &self.url_file) {
            (Some(variable), _) => (
                "url_env",
                std::env::var(variable).map_err(|_| {
                    invalid(
                        "url_env",
                        format!("environment variable {variable} is not set"),
                    )
                })?,
            ),
            (None, Some(path)) => (
                "url_file",
                std::fs::read_to_string(path)
                    .map_err(|err| {
                        invalid("url_file", format!("cannot read {}: {err}", path.display()))
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            (None, None) => return Ok(None),
        };
        let url = url.trim();
        url.parse::<tokio_postgres::Config>().map_err(|_| {
            invalid(
                key,
                "not a PostgreSQL connection URL (postgres://user:password@host:port/database)"
                    .into(),
            )
        })?;
        Ok(Some(Secret::new(url)))
    }
}

/// Where a PostgreSQL URL points, without its password: for `config check` and logs.
pub fn redacted_url(url: &Secret) -> String {
    let Ok(config) = url.expose().parse::<tokio_postgres::Config>() else {
        return "(unreadable)".into();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    let password = if config.get_password().is_some() {
        ":[redacted]"
    } else {
        ""
    };
    format!(
        "postgres://{}{password}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// Keys of a connection table that the daemon reads itself; the rest go to the provider.
const DAEMON_CONNECTION_KEYS: [&str; 13] = [
    "system",
    "on_conflict",
    "provider_id",
    "img_url",
    "max_attempts",
    "concurrency",
    "retry_initial_ms",
    "retry_max_ms",
    "settle_ms",
    "max_linger_ms",
    "reserve_share",
    "bulk_threshold",
    "enabled",
];

impl Config {
    /// Reads and parses `path`. Does not resolve secrets: see [`Config::api_tokens`] and the
    /// provider factories.
    pub fn load(path: &Path) -> Result<Config, ConfigLoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigLoadError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|err| err.to_string())?;
        config.connections().map_err(|err| err.to_string())?;
        // The same rule as for each connection's own keys: no pushes at a time, or no
        // attempt at all, would keep every edit queued forever.
        for (key, value) in [
            ("concurrency", config.dispatch.concurrency as u64),
            ("max_attempts", config.dispatch.max_attempts.into()),
        ] {
            if value == 0 {
                return Err(format!("dispatch.{key}: must be at least 1"));
            }
        }
        if !(0.0..1.0).contains(&config.dispatch.reserve_share) {
            return Err(
                "dispatch.reserve_share: must be a number from 0.0 up to (not including) 1.0"
                    .into(),
            );
        }
        config.storage.check()?;
        config.server.check()?;
        Ok(config)
    }

    /// Where the config file is: `--config`, else `$UNISYNC_CONFIG`, else the default.
    pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os("UNISYNC_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// The connections, each split into the daemon's settings and the provider's table.
    pub fn connections(&self) -> Result<Vec<ConnectionSettings>, ConfigLoadError> {
        self.connections
            .iter()
            .map(|(name, table)| self.connection(name, table))
            .collect()
    }

    fn connection(
        &self,
        name: &str,
        table: &toml::Table,
    ) -> Result<ConnectionSettings, ConfigLoadError> {
        let invalid = |key: &str, problem: &str| {
            ConfigLoadError::Invalid(format!("connections.{name}.{key}: {problem}"))
        };
        let string = |key: &str| -> Result<Option<String>, ConfigLoadError> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(invalid(key, "must be a string")),
            }
        };
        let number = |key: &str, default: u64| -> Result<u64, ConfigLoadError> {
            match table.get(key) {
                None => Ok(default),
                Some(toml::Value::Integer(n)) if *n >= 0 => Ok(*n as u64),
                Some(_) => Err(invalid(key, "must be a non-negative whole number")),
            }
        };
        let at_least_one = |key: &str, default: u64| match number(key, default)? {
            0 => Err(invalid(key, "must be at least 1")),
            n => Ok(n),
        };
        let optional_number = |key: &str, default: Option<u64>| match table.get(key) {
            None => Ok(default),
            Some(_) => number(key, 0).map(Some),
        };
        let system = string("system")?.ok_or_else(|| invalid("system", "missing"))?;
        let dispatch = DispatchConfig {
            max_attempts: u32::try_from(at_least_one(
                "max_attempts",
                self.dispatch.max_attempts.into(),
            )?)
            .map_err(|_| invalid("max_attempts", "too large"))?,
            concurrency: at_least_one("concurrency", self.dispatch.concurrency as u64)? as usize,
            retry_initial_ms: number("retry_initial_ms", self.dispatch.retry_initial_ms)?,
            retry_max_ms: number("retry_max_ms", self.dispatch.retry_max_ms)?,
            recovery_grace_ms: self.dispatch.recovery_grace_ms,
            settle_ms: optional_number("settle_ms", self.dispatch.settle_ms)?,
            max_linger_ms: optional_number("max_linger_ms", self.dispatch.max_linger_ms)?,
            bulk_threshold: number("bulk_threshold", self.dispatch.bulk_threshold)?,
            reserve_share: match table.get("reserve_share") {
                None => self.dispatch.reserve_share,
                Some(toml::Value::Float(share)) if (0.0..1.0).contains(share) => *share,
                Some(_) => {
                    return Err(invalid(
                        "reserve_share",
                        "must be a number from 0.0 up to (not including) 1.0",
                    ));
                }
            },
        };
        let mut settings = serde_json::Map::new();
        for (key, value) in table {
            if !DAEMON_CONNECTION_KEYS.contains(&key.as_str()) {
                let json =
                    serde_json::to_value(value).map_err(|err| invalid(key, &err.to_string()))?;
                settings.insert(key.clone(), json);
            }
        }
        Ok(ConnectionSettings {
            name: name.to_string(),
            system: system.clone(),
            provider_id: string("provider_id")?,
            img_url: string("img_url")?,
            dispatch,
            enabled: match table.get("enabled") {
                None => true,
                Some(toml::Value::Boolean(enabled)) => *enabled,
                Some(_) => return Err(invalid("enabled", "must be true or false")),
            },
            on_conflict: match string("on_conflict")? {
                None => OnConflict::default(),
                Some(name) => name
                    .parse()
                    .map_err(|problem: String| invalid("on_conflict", &problem))?,
            },
            provider: ConnectionConfig::new(name, system, settings),
        })
    }

    /// The bearer tokens the API accepts, from `api_tokens_env` and `api_tokens_file`.
    pub fn api_tokens(&self) -> Result<Vec<Secret>, ConfigLoadError> {
        let server = &self.server;
        let tokens = read_tokens(
            "api_tokens",
            server.api_tokens_env.as_deref(),
            server.api_tokens_file.as_deref(),
        )?;
        if tokens.is_empty() {
            return Err(ConfigLoadError::Invalid(
                "server: no API tokens (set api_tokens_env or api_tokens_file to a non-empty source)"
                    .into(),
            ));
        }
        Ok(tokens)
    }

    /// The bearer tokens the admin routes accept, from `admin_tokens_env` and
    /// `admin_tokens_file`; empty when neither is set (the daemon then makes one per run for
    /// the local CLI).
    pub fn admin_tokens(&self) -> Result<Vec<Secret>, ConfigLoadError> {
        let server = &self.server;
        let configured = server.admin_tokens_env.is_some() || server.admin_tokens_file.is_some();
        let tokens = read_tokens(
            "admin_tokens",
            server.admin_tokens_env.as_deref(),
            server.admin_tokens_file.as_deref(),
        )?;
        if configured && tokens.is_empty() {
            return Err(ConfigLoadError::Invalid(
                "server: admin_tokens_env / admin_tokens_file name an empty source".into(),
            ));
        }
        Ok(tokens)
    }
}

/// Bearer tokens from `server.KEY_env` (comma-separated) and `server.KEY_file` (one a line).
fn read_tokens(
    key: &str,
    variable: Option<&str>,
    path: Option<&Path>,
) -> Result<Vec<Secret>, ConfigLoadError> {
    let mut tokens = Vec::new();
    if let Some(variable) = variable {
        let value = std::env::var(variable).map_err(|_| {
            ConfigLoadError::Invalid(format!(
                "server.{key}_env: environment variable {variable} is not set"
            ))
        })?;
        tokens.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        );
    }
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigLoadError::Invalid(format!(
                "server.{key}_file: cannot read {}: {err}",
                path.display()
            ))
        })?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        );
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_daemon_and_provider_keys() {
        let config = Config::parse(
            r#"
            [dispatch]
            max_attempts = 3
            [connections.crm]
            system = "hubspot"
            concurrency = 2
            base_url = "http://127.0.0.1:1"
            access_token_env = "T"
            "#,
        )
        .unwrap();
        let connections = config.connections().unwrap();
        let crm = &connections[0];
        assert_eq!(crm.dispatch.max_attempts, 3);
        assert_eq!(crm.dispatch.concurrency, 2);
        assert_eq!(crm.provider.settings.len(), 2);
        assert!(crm.provider.settings.contains_key("base_url"));
    }

    #[test]
    fn api_tokens_come_from_the_variable_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "from-file-1\n\n  from-file-2  \n").unwrap();
        // A variable name only this test uses, so parallel tests do not race on it.
        unsafe { std::env::set_var("UNISYNC_TEST_API_TOKENS_A", " a1 , a2,") };
        let config = Config::parse(&format!(
            "[server]\napi_tokens_env = \"UNISYNC_TEST_API_TOKENS_A\"\napi_tokens_file = \"{}\"\n",
            file.display()
        ))
        .unwrap();
        let tokens: Vec<String> = config
            .api_tokens()
            .unwrap()
            .iter()
            .map(|t| t.expose().to_string())
            .collect();
        assert_eq!(tokens, ["a1", "a2", "from-file-1", "from-file-2"]);
        let unset =
            Config::parse("[server]\napi_tokens_env = \"UNISYNC_TEST_SURELY_UNSET\"\n").unwrap();
        assert!(
            unset
                .api_tokens()
                .unwrap_err()
                .to_string()
                .contains("UNISYNC_TEST_SURELY_UNSET")
        );
        let none = Config::parse("").unwrap();
        assert!(
            none.api_tokens().is_err(),
            "a daemon without tokens would accept nobody"
        );
    }

    #[test]
    fn postgres_settings_are_checked_and_the_password_never_shown() {
        // Variable names only this test uses, so parallel tests do not race on them.
        unsafe {
            std::env::set_var(
                "UNISYNC_TEST_PG_URL_A",
                "postgres://unisync:s3cret-pw@db.internal:6432/queue",
            );
            std::env::set_var("UNISYNC_TEST_PG_URL_BAD", "mysql://s3cret-pw@x");
        }
        let config = Config::parse(
            "[storage]\nengine = \"postgres\"\nurl_env = \"UNISYNC_TEST_PG_URL_A\"\n",
        )
        .unwrap();
        let url = config.storage.postgres_url().unwrap().expect("a URL");
        let shown = redacted_url(&url);
        assert_eq!(
            shown,
            "postgres://unisync:[redacted]@db.internal:6432/queue"
        );
        assert!(!format!("{url:?}").contains("s3cret"));

        let bad = Config::parse(
            "[storage]\nengine = \"postgres\"\nurl_env = \"UNISYNC_TEST_PG_URL_BAD\"\n",
        )
        .unwrap();
        let error = bad.storage.postgres_url().unwrap_err().to_string();
        assert!(error.contains("storage.url_env"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");

        for (text, key) in [
            ("engine = \"postgres\"\n", "storage.url_env"),
            ("url_env = \"X\"\n", "only with engine"),
            (
                "engine = \"postgres\"\nurl_env = \"X\"\nurl_file = \"f\"\n",
                "not both",
            ),
            ("engine = \"mysql\"\n", "engine"),
        ] {
            let error = Config::parse(&format!("[storage]\n{text}")).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
        assert_eq!(
            Config::parse("").unwrap().storage.engine,
            StorageEngine::Sled
        );
    }

    #[test]
    fn concurrency_and_attempts_must_be_at_least_one_everywhere() {
        for key in ["concurrency", "max_attempts"] {
            let global = Config::parse(&format!("[dispatch]\n{key} = 0\n")).unwrap_err();
            assert!(
                global.contains(&format!("dispatch.{key}: must be at least 1")),
                "{global}"
            );
            let connection = Config::parse(&format!(
                "[connections.crm]\nsystem = \"hubspot\"\n{key} = 0\n"
            ))
            .unwrap_err();
            assert!(
                connection.contains(&format!("connections.crm.{key}: must be at least 1")),
                "{connection}"
            );
        }
    }

    #[test]
    fn retention_beyond_what_milliseconds_count_keeps_everything() {
        // Found by `config::properties`: 213503982335 days overflowed the milliseconds.
        let config = Config::parse(
            "[storage]\ndead_letter_retention_days = 213503982335\nedit_id_retention_days = 1\n",
        )
        .unwrap();
        let retention = config.storage.retention();
        assert_eq!(retention.dead_letters_ms, Some(u64::MAX));
        assert_eq!(retention.edit_ids_ms, Some(24 * 60 * 60 * 1000));
    }

    #[test]
    fn a_lease_longer_than_a_week_is_refused() {
        let postgres = "[storage]\nengine = \"postgres\"\nurl_env = \"X\"\n";
        // Its milliseconds would overflow, as would the clock plus the lease in the store.
        let error =
            Config::parse(&format!("{postgres}lease_secs = 18446744073709552\n")).unwrap_err();
        assert!(error.contains("storage.lease_secs: at most"), "{error}");
        let week = Config::parse(&format!("{postgres}lease_secs = 604800\n")).unwrap();
        assert_eq!(week.storage.lease_ms(), 604_800_000);
        assert!(Config::parse(&format!("{postgres}lease_secs = 604801\n")).is_err());
    }

    #[test]
    fn names_unknown_and_missing_keys() {
        let unknown = Config::parse("[storage]\npath = 'x'\ncache = 3\n").unwrap_err();
        assert!(unknown.contains("cache"), "{unknown}");
        let missing = Config::parse("[connections.crm]\nbase_url = 'x'\n").unwrap_err();
        assert!(missing.contains("connections.crm.system"), "{missing}");
    }
}

/// The config loader's property, one check shared by the proptests below and the `config` fuzz
/// target (the repository's `fuzz/` folder): any text is read without panicking into a config
/// that keeps every rule the loader states, and from which the daemon derives its start-up
/// values (connections, server limits, retention, lease) without overflow; or it is refused
/// with a reason (`serve` and `config check` then exit 2, as for bad usage).
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties {
    use super::*;

    /// Runs [`Config::parse`] on `text`; panics if the property does not hold.
    pub fn check_config_text(text: &str) {
        match Config::parse(text) {
            Ok(config) => check_accepted(&config),
            Err(reason) => assert!(!reason.is_empty(), "refused without a reason: {text}"),
        }
    }

    fn check_accepted(config: &Config) {
        let connections = config
            .connections()
            .expect("an accepted config's connections are read");
        let dispatches = std::iter::once(&config.dispatch)
            .chain(connections.iter().map(|connection| &connection.dispatch));
        for dispatch in dispatches {
            assert!(dispatch.concurrency >= 1, "{dispatch:?}");
            assert!(dispatch.max_attempts >= 1, "{dispatch:?}");
            assert!((0.0..1.0).contains(&dispatch.reserve_share), "{dispatch:?}");
        }
        let limits = config.server.limits();
        assert!(!limits.header_timeout.is_zero() && !limits.body_timeout.is_zero());
        assert!(!limits.idle_timeout.is_zero() && limits.max_connections >= 1);
        assert!(config.server.max_body_bytes >= 1);
        let storage = &config.storage;
        let url_sources =
            usize::from(storage.url_env.is_some()) + usize::from(storage.url_file.is_some());
        match storage.engine {
            StorageEngine::Sled => assert_eq!(url_sources, 0, "{storage:?}"),
            StorageEngine::Postgres => {
                assert_eq!(url_sources, 1, "{storage:?}");
                assert!(storage.lease_ms() >= 1_000, "{storage:?}");
            }
        }
        // Computed in full, as the store does at start: an overflow here panics in tests and
        // in the fuzz build (`cargo fuzz run -a`: overflow checks on).
        let retention = storage.retention();
        for (days, ms) in [
            (
                storage.dead_letter_retention_days,
                retention.dead_letters_ms,
            ),
            (storage.edit_id_retention_days, retention.edit_ids_ms),
        ] {
            assert_eq!(ms.is_some(), days > 0, "{storage:?}");
            assert!(ms.is_none_or(|ms| ms >= days), "{storage:?}");
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;

        /// What a key holds, so that most generated values are of the right kind.
        #[derive(Clone, Copy, Debug)]
        enum Kind {
            Number,
            Share,
            Text,
            Flag,
        }

        /// Each table's keys (`unknown_key` belongs nowhere).
        const TABLES: [(&str, &[(&str, Kind)]); 4] = [
            (
                "server",
                &[
                    ("listen", Kind::Text),
                    ("api_tokens_env", Kind::Text),
                    ("max_body_bytes", Kind::Number),
                    ("header_timeout_ms", Kind::Number),
                    ("max_connections", Kind::Number),
                    ("unknown_key", Kind::Number),
                ],
            ),
            (
                "storage",
                &[
                    ("engine", Kind::Text),
                    ("path", Kind::Text),
                    ("url_env", Kind::Text),
                    ("url_file", Kind::Text),
                    ("lease_secs", Kind::Number),
                    ("cache_mib", Kind::Number),
                    ("dead_letter_retention_days", Kind::Number),
                    ("edit_id_retention_days", Kind::Number),
                ],
            ),
            (
                "dispatch",
                &[
                    ("concurrency", Kind::Number),
                    ("max_attempts", Kind::Number),
                    ("reserve_share", Kind::Share),
                    ("retry_initial_ms", Kind::Number),
                    ("settle_ms", Kind::Number),
                    ("bulk_threshold", Kind::Number),
                ],
            ),
            (
                "connections.crm",
                &[
                    ("system", Kind::Text),
                    ("enabled", Kind::Flag),
                    ("concurrency", Kind::Number),
                    ("max_attempts", Kind::Number),
                    ("settle_ms", Kind::Number),
                    ("on_conflict", Kind::Text),
                    ("reserve_share", Kind::Share),
                    ("base_url", Kind::Text),
                ],
            ),
        ];

        /// A TOML value, mostly of `kind`, now and then of any other.
        fn value(kind: Kind) -> BoxedStrategy<String> {
            let of_kind = match kind {
                Kind::Number => prop_oneof![
                    (0i64..1_000).prop_map(|n| n.to_string()),
                    (0..=i64::MAX).prop_map(|n| n.to_string()),
                    any::<i64>().prop_map(|n| n.to_string()),
                ]
                .boxed(),
                Kind::Share => prop_oneof![
                    (0.0..1.0f64).prop_map(|x| format!("{x:?}")),
                    any::<f64>().prop_map(|x| format!("{x:?}")),
                ]
                .boxed(),
                Kind::Text => prop_oneof![
                    proptest::sample::select(vec![
                        "postgres",
                        "sled",
                        "hubspot",
                        "theirs",
                        "127.0.0.1:8080",
                        "UNISYNC_DATABASE_URL",
                    ])
                    .prop_map(|text| format!("{text:?}")),
                    "[a-z0-9:./]{0,12}".prop_map(|text| format!("{text:?}")),
                ]
                .boxed(),
                Kind::Flag => any::<bool>().prop_map(|flag| flag.to_string()).boxed(),
            };
            let other = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|x| format!("{x:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                Just("[1, 2]".to_string()),
                Just("{ a = 1 }".to_string()),
            ];
            prop_oneof![6 => of_kind, 1 => other].boxed()
        }

        /// Config-shaped text: tables, each once, with their own keys, each once; now and
        /// then a line of anything.
        fn config_text() -> impl Strategy<Value = String> {
            let table = |(name, keys): (&'static str, &'static [(&'static str, Kind)])| {
                proptest::sample::subsequence(keys.to_vec(), 0..=4)
                    .prop_flat_map(|keys| {
                        keys.into_iter()
                            .map(|(key, kind)| {
                                value(kind).prop_map(move |v| format!("{key} = {v}"))
                            })
                            .collect::<Vec<_>>()
                    })
                    .prop_map(move |lines| format!("[{name}]\n{}", lines.join("\n")))
            };
            let tables: Vec<_> = TABLES.into_iter().map(table).collect();
            (
                tables,
                prop::collection::vec(any::<bool>(), TABLES.len()),
                prop::option::weighted(0.1, "\\PC{0,20}"),
            )
                .prop_map(|(tables, present, junk)| {
                    let mut text: Vec<String> = tables
                        .into_iter()
                        .zip(present)
                        .filter_map(|(table, present)| present.then_some(table))
                        .collect();
                    text.extend(junk);
                    text.join("\n")
                })
        }

        proptest! {
            #[test]
            fn any_text_is_a_config_that_keeps_the_rules_or_an_error_that_says_why(
                text in config_text()
            ) {
                check_config_text(&text);
            }
        }
    }
}
