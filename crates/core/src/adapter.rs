use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    AdapterError, ConfigError, ConnectionConfig, ContactField, ContactPatch, FieldMapping,
    FieldViolation,
};

/// What an adapter can do, read by the dispatcher to shape its pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The most items one [`SourceAdapter::push`] call takes (the CRM's batch limit; 1 when
    /// the CRM has no batch update).
    pub max_batch_size: usize,
    /// Whether the adapter pushes [`CustomerLink`]s (the contact's company or account).
    pub customer_links: bool,
    /// The longest one request to the CRM may take before the adapter gives up on it. A
    /// request given up on may still land later ([`crate::ErrorKind::OutcomeUnknown`]); the
    /// dispatcher's settle time and crash-recovery grace are derived from this.
    pub request_timeout: Duration,
    /// Whether [`SourceAdapter::read`] reads records' current values, as the conflict
    /// policies `crm_wins` and `hold` need before each write.
    pub reads_records: bool,
    /// Whether [`SourceAdapter::push_if_unmodified`] writes a record only if it is still at
    /// a given version (Salesforce's `If-Unmodified-Since`).
    pub conditional_update: bool,
    /// How long a ready edit may wait for its batch to fill by default, for CRMs whose
    /// budget counts calls rather than records (Salesforce). Zero: a batch goes as soon as
    /// the rate limit has room, which batches by itself while the limit binds (HubSpot).
    pub default_linger: Duration,
    /// The most items one bulk job takes ([`SourceAdapter::start_bulk_job`]), or 0 when the
    /// adapter runs no bulk jobs.
    pub max_bulk_items: usize,
}

/// Where a bulk job stands ([`SourceAdapter::poll_bulk_job`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkProgress {
    /// The CRM is still working on it: poll again later.
    Running,
    /// Done: one result per item, in the items' order, classified like [`SourceAdapter::push`]
    /// results (a record the CRM did not process is a `Retryable` error).
    Finished(Vec<PushResult>),
}

/// The outcome of [`SourceAdapter::push_if_unmodified`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionalPush {
    /// The record was still at the given version: the edit landed, and this is what the CRM
    /// stored, as [`SourceAdapter::push`] confirms it.
    Landed(ConfirmedContact),
    /// The record was modified after the given version (by a person, a workflow, another
    /// integration): nothing was written; read it again before deciding what to write.
    ModifiedSince,
}

/// The contact's relation to its customer (company, account), in the CRM's ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CustomerLink {
    /// The edit does not touch the relation.
    #[default]
    Unchanged,
    /// Link the contact to the CRM record `id` (replacing the link to `previous`, the CRM id
    /// of the customer it was linked to, when known).
    Link {
        /// The CRM id of the customer to link to.
        id: String,
        /// The CRM id of the customer it was linked to, when known.
        previous: Option<String>,
    },
    /// Remove the contact's link to `previous`, when known.
    Unlink {
        /// The CRM id of the customer it was linked to, when known.
        previous: Option<String>,
    },
}

/// One contact's edit, ready for the CRM. Serialisable, so that a daemon can keep the items
/// of a bulk job across a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushItem {
    /// The record's id in the CRM.
    pub source_id: String,
    /// The field changes. Never holds `unified_customer_id`: that travels as `customer`.
    pub patch: ContactPatch,
    /// The change of the contact's customer link, in the CRM's ids.
    pub customer: CustomerLink,
}

/// What the CRM holds after a successful push: its stored values of the mapped fields it
/// returned (normalised by the CRM, e.g. a lower-cased email), and its record version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfirmedContact {
    /// The CRM's stored value of each field it knows, after the write (`None`: empty).
    pub values: BTreeMap<ContactField, Option<String>>,
    /// The CRM's last-modified stamp (`updatedAt`, `LastModifiedDate`), kept as the base for
    /// conflict detection.
    pub crm_version: Option<String>,
    /// When the CRM created the record (RFC 3339).
    pub created_at: Option<String>,
    /// The field values landed but the customer link that followed them did not (HubSpot's
    /// association call failed): the dispatcher confirms the values and retries only the
    /// link, according to this error's class.
    pub link_error: Option<AdapterError>,
}

/// The outcome of one item of a push.
pub type PushResult = Result<ConfirmedContact, AdapterError>;

/// A contact as the CRM holds it, from [`SourceAdapter::pull`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceContact {
    /// The record's id in the CRM.
    pub source_id: String,
    /// The record's values, by unified field (`None`: empty in the CRM).
    pub values: BTreeMap<ContactField, Option<String>>,
    /// The CRM id of the contact's company or account, when it has one.
    pub customer_source_id: Option<String>,
    /// When the CRM created the record, as the CRM reports it.
    pub created_at: Option<String>,
    /// The CRM's version stamp of the record (last modified time, ETag).
    pub crm_version: Option<String>,
    /// False when the CRM holds the record as deleted or archived.
    pub is_active: bool,
}

/// One page of a CRM's contacts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactPage {
    /// The page's contacts.
    pub contacts: Vec<SourceContact>,
    /// Pass to the next [`SourceAdapter::pull`] call; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The CRM's own count of API calls against its budget (e.g. Salesforce's daily requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiUsage {
    /// Calls counted against the budget so far.
    pub used: u64,
    /// The budget: calls allowed in its period.
    pub limit: u64,
}

/// A CRM provider. One value serves one configured connection (one CRM account).
///
/// Contract:
/// - [`push`](Self::push) returns exactly one result per item, in the items' order. A failure
///   of the whole call (rate limit, outage) is that error repeated for every item.
/// - Errors are classified ([`crate::ErrorKind`]) from the CRM's status and error code, and
///   keep the CRM's code and message.
/// - The adapter paces itself to the CRM's rate limit and refreshes its own credentials; an
///   `Unauthorized` error means a refresh was tried and failed.
/// - A push may be repeated after a crash (delivery is at least once), so pushing the same
///   values twice must be harmless.
#[async_trait]
pub trait SourceAdapter: Send + Sync {
    /// The `source_system` this adapter serves (`hubspot`, `salesforce`).
    fn system(&self) -> &str;

    /// What the CRM allows: batch size, customer links, timeouts, reads.
    fn capabilities(&self) -> Capabilities;

    /// The connection's field table.
    fn mapping(&self) -> &FieldMapping;

    /// The CRM's limits applied to an edit before it is accepted. Defaults to the field
    /// table's length and required-field rules.
    fn validate(&self, patch: &ContactPatch) -> Vec<FieldViolation> {
        self.mapping().validate(patch)
    }

    /// Waits until the CRM's rate limit leaves room for a request. The dispatcher takes its
    /// next batch from the queue only then, so edits arriving meanwhile join that batch
    /// instead of waiting behind a small one. Defaults to no wait.
    async fn wait_for_capacity(&self) {}

    /// Pushes up to `capabilities().max_batch_size` edits, each to a different record.
    async fn push(&self, items: &[PushItem]) -> Vec<PushResult>;

    /// Reads one page of the CRM's contacts, starting after `cursor`.
    async fn pull(&self, cursor: Option<&str>) -> Result<ContactPage, AdapterError>;

    /// Writes one record only if the CRM still holds it at `unmodified_since` (a
    /// `crm_version` this adapter answered), closing the gap between the conflict check's
    /// read and the write. Adapters that declare `conditional_update` implement it; the
    /// default refuses.
    async fn push_if_unmodified(
        &self,
        item: &PushItem,
        unmodified_since: &str,
    ) -> Result<ConditionalPush, AdapterError> {
        let _ = (item, unmodified_since);
        Err(AdapterError::misconfigured(
            "CONDITIONAL_UPDATE_NOT_SUPPORTED",
            format!("the {} adapter cannot write conditionally", self.system()),
        ))
    }

    /// Prepares a bulk job writing `items` (up to `capabilities().max_bulk_items`, each to a
    /// different record) and answers its id. The job does not run until
    /// [`close_bulk_job`](Self::close_bulk_job): between the two the daemon keeps the id, so
    /// that a job that runs is always one it knows of. Adapters that declare
    /// `max_bulk_items` implement it; the default refuses.
    async fn start_bulk_job(&self, items: &[PushItem]) -> Result<String, AdapterError> {
        let _ = items;
        Err(AdapterError::misconfigured(
            "BULK_NOT_SUPPORTED",
            format!("the {} adapter runs no bulk jobs", self.system()),
        ))
    }

    /// Lets the prepared job `job_id` run. An error whose class is not `OutcomeUnknown`
    /// means the job will never run (its items go back to the queue); after
    /// `OutcomeUnknown`, [`poll_bulk_job`](Self::poll_bulk_job) finds out.
    async fn close_bulk_job(&self, job_id: &str) -> Result<(), AdapterError> {
        let _ = job_id;
        Err(AdapterError::misconfigured(
            "BULK_NOT_SUPPORTED",
            format!("the {} adapter runs no bulk jobs", self.system()),
        ))
    }

    /// Asks how the bulk job `job_id`, started with `items` (the same items, in the same
    /// order: the daemon keeps them across restarts), is doing.
    async fn poll_bulk_job(
        &self,
        job_id: &str,
        items: &[PushItem],
    ) -> Result<BulkProgress, AdapterError> {
        let _ = (job_id, items);
        Err(AdapterError::misconfigured(
            "BULK_NOT_SUPPORTED",
            format!("the {} adapter runs no bulk jobs", self.system()),
        ))
    }

    /// Reads the CRM's current values of up to `capabilities().max_batch_size` records, for
    /// the conflict check before a write: in as few calls as the CRM allows (HubSpot's batch
    /// read, one Salesforce SOQL query). A record the CRM does not have is left out of the
    /// answer. Adapters that declare `reads_records` implement it; the default refuses.
    async fn read(&self, source_ids: &[String]) -> Result<Vec<SourceContact>, AdapterError> {
        let _ = source_ids;
        Err(AdapterError::misconfigured(
            "READ_NOT_SUPPORTED",
            format!(
                "the {} adapter cannot read records before writing",
                self.system()
            ),
        ))
    }

    /// Whether the CRM holds `ours` already when its stored value is `crm`, by the CRM's
    /// own rules (case of emails, trimming, an empty string as a clear). A field the CRM
    /// holds already is not sent. Defaults to: equal, with an empty string the same as no
    /// value.
    fn same_value(&self, field: ContactField, crm: Option<&str>, ours: Option<&str>) -> bool {
        let _ = field;
        crm.filter(|value| !value.is_empty()) == ours.filter(|value| !value.is_empty())
    }

    /// The CRM's canonical form of a record id, applied at import and pull so that one record
    /// has one id (Salesforce: the 18-character form of a 15-character id). An id the CRM
    /// could never have issued is refused with a message. Defaults to the id unchanged.
    fn normalize_source_id(&self, id: &str) -> Result<String, String> {
        Ok(id.to_string())
    }

    /// How long until the CRM's daily budget resets, when it resets at a known time
    /// (HubSpot: midnight in the account's time zone). `None` for a rolling budget
    /// (Salesforce's last 24 hours) or when unknown.
    fn budget_resets_in(&self) -> Option<Duration> {
        None
    }

    /// How full the CRM's short rate-limit window is now, from 0 (empty) to 1 (no room):
    /// while it binds, a call is scarce, and the dispatcher lingers to fill each batch.
    /// Defaults to 0 (no short window known).
    fn rate_limit_pressure(&self) -> f64 {
        0.0
    }

    /// The CRM's count of calls against its budget, when the CRM reports one.
    fn api_usage(&self) -> Option<ApiUsage> {
        None
    }
}

/// Durable storage an adapter may use for credentials that change at run time (a rotated
/// OAuth refresh token). Keys are the adapter's own; the daemon scopes them per connection.
pub trait CredentialStore: Send + Sync {
    /// The value saved under `key`, if any.
    fn load(&self, key: &str) -> Option<String>;
    /// Saves `value` under `key`, durably; an error says why it could not.
    fn save(&self, key: &str, value: &str) -> Result<(), String>;
}

/// Builds a provider's adapter from a connection's config. The daemon holds one factory per
/// provider; adding a provider is adding its factory to that list.
pub trait AdapterFactory: Send + Sync {
    /// The `system` value in config that selects this provider.
    fn system(&self) -> &'static str;

    /// Validates the connection's settings (unknown keys, missing secrets) and builds the
    /// adapter. Must not contact the CRM.
    fn build(
        &self,
        config: &ConnectionConfig,
        credentials: Arc<dyn CredentialStore>,
    ) -> Result<Arc<dyn SourceAdapter>, ConfigError>;
}
