//! A sandbox CRM and a daemon config pointed at it, with one registered contact.

use serde_json::{Value, json};

use crate::crm::Crm;
use crate::harness::{Daemon, Setup};

/// The unified id of the contact every world starts with.
pub const CONTACT: &str = "contact_1";

pub const ANN_EMAIL: &str = "ann@example.com";

/// `contact_1`'s values, in the CRM and in its unified record alike.
pub const ANN: [(&str, &str); 7] = [
    ("email", ANN_EMAIL),
    ("first_name", "Ann"),
    ("last_name", "Lee"),
    ("phone", "+1 555 0100"),
    ("mobile_phone", "+1 555 0101"),
    ("city", "Lisbon"),
    ("position", "Engineer"),
];

/// A daemon config with one connection (named after the CRM's system) pointed at `crm`,
/// and the contact `contact_1` registered, its CRM record holding [`ANN`].
pub struct World<C: Crm> {
    pub crm: C,
    pub setup: Setup,
    /// `contact_1`'s record id in the CRM.
    pub source_id: String,
}

impl<C: Crm> World<C> {
    pub async fn new() -> World<C> {
        World::with_connection_keys("").await
    }

    /// A world whose connection table also holds `extra_keys` (TOML lines).
    pub async fn with_connection_keys(extra_keys: &str) -> World<C> {
        let crm = C::start().await;
        let (connection, envs) = crm.connection();
        let envs: Vec<(&str, &str)> = envs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let setup = Setup::new(&format!("{connection}{extra_keys}\n"), &envs);
        let source_id = register(&crm, &setup, CONTACT, &ANN);
        World {
            crm,
            setup,
            source_id,
        }
    }

    /// Creates a CRM record with `values` (unified names) and registers it as `id`; works
    /// with the daemon running or not. Answers the record's CRM id.
    pub fn add_contact(&self, id: &str, values: &[(&str, &str)]) -> String {
        register(&self.crm, &self.setup, id, values)
    }

    pub fn system(&self) -> &'static str {
        self.crm.system()
    }

    /// `contact_1`'s unified field in the CRM.
    pub fn crm_value(&self, field: &str) -> Option<String> {
        self.crm.value(&self.source_id, field)
    }
}

/// Gives contact `id` a new first name (with Ann's email: every PUT carries an email); the
/// daemon must accept it.
pub async fn rename(daemon: &Daemon, id: &str, first_name: &str) {
    let answer = daemon
        .put_contact(id, &json!({"email": ANN_EMAIL, "first_name": first_name}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

fn register<C: Crm>(crm: &C, setup: &Setup, id: &str, values: &[(&str, &str)]) -> String {
    let source_id = crm.create_record(values);
    let mut contact = json!({
        "id": id,
        "source_system": crm.system(),
        "source_id": source_id,
        "external_system_data": {"custom_field": "value"},
    });
    for (field, value) in values {
        contact[*field] = Value::String(value.to_string());
    }
    setup.import_contacts(&[contact]);
    source_id
}
