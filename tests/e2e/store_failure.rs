//! A store that can no longer write (a full disk) fails safe: requests are answered 503, the
//! daemon stops and exits with 1, and its restart carries on from every acknowledged edit.

use std::os::unix::process::CommandExt;

use serde_json::json;
use unisync_sandbox::hubspot::HubspotSandbox;

use crate::harness::{Daemon, TOKEN};
use crate::world::{CONTACT, World};

/// The largest file the daemon may write: past it, writes fail with EFBIG, as on a full disk.
const FILE_SIZE_LIMIT: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_daemon_which_restarts_from_what_was_acknowledged() {
    let world = World::<HubspotSandbox>::new().await;
    let mut command = world.setup.command();
    command.arg("serve");
    // SAFETY: between fork and exec the closure only makes two async-signal-safe calls.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FILE_SIZE_LIMIT,
                rlim_max: FILE_SIZE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The write then fails with EFBIG instead of killing the process (an ignored
            // signal stays ignored across exec).
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut daemon = Daemon::start(command);

    // Edits until the store's file reaches the limit: each one is acknowledged, or refused
    // with 503 `store_failed`, or (once the daemon has stopped accepting) not answered.
    let mut acknowledged = None;
    let mut stopped = false;
    let filler = "x".repeat(200);
    for n in 0..20_000 {
        let name = format!("Name {n}");
        let body = json!({"email": "ann@example.com", "first_name": name,
                          "address": format!("{n} {filler}")});
        let request = daemon
            .client
            .put(daemon.url(&format!("/api/v1/unified/contact/{CONTACT}")))
            .bearer_auth(TOKEN)
            .json(&body);
        let Ok(response) = request.send().await else {
            stopped = true;
            break;
        };
        match response.status().as_u16() {
            200 => acknowledged = Some(name),
            503 => {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "store_failed", "{body}");
            }
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(stopped, "the daemon stops accepting once its store failed");
    let acknowledged = acknowledged.expect("edits were acknowledged before the disk filled");
    let status = daemon.exited().await;
    assert_eq!(
        status.code(),
        Some(1),
        "the daemon exits 1 for systemd to restart it"
    );

    // Restarted without the limit (the disk has room again), it pushes every acknowledged edit.
    let daemon = world.setup.serve();
    let synced = daemon.wait_synced(CONTACT).await;
    assert_eq!(synced["first_name"], acknowledged);
    assert_eq!(
        world.crm_value("first_name").as_deref(),
        Some(acknowledged.as_str())
    );
}
