//! What the store benchmarks share: a PUT that costs the load generator little, and the size
//! of a store on disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, TOKEN};

/// PUTs `first_name` to `contact_N` (email `personN@example.com`, as the fleet registers
/// them) with a body written by hand and the answer's body unread, so the load generator
/// leaves the cores to the daemon. Panics unless the answer is 200.
pub async fn put_first_name(daemon: &Daemon, n: usize, first_name: &str) {
    let body = format!(r#"{{"email":"person{n}@example.com","first_name":"{first_name}"}}"#);
    let answer = daemon
        .client
        .put(daemon.url(&format!("/api/v1/unified/contact/contact_{n}")))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request to unisync");
    let status = answer.status().as_u16();
    let _ = answer.bytes().await;
    assert_eq!(status, 200);
}

/// The bytes of every file under `path`.
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// PUTs from `clients` concurrent clients, `per_client` each, client `c` to
/// `daemons[c % daemons.len()]`: edit `n` gives `contact_n` (email `personN@example.com`) the
/// first name `Put n`, each answer read in full. Answers every PUT's latency, sorted, and the
/// time from the first PUT to the last answer.
pub async fn put_from_clients(
    daemons: &[Arc<Daemon>],
    clients: usize,
    per_client: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let daemon = daemons[client % daemons.len()].clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for k in 0..per_client {
                    let n = client * per_client + k;
                    let body = serde_json::json!({"email": format!("person{n}@example.com"), "first_name": format!("Put {n}")});
                    let sent = Instant::now();
                    let answer = daemon.put_contact(&format!("contact_{n}"), &body).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
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
    let took = started.elapsed();
    latencies.sort();
    (latencies, took)
}

/// The `q` quantile (0 to 1) of `sorted` latencies, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0
}
