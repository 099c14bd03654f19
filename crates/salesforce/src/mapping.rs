//! The unified contact in Salesforce's Contact fields, and the record shapes built from it.

use std::collections::BTreeMap;

use std::time::SystemTime;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use unisync_core::{ContactField, CustomerLink, FieldMapping, FieldRule, PushItem, SourceContact};

/// The Contact field holding the contact's account (the unified customer).
pub const ACCOUNT_ID: &str = "AccountId";

/// The standard Contact field of type email, which Salesforce stores in lower case.
const EMAIL: &str = "Email";

/// Read-only Contact fields every read asks for, beside the mapped ones.
const CREATED_DATE: &str = "CreatedDate";
const LAST_MODIFIED_DATE: &str = "LastModifiedDate";

/// Salesforce's Contact fields and their limits (Salesforce's Contact object reference).
pub fn default_mapping() -> FieldMapping {
    FieldMapping::new([
        FieldRule::new(ContactField::Email, "Email").max_len(80),
        FieldRule::new(ContactField::FirstName, "FirstName").max_len(40),
        FieldRule::new(ContactField::LastName, "LastName")
            .max_len(80)
            .required(),
        FieldRule::new(ContactField::Phone, "Phone").max_len(40),
        FieldRule::new(ContactField::MobilePhone, "MobilePhone").max_len(40),
        FieldRule::new(ContactField::Fax, "Fax").max_len(40),
        FieldRule::new(ContactField::Address, "MailingStreet").max_len(255),
        FieldRule::new(ContactField::City, "MailingCity").max_len(40),
        FieldRule::new(ContactField::State, "MailingState").max_len(80),
        FieldRule::new(ContactField::Zip, "MailingPostalCode").max_len(20),
        FieldRule::new(ContactField::Country, "MailingCountry").max_len(80),
        FieldRule::new(ContactField::Position, "Title").max_len(128),
    ])
}

/// Whether `name` can be a Salesforce field name (letters, digits, underscores, starting
/// with a letter). Field names go into SOQL text, so nothing else may pass.
pub fn is_field_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The Contact fields of `item`: mapped fields set or cleared (`null`), and `AccountId` when
/// the item links or unlinks the account, so both land in one record write.
pub fn record_fields(mapping: &FieldMapping, item: &PushItem) -> Map<String, Value> {
    let mut fields = Map::new();
    for (field, value) in item.patch.iter() {
        for crm_field in mapping.write_targets(field) {
            fields.insert(
                crm_field.to_string(),
                value.map_or(Value::Null, |v| Value::String(v.to_string())),
            );
        }
    }
    match &item.customer {
        CustomerLink::Unchanged => {}
        CustomerLink::Link { id, .. } => {
            fields.insert(ACCOUNT_ID.to_string(), Value::String(id.clone()));
        }
        CustomerLink::Unlink { .. } => {
            fields.insert(ACCOUNT_ID.to_string(), Value::Null);
        }
    }
    fields
}

/// The value Salesforce stores when `value` is written to the Contact field `crm_field`: what
/// two values must share for Salesforce to hold them as one.
///
/// - Text is trimmed at either end (Salesforce trims field values); only spaces and ASCII
///   control characters count, as Java's and Apex's `trim` does. Other Unicode spaces are kept:
///   taking a value for trimmed that Salesforce keeps would skip a write that changes it.
/// - An empty value is no value (Salesforce stores `""` as null).
/// - The standard `Email` field is stored in lower case; only ASCII letters are folded, the
///   only letters Salesforce takes in an address. Other fields keep their case.
pub fn stored_form(crm_field: &str, value: Option<&str>) -> Option<String> {
    let trimmed = value?.trim_matches(|c: char| c <= ' ');
    if trimmed.is_empty() {
        None
    } else if crm_field == EMAIL {
        Some(trimmed.to_ascii_lowercase())
    } else {
        Some(trimmed.to_string())
    }
}

/// The unified values `item` writes (its changes of mapped fields): what a confirmation
/// reports when the write landed but the stored values could not be read back.
pub fn sent_values(
    mapping: &FieldMapping,
    item: &PushItem,
) -> BTreeMap<ContactField, Option<String>> {
    item.patch
        .iter()
        .filter(|(field, _)| mapping.crm_field(*field).is_some())
        .map(|(field, value)| (field, value.map(str::to_string)))
        .collect()
}

/// The columns every Contact read asks for: `Id`, the mapped fields, `AccountId`,
/// `CreatedDate` and `LastModifiedDate`.
pub fn contact_columns(mapping: &FieldMapping) -> Vec<&str> {
    let mut columns = vec!["Id"];
    columns.extend(mapping.crm_fields());
    columns.extend([ACCOUNT_ID, CREATED_DATE, LAST_MODIFIED_DATE]);
    columns
}

/// `SELECT <contact_columns> FROM Contact`, followed by `condition` (a `WHERE` or `ORDER BY`
/// clause).
pub fn contact_query(mapping: &FieldMapping, condition: &str) -> String {
    format!(
        "SELECT {} FROM Contact {condition}",
        contact_columns(mapping).join(", ")
    )
}

/// A `WHERE Id IN (...)` clause for `ids`, which must be canonical ids (18 letters and
/// digits): only those are safe in SOQL text.
pub fn id_filter<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = ids.into_iter().map(|id| format!("'{id}'")).collect();
    format!("WHERE Id IN ({})", quoted.join(", "))
}

/// A Contact as a query returns it, in unified terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactRecord {
    pub id: String,
    /// Every mapped field; an empty Salesforce value is `None`.
    pub values: BTreeMap<ContactField, Option<String>>,
    pub account_id: Option<String>,
    pub created_date: Option<String>,
    pub last_modified_date: Option<String>,
}

impl ContactRecord {
    /// The record as a [`SourceContact`]. A query leaves deleted records out, so it is active.
    pub fn into_source_contact(self) -> SourceContact {
        SourceContact {
            source_id: self.id,
            values: self.values,
            customer_source_id: self.account_id,
            created_at: self.created_date,
            crm_version: self.last_modified_date,
            is_active: true,
        }
    }

    /// Reads a query record (`{"attributes": .., "Id": .., "Email": .., ...}`).
    pub fn from_query_record(mapping: &FieldMapping, record: &Map<String, Value>) -> Self {
        let text = |name: &str| {
            record
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        ContactRecord {
            id: text("Id").unwrap_or_default(),
            values: mapping
                .rules()
                .map(|rule| (rule.unified, text(&rule.crm_field)))
                .collect(),
            account_id: text(ACCOUNT_ID),
            created_date: text(CREATED_DATE).map(rfc3339),
            last_modified_date: text(LAST_MODIFIED_DATE).map(rfc3339),
        }
    }
}

/// The `If-Unmodified-Since` value for a record version (an RFC 3339 LastModifiedDate, as
/// [`ContactRecord`] gives it): an HTTP date, to the second. Salesforce keeps LastModifiedDate
/// to the second, so dropping the fraction loses nothing of a real org's stamp. `None` when
/// `version` is no RFC 3339 datetime.
pub fn http_date(version: &str) -> Option<String> {
    let at = OffsetDateTime::parse(version, &Rfc3339).ok()?;
    Some(httpdate::fmt_http_date(SystemTime::from(at)))
}

/// Salesforce writes datetimes in UTC as `2024-05-01T12:00:00.000+0000`; RFC 3339 wants the
/// offset as `Z` or `+00:00`.
fn rfc3339(stamp: String) -> String {
    match stamp.strip_suffix("+0000") {
        Some(utc) => format!("{utc}Z"),
        None => stamp,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use unisync_core::ContactPatch;

    use super::*;

    #[test]
    fn patch_sets_clears_and_links_in_one_record() {
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::Position, "CTO")
            .clear(ContactField::Phone);
        let item = PushItem {
            source_id: "003000000000001AAA".into(),
            patch,
            customer: CustomerLink::Link {
                id: "001000000000001AAA".into(),
                previous: None,
            },
        };
        assert_eq!(
            Value::Object(record_fields(&default_mapping(), &item)),
            json!({"Title": "CTO", "Phone": null, "AccountId": "001000000000001AAA"})
        );
        let unlink = PushItem {
            customer: CustomerLink::Unlink { previous: None },
            patch: ContactPatch::new(),
            ..item
        };
        assert_eq!(
            Value::Object(record_fields(&default_mapping(), &unlink)),
            json!({"AccountId": null})
        );
    }

    #[test]
    fn queries_name_every_mapped_field() {
        let soql = contact_query(&default_mapping(), &id_filter(["003A", "003B"]));
        assert!(soql.starts_with("SELECT Id, Email, FirstName, LastName,"));
        assert!(soql.ends_with(
            "AccountId, CreatedDate, LastModifiedDate FROM Contact WHERE Id IN ('003A', '003B')"
        ));
    }

    #[test]
    fn reads_records_with_empty_values_as_none() {
        let record = json!({"attributes": {"type": "Contact"}, "Id": "003X", "FirstName": "Ann",
                            "Phone": null, "MailingCity": "", "AccountId": "001Y",
                            "LastModifiedDate": "2024-01-01T00:00:00.000+0000"});
        let contact =
            ContactRecord::from_query_record(&default_mapping(), record.as_object().unwrap());
        assert_eq!(contact.id, "003X");
        assert_eq!(
            contact.values[&ContactField::FirstName].as_deref(),
            Some("Ann")
        );
        assert_eq!(contact.values[&ContactField::Phone], None);
        assert_eq!(contact.values[&ContactField::City], None);
        assert_eq!(contact.account_id.as_deref(), Some("001Y"));
        assert_eq!(contact.created_date, None);
        assert_eq!(
            contact.last_modified_date.as_deref(),
            Some("2024-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn stored_forms_follow_salesforces_storage() {
        for (field, value, stored) in [
            (
                "Email",
                Some("  Ann.Lee@Example.COM\t"),
                Some("ann.lee@example.com"),
            ),
            ("Email", Some("ann@example.com"), Some("ann@example.com")),
            // Only the standard Email field is lower-cased.
            ("Title", Some("CTO"), Some("CTO")),
            ("Email__c", Some("Ann@Example.com"), Some("Ann@Example.com")),
            ("FirstName", Some(" \r\nAnn Marie \n"), Some("Ann Marie")),
            ("FirstName", Some("Ann  Marie"), Some("Ann  Marie")),
            (
                "MailingStreet",
                Some("1 Main St\nFloor 2"),
                Some("1 Main St\nFloor 2"),
            ),
            // A space Salesforce may keep is kept.
            ("MailingCity", Some("\u{a0}Porto"), Some("\u{a0}Porto")),
            ("Phone", Some(""), None),
            ("Phone", Some(" \t "), None),
            ("Phone", None, None),
            (
                "Email",
                Some("J\u{d6}RG@example.com"),
                Some("j\u{d6}rg@example.com"),
            ),
        ] {
            assert_eq!(
                stored_form(field, value).as_deref(),
                stored,
                "{field}: {value:?}"
            );
        }
    }

    #[test]
    fn versions_become_http_dates_to_the_second() {
        assert_eq!(
            http_date("2024-05-01T12:00:00.750Z").as_deref(),
            Some("Wed, 01 May 2024 12:00:00 GMT")
        );
        assert_eq!(
            http_date("2024-05-01T14:00:01+02:00").as_deref(),
            Some("Wed, 01 May 2024 12:00:01 GMT")
        );
        assert_eq!(http_date("yesterday"), None);
    }

    #[test]
    fn field_names_are_checked_before_they_reach_soql() {
        assert!(is_field_name("Job_Title__c"));
        assert!(!is_field_name("Title, (SELECT"));
        assert!(!is_field_name("_x"));
    }
}
