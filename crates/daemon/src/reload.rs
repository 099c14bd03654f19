//! What a config reload (SIGHUP, `systemctl reload`) may change while the daemon runs, and
//! what it did: the keys that take a restart, and the count of reloads for `/metrics`. The
//! reload itself is `serve`'s (see `serve::Running::reload`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::Config;

/// A key whose new value a running daemon cannot take, and whether two configs differ in it.
type RestartKey = (&'static str, fn(&Config, &Config) -> bool);

/// Every key that is read once, at start: the listening socket and the server's limits are
/// set when it binds, and the store is opened with its settings.
const RESTART_KEYS: [RestartKey; 13] = [
    ("server.listen", |a, b| a.server.listen != b.server.listen),
    ("server.max_body_bytes", |a, b| {
        a.server.max_body_bytes != b.server.max_body_bytes
    }),
    ("server.header_timeout_ms", |a, b| {
        a.server.header_timeout_ms != b.server.header_timeout_ms
    }),
    ("server.body_timeout_ms", |a, b| {
        a.server.body_timeout_ms != b.server.body_timeout_ms
    }),
    ("server.idle_timeout_ms", |a, b| {
        a.server.idle_timeout_ms != b.server.idle_timeout_ms
    }),
    ("server.max_connections", |a, b| {
        a.server.max_connections != b.server.max_connections
    }),
    ("storage.engine", |a, b| {
        a.storage.engine != b.storage.engine
    }),
    ("storage.path", |a, b| a.storage.path != b.storage.path),
    ("storage.cache_mib", |a, b| {
        a.storage.cache_mib != b.storage.cache_mib
    }),
    ("storage.url_env", |a, b| {
        a.storage.url_env != b.storage.url_env
    }),
    ("storage.url_file", |a, b| {
        a.storage.url_file != b.storage.url_file
    }),
    ("storage.pool_size", |a, b| {
        a.storage.pool_size != b.storage.pool_size
    }),
    ("storage.lease_secs", |a, b| {
        a.storage.lease_secs != b.storage.lease_secs
    }),
];

/// The keys whose value differs between the config the daemon started with and `next` but
/// that only a restart applies; a reload applies the rest and names these (each time, until
/// a restart).
pub fn restart_keys(started_with: &Config, next: &Config) -> Vec<&'static str> {
    RESTART_KEYS
        .iter()
        .filter(|(_, differs)| differs(started_with, next))
        .map(|(key, _)| *key)
        .collect()
}

/// What became of the reloads asked since the daemon started, for `/metrics`.
#[derive(Debug)]
pub struct Reloads {
    applied: AtomicU64,
    refused: AtomicU64,
    last_applied: AtomicBool,
}

impl Default for Reloads {
    /// None yet: the config read at start is in force, so the last "reload" went through.
    fn default() -> Self {
        Reloads {
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_applied: AtomicBool::new(true),
        }
    }
}

impl Reloads {
    /// Counts a reload: `applied`, or refused with the config in force kept.
    pub fn record(&self, applied: bool) {
        let counter = if applied {
            &self.applied
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_applied.store(applied, Ordering::Relaxed);
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the last reload was applied (true before any).
    pub fn last_applied(&self) -> bool {
        self.last_applied.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::ConnectionSettings;
    use crate::connections::{ConnectionChanges, Connections, Pause, PauseReason};
    use crate::store::{Store, now_ms};

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn names_each_changed_key_that_takes_a_restart_and_no_other() {
        let base = "[server]\nlisten = \"127.0.0.1:8080\"\napi_tokens_env = \"A\"\n[storage]\npath = \"data\"\n[dispatch]\nconcurrency = 4\n";
        let started_with = config(base);
        assert_eq!(
            restart_keys(&started_with, &config(base)),
            Vec::<&str>::new()
        );
        let live = base
            .replace("api_tokens_env = \"A\"", "api_tokens_file = \"tokens\"")
            .replace("concurrency = 4", "concurrency = 2");
        assert_eq!(
            restart_keys(&started_with, &config(&live)),
            Vec::<&str>::new(),
            "tokens and dispatch settings apply live"
        );
        let moved = base
            .replace("127.0.0.1:8080", "127.0.0.1:9090")
            .replace(
                "api_tokens_env = \"A\"",
                "api_tokens_env = \"A\"\nmax_connections = 10\nheader_timeout_ms = 5",
            )
            .replace("path = \"data\"", "path = \"elsewhere\"\ncache_mib = 8");
        assert_eq!(
            restart_keys(&started_with, &config(&moved)),
            [
                "server.listen",
                "server.header_timeout_ms",
                "server.max_connections",
                "storage.path",
                "storage.cache_mib",
            ]
        );
        let postgres = base.replace(
            "path = \"data\"",
            "engine = \"postgres\"\nurl_env = \"DB\"\nlease_secs = 60\npool_size = 2",
        );
        assert_eq!(
            restart_keys(&started_with, &config(&postgres)),
            [
                "storage.engine",
                "storage.url_env",
                "storage.pool_size",
                "storage.lease_secs",
            ]
        );
    }

    #[test]
    fn the_last_reload_says_whether_the_config_in_force_is_the_one_on_disk() {
        let reloads = Reloads::default();
        assert!(reloads.last_applied(), "the config read at start");
        reloads.record(false);
        assert!(!reloads.last_applied());
        reloads.record(true);
        reloads.record(true);
        assert_eq!((reloads.applied(), reloads.refused()), (2, 1));
        assert!(reloads.last_applied());
    }

    /// The connections of a config with HubSpot connections `a` and `b`, both reading their
    /// token from `token_file`, and `extra` lines in `b`'s table.
    fn settings(token_file: &std::path::Path, extra: &str) -> Vec<ConnectionSettings> {
        let config = Config::parse(&format!(
            "[connections.a]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\naccess_token_file = \"{file}\"\n\
             [connections.b]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\naccess_token_file = \"{file}\"\n{extra}",
            file = token_file.display()
        ))
        .unwrap();
        config.connections().unwrap()
    }

    #[tokio::test]
    async fn a_rebuild_keeps_unchanged_connections_and_builds_changed_ones_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "first").unwrap();
        let running = Connections::build(settings(&token, ""), &store).unwrap();
        let a = running.get("a").unwrap();
        a.metrics.pushed_ok.store(7, Ordering::Relaxed);
        running.get("b").unwrap().set_pause(Pause {
            reason: PauseReason::RateLimited,
            until_ms: now_ms() + 60_000,
            code: "429".into(),
            message: "slow down".into(),
            failed_probes: 0,
        });

        let same = running.rebuild(settings(&token, ""), &store).unwrap();
        assert_eq!(same.changes_from(&running), ConnectionChanges::default());
        assert!(Arc::ptr_eq(same.get("a").unwrap(), a));
        assert!(
            same.get("b").unwrap().pause().is_some(),
            "its pause goes on"
        );

        let concurrency = running
            .rebuild(settings(&token, "concurrency = 1\n"), &store)
            .unwrap();
        let changes = concurrency.changes_from(&running);
        assert_eq!(changes.changed, ["b"]);
        assert!(changes.added.is_empty() && changes.removed.is_empty());
        let b = concurrency.get("b").unwrap();
        assert_eq!(b.settings.dispatch.concurrency, 1);
        assert!(b.pause().is_none(), "built afresh, as at a start");

        std::fs::write(&token, "rotated").unwrap();
        let rotated = running.rebuild(settings(&token, ""), &store).unwrap();
        assert_eq!(rotated.changes_from(&running).changed, ["a", "b"]);
        assert_eq!(
            rotated
                .get("a")
                .unwrap()
                .metrics
                .pushed_ok
                .load(Ordering::Relaxed),
            7,
            "a connection built afresh keeps its figures"
        );

        let config = Config::parse(&format!(
            "[connections.c]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\naccess_token_file = \"{}\"\n",
            token.display()
        ))
        .unwrap();
        let replaced = running
            .rebuild(config.connections().unwrap(), &store)
            .unwrap();
        let changes = replaced.changes_from(&running);
        assert_eq!(
            (changes.added, changes.removed),
            (
                vec!["c".to_string()],
                vec!["a".to_string(), "b".to_string()]
            )
        );

        std::fs::remove_file(&token).unwrap();
        let error = running
            .rebuild(settings(&token, ""), &store)
            .err()
            .expect("an unreadable token is refused");
        assert!(error.contains("connections.a.access_token_file"), "{error}");
        assert_eq!(
            running.iter().count(),
            2,
            "nothing of the running ones changes"
        );
    }
}
