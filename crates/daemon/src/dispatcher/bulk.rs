//! Bulk jobs: when a connection's queue holds more ready edits than its `bulk_threshold`,
//! they go as one bulk job of the CRM (Salesforce Bulk API 2.0: a handful of calls for
//! thousands of records) instead of many batch calls. A running job's id and items are kept
//! in the store, so a restarted daemon resumes polling it instead of sending them again.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::*;

/// Where running jobs are kept in the store's own values: `bulk_job/CONNECTION/JOB_ID`.
const META_PREFIX: &str = "bulk_job/";
/// How often a running job is asked about.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait between two polls of a job whose polls keep failing.
const MAX_POLL_WAIT: Duration = Duration::from_secs(300);

/// A bulk job as the store keeps it while it runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct BulkJob {
    pub connection: String,
    pub job_id: String,
    pub edits: Vec<BulkEdit>,
}

/// One edit of a running job: what reconciling its result needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct BulkEdit {
    contact_id: String,
    attempts: u32,
    item: PushItem,
    link_change: Option<Option<String>>,
    unchanged: BTreeMap<ContactField, Option<String>>,
}

impl BulkEdit {
    fn claimed(&self) -> ClaimedEdit {
        ClaimedEdit {
            contact_id: self.contact_id.clone(),
            source_id: self.item.source_id.clone(),
            patch: self.item.patch.clone(),
            attempts: self.attempts,
            linked_customer_source_id: None,
        }
    }
}

impl BulkJob {
    /// The contacts whose edits the job carries.
    pub fn contact_ids(&self) -> Vec<String> {
        self.edits
            .iter()
            .map(|edit| edit.contact_id.clone())
            .collect()
    }
}

fn key(connection: &str, job_id: &str) -> String {
    format!("{META_PREFIX}{connection}/{job_id}")
}

/// Every job a daemon left running, as the store keeps them.
pub async fn stored_jobs(store: &Store) -> Result<Vec<BulkJob>, StoreError> {
    let mut jobs = Vec::new();
    for (key, value) in store.meta_under(META_PREFIX).await? {
        match serde_json::from_str(&value) {
            Ok(job) => jobs.push(job),
            Err(error) => tracing::error!(%key, %error, "an unreadable bulk job record is skipped"),
        }
    }
    Ok(jobs)
}

/// The contacts whose edits running jobs hold: at a restart they stay in flight, for the job
/// to answer for them.
pub async fn held_contacts(store: &Store) -> Result<HashSet<String>, StoreError> {
    Ok(stored_jobs(store)
        .await?
        .into_iter()
        .flat_map(|job| job.contact_ids())
        .collect())
}

/// How many edits a bulk job of this connection would take now, when its queue is deep
/// enough for one: the adapter runs bulk jobs, the connection writes without reading first,
/// and more than `bulk_threshold` edits are ready.
pub async fn bulk_size(store: &Store, connection: &Connection) -> Option<usize> {
    let max = connection.adapter().capabilities().max_bulk_items;
    if max == 0 || connection.settings.on_conflict.reads_first() {
        return None;
    }
    let threshold = usize::try_from(connection.settings.dispatch.bulk_threshold).ok()?;
    let (ready, _) = store
        .ready_window(connection.name(), now_ms(), threshold.saturating_add(1))
        .await
        .ok()?;
    (ready > threshold).then_some(max)
}

/// Sends the claimed edits as one bulk job and reconciles each edit once the job is done.
pub async fn run(store: &Store, connection: &Connection, claimed: Vec<ClaimedEdit>) {
    let outgoing = prepare_all(store, connection, claimed).await;
    if outgoing.is_empty() {
        return;
    }
    let items: Vec<PushItem> = outgoing.iter().map(|o| o.item.clone()).collect();
    ConnectionMetrics::add(&connection.metrics.push_calls, 1);
    connection.metrics.recent.call();
    let job_id = match connection.adapter().start_bulk_job(&items).await {
        Ok(job_id) => job_id,
        Err(error) => {
            for prepared in &outgoing {
                reconcile(store, connection, &prepared.edit, None, Err(error.clone())).await;
            }
            return;
        }
    };
    ConnectionMetrics::add(&connection.metrics.bulk_jobs, 1);
    tracing::info!(connection = connection.name(), %job_id, edits = items.len(), "bulk job started");
    let job = BulkJob {
        connection: connection.name().to_string(),
        job_id,
        edits: outgoing
            .into_iter()
            .map(|prepared| BulkEdit {
                contact_id: prepared.edit.contact_id,
                attempts: prepared.edit.attempts,
                item: prepared.item,
                link_change: prepared.link_change,
                unchanged: prepared.unchanged,
            })
            .collect(),
    };
    // Kept before the job may run: a job that runs is always one a restart resumes.
    let record = serde_json::to_string(&job).expect("a bulk job serialises");
    if let Err(error) = store.set_meta(&key(&job.connection, &job.job_id), &record) {
        tracing::error!(connection = connection.name(), job_id = %job.job_id, %error, "keeping the bulk job in the store failed; it is not run");
        let error = AdapterError::retryable("STORE", error.to_string());
        let results = vec![Err(error); job.edits.len()];
        return settle(store, connection, &job, results).await;
    }
    match connection.adapter().close_bulk_job(&job.job_id).await {
        Ok(()) => {}
        // Whether the job runs is unknown: polling finds out.
        Err(error) if error.kind == ErrorKind::OutcomeUnknown => {}
        Err(error) => {
            // The job will never run: its edits go on as the error's class says.
            let results = vec![Err(error); job.edits.len()];
            return settle(store, connection, &job, results).await;
        }
    }
    follow(store, connection, job).await;
}

/// Polls a running job until it is done, then reconciles every edit and forgets the job.
pub async fn follow(store: &Store, connection: &Connection, job: BulkJob) {
    let items: Vec<PushItem> = job.edits.iter().map(|edit| edit.item.clone()).collect();
    let in_flight = InFlight::count(&connection.metrics.in_flight, items.len() as u64);
    let waits = RetryPolicy {
        initial: POLL_INTERVAL,
        max: MAX_POLL_WAIT,
        max_attempts: u32::MAX,
    };
    let mut failed_polls = 0;
    let results = loop {
        let wait = match failed_polls {
            0 => POLL_INTERVAL,
            failed => waits.delay(failed),
        };
        tokio::time::sleep(wait).await;
        match connection
            .adapter()
            .poll_bulk_job(&job.job_id, &items)
            .await
        {
            Ok(BulkProgress::Running) => failed_polls = 0,
            Ok(BulkProgress::Finished(results)) => break results,
            Err(error) => {
                failed_polls += 1;
                tracing::warn!(connection = connection.name(), job_id = %job.job_id, code = %error.code, message = %error.message, "polling a bulk job failed; asking again later");
            }
        }
    };
    drop(in_flight);
    let results = match results.len() == items.len() {
        true => results,
        false => {
            tracing::error!(connection = connection.name(), job_id = %job.job_id, "the adapter broke its contract: one result per item; retrying the edits");
            let error = AdapterError::retryable("ADAPTER_CONTRACT", "wrong number of results");
            vec![Err(error); items.len()]
        }
    };
    settle(store, connection, &job, results).await;
}

/// Reconciles each edit of a job with its result, then forgets the job.
async fn settle(store: &Store, connection: &Connection, job: &BulkJob, results: Vec<PushResult>) {
    for (edit, result) in job.edits.iter().zip(results) {
        let result = with_crm_values(result, &edit.unchanged);
        reconcile(
            store,
            connection,
            &edit.claimed(),
            edit.link_change.clone(),
            result,
        )
        .await;
    }
    if let Err(error) = store.remove_meta(&key(&job.connection, &job.job_id)).await {
        tracing::error!(connection = connection.name(), job_id = %job.job_id, %error, "forgetting a finished bulk job failed");
    }
    tracing::info!(connection = connection.name(), job_id = %job.job_id, edits = job.edits.len(), "bulk job reconciled");
    connection.wake.notify_one();
}
