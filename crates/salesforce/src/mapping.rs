//! The unified contact in Salesforce's Contact fields, and the record shapes built from it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use unisync_core::{ContactField, CustomerLink, FieldMapping, FieldRule, PushItem};

/// The Contact field holding the contact's account (the unified customer).
pub const ACCOUNT_ID: &str = "AccountId";

/// Read-only Contact fields every read asks for, beside the mapped ones.
const CREATED_DATE: &str = "CreatedDate";
const LAST_MODIFIED_DATE: &str = "LastModifiedDate";

/// Salesforce's Contact fields and their limits (crm-apis.md).
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
    fn field_names_are_checked_before_they_reach_soql() {
        assert!(is_field_name("Job_Title__c"));
        assert!(!is_field_name("Title, (SELECT"));
        assert!(!is_field_name("_x"));
    }
}
