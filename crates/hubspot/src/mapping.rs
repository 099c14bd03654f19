//! HubSpot's contact properties as a field table, and the conversions between unified
//! values and HubSpot property maps.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use unisync_core::{ContactField, ContactPatch, FieldMapping, FieldRule};

/// HubSpot's longest single-line text value.
const MAX_TEXT_LEN: usize = 65_536;

/// The default table: unified field to HubSpot contact property. `unified_customer_id` has
/// no property: it is pushed as a company association.
pub fn default_mapping() -> FieldMapping {
    let rules = [
        (ContactField::Email, "email"),
        (ContactField::FirstName, "firstname"),
        (ContactField::LastName, "lastname"),
        (ContactField::Phone, "phone"),
        (ContactField::MobilePhone, "mobilephone"),
        (ContactField::Fax, "fax"),
        (ContactField::Address, "address"),
        (ContactField::City, "city"),
        (ContactField::State, "state"),
        (ContactField::Zip, "zip"),
        (ContactField::Country, "country"),
        (ContactField::Position, "jobtitle"),
    ];
    FieldMapping::new(
        rules
            .into_iter()
            .map(|(field, property)| FieldRule::new(field, property).max_len(MAX_TEXT_LEN)),
    )
}

/// The `properties` object of a write: every mapped field of the patch, a clear sent as
/// `""` (HubSpot's way to empty a property). Fields without a rule are left out.
pub fn properties_of(mapping: &FieldMapping, patch: &ContactPatch) -> Map<String, Value> {
    patch
        .iter()
        .flat_map(|(field, value)| {
            mapping.write_targets(field).map(move |property| {
                (
                    property.to_string(),
                    Value::String(value.unwrap_or_default().to_string()),
                )
            })
        })
        .collect()
}

/// The unified values of the mapped properties HubSpot returned; `""` and `null` are `None`.
pub fn values_of(
    mapping: &FieldMapping,
    properties: &Map<String, Value>,
) -> BTreeMap<ContactField, Option<String>> {
    properties
        .iter()
        .filter_map(|(property, value)| {
            let field = mapping.unified_field(property)?;
            let value = value.as_str().filter(|text| !text.is_empty());
            Some((field, value.map(str::to_string)))
        })
        .collect()
}

/// The value HubSpot stores when `value` is written to `property`, or `None` for no value:
/// the `email` property is trimmed and lower-cased; every other (text) property keeps its
/// value as sent, spaces included (HubSpot's documented whitespace rule covers non-text
/// properties only, and refuses such values rather than trimming them); an empty value
/// clears, like `null`.
pub fn stored_value(property: Option<&str>, value: Option<&str>) -> Option<String> {
    let value = match property {
        Some("email") => value?.trim().to_lowercase(),
        _ => value?.to_string(),
    };
    Some(value).filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn clears_are_empty_strings_and_unmapped_fields_stay_out() {
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::Position, "CTO")
            .clear(ContactField::Phone)
            .set(ContactField::UnifiedCustomerId, "c1");
        let properties = properties_of(&default_mapping(), &patch);
        assert_eq!(
            Value::Object(properties),
            json!({"jobtitle": "CTO", "phone": ""})
        );
    }

    #[test]
    fn returned_values_map_back_to_unified_fields() {
        let returned = json!({"email": "ann@example.com", "phone": "", "city": null,
                              "hs_object_id": "1"});
        let values = values_of(&default_mapping(), returned.as_object().unwrap());
        assert_eq!(
            values,
            BTreeMap::from([
                (ContactField::Email, Some("ann@example.com".to_string())),
                (ContactField::Phone, None),
                (ContactField::City, None),
            ])
        );
    }

    #[test]
    fn stored_values_follow_hubspots_rules() {
        let stored = |property, value| stored_value(Some(property), value);
        assert_eq!(
            stored("email", Some(" Ann.Lee@Example.COM ")).as_deref(),
            Some("ann.lee@example.com")
        );
        assert_eq!(stored("email", Some("  ")), None, "a blank email clears");
        assert_eq!(stored("firstname", Some(" Ann ")).as_deref(), Some(" Ann "));
        assert_eq!(stored("firstname", Some("ANN")).as_deref(), Some("ANN"));
        assert_eq!(stored("phone", Some("")), None);
        assert_eq!(stored("phone", None), None);
        assert_eq!(stored_value(None, Some("x")).as_deref(), Some("x"));
    }
}
