//! Many contacts at once: CRM records registered as unified contacts, and a backfill file
//! editing each. Shared by the backfill tests and the throughput benchmark.

use serde_json::{Value, json};

use crate::crm::Crm;
use crate::harness::Setup;

/// `count` CRM records, each registered as `contact_N`, and a daemon config pointed at `crm`.
pub fn registered_records<C: Crm>(crm: &C, count: usize) -> (Setup, Vec<String>) {
    let (connection, envs) = crm.connection();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let setup = Setup::new(&connection, &envs);
    let source_ids: Vec<String> = (0..count)
        .map(|n| {
            crm.create_record(&[
                ("email", &format!("person{n}@example.com")),
                ("first_name", "Person"),
                ("last_name", "Backfill"),
            ])
        })
        .collect();
    let contacts: Vec<Value> = source_ids
        .iter()
        .enumerate()
        .map(|(n, source_id)| {
            json!({"id": format!("contact_{n}"), "source_system": crm.system(), "source_id": source_id,
                   "email": format!("person{n}@example.com"), "first_name": "Person", "last_name": "Backfill"})
        })
        .collect();
    setup.import_contacts(&contacts);
    (setup, source_ids)
}

/// One edit per contact, as a backfill file.
pub fn edits_file(count: usize) -> String {
    (0..count)
        .map(|n| {
            json!({"unified_contact_id": format!("contact_{n}"), "edit_id": format!("edit-{n}"),
                   "email": format!("person{n}@example.com"), "first_name": format!("Edited {n}"),
                   "city": "Backfill City"})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
