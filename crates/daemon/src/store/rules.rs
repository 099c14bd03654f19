//! The store's domain rules, as plain functions over one contact's [`ContactEntry`]: what
//! accepting, claiming, completing, retrying, dead-lettering, replaying, dropping and
//! recovering do to its sync state and its record.
//!
//! Nothing here touches storage. Each rule changes the entry it is given and answers what the
//! engine must do besides: to the contact's place in the ready queue ([`QueueChange`]) and,
//! when the rule makes a dead letter, the letter to keep. An engine loads the entry, runs the
//! rule, and commits the entry, the queue change and the letter in one transaction; the rules
//! never read the queue's keys, only whether the contact has one (`SyncState::queued_key`,
//! set and cleared by the engine alone).

use unisync_core::{AdapterError, ConfirmedContact, ContactField, ContactPatch, ErrorKind};

use super::model::{ClaimedEdit, ContactEntry, DeadLetter, LastError};

/// What the engine must do to a contact's place in its connection's ready queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueChange {
    /// Nothing.
    Leave,
    /// Queue the contact on `sync.connection` to go at `not_before`, replacing its current
    /// place if it has one.
    Enqueue { not_before: u64 },
    /// Take the contact out of the queue.
    Dequeue,
}

/// An edit is accepted: it is applied to the record and merged into the pending patch, and
/// the contact joins `connection`'s queue unless it is already waiting or in flight.
pub fn accept(
    entry: &mut ContactEntry,
    patch: &ContactPatch,
    connection: &str,
    now: u64,
) -> QueueChange {
    patch.apply_to(&mut entry.contact);
    entry.contact.local_was_updated = true;
    let sync = &mut entry.sync;
    sync.pending
        .get_or_insert_with(ContactPatch::new)
        .merge(patch);
    sync.connection = Some(connection.to_string());
    if sync.in_flight.is_some() || sync.queued_key.is_some() {
        return QueueChange::Leave;
    }
    let not_before = sync.next_attempt_at.unwrap_or(now).max(now);
    enqueue(entry, not_before, now)
}

/// The contact's turn came: its pending patch goes in flight. `None` when nothing is pending
/// (the engine still takes the contact out of the queue).
pub fn claim(entry: &mut ContactEntry) -> (Option<ClaimedEdit>, QueueChange) {
    let Some(patch) = entry.sync.pending.take() else {
        return (None, QueueChange::Dequeue);
    };
    entry.sync.in_flight = Some(patch.clone());
    let edit = ClaimedEdit {
        contact_id: entry.contact.id.clone(),
        source_id: entry.contact.source_id.clone(),
        patch,
        attempts: entry.sync.attempts,
        linked_customer_source_id: entry.contact.source_system_customer_id.clone(),
    };
    (Some(edit), QueueChange::Dequeue)
}

/// The CRM confirmed the in-flight edit: its values become the base and, where no newer edit
/// is pending, the record's; what is pending behind it is queued. `linked_customer` is the
/// CRM id of the customer the contact is now linked to, when the edit changed the link
/// (`Some(None)`: unlinked).
pub fn complete(
    entry: &mut ContactEntry,
    confirmed: &ConfirmedContact,
    linked_customer: Option<Option<String>>,
    now: u64,
) -> QueueChange {
    let pushed = entry.sync.in_flight.take().unwrap_or_default();
    confirm(entry, &pushed, confirmed, now);
    if let Some(link) = linked_customer {
        entry.contact.source_system_customer_id = link;
    }
    entry.sync.attempts = 0;
    let change = if entry.sync.pending.is_some() && entry.sync.queued_key.is_none() {
        enqueue(entry, now, now)
    } else {
        QueueChange::Leave
    };
    mark_unconfirmed(entry);
    change
}

/// The push failed but may succeed later: the in-flight edit goes back under what is pending
/// (the later value of a field wins), to be tried at `not_before`. `count_attempt` is false
/// for failures that are not the edit's fault. Answers the failed attempts so far.
pub fn retry_later(
    entry: &mut ContactEntry,
    not_before: u64,
    count_attempt: bool,
    error: &AdapterError,
    now: u64,
) -> (u32, QueueChange) {
    if count_attempt {
        entry.sync.attempts += 1;
    }
    entry.sync.last_error = Some(last_error(error, class_name(&error.kind), now));
    let change = requeue_in_flight(entry, not_before, now);
    (entry.sync.attempts, change)
}

/// The CRM refused the in-flight edit for good (or its attempts ran out): it becomes the dead
/// letter `letter_id`, and what is pending behind it goes on.
pub fn dead_letter(
    entry: &mut ContactEntry,
    error: &AdapterError,
    retries_exhausted: bool,
    letter_id: &str,
    now: u64,
) -> (DeadLetter, QueueChange) {
    let sync = &mut entry.sync;
    let letter = DeadLetter {
        id: letter_id.to_string(),
        contact_id: entry.contact.id.clone(),
        connection: sync.connection.clone().unwrap_or_default(),
        patch: sync.in_flight.take().unwrap_or_default(),
        error: error.clone(),
        retries_exhausted,
        attempts: sync.attempts + 1,
        failed_at: now,
    };
    let class = if retries_exhausted {
        "retries_exhausted"
    } else {
        class_name(&error.kind)
    };
    sync.last_error = Some(last_error(error, class, now));
    sync.attempts = 0;
    sync.next_attempt_at = None;
    sync.open_dead_letters += 1;
    if error.kind == ErrorKind::RecordGone {
        entry.contact.is_active = false;
    }
    let change = if entry.sync.pending.is_some() && entry.sync.queued_key.is_none() {
        enqueue(entry, now, now)
    } else {
        QueueChange::Leave
    };
    mark_unconfirmed(entry);
    (letter, change)
}

/// An operator replays `letter`: its edit goes back in the queue, ahead of anything pending
/// for the contact (a pending value of the same field is later, and wins). The engine
/// removes the letter.
pub fn replay(entry: &mut ContactEntry, letter: &DeadLetter, now: u64) -> QueueChange {
    settle(entry);
    let mut patch = letter.patch.clone();
    if let Some(pending) = &entry.sync.pending {
        patch.merge(pending);
    }
    entry.sync.pending = Some(patch);
    entry.sync.connection = Some(letter.connection.clone());
    entry.contact.is_active = true;
    let change = if entry.sync.in_flight.is_none() && entry.sync.queued_key.is_none() {
        enqueue(entry, now, now)
    } else {
        QueueChange::Leave
    };
    mark_unconfirmed(entry);
    change
}

/// An operator drops `letter`: the record's values it touched go back to the CRM's last
/// confirmed ones, unless a later edit is on its way. The engine removes the letter.
pub fn drop_letter(entry: &mut ContactEntry, letter: &DeadLetter) {
    settle(entry);
    for field in letter.patch.fields() {
        let later = [&entry.sync.pending, &entry.sync.in_flight]
            .into_iter()
            .flatten()
            .any(|patch| patch.change(field).is_some());
        if !later && let Some(value) = entry.base.get(&field) {
            entry.contact.set_field(field, value.clone());
        }
    }
    mark_unconfirmed(entry);
}

/// The process stopped with this contact's edit in flight (delivery is at least once): the
/// edit goes back in the queue, to be pushed again at `not_before`.
pub fn recover(entry: &mut ContactEntry, not_before: u64, now: u64) -> QueueChange {
    requeue_in_flight(entry, not_before, now)
}

/// Writes the CRM's answer to a pushed patch into the base and the record.
fn confirm(
    entry: &mut ContactEntry,
    pushed: &ContactPatch,
    confirmed: &ConfirmedContact,
    now: u64,
) {
    let pending = entry.sync.pending.clone().unwrap_or_default();
    for (field, value) in &confirmed.values {
        entry.base.insert(*field, value.clone());
        if pending.change(*field).is_none() {
            entry.contact.set_field(*field, value.clone());
        }
    }
    for (field, value) in pushed.iter() {
        if !confirmed.values.contains_key(&field) && field != ContactField::UnifiedCustomerId {
            entry.base.insert(field, value.map(str::to_string));
        }
    }
    if confirmed.crm_version.is_some() {
        entry.crm_version = confirmed.crm_version.clone();
    }
    if entry.contact.source_data_created_at.is_none() {
        entry.contact.source_data_created_at = confirmed.created_at.clone();
    }
    let sync = &mut entry.sync;
    sync.next_attempt_at = None;
    sync.last_error = None;
    sync.last_confirmed_at = Some(now);
}

/// Folds the in-flight edit back under the pending one and queues the contact at
/// `not_before` (out of the queue when nothing is left to push).
fn requeue_in_flight(entry: &mut ContactEntry, not_before: u64, now: u64) -> QueueChange {
    let sync = &mut entry.sync;
    if let Some(mut patch) = sync.in_flight.take() {
        if let Some(pending) = &sync.pending {
            patch.merge(pending);
        }
        sync.pending = Some(patch);
    }
    if sync.pending.is_some() {
        enqueue(entry, not_before, now)
    } else {
        QueueChange::Dequeue
    }
}

/// Queues the contact at `not_before`, noting when its next attempt may start if that is
/// still ahead.
fn enqueue(entry: &mut ContactEntry, not_before: u64, now: u64) -> QueueChange {
    entry.sync.next_attempt_at = (not_before > now).then_some(not_before);
    QueueChange::Enqueue { not_before }
}

/// One of the contact's dead letters is settled (replayed or dropped).
fn settle(entry: &mut ContactEntry) {
    entry.sync.open_dead_letters = entry.sync.open_dead_letters.saturating_sub(1);
}

fn mark_unconfirmed(entry: &mut ContactEntry) {
    entry.contact.local_was_updated = entry.sync.has_unconfirmed_changes();
}

fn last_error(error: &AdapterError, class: &str, now: u64) -> LastError {
    LastError {
        code: error.code.clone(),
        message: error.message.clone(),
        class: class.to_string(),
        at: now,
    }
}

/// The name of an error class, as shown in sync state, dead letters and metrics.
pub fn class_name(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Retryable { .. } => "retryable",
        ErrorKind::RateLimited { .. } => "rate_limited",
        ErrorKind::QuotaExhausted { .. } => "quota_exhausted",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::Permanent { .. } => "permanent",
        ErrorKind::RecordGone => "record_gone",
        ErrorKind::Misconfigured => "misconfigured",
        ErrorKind::OutcomeUnknown => "outcome_unknown",
    }
}
