//! [`SalesforceAdapter`]: pushes edits as Contact updates and reads back what Salesforce stored.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{HeaderName, IF_UNMODIFIED_SINCE};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use unisync_core::{
    AdapterError, ApiUsage, BulkProgress, Capabilities, ConditionalPush, ConfirmedContact,
    ContactField, ContactPage, CredentialStore, ErrorKind, FieldMapping, PushItem, PushResult,
    SourceAdapter, SourceContact,
};

use crate::bulk::{JobInfo, ResultRow, create_job_body, job_csv, record_error, result_rows};
use unisync_kit::Answer;

use crate::client::SalesforceClient;
use crate::config::SalesforceConfig;
use crate::error::{Origin, SalesforceError, Scope, classify, classify_job_failure, parse_error};
use crate::id::canonical_id;
use crate::mapping::{
    ContactRecord, contact_query, http_date, id_filter, record_fields, sent_values, stored_form,
};

/// Salesforce's cap on records in one collections call.
const MAX_COLLECTION_RECORDS: usize = 200;

/// The most merges followed from a record a write found deleted to the record that survives
/// (each costs one `queryAll`). A longer chain is taken for a record gone.
const MAX_MERGE_HOPS: usize = 5;

/// The most items one Bulk API 2.0 job takes. Salesforce processes a job in internal batches
/// of 10,000 records, each counted against the org's 15,000 batches a day (shared with every
/// integration): a job of 10,000 uses exactly one. Its CSV stays far below the 100 MB an
/// upload may hold (a row of every mapped field at its longest is under 2 KB), and a job that
/// fails as a whole leaves at most this many edits to retry.
pub const MAX_BULK_ITEMS: usize = 10_000;

/// Bulk API 2.0 job states.
const JOB_OPEN: &str = "Open";
const JOB_UPLOAD_COMPLETE: &str = "UploadComplete";
const JOB_IN_PROGRESS: &str = "InProgress";
const JOB_COMPLETE: &str = "JobComplete";
const JOB_FAILED: &str = "Failed";
const JOB_ABORTED: &str = "Aborted";

/// The code of a record an answer (a collections call's, a job's results) has no result for.
const MISSING_RESULT: &str = "MISSING_RESULT";

/// How long a ready edit waits for others to fill its collections call: Salesforce counts
/// calls against the org's daily budget, not records, so a call of 200 costs what a call of 1
/// does. Measured in docs/benchmarks.md.
const DEFAULT_LINGER: Duration = Duration::from_millis(1000);

/// A Salesforce connection.
pub struct SalesforceAdapter {
    client: SalesforceClient,
    mapping: FieldMapping,
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
            request_timeout: config.timeout,
            mapping: config.mapping,
        })
    }

    /// Pushes one edit only if Salesforce's record was not modified after `unmodified_since`,
    /// a version this adapter answered (`crm_version` of [`SourceAdapter::read`],
    /// [`SourceAdapter::pull`] or [`SourceAdapter::push`]): a single-record PATCH with
    /// `If-Unmodified-Since`, which Salesforce honours on that call only (not in collections).
    ///
    /// The precondition has one-second precision: a change made within the same second as
    /// `unmodified_since` is not seen. Otherwise the write is classified, followed through
    /// merges and confirmed exactly as by [`SourceAdapter::push`]; a version that is no RFC
    /// 3339 datetime is a `Permanent` `INVALID_VERSION`, and nothing is sent.
    async fn write_if_unmodified(
        &self,
        item: &PushItem,
        unmodified_since: &str,
    ) -> Result<ConditionalPush, AdapterError> {
        let id = canonical_id(&item.source_id)
            .map_err(|problem| AdapterError::permanent("MALFORMED_ID", problem, None))?;
        let since = http_date(unmodified_since).ok_or_else(|| {
            AdapterError::permanent(
                "INVALID_VERSION",
                format!("`{unmodified_since}` is not a Salesforce record version (RFC 3339)"),
                None,
            )
        })?;
        let answer = self
            .patch_one(item, &id, &[(IF_UNMODIFIED_SINCE, since.as_str())])
            .await?;
        // Told by the status alone: it is the precondition's answer, whatever its body says.
        if answer.status == reqwest::StatusCode::PRECONDITION_FAILED {
            return Ok(ConditionalPush::ModifiedSince);
        }
        let outcome = self.settle_one(&answer, &id).await;
        self.follow_merges([id.as_str()], vec![outcome])
            .await
            .remove(0)?;
        let confirmed = self.confirm(&[(item, id.as_str())]).await.remove(0);
        Ok(ConditionalPush::Landed(confirmed))
    }

    /// Writes the items, addressed by their canonical ids: one sObject PATCH for one item,
    /// collections PATCHes of up to 200 for several. One outcome per item, in order; a record
    /// a merge deleted is reported `RecordMerged` with the record that survives.
    async fn write(&self, items: &[(&PushItem, &str)]) -> Vec<Result<(), AdapterError>> {
        let outcomes = match items {
            [] => Vec::new(),
            [(item, id)] => vec![self.write_one(item, id).await],
            _ => {
                let mut outcomes = Vec::with_capacity(items.len());
                for chunk in items.chunks(MAX_COLLECTION_RECORDS) {
                    outcomes.extend(self.write_collection(chunk).await);
                }
                outcomes
            }
        };
        self.follow_merges(items.iter().map(|(_, id)| *id), outcomes)
            .await
    }

    async fn write_one(&self, item: &PushItem, id: &str) -> Result<(), AdapterError> {
        let answer = self.patch_one(item, id, &[]).await?;
        self.settle_one(&answer, id).await
    }

    /// The single-record PATCH of `item` to record `id`, with further request `headers`.
    async fn patch_one(
        &self,
        item: &PushItem,
        id: &str,
        headers: &[(HeaderName, &str)],
    ) -> Result<Answer, AdapterError> {
        let path = self.client.data_path(&format!("sobjects/Contact/{id}"));
        let body = Value::Object(record_fields(&self.mapping, item));
        self.client
            .send_with_headers(Method::PATCH, &path, &[], Some(&body), headers)
            .await
    }

    /// The outcome of a single-record write to record `id` from its answer.
    async fn settle_one(&self, answer: &Answer, id: &str) -> Result<(), AdapterError> {
        match self.check(answer, Scope::OneRecord) {
            Err(error) if error.code == "NOT_FOUND" => Err(self.confirm_missing(id, error).await),
            outcome => outcome,
        }
    }

    /// Turns the outcomes of writes to `ids` (in order) that found their record gone into
    /// `RecordMerged` where a merge deleted the record: Salesforce keeps a merged-away record
    /// in its recycle bin with `MasterRecordId` naming the record it was merged into, which
    /// `queryAll` shows. The chain is followed to a live record (the master may have been
    /// merged in turn); a record deleted without a merge stays gone. When `queryAll` fails,
    /// merged cannot be told from deleted: those outcomes take the query's error, so that no
    /// merged record is given up for gone.
    async fn follow_merges<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        outcomes: Vec<Result<(), AdapterError>>,
    ) -> Vec<Result<(), AdapterError>> {
        let is_gone = |error: &AdapterError| error.kind == ErrorKind::RecordGone;
        let ids: Vec<&str> = ids.into_iter().collect();
        let gone: Vec<&str> = ids
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.as_ref().is_err_and(is_gone))
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return outcomes;
        }
        let survivors = self.merge_survivors(&gone).await;
        ids.iter()
            .zip(outcomes)
            .map(|(id, outcome)| match (outcome, &survivors) {
                (Err(error), Ok(survivors)) if is_gone(&error) => match survivors.get(*id) {
                    Some(survivor) => Err(AdapterError::record_merged(
                        error.code,
                        error.message,
                        survivor.clone(),
                    )),
                    None => Err(error),
                },
                (Err(error), Err(query_error)) if is_gone(&error) => Err(query_error.clone()),
                (outcome, _) => outcome,
            })
            .collect()
    }

    /// For each of the records `gone` (canonical ids) that a merge deleted, the live record
    /// that survives it, found through at most [`MAX_MERGE_HOPS`] merges. One `queryAll` per
    /// hop for all the records. A record deleted without a merge, purged from the recycle bin,
    /// live again, or at the end of a longer chain is left out.
    async fn merge_survivors(
        &self,
        gone: &[&str],
    ) -> Result<HashMap<String, String>, AdapterError> {
        // Each record followed → the record its chain has reached.
        let mut reached: HashMap<String, String> = gone
            .iter()
            .map(|id| (id.to_string(), id.to_string()))
            .collect();
        let mut survivors = HashMap::new();
        for _ in 0..=MAX_MERGE_HOPS {
            if reached.is_empty() {
                break;
            }
            let asked: HashSet<&str> = reached.values().map(String::as_str).collect();
            let rows = self.recycle_bin(asked).await?;
            let mut next = HashMap::new();
            for (origin, at) in reached {
                match rows.get(&at) {
                    Some(Row {
                        is_deleted: false, ..
                    }) if at != origin => {
                        survivors.insert(origin, at);
                    }
                    Some(Row {
                        is_deleted: true,
                        master_record_id: Some(master),
                    }) => {
                        next.insert(origin, master.clone());
                    }
                    _ => {}
                }
            }
            reached = next;
        }
        Ok(survivors)
    }

    /// `IsDeleted` and `MasterRecordId` of the records `ids` (canonical), live or in the
    /// recycle bin, from one `queryAll`. Keyed by canonical id; a record Salesforce no longer
    /// has is left out.
    async fn recycle_bin(
        &self,
        ids: impl IntoIterator<Item = &str>,
    ) -> Result<HashMap<String, Row>, AdapterError> {
        let soql = format!(
            "SELECT Id, IsDeleted, MasterRecordId FROM Contact {}",
            id_filter(ids)
        );
        let id_of = |record: &Map<String, Value>, field: &str| {
            let id = record.get(field)?.as_str()?;
            Some(canonical_id(id).unwrap_or_else(|_| id.to_string()))
        };
        Ok(self
            .all_records(QueryResource::QueryAll, &soql)
            .await?
            .iter()
            .filter_map(|record| {
                let row = Row {
                    is_deleted: record.get("IsDeleted").and_then(Value::as_bool)?,
                    master_record_id: id_of(record, "MasterRecordId"),
                };
                Some((id_of(record, "Id")?, row))
            })
            .collect())
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

    /// The landed writes of `items` (with their canonical ids) confirmed with what Salesforce
    /// stored, read back in one query. One confirmation per item, in order.
    async fn confirm(&self, items: &[(&PushItem, &str)]) -> Vec<ConfirmedContact> {
        let ids: Vec<&str> = items.iter().map(|(_, id)| *id).collect();
        let stored = if ids.is_empty() {
            Ok(HashMap::new())
        } else {
            self.read_back(&ids).await
        };
        if let Err(error) = &stored {
            tracing::warn!(code = %error.code, message = %error.message,
                "the written Salesforce contacts could not be read back; confirming the values sent");
        }
        items
            .iter()
            .map(|(item, id)| {
                // The write landed: what follows can only say what Salesforce stored. When the
                // read-back fails, or misses the record (deleted or merged away since, or
                // hidden from this user), the values sent are confirmed; a record that is
                // really gone is reported with Salesforce's proof (ENTITY_IS_DELETED) by the
                // next write, and this edit is not dead-lettered for having landed.
                let (values, crm_version, created_at) =
                    match stored.as_ref().ok().and_then(|stored| stored.get(*id)) {
                        Some(record) => (
                            record.values.clone(),
                            record.last_modified_date.clone(),
                            record.created_date.clone(),
                        ),
                        None => (sent_values(&self.mapping, item), None, None),
                    };
                ConfirmedContact {
                    values,
                    crm_version,
                    created_at,
                    link_error: None,
                }
            })
            .collect()
    }

    /// Reads the records `ids` (canonical) in one query: their stored values, for reconcile
    /// and the conflict check. Keyed by canonical id.
    async fn read_back(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, ContactRecord>, AdapterError> {
        let soql = contact_query(&self.mapping, &id_filter(ids.iter().copied()));
        Ok(self
            .all_records(QueryResource::Query, &soql)
            .await?
            .iter()
            .map(|record| {
                let contact = self.contact_record(record);
                (contact.id.clone(), contact)
            })
            .collect())
    }

    /// Every record `soql` finds, through all its pages.
    async fn all_records(
        &self,
        resource: QueryResource,
        soql: &str,
    ) -> Result<Vec<Map<String, Value>>, AdapterError> {
        let mut page = self.query(resource, soql, None).await?;
        let mut records = std::mem::take(&mut page.records);
        while let Some(next) = page.next_records_url {
            page = self.query(resource, soql, Some(&next)).await?;
            records.append(&mut page.records);
        }
        Ok(records)
    }

    /// One page of a query run by `resource`: the first page of `soql`, or the page at
    /// `next_records_url`.
    async fn query(
        &self,
        resource: QueryResource,
        soql: &str,
        next_records_url: Option<&str>,
    ) -> Result<QueryPage, AdapterError> {
        let answer = match next_records_url {
            None => {
                let path = self.client.data_path(resource.path());
                let query = [("q", soql)];
                self.client.send(Method::GET, &path, &query, None).await?
            }
            Some(path) => self.client.send(Method::GET, path, &[], None).await?,
        };
        self.check(&answer, Scope::ManyRecords)?;
        serde_json::from_str(&answer.body).map_err(|err| {
            AdapterError::retryable(
                "UNREADABLE_ANSWER",
                format!("query answer not understood: {err}"),
            )
        })
    }

    /// A Contact from a query, its record and account ids in their canonical form.
    fn contact_record(&self, record: &Map<String, Value>) -> ContactRecord {
        let mut contact = ContactRecord::from_query_record(&self.mapping, record);
        // Salesforce answers 18-character ids; a form it did not write is kept as it came
        // rather than dropping the record.
        contact.id = canonical_id(&contact.id).unwrap_or(contact.id);
        contact.account_id = contact.account_id.map(|id| canonical_id(&id).unwrap_or(id));
        contact
    }

    /// See [`SourceAdapter::start_bulk_job`].
    async fn start_job(&self, items: &[PushItem]) -> Result<String, AdapterError> {
        let ids = canonical_ids(items);
        let rows = addressed(items, &ids);
        if rows.is_empty() {
            // No item names a record: each fails alone, and a job of no record is no job.
            return Err(ids.into_iter().find_map(Result::err).unwrap_or_else(|| {
                AdapterError::permanent("NO_ITEMS", "a bulk job needs at least one item", None)
            }));
        }
        let csv = job_csv(&self.mapping, &rows);
        let path = self.client.data_path("jobs/ingest");
        let created = self
            .client
            .send(Method::POST, &path, &[], Some(&create_job_body()))
            .await
            .and_then(|answer| self.job_answer(&answer))
            .map_err(lands_nothing)?;
        let job = created.id;
        let path = self.client.data_path(&format!("jobs/ingest/{job}/batches"));
        let uploaded = self
            .client
            .send_csv(Method::PUT, &path, &csv)
            .await
            .and_then(|answer| self.check(&answer, Scope::ManyRecords));
        if let Err(error) = uploaded {
            self.abandon(&job).await;
            return Err(lands_nothing(error));
        }
        Ok(job)
    }

    /// See [`SourceAdapter::close_bulk_job`].
    async fn close_job(&self, job: &str) -> Result<(), AdapterError> {
        match self.set_job_state(job, JOB_UPLOAD_COMPLETE).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind == ErrorKind::OutcomeUnknown => {
                match self.job_info(job).await {
                    Ok(info) if info.state != JOB_OPEN => Ok(()),
                    Ok(_) => {
                        self.abandon(job).await;
                        Err(lands_nothing(error))
                    }
                    // Whether the job was closed, and runs, stays unknown.
                    Err(_) => Err(error),
                }
            }
            Err(error) => {
                self.abandon(job).await;
                Err(error)
            }
        }
    }

    /// See [`SourceAdapter::poll_bulk_job`].
    async fn poll_job(
        &self,
        job_id: &str,
        items: &[PushItem],
    ) -> Result<BulkProgress, AdapterError> {
        // The id goes into URLs: it must be an id (letters and digits).
        if job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(AdapterError::permanent(
                "INVALID_JOB_ID",
                format!("`{job_id}` is not a Salesforce job id"),
                None,
            ));
        }
        let every_item =
            |error: AdapterError| BulkProgress::Finished(vec![Err(error); items.len()]);
        let info = match self.job_info(job_id).await {
            Err(error) if error.code == "NOT_FOUND" => {
                return Ok(every_item(AdapterError::outcome_unknown(
                    "BULK_JOB_NOT_FOUND",
                    format!(
                        "Salesforce has no job {job_id} (it deletes jobs 7 days after they end): \
                         whether its records landed is unknown ({})",
                        error.message
                    ),
                )));
            }
            info => info?,
        };
        let ending = match info.state.as_str() {
            JOB_UPLOAD_COMPLETE | JOB_IN_PROGRESS => return Ok(BulkProgress::Running),
            JOB_COMPLETE => Ending::Complete,
            JOB_FAILED => Ending::Failed,
            JOB_ABORTED => Ending::Aborted,
            JOB_OPEN => {
                return Ok(every_item(AdapterError::retryable(
                    "BULK_JOB_NOT_CLOSED",
                    format!("job {job_id} was never closed, so Salesforce will not run it"),
                )));
            }
            other => {
                return Err(AdapterError::retryable(
                    "UNKNOWN_JOB_STATE",
                    format!("job {job_id} is in a state unisync does not know: {other}"),
                ));
            }
        };
        let mut reported: HashMap<String, Reported> = HashMap::new();
        if ending != Ending::Complete {
            for row in self.job_results(job_id, "unprocessedrecords").await? {
                reported.extend(row.id.map(|id| (id, Reported::Unprocessed)));
            }
        }
        let failed = self.job_results(job_id, "failedResults").await?;
        let successful = self.job_results(job_id, "successfulResults").await?;
        // Every record refused with one code: the job was refused, not the records (as in a
        // collections answer).
        let codes: Vec<Option<&str>> = failed
            .iter()
            .map(|row| row.error.as_ref().map(|error| error.code.as_str()))
            .collect();
        let whole_batch =
            successful.is_empty() && codes.len() > 1 && codes.iter().all(|code| *code == codes[0]);
        for row in failed {
            if let Some(id) = row.id {
                let error = row.error.unwrap_or_else(|| record_error(""));
                reported.insert(id, Reported::Refused(error));
            }
        }
        for row in successful {
            reported.extend(row.id.map(|id| (id, Reported::Landed)));
        }
        let not_processed = classify_job_failure(
            ending == Ending::Aborted,
            info.error_message.as_deref(),
            &self.mapping,
        );
        let ids = canonical_ids(items);
        let rows = addressed(items, &ids);
        let outcomes = rows
            .iter()
            .map(|(_, id)| match reported.get(*id) {
                Some(Reported::Landed) => Ok(()),
                Some(Reported::Refused(error)) => Err(classify(
                    Origin::RecordResult { whole_batch },
                    error,
                    &self.mapping,
                )),
                Some(Reported::Unprocessed) => Err(not_processed.clone()),
                None => Err(AdapterError::outcome_unknown(
                    MISSING_RESULT,
                    format!("the results of job {job_id} have no row for this record"),
                )),
            })
            .collect();
        let outcomes = self
            .follow_merges(rows.iter().map(|(_, id)| *id), outcomes)
            .await;
        Ok(BulkProgress::Finished(
            items
                .iter()
                .zip(rejoin(&ids, outcomes))
                .map(|(item, outcome)| {
                    outcome?;
                    Ok(ConfirmedContact {
                        values: sent_values(&self.mapping, item),
                        ..ConfirmedContact::default()
                    })
                })
                .collect(),
        ))
    }

    /// The job `job_id` as Salesforce describes it (one call).
    async fn job_info(&self, job_id: &str) -> Result<JobInfo, AdapterError> {
        let path = self.client.data_path(&format!("jobs/ingest/{job_id}"));
        let answer = self.client.send(Method::GET, &path, &[], None).await?;
        self.job_answer(&answer)
    }

    /// A job description from `answer`, whose id is fit for URLs.
    fn job_answer(&self, answer: &Answer) -> Result<JobInfo, AdapterError> {
        self.check(answer, Scope::ManyRecords)?;
        serde_json::from_str::<JobInfo>(&answer.body)
            .ok()
            .filter(|info| {
                !info.id.is_empty() && info.id.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .ok_or_else(|| {
                AdapterError::retryable(
                    "UNREADABLE_ANSWER",
                    "the job description is not the JSON Salesforce sends",
                )
            })
    }

    /// Moves job `job_id` to `state` (`UploadComplete`, `Aborted`): one call.
    async fn set_job_state(&self, job_id: &str, state: &str) -> Result<(), AdapterError> {
        let path = self.client.data_path(&format!("jobs/ingest/{job_id}"));
        let body = json!({ "state": state });
        let answer = self
            .client
            .send(Method::PATCH, &path, &[], Some(&body))
            .await?;
        self.check(&answer, Scope::ManyRecords)
    }

    /// Aborts a job that was not closed, so that it cannot linger open; a failure is only
    /// logged, as an open job never runs anyway.
    async fn abandon(&self, job_id: &str) {
        if let Err(error) = self.set_job_state(job_id, JOB_ABORTED).await {
            tracing::warn!(job_id, code = %error.code, message = %error.message,
                "could not abort a Salesforce Bulk API job that was never closed");
        }
    }

    /// The rows of one of job `job_id`'s results (`successfulResults`, `failedResults`,
    /// `unprocessedrecords`): one call.
    async fn job_results(
        &self,
        job_id: &str,
        resource: &str,
    ) -> Result<Vec<ResultRow>, AdapterError> {
        let path = self
            .client
            .data_path(&format!("jobs/ingest/{job_id}/{resource}/"));
        let answer = self.client.send(Method::GET, &path, &[], None).await?;
        self.check(&answer, Scope::ManyRecords)?;
        result_rows(&answer.body).map_err(|problem| {
            AdapterError::retryable(
                "UNREADABLE_ANSWER",
                format!(
                    "the {resource} of job {job_id} are not the CSV Salesforce sends: {problem}"
                ),
            )
        })
    }

    /// `Ok` for a successful answer, else its error classified for a request about `scope`.
    fn check(&self, answer: &Answer, scope: Scope) -> Result<(), AdapterError> {
        if answer.is_success() {
            Ok(())
        } else {
            Err(parse_error(
                answer.status.as_u16(),
                &answer.headers,
                &answer.body,
                scope,
                &self.mapping,
            ))
        }
    }
}

/// Each item's canonical id, by which it goes into URLs, SOQL and job data and is matched to
/// Salesforce's answers (which carry 18-character ids); an id Salesforce could never have
/// issued fails alone as `Permanent` `MALFORMED_ID`.
fn canonical_ids(items: &[PushItem]) -> Vec<Result<String, AdapterError>> {
    items
        .iter()
        .map(|item| {
            canonical_id(&item.source_id)
                .map_err(|problem| AdapterError::permanent("MALFORMED_ID", problem, None))
        })
        .collect()
}

/// The items that have a canonical id (`ids`, one per item), with it.
fn addressed<'a>(
    items: &'a [PushItem],
    ids: &'a [Result<String, AdapterError>],
) -> Vec<(&'a PushItem, &'a str)> {
    items
        .iter()
        .zip(ids)
        .filter_map(|(item, id)| Some((item, id.as_deref().ok()?)))
        .collect()
}

/// One outcome per item: the `outcomes` of the addressed items (in order) put back among the
/// items whose id failed; a landed item's outcome is its canonical id.
fn rejoin(
    ids: &[Result<String, AdapterError>],
    outcomes: Vec<Result<(), AdapterError>>,
) -> Vec<Result<&str, AdapterError>> {
    let mut outcomes = outcomes.into_iter();
    ids.iter()
        .map(|id| {
            let id = id.as_deref().map_err(Clone::clone)?;
            outcomes.next().expect("one outcome per addressed item")?;
            Ok(id)
        })
        .collect()
}

/// `error` of a request made before a job was closed: the job cannot run, so nothing of it
/// lands even when the answer was lost.
fn lands_nothing(error: AdapterError) -> AdapterError {
    match error.kind {
        ErrorKind::OutcomeUnknown => AdapterError::retryable(error.code, error.message),
        _ => error,
    }
}

/// What a job's results say about one record.
enum Reported {
    Landed,
    Refused(SalesforceError),
    Unprocessed,
}

/// How a job ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Failed,
    Aborted,
}

/// One page of a query answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage {
    records: Vec<Map<String, Value>>,
    #[serde(default)]
    next_records_url: Option<String>,
}

/// Salesforce's two query resources.
#[derive(Clone, Copy, Debug)]
enum QueryResource {
    /// `query`: live records.
    Query,
    /// `queryAll`: the recycle bin too (deleted and merged-away records).
    QueryAll,
}

impl QueryResource {
    fn path(self) -> &'static str {
        match self {
            QueryResource::Query => "query",
            QueryResource::QueryAll => "queryAll",
        }
    }
}

/// A Contact's deletion state, as `queryAll` shows it.
struct Row {
    is_deleted: bool,
    /// The record it was merged into (canonical), when a merge deleted it.
    master_record_id: Option<String>,
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
            reads_records: true,
            conditional_update: true,
            max_bulk_items: MAX_BULK_ITEMS,
            default_linger: DEFAULT_LINGER,
        }
    }

    fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }

    async fn push_if_unmodified(
        &self,
        item: &PushItem,
        unmodified_since: &str,
    ) -> Result<ConditionalPush, AdapterError> {
        self.write_if_unmodified(item, unmodified_since).await
    }

    async fn push(&self, items: &[PushItem]) -> Vec<PushResult> {
        let ids = canonical_ids(items);
        let to_write = addressed(items, &ids);
        let outcomes = rejoin(&ids, self.write(&to_write).await);
        let landed: Vec<(&PushItem, &str)> = items
            .iter()
            .zip(&outcomes)
            .filter_map(|(item, outcome)| Some((item, *outcome.as_ref().ok()?)))
            .collect();
        let mut confirmed = self.confirm(&landed).await.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome?;
                Ok(confirmed.next().expect("one confirmation per landed write"))
            })
            .collect()
    }

    /// Creates an ingest job updating Contacts and uploads its CSV (one header for all
    /// items, an untouched field an empty cell, a clear `#N/A`): two calls. An item whose id
    /// is no Salesforce id is left out of the CSV and fails alone when the job is polled. A
    /// job runs only once closed, so a failure here lands nothing: it is never
    /// `OutcomeUnknown`, and a job whose upload failed is aborted.
    async fn start_bulk_job(&self, items: &[PushItem]) -> Result<String, AdapterError> {
        self.start_job(items).await
    }

    /// Closes the job (`UploadComplete`): one call. A close whose answer was lost is checked
    /// with one more call: a job no longer `Open` runs; one still `Open` is aborted and lands
    /// nothing.
    async fn close_bulk_job(&self, job_id: &str) -> Result<(), AdapterError> {
        self.close_job(job_id).await
    }

    /// Reads the job (one call); while it is `UploadComplete` or `InProgress`, `Running`.
    /// Once it ended, reads its `successfulResults/` and `failedResults/`, and for a `Failed`
    /// or `Aborted` job its `unprocessedrecords/` (one call each), and maps each row back to
    /// its item by the record's 18-character id:
    /// - successful: confirmed with the values sent (Bulk answers carry no stored values, and
    ///   reading them back would cost a query per 200 records, more calls than the job);
    /// - failed: Salesforce's `sf__Error` classified like a collections result, a record a
    ///   merge deleted followed to the record that survives;
    /// - unprocessed: why the job did not process it ([`crate::classify_job_failure`]), never a
    ///   dead letter;
    /// - in no result (Salesforce keeps no results for batches past the daily allocation):
    ///   `OutcomeUnknown`.
    ///
    /// Nothing is kept between start and poll: a new adapter polls any job by its id. A job
    /// Salesforce no longer has (it deletes jobs 7 days after they end) leaves every item
    /// `OutcomeUnknown`; a job still `Open` (never closed) will never run, and leaves every
    /// item `Retryable`.
    async fn poll_bulk_job(
        &self,
        job_id: &str,
        items: &[PushItem],
    ) -> Result<BulkProgress, AdapterError> {
        self.poll_job(job_id, items).await
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
        let page = self.query(QueryResource::Query, &soql, cursor).await?;
        Ok(ContactPage {
            contacts: page
                .records
                .iter()
                .map(|record| self.contact_record(record).into_source_contact())
                .collect(),
            next_cursor: page.next_records_url,
        })
    }

    /// One query for the batch (`SELECT Id, <mapped fields>, AccountId, CreatedDate,
    /// LastModifiedDate FROM Contact WHERE Id IN (...)`), `crm_version` = LastModifiedDate.
    /// Records come in the order asked, by their canonical (18-character) ids, each once; an
    /// id that is no Salesforce id names no record and is left out like a missing one.
    async fn read(&self, source_ids: &[String]) -> Result<Vec<SourceContact>, AdapterError> {
        let mut seen = HashSet::new();
        let ids: Vec<String> = source_ids
            .iter()
            .filter_map(|id| canonical_id(id).ok())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let asked: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut records = self.read_back(&asked).await?;
        Ok(ids
            .iter()
            .filter_map(|id| records.remove(id))
            .map(ContactRecord::into_source_contact)
            .collect())
    }

    /// Salesforce holds `ours` already when both store alike ([`stored_form`]): trimmed, an
    /// empty value as none, the Email field in lower case.
    fn same_value(&self, field: ContactField, crm: Option<&str>, ours: Option<&str>) -> bool {
        let crm_field = self.mapping.crm_field(field).unwrap_or_default();
        stored_form(crm_field, crm) == stored_form(crm_field, ours)
    }

    fn normalize_source_id(&self, id: &str) -> Result<String, String> {
        canonical_id(id)
    }

    fn api_usage(&self) -> Option<ApiUsage> {
        self.client.api_usage().map(|(usage, _)| usage)
    }
}
