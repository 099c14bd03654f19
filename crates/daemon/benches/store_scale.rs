//! The store at a million contacts: disk and memory.
//!
//! Registers `UNISYNC_BENCH_SCALE_CONTACTS` contacts (1,000,000) with `unisync contacts
//! import`, then PUTs one edit to each through the API (128 clients) with the connection
//! disabled, so every edit stays queued. Prints the store's size after the import and after
//! the edits, the daemon's resident memory with every edit queued (while serving, and after
//! a restart), how long `/metrics` takes at that size, and the store's size after
//! `unisync store compact`.
//!
//! `cargo bench -p unisync --bench store_scale`; `UNISYNC_BENCH_SCALE_CACHE_MIB` sets the
//! store's `cache_mib` (default: the config's default).

// The end-to-end tests' helpers; the benchmark uses a part of them.
#[allow(dead_code)]
#[path = "../../../tests/e2e/crm.rs"]
mod crm;
#[allow(dead_code)]
#[path = "../../../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "support/measure.rs"]
mod measure;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use unisync_hubspot::sandbox::HubspotSandbox;

use crm::Crm;
use harness::{Daemon, Setup};
use measure::{dir_bytes, put_first_name};

const CLIENTS: usize = 128;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The resident memory of this process's `unisync` child (the daemon), in MiB.
fn daemon_rss_mib() -> f64 {
    let me = std::process::id().to_string();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, after_name) = stat.split_once("(unisync) ")?;
            (after_name.split(' ').nth(1)? == me).then(|| entry.file_name())
        })
        .expect("the daemon is running");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.to_string_lossy())).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The median time `/metrics` takes to answer, over 21 scrapes; and its queue figure.
async fn metrics(daemon: &Daemon) -> (Duration, String) {
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..21 {
        let started = Instant::now();
        text = daemon.metrics().await;
        times.push(started.elapsed());
    }
    times.sort();
    let queued = text
        .lines()
        .find(|line| line.starts_with("unisync_queue_ready{"))
        .unwrap_or_default()
        .to_string();
    (times[times.len() / 2], queued)
}

fn report(what: &str, value: String) {
    println!("  {what:<44} {value}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let contacts: usize = std::env::var("UNISYNC_BENCH_SCALE_CONTACTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    let crm = <HubspotSandbox as Crm>::start().await;
    let (connection, envs) = crm.connection();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Disabled: the edits are accepted and kept, none is pushed.
    let setup = Setup::new(&format!("{connection}enabled = false\n"), &envs);
    let cache_mib = std::env::var("UNISYNC_BENCH_SCALE_CACHE_MIB").ok();
    if let Some(cache_mib) = &cache_mib {
        let config = std::fs::read_to_string(&setup.config).unwrap();
        let config = config.replace(
            "[storage]\n",
            &format!("[storage]\ncache_mib = {cache_mib}\n"),
        );
        std::fs::write(&setup.config, config).unwrap();
    }
    let data = setup.scratch_path("data");
    println!(
        "store_scale: {contacts} contacts, one edit each, the connection disabled, cache_mib {}",
        cache_mib.as_deref().unwrap_or("default")
    );

    let file = setup.scratch_path("contacts.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for n in 0..contacts {
            let contact = serde_json::json!({"id": format!("contact_{n}"), "source_system": "hubspot",
                "source_id": format!("{}", 1_000_000 + n), "email": format!("person{n}@example.com"),
                "first_name": "Person", "last_name": "Scale", "phone": "+1 555 0100",
                "city": "Springfield", "country": "US"});
            writeln!(out, "{contact}").unwrap();
        }
    }
    let started = Instant::now();
    let (code, out, err) = setup.run(&["contacts", "import", file.to_str().unwrap()], None);
    assert_eq!(code, 0, "import failed: {out}\n{err}");
    report(
        "import",
        format!(
            "{:.1} s ({:.0} contacts/s)",
            started.elapsed().as_secs_f64(),
            contacts as f64 / started.elapsed().as_secs_f64()
        ),
    );
    let imported = dir_bytes(&data);
    report(
        "disk after the import",
        format!(
            "{:.1} MiB ({:.0} bytes a contact)",
            mib(imported),
            imported as f64 / contacts as f64
        ),
    );

    let daemon = Arc::new(setup.serve());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (daemon, next) = (daemon.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= contacts {
                        break;
                    }
                    put_first_name(&daemon, n, &format!("Edited {n}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    report(
        "one edit each through the API",
        format!(
            "{:.1} s ({:.0} durable PUT/s from {CLIENTS} clients)",
            elapsed.as_secs_f64(),
            contacts as f64 / elapsed.as_secs_f64()
        ),
    );
    report(
        "daemon RSS, every edit queued",
        format!("{:.0} MiB", daemon_rss_mib()),
    );
    let (took, queued) = metrics(&daemon).await;
    report(
        "/metrics, median of 21",
        format!("{:.2} ms ({queued})", took.as_secs_f64() * 1000.0),
    );
    let Ok(mut daemon) = Arc::try_unwrap(daemon) else {
        panic!("every client task has ended");
    };
    daemon.stop();
    let edited = dir_bytes(&data);
    report(
        "disk after the edits",
        format!(
            "{:.1} MiB ({:.0} bytes a contact)",
            mib(edited),
            edited as f64 / contacts as f64
        ),
    );

    let started = Instant::now();
    let (code, out, err) = setup.run(&["store", "compact"], None);
    assert_eq!(code, 0, "compact failed: {out}\n{err}");
    let compacted = dir_bytes(&data);
    report(
        "disk after `store compact`",
        format!(
            "{:.1} MiB ({:.0} bytes a contact; compaction took {:.1} s)",
            mib(compacted),
            compacted as f64 / contacts as f64,
            started.elapsed().as_secs_f64()
        ),
    );

    let started = Instant::now();
    let daemon = setup.serve();
    report(
        "restart with every edit queued",
        format!("answering after {:.1} s", started.elapsed().as_secs_f64()),
    );
    let (took, queued) = metrics(&daemon).await;
    report(
        "daemon RSS after the restart",
        format!("{:.0} MiB", daemon_rss_mib()),
    );
    report(
        "/metrics after the restart",
        format!("{:.2} ms ({queued})", took.as_secs_f64() * 1000.0),
    );
}
