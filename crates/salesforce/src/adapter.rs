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
use crate::error::{SalesforceError, classify, parse_error};
use crate::mapping::{ContactRecord, contact_query, id_filter, is_record_id, record_fields};

/// Salesforce's cap on records in one collections call.
const MAX_COLLECTION_RECORDS: usize = 200;

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

    /// Writes the items: one sObject PATCH for one item, collections PATCHes of up to 200
    /// for several. One outcome per item, in order.
    async fn write(&self, items: &[&PushItem]) -> Vec<Result<(), AdapterError>> {
        match items {
            [] => Vec::new(),
            [item] => vec![self.write_one(item).await],
            _ => {
                let mut outcomes = Vec::with_capacity(items.len());
                for chunk in items.chunks(MAX_COLLECTION_RECORDS) {
                    outcomes.extend(self.write_collection(chunk).await);
                }
                outcomes
            }
        }
    }

    async fn write_one(&self, item: &PushItem) -> Result<(), AdapterError> {
        let path = self
            .client
            .data_path(&format!("sobjects/Contact/{}", item.source_id));
        let body = Value::Object(record_fields(&self.mapping, item));
        let answer = self
            .client
            .send(Method::PATCH, &path, &[], Some(&body))
            .await?;
        self.check(&answer)
    }

    async fn write_collection(&self, items: &[&PushItem]) -> Vec<Result<(), AdapterError>> {
        #[derive(Deserialize)]
        struct RecordResult {
            success: bool,
            #[serde(default)]
            errors: Vec<SalesforceError>,
        }
        let records: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut record = Map::new();
                record.insert("attributes".into(), json!({"type": "Contact"}));
                record.insert("id".into(), Value::String(item.source_id.clone()));
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
            .and_then(|answer| self.check(&answer).map(|()| answer))
        {
            Ok(answer) => answer,
            Err(error) => return vec![Err(error); items.len()],
        };
        let results: Vec<RecordResult> = match serde_json::from_str(&answer.body) {
            Ok(results) => results,
            Err(err) => {
                let error = AdapterError::retryable(
                    "UNREADABLE_ANSWER",
                    format!("collection answer not understood: {err}"),
                );
                return vec![Err(error); items.len()];
            }
        };
        let mut results = results.into_iter();
        items
            .iter()
            .map(|_| match results.next() {
                Some(result) if result.success => Ok(()),
                Some(result) => {
                    let error = result.errors.into_iter().next().unwrap_or_default();
                    Err(classify(None, &error, &self.mapping))
                }
                // Results come in request order, one each; a short answer leaves the rest
                // unknown, and repeating an edit is harmless.
                None => Err(AdapterError::retryable(
                    "MISSING_RESULT",
                    "the collection answer has no result for this record",
                )),
            })
            .collect()
    }

    /// Reads the records `ids` back in one query, so reconcile gets Salesforce's stored values.
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
        self.check(&answer)?;
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
                .map(|record| ContactRecord::from_query_record(&self.mapping, record))
                .collect(),
            next_records_url: page.next_records_url,
        })
    }

    fn check(&self, answer: &Answer) -> Result<(), AdapterError> {
        if answer.is_success() {
            Ok(())
        } else {
            Err(parse_error(answer.status, &answer.body, &self.mapping))
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
        // Ids go into URLs and SOQL: one that is not an id fails alone, as Salesforce would.
        let mut outcomes: Vec<Result<(), AdapterError>> = items
            .iter()
            .map(|item| {
                if is_record_id(&item.source_id) {
                    Ok(())
                } else {
                    Err(AdapterError::permanent(
                        "MALFORMED_ID",
                        format!("`{}` is not a Salesforce record id", item.source_id),
                        None,
                    ))
                }
            })
            .collect();
        let sendable: Vec<usize> = (0..items.len()).filter(|&n| outcomes[n].is_ok()).collect();
        let to_write: Vec<&PushItem> = sendable.iter().map(|&n| &items[n]).collect();
        for (n, outcome) in sendable.iter().zip(self.write(&to_write).await) {
            outcomes[*n] = outcome;
        }
        let written: Vec<&str> = items
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(item, _)| item.source_id.as_str())
            .collect();
        // The edit landed; if reading it back fails, the item reports that failure and is
        // pushed again later, which is harmless.
        let stored = if written.is_empty() {
            Ok(HashMap::new())
        } else {
            self.read_back(&written).await
        };
        items
            .iter()
            .zip(outcomes)
            .map(|(item, outcome)| {
                outcome?;
                let stored = stored.as_ref().map_err(Clone::clone)?;
                let record = stored.get(&item.source_id).ok_or_else(|| {
                    AdapterError::record_gone(
                        "NOT_FOUND",
                        "the record was gone when read back after the write",
                    )
                })?;
                Ok(ConfirmedContact {
                    values: record.values.clone(),
                    crm_version: record.last_modified_date.clone(),
                    created_at: record.created_date.clone(),
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

    fn api_usage(&self) -> Option<ApiUsage> {
        self.client.api_usage().map(|(usage, _)| usage)
    }
}
