//! Never silently overwrite what a person changed in the CRM: the conflict policies, and the
//! rule that finds a conflict, as plain functions.
//!
//! A field is in conflict when the CRM's current value differs from the base (the CRM's last
//! value unisync confirmed: someone changed it since) and also from ours (the change is not
//! the one we are about to write). Both comparisons use the CRM's own rules of sameness.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;
use unisync_core::{ContactField, ContactPatch};

/// What a connection does with a field a person changed in the CRM since unisync last
/// confirmed it (`on_conflict`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Write ours without reading first (only fields the CRM does not hold already are sent).
    #[default]
    Overwrite,
    /// Read before writing; the CRM's value wins a conflict and goes into the unified record.
    CrmWins,
    /// Read before writing; a conflict is held as a conflict letter for an operator, who
    /// writes ours (`dead-letters retry`) or takes the CRM's (`dead-letters drop`).
    Hold,
}

impl OnConflict {
    pub const NAMES: &str = "overwrite, crm_wins, hold";

    /// Whether the policy reads the CRM's current values before each write.
    pub fn reads_first(self) -> bool {
        self != OnConflict::Overwrite
    }

    pub fn name(self) -> &'static str {
        match self {
            OnConflict::Overwrite => "overwrite",
            OnConflict::CrmWins => "crm_wins",
            OnConflict::Hold => "hold",
        }
    }
}

impl FromStr for OnConflict {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "overwrite" => Ok(OnConflict::Overwrite),
            "crm_wins" => Ok(OnConflict::CrmWins),
            "hold" => Ok(OnConflict::Hold),
            other => Err(format!("`{other}` is none of {}", OnConflict::NAMES)),
        }
    }
}

/// One field's three values in a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldConflict {
    /// The CRM's value when unisync last confirmed it.
    pub base: Option<String>,
    /// The CRM's value now: a person's edit.
    pub crm: Option<String>,
    /// The value unisync was about to write.
    pub ours: Option<String>,
}

/// The fields of `patch` a person changed in the CRM since `base` to something other than
/// ours. A field with no base, or that the CRM's answer does not hold (`current`), is no
/// conflict: nothing says anyone changed it.
pub fn find_conflicts(
    patch: &ContactPatch,
    base: &BTreeMap<ContactField, Option<String>>,
    current: &BTreeMap<ContactField, Option<String>>,
    same: impl Fn(ContactField, Option<&str>, Option<&str>) -> bool,
) -> BTreeMap<ContactField, FieldConflict> {
    patch
        .iter()
        .filter_map(|(field, ours)| {
            let base = base.get(&field)?;
            let crm = current.get(&field)?;
            let changed_in_crm = !same(field, base.as_deref(), crm.as_deref());
            let differs_from_ours = !same(field, crm.as_deref(), ours);
            (changed_in_crm && differs_from_ours).then(|| {
                let conflict = FieldConflict {
                    base: base.clone(),
                    crm: crm.clone(),
                    ours: ours.map(str::to_string),
                };
                (field, conflict)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(ContactField, Option<&str>)]) -> BTreeMap<ContactField, Option<String>> {
        pairs
            .iter()
            .map(|(field, value)| (*field, value.map(str::to_string)))
            .collect()
    }

    fn exact(_: ContactField, a: Option<&str>, b: Option<&str>) -> bool {
        a == b
    }

    #[test]
    fn a_field_changed_in_the_crm_to_another_value_than_ours_is_a_conflict() {
        let patch: ContactPatch = values(&[
            (ContactField::FirstName, Some("Ours")),
            (ContactField::City, Some("Porto")),
            (ContactField::Phone, Some("2")),
            (ContactField::Zip, Some("1000")),
        ])
        .into_iter()
        .collect();
        let base = values(&[
            (ContactField::FirstName, Some("Ann")),
            (ContactField::City, Some("Lisbon")),
            (ContactField::Phone, Some("1")),
        ]);
        let current = values(&[
            // A person renamed her: conflict.
            (ContactField::FirstName, Some("Anne")),
            // A person made the same change as ours: no conflict.
            (ContactField::City, Some("Porto")),
            // Nobody touched it: ours goes through.
            (ContactField::Phone, Some("1")),
            (ContactField::Zip, Some("9999")),
        ]);
        let conflicts = find_conflicts(&patch, &base, &current, exact);
        assert_eq!(
            conflicts,
            [(
                ContactField::FirstName,
                FieldConflict {
                    base: Some("Ann".into()),
                    crm: Some("Anne".into()),
                    ours: Some("Ours".into()),
                }
            )]
            .into(),
            "zip has no base: nothing says a person changed it"
        );
    }

    #[test]
    fn a_person_clearing_a_field_is_a_conflict_with_a_value_of_ours() {
        let patch: ContactPatch = values(&[(ContactField::Phone, Some("2"))])
            .into_iter()
            .collect();
        let base = values(&[(ContactField::Phone, Some("1"))]);
        let current = values(&[(ContactField::Phone, None)]);
        assert_eq!(find_conflicts(&patch, &base, &current, exact).len(), 1);
    }

    #[test]
    fn policies_parse_by_name() {
        assert_eq!("crm_wins".parse::<OnConflict>(), Ok(OnConflict::CrmWins));
        assert_eq!("hold".parse::<OnConflict>(), Ok(OnConflict::Hold));
        assert!(
            "ours"
                .parse::<OnConflict>()
                .unwrap_err()
                .contains("crm_wins")
        );
        assert!(!OnConflict::default().reads_first());
    }
}
