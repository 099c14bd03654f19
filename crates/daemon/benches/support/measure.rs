//! What the store benchmarks share: a PUT that costs the load generator little, and the size
//! of a store on disk.

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
