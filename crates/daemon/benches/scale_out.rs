//! Several daemons on one PostgreSQL store: PUTs accepted per second across 1, 2 and 3
//! nodes (clients spread over the nodes), and how long until every edit is in the CRM (one
//! node, the connection's leader, pushes).
//!
//! `UNISYNC_TEST_DATABASE_URL=postgres://... cargo bench -p unisync --bench scale_out`. Size:
//! `UNISYNC_BENCH_SCALE_OUT_EDITS` (default 4000), sent by 32 concurrent clients. Every node,
//! the database, the sandbox CRM and the clients share the machine: on 2 cores, more nodes
//! add processes, not cores.

// The end-to-end tests' helpers; the benchmark uses a part of them.
#[allow(dead_code)]
#[path = "../../../tests/e2e/crm.rs"]
mod crm;
#[allow(dead_code)]
#[path = "../../../tests/e2e/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "../../../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "support/measure.rs"]
mod measure;

use std::sync::Arc;
use std::time::{Duration, Instant};

use unisync_salesforce::sandbox::SalesforceSandbox;

use crm::Crm;
use fleet::registered_records;

const CLIENTS: usize = 32;

async fn run(nodes: usize, edits: usize) {
    let crm = <SalesforceSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, edits);
    let daemons: Vec<Arc<harness::Daemon>> = (0..nodes).map(|_| Arc::new(setup.serve())).collect();
    // Every node is up and one leads the connection before the clock starts.
    harness::wait_for("a leader", || async {
        let status = setup.run_json(&["status"]);
        status["leaders"]["salesforce"]["node"]
            .is_string()
            .then_some(())
    })
    .await;
    let per_client = edits / CLIENTS;
    let started = Instant::now();
    let (latencies, accepting) = measure::put_from_clients(&daemons, CLIENTS, per_client).await;
    let total = (CLIENTS * per_client) as u64;
    while crm.stats().records_written < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let landed = started.elapsed();
    let at = |q: f64| measure::quantile_ms(&latencies, q);
    println!(
        "{nodes} node(s): {total} PUTs from {CLIENTS} clients: accepted {:.0} PUTs/s (p50 {:.1} ms, p99 {:.1} ms); all in the CRM after {:.2} s ({:.0} edits/s), {} collections calls, {} bulk jobs, {} overlapping writes",
        total as f64 / accepting.as_secs_f64(),
        at(0.5),
        at(0.99),
        landed.as_secs_f64(),
        total as f64 / landed.as_secs_f64(),
        crm.stats().collection_calls,
        crm.stats().bulk_jobs_created,
        crm.stats().overlapping_writes,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let edits = std::env::var("UNISYNC_BENCH_SCALE_OUT_EDITS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(4_000);
    for nodes in 1..=3 {
        harness::on_postgres(run(nodes, edits)).await;
    }
}
