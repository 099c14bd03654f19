//! Running under systemd: readiness, watchdog pings and stopping, as `Type=notify` sees them.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use unisync_hubspot::sandbox::HubspotSandbox;

use crate::world::World;

/// Reads notifications until one equals `expected`; panics after the socket's read timeout.
fn wait_for_notification(socket: &UnixDatagram, expected: &str) {
    let mut buffer = [0u8; 512];
    loop {
        let length = socket
            .recv(&mut buffer)
            .unwrap_or_else(|err| panic!("no `{expected}` notification: {err}"));
        let message = String::from_utf8_lossy(&buffer[..length]);
        if message.lines().any(|line| line == expected) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let mut world = World::<HubspotSandbox>::new().await;
    let socket_path = world.setup.scratch_path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    world.setup.envs.extend([
        (
            "NOTIFY_SOCKET".to_string(),
            socket_path.display().to_string(),
        ),
        ("WATCHDOG_USEC".to_string(), "200000".to_string()),
    ]);
    let mut daemon = world.setup.serve();
    wait_for_notification(&socket, "READY=1");
    wait_for_notification(&socket, "WATCHDOG=1");
    wait_for_notification(&socket, "WATCHDOG=1");
    daemon.stop();
    wait_for_notification(&socket, "STOPPING=1");
}
