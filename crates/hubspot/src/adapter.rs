//! [`HubspotAdapter`]: unisync's pushes and pulls in HubSpot's terms.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, join_all};
use reqwest::Method;
use serde_json::{Map, Value, json};
use unisync_core::{
    AdapterError, ApiUsage, Capabilities, ConfirmedContact, ContactField, ContactPage,
    CredentialStore, CustomerLink, ErrorKind, FieldMapping, PushItem, PushResult, SourceAdapter,
    SourceContact,
};

use crate::client::HubspotClient;
use crate::config::HubspotConfig;
use unisync_kit::Effect;

use crate::error::{may_blame_one_input, parse_batch_error, refuses_the_connection};
use crate::mapping::{properties_of, stored_value, values_of};

/// HubSpot's batch limit, for updates and reads alike.
pub const BATCH_LIMIT: usize = 100;
const CONTACTS: [&str; 4] = ["crm", "v3", "objects", "contacts"];
/// The property listing the ids merged into a contact, `;`-separated: how a read of a
/// merged-away id is told apart (HubSpot answers it with the surviving contact).
const MERGED_IDS: &str = "hs_merged_object_ids";
/// unisync's code for a write to a contact HubSpot merged into another (HubSpot gives none).
const MERGED: &str = "MERGED";

/// A HubSpot connection (one portal) as a [`SourceAdapter`].
pub struct HubspotAdapter {
    client: HubspotClient,
    request_timeout: Duration,
}

impl HubspotAdapter {
    /// Builds the adapter; contacts nobody. `credentials` keeps a rotated OAuth refresh token.
    pub fn new(
        config: &HubspotConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, reqwest::Error> {
        Ok(HubspotAdapter {
            client: HubspotClient::new(config, credentials)?,
            request_timeout: config.timeout,
        })
    }
}

#[async_trait]
impl SourceAdapter for HubspotAdapter {
    fn system(&self) -> &str {
        "hubspot"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_size: BATCH_LIMIT,
            customer_links: true,
            request_timeout: self.request_timeout,
            reads_records: true,
            conditional_update: false,
            max_bulk_items: 0,
            default_linger: Duration::ZERO,
        }
    }

    fn mapping(&self) -> &FieldMapping {
        self.client.mapping()
    }

    async fn wait_for_capacity(&self) {
        self.client.wait_for_room().await;
    }

    async fn push(&self, items: &[PushItem]) -> Vec<PushResult> {
        let mut results: Vec<Option<PushResult>> = vec![None; items.len()];
        // HubSpot refuses a batch naming one id twice; the contract says that never happens,
        // and if it does the later edit goes in a later call, keeping per-contact order.
        for round in rounds_of_distinct_ids(items) {
            let round_items: Vec<&PushItem> = round.iter().map(|&index| &items[index]).collect();
            for (index, result) in round.into_iter().zip(self.push_round(&round_items).await) {
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every round answers each of its items"))
            .collect()
    }

    async fn pull(&self, cursor: Option<&str>) -> Result<ContactPage, AdapterError> {
        let limit = BATCH_LIMIT.to_string();
        let properties = self.client.mapping().crm_fields().join(",");
        let mut query = vec![
            ("limit", limit.as_str()),
            ("properties", properties.as_str()),
            ("associations", "companies"),
        ];
        if let Some(cursor) = cursor {
            query.push(("after", cursor));
        }
        let answer = self
            .client
            .send(Effect::Read, Method::GET, &CONTACTS, &query, None)
            .await?;
        let contacts = array(&answer, "results")
            .iter()
            .map(|object| self.source_contact(object))
            .collect();
        let next_cursor = answer["paging"]["next"]["after"]
            .as_str()
            .map(str::to_string);
        Ok(ContactPage {
            contacts,
            next_cursor,
        })
    }

    /// Batch reads of the mapped properties, 100 ids a call. A merged-away id is left out
    /// like a deleted one (HubSpot answers it with the surviving contact, whose id differs):
    /// the push that follows reports the merge. `crm_version` is `updatedAt`, as in pushes
    /// and pulls; `customer_source_id` is not read.
    async fn read(&self, source_ids: &[String]) -> Result<Vec<SourceContact>, AdapterError> {
        let properties = self.client.mapping().crm_fields();
        let mut contacts = Vec::with_capacity(source_ids.len());
        for chunk in source_ids.chunks(BATCH_LIMIT) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let answer = self.batch_read(&ids, &properties).await?;
            contacts.extend(ids.iter().filter_map(|id| match answer.lookup(id) {
                Lookup::Found(object) => Some(self.source_contact(object)),
                Lookup::MergedInto(_) | Lookup::Missing => None,
            }));
        }
        Ok(contacts)
    }

    /// HubSpot stores emails trimmed and lower-cased and other text as sent; `""` and `null`
    /// are the same clear ([`stored_value`]).
    fn same_value(&self, field: ContactField, crm: Option<&str>, ours: Option<&str>) -> bool {
        let property = self.client.mapping().crm_field(field);
        stored_value(property, crm) == stored_value(property, ours)
    }

    fn api_usage(&self) -> Option<ApiUsage> {
        self.client.api_usage()
    }

    fn rate_limit_pressure(&self) -> f64 {
        self.client.rate_limit_pressure()
    }

    fn budget_resets_in(&self) -> Option<Duration> {
        Some(self.client.budget_resets_in())
    }
}

/// What a batch read answered for one of the ids asked for.
enum Lookup<'a> {
    /// HubSpot holds the contact under that id.
    Found(&'a Value),
    /// The id was merged into the contact `survivor`, which answered in its place.
    MergedInto(String),
    /// HubSpot has no contact under that id.
    Missing,
}

/// The contacts of a batch read's answer.
struct BatchRead {
    results: Vec<Value>,
}

impl BatchRead {
    /// The answer for `id`: the contact with that id, else the one that lists it among its
    /// merged ids.
    fn lookup(&self, id: &str) -> Lookup<'_> {
        if let Some(object) = self
            .results
            .iter()
            .find(|object| id_of(object).as_deref() == Some(id))
        {
            return Lookup::Found(object);
        }
        let survivor = self.results.iter().find(|object| {
            object["properties"][MERGED_IDS]
                .as_str()
                .is_some_and(|merged| merged.split(';').any(|merged| merged.trim() == id))
        });
        match survivor.and_then(id_of) {
            Some(survivor) => Lookup::MergedInto(survivor),
            None => Lookup::Missing,
        }
    }
}

/// The error of a write to `id`, which HubSpot merged into `survivor`. The write may have
/// landed on the survivor already (HubSpot follows the old id); pushing there again is
/// harmless.
fn merged_error(id: &str, survivor: String) -> AdapterError {
    AdapterError::record_merged(
        MERGED,
        format!("HubSpot merged contact {id} into contact {survivor}"),
        survivor,
    )
}

/// One contact's property write.
struct PropertyWrite<'a> {
    id: &'a str,
    properties: Map<String, Value>,
}

impl HubspotAdapter {
    /// Pushes items with distinct ids: property writes first (batched), then each item's
    /// company link. Items without property changes are read back for their version. A link
    /// that fails after its item's properties landed is reported beside them
    /// ([`ConfirmedContact::link_error`]), never instead of them.
    async fn push_round(&self, items: &[&PushItem]) -> Vec<PushResult> {
        let mapping = self.client.mapping();
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        for (position, item) in items.iter().enumerate() {
            let properties = properties_of(mapping, &item.patch);
            if properties.is_empty() {
                reads.push(position);
            } else {
                writes.push((
                    position,
                    PropertyWrite {
                        id: &item.source_id,
                        properties,
                    },
                ));
            }
        }
        let mut results: Vec<Option<PushResult>> = vec![None; items.len()];
        let (positions, writes): (Vec<usize>, Vec<PropertyWrite>) = writes.into_iter().unzip();
        for (position, result) in positions
            .into_iter()
            .zip(self.write_properties(&writes).await)
        {
            results[position] = Some(result);
        }
        let read_ids: Vec<&str> = reads
            .iter()
            .map(|&position| items[position].source_id.as_str())
            .collect();
        let mut wrote_properties = vec![true; items.len()];
        for (position, result) in reads.into_iter().zip(self.read_contacts(&read_ids).await) {
            results[position] = Some(result);
            wrote_properties[position] = false;
        }
        let linked = join_all(items.iter().zip(results).zip(wrote_properties).map(
            |((item, result), wrote_properties)| async move {
                let confirmed = result.expect("every item was written or read")?;
                match self.apply_link(&item.source_id, &item.customer).await {
                    Ok(()) => Ok(confirmed),
                    Err(link_error) if wrote_properties => Ok(ConfirmedContact {
                        link_error: Some(link_error),
                        ..confirmed
                    }),
                    // Nothing but the link was asked: its failure is the item's.
                    Err(error) => Err(error),
                }
            },
        ));
        linked.await
    }

    /// Writes properties: one PATCH for one contact, batch updates for more. Once a call is
    /// refused for the whole connection, the rest are answered with that refusal unsent.
    fn write_properties<'a>(
        &'a self,
        writes: &'a [PropertyWrite<'a>],
    ) -> BoxFuture<'a, Vec<PushResult>> {
        async move {
            match writes {
                [] => Vec::new(),
                [write] => vec![self.write_one(write).await],
                _ if writes.len() > BATCH_LIMIT => {
                    let mut results = Vec::with_capacity(writes.len());
                    for chunk in writes.chunks(BATCH_LIMIT) {
                        results.extend(self.write_unless_refused(&results, chunk).await);
                    }
                    results
                }
                _ => self.write_batch(writes).await,
            }
        }
        .boxed()
    }

    /// Writes `writes`, unless `earlier` (the results of this push so far) shows that HubSpot
    /// refuses the connection: then each gets that refusal without a call.
    async fn write_unless_refused(
        &self,
        earlier: &[PushResult],
        writes: &[PropertyWrite<'_>],
    ) -> Vec<PushResult> {
        let refusal = earlier.iter().find_map(|result| {
            result
                .as_ref()
                .err()
                .filter(|error| refuses_the_connection(error))
        });
        match refusal {
            Some(refusal) => vec![Err(refusal.clone()); writes.len()],
            None => self.write_properties(writes).await,
        }
    }

    /// One PATCH. HubSpot follows a merged-away id to the surviving contact and answers with
    /// its id; a contact it does not find is looked up, in case a merge is why.
    async fn write_one(&self, write: &PropertyWrite<'_>) -> PushResult {
        let body = json!({ "properties": write.properties });
        let sent = self
            .client
            .send(
                Effect::Write,
                Method::PATCH,
                &contact_path(write.id),
                &[],
                Some(&body),
            )
            .await;
        let answer = match sent {
            Err(error) if error.kind == ErrorKind::RecordGone => {
                return Err(self.gone_or_merged(write.id, error).await);
            }
            sent => sent?,
        };
        match id_of(&answer) {
            // HubSpot answers a write to a merged-away id with the contact it lives on in.
            Some(survivor) if survivor != write.id => Err(merged_error(write.id, survivor)),
            _ => Ok(self.confirmed(&answer)),
        }
    }

    /// One batch update. A whole-batch refusal that one bad input may cause is narrowed down
    /// by halves, so the valid edits land and only the bad one carries HubSpot's error.
    async fn write_batch(&self, writes: &[PropertyWrite<'_>]) -> Vec<PushResult> {
        let inputs: Vec<Value> = writes
            .iter()
            .map(|write| json!({"id": write.id, "properties": write.properties}))
            .collect();
        let body = json!({ "inputs": inputs });
        let path = [CONTACTS.as_slice(), &["batch", "update"]].concat();
        match self
            .client
            .send(Effect::Write, Method::POST, &path, &[], Some(&body))
            .await
        {
            Ok(answer) => self.batch_results(writes, &answer).await,
            Err(error) if may_blame_one_input(&error) => {
                tracing::debug!(code = %error.code, size = writes.len(), "HubSpot refused a whole batch; splitting it");
                let (left, right) = writes.split_at(writes.len() / 2);
                let mut results = self.write_properties(left).await;
                let right = self.write_unless_refused(&results, right).await;
                results.extend(right);
                results
            }
            Err(error) => vec![Err(error); writes.len()],
        }
    }

    /// Matches a 200/207 batch answer against the inputs sent. Inputs HubSpot answered
    /// without their own id, or as not found, are looked up with one read, to tell a merged
    /// contact from a deleted one: HubSpot answers a write to a merged-away id with the
    /// surviving contact's id. An input whose id answered twice (an input, and an id merged
    /// into it) cannot be matched and is looked up as well; one HubSpot still holds under its
    /// own id is written again on its own.
    async fn batch_results(&self, writes: &[PropertyWrite<'_>], body: &Value) -> Vec<PushResult> {
        let mapping = self.client.mapping();
        let mut outcomes: HashMap<String, PushResult> = HashMap::new();
        let mut answered_twice = HashSet::new();
        for object in array(body, "results") {
            if let Some(id) = id_of(object)
                && outcomes
                    .insert(id.clone(), Ok(self.confirmed(object)))
                    .is_some()
            {
                answered_twice.insert(id);
            }
        }
        for id in &answered_twice {
            outcomes.remove(id);
        }
        for entry in array(body, "errors") {
            let error = parse_batch_error(entry, mapping);
            for id in array(&entry["context"], "ids").iter().filter_map(text_id) {
                outcomes.insert(id, Err(error.clone()));
            }
        }
        let doubtful: Vec<&str> = writes
            .iter()
            .map(|write| write.id)
            .filter(|id| match outcomes.get(*id) {
                None => true,
                Some(Err(error)) => error.kind == ErrorKind::RecordGone,
                Some(Ok(_)) => false,
            })
            .collect();
        if !doubtful.is_empty() {
            tracing::debug!(ids = ?doubtful, "HubSpot's batch answer lacks or misses some contacts; looking them up");
            let looked_up = self.batch_read(&doubtful, &[]).await;
            for write in writes.iter().filter(|write| doubtful.contains(&write.id)) {
                let answered = outcomes.remove(write.id);
                let result = match &looked_up {
                    // Only a read can tell a deleted contact from a merged one.
                    Err(error) => Err(error.clone()),
                    Ok(answer) => match answer.lookup(write.id) {
                        Lookup::MergedInto(survivor) => Err(merged_error(write.id, survivor)),
                        Lookup::Missing => answered.unwrap_or_else(|| Err(not_found(write.id))),
                        Lookup::Found(_) => self.write_one(write).await,
                    },
                };
                outcomes.insert(write.id.to_string(), result);
            }
        }
        writes
            .iter()
            .map(|write| {
                outcomes
                    .remove(write.id)
                    .expect("every input was answered or looked up")
            })
            .collect()
    }

    /// What a write HubSpot answered with `gone` (not found) to `id` means: the contact was
    /// merged into another, or it is gone (or, when the read fails, the read's error).
    async fn gone_or_merged(&self, id: &str, gone: AdapterError) -> AdapterError {
        match self.batch_read(&[id], &[]).await {
            Ok(answer) => match answer.lookup(id) {
                Lookup::MergedInto(survivor) => merged_error(id, survivor),
                Lookup::Found(_) | Lookup::Missing => gone,
            },
            Err(error) => error,
        }
    }

    /// Reads contacts back (for items that changed no property): their versions, or
    /// `RecordGone`, or `RecordMerged`.
    async fn read_contacts(&self, ids: &[&str]) -> Vec<PushResult> {
        let mut results = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_LIMIT) {
            match self.batch_read(chunk, &[]).await {
                Err(error) => results.extend(std::iter::repeat_n(Err(error), chunk.len())),
                Ok(answer) => results.extend(chunk.iter().map(|id| match answer.lookup(id) {
                    Lookup::Found(object) => Ok(ConfirmedContact {
                        values: BTreeMap::new(),
                        ..self.confirmed(object)
                    }),
                    Lookup::MergedInto(survivor) => Err(merged_error(id, survivor)),
                    Lookup::Missing => Err(not_found(id)),
                })),
            }
        }
        results
    }

    /// One batch read (at most [`BATCH_LIMIT`] ids) of `properties` and the merged ids.
    /// HubSpot answers ids it lacks in a 207's `errors` as `OBJECT_NOT_FOUND`: they are left
    /// out. Any other error entry fails the read, classified like a push's.
    async fn batch_read(
        &self,
        ids: &[&str],
        properties: &[&str],
    ) -> Result<BatchRead, AdapterError> {
        let inputs: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        let mut properties = properties.to_vec();
        properties.push(MERGED_IDS);
        let body = json!({ "inputs": inputs, "properties": properties });
        let path = [CONTACTS.as_slice(), &["batch", "read"]].concat();
        let mut answer = self
            .client
            .send(Effect::Read, Method::POST, &path, &[], Some(&body))
            .await?;
        let failure = array(&answer, "errors")
            .iter()
            .map(|entry| parse_batch_error(entry, self.client.mapping()))
            .find(|error| error.kind != ErrorKind::RecordGone);
        if let Some(error) = failure {
            return Err(error);
        }
        let results = match answer["results"].take() {
            Value::Array(results) => results,
            _ => Vec::new(),
        };
        Ok(BatchRead { results })
    }

    /// Applies a contact's company link. A company HubSpot does not know fails the edit for
    /// good, but does not say the contact is gone.
    async fn apply_link(&self, contact_id: &str, link: &CustomerLink) -> Result<(), AdapterError> {
        self.change_associations(contact_id, link)
            .await
            .map_err(|error| match error.kind {
                ErrorKind::RecordGone => AdapterError::permanent(
                    error.code,
                    error.message,
                    Some(ContactField::UnifiedCustomerId.name().to_string()),
                ),
                _ => error,
            })
    }

    /// The association calls of a link: the new company first, then the previous one
    /// removed, so a failure half way leaves the contact linked rather than orphaned.
    async fn change_associations(
        &self,
        contact_id: &str,
        link: &CustomerLink,
    ) -> Result<(), AdapterError> {
        match link {
            CustomerLink::Unchanged => Ok(()),
            CustomerLink::Link { id, previous } => {
                self.associate(contact_id, id).await?;
                match previous.as_deref().filter(|previous| previous != id) {
                    Some(previous) => self.dissociate(contact_id, previous).await,
                    None => Ok(()),
                }
            }
            CustomerLink::Unlink {
                previous: Some(previous),
            } => self.dissociate(contact_id, previous).await,
            CustomerLink::Unlink { previous: None } => {
                for company in self.company_ids(contact_id).await? {
                    self.dissociate(contact_id, &company).await?;
                }
                Ok(())
            }
        }
    }

    async fn associate(&self, contact_id: &str, company_id: &str) -> Result<(), AdapterError> {
        let path = association_path(contact_id, &["default", "companies", company_id]);
        self.client
            .send(Effect::Write, Method::PUT, &path, &[], None)
            .await?;
        Ok(())
    }

    async fn dissociate(&self, contact_id: &str, company_id: &str) -> Result<(), AdapterError> {
        let path = association_path(contact_id, &["companies", company_id]);
        self.client
            .send(Effect::Write, Method::DELETE, &path, &[], None)
            .await?;
        Ok(())
    }

    async fn company_ids(&self, contact_id: &str) -> Result<Vec<String>, AdapterError> {
        let path = association_path(contact_id, &["companies"]);
        let answer = self
            .client
            .send(Effect::Read, Method::GET, &path, &[], None)
            .await?;
        Ok(array(&answer, "results")
            .iter()
            .filter_map(|association| text_id(&association["toObjectId"]))
            .collect())
    }

    /// What HubSpot returned for a written contact, in unified terms.
    fn confirmed(&self, object: &Value) -> ConfirmedContact {
        ConfirmedContact {
            values: self.returned_values(object),
            crm_version: string(object, "updatedAt"),
            created_at: string(object, "createdAt"),
            link_error: None,
        }
    }

    fn returned_values(&self, object: &Value) -> BTreeMap<ContactField, Option<String>> {
        object["properties"]
            .as_object()
            .map(|properties| values_of(self.client.mapping(), properties))
            .unwrap_or_default()
    }

    /// A listed contact: every mapped field (absent ones `None`), and its company, preferring
    /// the primary association.
    fn source_contact(&self, object: &Value) -> SourceContact {
        let mut values: BTreeMap<ContactField, Option<String>> = self
            .client
            .mapping()
            .rules()
            .map(|rule| (rule.unified, None))
            .collect();
        values.extend(self.returned_values(object));
        let companies = array(&object["associations"]["companies"], "results");
        let customer_source_id = companies
            .iter()
            .find(|company| company["type"] == "contact_to_company")
            .or(companies.first())
            .and_then(id_of);
        SourceContact {
            source_id: id_of(object).unwrap_or_default(),
            values,
            customer_source_id,
            created_at: string(object, "createdAt"),
            crm_version: string(object, "updatedAt"),
            is_active: !object["archived"].as_bool().unwrap_or(false),
        }
    }
}

/// Splits item positions into rounds in which no contact id repeats, keeping each id's
/// edits in order.
fn rounds_of_distinct_ids(items: &[PushItem]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<(HashSet<&str>, Vec<usize>)> = Vec::new();
    let mut next_round: HashMap<&str, usize> = HashMap::new();
    for (position, item) in items.iter().enumerate() {
        let round = next_round.entry(&item.source_id).or_insert(0);
        if *round == rounds.len() {
            rounds.push((HashSet::new(), Vec::new()));
        }
        rounds[*round].0.insert(&item.source_id);
        rounds[*round].1.push(position);
        *round += 1;
    }
    rounds.into_iter().map(|(_, positions)| positions).collect()
}

/// The error of an id HubSpot has no contact under.
fn not_found(id: &str) -> AdapterError {
    AdapterError::record_gone("OBJECT_NOT_FOUND", format!("HubSpot has no contact {id}"))
}

fn contact_path(id: &str) -> Vec<&str> {
    let mut path = CONTACTS.to_vec();
    path.push(id);
    path
}

fn association_path<'a>(contact_id: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec![
        "crm",
        "v4",
        "objects",
        "contacts",
        contact_id,
        "associations",
    ];
    path.extend_from_slice(rest);
    path
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn string(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(str::to_string)
}

fn id_of(object: &Value) -> Option<String> {
    text_id(&object["id"])
}

/// HubSpot ids are strings, but some answers (v4 associations) give numbers.
fn text_id(value: &Value) -> Option<String> {
    match value {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use unisync_core::ContactPatch;

    use super::*;

    fn item(id: &str) -> PushItem {
        PushItem {
            source_id: id.to_string(),
            patch: ContactPatch::new(),
            customer: CustomerLink::Unchanged,
        }
    }

    #[test]
    fn repeated_ids_go_to_later_rounds_in_order() {
        let items = [item("1"), item("2"), item("1"), item("1"), item("3")];
        assert_eq!(
            rounds_of_distinct_ids(&items),
            vec![vec![0, 1, 4], vec![2], vec![3]]
        );
    }
}
