//! API calls per landed edit under live traffic: edits PUT one after another, then a burst
//! from concurrent clients, against each sandbox CRM, beside the ideal (one call per full
//! batch). And how long one edit into an idle queue takes to land.
//!
//! `cargo bench -p unisync --bench live_batching`. Size: `UNISYNC_BENCH_LIVE_EDITS` (1000).

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

use std::sync::Arc;
use std::time::{Duration, Instant};

use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_salesforce::sandbox::SalesforceSandbox;

use crm::Crm;
use fleet::registered_records;
use harness::Daemon;

/// PUTs a new first name to contacts `range`, from `clients` concurrent clients.
async fn put_all(daemon: &Arc<Daemon>, range: std::ops::Range<usize>, round: &str, clients: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (daemon, next, round, end) = (daemon.clone(), next.clone(), round.to_string(), range.end);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= end {
                        break;
                    }
                    let body = serde_json::json!({"email": format!("person{n}@example.com"), "first_name": format!("{round} {n}")});
                    let answer = daemon.put_contact(&format!("contact_{n}"), &body).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn wait_written<C: Crm>(crm: &C, total: u64) {
    while crm.writes().written < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The CRM's batch write calls (HubSpot `batch/update`, Salesforce collections).
type BatchWrites<C> = fn(&C) -> u64;

/// One run: `edits` PUTs from `clients` clients; prints the calls they cost.
async fn run<C: Crm>(
    crm: &C,
    batch_writes: BatchWrites<C>,
    daemon: &Arc<Daemon>,
    (edits, clients, round): (usize, usize, &str),
) {
    let (requests, writes, written) = (crm.api_requests(), batch_writes(crm), crm.writes().written);
    let started = Instant::now();
    put_all(daemon, 0..edits, round, clients).await;
    let accepted = started.elapsed();
    wait_written(crm, written + edits as u64).await;
    let landed = started.elapsed();
    let requests = crm.api_requests() - requests;
    let writes = batch_writes(crm) - writes;
    println!(
        "  {round:<7} {edits} edits from {clients:>2} client(s): accepted in {:.2} s, all landed after {:.2} s; \
         {writes} write calls ({:.1} records per call), {requests} API requests in all ({:.4} per landed edit; ideal {:.4})",
        accepted.as_secs_f64(),
        landed.as_secs_f64(),
        edits as f64 / writes.max(1) as f64,
        requests as f64 / edits as f64,
        1.0 / C::BATCH_LIMIT as f64,
    );
}

/// One edit into an idle queue: how long until the CRM has it.
async fn idle_edit<C: Crm>(crm: &C, daemon: &Arc<Daemon>) {
    let written = crm.writes().written;
    let started = Instant::now();
    put_all(daemon, 0..1, "Idle", 1).await;
    wait_written(crm, written + 1).await;
    println!(
        "  idle    one edit into an idle queue landed after {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

async fn bench<C: Crm>(
    edits: usize,
    batch_writes: BatchWrites<C>,
    prepare: impl FnOnce(&C) -> String,
) {
    let crm = C::start().await;
    let (setup, _) = registered_records(&crm, edits);
    let note = prepare(&crm);
    println!("{}: {note}", crm.system());
    let daemon = Arc::new(setup.serve());
    idle_edit(&crm, &daemon).await;
    run(&crm, batch_writes, &daemon, (edits, 1, "steady")).await;
    run(&crm, batch_writes, &daemon, (edits, 32, "burst")).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let edits = std::env::var("UNISYNC_BENCH_LIVE_EDITS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    bench::<SalesforceSandbox>(
        edits,
        |crm| crm.stats().collection_calls,
        |_| "default linger".to_string(),
    )
    .await;
    bench::<HubspotSandbox>(
        edits,
        |crm| crm.stats().batch_updates,
        |crm| {
            crm.set_rate_limit(100, Duration::from_secs(10));
            "sandbox limited to 100 requests per 10 s (the limit binds)".to_string()
        },
    )
    .await;
}
