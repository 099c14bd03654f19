use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ContactField, UnifiedContact};

/// An edit of one contact, field by field.
///
/// A field maps to `Some(value)` (set it), `None` (clear it in the CRM) or is absent (leave
/// the CRM's value alone). Serialises as a JSON object of field name to value or `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactPatch {
    changes: BTreeMap<ContactField, Option<String>>,
}

impl ContactPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `field` to `value`.
    pub fn set(&mut self, field: ContactField, value: impl Into<String>) -> &mut Self {
        self.changes.insert(field, Some(value.into()));
        self
    }

    /// Clears `field` in the CRM.
    pub fn clear(&mut self, field: ContactField) -> &mut Self {
        self.changes.insert(field, None);
        self
    }

    /// Sets (`Some`) or clears (`None`) `field`.
    pub fn put(&mut self, field: ContactField, value: Option<String>) -> &mut Self {
        self.changes.insert(field, value);
        self
    }

    /// What the patch does to `field`: `None` when the field is absent, `Some(None)` when it
    /// clears it, `Some(Some(v))` when it sets it.
    pub fn change(&self, field: ContactField) -> Option<Option<&str>> {
        self.changes.get(&field).map(|value| value.as_deref())
    }

    /// Removes `field` from the patch and returns what it did to it.
    pub fn take(&mut self, field: ContactField) -> Option<Option<String>> {
        self.changes.remove(&field)
    }

    /// The changes, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (ContactField, Option<&str>)> {
        self.changes
            .iter()
            .map(|(field, value)| (*field, value.as_deref()))
    }

    /// The fields this patch touches.
    pub fn fields(&self) -> impl Iterator<Item = ContactField> + '_ {
        self.changes.keys().copied()
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many fields the edit changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Folds a later patch into this one: field by field, the later value wins.
    pub fn merge(&mut self, later: &ContactPatch) {
        for (field, value) in &later.changes {
            self.changes.insert(*field, value.clone());
        }
    }

    /// Writes the patch's values into a contact.
    pub fn apply_to(&self, contact: &mut UnifiedContact) {
        for (field, value) in &self.changes {
            contact.set_field(*field, value.clone());
        }
    }

    /// Takes out every change the CRM already holds: a field whose `base` value (the CRM's
    /// last confirmed one) is the same as ours by the CRM's own rules (`same`, e.g.
    /// [`crate::SourceAdapter::same_value`]). A field with no base is kept: nothing says
    /// the CRM has it. Answers the base values of the fields taken out, which are what the
    /// CRM holds for them.
    pub fn take_unchanged(
        &mut self,
        base: &BTreeMap<ContactField, Option<String>>,
        same: impl Fn(ContactField, Option<&str>, Option<&str>) -> bool,
    ) -> BTreeMap<ContactField, Option<String>> {
        let unchanged: BTreeMap<ContactField, Option<String>> = self
            .changes
            .iter()
            .filter_map(|(field, ours)| {
                let crm = base.get(field)?;
                same(*field, crm.as_deref(), ours.as_deref()).then(|| (*field, crm.clone()))
            })
            .collect();
        self.changes
            .retain(|field, _| !unchanged.contains_key(field));
        unchanged
    }
}

impl FromIterator<(ContactField, Option<String>)> for ContactPatch {
    fn from_iter<I: IntoIterator<Item = (ContactField, Option<String>)>>(iter: I) -> Self {
        ContactPatch {
            changes: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_values_win_field_by_field() {
        let mut earlier = ContactPatch::new();
        earlier
            .set(ContactField::Email, "a@example.com")
            .set(ContactField::Phone, "1");
        let mut later = ContactPatch::new();
        later
            .set(ContactField::Email, "b@example.com")
            .clear(ContactField::City);
        earlier.merge(&later);
        assert_eq!(
            earlier.change(ContactField::Email),
            Some(Some("b@example.com"))
        );
        assert_eq!(earlier.change(ContactField::Phone), Some(Some("1")));
        assert_eq!(earlier.change(ContactField::City), Some(None));
        assert_eq!(earlier.change(ContactField::Zip), None);
    }

    #[test]
    fn serialises_clears_as_null_and_leaves_absent_fields_out() {
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::FirstName, "Ann")
            .clear(ContactField::Phone);
        let json = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"first_name": "Ann", "phone": null})
        );
        let back: ContactPatch = serde_json::from_value(json).unwrap();
        assert_eq!(back, patch);
    }

    #[test]
    fn unchanged_fields_are_taken_out_by_the_crms_rules_and_unknown_ones_kept() {
        let base: BTreeMap<ContactField, Option<String>> = [
            (ContactField::Email, Some("ann@example.com".to_string())),
            (ContactField::FirstName, Some("Ann".to_string())),
            (ContactField::Phone, None),
        ]
        .into();
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::Email, "Ann@Example.com")
            .set(ContactField::FirstName, "Anna")
            .clear(ContactField::Phone)
            .set(ContactField::City, "Lisbon");
        let case_blind_email =
            |field: ContactField, crm: Option<&str>, ours: Option<&str>| match field {
                ContactField::Email => crm.map(str::to_lowercase) == ours.map(str::to_lowercase),
                _ => crm == ours,
            };
        let unchanged = patch.take_unchanged(&base, case_blind_email);
        assert_eq!(
            unchanged,
            [
                (ContactField::Email, Some("ann@example.com".to_string())),
                (ContactField::Phone, None),
            ]
            .into()
        );
        let left: Vec<ContactField> = patch.fields().collect();
        assert_eq!(left, [ContactField::FirstName, ContactField::City]);
    }

    #[test]
    fn apply_sets_and_clears() {
        let mut contact = UnifiedContact::new("c1", "hubspot", "1");
        contact.phone = Some("555".into());
        let mut patch = ContactPatch::new();
        patch
            .set(ContactField::Position, "CTO")
            .clear(ContactField::Phone);
        patch.apply_to(&mut contact);
        assert_eq!(contact.position.as_deref(), Some("CTO"));
        assert_eq!(contact.phone, None);
    }
}
