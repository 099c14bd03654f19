//! The fake environment's rows: contacts and accounts, the contact columns Dataverse checks,
//! and the updates it applies.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Dataverse's error codes the fake answers with (`{"error": {"code", "message"}}`).
pub mod codes {
    /// A row (the contact, or the account a bind names) does not exist.
    pub const DOES_NOT_EXIST: &str = "0x80040217";
    /// A value is longer than its column allows.
    pub const TOO_LONG: &str = "0x80044331";
    /// The row changed since the ETag sent in `If-Match`.
    pub const VERSION_MISMATCH: &str = "0x80060882";
    /// A property the entity type does not have.
    pub const UNKNOWN_PROPERTY: &str = "0x80060888";
    /// A payload Dataverse cannot read (not JSON, a number for a text column, a bad bind).
    pub const BAD_PAYLOAD: &str = "0x80048d19";
    /// The caller lacks a privilege (write on contacts).
    pub const MISSING_PRIVILEGE: &str = "0x80040220";
    /// A URL segment names nothing (an unknown entity set, version or path).
    pub const SEGMENT_NOT_FOUND: &str = "0x8006088a";
    /// An unexpected server error.
    pub const UNEXPECTED: &str = "0x80040216";
    /// SQL Server's generic error, here carrying a deadlock (Sql Number 1205).
    pub const SQL_ERROR: &str = "0x80044150";
    /// Service protection: requests in the 5-minute window.
    pub const TOO_MANY_REQUESTS: &str = "0x80072322";
    /// Service protection: combined execution time in the 5-minute window.
    pub const EXECUTION_TIME: &str = "0x80072321";
    /// Service protection: concurrent requests.
    pub const CONCURRENT_REQUESTS: &str = "0x80072326";
}

/// A refused operation: its HTTP status and Dataverse's error code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The body Dataverse answers an error with.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }

    pub fn does_not_exist(entity: &str, id: &str) -> Self {
        Refusal::new(
            404,
            codes::DOES_NOT_EXIST,
            format!("{entity} With Id = {id} Does Not Exist"),
        )
    }
}

/// The writable contact columns the fake has, with their maximum lengths (Microsoft's contact entity reference).
const CONTACT_COLUMNS: &[(&str, usize)] = &[
    ("emailaddress1", 100),
    ("firstname", 50),
    ("lastname", 50),
    ("telephone1", 50),
    ("mobilephone", 50),
    ("fax", 50),
    ("address1_line1", 250),
    ("address1_city", 80),
    ("address1_stateorprovince", 50),
    ("address1_postalcode", 20),
    ("address1_country", 80),
    ("jobtitle", 100),
];

/// The single-valued navigation property linking a contact to its account.
pub const PARENT_ACCOUNT: &str = "parentcustomerid_account";
const PARENT_ACCOUNT_BIND: &str = "parentcustomerid_account@odata.bind";

/// One contact row.
#[derive(Clone, Debug)]
pub struct Contact {
    /// Column → value; an empty column is absent.
    pub columns: BTreeMap<String, String>,
    pub parent_account: Option<String>,
    pub version: u64,
    pub created_on: OffsetDateTime,
    pub modified_on: OffsetDateTime,
    /// 0 active, 1 inactive (a merge deactivates the subordinate row).
    pub state_code: u8,
    pub merged: bool,
    /// The row a merge kept, on the subordinate row.
    pub master_id: Option<String>,
}

/// What an update changes on one contact, checked and ready to apply.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    columns: Vec<(String, Option<String>)>,
    parent_account: Option<Option<String>>,
}

/// A row as it was, for a change set's rollback.
pub struct RowSnapshot {
    id: String,
    contact: Option<Contact>,
    writes: u64,
}

/// The environment's rows.
#[derive(Default)]
pub struct OrgData {
    contacts: BTreeMap<String, Contact>,
    accounts: BTreeMap<String, String>,
    last_version: u64,
    clock_offset: Duration,
    writes_per_row: HashMap<String, u64>,
}

impl OrgData {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.clock_offset
    }

    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }

    pub fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
    }

    pub fn create_account(&mut self, name: &str) -> String {
        let id = new_guid();
        self.accounts.insert(id.clone(), name.to_string());
        id
    }

    /// Creates a contact from an update body (columns and binds); answers its id.
    pub fn create_contact(&mut self, body: &Map<String, Value>) -> Result<String, Refusal> {
        let id = new_guid();
        self.insert(&id, body)?;
        Ok(id)
    }

    /// Creates the row `id` from `body`, as an upsert does for a row that is not there.
    pub fn insert(&mut self, id: &str, body: &Map<String, Value>) -> Result<(), Refusal> {
        let changes = self.check(body)?;
        let now = self.now();
        let version = self.next_version();
        self.contacts.insert(
            id.to_string(),
            Contact {
                columns: BTreeMap::new(),
                parent_account: None,
                version,
                created_on: now,
                modified_on: now,
                state_code: 0,
                merged: false,
                master_id: None,
            },
        );
        self.apply(id, changes);
        Ok(())
    }

    pub fn contact(&self, id: &str) -> Option<&Contact> {
        self.contacts.get(&id.to_ascii_lowercase())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.contact(id).is_some()
    }

    /// Deletes a contact; false when there was none.
    pub fn delete_contact(&mut self, id: &str) -> bool {
        self.contacts.remove(&id.to_ascii_lowercase()).is_some()
    }

    /// Every contact, by id (Dataverse returns rows in primary key order when none is asked).
    pub fn contacts(&self) -> impl Iterator<Item = (&String, &Contact)> {
        self.contacts.iter()
    }

    /// Checks an update body against the contact columns and the accounts, without writing.
    pub fn check(&self, body: &Map<String, Value>) -> Result<Changes, Refusal> {
        let mut changes = Changes::default();
        for (name, value) in body {
            if name == PARENT_ACCOUNT_BIND || name == PARENT_ACCOUNT {
                changes.parent_account = Some(self.bound_account(name, value)?);
                continue;
            }
            let Some((column, max_len)) = CONTACT_COLUMNS.iter().find(|(c, _)| c == name) else {
                return Err(Refusal::new(
                    400,
                    codes::UNKNOWN_PROPERTY,
                    format!(
                        "The property '{name}' does not exist on type 'Microsoft.Dynamics.CRM.contact'. Make sure to only use property names that are defined by the type."
                    ),
                ));
            };
            let value = match value {
                Value::Null => None,
                Value::String(text) => Some(text.clone()),
                other => {
                    return Err(Refusal::new(
                        400,
                        codes::BAD_PAYLOAD,
                        format!(
                            "Error identified in Payload provided by the user for Entity :'contacts', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: Cannot convert the literal '{other}' to the expected type 'Edm.String'."
                        ),
                    ));
                }
            };
            if let Some(text) = &value
                && text.chars().count() > *max_len
            {
                return Err(Refusal::new(
                    400,
                    codes::TOO_LONG,
                    format!(
                        "A validation error occurred.  The length of the '{column}' attribute of the 'contact' entity exceeded the maximum allowed length of '{max_len}'."
                    ),
                ));
            }
            // Dataverse stores an empty string as no value.
            changes
                .columns
                .push((column.to_string(), value.filter(|text| !text.is_empty())));
        }
        Ok(changes)
    }

    /// The account a bind names (`/accounts(id)`, `accounts(id)` or an absolute URL ending so),
    /// or `None` for a null that removes the link.
    fn bound_account(&self, name: &str, value: &Value) -> Result<Option<String>, Refusal> {
        let bind = match value {
            Value::Null => return Ok(None),
            Value::String(bind) if name == PARENT_ACCOUNT_BIND => bind,
            _ => {
                return Err(Refusal::new(
                    400,
                    codes::BAD_PAYLOAD,
                    format!(
                        "The value of '{name}' must be null or a URL of an account: '{value}'."
                    ),
                ));
            }
        };
        let id = bind
            .rsplit_once("accounts(")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .filter(|id| is_guid(id))
            .ok_or_else(|| {
                Refusal::new(
                    400,
                    codes::BAD_PAYLOAD,
                    format!("An undeclared property '{bind}' which only has property annotations in the payload but no property value was found in the payload."),
                )
            })?
            .to_ascii_lowercase();
        if !self.accounts.contains_key(&id) {
            return Err(Refusal::does_not_exist("account", &id));
        }
        Ok(Some(id))
    }

    /// Applies checked changes to the existing contact `id`: its version and modifiedon move.
    pub fn apply(&mut self, id: &str, changes: Changes) {
        let now = self.now();
        let version = self.next_version();
        let id = id.to_ascii_lowercase();
        let contact = self.contacts.get_mut(&id).expect("a checked contact");
        for (column, value) in changes.columns {
            match value {
                Some(value) => contact.columns.insert(column, value),
                None => contact.columns.remove(&column),
            };
        }
        if let Some(account) = changes.parent_account {
            contact.parent_account = account;
        }
        contact.version = version;
        contact.modified_on = now;
    }

    /// A person's edit in the app: applied like an API write (which [`count_write`] counts).
    ///
    /// [`count_write`]: Self::count_write
    pub fn edit_as_person(&mut self, id: &str, body: &Map<String, Value>) -> Result<(), Refusal> {
        let id = id.to_ascii_lowercase();
        if !self.contacts.contains_key(&id) {
            return Err(Refusal::does_not_exist("contact", &id));
        }
        let changes = self.check(body)?;
        self.apply(&id, changes);
        Ok(())
    }

    /// Merges `subordinate` into `master` as the Merge action does: the master keeps its
    /// values (and its version moves), the subordinate is deactivated with `merged` set and
    /// `masterid` naming the master. Neither row is deleted.
    pub fn merge(&mut self, master: &str, subordinate: &str) -> Result<(), String> {
        let (master, subordinate) = (
            master.to_ascii_lowercase(),
            subordinate.to_ascii_lowercase(),
        );
        if master == subordinate {
            return Err("a row cannot be merged into itself".into());
        }
        for id in [&master, &subordinate] {
            match self.contacts.get(id) {
                Some(contact) if contact.state_code == 0 => {}
                _ => return Err(format!("contact {id} is not an active row")),
            }
        }
        let now = self.now();
        for id in [&master, &subordinate] {
            let version = self.next_version();
            let contact = self.contacts.get_mut(id).expect("checked");
            contact.version = version;
            contact.modified_on = now;
        }
        let loser = self.contacts.get_mut(&subordinate).expect("checked");
        loser.state_code = 1;
        loser.merged = true;
        loser.master_id = Some(master);
        Ok(())
    }

    /// Counts an API write that landed on row `id`.
    pub fn count_write(&mut self, id: &str) {
        *self
            .writes_per_row
            .entry(id.to_ascii_lowercase())
            .or_default() += 1;
    }

    /// Row `id` as it is now, to [`restore`](Self::restore) when a change set fails.
    pub fn snapshot(&self, id: &str) -> RowSnapshot {
        let id = id.to_ascii_lowercase();
        RowSnapshot {
            contact: self.contacts.get(&id).cloned(),
            writes: self.writes_to(&id),
            id,
        }
    }

    /// Puts a row back as it was at `snapshot` (removing it if it did not exist).
    pub fn restore(&mut self, snapshot: RowSnapshot) {
        match snapshot.contact {
            Some(contact) => self.contacts.insert(snapshot.id.clone(), contact),
            None => self.contacts.remove(&snapshot.id),
        };
        self.writes_per_row.insert(snapshot.id, snapshot.writes);
    }

    /// API writes applied to row `id`.
    pub fn writes_to(&self, id: &str) -> u64 {
        self.writes_per_row
            .get(&id.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

impl Contact {
    /// The ETag Dataverse shows for the row's version.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    /// The row as the Web API shows it: `@odata.etag`, `contactid`, the `select`ed columns
    /// (every column when `None`; an empty one as `null`), `_parentcustomerid_value`, and the
    /// system columns.
    pub fn representation(&self, id: &str, select: Option<&[String]>) -> Map<String, Value> {
        let wanted = |name: &str| select.is_none_or(|names| names.iter().any(|n| n == name));
        let mut row = Map::new();
        row.insert("@odata.etag".into(), Value::String(self.etag()));
        for (column, _) in CONTACT_COLUMNS {
            if wanted(column) {
                let value = self.columns.get(*column).cloned();
                row.insert(column.to_string(), value.map_or(Value::Null, Value::String));
            }
        }
        let optional = |value: &Option<String>| value.clone().map_or(Value::Null, Value::String);
        let system = [
            ("_parentcustomerid_value", optional(&self.parent_account)),
            ("createdon", Value::String(stamp(self.created_on))),
            ("modifiedon", Value::String(stamp(self.modified_on))),
            ("versionnumber", json!(self.version)),
            ("statecode", json!(self.state_code)),
            ("merged", json!(self.merged)),
            ("_masterid_value", optional(&self.master_id)),
        ];
        for (name, value) in system {
            if wanted(name) {
                row.insert(name.into(), value);
            }
        }
        row.insert("contactid".into(), Value::String(id.to_string()));
        row
    }
}

/// Whether `name` is a column `$select` may name.
pub fn is_selectable(name: &str) -> bool {
    CONTACT_COLUMNS.iter().any(|(column, _)| *column == name)
        || matches!(
            name,
            "contactid"
                | "_parentcustomerid_value"
                | "createdon"
                | "modifiedon"
                | "versionnumber"
                | "statecode"
                | "merged"
                | "_masterid_value"
        )
}

/// Dataverse writes datetimes in UTC to the second: `2024-05-01T12:00:00Z`.
fn stamp(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .expect("zero is a valid nanosecond")
        .format(&Rfc3339)
        .expect("UTC datetimes format")
}

/// A new row id: a random GUID in Dataverse's lower-case form.
pub fn new_guid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether `text` is a GUID (`8-4-4-4-12` hex digits), as row ids in URLs must be.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn lengths_are_checked_per_column_and_empty_is_no_value() {
        let mut org = OrgData::default();
        let id = org
            .create_contact(&body(json!({"firstname": "Ann", "telephone1": ""})))
            .unwrap();
        assert!(!org.contact(&id).unwrap().columns.contains_key("telephone1"));
        let refusal = org
            .check(&body(json!({"address1_postalcode": "x".repeat(21)})))
            .unwrap_err();
        assert_eq!(refusal.code, codes::TOO_LONG);
        assert!(refusal.message.contains("'address1_postalcode'"));
        assert!(
            org.check(&body(json!({"firstname": "é".repeat(50)})))
                .is_ok()
        );
        let unknown = org.check(&body(json!({"nickname": "A"}))).unwrap_err();
        assert_eq!(unknown.code, codes::UNKNOWN_PROPERTY);
    }

    #[test]
    fn binds_name_existing_accounts_and_null_unlinks() {
        let mut org = OrgData::default();
        let account = org.create_account("Contoso");
        let id = org
            .create_contact(&body(
                json!({ "parentcustomerid_account@odata.bind": format!("/accounts({account})") }),
            ))
            .unwrap();
        assert_eq!(
            org.contact(&id).unwrap().parent_account.as_deref(),
            Some(account.as_str())
        );
        let missing = org
            .check(&body(json!({
                "parentcustomerid_account@odata.bind": format!("/accounts({})", new_guid())
            })))
            .unwrap_err();
        assert_eq!(
            (missing.status, missing.code.as_str()),
            (404, codes::DOES_NOT_EXIST)
        );
        let unlink = org
            .check(&body(json!({"parentcustomerid_account@odata.bind": null})))
            .unwrap();
        org.apply(&id, unlink);
        assert_eq!(org.contact(&id).unwrap().parent_account, None);
    }

    #[test]
    fn every_write_moves_the_version_and_a_merge_deactivates_the_subordinate() {
        let mut org = OrgData::default();
        let kept = org.create_contact(&body(json!({"lastname": "A"}))).unwrap();
        let merged = org.create_contact(&body(json!({"lastname": "B"}))).unwrap();
        let before = org.contact(&kept).unwrap().etag();
        org.merge(&kept, &merged).unwrap();
        assert_ne!(org.contact(&kept).unwrap().etag(), before);
        let loser = org.contact(&merged).unwrap();
        assert_eq!((loser.state_code, loser.merged), (1, true));
        assert_eq!(loser.master_id.as_deref(), Some(kept.as_str()));
        assert!(org.merge(&kept, &merged).is_err());
        assert!(is_guid(&kept) && !is_guid("contact-1"));
    }
}
