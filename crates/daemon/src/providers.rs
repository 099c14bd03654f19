//! The one place that names providers: each provider crate's registration, one line each.
//! Connections are built, `serve --sandbox` starts fakes, and `unisync sandbox` has its
//! `--<system>` flags from this list alone.

use std::net::SocketAddr;
use std::sync::Arc;

use unisync_core::AdapterFactory;
use unisync_kit::Provider;
use unisync_sandbox::SandboxCrm;

/// Every provider this build of unisync can push to.
pub const PROVIDERS: &[Provider] = &[
    unisync_hubspot::PROVIDER,
    unisync_salesforce::PROVIDER,
    unisync_dynamics::PROVIDER,
];

/// Every provider's adapter factory.
pub fn factories() -> Vec<&'static dyn AdapterFactory> {
    PROVIDERS.iter().map(|provider| provider.factory).collect()
}

/// The provider of connections with `system = "<system>"`.
pub fn provider(system: &str) -> Option<&'static Provider> {
    PROVIDERS
        .iter()
        .find(|provider| provider.system() == system)
}

/// Starts the fake of `system` on `listen` (port 0 for any), seeded with `demo_records`
/// contacts. `Ok(None)` when no registered provider has a fake of that system.
pub async fn start_sandbox(
    system: &str,
    listen: SocketAddr,
    demo_records: usize,
) -> std::io::Result<Option<Arc<dyn SandboxCrm>>> {
    match provider(system).and_then(|provider| provider.sandbox) {
        Some(start) => start(listen, demo_records).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use unisync_core::{ConnectionConfig, CredentialStore};

    use super::*;

    struct NoCredentials;

    impl CredentialStore for NoCredentials {
        fn load(&self, _: &str) -> Option<String> {
            None
        }
        fn save(&self, _: &str, _: &str) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn systems_are_registered_once_each() {
        let systems: BTreeSet<&str> = PROVIDERS.iter().map(Provider::system).collect();
        assert_eq!(systems.len(), PROVIDERS.len(), "{PROVIDERS:?}");
    }

    /// The registry, the sandbox and the CLI know the same providers: each registered
    /// provider has a fake of its own system, which its factory's adapter connects to, and a
    /// `unisync sandbox --<system>` flag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_provider_has_its_fake_and_its_sandbox_flag() {
        let flags = crate::cli::sandbox_flags();
        for provider in PROVIDERS {
            let system = provider.system();
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let sandbox = start_sandbox(system, loopback, 2)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{system} has no sandbox fake"));
            assert_eq!(sandbox.system(), system);
            let connection = ConnectionConfig::new(system, system, sandbox.connection_settings())
                .with_inline_secrets(sandbox.connection_secrets());
            let adapter = provider
                .factory
                .build(&connection, Arc::new(NoCredentials))
                .unwrap_or_else(|err| panic!("{system}: {err}"));
            let page = adapter
                .pull(None)
                .await
                .expect("the adapter reaches its fake");
            assert!(!page.contacts.is_empty(), "{system}: the demo contacts");
            assert!(flags.contains(&system), "{system} in {flags:?}");
        }
        assert_eq!(flags.len(), PROVIDERS.len(), "{flags:?}");
        assert!(
            start_sandbox("no-such-crm", SocketAddr::from(([127, 0, 0, 1], 0)), 0)
                .await
                .unwrap()
                .is_none()
        );
    }
}
