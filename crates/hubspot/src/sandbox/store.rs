//! The fake HubSpot's records — contacts, companies and their associations — with HubSpot's
//! own validation and normalisation rules. No HTTP here: `routes` turns these answers into
//! HubSpot's response shapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

/// The most inputs one batch call takes.
pub(super) const BATCH_LIMIT: usize = 100;

/// Contact properties every portal has (HubSpot's defaults, trimmed to what unisync meets).
const WRITABLE_PROPERTIES: [&str; 15] = [
    "email",
    "firstname",
    "lastname",
    "phone",
    "mobilephone",
    "fax",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "jobtitle",
    "company",
    "website",
    "lifecyclestage",
];

/// Properties HubSpot maintains itself; writing them is a validation error.
const READ_ONLY_PROPERTIES: [&str; 5] = [
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    MERGED_IDS_PROPERTY,
    ADDITIONAL_EMAILS_PROPERTY,
];

/// The properties HubSpot calculates rather than stores.
const CALCULATED_PROPERTIES: [&str; 4] = [
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    MERGED_IDS_PROPERTY,
];

/// The ids of the contacts merged into a contact, `;`-separated.
const MERGED_IDS_PROPERTY: &str = "hs_merged_object_ids";
/// The emails a contact took over from contacts merged into it, `;`-separated.
const ADDITIONAL_EMAILS_PROPERTY: &str = "hs_additional_emails";

/// What a read returns when the caller names no properties.
const DEFAULT_RETURNED_PROPERTIES: [&str; 6] = [
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
];

/// One stored contact. Empty properties are not stored (`""` clears).
#[derive(Clone, Debug)]
struct Contact {
    properties: BTreeMap<String, String>,
    created_ms: i64,
    updated_ms: i64,
    /// The ids of the contacts merged into this one (`hs_merged_object_ids`).
    merged_ids: BTreeSet<u64>,
}

impl Contact {
    /// The value of property `name` of this contact, whose id is `id`: HubSpot's own
    /// calculated ones, or a stored one.
    fn value(&self, id: u64, name: &str) -> Option<String> {
        match name {
            "hs_object_id" => Some(id.to_string()),
            "createdate" => Some(iso_timestamp(self.created_ms)),
            "lastmodifieddate" => Some(iso_timestamp(self.updated_ms)),
            MERGED_IDS_PROPERTY if self.merged_ids.is_empty() => None,
            MERGED_IDS_PROPERTY => Some(
                self.merged_ids
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            _ => self.properties.get(name).cloned(),
        }
    }

    /// The contact's email, then the additional emails it took over in merges.
    fn emails(&self) -> impl Iterator<Item = &str> {
        let additional = self
            .properties
            .get(ADDITIONAL_EMAILS_PROPERTY)
            .into_iter()
            .flat_map(|emails| emails.split(';'));
        self.properties
            .get("email")
            .map(String::as_str)
            .into_iter()
            .chain(additional)
    }
}

/// A property value HubSpot refuses, as it appears inside a VALIDATION_ERROR message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct InvalidProperty {
    pub name: String,
    pub error: &'static str,
    pub message: String,
}

impl InvalidProperty {
    /// The detail in HubSpot's own key order (a JSON map would sort the keys).
    fn to_json(&self) -> String {
        let quoted = |text: &str| Value::String(text.to_string()).to_string();
        format!(
            r#"{{"isValid":false,"message":{message},"error":"{error}","name":{name},"localizedErrorMessage":{message}}}"#,
            message = quoted(&self.message),
            error = self.error,
            name = quoted(&self.name),
        )
    }
}

/// HubSpot's message for refused property values, embedding the details as JSON.
pub(super) fn invalid_properties_message(invalid: &[InvalidProperty]) -> String {
    let details: Vec<String> = invalid.iter().map(InvalidProperty::to_json).collect();
    format!("Property values were not valid: [{}]", details.join(","))
}

/// HubSpot's message when a write would give a contact the email another one has.
pub(super) fn conflict_message(existing_id: u64) -> String {
    format!("Contact already exists. Existing ID: {existing_id}")
}

/// Why a write did not land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum WriteError {
    NotFound,
    /// Another contact already has the email.
    Conflict {
        existing_id: u64,
    },
}

/// Why a whole batch was refused (400 VALIDATION_ERROR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BatchRefusal {
    TooMany(usize),
    DuplicateIds(Vec<String>),
    InvalidProperties(Vec<InvalidProperty>),
}

impl BatchRefusal {
    pub(super) fn message(&self) -> String {
        match self {
            BatchRefusal::TooMany(count) => format!(
                "Invalid input JSON: inputs has {count} elements; the limit is {BATCH_LIMIT}"
            ),
            BatchRefusal::DuplicateIds(ids) => format!(
                "Duplicate IDs found in batch input: [{}]. IDs must be unique",
                ids.join(", ")
            ),
            BatchRefusal::InvalidProperties(invalid) => invalid_properties_message(invalid),
        }
    }
}

/// One failed input group of a batch answer (`errors[]` of a 207).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BatchItemError {
    pub category: &'static str,
    pub message: String,
    pub ids: Vec<String>,
}

/// One input of a batch update: the contact id and its properties as sent.
pub(super) type BatchInput = (String, Map<String, Value>);

/// What a batch update did.
#[derive(Clone, Debug, Default)]
pub(super) struct BatchOutcome {
    pub results: Vec<Value>,
    pub errors: Vec<BatchItemError>,
}

/// All records of one fake portal.
#[derive(Debug)]
pub(super) struct Store {
    contacts: BTreeMap<u64, Contact>,
    /// Lower-cased email to the contact holding it, so that conflict checks stay cheap with
    /// tens of thousands of contacts.
    by_email: HashMap<String, u64>,
    /// Ids of contacts merged away, to the id of the contact they live on in.
    merged_into: HashMap<u64, u64>,
    companies: BTreeMap<u64, String>,
    /// Contact id to the ids of its companies.
    associations: BTreeMap<u64, BTreeSet<u64>>,
    custom_properties: BTreeSet<String>,
    next_id: u64,
    last_stamp_ms: i64,
}

impl Store {
    pub(super) fn new() -> Self {
        Store {
            contacts: BTreeMap::new(),
            by_email: HashMap::new(),
            merged_into: HashMap::new(),
            companies: BTreeMap::new(),
            associations: BTreeMap::new(),
            custom_properties: BTreeSet::new(),
            next_id: 51_001,
            last_stamp_ms: 0,
        }
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A strictly increasing millisecond timestamp: every write moves `updatedAt`, even two
    /// writes within the same millisecond.
    fn stamp(&mut self) -> i64 {
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        self.last_stamp_ms = now_ms.max(self.last_stamp_ms + 1);
        self.last_stamp_ms
    }

    pub(super) fn define_property(&mut self, name: &str) {
        self.custom_properties.insert(name.to_string());
    }

    fn is_writable(&self, name: &str) -> bool {
        WRITABLE_PROPERTIES.contains(&name) || self.custom_properties.contains(name)
    }

    /// The contact an id addresses now, following merges. `None` when it does not exist.
    fn resolve(&self, id: &str) -> Option<u64> {
        let id: u64 = id.parse().ok()?;
        let id = self.merged_into.get(&id).copied().unwrap_or(id);
        self.contacts.contains_key(&id).then_some(id)
    }

    /// The contact whose email is `email` (stored lower-cased).
    pub(super) fn find_by_email(&self, email: &str) -> Option<u64> {
        self.by_email.get(&email.trim().to_lowercase()).copied()
    }

    /// Removes a contact, and its emails (its own and those it took over in merges) from
    /// the index; answers what it held.
    fn remove_contact(&mut self, id: u64) -> Option<Contact> {
        let contact = self.contacts.remove(&id)?;
        for email in contact.emails() {
            if self.by_email.get(email) == Some(&id) {
                self.by_email.remove(email);
            }
        }
        Some(contact)
    }

    /// Checks and normalises one input's properties as HubSpot does: every value a string
    /// (numbers and booleans are taken as their text), known writable properties only, an
    /// email HubSpot's rules take (see `email`), stored lower-cased.
    pub(super) fn normalise(
        &self,
        properties: &Map<String, Value>,
    ) -> Result<BTreeMap<String, String>, Vec<InvalidProperty>> {
        let mut normalised = BTreeMap::new();
        let mut invalid = Vec::new();
        for (name, value) in properties {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Null => String::new(),
                _ => {
                    invalid.push(InvalidProperty {
                        name: name.clone(),
                        error: "INVALID_PROPERTY_VALUE",
                        message: format!("{value} is not a valid value for property {name}"),
                    });
                    continue;
                }
            };
            if READ_ONLY_PROPERTIES.contains(&name.as_str()) {
                invalid.push(InvalidProperty {
                    name: name.clone(),
                    error: "READ_ONLY_VALUE",
                    message: format!("{name} is a read only property; its value cannot be set."),
                });
            } else if !self.is_writable(name) {
                invalid.push(InvalidProperty {
                    name: name.clone(),
                    error: "PROPERTY_DOESNT_EXIST",
                    message: format!("Property \"{name}\" does not exist"),
                });
            } else if name == "email" {
                let email = text.trim().to_lowercase();
                if !email.is_empty() && !super::email::accepts(&email) {
                    invalid.push(InvalidProperty {
                        name: name.clone(),
                        error: "INVALID_EMAIL",
                        message: format!("Email address {text} is invalid"),
                    });
                } else {
                    normalised.insert(name.clone(), email);
                }
            } else {
                normalised.insert(name.clone(), text);
            }
        }
        if invalid.is_empty() {
            Ok(normalised)
        } else {
            Err(invalid)
        }
    }

    /// Creates a contact holding `properties` (taken as given, email lower-cased).
    pub(super) fn create_contact(&mut self, properties: &[(&str, &str)]) -> u64 {
        let id = self.allocate_id();
        let stamp = self.stamp();
        let properties = properties
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| {
                let value = if *name == "email" {
                    value.trim().to_lowercase()
                } else {
                    value.to_string()
                };
                (name.to_string(), value)
            })
            .collect::<BTreeMap<String, String>>();
        if let Some(email) = properties.get("email") {
            self.by_email.insert(email.clone(), id);
        }
        self.contacts.insert(
            id,
            Contact {
                properties,
                created_ms: stamp,
                updated_ms: stamp,
                merged_ids: BTreeSet::new(),
            },
        );
        id
    }

    /// Writes normalised properties to the contact `id` addresses; returns the contact's id
    /// and its answer object, echoing the written properties.
    pub(super) fn update(
        &mut self,
        id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Value, WriteError> {
        let id = self.resolve(id).ok_or(WriteError::NotFound)?;
        if let Some(email) = properties.get("email").filter(|email| !email.is_empty())
            && let Some(existing_id) = self.find_by_email(email).filter(|other| *other != id)
        {
            return Err(WriteError::Conflict { existing_id });
        }
        let stamp = self.stamp();
        if let Some(email) = properties.get("email") {
            let old = self.contacts[&id].properties.get("email").cloned();
            if let Some(old) = old.filter(|old| self.by_email.get(old) == Some(&id)) {
                self.by_email.remove(&old);
            }
            if !email.is_empty() {
                self.by_email.insert(email.clone(), id);
            }
        }
        let contact = self.contacts.get_mut(&id).expect("resolved above");
        for (name, value) in properties {
            if value.is_empty() {
                contact.properties.remove(name);
            } else {
                contact.properties.insert(name.clone(), value.clone());
            }
        }
        contact.updated_ms = stamp;
        let mut echoed: Vec<&str> = properties.keys().map(String::as_str).collect();
        echoed.extend(["createdate", "hs_object_id", "lastmodifieddate"]);
        Ok(self.object(id, &echoed, false))
    }

    /// Applies a batch the way HubSpot does: the batch is refused as a whole for a bad shape
    /// or any invalid value; otherwise each input lands or fails on its own.
    pub(super) fn batch_update(
        &mut self,
        inputs: &[BatchInput],
    ) -> Result<BatchOutcome, BatchRefusal> {
        if inputs.len() > BATCH_LIMIT {
            return Err(BatchRefusal::TooMany(inputs.len()));
        }
        let mut seen = BTreeSet::new();
        let duplicates: BTreeSet<&str> = inputs
            .iter()
            .filter(|(id, _)| !seen.insert(id.as_str()))
            .map(|(id, _)| id.as_str())
            .collect();
        if !duplicates.is_empty() {
            return Err(BatchRefusal::DuplicateIds(
                duplicates.into_iter().map(str::to_string).collect(),
            ));
        }
        let mut normalised = Vec::with_capacity(inputs.len());
        let mut invalid = Vec::new();
        for (id, properties) in inputs {
            match self.normalise(properties) {
                Ok(properties) => normalised.push((id, properties)),
                Err(mut refused) => invalid.append(&mut refused),
            }
        }
        if !invalid.is_empty() {
            return Err(BatchRefusal::InvalidProperties(invalid));
        }
        let mut outcome = BatchOutcome::default();
        let mut not_found = Vec::new();
        for (id, properties) in normalised {
            match self.update(id, &properties) {
                Ok(object) => outcome.results.push(object),
                Err(WriteError::NotFound) => not_found.push(id.clone()),
                Err(WriteError::Conflict { existing_id }) => outcome.errors.push(BatchItemError {
                    category: "CONFLICT",
                    message: conflict_message(existing_id),
                    ids: vec![id.clone()],
                }),
            }
        }
        if !not_found.is_empty() {
            outcome.errors.push(BatchItemError {
                category: "OBJECT_NOT_FOUND",
                message: "Could not get some CONTACT objects, they may be deleted or not exist. \
                          Check that ids are valid."
                    .to_string(),
                ids: not_found,
            });
        }
        Ok(outcome)
    }

    /// The answer object of the contact `id` addresses, with `properties` (HubSpot's default
    /// set when empty; requested properties without a value are `null`).
    pub(super) fn read(
        &self,
        id: &str,
        properties: &[&str],
        with_companies: bool,
    ) -> Option<Value> {
        let id = self.resolve(id)?;
        Some(self.object(id, properties, with_companies))
    }

    fn object(&self, id: u64, properties: &[&str], with_companies: bool) -> Value {
        let contact = &self.contacts[&id];
        let names: &[&str] = if properties.is_empty() {
            &DEFAULT_RETURNED_PROPERTIES
        } else {
            properties
        };
        let values: Map<String, Value> = names
            .iter()
            .map(|name| {
                let value = contact.value(id, name).map_or(Value::Null, Value::String);
                (name.to_string(), value)
            })
            .collect();
        let mut object = json!({
            "id": id.to_string(),
            "properties": values,
            "createdAt": iso_timestamp(contact.created_ms),
            "updatedAt": iso_timestamp(contact.updated_ms),
            "archived": false,
        });
        let companies = self.companies_of(id);
        if with_companies && !companies.is_empty() {
            let results: Vec<Value> = companies
                .iter()
                .map(|company| json!({"id": company.to_string(), "type": "contact_to_company"}))
                .collect();
            object["associations"] = json!({"companies": {"results": results}});
        }
        object
    }

    /// Up to `limit` contacts with ids after `after`, and the cursor of the next page.
    pub(super) fn page(&self, after: Option<u64>, limit: usize) -> (Vec<u64>, Option<u64>) {
        let start = after.map_or(0, |after| after + 1);
        let mut ids: Vec<u64> = self
            .contacts
            .range(start..)
            .map(|(id, _)| *id)
            .take(limit + 1)
            .collect();
        let next = (ids.len() > limit).then(|| {
            ids.truncate(limit);
            *ids.last().expect("limit is at least one")
        });
        (ids, next)
    }

    /// The stored properties of the contact `id` addresses, with HubSpot's own ones.
    pub(super) fn properties(&self, id: &str) -> Option<BTreeMap<String, String>> {
        let resolved = self.resolve(id)?;
        let contact = &self.contacts[&resolved];
        let mut properties = contact.properties.clone();
        for name in CALCULATED_PROPERTIES {
            if let Some(value) = contact.value(resolved, name) {
                properties.insert(name.to_string(), value);
            }
        }
        Some(properties)
    }

    pub(super) fn delete_contact(&mut self, id: &str) {
        if let Some(id) = self.resolve(id) {
            self.remove_contact(id);
            self.associations.remove(&id);
        }
    }

    /// Merges `merged` into `primary` as HubSpot merges contacts today: both stop existing on
    /// their own and a new contact, with a new id, takes their place. It holds the primary's
    /// values, and the other's where the primary has none; the primary's email stays the
    /// email and the other's becomes an additional one (still taken: no other contact may
    /// have it); `hs_merged_object_ids` lists both ids (and those merged into either); the
    /// older creation date is kept and `updatedAt` moves; the companies of both are kept. Both
    /// old ids keep addressing the new contact, for reads and writes alike. Answers the new
    /// contact's id; `None` when either is missing or they are the same contact.
    pub(super) fn merge(&mut self, primary: &str, merged: &str) -> Option<u64> {
        let (Some(primary), Some(merged)) = (self.resolve(primary), self.resolve(merged)) else {
            return None;
        };
        if primary == merged {
            return None;
        }
        let survivor = self.allocate_id();
        let stamp = self.stamp();
        let first = self.remove_contact(primary).expect("resolved above");
        let second = self.remove_contact(merged).expect("resolved above");
        let emails: Vec<String> = first
            .emails()
            .chain(second.emails())
            .map(str::to_string)
            .collect();
        let mut properties = first.properties;
        for (name, value) in second.properties {
            properties.entry(name).or_insert(value);
        }
        properties.remove(ADDITIONAL_EMAILS_PROPERTY);
        if let Some((email, additional)) = emails.split_first() {
            properties.insert("email".into(), email.clone());
            if !additional.is_empty() {
                properties.insert(ADDITIONAL_EMAILS_PROPERTY.into(), additional.join(";"));
            }
        }
        for email in emails {
            self.by_email.insert(email, survivor);
        }
        let mut merged_ids: BTreeSet<u64> = [primary, merged].into();
        merged_ids.extend(first.merged_ids);
        merged_ids.extend(second.merged_ids);
        self.contacts.insert(
            survivor,
            Contact {
                properties,
                created_ms: first.created_ms.min(second.created_ms),
                updated_ms: stamp,
                merged_ids,
            },
        );
        let mut companies = self.associations.remove(&primary).unwrap_or_default();
        companies.extend(self.associations.remove(&merged).unwrap_or_default());
        if !companies.is_empty() {
            self.associations.insert(survivor, companies);
        }
        for target in self.merged_into.values_mut() {
            if *target == primary || *target == merged {
                *target = survivor;
            }
        }
        self.merged_into.insert(primary, survivor);
        self.merged_into.insert(merged, survivor);
        Some(survivor)
    }

    pub(super) fn create_company(&mut self, name: &str) -> u64 {
        let id = self.allocate_id();
        self.companies.insert(id, name.to_string());
        id
    }

    fn company(&self, id: &str) -> Option<u64> {
        let id: u64 = id.parse().ok()?;
        self.companies.contains_key(&id).then_some(id)
    }

    /// Associates a contact with a company; `Err` names what does not exist.
    pub(super) fn associate(&mut self, contact: &str, company: &str) -> Result<(u64, u64), String> {
        let contact_id = self
            .resolve(contact)
            .ok_or_else(|| format!("No contact with ID {contact} exists"))?;
        let company_id = self
            .company(company)
            .ok_or_else(|| format!("No company with ID {company} exists"))?;
        self.associations
            .entry(contact_id)
            .or_default()
            .insert(company_id);
        Ok((contact_id, company_id))
    }

    /// Removes a contact's association with a company (absent associations are fine, as in
    /// HubSpot); `Err` when the contact does not exist.
    pub(super) fn dissociate(&mut self, contact: &str, company: &str) -> Result<(), String> {
        let contact_id = self
            .resolve(contact)
            .ok_or_else(|| format!("No contact with ID {contact} exists"))?;
        if let (Ok(company_id), Some(companies)) = (
            company.parse::<u64>(),
            self.associations.get_mut(&contact_id),
        ) {
            companies.remove(&company_id);
        }
        Ok(())
    }

    /// The ids of the companies the contact `id` addresses is associated with.
    pub(super) fn company_ids(&self, id: &str) -> Option<Vec<u64>> {
        self.resolve(id).map(|id| self.companies_of(id))
    }

    fn companies_of(&self, id: u64) -> Vec<u64> {
        self.associations
            .get(&id)
            .map(|companies| companies.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// HubSpot's timestamp form: RFC 3339 in UTC with milliseconds.
fn iso_timestamp(unix_ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .expect("a timestamp of our own clock")
        .format(&format)
        .expect("the format has only numeric parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), Value::String(value.to_string())))
            .collect()
    }

    #[test]
    fn writes_normalise_email_clear_with_empty_and_move_updated_at() {
        let mut store = Store::new();
        let id = store
            .create_contact(&[("email", "a@example.com"), ("phone", "1")])
            .to_string();
        let before = store.properties(&id).unwrap()["lastmodifieddate"].clone();
        let update = store
            .normalise(&props(&[("email", " Ann@Example.COM"), ("phone", "")]))
            .unwrap();
        let answer = store.update(&id, &update).unwrap();
        assert_eq!(answer["properties"]["email"], "ann@example.com");
        let stored = store.properties(&id).unwrap();
        assert_eq!(stored["email"], "ann@example.com");
        assert!(!stored.contains_key("phone"));
        assert!(stored["lastmodifieddate"] > before);
    }

    #[test]
    fn an_invalid_value_refuses_the_whole_batch() {
        let mut store = Store::new();
        let a = store.create_contact(&[("city", "x")]).to_string();
        let b = store.create_contact(&[("city", "y")]).to_string();
        let refusal = store
            .batch_update(&[
                (a.clone(), props(&[("city", "Porto")])),
                (b, props(&[("email", "not-an-email")])),
            ])
            .unwrap_err();
        assert!(refusal.message().contains("\"error\":\"INVALID_EMAIL\""));
        assert_eq!(store.properties(&a).unwrap()["city"], "x");
    }

    #[test]
    fn batch_reports_missing_ids_and_conflicts_per_input() {
        let mut store = Store::new();
        let a = store
            .create_contact(&[("email", "a@example.com")])
            .to_string();
        let b = store
            .create_contact(&[("email", "b@example.com")])
            .to_string();
        let outcome = store
            .batch_update(&[
                (a.clone(), props(&[("email", "b@example.com")])),
                ("999".into(), props(&[("city", "x")])),
                (b.clone(), props(&[("city", "Faro")])),
            ])
            .unwrap();
        assert_eq!(outcome.results.len(), 1);
        let categories: Vec<_> = outcome.errors.iter().map(|e| e.category).collect();
        assert_eq!(categories, ["CONFLICT", "OBJECT_NOT_FOUND"]);
        assert_eq!(
            outcome.errors[0].message,
            format!("Contact already exists. Existing ID: {b}")
        );
    }

    #[test]
    fn a_merge_makes_a_new_contact_that_both_old_ids_address() {
        let mut store = Store::new();
        let primary = store
            .create_contact(&[
                ("email", "ann@example.com"),
                ("city", "Lisbon"),
                ("phone", "1"),
            ])
            .to_string();
        let merged = store
            .create_contact(&[
                ("email", "ann.lee@example.com"),
                ("city", "Porto"),
                ("jobtitle", "CTO"),
            ])
            .to_string();
        let company = store.create_company("Northwind");
        store.associate(&merged, &company.to_string()).unwrap();
        let created = store.properties(&primary).unwrap()["createdate"].clone();

        let survivor = store.merge(&primary, &merged).unwrap().to_string();

        assert_ne!(survivor, primary);
        assert_ne!(survivor, merged);
        let stored = store.properties(&survivor).unwrap();
        assert_eq!(stored["city"], "Lisbon", "the primary's values win");
        assert_eq!(stored["jobtitle"], "CTO", "the other fills what it lacks");
        assert_eq!(stored["email"], "ann@example.com");
        assert_eq!(stored[ADDITIONAL_EMAILS_PROPERTY], "ann.lee@example.com");
        assert_eq!(stored[MERGED_IDS_PROPERTY], format!("{primary};{merged}"));
        assert_eq!(stored["createdate"], created, "the older creation date");
        for old in [&primary, &merged] {
            assert_eq!(store.properties(old).unwrap()["hs_object_id"], survivor);
            let read = store.read(old, &["city"], false).unwrap();
            assert_eq!(read["id"], survivor.as_str());
        }
        assert_eq!(store.company_ids(&survivor).unwrap(), [company]);
        assert_eq!(store.page(None, 10).0, [survivor.parse::<u64>().unwrap()]);
        assert_eq!(
            store.find_by_email("Ann.Lee@example.com"),
            Some(survivor.parse().unwrap()),
            "a merged email stays taken"
        );

        let answer = store
            .update(&merged, &BTreeMap::from([("city".into(), "Faro".into())]))
            .unwrap();
        assert_eq!(answer["id"], survivor.as_str());
        assert_eq!(store.properties(&survivor).unwrap()["city"], "Faro");
        let outcome = store
            .batch_update(&[(primary.clone(), props(&[("zip", "1000")]))])
            .unwrap();
        assert!(outcome.errors.is_empty());
        assert_eq!(outcome.results[0]["id"], survivor.as_str());

        let third = store.create_contact(&[("city", "Braga")]).to_string();
        let latest = store.merge(&third, &survivor).unwrap().to_string();
        assert_eq!(store.properties(&primary).unwrap()["hs_object_id"], latest);
        assert_eq!(
            store.properties(&latest).unwrap()[MERGED_IDS_PROPERTY],
            format!("{primary};{merged};{survivor};{third}")
        );
        assert_eq!(store.merge(&primary, &latest), None, "one contact now");
    }

    #[test]
    fn merged_ids_and_additional_emails_are_hubspots_to_write() {
        let store = Store::new();
        for name in [MERGED_IDS_PROPERTY, ADDITIONAL_EMAILS_PROPERTY] {
            let refused = store.normalise(&props(&[(name, "1")])).unwrap_err();
            assert_eq!(refused[0].error, "READ_ONLY_VALUE", "{name}");
        }
    }

    #[test]
    fn pages_cover_every_contact_once() {
        let mut store = Store::new();
        let ids: Vec<u64> = (0..5).map(|_| store.create_contact(&[])).collect();
        let (first, next) = store.page(None, 2);
        assert_eq!(first, ids[..2]);
        let (second, next) = store.page(next, 2);
        assert_eq!(second, ids[2..4]);
        let (third, next) = store.page(next, 2);
        assert_eq!((third, next), (ids[4..].to_vec(), None));
    }
}
