//! Two accounts of one CRM (two HubSpot portals) behind two connections: their records share
//! ids, and must never mix.

use std::net::SocketAddr;

use serde_json::json;
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_sandbox::SandboxCrm;

use crate::harness::Setup;

/// The `[connections.NAME]` table pointing at `crm`, and its secrets' variables.
pub fn connection(name: &str, crm: &HubspotSandbox) -> (String, Vec<(String, String)>) {
    let mut table = format!("[connections.{name}]\nsystem = \"hubspot\"\n");
    for (key, value) in crm.connection_settings() {
        table.push_str(&format!("{key} = {value}\n"));
    }
    let mut envs = Vec::new();
    for (key, secret) in crm.connection_secrets() {
        let variable = format!("E2E_{name}_{key}").to_uppercase();
        table.push_str(&format!("{key}_env = \"{variable}\"\n"));
        envs.push((variable, secret));
    }
    (table, envs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_portals_with_the_same_record_ids_never_mix() {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let portal_a = HubspotSandbox::start(loopback, 0).await.unwrap();
    let portal_b = HubspotSandbox::start(loopback, 0).await.unwrap();
    let mut ids = Vec::new();
    for name in ["Ada", "Bo", "Cy"] {
        let email = format!("{}@example.com", name.to_lowercase());
        let a = portal_a.create_contact(&[("email", &email), ("firstname", name)]);
        let b = portal_b.create_contact(&[("email", &email), ("firstname", &format!("{name} B"))]);
        assert_eq!(a, b, "both portals hand out the same ids");
        ids.push(a);
    }
    let (table_a, envs_a) = connection("hs_a", &portal_a);
    let (table_b, envs_b) = connection("hs_b", &portal_b);
    let envs: Vec<(&str, &str)> = envs_a
        .iter()
        .chain(&envs_b)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let setup = Setup::new(&format!("{table_a}\n{table_b}"), &envs);

    let pull = |connection: &str, expected: &str| {
        let (code, out, err) = setup.run(&["contacts", "pull", "--connection", connection], None);
        assert_eq!(code, 0, "{out} {err}");
        assert!(out.contains(expected), "{out}");
    };
    pull("hs_a", "hs_a: 3 registered, 0 updated");
    pull("hs_b", "hs_b: 3 registered, 0 updated");
    pull("hs_a", "hs_a: 0 registered, 3 updated");

    // Importing another unified id for a record one connection already has is refused, and
    // so is a contact that names no connection while two serve its system.
    let lines = [
        json!({"id": "intruder", "source_system": "hubspot", "source_id": ids[0],
               "external_system_config_id": "hs_a"}),
        json!({"id": "unrouted", "source_system": "hubspot", "source_id": "777"}),
    ];
    let input: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let (code, out, err) = setup.run(&["contacts", "import", "-"], Some(&input.join("\n")));
    assert_eq!(code, 1, "{out} {err}");
    assert!(out.contains("0 imported, 2 failed"), "{out}");
    let taken = format!(
        "line 1: hs_a record `{}` is already registered as unified contact `hs_a_{}`; this line is `intruder`",
        ids[0], ids[0]
    );
    assert!(err.contains(&taken), "{err}");
    assert!(
        err.contains("line 2: several connections serve source_system `hubspot`"),
        "{err}"
    );

    let daemon = setup.serve();
    for id in &ids {
        for (connection, first_name_suffix) in [("hs_a", ""), ("hs_b", " B")] {
            let contact = daemon.contact(&format!("{connection}_{id}")).await;
            assert_eq!(contact["external_system_config_id"], connection);
            assert_eq!(contact["source_id"], *id);
            let first_name = contact["first_name"].as_str().unwrap();
            assert!(first_name.ends_with(first_name_suffix), "{contact}");
        }
    }

    // An edit of the first portal's contact lands in the first portal only.
    let first = format!("hs_a_{}", ids[0]);
    let answer = daemon
        .put_contact(
            &first,
            &json!({"email": "ada@example.com", "first_name": "Ada Edited"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    daemon.wait_synced(&first).await;
    assert_eq!(
        portal_a.contact(&ids[0]).unwrap()["firstname"],
        "Ada Edited"
    );
    assert_eq!(portal_b.contact(&ids[0]).unwrap()["firstname"], "Ada B");
}
