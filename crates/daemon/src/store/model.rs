//! What the store keeps, per contact and per failed edit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unisync_core::{AdapterError, ContactField, ContactPatch, UnifiedContact};

use crate::conflict::FieldConflict;

/// A contact with everything unisync knows about its sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContactEntry {
    pub contact: UnifiedContact,
    /// The CRM's last confirmed value of every mapped field: the base later conflict
    /// detection compares against.
    #[serde(default)]
    pub base: BTreeMap<ContactField, Option<String>>,
    /// The CRM's record version (last-modified stamp) at the last confirmation.
    #[serde(default)]
    pub crm_version: Option<String>,
    /// The connection whose CRM account holds the record (`contact.source_id` is its id
    /// there): with the source id, the contact's key in the source index.
    #[serde(default)]
    pub source_connection: Option<String>,
    #[serde(default)]
    pub sync: SyncState,
}

/// Where a contact's edits stand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The connection the contact's edits go to (set when an edit is accepted).
    pub connection: Option<String>,
    /// Accepted edits not yet handed to the CRM, coalesced field by field.
    pub pending: Option<ContactPatch>,
    /// The edit a push is carrying right now.
    pub in_flight: Option<ContactPatch>,
    /// The contact's key in the ready queue, while it waits there.
    pub queued_key: Option<Vec<u8>>,
    /// Failed attempts of the edit now pending or in flight.
    pub attempts: u32,
    /// When the next attempt may start (ms since the epoch), after a failure.
    pub next_attempt_at: Option<u64>,
    pub last_error: Option<LastError>,
    /// When the CRM last confirmed a push (ms since the epoch).
    pub last_confirmed_at: Option<u64>,
    /// Dead letters of this contact not yet replayed or dropped.
    pub open_dead_letters: u32,
    /// Per field, the acceptance sequence (store-wide, increasing) of its latest accepted
    /// value, whether that value is pending, in flight, confirmed or dead-lettered. Records
    /// written before sequences were kept have none: a missing field reads as 0.
    #[serde(default)]
    pub accepted_seqs: BTreeMap<ContactField, u64>,
    /// The acceptance sequences the in-flight patch's fields had when it was claimed.
    #[serde(default)]
    pub in_flight_seqs: BTreeMap<ContactField, u64>,
    /// Per field, the values of it that open conflict letters hold, oldest first. The record
    /// shows the latest until its letter is settled, unless a later value was accepted.
    #[serde(default)]
    pub held: BTreeMap<ContactField, Vec<HeldValue>>,
    /// Per field, the CRM's latest value read while a conflict letter about the field kept its
    /// base where the conflict was found: newer than the base, it is what a dropped letter
    /// puts back into the record.
    #[serde(default)]
    pub seen_in_crm: BTreeMap<ContactField, Option<String>>,
}

impl SyncState {
    /// Whether the record holds local changes the CRM has not confirmed.
    pub fn has_unconfirmed_changes(&self) -> bool {
        self.pending.is_some() || self.in_flight.is_some() || self.open_dead_letters > 0
    }

    /// Whether the contact's edits have nothing left to do or to settle: nothing pending, in
    /// flight or queued, no attempt counted or retry waiting, no open letter, no value a
    /// conflict holds or keeps the CRM's for. (The last error may stay, for operators.)
    pub fn is_finished(&self) -> bool {
        self.pending.is_none()
            && self.in_flight.is_none()
            && self.queued_key.is_none()
            && self.attempts == 0
            && self.next_attempt_at.is_none()
            && self.open_dead_letters == 0
            && self.held.is_empty()
            && self.seen_in_crm.is_empty()
    }

    /// Whether a value of `field` accepted later than sequence `seq` exists: one with a higher
    /// sequence, or (for records from before sequences) one pending or in flight.
    pub fn has_later_value(&self, field: ContactField, seq: u64) -> bool {
        self.accepted_seqs.get(&field).copied().unwrap_or(0) > seq
            || [&self.pending, &self.in_flight]
                .into_iter()
                .flatten()
                .any(|patch| patch.change(field).is_some())
    }

    /// The value of `field` a conflict letter holds, when it is the field's latest accepted
    /// value (the record shows it, and the CRM's answers do not overwrite it there).
    pub fn held_value(&self, field: ContactField) -> Option<&HeldValue> {
        self.held
            .get(&field)?
            .last()
            .filter(|held| !self.has_later_value(field, held.seq))
    }
}

/// A value of ours a conflict letter holds back from the CRM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldValue {
    pub letter_id: String,
    /// The acceptance sequence of ours.
    pub seq: u64,
    pub conflict: FieldConflict,
}

/// The last failure of a contact's push, with the CRM's own code and message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub code: String,
    pub message: String,
    /// `retryable`, `rate_limited`, `quota_exhausted`, `unauthorized`, `permanent`,
    /// `record_gone` or `retries_exhausted`.
    pub class: String,
    pub at: u64,
}

/// An edit the CRM refused (or that ran out of attempts), or the fields of an edit held back
/// because a person changed them in the CRM (a conflict letter), kept for an operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub contact_id: String,
    pub connection: String,
    pub patch: ContactPatch,
    /// The CRM's error, as the adapter classified it.
    pub error: AdapterError,
    /// True when the edit was dead-lettered because its attempts ran out, not because the CRM
    /// refused it for good.
    pub retries_exhausted: bool,
    pub attempts: u32,
    pub failed_at: u64,
    /// The acceptance sequence of each field's value in `patch` (none in letters from before
    /// sequences were kept: read as 0).
    #[serde(default)]
    pub field_seqs: BTreeMap<ContactField, u64>,
    /// A conflict letter's fields, each with its base, the CRM's value and ours; `None` for
    /// an edit the CRM refused.
    #[serde(default)]
    pub conflict: Option<BTreeMap<ContactField, FieldConflict>>,
}

/// Why a dead letter exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LetterKind {
    /// The CRM refused the edit, or its attempts ran out.
    Refused,
    /// A person changed the fields in the CRM since unisync last synced them
    /// (`on_conflict = hold`): retrying writes ours, dropping keeps the CRM's.
    Conflict,
}

impl DeadLetter {
    /// Why the letter exists: a letter holding conflicts is a conflict letter.
    pub fn kind(&self) -> LetterKind {
        if self.conflict.is_some() {
            LetterKind::Conflict
        } else {
            LetterKind::Refused
        }
    }

    /// The conflict a conflict letter holds for `field`.
    pub fn conflict_of(&self, field: ContactField) -> Option<&FieldConflict> {
        self.conflict.as_ref()?.get(&field)
    }

    /// Where the letter's edit stands in acceptance order: the sequence of its latest value.
    pub fn accepted_seq(&self) -> u64 {
        self.field_seqs.values().copied().max().unwrap_or(0)
    }

    /// The acceptance sequence of the letter's value of `field`.
    pub fn field_seq(&self, field: ContactField) -> u64 {
        self.field_seqs.get(&field).copied().unwrap_or(0)
    }
}

/// What replaying a dead letter did: the fields it put back in the queue, and the fields it
/// left out because a later value of them was accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub letter: DeadLetter,
    pub replayed: ContactPatch,
    pub dropped: Vec<ContactField>,
}

impl Replay {
    /// Nothing was left to replay: every field of the letter has a later value. The letter is
    /// resolved and the record untouched.
    pub fn superseded(&self) -> bool {
        self.replayed.is_empty()
    }
}

/// What became of a contact whose CRM record was merged into another.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeOutcome {
    /// The contact points at the surviving record now, and its edit goes there next.
    Followed,
    /// The surviving record is another unified contact's: the contact was not re-pointed and
    /// its edit is this dead letter.
    SurvivorRegistered(Box<DeadLetter>),
}

/// What holding a conflict back left.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// The conflict letter.
    pub letter: DeadLetter,
    /// Whether fields of the edit are still in flight, to be pushed and completed. False when
    /// every field was held: the in-flight slot is empty and no call is to be made for it.
    pub in_flight_left: bool,
}

/// A unified customer (company, account) a contact can be linked to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    pub source_system: String,
    pub source_id: String,
    #[serde(default)]
    pub external_system_config_id: Option<String>,
}

/// A contact's edit taken from the ready queue for a push.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedEdit {
    pub contact_id: String,
    pub source_id: String,
    pub patch: ContactPatch,
    pub attempts: u32,
    /// The CRM id of the customer the contact is linked to now, as last confirmed.
    pub linked_customer_source_id: Option<String>,
}

/// Queue figures of one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCounts {
    /// Contacts waiting whose turn has come.
    pub ready: u64,
    /// Contacts waiting for a retry time still ahead.
    pub retry_waiting: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
}

/// How long the store keeps what it no longer needs to do its work (`None`: for good).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Dead letters older than this (by when they failed) are dropped.
    pub dead_letters_ms: Option<u64>,
    /// A backfill's edit ids older than this (by when they were accepted) are forgotten.
    pub edit_ids_ms: Option<u64>,
}

/// What one pruning pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub dead_letters: u64,
    pub edit_ids: u64,
}
