//! Per connection: take ready contacts, push them in batches through the adapter, and
//! reconcile each item's result into the store.
//!
//! A contact with a push in flight is never in the ready queue, so pushes for one contact
//! never overlap and its edits reach the CRM in order; later edits wait, coalesced, in its
//! pending patch. The decision after a failure comes from the error's class alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use unisync_core::{
    AdapterError, BulkProgress, ConditionalPush, ConfirmedContact, ContactField, CustomerLink,
    ErrorKind, PushItem, PushResult, SourceAdapter, SourceContact,
};

use crate::conflict::{FieldConflict, OnConflict, find_conflicts};
use crate::connections::{Connection, ConnectionMetrics, Connections, Pause, PauseReason};
use crate::retry_policy::RetryPolicy;
use crate::store::{ClaimedEdit, LinkFailure, MergeOutcome, Store, StoreError, now_ms};
pub use leadership::Role;

pub mod bulk;
pub mod leadership;
#[cfg(test)]
mod tests;

/// How long a connection waits after a rate limit that named no time: HubSpot's window.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);
/// How long a connection waits after a spent daily budget that named no reset time.
const DEFAULT_QUOTA_WAIT: Duration = Duration::from_secs(3600);
/// The longest wait between two probes of a connection the CRM refuses as a whole.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(300);
/// The most edits a probe carries: enough to learn whether the CRM takes the connection
/// again, few enough that a refusal costs little.
const PROBE_BATCH: usize = 1;
/// How long an idle dispatcher sleeps before looking at its queue again.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Every connection's dispatcher, running, and on a shared store the task that decides
/// which connections this node leads.
pub struct Dispatchers {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    leadership: Option<leadership::Running>,
}

impl Dispatchers {
    /// Starts one dispatcher per enabled connection; a disabled one keeps its queue. On sled
    /// this process leads every connection; on PostgreSQL each connection is pushed by the
    /// one node that holds its leadership (see [`leadership`]). `member`: this process is a
    /// daemon that takes its share of the connections; a one-shot command (a backfill) leads
    /// only connections no daemon leads.
    pub fn start(store: &Store, connections: &Connections, member: bool) -> Dispatchers {
        let (stop, stopped) = watch::channel(false);
        let enabled: Vec<Arc<Connection>> = connections
            .iter()
            .filter(|connection| connection.settings.enabled)
            .cloned()
            .collect();
        let shared = store.lease_ms().is_some();
        let seats: BTreeMap<String, Arc<leadership::Seat>> = enabled
            .iter()
            .map(|connection| {
                let seat = leadership::Seat::new(if shared { Role::Follow } else { Role::Lead });
                (connection.name().to_string(), Arc::new(seat))
            })
            .collect();
        let tasks = enabled
            .iter()
            .map(|connection| {
                let seat = seats[connection.name()].clone();
                tokio::spawn(run(
                    store.clone(),
                    connection.clone(),
                    seat,
                    stopped.clone(),
                ))
            })
            .collect();
        let leadership =
            shared.then(|| leadership::Running::start(store, connections, seats, member));
        Dispatchers {
            stop,
            tasks,
            leadership,
        }
    }

    /// Stops claiming new work and waits for the pushes in flight to be reconciled; then
    /// gives every leadership up.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(leadership) = self.leadership {
            leadership.stop().await;
        }
    }
}

/// Runs one connection's dispatcher until `shutdown` turns true: a term of pushing each time
/// this node is given the connection's leadership (on sled: one term, from start to stop).
async fn run(
    store: Store,
    connection: Arc<Connection>,
    seat: Arc<leadership::Seat>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut role = seat.role.subscribe();
    let shared = store.lease_ms().is_some();
    loop {
        tokio::select! {
            _ = role.wait_for(|role| *role == Role::Lead) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        seat.serving.send_replace(true);
        if shared {
            tracing::info!(
                connection = connection.name(),
                "this node leads the connection: it pushes its edits"
            );
            if let Err(error) = connection.renew_adapter() {
                tracing::error!(connection = connection.name(), %error, "building the connection's adapter failed");
            }
        }
        let term = Term::new(&connection);
        let ended = tokio::select! {
            _ = term.run(&store, &connection, shared) => unreachable!("a term runs until it is ended"),
            role = role.wait_for(|role| *role != Role::Lead) => role.map(|role| *role).unwrap_or(Role::Follow),
            _ = shutdown.wait_for(|stop| *stop) => Role::HandOff,
        };
        match ended {
            // Stopping, or handing the connection to another node: the pushes in flight are
            // finished and reconciled first.
            Role::HandOff | Role::Lead => term.finish().await,
            // The leadership was lost (the node's session to the database ended): another
            // node may lead already, so this one stops pushing at once. What it had in
            // flight is leased to it, and pushed again once the leases expire.
            Role::Follow => {
                tracing::warn!(
                    connection = connection.name(),
                    "this node lost the connection's leadership: its pushes in flight are abandoned"
                );
                term.abandon();
            }
        }
        seat.serving.send_replace(false);
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One term of leading a connection: its push slots and the push tasks it started.
struct Term {
    concurrency: usize,
    pushes: Arc<Semaphore>,
    tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Term {
    fn new(connection: &Connection) -> Term {
        let concurrency = connection.settings.dispatch.concurrency;
        Term {
            concurrency,
            pushes: Arc::new(Semaphore::new(concurrency)),
            tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    /// Runs `work` as a task of this term, holding `permit` until it ends.
    fn spawn(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut tasks = self.tasks.lock().unwrap();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    /// Waits (bounded) for every push in flight to be reconciled; what is not stays in flight
    /// and goes back to the queue at the next start (sled) or when its lease expires.
    async fn finish(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            self.pushes.acquire_many(self.concurrency as u32),
        )
        .await;
    }

    /// Stops every push of the term at once.
    fn abandon(&self) {
        self.tasks.lock().unwrap().abort_all();
    }

    /// Claims and pushes until the term is ended from outside (the future is dropped).
    /// `shared`: the store is shared with other nodes, so the first push of a term goes alone
    /// and the adapter learns from the CRM's answer what the last leader left of its limits.
    async fn run(&self, store: &Store, connection: &Arc<Connection>, shared: bool) {
        let pushes = &self.pushes;
        let concurrency = self.concurrency;
        let batch_size = connection.adapter().capabilities().max_batch_size.max(1);
        resume_bulk_jobs(store, connection, self, shared).await;
        let mut first_alone = shared;
        loop {
            if let Some(pause) = connection.pause() {
                let wait = Duration::from_millis(pause.until_ms.saturating_sub(now_ms()));
                if !wait.is_zero() || !pause.reason.lifts_by_probe() {
                    tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
                    continue;
                }
                // The CRM refused the connection as a whole and the wait is over: one small
                // batch alone finds out whether it takes the connection again.
                self.probe(store, connection).await;
                continue;
            }
            if let Some((wait, usage)) = connection.reserve_pause() {
                let error = AdapterError::quota_exhausted(
                    "BUDGET_RESERVE",
                    format!(
                        "{} of {} daily API requests used: the last {:.0} % are left to the account's other integrations",
                        usage.used,
                        usage.limit,
                        connection.settings.dispatch.reserve_share * 100.0
                    ),
                    Some(wait),
                );
                pause_connection(connection, PauseReason::QuotaExhausted, wait, &error);
                continue;
            }
            let permits = if first_alone { concurrency as u32 } else { 1 };
            let permit = pushes
                .clone()
                .acquire_many_owned(permits)
                .await
                .expect("semaphore is never closed");
            // Claim only once the CRM would take the request, so the batch holds everything
            // queued by then.
            connection.adapter().wait_for_capacity().await;
            if let Some(bulk_size) = bulk::bulk_size(store, connection).await {
                let claimed_at = Instant::now();
                let claimed = match store.claim(connection.name(), now_ms(), bulk_size).await {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::error!(connection = connection.name(), %error, "claiming from the queue failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let (store, connection) = (store.clone(), connection.clone());
                self.spawn(permit, async move {
                    let ids = contact_ids(&claimed);
                    let job = bulk::run(&store, &connection, claimed);
                    holding_leases(&store, &connection, ids, claimed_at, job).await;
                });
                continue;
            }
            if let Some(wait) = linger_wait(store, connection, batch_size).await {
                drop(permit);
                tokio::select! {
                    _ = connection.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let claimed_at = Instant::now();
            let claimed = match store.claim(connection.name(), now_ms(), batch_size).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(connection = connection.name(), %error, "claiming from the queue failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permit);
                let wait = match store.next_ready_at(connection.name()).await {
                    Ok(Some(at)) => {
                        Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE_POLL)
                    }
                    _ => IDLE_POLL,
                };
                tokio::select! {
                    _ = connection.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            // The first push of a term holds every slot until it is done.
            first_alone = false;
            let (store, connection) = (store.clone(), connection.clone());
            self.spawn(permit, async move {
                push_supervised(&store, &connection, claimed, claimed_at).await;
            });
        }
    }

    /// Sends one probe batch while nothing else of the connection is in flight, and ends the
    /// pause if the CRM took the request (whatever it said about the edit in it). The probe
    /// is a push of the term like any other, holding every slot: a stop or a hand-off waits
    /// for it to be reconciled; the term goes on once it is.
    async fn probe(&self, store: &Store, connection: &Arc<Connection>) {
        let Some(probed) = connection.pause() else {
            return;
        };
        let slots = self.concurrency as u32;
        let all = self
            .pushes
            .clone()
            .acquire_many_owned(slots)
            .await
            .expect("semaphore is never closed");
        connection.adapter().wait_for_capacity().await;
        let claimed_at = Instant::now();
        match store.claim(connection.name(), now_ms(), PROBE_BATCH).await {
            Ok(claimed) if claimed.is_empty() => {
                drop(all);
                // Nothing to probe with: the pause stands until an edit arrives.
                tokio::time::timeout(IDLE_POLL, connection.wake.notified())
                    .await
                    .ok();
            }
            Ok(claimed) => {
                tracing::info!(
                    connection = connection.name(),
                    reason = ?probed.reason,
                    code = %probed.code,
                    "probing whether the CRM takes the connection again"
                );
                let (store, connection) = (store.clone(), connection.clone());
                self.spawn(all, async move {
                    push_supervised(&store, &connection, claimed, claimed_at).await;
                    connection.end_probed_pause(&probed);
                    if connection.pause().is_none() {
                        tracing::info!(
                            connection = connection.name(),
                            "the CRM takes the connection again; pushing resumes"
                        );
                    }
                });
                // Its answer decides what comes next: the slots come back once it is in.
                let _done = self.pushes.acquire_many(slots).await;
            }
            Err(error) => {
                drop(all);
                tracing::error!(connection = connection.name(), %error, "claiming from the queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn contact_ids(claimed: &[ClaimedEdit]) -> Vec<String> {
    claimed.iter().map(|edit| edit.contact_id.clone()).collect()
}

/// Runs `work`, the push of the edits of `ids` claimed at `claimed_at`, while renewing this
/// node's leases on them (on a shared store; on sled it just runs `work`). The leases are
/// renewed every quarter of their length; `work` is stopped as soon as another node holds one
/// of them, or once no renewal went through until the connection's settle time before the
/// lease ends: a request sent until then has settled when the lease ends and another node
/// may push the contact again.
async fn holding_leases(
    store: &Store,
    connection: &Connection,
    ids: Vec<String>,
    claimed_at: Instant,
    work: impl std::future::Future<Output = ()>,
) {
    let Some(lease_ms) = store.lease_ms() else {
        return work.await;
    };
    let lease = Duration::from_millis(lease_ms);
    let settle = connection.settle_time();
    let renewal = async {
        let mut held_until = claimed_at + lease;
        loop {
            let deadline = held_until.checked_sub(settle).unwrap_or(held_until);
            let next = (Instant::now() + lease / 4).min(deadline);
            tokio::time::sleep_until(next.into()).await;
            if Instant::now() >= deadline {
                return "no renewal went through in time";
            }
            let sent = Instant::now();
            match tokio::time::timeout_at(deadline.into(), store.renew_leases(&ids)).await {
                Ok(Ok(taken)) if taken.is_empty() => held_until = sent + lease,
                Ok(Ok(_)) => return "another node holds the lease of one of its edits",
                Ok(Err(error)) => {
                    tracing::warn!(connection = connection.name(), %error, "renewing the leases of a push failed; trying again");
                }
                Err(_) => return "no renewal went through in time",
            }
        }
    };
    tokio::select! {
        _ = work => {}
        why = renewal => {
            tracing::warn!(connection = connection.name(), contacts = ids.len(), reason = why, "a push is stopped: this node can no longer hold its leases");
        }
    }
}

/// Goes on polling the bulk jobs of this connection that a stopped daemon (or, on a shared
/// store, the connection's last leader) left running, each holding a push slot of the term
/// until it is reconciled. On a shared store their edits' leases become this node's first,
/// so that no node claims them again while the job runs.
async fn resume_bulk_jobs(store: &Store, connection: &Arc<Connection>, term: &Term, shared: bool) {
    let jobs = match bulk::stored_jobs(store).await {
        Ok(jobs) => jobs,
        Err(error) => {
            tracing::error!(connection = connection.name(), %error, "reading the running bulk jobs failed");
            return;
        }
    };
    for job in jobs
        .into_iter()
        .filter(|job| job.connection == connection.name())
    {
        let ids = job.contact_ids();
        let adopted_at = Instant::now();
        if shared && let Err(error) = store.adopt_leases(&ids).await {
            tracing::error!(connection = connection.name(), job_id = %job.job_id, %error, "taking over the leases of a running bulk job failed; it is resumed later");
            continue;
        }
        let permit = term
            .pushes
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        tracing::info!(connection = connection.name(), job_id = %job.job_id, "resuming a bulk job left running");
        let (store, connection) = (store.clone(), connection.clone());
        term.spawn(permit, async move {
            let follow = bulk::follow(&store, &connection, job);
            holding_leases(&store, &connection, ids, adopted_at, follow).await;
        });
    }
}

/// How much longer to wait before claiming, so that the batch fills: while fewer edits than
/// a full batch are ready and the longest-waiting of them has waited less than the linger.
/// `None`: claim now.
async fn linger_wait(
    store: &Store,
    connection: &Connection,
    batch_size: usize,
) -> Option<Duration> {
    let linger = connection.linger().as_millis() as u64;
    if linger == 0 {
        return None;
    }
    let now = now_ms();
    let (ready, oldest) = store
        .ready_window(connection.name(), now, batch_size)
        .await
        .ok()?;
    let due = oldest? + linger;
    (ready < batch_size && due > now).then(|| Duration::from_millis(due - now))
}

/// Pushes a claimed batch in a task of its own. If that task fails (a panic in an adapter or
/// in reconcile), the edits it left in flight go back to the queue now, not at the next start.
///
/// The push holds its edits' leases while it runs (see [`holding_leases`]); stopping this
/// future stops the push.
async fn push_supervised(
    store: &Store,
    connection: &Arc<Connection>,
    claimed: Vec<ClaimedEdit>,
    claimed_at: Instant,
) {
    let ids = contact_ids(&claimed);
    let mut task = {
        let (store, connection) = (store.clone(), connection.clone());
        AbortOnDrop(tokio::spawn(async move {
            push_batch(&store, &connection, claimed).await
        }))
    };
    let mut outcome = None;
    holding_leases(store, connection, ids.clone(), claimed_at, async {
        outcome = Some((&mut task.0).await);
    })
    .await;
    let Some(Err(failure)) = outcome else {
        return;
    };
    tracing::error!(connection = connection.name(), error = %failure, "a push task failed; its edits go back to the queue");
    let error = AdapterError::retryable("PUSH_TASK_FAILED", failure.to_string());
    let retry_at = now_ms() + connection.settings.dispatch.retry_initial_ms;
    for id in ids {
        let still_in_flight = store
            .contact(&id)
            .await
            .map(|entry| entry.is_some_and(|entry| entry.sync.in_flight.is_some()));
        let outcome = match still_in_flight {
            Ok(true) => store
                .retry_later(&id, retry_at, true, &error)
                .await
                .map(drop),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::error!(connection = connection.name(), contact = %id, %error, "re-queuing an edit of a failed push task failed");
        }
    }
    connection.wake.notify_one();
}

/// A task that is stopped when its handle is dropped: a push stopped from outside stops its
/// request too.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a claimed edit becomes on its way to the CRM.
struct Outgoing {
    edit: ClaimedEdit,
    item: PushItem,
    /// The link change to record on success: `Some(Some(id))` linked, `Some(None)` unlinked.
    link_change: Option<Option<String>>,
    /// Fields of the edit that are not sent, with the CRM's values (it holds ours already,
    /// or its own value won a conflict): confirmed with the rest.
    unchanged: BTreeMap<ContactField, Option<String>>,
    /// The contact's base: the CRM's values as last confirmed.
    base: BTreeMap<ContactField, Option<String>>,
    /// The record's version when the conflict check read it, to write against.
    version: Option<String>,
}

impl Outgoing {
    /// Whether nothing is left to send: the CRM holds every value of the edit already.
    fn is_no_op(&self) -> bool {
        self.item.patch.is_empty() && self.item.customer == CustomerLink::Unchanged
    }

    /// The CRM's answer with the unchanged fields confirmed beside the sent ones.
    fn with_unchanged(&self, result: PushResult) -> PushResult {
        with_crm_values(result, &self.unchanged)
    }
}

/// The CRM's answer with `unchanged` (fields not sent, with the CRM's values) confirmed
/// beside the sent ones.
fn with_crm_values(
    result: PushResult,
    unchanged: &BTreeMap<ContactField, Option<String>>,
) -> PushResult {
    result.map(|mut confirmed| {
        for (field, value) in unchanged {
            confirmed
                .values
                .entry(*field)
                .or_insert_with(|| value.clone());
        }
        confirmed
    })
}

/// Prepares every claimed edit for the CRM; an edit the CRM holds entirely already is
/// confirmed at once, without a call, and one that cannot be prepared is reconciled as its
/// error says. Answers what is left to send.
async fn prepare_all(
    store: &Store,
    connection: &Connection,
    claimed: Vec<ClaimedEdit>,
) -> Vec<Outgoing> {
    let metrics = &connection.metrics;
    let mut outgoing = Vec::with_capacity(claimed.len());
    for edit in claimed {
        match prepare(store, connection.adapter().as_ref(), &edit).await {
            Ok(prepared) => {
                ConnectionMetrics::add(&metrics.fields_unchanged, prepared.unchanged.len() as u64);
                if prepared.is_no_op() {
                    ConnectionMetrics::add(&metrics.edits_unchanged, 1);
                    let result = prepared.with_unchanged(Ok(ConfirmedContact::default()));
                    reconcile(store, connection, &prepared.edit, None, result).await;
                } else {
                    outgoing.push(prepared);
                }
            }
            Err(error) => reconcile(store, connection, &edit, None, Err(error)).await,
        }
    }
    outgoing
}

async fn push_batch(store: &Store, connection: &Connection, claimed: Vec<ClaimedEdit>) {
    let metrics = &connection.metrics;
    let mut outgoing = prepare_all(store, connection, claimed).await;
    if connection.settings.on_conflict.reads_first() && !outgoing.is_empty() {
        outgoing = keep_what_people_changed(store, connection, outgoing).await;
    }
    if outgoing.is_empty() {
        return;
    }
    let items: Vec<PushItem> = outgoing.iter().map(|o| o.item.clone()).collect();
    let in_flight = InFlight::count(&metrics.in_flight, items.len() as u64);
    let started = Instant::now();
    let mut results = match conditional_version(connection, &outgoing) {
        Some(version) => {
            let outcome = connection
                .adapter()
                .push_if_unmodified(&items[0], version)
                .await;
            match outcome {
                Ok(ConditionalPush::Landed(confirmed)) => vec![Ok(confirmed)],
                Ok(ConditionalPush::ModifiedSince) => {
                    drop(in_flight);
                    read_again(store, connection, &outgoing[0].edit).await;
                    return;
                }
                Err(error) => vec![Err(error)],
            }
        }
        None => connection.adapter().push(&items).await,
    };
    ConnectionMetrics::add(&metrics.push_calls, 1);
    metrics.recent.call();
    ConnectionMetrics::add(
        &metrics.push_micros_total,
        started.elapsed().as_micros() as u64,
    );
    drop(in_flight);
    if results.len() != items.len() {
        tracing::error!(
            connection = connection.name(),
            sent = items.len(),
            answered = results.len(),
            "the adapter broke its contract: one result per item; retrying the batch"
        );
        let error = AdapterError::retryable("ADAPTER_CONTRACT", "wrong number of results");
        results = vec![Err(error); items.len()];
    }
    for (prepared, result) in outgoing.into_iter().zip(results) {
        let result = prepared.with_unchanged(result);
        reconcile(
            store,
            connection,
            &prepared.edit,
            prepared.link_change,
            result,
        )
        .await;
    }
    connection.wake.notify_one();
}

/// The record version a lone edit may be written against, closing the gap between the
/// conflict check's read and the write: only for one edit (the CRM's conditional write takes
/// one record; batches keep their one call) whose record was read, on a connection whose
/// adapter writes conditionally.
fn conditional_version<'a>(connection: &Connection, outgoing: &'a [Outgoing]) -> Option<&'a str> {
    match outgoing {
        [lone] if connection.adapter().capabilities().conditional_update => lone.version.as_deref(),
        _ => None,
    }
}

/// A person changed the record between the read and the conditional write, which wrote
/// nothing: the edit goes back to the queue at once, without losing an attempt, and its next
/// push reads the record again.
async fn read_again(store: &Store, connection: &Connection, edit: &ClaimedEdit) {
    ConnectionMetrics::add(&connection.metrics.modified_since_read, 1);
    let error = AdapterError::retryable(
        "MODIFIED_SINCE_READ",
        "the record changed between the conflict check's read and the write; read again",
    );
    if let Err(error) = store
        .retry_later(&edit.contact_id, now_ms(), false, &error)
        .await
    {
        tracing::error!(connection = connection.name(), contact = %edit.contact_id, %error, "re-queuing an edit to read its record again failed");
    }
    connection.wake.notify_one();
}

/// Counts edits in the in-flight gauge for as long as it lives, so that a push task that
/// fails midway does not leave them counted.
struct InFlight<'a> {
    gauge: &'a AtomicU64,
    edits: u64,
}

impl<'a> InFlight<'a> {
    fn count(gauge: &'a AtomicU64, edits: u64) -> Self {
        ConnectionMetrics::add(gauge, edits);
        InFlight { gauge, edits }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.edits, Ordering::Relaxed);
    }
}

/// Turns a claimed edit into a push item: fields the CRM holds already (by the adapter's
/// rules, against the contact's base) are taken out, and the customer link is resolved to
/// the CRM's id.
async fn prepare(
    store: &Store,
    adapter: &dyn SourceAdapter,
    edit: &ClaimedEdit,
) -> Result<Outgoing, AdapterError> {
    let base = match store.contact(&edit.contact_id).await {
        Ok(entry) => entry.map(|entry| entry.base).unwrap_or_default(),
        Err(error) => return Err(AdapterError::retryable("STORE", error.to_string())),
    };
    let mut patch = edit.patch.clone();
    let previous = edit.linked_customer_source_id.clone();
    let (customer, link_change) = match patch.take(ContactField::UnifiedCustomerId) {
        None => (CustomerLink::Unchanged, None),
        Some(None) => (CustomerLink::Unlink { previous }, Some(None)),
        Some(Some(customer_id)) => match store.customer(&customer_id).await {
            Ok(Some(customer)) => (
                CustomerLink::Link {
                    id: customer.source_id.clone(),
                    previous,
                },
                Some(Some(customer.source_id)),
            ),
            Ok(None) => {
                let error = AdapterError::permanent(
                    "UNKNOWN_CUSTOMER",
                    format!("unified customer {customer_id} is not registered"),
                    Some(ContactField::UnifiedCustomerId.name().to_string()),
                );
                return Err(error);
            }
            Err(error) => return Err(AdapterError::retryable("STORE", error.to_string())),
        },
    };
    let unchanged = patch.take_unchanged(&base, |field, crm, ours| {
        adapter.same_value(field, crm, ours)
    });
    let item = PushItem {
        source_id: edit.source_id.clone(),
        patch,
        customer,
    };
    Ok(Outgoing {
        edit: edit.clone(),
        item,
        link_change,
        unchanged,
        base,
        version: None,
    })
}

/// Reads the CRM's current values of the batch's records (one call) and applies the
/// connection's conflict policy to every field a person changed there since the base: the
/// CRM's value wins (`crm_wins`). Fields the CRM now holds as ours are not sent either.
/// Answers what is still to be pushed; edits left with nothing to send are confirmed here.
async fn keep_what_people_changed(
    store: &Store,
    connection: &Connection,
    outgoing: Vec<Outgoing>,
) -> Vec<Outgoing> {
    let metrics = &connection.metrics;
    let adapter = connection.adapter();
    let adapter = adapter.as_ref();
    let same = |field, crm: Option<&str>, ours: Option<&str>| adapter.same_value(field, crm, ours);
    let ids: Vec<String> = outgoing.iter().map(|o| o.item.source_id.clone()).collect();
    ConnectionMetrics::add(&metrics.read_calls, 1);
    metrics.recent.call();
    let current: HashMap<String, SourceContact> = match adapter.read(&ids).await {
        Ok(records) => records
            .into_iter()
            .map(|record| (record.source_id.clone(), record))
            .collect(),
        Err(error) => {
            // The read failed as a push would have: its class decides for every edit.
            for prepared in &outgoing {
                reconcile(store, connection, &prepared.edit, None, Err(error.clone())).await;
            }
            return Vec::new();
        }
    };
    let mut to_push = Vec::with_capacity(outgoing.len());
    for mut prepared in outgoing {
        // A record the CRM did not return is left to the push, which finds out what it is.
        if let Some(record) = current.get(&prepared.item.source_id) {
            let values = &record.values;
            prepared.version = record.crm_version.clone();
            let conflicts = find_conflicts(&prepared.item.patch, &prepared.base, values, same);
            if !conflicts.is_empty()
                && !settle_conflicts(store, connection, &mut prepared, conflicts).await
            {
                continue;
            }
            let now_held = prepared.item.patch.take_unchanged(values, same);
            prepared.unchanged.extend(now_held);
        }
        if prepared.is_no_op() {
            let result = prepared.with_unchanged(Ok(ConfirmedContact::default()));
            reconcile(store, connection, &prepared.edit, None, result).await;
        } else {
            to_push.push(prepared);
        }
    }
    to_push
}

/// Applies the connection's policy to the fields a person changed in the CRM: they leave
/// the push, and either the CRM's value goes into the unified record (`crm_wins`) or they
/// wait in a conflict letter for an operator (`hold`). Answers whether anything of the edit
/// is still in flight.
async fn settle_conflicts(
    store: &Store,
    connection: &Connection,
    prepared: &mut Outgoing,
    conflicts: BTreeMap<ContactField, FieldConflict>,
) -> bool {
    let id = &prepared.edit.contact_id;
    let policy = connection.settings.on_conflict;
    ConnectionMetrics::add(&connection.metrics.conflicts, conflicts.len() as u64);
    for field in conflicts.keys() {
        tracing::info!(
            connection = connection.name(),
            contact = %id,
            field = field.name(),
            policy = policy.name(),
            "a person changed the field in the CRM since it was last synced; ours is not written"
        );
        prepared.item.patch.take(*field);
    }
    if policy != OnConflict::Hold {
        for (field, conflict) in conflicts {
            prepared.unchanged.insert(field, conflict.crm);
        }
        return true;
    }
    match store.hold_conflicts(id, &conflicts).await {
        Ok(held) => held.in_flight_left,
        Err(error) => {
            tracing::error!(connection = connection.name(), contact = %id, %error, "holding a conflict failed; the edit goes back to the queue");
            let error = AdapterError::retryable("STORE", error.to_string());
            reconcile(store, connection, &prepared.edit, None, Err(error)).await;
            false
        }
    }
}

/// The CRM merged the contact's record into `survivor`: the contact follows it and its edit
/// goes there next, unless the survivor is another contact's record (a dead letter then).
async fn follow_merge(
    store: &Store,
    connection: &Connection,
    id: &str,
    survivor: &str,
    error: &AdapterError,
) -> Result<(), StoreError> {
    match store.repoint(id, survivor, error).await? {
        MergeOutcome::Followed => {
            ConnectionMetrics::add(&connection.metrics.merges_followed, 1);
            tracing::info!(connection = connection.name(), contact = %id, %survivor, "the CRM merged the contact's record; following it to the record that remains");
            connection.wake.notify_one();
        }
        MergeOutcome::SurvivorRegistered(letter) => {
            ConnectionMetrics::add(&connection.metrics.pushed_dead_letter, 1);
            tracing::warn!(connection = connection.name(), contact = %id, %survivor, code = %letter.error.code, "the CRM merged the contact into another contact's record; kept as a dead letter");
        }
    }
    Ok(())
}

/// Records one item's outcome: confirmed, back to the queue, or a dead letter.
async fn reconcile(
    store: &Store,
    connection: &Connection,
    edit: &ClaimedEdit,
    link_change: Option<Option<String>>,
    result: PushResult,
) {
    let metrics = &connection.metrics;
    let id = &edit.contact_id;
    let outcome: Result<(), StoreError> = match result {
        Ok(confirmed) => {
            connection.clear_pause();
            ConnectionMetrics::add(&metrics.pushed_ok, 1);
            metrics.recent.landed();
            match &confirmed.link_error {
                None => store.complete(id, &confirmed, link_change).await,
                Some(error) => {
                    // The fields landed: they are confirmed, and only the link goes on. A
                    // push that carried the link alone keeps the edit's attempts.
                    let link_only = edit.patch.len() == 1;
                    let attempts = if link_only { edit.attempts } else { 0 };
                    let failure = match decide(connection, id, attempts, error) {
                        Decision::RetryAt {
                            not_before,
                            count_attempt,
                        } => LinkFailure::RetryLater {
                            not_before,
                            count_attempt,
                            error,
                        },
                        Decision::DeadLetter { retries_exhausted } => LinkFailure::DeadLetter {
                            error,
                            retries_exhausted,
                        },
                    };
                    store
                        .complete_except_link(id, &confirmed, failure)
                        .await
                        .map(drop)
                }
            }
        }
        Err(error) => match &error.kind {
            ErrorKind::RecordMerged { survivor } => {
                follow_merge(store, connection, id, survivor, &error).await
            }
            _ => match decide(connection, id, edit.attempts, &error) {
                Decision::RetryAt {
                    not_before,
                    count_attempt,
                } => store
                    .retry_later(id, not_before, count_attempt, &error)
                    .await
                    .map(drop),
                Decision::DeadLetter { retries_exhausted } => store
                    .dead_letter(id, &error, retries_exhausted)
                    .await
                    .map(drop),
            },
        },
    };
    if let Err(error) = outcome {
        tracing::error!(connection = connection.name(), contact = %id, %error, "recording a push outcome failed");
    }
}

/// What becomes of an edit (or of its customer link) the CRM did not take.
enum Decision {
    /// Back to the queue, to go at `not_before`; `count_attempt` is false for failures that
    /// are not the edit's fault (a paused connection).
    RetryAt {
        not_before: u64,
        count_attempt: bool,
    },
    DeadLetter {
        retries_exhausted: bool,
    },
}

/// Decides from the error's class alone, after `attempts` earlier failed attempts; pauses
/// the connection when the class says the CRM refuses it as a whole or for a while.
fn decide(connection: &Connection, id: &str, attempts: u32, error: &AdapterError) -> Decision {
    let metrics = &connection.metrics;
    let dispatch = &connection.settings.dispatch;
    let policy = RetryPolicy {
        initial: Duration::from_millis(dispatch.retry_initial_ms),
        max: Duration::from_millis(dispatch.retry_max_ms),
        max_attempts: dispatch.max_attempts,
    };
    // The connection stops for a while; the edit waits without losing an attempt.
    let pause = |reason: PauseReason, wait: Duration, counter: &AtomicU64| {
        ConnectionMetrics::add(counter, 1);
        Decision::RetryAt {
            not_before: pause_connection(connection, reason, wait, error),
            count_attempt: false,
        }
    };
    match &error.kind {
        ErrorKind::Retryable { .. } | ErrorKind::OutcomeUnknown => {
            let failed = attempts + 1;
            if !policy.allows_another(failed) {
                ConnectionMetrics::add(&metrics.pushed_dead_letter, 1);
                return Decision::DeadLetter {
                    retries_exhausted: true,
                };
            }
            ConnectionMetrics::add(&metrics.pushed_retry, 1);
            let wait = match error.kind {
                ErrorKind::Retryable { retry_after } => {
                    retry_after.unwrap_or_else(|| policy.delay(failed))
                }
                // The request may still land: the contact's next push waits until it no
                // longer can, so an old value never lands after a newer one.
                _ => policy.delay(failed).max(connection.settle_time()),
            };
            Decision::RetryAt {
                not_before: now_ms() + wait.as_millis() as u64,
                count_attempt: true,
            }
        }
        ErrorKind::RateLimited { retry_after } => pause(
            PauseReason::RateLimited,
            retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            &metrics.pushed_rate_limited,
        ),
        ErrorKind::QuotaExhausted { retry_after } => pause(
            PauseReason::QuotaExhausted,
            retry_after.unwrap_or(DEFAULT_QUOTA_WAIT),
            &metrics.pushed_rate_limited,
        ),
        ErrorKind::Unauthorized => pause_until_probe(connection, PauseReason::Unauthorized, error),
        ErrorKind::Misconfigured => {
            pause_until_probe(connection, PauseReason::Misconfigured, error)
        }
        // A contact's own merge is followed before this; a merge reaching here is its
        // customer link's, which cannot be followed.
        ErrorKind::Permanent { .. } | ErrorKind::RecordGone | ErrorKind::RecordMerged { .. } => {
            ConnectionMetrics::add(&metrics.pushed_dead_letter, 1);
            tracing::warn!(
                connection = connection.name(),
                contact = %id,
                code = %error.code,
                message = %error.message,
                "the CRM refused an edit; kept as a dead letter"
            );
            Decision::DeadLetter {
                retries_exhausted: false,
            }
        }
    }
}

/// Pauses the connection for `wait`; answers when the pause ends.
fn pause_connection(
    connection: &Connection,
    reason: PauseReason,
    wait: Duration,
    error: &AdapterError,
) -> u64 {
    let until_ms = now_ms() + wait.as_millis() as u64;
    let new_wait = connection.set_pause(Pause {
        reason: reason.clone(),
        until_ms,
        code: error.code.clone(),
        message: error.message.clone(),
        failed_probes: 0,
    });
    if new_wait {
        if reason != PauseReason::RateLimited {
            tracing::warn!(connection = connection.name(), ?reason, code = %error.code, message = %error.message, "connection paused");
        }
        ConnectionMetrics::add(&connection.metrics.rate_limit_waits, 1);
    }
    until_ms
}

/// The CRM refused the connection as a whole: the connection pauses until a probe goes
/// through, each refused probe waiting longer (capped), and the edit goes back to the queue
/// where it was, without losing an attempt.
fn pause_until_probe(
    connection: &Connection,
    reason: PauseReason,
    error: &AdapterError,
) -> Decision {
    let dispatch = &connection.settings.dispatch;
    let probe_waits = RetryPolicy {
        initial: Duration::from_millis(dispatch.retry_initial_ms),
        max: Duration::from_millis(dispatch.retry_max_ms).min(MAX_PROBE_WAIT),
        max_attempts: u32::MAX,
    };
    ConnectionMetrics::add(&connection.metrics.pushed_retry, 1);
    if connection.pause_until_probe(reason.clone(), &error.code, &error.message, |failed| {
        probe_waits.delay(failed)
    }) {
        tracing::warn!(connection = connection.name(), ?reason, code = %error.code, message = %error.message, "the CRM refuses the connection; paused, probing at a growing interval");
    }
    // Its turn comes with the next probe: the pause, not the edit's own time, holds it back.
    Decision::RetryAt {
        not_before: now_ms(),
        count_attempt: false,
    }
}
