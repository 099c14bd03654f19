//! Backfill throughput against the sandbox CRMs: contacts per second, contacts per CRM
//! request, 429s, and how close a rate-limited run comes to the time the limit allows.
//!
//! Also the update endpoint under concurrent clients: accepted PUTs per second and their
//! latency (every 200 waits for the store's flush, shared by concurrent requests).
//!
//! `cargo bench -p unisync --bench backfill_throughput`. Sizes: `UNISYNC_BENCH_HUBSPOT_EDITS`
//! (default 30000: 300 batch calls, 30 s at HubSpot's 100 per 10 s) and
//! `UNISYNC_BENCH_SALESFORCE_EDITS` (default 10000), `UNISYNC_BENCH_SALESFORCE_BULK_EDITS`
//! (default 100000: one Salesforce backfill through Bulk API 2.0 and one in collections).

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

use std::time::{Duration, Instant};

use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_salesforce::sandbox::SalesforceSandbox;

use crm::Crm;
use fleet::{edits_file, registered_records};
use harness::Setup;
use measure::dir_bytes;

/// HubSpot's limit for Free/Starter accounts.
const HUBSPOT_LIMIT: u64 = 100;
const HUBSPOT_WINDOW: Duration = Duration::from_secs(10);

fn size(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Runs the backfill; answers how long its push phase took (accepting the edits into the
/// store comes before it).
fn run_backfill(setup: &Setup, edits: usize) -> Duration {
    let file = edits_file(edits);
    let report_path = setup.scratch_path("report.json");
    let started = Instant::now();
    let (code, out, err) = setup.run(
        &[
            "backfill",
            "--input",
            "-",
            "--report",
            report_path.to_str().unwrap(),
        ],
        Some(&file),
    );
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "backfill failed: {out}\n{err}");
    println!("  {}", out.trim());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let accepting = Duration::from_millis(report["accept_ms"].as_u64().unwrap());
    let pushing = Duration::from_millis(report["push_ms"].as_u64().unwrap());
    println!("  wall time             {:.2} s", elapsed.as_secs_f64());
    println!(
        "  contacts/s            {:.0}",
        edits as f64 / elapsed.as_secs_f64()
    );
    let disk = dir_bytes(&setup.scratch_path("data"));
    println!(
        "  store on disk         {:.1} MiB",
        disk as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  peak RSS so far       {:.0} MiB (largest unisync child process yet)",
        peak_child_rss_mib()
    );
    println!(
        "  accepting             {:.2} s ({:.0} edits/s into the store)",
        accepting.as_secs_f64(),
        edits as f64 / accepting.as_secs_f64()
    );
    println!(
        "  pushing               {:.2} s ({:.0} contacts/s)",
        pushing.as_secs_f64(),
        edits as f64 / pushing.as_secs_f64()
    );
    pushing
}

/// The largest resident set of any child process that has ended so far (backfills, imports,
/// daemons), in MiB.
fn peak_child_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    usage.ru_maxrss as f64 / 1024.0
}

async fn hubspot(edits: usize) {
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, edits);
    crm.set_rate_limit(HUBSPOT_LIMIT, HUBSPOT_WINDOW);
    let before = crm.stats();
    println!(
        "hubspot: {edits} edits, sandbox limited to {HUBSPOT_LIMIT} requests per {HUBSPOT_WINDOW:?}"
    );
    let pushing = run_backfill(&setup, edits);
    let stats = crm.stats();
    let requests = stats.requests - before.requests;
    let written = stats.contacts_written - before.contacts_written;
    let limited = stats.rate_limited - before.rate_limited;
    // At the limit's rate, `requests` take this long.
    let allowed = HUBSPOT_WINDOW.as_secs_f64() * requests as f64 / HUBSPOT_LIMIT as f64;
    println!(
        "  HubSpot requests      {requests}: {:.1} contacts per request, {:.4} requests per contact",
        written as f64 / requests as f64,
        requests as f64 / written as f64
    );
    println!(
        "  429 answers           {limited} ({:.2} % of requests)",
        100.0 * limited as f64 / requests as f64
    );
    println!(
        "  the limit allows      {allowed:.1} s for {requests} requests; pushing took {:.2}x that",
        pushing.as_secs_f64() / allowed.max(f64::EPSILON)
    );
}

async fn salesforce(edits: usize) {
    let crm = <SalesforceSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, edits);
    let before = crm.stats();
    println!("salesforce: {edits} edits");
    run_backfill(&setup, edits);
    let stats = crm.stats();
    let requests = stats.requests - before.requests;
    let calls = stats.collection_calls - before.collection_calls;
    let jobs = stats.bulk_jobs_created - before.bulk_jobs_created;
    let written = stats.records_written - before.records_written;
    println!(
        "  write calls           {calls} collections calls, {jobs} Bulk API jobs, for {written} records"
    );
    println!(
        "  API requests          {requests} with read-backs: {:.4} per contact",
        requests as f64 / written as f64
    );
}

/// The same Salesforce backfill as one Bulk API 2.0 job per 10,000 edits, and in collections
/// calls of 200 (the bulk threshold set out of reach): calls and wall time of each.
async fn salesforce_bulk_against_collections(edits: usize) {
    println!("salesforce: {edits} edits, Bulk API 2.0 against collections");
    for (way, threshold) in [("bulk", 2_000u64), ("collections", u64::MAX / 2)] {
        let crm = <SalesforceSandbox as Crm>::start().await;
        let (setup, _) = registered_records(&crm, edits);
        let config = std::fs::read_to_string(&setup.config).unwrap().replace(
            "[connections.salesforce]\n",
            &format!("[connections.salesforce]\nbulk_threshold = {threshold}\n"),
        );
        std::fs::write(&setup.config, config).unwrap();
        let before = crm.stats();
        let started = Instant::now();
        let pushing = run_backfill(&setup, edits);
        let stats = crm.stats();
        println!(
            "  {way:<11} wall {:.1} s (pushing {:.1} s); {} API requests, {} bulk jobs, {} collections calls, {} records written",
            started.elapsed().as_secs_f64(),
            pushing.as_secs_f64(),
            stats.requests - before.requests,
            stats.bulk_jobs_created - before.bulk_jobs_created,
            stats.collection_calls - before.collection_calls,
            stats.records_written - before.records_written,
        );
    }
}

/// `clients` tasks each PUT `per_client` edits (to distinct contacts) as fast as answers come.
async fn api(clients: usize, per_client: usize) {
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, clients * per_client);
    let daemon = std::sync::Arc::new(setup.serve());
    println!(
        "api: {clients} concurrent clients x {per_client} PUTs; HubSpot adapter at its default 100 requests per 10 s"
    );
    let started = Instant::now();
    let (latencies, accepting) =
        measure::put_from_clients(std::slice::from_ref(&daemon), clients, per_client).await;
    let total = (clients * per_client) as u64;
    while crm.stats().contacts_written < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let synced = started.elapsed();
    let at = |q: f64| measure::quantile_ms(&latencies, q);
    println!(
        "  accepted              {:.0} PUTs/s",
        latencies.len() as f64 / accepting.as_secs_f64()
    );
    println!(
        "  latency               p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    println!(
        "  all in the CRM after  {:.2} s; {} HubSpot requests",
        synced.as_secs_f64(),
        crm.stats().requests
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The backfills first, so the peak RSS they print is theirs (and their imports').
    salesforce(size("UNISYNC_BENCH_SALESFORCE_EDITS", 10_000)).await;
    salesforce_bulk_against_collections(size("UNISYNC_BENCH_SALESFORCE_BULK_EDITS", 100_000)).await;
    hubspot(size("UNISYNC_BENCH_HUBSPOT_EDITS", 30_000)).await;
    api(32, 100).await;
}
