//! The unified contact in Dataverse's contact columns, and the rows read back.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use unisync_core::{ContactField, CustomerLink, FieldMapping, FieldRule, PushItem, SourceContact};

/// The single-valued navigation property that links a contact to its account, written with
/// `@odata.bind` (`null` removes the link).
pub const PARENT_ACCOUNT_BIND: &str = "parentcustomerid_account@odata.bind";

/// The lookup's value as rows show it: the linked account's id.
const PARENT_ACCOUNT_VALUE: &str = "_parentcustomerid_value";

/// System columns every read asks for, beside the mapped ones.
const SYSTEM_COLUMNS: &[&str] = &[
    "contactid",
    PARENT_ACCOUNT_VALUE,
    "createdon",
    "statecode",
    "merged",
    "_masterid_value",
];

/// Dataverse's contact columns and their maximum lengths (Microsoft's contact entity reference). Dataverse requires
/// no column on update (`lastname` is required in the app's forms only).
pub fn default_mapping() -> FieldMapping {
    FieldMapping::new([
        FieldRule::new(ContactField::Email, "emailaddress1").max_len(100),
        FieldRule::new(ContactField::FirstName, "firstname").max_len(50),
        FieldRule::new(ContactField::LastName, "lastname").max_len(50),
        FieldRule::new(ContactField::Phone, "telephone1").max_len(50),
        FieldRule::new(ContactField::MobilePhone, "mobilephone").max_len(50),
        FieldRule::new(ContactField::Fax, "fax").max_len(50),
        FieldRule::new(ContactField::Address, "address1_line1").max_len(250),
        FieldRule::new(ContactField::City, "address1_city").max_len(80),
        FieldRule::new(ContactField::State, "address1_stateorprovince").max_len(50),
        FieldRule::new(ContactField::Zip, "address1_postalcode").max_len(20),
        FieldRule::new(ContactField::Country, "address1_country").max_len(80),
        FieldRule::new(ContactField::Position, "jobtitle").max_len(100),
    ])
}

/// Whether `name` can be a column's logical name (lower-case letters, digits, underscores,
/// starting with a letter). Names go into `$select`, so nothing else may pass.
pub fn is_column_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The canonical form of a row id: a GUID in lower case, without braces. An id Dataverse
/// could never have issued is refused.
pub fn canonical_id(id: &str) -> Result<String, String> {
    let bare = id.trim().trim_start_matches('{').trim_end_matches('}');
    let groups: Vec<&str> = bare.split('-').collect();
    let is_guid = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()));
    if is_guid {
        Ok(bare.to_ascii_lowercase())
    } else {
        Err(format!("`{id}` is not a Dataverse row id (a GUID)"))
    }
}

/// The update body of `item`: mapped columns set or cleared (`null`), and the account bind
/// when the item links (`/accounts(id)`) or unlinks (`null`), so that all land in one write.
pub fn record_body(mapping: &FieldMapping, item: &PushItem) -> Map<String, Value> {
    let mut body = Map::new();
    for (field, value) in item.patch.iter() {
        for column in mapping.write_targets(field) {
            body.insert(
                column.to_string(),
                value.map_or(Value::Null, |v| Value::String(v.to_string())),
            );
        }
    }
    match &item.customer {
        CustomerLink::Unchanged => {}
        CustomerLink::Link { id, .. } => {
            body.insert(
                PARENT_ACCOUNT_BIND.to_string(),
                Value::String(format!("/accounts({id})")),
            );
        }
        CustomerLink::Unlink { .. } => {
            body.insert(PARENT_ACCOUNT_BIND.to_string(), Value::Null);
        }
    }
    body
}

/// The `$select` of every read: the mapped columns and the system columns.
pub fn select(mapping: &FieldMapping) -> String {
    let mut columns: Vec<&str> = mapping.crm_fields();
    columns.extend(SYSTEM_COLUMNS);
    columns.join(",")
}

/// A contact row as the Web API answers it, in unified terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactRow {
    pub id: String,
    /// Every mapped column; an empty one is `None`.
    pub values: BTreeMap<ContactField, Option<String>>,
    pub account_id: Option<String>,
    pub created_on: Option<String>,
    /// `@odata.etag`: the row's version, for `If-Match`.
    pub etag: Option<String>,
    pub active: bool,
    /// The row a merge kept, when this one was merged into it.
    pub merged_into: Option<String>,
}

impl ContactRow {
    /// Reads a row (`{"@odata.etag": .., "contactid": .., "firstname": .., ...}`).
    pub fn from_json(mapping: &FieldMapping, row: &Map<String, Value>) -> Self {
        let text = |name: &str| {
            row.get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        let merged = row.get("merged").and_then(Value::as_bool) == Some(true);
        ContactRow {
            id: text("contactid").unwrap_or_default(),
            values: mapping
                .rules()
                .map(|rule| (rule.unified, text(&rule.crm_field)))
                .collect(),
            account_id: text(PARENT_ACCOUNT_VALUE),
            created_on: text("createdon"),
            etag: text("@odata.etag"),
            active: row.get("statecode").and_then(Value::as_u64).unwrap_or(0) == 0,
            merged_into: text("_masterid_value").filter(|_| merged),
        }
    }

    pub fn into_source_contact(self) -> SourceContact {
        SourceContact {
            source_id: self.id,
            values: self.values,
            customer_source_id: self.account_id,
            created_at: self.created_on,
            crm_version: self.etag,
            is_active: self.active,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use unisync_core::ContactPatch;

    use super::*;

    #[test]
    fn a_patch_sets_clears_and_binds_in_one_body() {
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::Position, "CTO")
            .clear(ContactField::Phone);
        let item = PushItem {
            source_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            patch,
            customer: CustomerLink::Link {
                id: "7d1a2b3c-0000-4000-8000-000000000001".into(),
                previous: None,
            },
        };
        assert_eq!(
            Value::Object(record_body(&default_mapping(), &item)),
            json!({"jobtitle": "CTO", "telephone1": null,
                   "parentcustomerid_account@odata.bind": "/accounts(7d1a2b3c-0000-4000-8000-000000000001)"})
        );
        let unlink = PushItem {
            customer: CustomerLink::Unlink { previous: None },
            patch: ContactPatch::new(),
            ..item
        };
        assert_eq!(
            Value::Object(record_body(&default_mapping(), &unlink)),
            json!({"parentcustomerid_account@odata.bind": null})
        );
    }

    #[test]
    fn rows_read_back_with_their_version_and_merge() {
        let row = json!({"@odata.etag": "W/\"42\"", "contactid": "0f8fad5b-d9cb-469f-a165-70867728950e",
                         "firstname": "Ann", "telephone1": null, "address1_city": "",
                         "_parentcustomerid_value": "7d1a2b3c-0000-4000-8000-000000000001",
                         "statecode": 1, "merged": true, "_masterid_value": "aa"});
        let contact = ContactRow::from_json(&default_mapping(), row.as_object().unwrap());
        assert_eq!(
            contact.values[&ContactField::FirstName].as_deref(),
            Some("Ann")
        );
        assert_eq!(contact.values[&ContactField::Phone], None);
        assert_eq!(contact.values[&ContactField::City], None);
        assert_eq!(contact.etag.as_deref(), Some("W/\"42\""));
        assert!(!contact.active);
        assert_eq!(contact.merged_into.as_deref(), Some("aa"));
        assert!(select(&default_mapping()).starts_with("emailaddress1,firstname,lastname,"));
    }

    #[test]
    fn ids_are_guids_in_lower_case() {
        assert_eq!(
            canonical_id("{0F8FAD5B-D9CB-469F-A165-70867728950E}").unwrap(),
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        assert!(canonical_id("0f8fad5b").is_err());
        assert!(canonical_id("0f8fad5b-d9cb-469f-a165-70867728950e)/x").is_err());
        assert!(is_column_name("new_jobtitle") && !is_column_name("jobtitle,fullname"));
    }
}
