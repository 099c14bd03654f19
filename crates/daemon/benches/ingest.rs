//! Ingest against the disk's ceiling, in one run on one machine.
//!
//! First unisync: durable PUTs per second (every 200 waits until its edit is on disk) with
//! p50 and p99 latency from 1, 16 and 128 concurrent clients, each for a fixed time, the
//! load generator in this process beside the daemon. Then the ceiling: raw sled inserts of
//! the same value size (the store's mean contact record, measured from the store the run
//! wrote) from as many writers, each waiting for a flush that started after its insert, one
//! thread doing every flush. The ratio of the two is what the accept path costs.
//!
//! `cargo bench -p unisync --bench ingest`. Sizes: `UNISYNC_BENCH_INGEST_CONTACTS` (2000
//! registered contacts, PUT in turn) and `UNISYNC_BENCH_INGEST_SECS` (5 s a level).

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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use unisync_hubspot::sandbox::HubspotSandbox;

use crm::Crm;
use fleet::registered_records;
use harness::Daemon;
use measure::put_first_name;

const LEVELS: [usize; 3] = [1, 16, 128];

fn size(variable: &str, default: u64) -> u64 {
    std::env::var(variable)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Answers per second and latencies of one level.
struct Level {
    clients: usize,
    per_second: f64,
    latencies: Vec<Duration>,
}

impl Level {
    fn new(clients: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Level {
        latencies.sort();
        Level {
            clients,
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            latencies,
        }
    }

    fn millis_at(&self, quantile: f64) -> f64 {
        let index = ((self.latencies.len() - 1) as f64 * quantile) as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    fn print(&self, what: &str) {
        println!(
            "  {what:<9} {:>3} clients  {:>8.0} /s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.clients,
            self.per_second,
            self.millis_at(0.5),
            self.millis_at(0.99)
        );
    }
}

/// `clients` tasks PUT edits to the `contacts` registered contacts in turn for `duration`.
async fn put_for(
    daemon: &Arc<Daemon>,
    contacts: usize,
    clients: usize,
    duration: Duration,
) -> Level {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (daemon, next) = (daemon.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let contact = n % contacts;
                    let sent = Instant::now();
                    put_first_name(&daemon, contact, &format!("Ingest {n}")).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Level::new(clients, started.elapsed(), latencies)
}

/// The mean size of a contact record in the store at `path` (the daemon stopped).
fn mean_record_bytes(path: &std::path::Path) -> usize {
    let db = sled::Config::new()
        .path(path)
        .use_compression(true)
        .open()
        .expect("open the bench's store");
    let contacts = db.open_tree("contacts").unwrap();
    let (count, bytes) = contacts
        .iter()
        .map(|item| item.unwrap().1.len())
        .fold((0, 0), |(count, bytes), len| (count + 1, bytes + len));
    bytes / count.max(1)
}

/// Group commit with one flusher: writers register after their insert, the flusher flushes
/// whenever someone waits and answers everyone who registered before the flush began.
#[derive(Default)]
struct GroupCommit {
    /// (flushes begun, flushes done, writers waiting)
    state: Mutex<(u64, u64, usize)>,
    changed: Condvar,
}

impl GroupCommit {
    fn wait_durable(&self) {
        let mut state = self.state.lock().unwrap();
        let needed = state.0 + 1;
        state.2 += 1;
        self.changed.notify_all();
        while state.1 < needed {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn run_flusher(&self, db: &sled::Db, stop: &AtomicBool) {
        loop {
            let mut state = self.state.lock().unwrap();
            while state.2 == 0 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                state = self
                    .changed
                    .wait_timeout(state, Duration::from_millis(10))
                    .unwrap()
                    .0;
            }
            state.0 += 1;
            state.2 = 0;
            let begun = state.0;
            drop(state);
            db.flush().expect("flush");
            let mut state = self.state.lock().unwrap();
            state.1 = begun;
            self.changed.notify_all();
        }
    }
}

/// Raw sled: `writers` threads insert `value_bytes`-byte values under fresh keys and wait for
/// them to be durable, for `duration`.
fn raw_sled(writers: usize, value_bytes: usize, duration: Duration) -> Level {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::LowSpace)
        .use_compression(true)
        .compression_factor(1)
        .open()
        .unwrap();
    let commit = Arc::new(GroupCommit::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (db, commit, stop) = (db.clone(), commit.clone(), stop.clone());
        std::thread::spawn(move || commit.run_flusher(&db, &stop))
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let (db, commit) = (db.clone(), commit.clone());
            std::thread::spawn(move || {
                // Bytes that do not compress away: as many as the store's records take.
                let value: Vec<u8> = (0..value_bytes)
                    .map(|i| ((i as u64 * 2_654_435_761) >> 7) as u8 ^ writer as u8)
                    .collect();
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    db.insert(format!("{writer:04}/{:08}", n % 2000), value.as_slice())
                        .unwrap();
                    commit.wait_durable();
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    commit.changed.notify_all();
    flusher.join().unwrap();
    Level::new(writers, elapsed, latencies)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let contacts = size("UNISYNC_BENCH_INGEST_CONTACTS", 2000) as usize;
    let duration = Duration::from_secs(size("UNISYNC_BENCH_INGEST_SECS", 5));
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, contacts);
    let daemon_arc = Arc::new(setup.serve());
    println!(
        "ingest: {contacts} contacts PUT in turn, {} s a level; HubSpot sandbox at its default 100 requests per 10 s",
        duration.as_secs()
    );
    let mut unisync = Vec::new();
    for clients in LEVELS {
        let level = put_for(&daemon_arc, contacts, clients, duration).await;
        level.print("unisync");
        unisync.push(level);
    }
    let Ok(mut daemon) = Arc::try_unwrap(daemon_arc) else {
        panic!("every client task has ended");
    };
    daemon.stop();
    let value_bytes = mean_record_bytes(&setup.scratch_path("data"));
    println!(
        "  raw sled, one flusher, {value_bytes}-byte values (the store's mean contact record):"
    );
    for (clients, ours) in LEVELS.into_iter().zip(&unisync) {
        let raw = tokio::task::spawn_blocking(move || raw_sled(clients, value_bytes, duration))
            .await
            .unwrap();
        raw.print("raw sled");
        println!(
            "  ratio     {clients:>3} clients  unisync / raw sled = {:.2}",
            ours.per_second / raw.per_second
        );
    }
}
