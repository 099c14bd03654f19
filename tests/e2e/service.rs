//! Running under systemd: readiness, watchdog pings, reloads and stopping, as `Type=notify` sees them.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use unisync_hubspot::sandbox::HubspotSandbox;

use crate::world::World;

/// Reads notifications until one has the line `expected`; answers that notification's
/// lines. Panics after the socket's read timeout.
fn wait_for_notification(socket: &UnixDatagram, expected: &str) -> Vec<String> {
    let mut buffer = [0u8; 4096];
    loop {
        let length = socket
            .recv(&mut buffer)
            .unwrap_or_else(|err| panic!("no `{expected}` notification: {err}"));
        let message = String::from_utf8_lossy(&buffer[..length]);
        if message.lines().any(|line| line == expected) {
            return message.lines().map(str::to_string).collect();
        }
    }
}

/// A socket for the daemon's notifications, named to it by `NOTIFY_SOCKET`.
fn notify_socket(world: &mut World<HubspotSandbox>) -> UnixDatagram {
    let socket_path = world.setup.scratch_path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    world.setup.envs.push((
        "NOTIFY_SOCKET".to_string(),
        socket_path.display().to_string(),
    ));
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let mut world = World::<HubspotSandbox>::new().await;
    let socket = notify_socket(&mut world);
    world
        .setup
        .envs
        .push(("WATCHDOG_USEC".to_string(), "200000".to_string()));
    let mut daemon = world.setup.serve();
    wait_for_notification(&socket, "READY=1");
    wait_for_notification(&socket, "WATCHDOG=1");
    wait_for_notification(&socket, "WATCHDOG=1");
    daemon.stop();
    wait_for_notification(&socket, "STOPPING=1");
}

/// `Type=notify` reloads: systemd hears `RELOADING=1` with the monotonic time it requires
/// (systemd 253 and later), then `READY=1` with the outcome as the service's status, which
/// `systemctl status` shows: a refused config says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_each_reload_begin_and_end_with_its_outcome() {
    let mut world = World::<HubspotSandbox>::new().await;
    let socket = notify_socket(&mut world);
    let daemon = world.setup.serve();
    wait_for_notification(&socket, "READY=1");

    daemon.hang_up();
    let reloading = wait_for_notification(&socket, "RELOADING=1");
    let usec = reloading
        .iter()
        .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC with RELOADING=1: {reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|usec| usec > 0), "{usec}");
    let ready = wait_for_notification(&socket, "READY=1");
    assert!(
        ready
            .iter()
            .any(|line| line.starts_with("STATUS=config reloaded at ")),
        "{ready:?}"
    );

    let config = std::fs::read_to_string(&world.setup.config).unwrap();
    std::fs::write(
        &world.setup.config,
        format!(
            "{config}
[dispatch]
"
        ),
    )
    .unwrap();
    daemon.hang_up();
    wait_for_notification(&socket, "RELOADING=1");
    let ready = wait_for_notification(&socket, "READY=1");
    let status = ready
        .iter()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS with READY=1: {ready:?}"));
    assert!(
        status.starts_with("config reload refused at ") && status.contains("TOML parse error"),
        "{status}"
    );
}

/// The store holds every contact's values and rotated OAuth tokens, `daemon.addr` tells the
/// CLI where the admin routes listen and `admin.token` (made for the run when the config
/// names no admin token) opens them: none is for other local users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_the_daemons_address_are_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::<HubspotSandbox>::new().await;
    let mut daemon = world.setup.serve();
    let store = world.setup.scratch_path("data");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&store), 0o700, "store directory");
    assert_eq!(mode(&store.join("daemon.addr")), 0o600, "daemon.addr");
    assert_eq!(mode(&store.join("admin.token")), 0o600, "admin.token");
    assert!(
        !store.join("daemon.partial").exists(),
        "the address is written through a temporary file that is renamed into place"
    );
    // The run's admin token opens the admin routes (the CLI's way in), and the API token not.
    let admin_token = std::fs::read_to_string(store.join("admin.token")).unwrap();
    let status = |token: &str| {
        daemon.send(
            daemon
                .client
                .get(daemon.url("/api/v1/admin/status"))
                .bearer_auth(token),
        )
    };
    assert_eq!(status(admin_token.trim()).await.status, 200);
    assert_eq!(status(crate::harness::TOKEN).await.status, 403);
    daemon.stop();
    assert!(
        !store.join("admin.token").exists(),
        "the run's admin token goes with the run"
    );
}

/// What the example unit's sandbox takes away, applied without systemd (the test machines do
/// not run it as PID 1): a private mount namespace where every mount is read-only but the
/// state directory (ProtectSystem=strict with StateDirectory), empty /home and /root
/// (ProtectHome), a fresh /tmp (PrivateTmp), then an unprivileged user with no capabilities
/// and no way to gain any (DynamicUser, CapabilityBoundingSet=, NoNewPrivileges) and
/// UMask=0077. The system call filter and MemoryDenyWriteExecute need systemd itself; they
/// are checked by `systemd-analyze security` (docs/operations.md).
const UNIT_SANDBOX: &str = r#"
set -eu
mount --make-rprivate /
mount --bind "$STATE" /mnt
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p "$STATE"
mount --move /mnt "$STATE"
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r point; do
    case "$point" in
        /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|/tmp|"$STATE") ;;
        *) mount -o remount,bind,ro "$point" 2>/dev/null || [ "$point" != / ] ;;
    esac
done
for home in /home /root; do
    if [ -d "$home" ]; then mount -t tmpfs -o ro,mode=0755 tmpfs "$home"; fi
done
umask 0077
exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all -- "$@"
"#;

/// The example unit's `ExecStart`, with the binary and config of this test.
fn unit_exec_start(binary: &str, config: &std::path::Path) -> Vec<String> {
    let unit = include_str!("../../config/unisync.service");
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    line.split_whitespace()
        .map(|word| match word {
            "/usr/local/bin/unisync" => binary.to_string(),
            "/etc/unisync/unisync.toml" => config.display().to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// The example unit's `ExecReload`, for the service's main process `pid`.
fn unit_exec_reload(pid: u32) -> Vec<String> {
    let unit = include_str!("../../config/unisync.service");
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecReload="))
        .expect("the unit has an ExecReload");
    line.split_whitespace()
        .map(|word| word.replace("$MAINPID", &pid.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_unit_runs_unisync_inside_its_sandbox() {
    // Mount namespaces and changing user need root; CI runs as root.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the unit's sandbox needs root to be built without systemd");
        return;
    }
    let world = World::<HubspotSandbox>::new().await;
    let scratch = world.setup.config.parent().unwrap().to_path_buf();
    // The build's binary may itself live under /tmp (a checkout there), which the private
    // /tmp hides: the service runs a copy kept in its state directory.
    let binary = scratch.join("unisync");
    std::fs::copy(env!("CARGO_BIN_EXE_unisync"), &binary).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&scratch)
        .status()
        .unwrap();
    assert!(chown.success());
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(UNIT_SANDBOX)
        .arg("unit-sandbox")
        .args(unit_exec_start(
            binary.to_str().unwrap(),
            &world.setup.config,
        ))
        .env("STATE", &scratch)
        .env("UNISYNC_LOG", "warn");
    for (key, value) in &world.setup.envs {
        command.env(key, value);
    }
    let mut daemon = crate::harness::Daemon::start(command);
    crate::world::rename(&daemon, crate::world::CONTACT, "Sandboxed").await;
    daemon.wait_synced(crate::world::CONTACT).await;
    assert_eq!(world.crm_value("first_name").as_deref(), Some("Sandboxed"));
    // `systemctl reload` runs the unit's ExecReload as the service's user, with no
    // capability: enough to signal its own process.
    let reload = unit_exec_reload(daemon.pid());
    let status = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
        ])
        .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .args(&reload)
        .status()
        .unwrap();
    assert!(status.success(), "{reload:?}");
    daemon.wait_reloads("applied", 1).await;
    let store = scratch.join("data");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&store).unwrap());
    assert_eq!(owner, 65534, "the store is the service user's");
    daemon.stop();
}
