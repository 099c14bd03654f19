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

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

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
