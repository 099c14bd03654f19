//! A store that can no longer write (a full disk) fails safe: requests are answered 503, the
//! daemon stops and exits with 1, and its restart carries on from every acknowledged edit.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use serde_json::json;
use unisync_hubspot::sandbox::HubspotSandbox;

use crate::crm::Crm;
use crate::fleet::registered_records;
use crate::harness::{Daemon, TOKEN};
use crate::world::{CONTACT, World};

/// Lets `command` write no file larger than `bytes`: past it, writes fail with EFBIG, as on
/// a full disk. A real I/O error, so that no test hook is needed in the daemon.
fn limit_file_size(command: &mut Command, bytes: u64) {
    // SAFETY: between fork and exec the closure only makes two async-signal-safe calls.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_daemon_which_restarts_from_what_was_acknowledged() {
    let world = World::<HubspotSandbox>::new().await;
    let mut command = world.setup.command();
    command.arg("serve");
    limit_file_size(&mut command, 1 << 20);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_whose_store_cannot_grow_reports_it_and_exits_1() {
    const CONTACTS: usize = 400;
    let crm = <HubspotSandbox as Crm>::start().await;
    let (setup, _) = registered_records(&crm, CONTACTS);
    let store_file = setup.scratch_path("data").join("db");
    let size = std::fs::metadata(&store_file).unwrap().len();
    // Far more than the room left: every edit carries a long address, of letters that do
    // not compress away (the store compresses its pages).
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut filler = || -> String {
        (0..3_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect()
    };
    let edits: Vec<String> = (0..CONTACTS)
        .map(|n| {
            json!({"unified_contact_id": format!("contact_{n}"),
                   "email": format!("person{n}@example.com"), "first_name": "Backfill",
                   "address": format!("{n} {}", filler())})
            .to_string()
        })
        .collect();
    let mut command = setup.command();
    command
        .args(["backfill", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Room for sled to open the store and start its next log segment (512 KiB), not for the
    // edits.
    const SEGMENT: u64 = 512 << 10;
    limit_file_size(&mut command, size.div_ceil(SEGMENT) * SEGMENT + SEGMENT);
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        edits.join("\n").as_bytes(),
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the store failed"), "{stderr}");
}
