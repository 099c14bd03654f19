//! End-to-end tests: the real `unisync` binary over loopback against sandbox CRMs started
//! in-process, so each test can look inside the CRM and switch faults on.

/// Runs each generic scenario `async fn NAME<C: Crm>()` once per sandbox CRM on the sled
/// store, and once more per CRM on a PostgreSQL store when `UNISYNC_TEST_DATABASE_URL` is set
/// (`NAME::hubspot_on_postgres`, each in a schema of its own). The runtime is multi-threaded
/// because the sandbox runs inside the test process: a blocking call such as `Daemon::stop`
/// would otherwise stall it.
macro_rules! against_each_crm {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hubspot() {
                super::$scenario::<unisync_hubspot::sandbox::HubspotSandbox>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn salesforce() {
                super::$scenario::<unisync_salesforce::sandbox::SalesforceSandbox>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamics() {
                super::$scenario::<unisync_dynamics::sandbox::DynamicsSandbox>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hubspot_on_postgres() {
                crate::harness::on_postgres(
                    super::$scenario::<unisync_hubspot::sandbox::HubspotSandbox>(),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn salesforce_on_postgres() {
                crate::harness::on_postgres(
                    super::$scenario::<unisync_salesforce::sandbox::SalesforceSandbox>(),
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamics_on_postgres() {
                crate::harness::on_postgres(
                    super::$scenario::<unisync_dynamics::sandbox::DynamicsSandbox>(),
                )
                .await;
            }
        }
    )*};
}

mod backfill;
mod config;
mod conflicts;
mod crm;
mod faults;
mod fleet;
mod harness;
mod hubspot;
mod operator;
mod portals;
mod readme;
mod reload;
mod replay;
mod salesforce;
mod scale_out;
mod secrets;
mod service;
mod status_page;
mod store_failure;
mod world;
mod write_path;
