//! The store's domain rules, as plain functions over one contact's [`ContactEntry`]: what
//! accepting, claiming, completing, retrying, dead-lettering, holding conflicts, following
//! merges, replaying, dropping and recovering do to its sync state and its record.
//!
//! Nothing here touches storage. Each rule changes the entry it is given and answers what the
//! engine must do besides: to the contact's place in the ready queue ([`QueueChange`]) and,
//! when the rule makes a dead letter, the letter to keep. An engine loads the entry, runs the
//! rule, and commits the entry, the queue change and the letter in one transaction; the rules
//! never read the queue's keys, only whether the contact has one (`SyncState::queued_key`,
//! set and cleared by the engine alone).

use std::collections::BTreeMap;

use unisync_core::{
    AdapterError, ConfirmedContact, ContactField, ContactPatch, ErrorKind, UnifiedContact,
};

use super::model::{ClaimedEdit, ContactEntry, DeadLetter, HeldValue, LastError, Replay};
use crate::conflict::FieldConflict;

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

/// A contact is registered or refreshed from its CRM (import, pull) as a record of
/// `connection`: the CRM's values become the base (see [`see_crm_value`]), edits not yet
/// confirmed (and values conflict letters hold) stay applied on top of them, and its sync
/// state is kept.
pub fn register(
    existing: Option<ContactEntry>,
    contact: &UnifiedContact,
    connection: &str,
) -> ContactEntry {
    let mut entry = existing.unwrap_or_else(|| ContactEntry {
        contact: contact.clone(),
        base: Default::default(),
        crm_version: None,
        source_connection: None,
        sync: Default::default(),
    });
    let mut merged = contact.clone();
    for field in ContactField::ALL {
        if let Some(held) = entry.sync.held_value(field) {
            merged.set_field(field, held.conflict.ours.clone());
        }
    }
    for patch in [&entry.sync.in_flight, &entry.sync.pending]
        .into_iter()
        .flatten()
    {
        patch.apply_to(&mut merged);
    }
    entry.contact = merged;
    for field in ContactField::ALL {
        see_crm_value(&mut entry, field, contact.field(field).map(str::to_string));
    }
    entry.source_connection = Some(connection.to_string());
    derive(&mut entry);
    entry
}

/// An edit is accepted as the store's `seq`-th: it is applied to the record and merged into
/// the pending patch, and the contact joins `connection`'s queue unless it is already waiting
/// or in flight. `seq` must be higher than every sequence handed out before.
pub fn accept(
    entry: &mut ContactEntry,
    patch: &ContactPatch,
    connection: &str,
    seq: u64,
    now: u64,
) -> QueueChange {
    patch.apply_to(&mut entry.contact);
    entry.contact.local_was_updated = true;
    let sync = &mut entry.sync;
    sync.pending
        .get_or_insert_with(ContactPatch::new)
        .merge(patch);
    for field in patch.fields() {
        sync.accepted_seqs.insert(field, seq);
    }
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
    entry.sync.in_flight_seqs = patch
        .fields()
        .map(|field| {
            let seq = entry.sync.accepted_seqs.get(&field).copied().unwrap_or(0);
            (field, seq)
        })
        .collect();
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
    entry.sync.in_flight_seqs.clear();
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
    derive(entry);
    change
}

/// What becomes of a customer link that failed after the edit's fields landed.
#[derive(Clone, Copy, Debug)]
pub enum LinkFailure<'a> {
    /// Try the link again at `not_before`; `count_attempt` as for [`retry_later`].
    RetryLater {
        not_before: u64,
        count_attempt: bool,
        error: &'a AdapterError,
    },
    /// The CRM refused the link for good, or its attempts ran out: a dead letter holding only
    /// the link change.
    DeadLetter {
        error: &'a AdapterError,
        retries_exhausted: bool,
    },
}

/// The in-flight edit's fields landed but its customer link did not: the values are confirmed
/// as by [`complete`], and only the `unified_customer_id` change is retried (it goes back
/// under what is pending, so a newer link waiting there wins) or dead-lettered as `letter_id`.
///
/// Attempts start again when fields landed with this push, so the link has the attempts of
/// a new edit; a push that carried the link alone keeps counting, so a link that keeps
/// failing runs out of attempts instead of retrying forever. Without a link change in flight
/// this is [`complete`].
pub fn complete_except_link(
    entry: &mut ContactEntry,
    confirmed: &ConfirmedContact,
    failure: LinkFailure<'_>,
    letter_id: &str,
    now: u64,
) -> (Option<DeadLetter>, QueueChange) {
    let link = entry
        .sync
        .in_flight
        .as_mut()
        .and_then(|patch| patch.take(ContactField::UnifiedCustomerId));
    let Some(link) = link else {
        return (None, complete(entry, confirmed, None, now));
    };
    let link_seq = entry
        .sync
        .in_flight_seqs
        .remove(&ContactField::UnifiedCustomerId);
    let fields = entry.sync.in_flight.take().unwrap_or_default();
    confirm(entry, &fields, confirmed, now);
    if !fields.is_empty() {
        entry.sync.attempts = 0;
    }
    let mut link_patch = ContactPatch::new();
    link_patch.put(ContactField::UnifiedCustomerId, link);
    entry.sync.in_flight = Some(link_patch);
    entry.sync.in_flight_seqs = link_seq
        .map(|seq| (ContactField::UnifiedCustomerId, seq))
        .into_iter()
        .collect();
    match failure {
        LinkFailure::RetryLater {
            not_before,
            count_attempt,
            error,
        } => {
            let (_, change) = retry_later(entry, not_before, count_attempt, error, now);
            derive(entry);
            (None, change)
        }
        LinkFailure::DeadLetter {
            error,
            retries_exhausted,
        } => {
            let (letter, change) = dead_letter(entry, error, retries_exhausted, letter_id, now);
            (Some(letter), change)
        }
    }
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
        field_seqs: std::mem::take(&mut sync.in_flight_seqs),
        conflict: None,
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
    derive(entry);
    (letter, change)
}

/// An operator replays `letter`: its values go back in the queue (and into the record), except
/// each field of which a later value was accepted (pending, in flight or already confirmed),
/// which would otherwise be overwritten with the older one. A letter with nothing left is
/// superseded: resolved, with the record untouched. The engine removes the letter either way.
///
/// Replaying a conflict letter writes ours over the person's value: the base of each
/// replayed field becomes the CRM's value the letter recorded, so the conflict check before
/// the write sees no change since, unless the person changed the field again.
pub fn replay(entry: &mut ContactEntry, letter: &DeadLetter, now: u64) -> (Replay, QueueChange) {
    settle(entry, letter);
    let mut replayed = ContactPatch::new();
    let mut dropped = Vec::new();
    for (field, value) in letter.patch.iter() {
        if entry.sync.has_later_value(field, letter.field_seq(field)) {
            dropped.push(field);
            continue;
        }
        replayed.put(field, value.map(str::to_string));
        if let Some(conflict) = letter.conflict_of(field) {
            entry.base.insert(field, conflict.crm.clone());
        }
    }
    let mut change = QueueChange::Leave;
    if !replayed.is_empty() {
        replayed.apply_to(&mut entry.contact);
        // No pending field overlaps: a pending value is a later one, and was dropped above.
        let mut pending = replayed.clone();
        if let Some(later) = &entry.sync.pending {
            pending.merge(later);
        }
        entry.sync.pending = Some(pending);
        entry.sync.connection = Some(letter.connection.clone());
        entry.contact.is_active = true;
        if entry.sync.in_flight.is_none() && entry.sync.queued_key.is_none() {
            change = enqueue(entry, now, now);
        }
    }
    derive(entry);
    let replay = Replay {
        letter: letter.clone(),
        replayed,
        dropped,
    };
    (replay, change)
}

/// An operator drops `letter`: each record value it touched goes back to the CRM's latest
/// known one (its base, or a value read since while a conflict kept the base), unless a later
/// value of the field was accepted (that one stays). Dropping a conflict letter takes the
/// CRM's value: it becomes the record's and the base of each of the letter's fields. The
/// engine removes the letter.
pub fn drop_letter(entry: &mut ContactEntry, letter: &DeadLetter) {
    settle(entry, letter);
    for field in letter.patch.fields() {
        if entry.sync.has_later_value(field, letter.field_seq(field)) {
            continue;
        }
        if let Some(conflict) = letter.conflict_of(field) {
            let crm = entry
                .sync
                .seen_in_crm
                .get(&field)
                .unwrap_or(&conflict.crm)
                .clone();
            confirm_base(entry, field, crm);
        }
        let crm = entry
            .sync
            .seen_in_crm
            .get(&field)
            .or_else(|| entry.base.get(&field));
        if let Some(value) = crm {
            entry.contact.set_field(field, value.clone());
        }
    }
    derive(entry);
}

/// The error code of a conflict letter.
pub const CHANGED_IN_CRM: &str = "CHANGED_IN_CRM";

/// A person changed fields of the in-flight edit in the CRM since their base (`conflicts`,
/// found by the check before the write) and the connection holds conflicts for an operator:
/// those fields leave the in-flight edit, with their acceptance sequences, for the conflict
/// letter `letter_id`, so that the push of the rest neither sends nor confirms them. The
/// record keeps showing ours until the letter is settled. A conflict on a field not in flight
/// is ignored; `None` (and nothing changed) when no field is. When no field is left in
/// flight, the slot empties and what is pending behind it goes on.
pub fn hold_conflicts(
    entry: &mut ContactEntry,
    conflicts: &BTreeMap<ContactField, FieldConflict>,
    letter_id: &str,
    now: u64,
) -> (Option<DeadLetter>, QueueChange) {
    let sync = &mut entry.sync;
    let Some(in_flight) = sync.in_flight.as_mut() else {
        return (None, QueueChange::Leave);
    };
    let mut patch = ContactPatch::new();
    let mut field_seqs = BTreeMap::new();
    let mut held = BTreeMap::new();
    for (field, conflict) in conflicts {
        let Some(ours) = in_flight.take(*field) else {
            continue;
        };
        let seq = sync.in_flight_seqs.remove(field).unwrap_or(0);
        // Ours is the value in flight, whatever the caller compared.
        let conflict = FieldConflict {
            ours: ours.clone(),
            ..conflict.clone()
        };
        sync.seen_in_crm.insert(*field, conflict.crm.clone());
        sync.held.entry(*field).or_default().push(HeldValue {
            letter_id: letter_id.to_string(),
            seq,
            conflict: conflict.clone(),
        });
        patch.put(*field, ours);
        field_seqs.insert(*field, seq);
        held.insert(*field, conflict);
    }
    if patch.is_empty() {
        return (None, QueueChange::Leave);
    }
    let names: Vec<&str> = patch.fields().map(ContactField::name).collect();
    let error = AdapterError::permanent(
        CHANGED_IN_CRM,
        format!(
            "a person changed {} in the CRM since unisync last synced it; held for an operator \
             (on_conflict = hold): `dead-letters retry` writes ours, `drop` keeps the CRM's",
            names.join(", ")
        ),
        None,
    );
    let letter = DeadLetter {
        id: letter_id.to_string(),
        contact_id: entry.contact.id.clone(),
        connection: sync.connection.clone().unwrap_or_default(),
        patch,
        error,
        retries_exhausted: false,
        attempts: sync.attempts,
        failed_at: now,
        field_seqs,
        conflict: Some(held),
    };
    sync.open_dead_letters += 1;
    let mut change = QueueChange::Leave;
    if sync.in_flight.as_ref().is_some_and(ContactPatch::is_empty) {
        sync.in_flight = None;
        sync.in_flight_seqs.clear();
        sync.attempts = 0;
        sync.next_attempt_at = None;
        if sync.pending.is_some() && sync.queued_key.is_none() {
            change = enqueue(entry, now, now);
        }
    }
    derive(entry);
    (Some(letter), change)
}

/// The error code of the dead letter an edit becomes when its record was merged into one
/// another unified contact is registered to.
pub const MERGED_INTO_REGISTERED: &str = "MERGED_INTO_REGISTERED";

/// The CRM merged the contact's record into `survivor` (`error` says so): the contact points
/// at the survivor now, and its in-flight edit goes back in front of what is pending, to go
/// at once without counting an attempt (`last_error` records the merge). The base stays: where
/// the survivor holds other values, the merge changed them in the CRM, and the connection's
/// conflict policy treats them as a person's change. The record version, the merged-away
/// record's, is forgotten.
///
/// `survivor_owner` is the unified contact the survivor is registered to, if any. When it is
/// another one, the contact is not re-pointed (one CRM record is one unified contact): its
/// edit becomes the dead letter `letter_id`, naming both unified contacts.
pub fn repoint(
    entry: &mut ContactEntry,
    survivor: &str,
    survivor_owner: Option<&str>,
    error: &AdapterError,
    letter_id: &str,
    now: u64,
) -> (Option<DeadLetter>, QueueChange) {
    if let Some(owner) = survivor_owner.filter(|owner| *owner != entry.contact.id) {
        let refusal = AdapterError::new(
            error.kind.clone(),
            MERGED_INTO_REGISTERED,
            format!(
                "the CRM merged record {} of unified contact {} into record {survivor}, which is \
                 unified contact {owner}: not re-pointed, as one record is one unified contact \
                 ({}: {})",
                entry.contact.source_id, entry.contact.id, error.code, error.message
            ),
        );
        let (letter, change) = dead_letter(entry, &refusal, false, letter_id, now);
        return (Some(letter), change);
    }
    entry.contact.source_id = survivor.to_string();
    entry.crm_version = None;
    let (_, change) = retry_later(entry, now, false, error, now);
    (None, change)
}

/// The error code of a dead letter the store made because a contact's record could not be
/// read.
pub const STORE_CORRUPT: &str = "STORE_CORRUPT";

/// A contact whose record cannot be read must not block its connection's queue: what was
/// queued for it becomes a dead letter with the store's error (naming the record's key; the
/// edit itself is unreadable), and the engine takes the contact out of the queue.
pub fn unreadable_letter(
    contact_id: &str,
    connection: &str,
    error: &str,
    letter_id: &str,
    now: u64,
) -> DeadLetter {
    DeadLetter {
        id: letter_id.to_string(),
        contact_id: contact_id.to_string(),
        connection: connection.to_string(),
        patch: ContactPatch::new(),
        error: AdapterError::permanent(STORE_CORRUPT, error, None),
        retries_exhausted: false,
        attempts: 0,
        failed_at: now,
        field_seqs: Default::default(),
        conflict: None,
    }
}

/// The process stopped with this contact's edit in flight (delivery is at least once): the
/// edit goes back in the queue, to be pushed again at `not_before`.
pub fn recover(entry: &mut ContactEntry, not_before: u64, now: u64) -> QueueChange {
    requeue_in_flight(entry, not_before, now)
}

/// Writes the CRM's answer to a pushed patch into the base and the record (where no newer
/// value is pending and no conflict letter holds ours). Values of fields the push did not
/// carry are values read from the CRM (see [`see_crm_value`]).
fn confirm(
    entry: &mut ContactEntry,
    pushed: &ContactPatch,
    confirmed: &ConfirmedContact,
    now: u64,
) {
    let pending = entry.sync.pending.clone().unwrap_or_default();
    for (field, value) in &confirmed.values {
        if pushed.change(*field).is_some() {
            confirm_base(entry, *field, value.clone());
        } else {
            see_crm_value(entry, *field, value.clone());
        }
        if pending.change(*field).is_none() && entry.sync.held_value(*field).is_none() {
            entry.contact.set_field(*field, value.clone());
        }
    }
    for (field, value) in pushed.iter() {
        if !confirmed.values.contains_key(&field) && field != ContactField::UnifiedCustomerId {
            confirm_base(entry, field, value.map(str::to_string));
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

/// The CRM confirmed `value` for `field` as unisync pushed it: the field's base.
fn confirm_base(entry: &mut ContactEntry, field: ContactField, value: Option<String>) {
    entry.base.insert(field, value);
    entry.sync.seen_in_crm.remove(&field);
}

/// The CRM holds `value` for `field` (read with a push's answer, or by a pull): it becomes
/// the base, unless a conflict letter about the field is open. Then the base stays where the
/// conflict was found until the letter is settled, so that later edits of the field are
/// checked against it too and cannot silently overwrite the person's value; the value is kept
/// as the CRM's latest seen.
fn see_crm_value(entry: &mut ContactEntry, field: ContactField, value: Option<String>) {
    if entry.sync.held.contains_key(&field) {
        entry.sync.seen_in_crm.insert(field, value);
    } else {
        confirm_base(entry, field, value);
    }
}

/// Folds the in-flight edit back under the pending one and queues the contact at
/// `not_before` (out of the queue when nothing is left to push).
fn requeue_in_flight(entry: &mut ContactEntry, not_before: u64, now: u64) -> QueueChange {
    let sync = &mut entry.sync;
    sync.in_flight_seqs.clear();
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

/// One of the contact's dead letters is settled (replayed or dropped): it holds no value any
/// more.
fn settle(entry: &mut ContactEntry, letter: &DeadLetter) {
    let sync = &mut entry.sync;
    sync.open_dead_letters = sync.open_dead_letters.saturating_sub(1);
    for held in sync.held.values_mut() {
        held.retain(|value| value.letter_id != letter.id);
    }
    sync.held.retain(|_, held| !held.is_empty());
}

/// Brings up to date what derives from the sync state after a change: whether the record
/// holds unconfirmed changes, and the bases a conflict kept (see [`see_crm_value`]). A
/// field's base stays where a conflict was found only while a conflict letter about it is
/// open or a later edit of it is on its way, to be checked against it; after that, the CRM's
/// latest value seen is its base.
fn derive(entry: &mut ContactEntry) {
    let sync = &mut entry.sync;
    let released: Vec<ContactField> = sync
        .seen_in_crm
        .keys()
        .copied()
        .filter(|field| {
            !sync.held.contains_key(field)
                && [&sync.pending, &sync.in_flight]
                    .into_iter()
                    .flatten()
                    .all(|patch| patch.change(*field).is_none())
        })
        .collect();
    for field in released {
        if let Some(value) = sync.seen_in_crm.remove(&field) {
            entry.base.insert(field, value);
        }
    }
    entry.contact.local_was_updated = sync.has_unconfirmed_changes();
    // Acceptance sequences order a contact's values against its letters and its edit in
    // flight; once the edits are finished there is nothing left to order, and every later
    // edit gets a higher sequence than all before it. Forgetting them leaves a finished
    // contact's sync state with only where its edits go, when the CRM last confirmed one and
    // why one last failed.
    if sync.is_finished() {
        sync.accepted_seqs.clear();
    }
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
        ErrorKind::RecordMerged { .. } => "record_merged",
        ErrorKind::Misconfigured => "misconfigured",
        ErrorKind::OutcomeUnknown => "outcome_unknown",
    }
}

#[cfg(test)]
mod tests {
    //! The rules on entries in memory: no database.

    use super::*;
    use crate::store::LetterKind;
    use crate::store::model::SyncState;

    const NOW: u64 = 1_000;

    fn entry() -> ContactEntry {
        let mut contact = UnifiedContact::new("c1", "hubspot", "1");
        contact.city = Some("Base".into());
        ContactEntry {
            contact,
            base: [
                (ContactField::City, Some("Base".to_string())),
                (ContactField::Zip, None),
            ]
            .into(),
            crm_version: None,
            source_connection: Some("crm".into()),
            sync: Default::default(),
        }
    }

    fn patch(values: &[(ContactField, &str)]) -> ContactPatch {
        values
            .iter()
            .map(|(field, value)| (*field, Some(value.to_string())))
            .collect()
    }

    /// Accepts `values` as the `seq`-th edit and pretends the engine queued the contact.
    fn accept_at(entry: &mut ContactEntry, values: &[(ContactField, &str)], seq: u64) {
        if accept(entry, &patch(values), "crm", seq, NOW) != QueueChange::Leave {
            entry.sync.queued_key = Some(vec![1]);
        }
    }

    /// Claims the pending edit, as the engine would once the contact's turn came.
    fn claim_now(entry: &mut ContactEntry) -> ClaimedEdit {
        let (edit, change) = claim(entry);
        assert_eq!(change, QueueChange::Dequeue);
        entry.sync.queued_key = None;
        edit.expect("something was pending")
    }

    fn refused() -> AdapterError {
        AdapterError::permanent("INVALID", "no", None)
    }

    #[test]
    fn accept_queues_once_and_claim_takes_the_pending_patch_with_its_sequences() {
        let mut entry = entry();
        assert_eq!(
            accept(
                &mut entry,
                &patch(&[(ContactField::City, "A")]),
                "crm",
                7,
                NOW
            ),
            QueueChange::Enqueue { not_before: NOW }
        );
        entry.sync.queued_key = Some(vec![1]);
        assert_eq!(
            accept(
                &mut entry,
                &patch(&[(ContactField::Zip, "1")]),
                "crm",
                8,
                NOW
            ),
            QueueChange::Leave,
            "already waiting: coalesced"
        );
        let edit = claim_now(&mut entry);
        assert_eq!(
            edit.patch,
            patch(&[(ContactField::City, "A"), (ContactField::Zip, "1")])
        );
        assert_eq!(
            entry.sync.in_flight_seqs,
            [(ContactField::City, 7), (ContactField::Zip, 8)].into()
        );
        accept_at(&mut entry, &[(ContactField::City, "B")], 9);
        assert!(
            entry.sync.queued_key.is_none(),
            "waits for the push in flight"
        );
        assert_eq!(
            complete(&mut entry, &ConfirmedContact::default(), None, NOW),
            QueueChange::Enqueue { not_before: NOW }
        );
        assert_eq!(entry.base[&ContactField::Zip].as_deref(), Some("1"));
        assert_eq!(entry.contact.city.as_deref(), Some("B"));
        assert!(entry.sync.in_flight_seqs.is_empty());
    }

    #[test]
    fn a_replay_leaves_out_every_field_accepted_after_the_letter() {
        let mut entry = entry();
        accept_at(
            &mut entry,
            &[(ContactField::City, "Old"), (ContactField::Zip, "1")],
            1,
        );
        claim_now(&mut entry);
        let (letter, _) = dead_letter(&mut entry, &refused(), false, "dl-1", NOW);
        assert_eq!(letter.accepted_seq(), 1);
        // A newer city is accepted and confirmed while the letter waits.
        accept_at(&mut entry, &[(ContactField::City, "New")], 2);
        claim_now(&mut entry);
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);

        let (replayed, change) = replay(&mut entry, &letter, NOW);
        assert_eq!(replayed.dropped, vec![ContactField::City]);
        assert_eq!(replayed.replayed, patch(&[(ContactField::Zip, "1")]));
        assert!(!replayed.superseded());
        assert_eq!(change, QueueChange::Enqueue { not_before: NOW });
        assert_eq!(entry.sync.pending, Some(patch(&[(ContactField::Zip, "1")])));
        assert_eq!(entry.contact.city.as_deref(), Some("New"));
        assert_eq!(entry.sync.open_dead_letters, 0);
    }

    #[test]
    fn a_letter_with_every_field_newer_is_superseded_and_changes_nothing() {
        let mut entry = entry();
        accept_at(&mut entry, &[(ContactField::City, "Old")], 1);
        claim_now(&mut entry);
        let (letter, _) = dead_letter(&mut entry, &refused(), false, "dl-1", NOW);
        // Newer values: one pending now, one in flight.
        accept_at(&mut entry, &[(ContactField::City, "Newer")], 2);
        claim_now(&mut entry);
        let before = entry.clone();

        let (replayed, change) = replay(&mut entry, &letter, NOW);
        assert!(replayed.superseded());
        assert_eq!(replayed.dropped, vec![ContactField::City]);
        assert_eq!(change, QueueChange::Leave);
        assert_eq!(entry.contact, before.contact, "the record is untouched");
        assert_eq!(entry.sync.in_flight, before.sync.in_flight);
        assert_eq!(entry.sync.open_dead_letters, 0);
    }

    #[test]
    fn dropping_a_letter_restores_the_base_only_where_its_value_is_the_latest() {
        let mut entry = entry();
        accept_at(
            &mut entry,
            &[(ContactField::City, "Refused"), (ContactField::Zip, "9")],
            1,
        );
        claim_now(&mut entry);
        let (first, _) = dead_letter(&mut entry, &refused(), false, "dl-1", NOW);
        accept_at(&mut entry, &[(ContactField::Zip, "10")], 2);
        claim_now(&mut entry);
        let (second, _) = dead_letter(&mut entry, &refused(), false, "dl-2", NOW);
        assert_eq!(entry.sync.open_dead_letters, 2);

        drop_letter(&mut entry, &first);
        assert_eq!(
            entry.contact.city.as_deref(),
            Some("Base"),
            "back to the base"
        );
        assert_eq!(
            entry.contact.zip.as_deref(),
            Some("10"),
            "a later value, even a dead-lettered one, stays"
        );
        assert!(entry.contact.local_was_updated, "the second letter is open");
        drop_letter(&mut entry, &second);
        assert_eq!(entry.contact.zip, None, "the base had no zip");
        assert!(!entry.contact.local_was_updated);
    }

    #[test]
    fn records_from_before_sequences_replay_what_no_pending_edit_overrides() {
        // A record and a letter as the previous schema wrote them: no sequences anywhere.
        let mut entry: ContactEntry = serde_json::from_value(serde_json::json!({
            "contact": serde_json::to_value(entry().contact).unwrap(),
            "base": {"city": "Base"},
            "sync": {"connection": "crm", "pending": {"zip": "2"}, "in_flight": null,
                     "queued_key": [1], "attempts": 0, "next_attempt_at": null,
                     "last_error": null, "last_confirmed_at": null, "open_dead_letters": 1},
        }))
        .unwrap();
        let letter: DeadLetter = serde_json::from_value(serde_json::json!({
            "id": "dl-old", "contact_id": "c1", "connection": "crm",
            "patch": {"city": "Old", "zip": "1"},
            "error": refused(), "retries_exhausted": false, "attempts": 1, "failed_at": 5,
        }))
        .unwrap();
        assert_eq!(letter.accepted_seq(), 0);
        assert_eq!(letter.kind(), LetterKind::Refused);

        let (replayed, change) = replay(&mut entry, &letter, NOW);
        assert_eq!(replayed.replayed, patch(&[(ContactField::City, "Old")]));
        assert_eq!(
            replayed.dropped,
            vec![ContactField::Zip],
            "the pending zip is later"
        );
        assert_eq!(change, QueueChange::Leave, "already queued");
        assert_eq!(
            entry.sync.pending,
            Some(patch(&[
                (ContactField::City, "Old"),
                (ContactField::Zip, "2")
            ]))
        );
        // An edit accepted after the upgrade is later than any letter from before it.
        let edit = claim_now(&mut entry);
        assert_eq!(edit.patch.len(), 2);
        let (letter, _) = dead_letter(&mut entry, &refused(), false, "dl-2", NOW);
        accept_at(&mut entry, &[(ContactField::City, "New")], 3);
        let (replayed, _) = replay(&mut entry, &letter, NOW);
        assert_eq!(replayed.dropped, vec![ContactField::City]);
    }

    fn merged() -> AdapterError {
        AdapterError::record_merged("MERGED", "merged into 2", "2")
    }

    #[test]
    fn a_merge_repoints_the_contact_and_sends_its_edit_again_at_once_without_an_attempt() {
        let mut entry = entry();
        entry.crm_version = Some("v1".into());
        entry.sync.attempts = 2;
        accept_at(
            &mut entry,
            &[(ContactField::City, "X"), (ContactField::Zip, "1")],
            1,
        );
        claim_now(&mut entry);
        accept_at(&mut entry, &[(ContactField::City, "Y")], 2);

        let (letter, change) = repoint(&mut entry, "2", None, &merged(), "dl-1", NOW);
        assert_eq!(letter, None);
        assert_eq!(change, QueueChange::Enqueue { not_before: NOW });
        assert_eq!(entry.contact.source_id, "2");
        assert_eq!(entry.sync.attempts, 2, "no attempt counted");
        assert_eq!(entry.sync.next_attempt_at, None);
        assert_eq!(
            entry.sync.pending,
            Some(patch(&[
                (ContactField::City, "Y"),
                (ContactField::Zip, "1")
            ])),
            "in front of what is pending: the later value wins"
        );
        assert!(entry.sync.in_flight.is_none());
        let last_error = entry.sync.last_error.as_ref().unwrap();
        assert_eq!(
            (last_error.code.as_str(), last_error.class.as_str()),
            ("MERGED", "record_merged")
        );
        assert_eq!(entry.crm_version, None, "the merged-away record's version");
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Base"));

        // Re-pointed at a record it owns already (a merge answered twice): followed too.
        claim_now(&mut entry);
        let (letter, _) = repoint(&mut entry, "2", Some("c1"), &merged(), "dl-2", NOW);
        assert_eq!(letter, None);
        assert!(entry.sync.pending.is_some());
    }

    #[test]
    fn a_merge_into_another_contacts_record_is_a_dead_letter_naming_both() {
        let mut entry = entry();
        accept_at(&mut entry, &[(ContactField::City, "X")], 1);
        claim_now(&mut entry);
        let (letter, change) = repoint(&mut entry, "2", Some("c2"), &merged(), "dl-1", NOW);
        let letter = letter.expect("a dead letter");
        assert_eq!(change, QueueChange::Leave);
        assert_eq!(letter.error.code, MERGED_INTO_REGISTERED);
        assert_eq!(letter.error.kind, merged().kind);
        assert!(
            letter.error.message.contains("unified contact c1")
                && letter.error.message.contains("unified contact c2"),
            "{}",
            letter.error.message
        );
        assert_eq!(letter.patch, patch(&[(ContactField::City, "X")]));
        assert_eq!(entry.contact.source_id, "1", "not re-pointed");
        assert_eq!(entry.sync.open_dead_letters, 1);
        assert!(entry.contact.is_active);
    }

    fn conflict(base: &str, crm: &str, ours: &str) -> FieldConflict {
        FieldConflict {
            base: Some(base.into()),
            crm: Some(crm.into()),
            ours: Some(ours.into()),
        }
    }

    /// A contact whose city "Ours" (accepted as the first edit, with zip "1") is in flight,
    /// and a person changed the city in the CRM to "Person": the city is held.
    fn held_city() -> (ContactEntry, DeadLetter) {
        let mut entry = entry();
        accept_at(
            &mut entry,
            &[(ContactField::City, "Ours"), (ContactField::Zip, "1")],
            1,
        );
        claim_now(&mut entry);
        let conflicts = [(ContactField::City, conflict("Base", "Person", "Ours"))].into();
        let (letter, change) = hold_conflicts(&mut entry, &conflicts, "dl-1", NOW);
        assert_eq!(change, QueueChange::Leave);
        (entry, letter.expect("a conflict letter"))
    }

    #[test]
    fn a_held_conflict_leaves_the_push_and_the_rest_never_confirms_it() {
        let (mut entry, letter) = held_city();
        assert_eq!(letter.kind(), LetterKind::Conflict);
        assert_eq!(letter.patch, patch(&[(ContactField::City, "Ours")]));
        assert_eq!(letter.field_seqs, [(ContactField::City, 1)].into());
        assert_eq!(
            letter.conflict,
            Some([(ContactField::City, conflict("Base", "Person", "Ours"))].into())
        );
        assert_eq!(letter.error.code, CHANGED_IN_CRM);
        assert_eq!(
            entry.sync.in_flight,
            Some(patch(&[(ContactField::Zip, "1")]))
        );
        assert_eq!(entry.sync.in_flight_seqs, [(ContactField::Zip, 1)].into());
        assert_eq!(entry.sync.open_dead_letters, 1);

        // The rest lands; the CRM's answer also shows the person's city.
        let confirmed = ConfirmedContact {
            values: [(ContactField::City, Some("Person".to_string()))].into(),
            ..ConfirmedContact::default()
        };
        complete(&mut entry, &confirmed, None, NOW);
        assert_eq!(entry.base[&ContactField::Zip].as_deref(), Some("1"));
        assert_eq!(
            entry.base[&ContactField::City].as_deref(),
            Some("Base"),
            "neither ours nor the person's: later edits are checked against the same base"
        );
        assert_eq!(
            entry.sync.seen_in_crm,
            [(ContactField::City, Some("Person".to_string()))].into()
        );
        assert_eq!(
            entry.contact.city.as_deref(),
            Some("Ours"),
            "the record shows ours"
        );
        assert!(
            entry.contact.local_was_updated,
            "until the letter is settled"
        );

        // A pull shows ours too, while the letter holds it, and keeps the base.
        let mut pulled = entry.contact.clone();
        pulled.city = Some("Person again".into());
        pulled.zip = Some("2".into());
        let entry = register(Some(entry), &pulled, "crm");
        assert_eq!(entry.contact.city.as_deref(), Some("Ours"));
        assert!(entry.contact.local_was_updated);
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Base"));
        assert_eq!(entry.base[&ContactField::Zip].as_deref(), Some("2"));
        assert_eq!(
            entry.sync.seen_in_crm[&ContactField::City].as_deref(),
            Some("Person again")
        );
    }

    #[test]
    fn a_later_letter_dropped_while_a_conflict_is_open_restores_the_persons_value() {
        let (mut entry, conflict_letter) = held_city();
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);
        accept_at(&mut entry, &[(ContactField::City, "Later")], 2);
        claim_now(&mut entry);
        let (refused_letter, _) = dead_letter(&mut entry, &refused(), false, "dl-2", NOW);
        drop_letter(&mut entry, &refused_letter);
        assert_eq!(
            entry.contact.city.as_deref(),
            Some("Person"),
            "what the CRM holds, not the base the conflict keeps"
        );
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Base"));

        // The conflict letter, superseded by the later value, is settled: with nothing of the
        // city open or on its way, its base is the CRM's latest value again.
        let (replayed, _) = replay(&mut entry, &conflict_letter, NOW);
        assert!(replayed.superseded());
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Person"));
        assert!(entry.sync.seen_in_crm.is_empty());
        assert!(!entry.contact.local_was_updated);
    }

    #[test]
    fn a_conflict_on_a_field_not_in_flight_holds_nothing() {
        let (mut entry, _) = held_city();
        let before = entry.clone();
        let conflicts = [(ContactField::Phone, conflict("1", "2", "3"))].into();
        let (letter, change) = hold_conflicts(&mut entry, &conflicts, "dl-2", NOW);
        assert_eq!((letter, change), (None, QueueChange::Leave));
        assert_eq!(entry, before);
    }

    #[test]
    fn holding_every_field_in_flight_empties_the_slot_and_lets_what_is_pending_go() {
        let mut entry = entry();
        entry.sync.attempts = 1;
        accept_at(&mut entry, &[(ContactField::City, "Ours")], 1);
        claim_now(&mut entry);
        accept_at(&mut entry, &[(ContactField::Zip, "2")], 2);
        let conflicts = [(ContactField::City, conflict("Base", "Person", "Ours"))].into();
        let (letter, change) = hold_conflicts(&mut entry, &conflicts, "dl-1", NOW);
        assert!(letter.is_some());
        assert_eq!(change, QueueChange::Enqueue { not_before: NOW });
        assert_eq!(entry.sync.in_flight, None);
        assert!(entry.sync.in_flight_seqs.is_empty());
        assert_eq!(entry.sync.attempts, 0);
        assert_eq!(entry.sync.pending, Some(patch(&[(ContactField::Zip, "2")])));
    }

    #[test]
    fn retrying_a_conflict_letter_writes_ours_against_the_crms_value() {
        let (mut entry, letter) = held_city();
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Base"));

        let (replayed, change) = replay(&mut entry, &letter, NOW);
        assert_eq!(replayed.replayed, patch(&[(ContactField::City, "Ours")]));
        assert_eq!(change, QueueChange::Enqueue { not_before: NOW });
        assert_eq!(
            entry.base[&ContactField::City].as_deref(),
            Some("Person"),
            "the next check sees no change since the base"
        );
        assert!(entry.sync.held.is_empty());
        assert_eq!(entry.sync.open_dead_letters, 0);
        let edit = claim_now(&mut entry);
        assert_eq!(edit.patch, patch(&[(ContactField::City, "Ours")]));
    }

    #[test]
    fn a_conflict_letter_with_a_later_value_is_superseded_and_keeps_the_base() {
        let (mut entry, letter) = held_city();
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);
        accept_at(&mut entry, &[(ContactField::City, "Later")], 2);
        let (replayed, _) = replay(&mut entry, &letter, NOW);
        assert!(replayed.superseded());
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Base"));
        assert_eq!(entry.contact.city.as_deref(), Some("Later"));
    }

    #[test]
    fn dropping_a_conflict_letter_takes_the_crms_value_unless_a_later_edit_is_on_its_way() {
        let (mut entry, letter) = held_city();
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);
        drop_letter(&mut entry, &letter);
        assert_eq!(entry.contact.city.as_deref(), Some("Person"));
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Person"));
        assert!(!entry.contact.local_was_updated);
        assert!(entry.sync.held.is_empty());
        assert!(entry.sync.seen_in_crm.is_empty());

        // The CRM's value read since the conflict (a pull) is the one taken.
        let (entry, letter) = held_city();
        let mut pulled = entry.contact.clone();
        pulled.city = Some("Person again".into());
        let mut entry = register(Some(entry), &pulled, "crm");
        drop_letter(&mut entry, &letter);
        assert_eq!(entry.contact.city.as_deref(), Some("Person again"));
        assert_eq!(
            entry.base[&ContactField::City].as_deref(),
            Some("Person again")
        );

        let (mut entry, letter) = held_city();
        accept_at(&mut entry, &[(ContactField::City, "Later")], 2);
        drop_letter(&mut entry, &letter);
        assert_eq!(entry.contact.city.as_deref(), Some("Later"));
        assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Base"));
    }

    #[test]
    fn a_retry_folds_the_edit_back_under_newer_values_and_forgets_its_claim() {
        let mut entry = entry();
        accept_at(
            &mut entry,
            &[(ContactField::City, "X"), (ContactField::Zip, "1")],
            1,
        );
        claim_now(&mut entry);
        accept_at(&mut entry, &[(ContactField::City, "Y")], 2);
        let error = AdapterError::retryable("HTTP_503", "down");
        let (attempts, change) = retry_later(&mut entry, NOW + 500, true, &error, NOW);
        assert_eq!(attempts, 1);
        assert_eq!(
            change,
            QueueChange::Enqueue {
                not_before: NOW + 500
            }
        );
        assert_eq!(entry.sync.next_attempt_at, Some(NOW + 500));
        assert_eq!(
            entry.sync.pending,
            Some(patch(&[
                (ContactField::City, "Y"),
                (ContactField::Zip, "1")
            ]))
        );
        assert!(entry.sync.in_flight_seqs.is_empty());
        assert_eq!(entry.sync.accepted_seqs[&ContactField::City], 2);
        assert_eq!(entry.sync.last_error.as_ref().unwrap().class, "retryable");
    }

    #[test]
    fn finished_edits_leave_no_sequences_and_unfinished_ones_keep_theirs() {
        let mut entry = entry();
        accept_at(&mut entry, &[(ContactField::City, "X")], 1);
        claim_now(&mut entry);
        accept_at(&mut entry, &[(ContactField::Zip, "1")], 2);
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);
        assert_eq!(
            entry.sync.accepted_seqs,
            [(ContactField::City, 1), (ContactField::Zip, 2)].into(),
            "an edit is still pending: its sequence orders it"
        );
        entry.sync.queued_key = None;
        claim_now(&mut entry);
        let (letter, _) = dead_letter(&mut entry, &refused(), false, "dl-1", NOW);
        assert!(!entry.sync.accepted_seqs.is_empty(), "a letter is open");

        drop_letter(&mut entry, &letter);
        assert!(entry.sync.is_finished());
        assert!(entry.sync.accepted_seqs.is_empty());
        assert_eq!(
            entry.sync,
            SyncState {
                connection: Some("crm".into()),
                last_error: entry.sync.last_error.clone(),
                last_confirmed_at: Some(NOW),
                ..SyncState::default()
            },
            "nothing else is left of the edits"
        );

        accept_at(&mut entry, &[(ContactField::City, "Y")], 3);
        claim_now(&mut entry);
        complete(&mut entry, &ConfirmedContact::default(), None, NOW);
        assert!(entry.sync.accepted_seqs.is_empty());
        assert_eq!(entry.sync.last_error, None);
    }
}
