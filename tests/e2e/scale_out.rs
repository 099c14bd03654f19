//! Several daemons on one PostgreSQL store: each connection pushed by one node at a time,
//! edits accepted by any node, and a node killed mid-push taken over without losing or
//! reordering an acknowledged edit. Runs only when `UNISYNC_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_sandbox::SandboxCrm;

use crate::crm::Crm;
use crate::harness::{Daemon, Setup, on_postgres, wait_for};
use crate::portals::connection;

/// Contacts per portal.
const CONTACTS: usize = 12;
/// Requests each portal admits per window, and the window: tight enough to bind.
const RATE_LIMIT: u64 = 5;
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How long each CRM call takes.
const LATENCY: Duration = Duration::from_millis(50);
/// Rounds of edits (each edits every contact once) before the kill, after it, and after the
/// killed node is back.
const ROUNDS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_mid_push_land_every_acknowledged_edit_in_order_under_the_limit() {
    on_postgres(three_nodes_one_killed_mid_push()).await;
}

/// The node id a daemon's leadership is reported under names its pid (`host/pid/start`).
fn led_by(status: &Value, connection: &str) -> Option<u32> {
    status["leaders"][connection]["node"]
        .as_str()?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

async fn three_nodes_one_killed_mid_push() {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let portals = [
        HubspotSandbox::start(loopback, 0).await.unwrap(),
        HubspotSandbox::start(loopback, 0).await.unwrap(),
    ];
    let names = ["hs_a", "hs_b"];
    let mut tables = String::new();
    let mut envs = Vec::new();
    // (portal, unified id, CRM id) of every contact.
    let mut contacts: Vec<(usize, String, String)> = Vec::new();
    for (p, (name, portal)) in names.iter().zip(&portals).enumerate() {
        let (table, secrets) = connection(name, portal);
        tables.push_str(&format!("{table}timeout_secs = 3\nconcurrency = 4\n\n"));
        envs.extend(secrets);
        portal.set_rate_limit(RATE_LIMIT, RATE_WINDOW);
        // Short pushes: a steady stream of edits makes more calls than the limit allows.
        portal.faults().set_latency(LATENCY);
        for n in 0..CONTACTS {
            let source_id = portal.create_record(&[
                ("email", &format!("p{n}@example.com")),
                ("first_name", "Start"),
            ]);
            contacts.push((p, format!("{name}_{source_id}"), source_id));
        }
    }
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let setup = Setup::new(&tables, &envs);
    for name in names {
        let (code, out, err) = setup.run(&["contacts", "pull", "--connection", name], None);
        assert_eq!(code, 0, "{out} {err}");
    }

    let mut nodes: Vec<Option<Daemon>> = (0..3).map(|_| Some(setup.serve())).collect();
    // The two connections are led by two different nodes.
    let status = wait_for("both connections to be led by different nodes", || async {
        let status = setup.run_json(&["status"]);
        let (a, b) = (led_by(&status, "hs_a")?, led_by(&status, "hs_b")?);
        (a != b).then_some(status)
    })
    .await;

    let mut last_accepted: BTreeMap<String, String> = BTreeMap::new();
    steady_rounds(&nodes, &portals, &contacts, 0..ROUNDS, &mut last_accepted).await;

    // Kill the leader of hs_a while it has a push in flight: its calls are slow for a
    // moment, and one more round of edits starts a push.
    let leader_pid = led_by(&status, "hs_a").unwrap();
    let killed = nodes
        .iter()
        .position(|node| node.as_ref().is_some_and(|d| d.pid() == leader_pid))
        .expect("the leader is one of the three nodes");
    portals[0].faults().set_latency(Duration::from_secs(2));
    edit_round(&nodes, &contacts, ROUNDS, &mut last_accepted).await;
    wait_for("a push of hs_a in flight", || async {
        let status = setup.run_json(&["status"]);
        (status["connections"]["hs_a"]["in_flight"].as_u64() > Some(0)).then_some(())
    })
    .await;
    nodes[killed].as_mut().unwrap().kill_hard();
    nodes[killed] = None;
    portals[0].faults().set_latency(LATENCY);

    steady_rounds(
        &nodes,
        &portals,
        &contacts,
        ROUNDS + 1..2 * ROUNDS,
        &mut last_accepted,
    )
    .await;
    // The killed node comes back, and takes edits again.
    nodes[killed] = Some(setup.serve());
    let rounds = 2 * ROUNDS..3 * ROUNDS;
    steady_rounds(&nodes, &portals, &contacts, rounds, &mut last_accepted).await;

    let any = nodes.iter().flatten().next().unwrap();
    for (p, id, source_id) in &contacts {
        let synced = any.wait_synced(id).await;
        let expected = &last_accepted[id];
        assert_eq!(synced["email"], *expected, "{id}: the last accepted edit");
        wait_for(&format!("{id}'s last edit in the CRM"), || async {
            (portals[*p].value(source_id, "email").as_deref() == Some(expected)).then_some(())
        })
        .await;
    }
    for (name, portal) in names.iter().zip(&portals) {
        let stats = portal.stats();
        eprintln!("{name}: {stats:?}");
        assert!(
            stats.requests > RATE_LIMIT,
            "{name}: {} requests: the limit never mattered",
            stats.requests
        );
        assert!(
            portal.writes().overlapping_by_record.is_empty(),
            "{name}: records written by two pushes at once: {:?}",
            portal.writes().overlapping_by_record
        );
        assert_eq!(
            stats.rate_limited, 0,
            "{name}: the nodes together went over the portal's {RATE_LIMIT} requests per {RATE_WINDOW:?}"
        );
    }
}

/// Runs the `rounds`, each followed by a wait until each portal was called again, so that
/// they make a steady stream of pushes rather than a burst that one push per portal carries.
async fn steady_rounds(
    nodes: &[Option<Daemon>],
    portals: &[HubspotSandbox],
    contacts: &[(usize, String, String)],
    rounds: std::ops::Range<usize>,
    last_accepted: &mut BTreeMap<String, String>,
) {
    for round in rounds {
        let before: Vec<u64> = portals.iter().map(|p| p.stats().batch_updates).collect();
        edit_round(nodes, contacts, round, last_accepted).await;
        wait_for("a push to each portal", || async {
            portals
                .iter()
                .zip(&before)
                .all(|(portal, before)| portal.stats().batch_updates > *before)
                .then_some(())
        })
        .await;
    }
}

/// Edits every contact once, through the live nodes in turn; notes each accepted email.
async fn edit_round(
    nodes: &[Option<Daemon>],
    contacts: &[(usize, String, String)],
    round: usize,
    last_accepted: &mut BTreeMap<String, String>,
) {
    let live: Vec<&Daemon> = nodes.iter().flatten().collect();
    for (i, (_, id, _)) in contacts.iter().enumerate() {
        let email = format!("round{round}.{i}@example.com");
        let body = json!({"email": email, "first_name": format!("Round {round}")});
        let answer = live[(i + round) % live.len()].put_contact(id, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        last_accepted.insert(id.clone(), email);
    }
}
