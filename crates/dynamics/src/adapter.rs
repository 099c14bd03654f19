//! [`DynamicsAdapter`]: pushes edits as contact updates and reads back what Dataverse stored.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, ETAG};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use unisync_core::{
    AdapterError, Capabilities, ConditionalPush, ConfirmedContact, ContactField, ContactPage,
    CustomerLink, ErrorKind, FieldMapping, PushItem, PushResult, SourceAdapter, SourceContact,
};
use unisync_kit::Answer;

use crate::batch::{BatchUpdate, change_set_answers, request_body};
use crate::client::{Body, DataverseClient};
use crate::config::DynamicsConfig;
use crate::error::{DOES_NOT_EXIST, parse_error};
use crate::mapping::{ContactRow, canonical_id, record_body, select};

/// Contacts per `$batch` (Dataverse takes up to 1000 requests). Microsoft advises small
/// batches: a batch counts as one request but its whole execution time counts against the
/// service protection window, and a batch that times out leaves all its contacts unknown.
const MAX_BATCH: usize = 100;

/// Rows per page of a pull (`Prefer: odata.maxpagesize`; Dataverse allows up to 5000).
const PULL_PAGE_SIZE: usize = 500;

/// Ids per read: each is a `contactid eq ...` term of the query's `$filter`, in the URL.
const READ_CHUNK: usize = 50;

/// The code of a record an answer has no result for.
const MISSING_RESULT: &str = "MISSING_RESULT";

/// The code of a write that landed on a row a merge deactivated.
const MERGED: &str = "MERGED";

/// A Dynamics 365 connection.
pub struct DynamicsAdapter {
    client: DataverseClient,
    mapping: FieldMapping,
    request_timeout: Duration,
}

/// What a write answered for one item: the row as Dataverse holds it now, or a refusal.
type Written = Result<Answer, AdapterError>;

impl DynamicsAdapter {
    /// Builds the adapter; contacts nobody.
    pub fn new(config: DynamicsConfig) -> Result<Self, reqwest::Error> {
        Ok(DynamicsAdapter {
            client: DataverseClient::new(&config)?,
            request_timeout: config.timeout,
            mapping: config.mapping,
        })
    }

    /// `contacts({id})?$select=...` relative to the service root.
    fn row_resource(&self, id: &str) -> String {
        format!("contacts({id})?$select={}", select(&self.mapping))
    }

    /// One PATCH of `item` to row `id` under `if_match` (`*`: update only, never create),
    /// asking for the row back.
    async fn patch_one(&self, item: &PushItem, id: &str, if_match: &str) -> Written {
        let body = Value::Object(record_body(&self.mapping, item));
        self.client
            .send(
                Method::PATCH,
                self.client.url(&self.row_resource(id)),
                &[("If-Match", if_match), ("Prefer", "return=representation")],
                Body::Json(&body),
            )
            .await
    }

    /// The items' updates as one `$batch` (one change set each, `odata.continue-on-error`
    /// so that one refusal stops nothing): one answer per item, in order. A refusal of the
    /// whole call is that error for every item; an answer without an item's part leaves
    /// that item's write unknown.
    async fn patch_batch(&self, items: &[(&PushItem, &str)]) -> Vec<Written> {
        let updates: Vec<BatchUpdate> = items
            .iter()
            .map(|(item, id)| BatchUpdate {
                path: format!("{}{}", self.client.root_path(), self.row_resource(id)),
                if_match: "*".to_string(),
                body: Value::Object(record_body(&self.mapping, item)).to_string(),
            })
            .collect();
        let boundary = format!("batch_{}", rand_suffix());
        let text = request_body(&boundary, &updates);
        let answer = match self
            .client
            .send(
                Method::POST,
                self.client.url("$batch"),
                &[("Prefer", "odata.continue-on-error")],
                Body::Batch {
                    boundary: &boundary,
                    text: &text,
                },
            )
            .await
        {
            Ok(answer) if answer.status == StatusCode::OK => answer,
            Ok(answer) => return vec![Err(parse_error(&answer, &self.mapping)); items.len()],
            Err(error) => return vec![Err(error); items.len()],
        };
        let content_type = answer
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        // A 200 means the requests ran: an answer that cannot be read, or lacks an item's
        // part, leaves that item's write landed or not.
        let mut parts = match change_set_answers(content_type, &answer.body) {
            Ok(parts) => parts.into_iter(),
            Err(problem) => {
                let error = AdapterError::outcome_unknown("UNREADABLE_ANSWER", problem);
                return vec![Err(error); items.len()];
            }
        };
        items
            .iter()
            .map(|_| {
                parts.next().ok_or_else(|| {
                    AdapterError::outcome_unknown(
                        MISSING_RESULT,
                        "the batch answer has no part for this contact",
                    )
                })
            })
            .collect()
    }

    /// The outcome of one item's write from what Dataverse answered.
    async fn settle(&self, item: &PushItem, id: &str, written: Written) -> PushResult {
        let answer = written?;
        if !answer.is_success() {
            let error = parse_error(&answer, &self.mapping);
            return Err(self.blame_missing_row(item, id, error).await);
        }
        self.confirmed(item, &answer)
    }

    /// Dataverse answers a missing contact and a bind to a missing account alike (404
    /// `0x80040217`). When the item binds an account, a read of the contact tells them apart:
    /// a contact that is there means the account is not (`Permanent` on
    /// `unified_customer_id`).
    async fn blame_missing_row(
        &self,
        item: &PushItem,
        id: &str,
        error: AdapterError,
    ) -> AdapterError {
        if error.kind != ErrorKind::RecordGone
            || !matches!(item.customer, CustomerLink::Link { .. })
        {
            return error;
        }
        match self.read_rows(&[id.to_string()]).await {
            Ok(rows) if rows.is_empty() => error,
            Ok(_) => AdapterError::permanent(
                DOES_NOT_EXIST,
                error.message,
                Some(ContactField::UnifiedCustomerId.name().to_string()),
            ),
            Err(read_error) => read_error,
        }
    }

    /// A landed write's confirmation from the row Dataverse answered. A row a merge
    /// deactivated (`merged`, `_masterid_value`) is `RecordMerged` with the row kept.
    fn confirmed(&self, item: &PushItem, answer: &Answer) -> PushResult {
        let row = serde_json::from_str::<Map<String, Value>>(&answer.body)
            .ok()
            .map(|row| ContactRow::from_json(&self.mapping, &row));
        let Some(row) = row else {
            // 204 without the row (a gateway that dropped the preference): what was sent.
            let values = item
                .patch
                .iter()
                .filter(|(field, _)| self.mapping.crm_field(*field).is_some())
                .map(|(field, value)| (field, value.map(str::to_string)))
                .collect();
            let etag = answer.headers.get(ETAG).and_then(|v| v.to_str().ok());
            return Ok(ConfirmedContact {
                values,
                crm_version: etag.map(str::to_string),
                ..ConfirmedContact::default()
            });
        };
        if let Some(survivor) = row.merged_into {
            return Err(AdapterError::record_merged(
                MERGED,
                format!("contact {} was merged into {survivor}", row.id),
                survivor,
            ));
        }
        Ok(ConfirmedContact {
            values: row.values,
            crm_version: row.etag,
            created_at: row.created_on,
            link_error: None,
        })
    }

    /// The rows `ids` (canonical) that Dataverse has, in one query per [`READ_CHUNK`].
    async fn read_rows(&self, ids: &[String]) -> Result<Vec<ContactRow>, AdapterError> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(READ_CHUNK) {
            let filter: Vec<String> = chunk
                .iter()
                .map(|id| format!("contactid eq {id}"))
                .collect();
            let mut url = self.client.url("contacts");
            url.query_pairs_mut()
                .append_pair("$select", &select(&self.mapping))
                .append_pair("$filter", &filter.join(" or "));
            rows.extend(self.page(url).await?.0);
        }
        Ok(rows)
    }

    /// One page of contacts at `url`, and the next page's link.
    async fn page(
        &self,
        url: reqwest::Url,
    ) -> Result<(Vec<ContactRow>, Option<String>), AdapterError> {
        #[derive(Deserialize)]
        struct Page {
            value: Vec<Map<String, Value>>,
            #[serde(rename = "@odata.nextLink", default)]
            next_link: Option<String>,
        }
        let max_page = format!("odata.maxpagesize={PULL_PAGE_SIZE}");
        let answer = self
            .client
            .send(Method::GET, url, &[("Prefer", &max_page)], Body::None)
            .await?;
        if !answer.is_success() {
            return Err(parse_error(&answer, &self.mapping));
        }
        let page: Page = serde_json::from_str(&answer.body).map_err(|err| {
            AdapterError::retryable(
                "UNREADABLE_ANSWER",
                format!("a page of contacts not understood: {err}"),
            )
        })?;
        let rows = page
            .value
            .iter()
            .map(|row| ContactRow::from_json(&self.mapping, row))
            .collect();
        Ok((rows, page.next_link))
    }
}

/// A boundary suffix unlikely to occur in a body.
fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}")
}

#[async_trait]
impl SourceAdapter for DynamicsAdapter {
    fn system(&self) -> &str {
        crate::SYSTEM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_size: MAX_BATCH,
            customer_links: true,
            request_timeout: self.request_timeout,
            reads_records: true,
            conditional_update: true,
            default_linger: Duration::ZERO,
            max_bulk_items: 0,
        }
    }

    fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }

    async fn wait_for_capacity(&self) {
        self.client.pacer().wait_for_room().await;
    }

    fn rate_limit_pressure(&self) -> f64 {
        self.client.pacer().pressure()
    }

    /// One contact: `PATCH contacts({id})` with `If-Match: *` (an update, never a create)
    /// and `Prefer: return=representation`. Several: one `$batch`, each contact in a change
    /// set of its own. Each answer's row is the confirmation (its ETag the version).
    async fn push(&self, items: &[PushItem]) -> Vec<PushResult> {
        let ids: Vec<Result<String, AdapterError>> = items
            .iter()
            .map(|item| {
                canonical_id(&item.source_id)
                    .map_err(|problem| AdapterError::permanent("MALFORMED_ID", problem, None))
            })
            .collect();
        let addressed: Vec<(&PushItem, &str)> = items
            .iter()
            .zip(&ids)
            .filter_map(|(item, id)| Some((item, id.as_deref().ok()?)))
            .collect();
        let mut written = match addressed.as_slice() {
            [] => Vec::new(),
            [(item, id)] => vec![self.patch_one(item, id, "*").await],
            _ => {
                let mut written = Vec::with_capacity(addressed.len());
                for chunk in addressed.chunks(MAX_BATCH) {
                    written.extend(self.patch_batch(chunk).await);
                }
                written
            }
        }
        .into_iter();
        let mut results = Vec::with_capacity(items.len());
        for (item, id) in items.iter().zip(ids) {
            results.push(match id {
                Err(error) => Err(error),
                Ok(id) => {
                    let answer = written.next().expect("one answer per addressed item");
                    self.settle(item, &id, answer).await
                }
            });
        }
        results
    }

    /// `PATCH` with `If-Match` the row's ETag (a `crm_version` this adapter answered):
    /// Dataverse answers 412 when the row changed since, and writes nothing.
    async fn push_if_unmodified(
        &self,
        item: &PushItem,
        unmodified_since: &str,
    ) -> Result<ConditionalPush, AdapterError> {
        let id = canonical_id(&item.source_id)
            .map_err(|problem| AdapterError::permanent("MALFORMED_ID", problem, None))?;
        let answer = self.patch_one(item, &id, unmodified_since).await?;
        // Told by the status alone: it is the precondition's answer.
        if answer.status == StatusCode::PRECONDITION_FAILED {
            return Ok(ConditionalPush::ModifiedSince);
        }
        self.settle(item, &id, Ok(answer))
            .await
            .map(ConditionalPush::Landed)
    }

    /// Pages of up to `PULL_PAGE_SIZE` (500) contacts; the cursor is Dataverse's
    /// `@odata.nextLink`, followed only on this environment's service root.
    async fn pull(&self, cursor: Option<&str>) -> Result<ContactPage, AdapterError> {
        let url = match cursor {
            None => {
                let mut url = self.client.url("contacts");
                url.query_pairs_mut()
                    .append_pair("$select", &select(&self.mapping));
                url
            }
            Some(link) => reqwest::Url::parse(link)
                .ok()
                .filter(|url| self.client.serves(url))
                .ok_or_else(|| {
                    AdapterError::permanent(
                        "INVALID_CURSOR",
                        format!("`{link}` is not a next link of this environment"),
                        None,
                    )
                })?,
        };
        let (rows, next_cursor) = self.page(url).await?;
        Ok(ContactPage {
            contacts: rows
                .into_iter()
                .map(ContactRow::into_source_contact)
                .collect(),
            next_cursor,
        })
    }

    /// One query per 50 ids (`$filter=contactid eq .. or ..`), `crm_version` = the ETag.
    /// Rows come in the order asked, each once; an id that is no GUID is left out like a
    /// missing row.
    async fn read(&self, source_ids: &[String]) -> Result<Vec<SourceContact>, AdapterError> {
        let mut seen = HashSet::new();
        let ids: Vec<String> = source_ids
            .iter()
            .filter_map(|id| canonical_id(id).ok())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let mut rows = self.read_rows(&ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let at = rows.iter().position(|row| &row.id == id)?;
                Some(rows.swap_remove(at).into_source_contact())
            })
            .collect())
    }

    fn normalize_source_id(&self, id: &str) -> Result<String, String> {
        canonical_id(id)
    }
}
