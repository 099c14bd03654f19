use std::collections::BTreeMap;

use crate::{ContactField, ContactPatch, FieldViolation};

/// How one unified field is stored in a CRM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRule {
    /// The unified field.
    pub unified: ContactField,
    /// The CRM's field or property name (`firstname`, `MailingPostalCode`, ...).
    pub crm_field: String,
    /// The CRM's length limit, in characters.
    pub max_len: Option<usize>,
    /// False when the CRM refuses an empty value (Salesforce's LastName).
    pub clearable: bool,
}

impl FieldRule {
    /// `unified` stored in the CRM's `crm_field`, without a limit, clearable.
    pub fn new(unified: ContactField, crm_field: &str) -> Self {
        FieldRule {
            unified,
            crm_field: crm_field.to_string(),
            max_len: None,
            clearable: true,
        }
    }

    /// The rule with the CRM's length limit, in characters.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// The rule for a field the CRM refuses to leave empty.
    pub fn required(mut self) -> Self {
        self.clearable = false;
        self
    }
}

/// A CRM's field table: which CRM field each unified field lands in, and its limits.
///
/// Fields without a rule are not pushed by field (the customer relation, for one, is pushed
/// as a link). Operators extend or override the table from config with
/// [`FieldMapping::with_overrides`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMapping {
    rules: BTreeMap<ContactField, FieldRule>,
    /// Further CRM fields a unified field is also written to (never read back).
    extra_targets: BTreeMap<ContactField, Vec<String>>,
}

impl FieldMapping {
    /// A table of `rules`, one per unified field (a later rule for the same field wins).
    pub fn new(rules: impl IntoIterator<Item = FieldRule>) -> Self {
        FieldMapping {
            rules: rules.into_iter().map(|rule| (rule.unified, rule)).collect(),
            extra_targets: BTreeMap::new(),
        }
    }

    /// The table with some unified fields sent to other CRM fields, e.g. from a connection's
    /// `[connections.NAME.fields]` config table (`position = "hs_job_title"`). A renamed field
    /// keeps its limits. Unknown unified field names are an error naming the key.
    pub fn with_overrides(mut self, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        for (unified_name, crm_field) in overrides {
            let unified = ContactField::from_name(unified_name)
                .ok_or_else(|| format!("unknown unified field `{unified_name}`"))?;
            if crm_field.trim().is_empty() {
                return Err(format!(
                    "field `{unified_name}` maps to an empty CRM field name"
                ));
            }
            self.rules
                .entry(unified)
                .and_modify(|rule| rule.crm_field = crm_field.clone())
                .or_insert_with(|| FieldRule::new(unified, crm_field));
        }
        Ok(self)
    }

    /// The table with some unified fields also written to a further CRM field, e.g. from a
    /// connection's `extra_fields` config table (`position = "persona_title__c"`), for CRMs
    /// whose workflows read a custom field. The value is the one sent to the field's main CRM
    /// field; extras are never read back. Only a field the table maps can have extras.
    pub fn with_extra_fields(mut self, extras: &BTreeMap<String, String>) -> Result<Self, String> {
        for (unified_name, crm_field) in extras {
            let unified = ContactField::from_name(unified_name)
                .ok_or_else(|| format!("unknown unified field `{unified_name}`"))?;
            let Some(rule) = self.rules.get(&unified) else {
                return Err(format!("`{unified_name}` has no CRM field to copy"));
            };
            if crm_field.trim().is_empty() || *crm_field == rule.crm_field {
                return Err(format!(
                    "field `{unified_name}` needs an extra CRM field other than {}",
                    rule.crm_field
                ));
            }
            self.extra_targets
                .entry(unified)
                .or_default()
                .push(crm_field.clone());
        }
        Ok(self)
    }

    /// Every CRM field a change of `field` is written to: its main field, then any extras.
    pub fn write_targets(&self, field: ContactField) -> impl Iterator<Item = &str> {
        let extras = self.extra_targets.get(&field).into_iter().flatten();
        self.crm_field(field)
            .into_iter()
            .chain(extras.map(String::as_str))
    }

    /// Every extra CRM field of the table.
    pub fn extra_fields(&self) -> impl Iterator<Item = &str> {
        self.extra_targets.values().flatten().map(String::as_str)
    }

    /// The rule of `field`, if the table has one.
    pub fn rule(&self, field: ContactField) -> Option<&FieldRule> {
        self.rules.get(&field)
    }

    /// The CRM field `field` is stored in, if the table has a rule for it.
    pub fn crm_field(&self, field: ContactField) -> Option<&str> {
        self.rule(field).map(|rule| rule.crm_field.as_str())
    }

    /// The unified field stored in CRM field `crm_field`.
    pub fn unified_field(&self, crm_field: &str) -> Option<ContactField> {
        self.rules
            .values()
            .find(|rule| rule.crm_field == crm_field)
            .map(|rule| rule.unified)
    }

    /// Every rule, in unified field order.
    pub fn rules(&self) -> impl Iterator<Item = &FieldRule> {
        self.rules.values()
    }

    /// The CRM field names of every mapped field, e.g. to ask a CRM to return them.
    pub fn crm_fields(&self) -> Vec<&str> {
        self.rules
            .values()
            .map(|rule| rule.crm_field.as_str())
            .collect()
    }

    /// The CRM's limits applied to a patch: values over a length limit, and clears of fields
    /// the CRM cannot leave empty.
    pub fn validate(&self, patch: &ContactPatch) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        for (field, value) in patch.iter() {
            let Some(rule) = self.rule(field) else {
                continue;
            };
            match value {
                None if !rule.clearable => violations.push(FieldViolation::new(
                    field.name(),
                    "required_by_crm",
                    format!(
                        "`{field}` cannot be cleared: {} is required",
                        rule.crm_field
                    ),
                )),
                Some(value) => {
                    let length = value.chars().count();
                    if let Some(max_len) = rule.max_len
                        && length > max_len
                    {
                        violations.push(FieldViolation::new(
                            field.name(),
                            "too_long",
                            format!(
                                "`{field}` is {length} characters; {} allows at most {max_len}",
                                rule.crm_field
                            ),
                        ));
                    }
                }
                None => {}
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> FieldMapping {
        FieldMapping::new([
            FieldRule::new(ContactField::FirstName, "FirstName").max_len(5),
            FieldRule::new(ContactField::LastName, "LastName").required(),
        ])
    }

    #[test]
    fn checks_length_and_required_fields() {
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::FirstName, "Alexandra")
            .clear(ContactField::LastName);
        let codes: Vec<_> = table()
            .validate(&patch)
            .into_iter()
            .map(|v| (v.field, v.code))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("first_name".to_string(), "too_long".to_string()),
                ("last_name".to_string(), "required_by_crm".to_string())
            ]
        );
    }

    #[test]
    fn counts_characters_not_bytes() {
        let mut patch = ContactPatch::new();
        patch.set(ContactField::FirstName, "Zoë");
        assert!(table().validate(&patch).is_empty());
    }

    #[test]
    fn extra_fields_are_written_after_the_main_one() {
        let extras = BTreeMap::from([("first_name".to_string(), "Nickname__c".to_string())]);
        let table = table().with_extra_fields(&extras).unwrap();
        let targets: Vec<&str> = table.write_targets(ContactField::FirstName).collect();
        assert_eq!(targets, vec!["FirstName", "Nickname__c"]);
        assert_eq!(table.write_targets(ContactField::Phone).count(), 0);
        assert_eq!(
            table.unified_field("Nickname__c"),
            None,
            "extras are not read back"
        );
        let unmapped = BTreeMap::from([("phone".to_string(), "Phone2".to_string())]);
        assert!(table.clone().with_extra_fields(&unmapped).is_err());
        let same = BTreeMap::from([("first_name".to_string(), "FirstName".to_string())]);
        assert!(table.with_extra_fields(&same).is_err());
    }

    #[test]
    fn overrides_rename_fields_and_keep_limits() {
        let overrides = BTreeMap::from([("first_name".to_string(), "Given__c".to_string())]);
        let table = table().with_overrides(&overrides).unwrap();
        assert_eq!(table.crm_field(ContactField::FirstName), Some("Given__c"));
        assert_eq!(
            table.rule(ContactField::FirstName).unwrap().max_len,
            Some(5)
        );
        let bad = BTreeMap::from([("firstname".to_string(), "x".to_string())]);
        assert!(
            table
                .with_overrides(&bad)
                .unwrap_err()
                .contains("firstname")
        );
    }
}
