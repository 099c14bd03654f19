use serde::{Deserialize, Serialize};

/// A writable field of the unified contact: the fields of the update endpoint's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactField {
    /// `email`
    Email,
    /// `first_name`
    FirstName,
    /// `last_name`
    LastName,
    /// `phone`
    Phone,
    /// `mobile_phone`
    MobilePhone,
    /// `fax`
    Fax,
    /// `address` (street)
    Address,
    /// `city`
    City,
    /// `country`
    Country,
    /// `state`
    State,
    /// `zip` (postal code)
    Zip,
    /// `position` (job title)
    Position,
    /// `unified_customer_id`: the company or account the contact belongs to, pushed as a link.
    UnifiedCustomerId,
}

impl ContactField {
    /// Every writable field, in the order of the update endpoint's reference page.
    pub const ALL: [ContactField; 13] = [
        ContactField::Email,
        ContactField::FirstName,
        ContactField::LastName,
        ContactField::Phone,
        ContactField::MobilePhone,
        ContactField::Fax,
        ContactField::Address,
        ContactField::City,
        ContactField::Country,
        ContactField::State,
        ContactField::Zip,
        ContactField::Position,
        ContactField::UnifiedCustomerId,
    ];

    /// The field's name in the unified API (`first_name`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ContactField::Email => "email",
            ContactField::FirstName => "first_name",
            ContactField::LastName => "last_name",
            ContactField::Phone => "phone",
            ContactField::MobilePhone => "mobile_phone",
            ContactField::Fax => "fax",
            ContactField::Address => "address",
            ContactField::City => "city",
            ContactField::Country => "country",
            ContactField::State => "state",
            ContactField::Zip => "zip",
            ContactField::Position => "position",
            ContactField::UnifiedCustomerId => "unified_customer_id",
        }
    }

    /// The field named `name` in the unified API, if it is a writable one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.name() == name)
    }

    /// Whether every update body must carry this field with a non-empty value.
    pub fn is_required(self) -> bool {
        matches!(self, ContactField::Email | ContactField::FirstName)
    }
}

impl std::fmt::Display for ContactField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The unified contact, exactly the fields of the update endpoint's response `data`.
///
/// Optional values serialise as `null`, so every field is always present in a response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnifiedContact {
    /// The unified contact's id.
    pub id: String,
    /// The connection the contact came from.
    pub source_system: String,
    /// An image of the source system, for display.
    #[serde(default)]
    pub source_system_img_url: Option<String>,
    /// The contact's record id in its CRM.
    pub source_id: String,
    /// The external system provider's id, kept as given.
    #[serde(default)]
    pub external_system_provider_id: Option<String>,
    /// The external system configuration's id, kept as given.
    #[serde(default)]
    pub external_system_config_id: Option<String>,
    /// Further data of the external system, kept as given.
    #[serde(default, with = "free_form")]
    pub external_system_data: serde_json::Map<String, serde_json::Value>,
    /// The supporting data definition's id, kept as given.
    #[serde(default)]
    pub supporting_data_definition_id: Option<String>,
    /// The email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The first name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// The last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// The mobile phone number.
    #[serde(default)]
    pub mobile_phone: Option<String>,
    /// The fax number.
    #[serde(default)]
    pub fax: Option<String>,
    /// The street address.
    #[serde(default)]
    pub address: Option<String>,
    /// The city.
    #[serde(default)]
    pub city: Option<String>,
    /// The country.
    #[serde(default)]
    pub country: Option<String>,
    /// The state or province.
    #[serde(default)]
    pub state: Option<String>,
    /// The postal code.
    #[serde(default)]
    pub zip: Option<String>,
    /// The job title.
    #[serde(default)]
    pub position: Option<String>,
    /// Whether this is the customer's primary contact.
    #[serde(default)]
    pub is_primary: bool,
    /// The unified customer (company, account) the contact belongs to.
    #[serde(default)]
    pub unified_customer_id: Option<String>,
    /// That customer's record id in the CRM.
    #[serde(default)]
    pub source_system_customer_id: Option<String>,
    /// Whether the contact was deleted here.
    #[serde(default)]
    pub local_was_deleted: bool,
    /// Whether an accepted edit has not reached the CRM yet (or is held as a conflict).
    #[serde(default)]
    pub local_was_updated: bool,
    /// When the CRM created the record.
    #[serde(default)]
    pub source_data_created_at: Option<String>,
    /// False once the CRM record is gone.
    #[serde(default = "active_by_default")]
    pub is_active: bool,
}

/// `external_system_data` as it is in JSON; in a binary encoding (the store's records), as
/// JSON text: its values are free-form JSON, which only a self-describing format can carry.
mod free_form {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Value};

    pub fn serialize<S: Serializer>(map: &Map<String, Value>, to: S) -> Result<S::Ok, S::Error> {
        if to.is_human_readable() {
            map.serialize(to)
        } else {
            serde_json::to_string(map)
                .map_err(S::Error::custom)?
                .serialize(to)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Map<String, Value>, D::Error> {
        if from.is_human_readable() {
            Map::deserialize(from)
        } else {
            let text = String::deserialize(from)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

fn active_by_default() -> bool {
    true
}

/// The struct field holding a writable field, borrowed as the bracket says (`[&]`, `[&mut]`).
macro_rules! field_slot {
    ([$($borrow:tt)+] $contact:ident, $field:expr) => {
        match $field {
            ContactField::Email => $($borrow)+ $contact.email,
            ContactField::FirstName => $($borrow)+ $contact.first_name,
            ContactField::LastName => $($borrow)+ $contact.last_name,
            ContactField::Phone => $($borrow)+ $contact.phone,
            ContactField::MobilePhone => $($borrow)+ $contact.mobile_phone,
            ContactField::Fax => $($borrow)+ $contact.fax,
            ContactField::Address => $($borrow)+ $contact.address,
            ContactField::City => $($borrow)+ $contact.city,
            ContactField::Country => $($borrow)+ $contact.country,
            ContactField::State => $($borrow)+ $contact.state,
            ContactField::Zip => $($borrow)+ $contact.zip,
            ContactField::Position => $($borrow)+ $contact.position,
            ContactField::UnifiedCustomerId => $($borrow)+ $contact.unified_customer_id,
        }
    };
}

impl UnifiedContact {
    /// A contact with only its identity set: the starting point of a registration.
    pub fn new(
        id: impl Into<String>,
        source_system: impl Into<String>,
        source_id: impl Into<String>,
    ) -> Self {
        UnifiedContact {
            id: id.into(),
            source_system: source_system.into(),
            source_system_img_url: None,
            source_id: source_id.into(),
            external_system_provider_id: None,
            external_system_config_id: None,
            external_system_data: serde_json::Map::new(),
            supporting_data_definition_id: None,
            email: None,
            first_name: None,
            last_name: None,
            phone: None,
            mobile_phone: None,
            fax: None,
            address: None,
            city: None,
            country: None,
            state: None,
            zip: None,
            position: None,
            is_primary: false,
            unified_customer_id: None,
            source_system_customer_id: None,
            local_was_deleted: false,
            local_was_updated: false,
            source_data_created_at: None,
            is_active: true,
        }
    }

    /// The current value of a writable field.
    pub fn field(&self, field: ContactField) -> Option<&str> {
        self.slot(field).as_deref()
    }

    /// Sets (`Some`) or clears (`None`) a writable field.
    pub fn set_field(&mut self, field: ContactField, value: Option<String>) {
        *self.slot_mut(field) = value;
    }

    fn slot(&self, field: ContactField) -> &Option<String> {
        field_slot!([&] self, field)
    }

    fn slot_mut(&mut self, field: ContactField) -> &mut Option<String> {
        field_slot!([&mut] self, field)
    }
}

/// The fields of [`UnifiedContact`] a client may send back in an update body but cannot change.
pub(crate) const READ_ONLY_FIELDS: [&str; 14] = [
    "id",
    "source_system",
    "source_system_img_url",
    "source_id",
    "external_system_provider_id",
    "external_system_config_id",
    "external_system_data",
    "supporting_data_definition_id",
    "is_primary",
    "source_system_customer_id",
    "local_was_deleted",
    "local_was_updated",
    "source_data_created_at",
    "is_active",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_every_field_of_the_reference_response() {
        let contact = UnifiedContact::new("contact_1", "hubspot", "hs_1");
        let value = serde_json::to_value(&contact).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for expected in [
            "id",
            "source_system",
            "source_system_img_url",
            "source_id",
            "external_system_provider_id",
            "external_system_config_id",
            "external_system_data",
            "supporting_data_definition_id",
            "email",
            "first_name",
            "last_name",
            "phone",
            "mobile_phone",
            "fax",
            "address",
            "city",
            "country",
            "state",
            "zip",
            "position",
            "is_primary",
            "unified_customer_id",
            "source_system_customer_id",
            "local_was_deleted",
            "local_was_updated",
            "source_data_created_at",
            "is_active",
        ] {
            assert!(keys.contains(&expected), "missing {expected}");
        }
        assert_eq!(keys.len(), 27);
    }

    #[test]
    fn field_names_round_trip() {
        for field in ContactField::ALL {
            assert_eq!(ContactField::from_name(field.name()), Some(field));
        }
        assert_eq!(ContactField::from_name("firstname"), None);
    }
}
