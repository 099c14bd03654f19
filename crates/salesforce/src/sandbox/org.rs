//! The fake org's data: Contacts and Accounts, the Contact field rules, and the updates and
//! queries Salesforce would answer.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::email::stored_email;
use super::ids::{case_safe, resolve};
use super::soql::Query;

/// One error as Salesforce writes it (`errorCode`; collection results rename it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SfError {
    pub message: String,
    #[serde(rename = "errorCode")]
    pub code: String,
    pub fields: Vec<String>,
}

impl SfError {
    pub fn new(code: &str, message: impl Into<String>, fields: &[&str]) -> Self {
        SfError {
            message: message.into(),
            code: code.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The shape inside a collection result: `statusCode` instead of `errorCode`.
    pub fn as_record_error(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// A refused request: the HTTP status and Salesforce's error array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub errors: Vec<SfError>,
}

impl Refusal {
    pub fn one(status: u16, error: SfError) -> Self {
        Refusal {
            status,
            errors: vec![error],
        }
    }
}

/// What a Contact field holds, which decides how a write to it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKind {
    Text,
    /// Text that cannot be empty (LastName).
    RequiredText,
    Email,
    /// An Account id (AccountId).
    AccountReference,
}

/// The writable standard Contact fields: name, label (used in messages), kind, max length.
const CONTACT_FIELDS: &[(&str, &str, FieldKind, usize)] = &[
    ("Email", "Email", FieldKind::Email, 80),
    ("FirstName", "First Name", FieldKind::Text, 40),
    ("LastName", "Last Name", FieldKind::RequiredText, 80),
    ("Phone", "Business Phone", FieldKind::Text, 40),
    ("MobilePhone", "Mobile Phone", FieldKind::Text, 40),
    ("Fax", "Business Fax", FieldKind::Text, 40),
    ("MailingStreet", "Mailing Street", FieldKind::Text, 255),
    ("MailingCity", "Mailing City", FieldKind::Text, 40),
    (
        "MailingState",
        "Mailing State/Province",
        FieldKind::Text,
        80,
    ),
    (
        "MailingPostalCode",
        "Mailing Zip/Postal Code",
        FieldKind::Text,
        20,
    ),
    ("MailingCountry", "Mailing Country", FieldKind::Text, 80),
    ("Title", "Title", FieldKind::Text, 128),
    ("AccountId", "Account ID", FieldKind::AccountReference, 18),
];

/// Custom fields (`Something__c`) exist in this org as 255-character text.
const CUSTOM_FIELD_MAX_LEN: usize = 255;

/// Fields Salesforce maintains itself.
pub const READ_ONLY_FIELDS: &[&str] = &[
    "Id",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "IsDeleted",
    "MasterRecordId",
];

fn writable_field(name: &str) -> Option<(&'static str, FieldKind, usize)> {
    if let Some((_, label, kind, max_len)) = CONTACT_FIELDS.iter().find(|(n, ..)| *n == name) {
        return Some((label, *kind, *max_len));
    }
    (name.ends_with("__c") && name.len() > 3).then_some((
        "Custom Field",
        FieldKind::Text,
        CUSTOM_FIELD_MAX_LEN,
    ))
}

/// Whether a query may name `field`.
pub fn is_contact_field(field: &str) -> bool {
    READ_ONLY_FIELDS.contains(&field) || writable_field(field).is_some()
}

/// A stored Contact. Empty values are not kept: Salesforce stores an empty string as null.
#[derive(Clone, Debug)]
pub struct Contact {
    values: BTreeMap<String, String>,
    created: OffsetDateTime,
    last_modified: OffsetDateTime,
    deleted: bool,
    /// The record this one was merged into, when a merge deleted it.
    master_record_id: Option<String>,
}

impl Contact {
    /// The value of `field` as the API shows it (`null` when empty).
    fn get(&self, id: &str, field: &str) -> Value {
        match field {
            "Id" => Value::String(id.to_string()),
            "CreatedDate" => Value::String(datetime(self.created)),
            "LastModifiedDate" | "SystemModstamp" => Value::String(datetime(self.last_modified)),
            "IsDeleted" => Value::Bool(self.deleted),
            "MasterRecordId" => self
                .master_record_id
                .clone()
                .map_or(Value::Null, Value::String),
            _ => self
                .values
                .get(field)
                .map_or(Value::Null, |v| Value::String(v.clone())),
        }
    }
}

/// Checked changes to one record: field to new value (`None` clears).
pub type Changes = Vec<(String, Option<String>)>;

/// The org's records and clock. Records are keyed by their 18-character ids; every method
/// taking an id takes either form.
#[derive(Debug, Default)]
pub struct OrgData {
    contacts: BTreeMap<String, Contact>,
    accounts: BTreeMap<String, String>,
    next_serial: u64,
    last_stamp: Option<OffsetDateTime>,
    /// How far the org's clock runs ahead of the machine's ([`OrgData::advance_clock`]).
    clock_offset: time::Duration,
}

impl OrgData {
    /// Creates a Contact; refused like an update would be (LastName required).
    pub fn create_contact(&mut self, fields: &Map<String, Value>) -> Result<String, Refusal> {
        let mut changes = self.check_fields(fields)?;
        if !changes.iter().any(|(f, v)| f == "LastName" && v.is_some()) {
            return Err(Refusal::one(400, required_last_name()));
        }
        let id = self.new_id("003");
        let stamp = self.tick();
        let values = changes
            .drain(..)
            .filter_map(|(field, value)| value.map(|v| (field, v)))
            .collect();
        self.contacts.insert(
            id.clone(),
            Contact {
                values,
                created: stamp,
                last_modified: stamp,
                deleted: false,
                master_record_id: None,
            },
        );
        Ok(id)
    }

    pub fn create_account(&mut self, name: &str) -> String {
        let id = self.new_id("001");
        self.accounts.insert(id.clone(), name.to_string());
        id
    }

    /// Moves a Contact to the recycle bin: reads leave it out, writes get ENTITY_IS_DELETED.
    pub fn delete_contact(&mut self, id: &str) -> bool {
        match self.contacts.get_mut(&key(id)) {
            Some(contact) if !contact.deleted => {
                contact.deleted = true;
                true
            }
            _ => false,
        }
    }

    /// Every field of a live Contact, as the API would show it.
    pub fn contact(&self, id: &str) -> Option<BTreeMap<String, Value>> {
        let id = key(id);
        let id = id.as_str();
        let contact = self.contacts.get(id).filter(|c| !c.deleted)?;
        let mut fields: BTreeMap<String, Value> = READ_ONLY_FIELDS
            .iter()
            .map(|field| (field.to_string(), contact.get(id, field)))
            .collect();
        for (name, ..) in CONTACT_FIELDS {
            fields.insert(name.to_string(), contact.get(id, name));
        }
        for (name, value) in &contact.values {
            fields.insert(name.clone(), Value::String(value.clone()));
        }
        Some(fields)
    }

    /// Checks an update of record `id` without applying it.
    pub fn check_update(&self, id: &str, fields: &Map<String, Value>) -> Result<Changes, Refusal> {
        self.live(id)?;
        let changes = self.check_fields(fields)?;
        if changes.iter().any(|(f, v)| f == "LastName" && v.is_none()) {
            return Err(Refusal::one(400, required_last_name()));
        }
        Ok(changes)
    }

    /// Refuses, as `If-Unmodified-Since` does, a write to record `id` when it was modified
    /// after `since` (Unix seconds). The header has one-second precision, so the record's
    /// LastModifiedDate is compared by its second: a change within the second of `since`
    /// passes, as it does in Salesforce.
    pub fn check_unmodified_since(&self, id: &str, since: i64) -> Result<(), Refusal> {
        if self.live(id)?.last_modified.unix_timestamp() > since {
            return Err(Refusal::one(
                412,
                SfError::new(
                    "PRECONDITION_FAILED",
                    "The requested resource has been modified since the If-Unmodified-Since date.",
                    &[],
                ),
            ));
        }
        Ok(())
    }

    /// The live Contact `id`, or Salesforce's refusal of a request naming it: NOT_FOUND for no
    /// such record, ENTITY_IS_DELETED for one in the recycle bin (deleted or merged away).
    fn live(&self, id: &str) -> Result<&Contact, Refusal> {
        match self.contacts.get(&key(id)) {
            None => Err(Refusal::one(
                404,
                SfError::new("NOT_FOUND", "The requested resource does not exist", &[]),
            )),
            Some(contact) if contact.deleted => Err(Refusal::one(
                404,
                SfError::new("ENTITY_IS_DELETED", "entity is deleted", &[]),
            )),
            Some(contact) => Ok(contact),
        }
    }

    /// Merges Contact `loser` into `master`, as Salesforce's merge does: the master keeps its
    /// own field values and is modified (LastModifiedDate moves); the loser goes to the
    /// recycle bin with `MasterRecordId` naming the master, so queries leave it out, `queryAll`
    /// shows it, and writes to it answer ENTITY_IS_DELETED.
    pub fn merge_contacts(&mut self, master: &str, loser: &str) -> Result<(), String> {
        let (master, loser) = (key(master), key(loser));
        if master == loser {
            return Err(format!("a record cannot be merged into itself: {master}"));
        }
        for id in [&master, &loser] {
            self.live(id)
                .map_err(|refusal| format!("{id}: {}", refusal.errors[0].code))?;
        }
        let stamp = self.tick();
        let kept = self.contacts.get_mut(&master).expect("checked live");
        kept.last_modified = stamp;
        let merged = self.contacts.get_mut(&loser).expect("checked live");
        merged.deleted = true;
        merged.master_record_id = Some(master);
        merged.last_modified = stamp;
        Ok(())
    }

    /// Moves the org's clock `by` ahead: later writes are stamped that much later, as if the
    /// time had passed.
    pub fn advance_clock(&mut self, by: std::time::Duration) {
        self.clock_offset += by;
    }

    /// Applies checked changes; LastModifiedDate moves even when no value does.
    pub fn apply_update(&mut self, id: &str, changes: Changes) {
        let stamp = self.tick();
        let contact = self
            .contacts
            .get_mut(&key(id))
            .expect("checked by check_update");
        for (field, value) in changes {
            match value {
                Some(value) => contact.values.insert(field, value),
                None => contact.values.remove(&field),
            };
        }
        contact.last_modified = stamp;
    }

    /// The value of `field` of record `id`, for an sObject GET.
    pub fn read(&self, id: &str, fields: &[String]) -> Result<Map<String, Value>, Refusal> {
        let contact = self.live(id)?;
        Ok(render(&key(id), contact, fields))
    }

    /// Runs a Contact query. Deleted records are left out, unless `all_rows` (`queryAll`)
    /// asks for the recycle bin too.
    pub fn query(&self, query: &Query, all_rows: bool) -> Vec<Value> {
        self.contacts
            .iter()
            .filter(|(id, contact)| (all_rows || !contact.deleted) && query.matches_id(id))
            .take(query.limit.unwrap_or(usize::MAX))
            .map(|(id, contact)| Value::Object(render(id, contact, &query.fields)))
            .collect()
    }

    /// Checks each field of a write: known, writable, a string or null, within its limits.
    fn check_fields(&self, fields: &Map<String, Value>) -> Result<Changes, Refusal> {
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        for (name, value) in fields {
            if READ_ONLY_FIELDS.contains(&name.as_str()) {
                errors.push(SfError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!("Unable to create/update fields: {name}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."),
                    &[name],
                ));
                continue;
            }
            let Some((label, kind, max_len)) = writable_field(name) else {
                errors.push(SfError::new(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type Contact"),
                    &[],
                ));
                continue;
            };
            // Salesforce trims text and stores an empty string as null. What it trims is what
            // Java's String.trim (and Apex's) does: spaces and ASCII control characters, not
            // other Unicode spaces.
            let value = match value {
                Value::Null => None,
                Value::String(text) => Some(text.trim_matches(|c: char| c <= ' ').to_string())
                    .filter(|t| !t.is_empty()),
                other => {
                    errors.push(SfError::new(
                        "JSON_PARSER_ERROR",
                        format!("Cannot deserialize instance of string from {other} value"),
                        &[],
                    ));
                    continue;
                }
            };
            if let Some(text) = &value
                && text.chars().count() > max_len
            {
                errors.push(SfError::new(
                    "STRING_TOO_LONG",
                    format!("{label}: data value too large: {text} (max length={max_len})"),
                    &[name],
                ));
                continue;
            }
            let value = match (kind, value) {
                (FieldKind::Email, Some(text)) => match stored_email(&text) {
                    Some(stored) => Some(stored),
                    None => {
                        errors.push(SfError::new(
                            "INVALID_EMAIL_ADDRESS",
                            format!("{label}: invalid email address: {text}"),
                            &[name],
                        ));
                        continue;
                    }
                },
                // Stored, and answered, in the 18-character form, whichever form was sent.
                (FieldKind::AccountReference, Some(text)) => {
                    match resolve(&text).filter(|id| self.accounts.contains_key(id)) {
                        Some(id) => Some(id),
                        None => {
                            errors.push(SfError::new(
                                "INVALID_CROSS_REFERENCE_KEY",
                                "invalid cross reference id",
                                &[name],
                            ));
                            continue;
                        }
                    }
                }
                (_, value) => value,
            };
            changes.push((name.clone(), value));
        }
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(Refusal {
                status: 400,
                errors,
            })
        }
    }

    /// A new id with the object's key prefix (`003` Contact, `001` Account, `750` Bulk API
    /// job), in its 18-character form.
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_serial += 1;
        case_safe(&format!("{prefix}SB{:010}", self.next_serial))
    }

    /// The org's time now, in Salesforce's datetime format.
    pub fn timestamp(&mut self) -> String {
        datetime(self.tick())
    }

    /// Whether Contact `id` (either form) exists, live or in the recycle bin.
    pub fn knows(&self, id: &str) -> bool {
        self.contacts.contains_key(&key(id))
    }

    /// The org's clock. Strictly increasing (by a millisecond if need be), so LastModifiedDate
    /// moves on every write.
    fn tick(&mut self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc() + self.clock_offset;
        let now = now
            .replace_millisecond(now.millisecond())
            .expect("a valid millisecond");
        let stamp = match self.last_stamp {
            Some(last) if now <= last => last + time::Duration::milliseconds(1),
            _ => now,
        };
        self.last_stamp = Some(stamp);
        stamp
    }
}

/// A datetime in Salesforce's format (`2024-05-01T12:00:00.000+0000`, UTC).
fn datetime(stamp: OffsetDateTime) -> String {
    stamp
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
        ))
        .expect("a fixed format")
}

fn required_last_name() -> SfError {
    SfError::new(
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [LastName]",
        &["LastName"],
    )
}

/// The key of the record `id` names: its 18-character form, or `id` itself when it is no id
/// (which then names no record).
fn key(id: &str) -> String {
    resolve(id).unwrap_or_else(|| id.to_string())
}

/// A record as the API shows it: `attributes`, then the fields asked for.
fn render(id: &str, contact: &Contact, fields: &[String]) -> Map<String, Value> {
    let mut record = Map::new();
    record.insert(
        "attributes".into(),
        json!({"type": "Contact", "url": format!("/services/data/{}/sobjects/Contact/{id}", super::LATEST_VERSION)}),
    );
    for field in fields {
        record.insert(field.clone(), contact.get(id, field));
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn updates_check_limits_and_required_fields() {
        let mut org = OrgData::default();
        let id = org
            .create_contact(&fields(json!({"LastName": "Lee", "Phone": "1"})))
            .unwrap();
        let refusal = org
            .check_update(
                &id,
                &fields(json!({"FirstName": "x".repeat(41), "Email": "nope"})),
            )
            .unwrap_err();
        let mut codes: Vec<&str> = refusal.errors.iter().map(|e| e.code.as_str()).collect();
        codes.sort_unstable();
        assert_eq!(codes, vec!["INVALID_EMAIL_ADDRESS", "STRING_TOO_LONG"]);
        let refusal = org
            .check_update(&id, &fields(json!({"LastName": null})))
            .unwrap_err();
        assert_eq!(refusal.errors[0].code, "REQUIRED_FIELD_MISSING");
        let changes = org
            .check_update(&id, &fields(json!({"Phone": null, "Title": "  CTO "})))
            .unwrap();
        org.apply_update(&id, changes);
        let stored = org.contact(&id).unwrap();
        assert_eq!(stored["Phone"], Value::Null);
        assert_eq!(stored["Title"], "CTO");
        assert!(org.delete_contact(&id));
        assert_eq!(
            org.check_update(&id, &Map::new()).unwrap_err().errors[0].code,
            "ENTITY_IS_DELETED"
        );
    }

    #[test]
    fn every_write_moves_last_modified() {
        let mut org = OrgData::default();
        let id = org
            .create_contact(&fields(json!({"LastName": "Lee"})))
            .unwrap();
        let mut stamps = vec![org.contact(&id).unwrap()["LastModifiedDate"].clone()];
        for _ in 0..3 {
            org.apply_update(&id, Vec::new());
            stamps.push(org.contact(&id).unwrap()["LastModifiedDate"].clone());
        }
        let mut sorted = stamps.clone();
        sorted.sort_by_key(|s| s.as_str().unwrap().to_string());
        sorted.dedup();
        assert_eq!(sorted, stamps);
    }

    fn query_all(org: &OrgData, all_rows: bool) -> Vec<Value> {
        let query = super::super::soql::parse(
            "SELECT Id, LastName, IsDeleted, MasterRecordId FROM Contact",
        )
        .unwrap();
        org.query(&query, all_rows)
    }

    #[test]
    fn a_merge_keeps_the_master_and_leaves_the_loser_to_query_all() {
        let mut org = OrgData::default();
        let master = org
            .create_contact(&fields(json!({"LastName": "Lee", "Title": "CTO"})))
            .unwrap();
        let loser = org
            .create_contact(&fields(json!({"LastName": "Li", "Title": "CEO"})))
            .unwrap();
        let before = org.contact(&master).unwrap()["LastModifiedDate"].clone();
        org.merge_contacts(&master, &loser).unwrap();
        let kept = org.contact(&master).unwrap();
        assert_eq!(
            (&kept["LastName"], &kept["Title"]),
            (&json!("Lee"), &json!("CTO"))
        );
        assert_eq!(kept["MasterRecordId"], Value::Null);
        assert!(kept["LastModifiedDate"].as_str() > before.as_str());
        assert_eq!(org.contact(&loser), None);
        assert_eq!(
            org.check_update(&loser, &Map::new()).unwrap_err().errors[0].code,
            "ENTITY_IS_DELETED"
        );
        assert_eq!(query_all(&org, false).len(), 1);
        let all = query_all(&org, true);
        let merged = all
            .iter()
            .find(|record| record["Id"] == json!(loser))
            .unwrap();
        assert_eq!(merged["IsDeleted"], json!(true));
        assert_eq!(merged["MasterRecordId"], json!(master));
        // Salesforce refuses to merge a record into itself or to merge a deleted record.
        assert!(org.merge_contacts(&master, &master).is_err());
        assert!(org.merge_contacts(&master, &loser).is_err());
        assert!(org.merge_contacts(&loser, &master).is_err());
    }

    #[test]
    fn unmodified_since_compares_by_the_second() {
        let mut org = OrgData::default();
        let id = org
            .create_contact(&fields(json!({"LastName": "Lee"})))
            .unwrap();
        let modified = org.live(&id).unwrap().last_modified.unix_timestamp();
        assert!(org.check_unmodified_since(&id, modified).is_ok());
        let refusal = org.check_unmodified_since(&id, modified - 1).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.errors[0].code.as_str()),
            (412, "PRECONDITION_FAILED")
        );
        // A later edit, a second on, fails the precondition of a write read before it.
        org.advance_clock(std::time::Duration::from_secs(1));
        org.apply_update(&id, Vec::new());
        assert_eq!(
            org.check_unmodified_since(&id, modified)
                .unwrap_err()
                .status,
            412
        );
        // The record's existence is checked first.
        assert!(org.delete_contact(&id));
        assert_eq!(
            org.check_unmodified_since(&id, i64::MAX)
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn text_is_trimmed_of_spaces_and_control_characters_only() {
        let mut org = OrgData::default();
        let id = org
            .create_contact(&fields(json!({"LastName": "Lee"})))
            .unwrap();
        let changes = org
            .check_update(
                &id,
                &fields(
                    json!({"Title": "\t CTO\r\n", "MailingCity": "\u{a0}Porto", "Fax": " \t "}),
                ),
            )
            .unwrap();
        org.apply_update(&id, changes);
        let stored = org.contact(&id).unwrap();
        assert_eq!(stored["Title"], "CTO");
        assert_eq!(stored["MailingCity"], "\u{a0}Porto");
        assert_eq!(stored["Fax"], Value::Null);
    }
}
