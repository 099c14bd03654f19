//! One face for both sandbox CRMs, so that a scenario is written once and run against each:
//! records are created and read in unified field names, and the connection table comes from
//! what the sandbox says about itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use unisync_dynamics::sandbox::DynamicsSandbox;
use unisync_hubspot::sandbox::HubspotSandbox;
use unisync_salesforce::sandbox::SalesforceSandbox;
use unisync_sandbox::SandboxCrm;

/// Writes a sandbox CRM has seen: how many landed, and how many overlapped another write to
/// the same record (unisync must never cause one).
pub struct WriteCounts {
    pub written: u64,
    pub overlapping: u64,
    /// The records of `overlapping`, with their count.
    pub overlapping_by_record: BTreeMap<String, u64>,
}

/// A sandbox CRM as the end-to-end scenarios drive it.
pub trait Crm: SandboxCrm + Sized {
    /// Where each unified field lives in this CRM by default: the adapter's field table,
    /// restated here so that the tests check the mapping rather than reuse it.
    const FIELDS: &'static [(&'static str, &'static str)];
    /// Unified fields this CRM cannot leave empty: clearing one is refused at the API.
    const REQUIRED_FIELDS: &'static [&'static str];
    /// The CRM's error code for a write to a deleted record.
    const DELETED_RECORD_CODE: &'static str;
    /// The most records one of the CRM's batch writes takes.
    const BATCH_LIMIT: usize;
    /// The CRM's error code when the app may no longer make the call ([`Fault::AccessRevoked`]).
    ///
    /// [`Fault::AccessRevoked`]: unisync_sandbox::Fault::AccessRevoked
    const ACCESS_REVOKED_CODE: &'static str;

    /// Starts an empty sandbox on a loopback port.
    async fn start() -> Self;
    /// Creates a record from CRM field names and values; answers its id.
    fn create_crm_record(&self, fields: &[(&str, &str)]) -> String;
    /// The record's non-empty values by CRM field name; `None` when it does not exist.
    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>>;
    fn delete_record(&self, source_id: &str);
    /// Creates the CRM's kind of customer (HubSpot company, Salesforce Account).
    fn create_customer(&self, name: &str) -> String;
    /// The ids of the customers the record is linked to.
    fn customer_links(&self, source_id: &str) -> Vec<String>;
    fn writes(&self) -> WriteCounts;
    /// The email as the CRM stores it when `sent` is written.
    fn stored_email(sent: &str) -> String;
    /// Data API requests the CRM has answered (token requests not counted).
    fn api_requests(&self) -> u64;
    /// A person changes the record in the CRM's own screens (CRM field names): its version
    /// moves, and it is no API write.
    fn edit_as_person_in_crm(&self, source_id: &str, fields: &[(&str, &str)]);
    /// Merges the record `merged` into `kept` as a person would in the CRM; answers the id
    /// of the record that remains.
    fn merge_records(&self, kept: &str, merged: &str) -> String;

    /// A person changes unified fields of the record in the CRM.
    fn edit_as_person(&self, source_id: &str, values: &[(&str, &str)]) {
        let fields: Vec<(&str, &str)> = values
            .iter()
            .map(|(field, value)| (Self::crm_field(field), *value))
            .collect();
        self.edit_as_person_in_crm(source_id, &fields);
    }

    /// Creates a record from unified field names and values; answers its id.
    fn create_record(&self, values: &[(&str, &str)]) -> String {
        let fields: Vec<(&str, &str)> = values
            .iter()
            .map(|(field, value)| (Self::crm_field(field), *value))
            .collect();
        self.create_crm_record(&fields)
    }

    /// Every unified field of the record (`None` when the CRM holds no value).
    fn record(&self, source_id: &str) -> BTreeMap<&'static str, Option<String>> {
        let stored = self
            .crm_record(source_id)
            .unwrap_or_else(|| panic!("no {} record {source_id}", self.system()));
        Self::FIELDS
            .iter()
            .map(|(unified, crm)| (*unified, stored.get(*crm).cloned()))
            .collect()
    }

    /// The record's value of one unified field.
    fn value(&self, source_id: &str, field: &str) -> Option<String> {
        self.record(source_id)
            .remove(field)
            .unwrap_or_else(|| panic!("`{field}` is no unified field"))
    }

    fn crm_field(unified: &str) -> &'static str {
        Self::FIELDS
            .iter()
            .find(|(name, _)| *name == unified)
            .map(|(_, crm)| *crm)
            .unwrap_or_else(|| panic!("`{unified}` is no unified field"))
    }

    /// The `[connections.SYSTEM]` table pointing at the sandbox, with each secret passed
    /// through an environment variable, and those variables.
    fn connection(&self) -> (String, Vec<(String, String)>) {
        let system = self.system();
        // A short request timeout keeps the settle time, and with it the wait after a
        // restart, short.
        let mut table =
            format!("[connections.{system}]\nsystem = \"{system}\"\ntimeout_secs = 3\n");
        for (key, value) in self.connection_settings() {
            // A JSON string is also a TOML basic string.
            table.push_str(&format!("{key} = {value}\n"));
        }
        let mut envs = Vec::new();
        for (key, secret) in self.connection_secrets() {
            let variable = format!("E2E_{}_{}", system, key).to_uppercase();
            table.push_str(&format!("{key}_env = \"{variable}\"\n"));
            envs.push((variable, secret));
        }
        (table, envs)
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Crm for HubspotSandbox {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("email", "email"),
        ("first_name", "firstname"),
        ("last_name", "lastname"),
        ("phone", "phone"),
        ("mobile_phone", "mobilephone"),
        ("fax", "fax"),
        ("address", "address"),
        ("city", "city"),
        ("state", "state"),
        ("zip", "zip"),
        ("country", "country"),
        ("position", "jobtitle"),
    ];
    const REQUIRED_FIELDS: &'static [&'static str] = &[];
    const DELETED_RECORD_CODE: &'static str = "OBJECT_NOT_FOUND";
    const BATCH_LIMIT: usize = 100;
    const ACCESS_REVOKED_CODE: &'static str = "MISSING_SCOPES";

    async fn start() -> Self {
        HubspotSandbox::start(loopback(), 0)
            .await
            .expect("start the HubSpot sandbox")
    }

    fn create_crm_record(&self, fields: &[(&str, &str)]) -> String {
        self.create_contact(fields)
    }

    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        self.contact(source_id)
    }

    fn delete_record(&self, source_id: &str) {
        self.delete_contact(source_id);
    }

    fn create_customer(&self, name: &str) -> String {
        self.create_company(name)
    }

    fn customer_links(&self, source_id: &str) -> Vec<String> {
        self.company_ids_of(source_id)
    }

    fn writes(&self) -> WriteCounts {
        let stats = self.stats();
        WriteCounts {
            written: stats.contacts_written,
            overlapping: stats.overlapping_writes,
            overlapping_by_record: self.overlapping_writes_by_record(),
        }
    }

    fn stored_email(sent: &str) -> String {
        sent.to_lowercase()
    }

    fn api_requests(&self) -> u64 {
        self.stats().requests
    }

    fn edit_as_person_in_crm(&self, source_id: &str, fields: &[(&str, &str)]) {
        HubspotSandbox::edit_as_person(self, source_id, fields).expect("HubSpot takes the edit");
    }

    fn merge_records(&self, kept: &str, merged: &str) -> String {
        self.merge_contacts(kept, merged)
            .expect("HubSpot merges the two contacts")
    }
}

impl Crm for SalesforceSandbox {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("email", "Email"),
        ("first_name", "FirstName"),
        ("last_name", "LastName"),
        ("phone", "Phone"),
        ("mobile_phone", "MobilePhone"),
        ("fax", "Fax"),
        ("address", "MailingStreet"),
        ("city", "MailingCity"),
        ("state", "MailingState"),
        ("zip", "MailingPostalCode"),
        ("country", "MailingCountry"),
        ("position", "Title"),
    ];
    const REQUIRED_FIELDS: &'static [&'static str] = &["last_name"];
    const DELETED_RECORD_CODE: &'static str = "ENTITY_IS_DELETED";
    const BATCH_LIMIT: usize = 200;
    const ACCESS_REVOKED_CODE: &'static str = "API_DISABLED_FOR_ORG";

    async fn start() -> Self {
        SalesforceSandbox::start(loopback(), 0)
            .await
            .expect("start the Salesforce sandbox")
    }

    fn create_crm_record(&self, fields: &[(&str, &str)]) -> String {
        self.create_contact(fields)
    }

    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        let fields = self.contact(source_id)?;
        Some(
            fields
                .into_iter()
                .filter_map(|(name, value)| Some((name, value.as_str()?.to_string())))
                .collect(),
        )
    }

    fn delete_record(&self, source_id: &str) {
        assert!(self.delete_contact(source_id), "no Contact {source_id}");
    }

    fn create_customer(&self, name: &str) -> String {
        self.create_account(name)
    }

    fn customer_links(&self, source_id: &str) -> Vec<String> {
        self.crm_record(source_id)
            .and_then(|mut fields| fields.remove("AccountId"))
            .into_iter()
            .collect()
    }

    fn writes(&self) -> WriteCounts {
        let stats = self.stats();
        WriteCounts {
            written: stats.records_written,
            overlapping: stats.overlapping_writes,
            overlapping_by_record: self.overlapping_writes_by_record(),
        }
    }

    fn stored_email(sent: &str) -> String {
        sent.to_lowercase()
    }

    fn api_requests(&self) -> u64 {
        self.stats().requests
    }

    fn edit_as_person_in_crm(&self, source_id: &str, fields: &[(&str, &str)]) {
        // Salesforce's record versions have one-second precision: the person's edit comes a
        // second after anything before it, as it would in an org.
        self.advance_clock(std::time::Duration::from_secs(1));
        SalesforceSandbox::edit_as_person(self, source_id, fields);
    }

    fn merge_records(&self, kept: &str, merged: &str) -> String {
        self.merge_contacts(kept, merged);
        kept.to_string()
    }
}

impl Crm for DynamicsSandbox {
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("email", "emailaddress1"),
        ("first_name", "firstname"),
        ("last_name", "lastname"),
        ("phone", "telephone1"),
        ("mobile_phone", "mobilephone"),
        ("fax", "fax"),
        ("address", "address1_line1"),
        ("city", "address1_city"),
        ("state", "address1_stateorprovince"),
        ("zip", "address1_postalcode"),
        ("country", "address1_country"),
        ("position", "jobtitle"),
    ];
    const REQUIRED_FIELDS: &'static [&'static str] = &[];
    const DELETED_RECORD_CODE: &'static str = "0x80040217";
    const BATCH_LIMIT: usize = 100;
    const ACCESS_REVOKED_CODE: &'static str = "0x80040220";

    async fn start() -> Self {
        DynamicsSandbox::start(loopback(), 0)
            .await
            .expect("start the Dynamics sandbox")
    }

    fn create_crm_record(&self, fields: &[(&str, &str)]) -> String {
        self.create_contact(fields)
    }

    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        let row = self.contact(source_id)?;
        Some(
            row.into_iter()
                .filter_map(|(name, value)| Some((name, value.as_str()?.to_string())))
                .collect(),
        )
    }

    fn delete_record(&self, source_id: &str) {
        assert!(self.delete_contact(source_id), "no contact {source_id}");
    }

    fn create_customer(&self, name: &str) -> String {
        self.create_account(name)
    }

    fn customer_links(&self, source_id: &str) -> Vec<String> {
        self.crm_record(source_id)
            .and_then(|mut row| row.remove("_parentcustomerid_value"))
            .into_iter()
            .collect()
    }

    fn writes(&self) -> WriteCounts {
        let stats = self.stats();
        WriteCounts {
            written: stats.records_written,
            overlapping: stats.overlapping_writes,
            overlapping_by_record: self.overlapping_writes_by_record(),
        }
    }

    /// Dataverse keeps an email as it was sent.
    fn stored_email(sent: &str) -> String {
        sent.to_string()
    }

    fn api_requests(&self) -> u64 {
        self.stats().requests
    }

    fn edit_as_person_in_crm(&self, source_id: &str, fields: &[(&str, &str)]) {
        DynamicsSandbox::edit_as_person(self, source_id, fields);
    }

    fn merge_records(&self, kept: &str, merged: &str) -> String {
        self.merge_contacts(kept, merged);
        kept.to_string()
    }
}
