//! [`SalesforceAdapter`]: pushes edits as Contact updates and reads back what Salesforce stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use unisync_core::{
    AdapterError, ApiUsage, Capabilities, ConfirmedContact, ContactPage, CredentialStore,
    FieldMapping, PushItem, PushResult, SourceAdapter, SourceContact,
};

use crate::client::{Answer, SalesforceClient};
use crate::config::SalesforceConfig;
use crate::error::{Origin, SalesforceError, Scope, classify, parse_error};
use crate::id::canonical_id;
use crate::mapping::{ContactRecord, contact_query, id_filter, record_fields, sent_values};

/// Salesforce's cap on records in one collections call.
const MAX_COLLECTION_RECORDS: usize = 200;

/// The code of a record a collections answer has no result for.
const MISSING_RESULT: &str = "MISSING_RESULT";

/// How long a budget reading stops pushes. The daily budget is a rolling 24 hours, so usage
/// falls again; after this long a push goes through and brings a fresh reading.
const BUDGET_RECHECK: Duration = Duration::from_secs(15 * 60);

/// A Salesforce connection.
pub struct SalesforceAdapter {
    client: SalesforceClient,
    mapping: FieldMapping,
    budget_stop_share: f64,
    request_timeout: Duration,
}

impl SalesforceAdapter {
    /// Builds the adapter; contacts nobody.
    pub fn new(
        config: SalesforceConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Self, reqwest::Error> {
        Ok(SalesforceAdapter {
            client: SalesforceClient::new(&config, credentials)?,
            budget_stop_share: config.budget_stop_share,
            request_timeout: config.timeout,
            mapping: config.mapping,
        })
    }

    /// `QuotaExhausted` when a recent reading shows the stop share of the daily budget used:
    /// the rest of the budget is left to the org's other integrations and users.
    fn budget_stop(&self) -> Option<AdapterError> {
        let (usage, read_at) = self.client.api_usage()?;
        let age = read_at.elapsed();
        let share = usage.used as f64 / usage.limit.max(1) as f64;
        (age < BUDGET_RECHECK && share >= self.budget_stop_share).then(|| {
            AdapterError::quota_exhausted(
                "API_BUDGET_STOP",
                format!(
                    "{}/{} of the daily API requests used; pushes stop at {:.0}%",
                    usage.used,
                    usage.limit,
                    self.budget_stop_share * 100.0
                ),
                Some(BUDGET_RECHECK - age),
            )
        })
    }

    /// Writes the items, addressed by their canonical ids: one sObject PATCH for one item,
    /// collections PATCHes of up to 200 for several. One outcome per item, in order.
    async fn write(&self, items: &[(&PushItem, &str)]) -> Vec<Result<(), AdapterError>> {
        match items {
            [] => Vec::new(),
            [(item, id)] => vec![self.write_one(item, id).await],
            _ => {
                let mut outcomes = Vec::with_capacity(items.len());
                for chunk in items.chunks(MAX_COLLECTION_RECORDS) {
                    outcomes.extend(self.write_collection(chunk).await);
                }
                outcomes
            }
        }
    }

    async fn write_one(&self, item: &PushItem, id: &str) -> Result<(), AdapterError> {
        let path = self.client.data_path(&format!("sobjects/Contact/{id}"));
        let body = Value::Object(record_fields(&self.mapping, item));
        let answer = self
            .client
            .send(Method::PATCH, &path, &[], Some(&body))
            .await?;
        match self.check(&answer, Scope::OneRecord) {
            Err(error) if error.code == "NOT_FOUND" => Err(self.confirm_missing(id, error).await),
            outcome => outcome,
        }
    }

    /// Salesforce answers a record that does not exist and a URL it does not serve (a wrong
    /// api_version) with the same 404 `NOT_FOUND`. A query for the record tells them apart: it
    /// fails the same way when the URL is at fault, and answers without the record when the
    /// record is gone. `not_found` is returned when the record is gone, the query's own error
    /// when it failed.
    async fn confirm_missing(&self, id: &str, not_found: AdapterError) -> AdapterError {
        match self.read_back(&[id]).await {
            Ok(records) if records.contains_key(id) => AdapterError::misconfigured(
                not_found.code,
                format!(
                    "{} (for the URL of record {id}, which a query finds)",
                    not_found.message
                ),
            ),
            Ok(_) => not_found,
            Err(error) => error,
        }
    }

    async fn write_collection(&self, items: &[(&PushItem, &str)]) -> Vec<Result<(), AdapterError>> {
        #[derive(Deserialize)]
        struct RecordResult {
            success: bool,
            #[serde(default)]
            errors: Vec<SalesforceError>,
        }
        let records: Vec<Value> = items
            .iter()
            .map(|(item, id)| {
                let mut record = Map::new();
                record.insert("attributes".into(), json!({"type": "Contact"}));
                record.insert("id".into(), Value::String(id.to_string()));
                record.extend(record_fields(&self.mapping, item));
                Value::Object(record)
            })
            .collect();
        let body = json!({"allOrNone": false, "records": records});
        let path = self.client.data_path("composite/sobjects");
        let answer = match self
            .client
            .send(Method::PATCH, &path, &[], Some(&body))
            .await
            .and_then(|answer| self.check(&answer, Scope::ManyRecords).map(|()| answer))
        {
            Ok(answer) => answer,
            Err(error) => return vec![Err(error); items.len()],
        };
        // A 200 answer means the records were processed: an answer that cannot be read, or
        // lacks a record's result, leaves that record's write landed or not.
        let results: Vec<RecordResult> = match serde_json::from_str(&answer.body) {
            Ok(results) => results,
            Err(err) => {
                let error = AdapterError::outcome_unknown(
                    "UNREADABLE_ANSWER",
                    format!("collection answer not understood: {err}"),
                );
                return vec![Err(error); items.len()];
            }
        };
        let mut results = results.into_iter();
        let errors: Vec<Option<SalesforceError>> = items
            .iter()
            .map(|_| match results.next() {
                Some(result) if result.success => None,
                Some(result) => Some(result.errors.into_iter().next().unwrap_or_default()),
                // Results come in request order, one each; a short answer leaves the rest
                // unknown.
                None => Some(SalesforceError {
                    code: MISSING_RESULT.into(),
                    ..SalesforceError::default()
                }),
            })
            .collect();
        // Every record refused with one code: the call was refused, not the records.
        let codes: Vec<Option<&str>> = errors
            .iter()
            .map(|error| error.as_ref().map(|error| error.code.as_str()))
            .collect();
        let whole_batch = codes.len() > 1 && codes.iter().all(|code| *code == codes[0]);
        errors
            .into_iter()
            .map(|error| match error {
                None => Ok(()),
                Some(error) if error.code == MISSING_RESULT => Err(AdapterError::outcome_unknown(
                    MISSING_RESULT,
                    "the collection answer has no result for this record",
                )),
                Some(error) => Err(classify(
                    Origin::RecordResult { whole_batch },
                    &error,
                    &self.mapping,
                )),
            })
            .collect()
    }

    /// Reads the records `ids` (canonical) back in one query, so reconcile gets Salesforce's
    /// stored values. Keyed by canonical id.
    async fn read_back(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, ContactRecord>, AdapterError> {
        let soql = contact_query(&self.mapping, &id_filter(ids.iter().copied()));
        let mut records = HashMap::new();
        let mut page = self.query(&soql, None).await?;
        loop {
            records.extend(page.contacts.into_iter().map(|c| (c.id.clone(), c)));
            match page.next_records_url {
                Some(next) => page = self.query(&soql, Some(&next)).await?,
                None => return Ok(records),
            }
        }
    }

    /// One page of a query: the first page of `soql`, or the page at `next_records_url`.
    /// Record and account ids come back in their canonical form.
    async fn query(
        &self,
        soql: &str,
        next_records_url: Option<&str>,
    ) -> Result<QueryPage, AdapterError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct QueryAnswer {
            records: Vec<Map<String, Value>>,
            #[serde(default)]
            next_records_url: Option<String>,
        }
        let answer = match next_records_url {
            None => {
                let path = self.client.data_path("query");
                let query = [("q", soql)];
                self.client.send(Method::GET, &path, &query, None).await?
            }
            Some(path) => self.client.send(Method::GET, path, &[], None).await?,
        };
        self.check(&answer, Scope::ManyRecords)?;
        let page: QueryAnswer = serde_json::from_str(&answer.body).map_err(|err| {
            AdapterError::retryable(
                "UNREADABLE_ANSWER",
                format!("query answer not understood: {err}"),
            )
        })?;
        Ok(QueryPage {
            contacts: page
                .records
                .iter()
                .map(|record| {
                    let mut contact = ContactRecord::from_query_record(&self.mapping, record);
                    // Salesforce answers 18-character ids; a form it did not write is kept as
                    // it came rather than dropping the record.
                    contact.id = canonical_id(&contact.id).unwrap_or(contact.id);
                    contact.account_id =
                        contact.account_id.map(|id| canonical_id(&id).unwrap_or(id));
                    contact
                })
                .collect(),
            next_records_url: page.next_records_url,
        })
    }

    /// `Ok` for a successful answer, else its error classified for a request about `scope`.
    fn check(&self, answer: &Answer, scope: Scope) -> Result<(), AdapterError> {
        if answer.is_success() {
            Ok(())
        } else {
            Err(parse_error(
                answer.status,
                &answer.headers,
                &answer.body,
                scope,
                &self.mapping,
            ))
        }
    }
}

struct QueryPage {
    contacts: Vec<ContactRecord>,
    next_records_url: Option<String>,
}

#[async_trait]
impl SourceAdapter for SalesforceAdapter {
    fn system(&self) -> &str {
        crate::SYSTEM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_size: MAX_COLLECTION_RECORDS,
            customer_links: true,
            request_timeout: self.request_timeout,
            reads_records: false,
        }
    }

    fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }

    async fn push(&self, items: &[PushItem]) -> Vec<PushResult> {
        if let Some(stop) = self.budget_stop() {
            return vec![Err(stop); items.len()];
        }
        // Ids go into URLs and SOQL, and the read-back answers 18-character ids: each item is
        // addressed by its canonical id, and one that is no id fails alone.
        let ids: Vec<Result<String, AdapterError>> = items
            .iter()
            .map(|item| {
                canonical_id(&item.source_id)
                    .map_err(|problem| AdapterError::permanent("MALFORMED_ID", problem, None))
            })
            .collect();
        let to_write: Vec<(&PushItem, &str)> = items
            .iter()
            .zip(&ids)
            .filter_map(|(item, id)| Some((item, id.as_deref().ok()?)))
            .collect();
        let mut written = self.write(&to_write).await.into_iter();
        let outcomes: Vec<Result<&str, AdapterError>> = ids
            .iter()
            .map(|id| {
                let id = id.as_deref().map_err(Clone::clone)?;
                written.next().expect("one outcome per write")?;
                Ok(id)
            })
            .collect();
        let landed: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().copied())
            .collect();
        let stored = if landed.is_empty() {
            Ok(HashMap::new())
        } else {
            self.read_back(&landed).await
        };
        if let Err(error) = &stored {
            tracing::warn!(code = %error.code, message = %error.message,
                "the written Salesforce contacts could not be read back; confirming the values sent");
        }
        items
            .iter()
            .zip(outcomes)
            .map(|(item, outcome)| {
                let id = outcome?;
                // The write landed: what follows can only say what Salesforce stored. When the
                // read-back fails, or misses the record (deleted or merged away since, or
                // hidden from this user), the values sent are confirmed; a record that is
                // really gone is reported with Salesforce's proof (ENTITY_IS_DELETED) by the
                // next write, and this edit is not dead-lettered for having landed.
                let (values, crm_version, created_at) =
                    match stored.as_ref().ok().and_then(|stored| stored.get(id)) {
                        Some(record) => (
                            record.values.clone(),
                            record.last_modified_date.clone(),
                            record.created_date.clone(),
                        ),
                        None => (sent_values(&self.mapping, item), None, None),
                    };
                Ok(ConfirmedContact {
                    values,
                    crm_version,
                    created_at,
                    link_error: None,
                })
            })
            .collect()
    }

    async fn pull(&self, cursor: Option<&str>) -> Result<ContactPage, AdapterError> {
        // The cursor is Salesforce's nextRecordsUrl; the bearer token goes nowhere else.
        if let Some(cursor) = cursor
            && (!cursor.starts_with("/services/data/") || cursor.contains(".."))
        {
            return Err(AdapterError::permanent(
                "INVALID_CURSOR",
                format!("`{cursor}` is not a Salesforce nextRecordsUrl"),
                None,
            ));
        }
        let soql = contact_query(&self.mapping, "ORDER BY Id");
        let page = self.query(&soql, cursor).await?;
        Ok(ContactPage {
            contacts: page
                .contacts
                .into_iter()
                .map(|record| SourceContact {
                    source_id: record.id,
                    values: record.values,
                    customer_source_id: record.account_id,
                    created_at: record.created_date,
                    crm_version: record.last_modified_date,
                    // A query leaves deleted records out.
                    is_active: true,
                })
                .collect(),
            next_cursor: page.next_records_url,
        })
    }

    fn normalize_source_id(&self, id: &str) -> Result<String, String> {
        canonical_id(id)
    }

    fn api_usage(&self) -> Option<ApiUsage> {
        self.client.api_usage().map(|(usage, _)| usage)
    }
}
