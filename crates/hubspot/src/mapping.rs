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
}
