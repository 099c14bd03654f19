//! The sled engine: the store embedded in one process, in one directory.
//!
//! Trees: `contacts` (id → [`ContactEntry`]), `ready` (connection, not-before, seq → contact
//! id), `dead_letters`, `customers`, `source_index` ((connection, source id) → unified id) and
//! `meta`. Every state change is one transaction; nothing is acknowledged to a client before
//! [`SledStore::flush`] has made it durable (one flush serves every request waiting for it).
//! sled's exclusive file lock makes the process the only one: what was in flight when it
//! stopped is put back in the queue at the next start ([`SledStore::recover_in_flight`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use unisync_core::{AdapterError, ConfirmedContact, ContactField, ContactPatch, UnifiedContact};

use super::clock::{CLOCK, Clock};
use super::counters::{Changes, Counters, Tally};
use super::flush::{Flusher, Health};
use super::pipeline::{AcceptPipeline, BatchSink, PendingAccept};
use super::rules::{self, LinkFailure, QueueChange};
use super::{
    Accepted, ClaimedEdit, ConnectionCounts, ContactEntry, Customer, DeadLetter, Held,
    MergeOutcome, Pruned, Replay, Retention, StoreError, keys, letter_id,
};
use crate::conflict::FieldConflict;

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(error: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

fn from_tx(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => StoreError::Sled(error),
    }
}

/// The first byte of every record of schema 3: its encoding, postcard. Records of older
/// schemas are JSON objects (first byte `{`); the migration at open tells them apart by it,
/// so that an interrupted migration can run again.
const POSTCARD: u8 = 1;

/// A record as the store keeps it: [`POSTCARD`], then the value in postcard (positional, no
/// field names). Changing a stored type's fields means a new schema version and a migration.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![POSTCARD]).expect("store records always serialise")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    match bytes.split_first() {
        Some((&POSTCARD, record)) => {
            postcard::from_bytes(record).map_err(|err| corrupt(err.to_string()))
        }
        _ => Err(corrupt("not a record of this store's encoding".into())),
    }
}

/// A record of schema 1 or 2 (JSON), for the migrations.
fn decode_json<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    })
}

/// The sled-backed store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    pub(super) contacts: sled::Tree,
    ready: sled::Tree,
    pub(super) dead_letters: sled::Tree,
    pub(super) customers: sled::Tree,
    pub(super) source_index: sled::Tree,
    pub(super) meta: sled::Tree,
    flusher: Flusher,
    health: Health,
    clock: &'static Clock,
    /// The clock's high-water mark as last written to `meta`.
    high_water: Arc<AtomicU64>,
    /// The API's edits go through here ([`SledStore::accept_durable`]); `None` in the
    /// writer's own copy of the store, so that the writer ends when the last handle drops.
    accepts: Option<AcceptPipeline>,
    /// Queue figures per connection, kept as transactions commit.
    counters: Arc<Counters>,
}

/// Version 2 keys the source index by connection instead of system; version 3 writes every
/// record in postcard instead of JSON. Older stores are migrated at open.
const SCHEMA_VERSION: &[u8] = b"3";
/// The `meta` keys of a backfill's edit ids: `edit/ID` → when it was accepted (8 bytes,
/// big-endian ms; empty in stores from before retention).
const EDIT_ID_PREFIX: &str = "edit/";
/// The `meta` key of the clock's high-water mark (8 bytes, big-endian ms).
const HIGH_WATER_KEY: &str = "clock_high_water";
/// How far ahead of now the high-water mark is written, so that it is written at most this
/// often and still covers every time handed out before the next write.
const HIGH_WATER_STEP_MS: u64 = 1_000;

impl SledStore {
    /// Opens (creating if missing) the store at `path`. Must be called inside a tokio runtime
    /// (the group-commit flusher is a task).
    pub fn open(path: &Path, cache_mib: u64) -> Result<SledStore, StoreError> {
        SledStore::open_with_clock(path, cache_mib, &CLOCK)
    }

    /// Opens the store with its own clock instead of the process's (tests that step the wall
    /// clock).
    pub fn open_with_clock(
        path: &Path,
        cache_mib: u64,
        clock: &'static Clock,
    ) -> Result<SledStore, StoreError> {
        finish_interrupted_compaction(path)?;
        create_private_dir(path)?;
        let db = sled_config(path, cache_mib)
            .open()
            .map_err(|error| open_error(path, error))?;
        let meta = db.open_tree("meta")?;
        migrate(&db, &meta)?;
        if let Some(mark) = meta.get(HIGH_WATER_KEY)? {
            let mark: [u8; 8] = mark.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                key: format!("meta/{HIGH_WATER_KEY}"),
                message: "not an 8-byte time".into(),
            })?;
            clock.raise_to(u64::from_be_bytes(mark));
        }
        let health = Health::new();
        let mut store = SledStore {
            contacts: db.open_tree("contacts")?,
            ready: db.open_tree("ready")?,
            dead_letters: db.open_tree("dead_letters")?,
            customers: db.open_tree("customers")?,
            source_index: db.open_tree("source_index")?,
            meta,
            flusher: Flusher::start(db.clone(), health.clone()),
            health,
            db,
            clock,
            high_water: Arc::new(AtomicU64::new(0)),
            accepts: None,
            counters: Arc::default(),
        };
        store.count_at_open()?;
        store.now();
        store.accepts = Some(AcceptPipeline::start(store.clone()));
        Ok(store)
    }

    /// Now, by the store's clock. Keeps the clock's high-water mark in `meta` ahead of every
    /// time handed out, so that after a restart the clock starts no earlier (it is durable
    /// with the writes that used those times: sled recovers a prefix of its log).
    pub fn now(&self) -> u64 {
        let now = self.clock.now();
        if now >= self.high_water.load(Ordering::Acquire) {
            let mark = now + HIGH_WATER_STEP_MS;
            self.high_water.fetch_max(mark, Ordering::AcqRel);
            if let Err(error) = self.meta.insert(HIGH_WATER_KEY, &mark.to_be_bytes()) {
                tracing::error!(%error, "writing the clock's high-water mark failed");
            }
        }
        now
    }

    /// Makes every write so far durable. Concurrent callers share one flush. A failure fails
    /// the store for good ([`StoreError::Failed`]).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }

    /// Why the store failed, once it has (a flush or a write could not reach the disk): it
    /// refuses every write from then on, and the process should stop and restart from what
    /// is durable.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Waits until the store fails; answers why.
    pub async fn failed(&self) -> String {
        self.health.failed().await
    }

    /// Test builds only: the next flush fails with `message`, as a full disk would.
    #[cfg(test)]
    pub fn fail_next_flush(&self, message: &str) {
        self.flusher.fail_next(message);
    }

    /// Runs a write unless the store has failed; an I/O error while writing fails it (and is
    /// answered as that failure).
    fn write<T>(&self, write: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.health.check()?;
        match write() {
            Err(StoreError::Sled(
                error @ (sled::Error::Io(_) | sled::Error::Corruption { .. }),
            )) => {
                self.health.fail(format!("writing failed: {error}"));
                self.health
                    .check()
                    .map(|()| unreachable!("the store has just failed"))
            }
            result => result,
        }
    }

    /// Puts every edit that was in flight when the process stopped back in its connection's
    /// ready queue (delivery is at least once), to go at `not_before(connection)`: each
    /// connection's own grace, long enough for the dead process's last requests to settle.
    /// Returns how many. An unreadable record is skipped (its claim dead-letters it).
    pub fn recover_in_flight(
        &self,
        not_before: impl Fn(&str) -> u64,
        still_in_flight: impl Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        // Collect first: a transaction on a tree that is being iterated can deadlock in sled.
        let mut in_flight = Vec::new();
        for entry in self.readable_contacts() {
            let entry = entry?;
            if entry.sync.in_flight.is_some() && !still_in_flight(&entry.contact.id) {
                let connection = entry.sync.connection.as_deref().unwrap_or_default();
                in_flight.push((entry.contact.id.clone(), not_before(connection)));
            }
        }
        for (id, not_before) in &in_flight {
            let seq = self.next_seq();
            let now = self.now();
            self.update_contact(id, seq, |entry| {
                Ok((rules::recover(entry, *not_before, now), ()))
            })?;
        }
        Ok(in_flight.len())
    }

    fn next_seq(&self) -> u64 {
        self.db.generate_id().expect("sled id generation")
    }

    /// Registers or refreshes a contact (import, pull) as a record of `connection` (see
    /// [`rules::register`]). Refused with [`StoreError::SourceIdTaken`] when the connection's
    /// record is already registered under another unified id. A record that cannot be read is
    /// replaced: importing the contact again is how it is repaired.
    pub fn upsert_contact(
        &self,
        connection: &str,
        contact: UnifiedContact,
    ) -> Result<(), StoreError> {
        let id = contact.id.as_bytes();
        let index_key = keys::source_index(connection, &contact.source_id);
        self.write(|| {
            (&self.contacts, &self.source_index)
            .transaction(|(contacts, index)| {
                if let Some(owner) = index.get(&index_key)?
                    && owner != id
                {
                    return abort(StoreError::SourceIdTaken {
                        connection: connection.to_string(),
                        source_id: contact.source_id.clone(),
                        owner: String::from_utf8_lossy(&owner).into_owned(),
                    });
                }
                let existing: Option<ContactEntry> = match get(contacts, id) {
                    Err(ConflictableTransactionError::Abort(
                        error @ StoreError::Corrupt { .. },
                    )) => {
                        tracing::warn!(%error, "an unreadable record is replaced by its import");
                        None
                    }
                    other => other?,
                };
                // The record moved (another source id or connection): its old key goes.
                if let Some(old) = &existing
                    && let Some(old_connection) = &old.source_connection
                {
                    let old_key = keys::source_index(old_connection, &old.contact.source_id);
                    if old_key != index_key && index.get(&old_key)?.is_some_and(|o| o == id) {
                        index.remove(old_key)?;
                    }
                }
                let before = existing.as_ref().map(Tally::of);
                let entry = rules::register(existing, &contact, connection);
                contacts.insert(id, encode(&entry))?;
                index.insert(index_key.clone(), id)?;
                let mut changes = Changes::default();
                changes.contact(before, &entry);
                Ok(((), changes))
            })
            .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }

    /// The unified id registered for the record `source_id` of `connection`.
    pub fn id_for_source(
        &self,
        connection: &str,
        source_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .source_index
            .get(keys::source_index(connection, source_id))?
            .map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    pub fn contact(&self, id: &str) -> Result<Option<ContactEntry>, StoreError> {
        self.contacts
            .get(id)?
            .map(|bytes| decode(id.as_bytes(), &bytes))
            .transpose()
    }

    /// Applies an edit to the stored record and merges it into the contact's pending patch;
    /// queues the contact on `connection` unless it is already waiting or in flight.
    /// Not durable until [`SledStore::flush`].
    pub fn accept(
        &self,
        id: &str,
        patch: &ContactPatch,
        connection: &str,
    ) -> Result<Accepted, StoreError> {
        let seq = self.next_seq();
        let now = self.now();
        self.update_contact(id, seq, |entry| {
            let change = rules::accept(entry, patch, connection, seq, now);
            let accepted = Accepted {
                contact: entry.contact.clone(),
                queued: change != QueueChange::Leave,
            };
            Ok((change, accepted))
        })
    }

    /// [`SledStore::accept`], durably: the edit goes to the accept writer, which applies it
    /// with every other edit that arrived meanwhile in one transaction and answers once a
    /// flush after it has ended (see [`super::pipeline`]).
    pub async fn accept_durable(
        &self,
        id: &str,
        patch: &ContactPatch,
        connection: &str,
    ) -> Result<Accepted, StoreError> {
        let pipeline = self
            .accepts
            .as_ref()
            .expect("a store handle has its pipeline");
        pipeline.accept(id, patch, connection).await
    }

    /// Takes up to `max` contacts of `connection` whose turn has come (not-before ≤ `now`),
    /// moving each one's pending patch to in flight. Each contact is claimed in one
    /// transaction (its ready key removed and its patch moved together), so a crash never
    /// leaves it half claimed. A contact whose record cannot be read is taken out of the
    /// queue as a `STORE_CORRUPT` dead letter instead of blocking the connection's queue.
    pub fn claim(
        &self,
        connection: &str,
        now: u64,
        max: usize,
    ) -> Result<Vec<ClaimedEdit>, StoreError> {
        let mut claimed = Vec::new();
        for item in self.ready.range(keys::ready_range(connection, now)) {
            if claimed.len() >= max {
                break;
            }
            let (key, id) = item?;
            let id = String::from_utf8_lossy(&id).into_owned();
            let edit = self
                .write(|| {
                    let claim = (&self.contacts, &self.ready).transaction(|(contacts, ready)| {
                        let mut changes = Changes::default();
                        if ready.remove(&key)?.is_none() {
                            return Ok((None, changes));
                        }
                        let Some(mut entry): Option<ContactEntry> = get(contacts, id.as_bytes())?
                        else {
                            return Ok((None, changes));
                        };
                        if entry.sync.queued_key.as_deref() != Some(key.as_ref()) {
                            return Ok((None, changes));
                        }
                        let before = Tally::of(&entry);
                        let (edit, change) = rules::claim(&mut entry);
                        apply(&mut entry, ready, change, 0)?;
                        contacts.insert(id.as_bytes(), encode(&entry))?;
                        changes.contact(Some(before), &entry);
                        Ok((edit, changes))
                    });
                    claim.map_err(from_tx)
                })
                .map(|committed| self.counted(committed));
            match edit {
                Ok(edit) => claimed.extend(edit),
                Err(error @ StoreError::Corrupt { .. }) => {
                    self.dead_letter_unreadable(&key, &id, connection, &error, now)?
                }
                Err(error) => return Err(error),
            }
        }
        Ok(claimed)
    }

    /// Takes a contact whose record cannot be read out of the queue (its ready `key`) and
    /// keeps a dead letter saying so.
    fn dead_letter_unreadable(
        &self,
        key: &[u8],
        id: &str,
        connection: &str,
        error: &StoreError,
        now: u64,
    ) -> Result<(), StoreError> {
        tracing::error!(%error, "an unreadable record leaves the queue as a dead letter");
        let letter_id = letter_id(self.next_seq());
        let letter = rules::unreadable_letter(id, connection, &error.to_string(), &letter_id, now);
        self.write(|| {
            (&self.ready, &self.dead_letters)
                .transaction(|(ready, dead_letters)| {
                    ready.remove(key)?;
                    dead_letters.insert(letter_id.as_bytes(), encode(&letter))?;
                    let mut changes = Changes::default();
                    changes.unreadable_dequeued(connection);
                    changes.letter_made(connection);
                    Ok(((), changes))
                })
                .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }

    /// When the first waiting contact of `connection` may go (ms since the epoch).
    pub fn next_ready_at(&self, connection: &str) -> Result<Option<u64>, StoreError> {
        Ok(
            match self
                .ready
                .range(keys::ready_range(connection, u64::MAX))
                .next()
            {
                Some(item) => Some(keys::ready_not_before(&item?.0)),
                None => None,
            },
        )
    }

    /// How many contacts of `connection` may go now (counted up to `limit`), and since when
    /// the longest-waiting of them has been ready: what a lingering dispatcher weighs.
    pub fn ready_window(
        &self,
        connection: &str,
        now: u64,
        limit: usize,
    ) -> Result<(usize, Option<u64>), StoreError> {
        let mut ready = self
            .ready
            .range(keys::ready_range(connection, now))
            .take(limit);
        let Some(first) = ready.next() else {
            return Ok((0, None));
        };
        let oldest = keys::ready_not_before(&first?.0);
        let mut count = 1;
        for item in ready {
            item?;
            count += 1;
        }
        Ok((count, Some(oldest)))
    }

    /// The CRM confirmed the in-flight edit: reconcile its values into the record, and queue
    /// what is pending behind it. `linked_customer` is the CRM id of the customer the contact
    /// is now linked to, when the edit changed the link (`Some(None)`: unlinked).
    pub fn complete(
        &self,
        id: &str,
        confirmed: &ConfirmedContact,
        linked_customer: Option<Option<String>>,
    ) -> Result<(), StoreError> {
        let seq = self.next_seq();
        let now = self.now();
        self.update_contact(id, seq, |entry| {
            Ok((
                rules::complete(entry, confirmed, linked_customer.clone(), now),
                (),
            ))
        })
    }

    /// The push failed but may succeed later: the in-flight edit goes back in front of what
    /// is pending, to be tried at `not_before`. `count_attempt` is false for failures that are
    /// not the edit's fault (rate limits, paused connections).
    pub fn retry_later(
        &self,
        id: &str,
        not_before: u64,
        count_attempt: bool,
        error: &AdapterError,
    ) -> Result<u32, StoreError> {
        let seq = self.next_seq();
        let now = self.now();
        self.update_contact(id, seq, |entry| {
            let (attempts, change) =
                rules::retry_later(entry, not_before, count_attempt, error, now);
            Ok((change, attempts))
        })
    }

    /// The CRM refused the in-flight edit for good (or its attempts ran out): keep it as a
    /// dead letter with the CRM's error, and let what is pending behind it go on.
    pub fn dead_letter(
        &self,
        id: &str,
        error: &AdapterError,
        retries_exhausted: bool,
    ) -> Result<DeadLetter, StoreError> {
        let now = self.now();
        self.update_contact_lettered(id, |entry, letter_id| {
            let (letter, change) =
                rules::dead_letter(entry, error, retries_exhausted, letter_id, now);
            (Some(letter), change, ())
        })
        .map(|(letter, ())| letter.expect("the rule always makes a letter"))
    }

    /// A person changed fields of the contact's in-flight edit in the CRM since their base
    /// (`conflicts`, from the check before the write; `on_conflict = hold`). Called before the
    /// push of the rest: the conflicting fields leave the in-flight edit for a conflict letter
    /// (see [`rules::hold_conflicts`]), so that the later [`SledStore::complete`] neither confirms
    /// nor writes them. Answers the letter and whether anything is left in flight to push.
    /// [`StoreError::NotInFlight`] when none of the fields is in flight (nothing changes).
    pub fn hold_conflicts(
        &self,
        id: &str,
        conflicts: &BTreeMap<ContactField, FieldConflict>,
    ) -> Result<Held, StoreError> {
        let now = self.now();
        let (letter, in_flight_left) = self.update_contact_lettered(id, |entry, letter_id| {
            let (letter, change) = rules::hold_conflicts(entry, conflicts, letter_id, now);
            (letter, change, entry.sync.in_flight.is_some())
        })?;
        let letter = letter.ok_or_else(|| StoreError::NotInFlight(id.to_string()))?;
        Ok(Held {
            letter,
            in_flight_left,
        })
    }

    /// The CRM merged the contact's record into `survivor` (its canonical id; `error` is the
    /// CRM's answer saying so). In one transaction the contact is re-pointed at the survivor
    /// (its `source_id`, and its key in the source index) and its in-flight edit goes back to
    /// the queue in front of what is pending, now, without counting an attempt (see
    /// [`rules::repoint`]). When the survivor is already another unified contact's record, the
    /// contact is left as it is and the edit becomes a `MERGED_INTO_REGISTERED` dead letter
    /// naming both.
    pub fn repoint(
        &self,
        id: &str,
        survivor: &str,
        error: &AdapterError,
    ) -> Result<MergeOutcome, StoreError> {
        let seq = self.next_seq();
        let letter_id = letter_id(seq);
        let now = self.now();
        self.write(|| {
            (
                &self.contacts,
                &self.ready,
                &self.dead_letters,
                &self.source_index,
            )
                .transaction(|(contacts, ready, dead_letters, index)| {
                    let Some(mut entry): Option<ContactEntry> = get(contacts, id.as_bytes())?
                    else {
                        return abort(StoreError::UnknownContact(id.to_string()));
                    };
                    let mut changes = Changes::default();
                    let before = Tally::of(&entry);
                    let connection = entry
                        .source_connection
                        .clone()
                        .or_else(|| entry.sync.connection.clone())
                        .unwrap_or_default();
                    let old_key = keys::source_index(&connection, &entry.contact.source_id);
                    let new_key = keys::source_index(&connection, survivor);
                    let owner = index
                        .get(&new_key)?
                        .map(|owner| String::from_utf8_lossy(&owner).into_owned());
                    let (letter, change) = rules::repoint(
                        &mut entry,
                        survivor,
                        owner.as_deref(),
                        error,
                        &letter_id,
                        now,
                    );
                    let outcome = match letter {
                        Some(letter) => {
                            dead_letters.insert(letter.id.as_bytes(), encode(&letter))?;
                            changes.letter_made(&letter.connection);
                            MergeOutcome::SurvivorRegistered(Box::new(letter))
                        }
                        None => {
                            if index
                                .get(&old_key)?
                                .is_some_and(|owner| owner == id.as_bytes())
                            {
                                index.remove(old_key)?;
                            }
                            index.insert(new_key, id.as_bytes())?;
                            entry.source_connection = Some(connection);
                            MergeOutcome::Followed
                        }
                    };
                    apply(&mut entry, ready, change, seq)?;
                    contacts.insert(id.as_bytes(), encode(&entry))?;
                    changes.contact(Some(before), &entry);
                    Ok((outcome, changes))
                })
                .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }

    /// The in-flight edit's fields landed but its customer link did not
    /// (`ConfirmedContact::link_error`): the values are confirmed as by [`SledStore::complete`],
    /// and only the link change is retried or dead-lettered, as `failure` says (see
    /// [`rules::complete_except_link`]). Answers the dead letter, if one was made.
    pub fn complete_except_link(
        &self,
        id: &str,
        confirmed: &ConfirmedContact,
        failure: LinkFailure<'_>,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let now = self.now();
        self.update_contact_lettered(id, |entry, letter_id| {
            let (letter, change) =
                rules::complete_except_link(entry, confirmed, failure, letter_id, now);
            (letter, change, ())
        })
        .map(|(letter, ())| letter)
    }

    /// Runs `change` on one contact's entry inside a transaction with the ready queue and the
    /// dead letters; keeps the letter it may make (its id is given to `change`) and answers it
    /// with what `change` answered besides.
    fn update_contact_lettered<T>(
        &self,
        id: &str,
        change: impl Fn(&mut ContactEntry, &str) -> (Option<DeadLetter>, QueueChange, T),
    ) -> Result<(Option<DeadLetter>, T), StoreError> {
        let seq = self.next_seq();
        let letter_id = letter_id(seq);
        self.write(|| {
            (&self.contacts, &self.ready, &self.dead_letters)
                .transaction(|(contacts, ready, dead_letters)| {
                    let Some(mut entry): Option<ContactEntry> = get(contacts, id.as_bytes())?
                    else {
                        return abort(StoreError::UnknownContact(id.to_string()));
                    };
                    let before = Tally::of(&entry);
                    let (letter, queue_change, answer) = change(&mut entry, &letter_id);
                    apply(&mut entry, ready, queue_change, seq)?;
                    contacts.insert(id.as_bytes(), encode(&entry))?;
                    let mut changes = Changes::default();
                    changes.contact(Some(before), &entry);
                    if let Some(letter) = &letter {
                        dead_letters.insert(letter.id.as_bytes(), encode(letter))?;
                        changes.letter_made(&letter.connection);
                    }
                    Ok(((letter, answer), changes))
                })
                .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect()
    }

    pub fn dead_letter_by_id(&self, letter_id: &str) -> Result<Option<DeadLetter>, StoreError> {
        self.dead_letters
            .get(letter_id)?
            .map(|bytes| decode(letter_id.as_bytes(), &bytes))
            .transpose()
    }

    /// Puts a dead letter's values back in the queue, except those of fields accepted again
    /// since (see [`rules::replay`]); a letter with nothing left is resolved as superseded.
    /// A conflict letter's values are written over the person's: their base becomes the
    /// CRM's value the letter recorded.
    pub fn replay_dead_letter(&self, letter_id: &str) -> Result<Replay, StoreError> {
        let seq = self.next_seq();
        let now = self.now();
        self.settle_dead_letter(letter_id, seq, false, |entry, letter| {
            let Some(entry) = entry else {
                return abort(StoreError::UnknownContact(letter.contact_id.clone()));
            };
            let (replay, change) = rules::replay(entry, letter, now);
            Ok((change, replay))
        })
    }

    /// Forgets a dead letter: the record's values it touched go back to the CRM's last
    /// confirmed ones (a conflict letter's: the CRM's value it recorded, which becomes the
    /// base too), unless a later value was accepted (see [`rules::drop_letter`]). A letter
    /// whose contact is unknown or unreadable is removed all the same.
    pub fn drop_dead_letter(&self, letter_id: &str) -> Result<DeadLetter, StoreError> {
        self.settle_dead_letter(letter_id, 0, true, |entry, letter| {
            if let Some(entry) = entry {
                rules::drop_letter(entry, letter);
            }
            Ok((QueueChange::Leave, letter.clone()))
        })
    }

    /// Removes a dead letter and runs `settle` on its contact (`None` when the contact is
    /// unknown, or its record unreadable and `past_unreadable`), in one transaction.
    fn settle_dead_letter<T>(
        &self,
        letter_id: &str,
        seq: u64,
        past_unreadable: bool,
        settle: impl Fn(Option<&mut ContactEntry>, &DeadLetter) -> TxResult<(QueueChange, T)>,
    ) -> Result<T, StoreError> {
        self.write(|| {
            (&self.contacts, &self.ready, &self.dead_letters)
                .transaction(|(contacts, ready, dead_letters)| {
                    let Some(letter): Option<DeadLetter> = get(dead_letters, letter_id.as_bytes())?
                    else {
                        return abort(StoreError::UnknownDeadLetter(letter_id.to_string()));
                    };
                    dead_letters.remove(letter_id.as_bytes())?;
                    let mut changes = Changes::default();
                    changes.letter_removed(&letter.connection);
                    let id = letter.contact_id.as_bytes();
                    let entry = match get::<ContactEntry>(contacts, id) {
                        Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
                            ..
                        })) if past_unreadable => None,
                        other => other?,
                    };
                    let Some(mut entry) = entry else {
                        return settle(None, &letter).map(|(_, result)| (result, changes));
                    };
                    let before = Tally::of(&entry);
                    let (change, result) = settle(Some(&mut entry), &letter)?;
                    apply(&mut entry, ready, change, seq)?;
                    contacts.insert(id, encode(&entry))?;
                    changes.contact(Some(before), &entry);
                    Ok((result, changes))
                })
                .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }

    pub fn upsert_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        self.write(|| {
            self.customers
                .insert(customer.id.as_bytes(), encode(customer))?;
            Ok(())
        })
    }

    pub fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        self.customers
            .get(id)?
            .map(|bytes| decode(id.as_bytes(), &bytes))
            .transpose()
    }

    /// Queue figures per connection (every connection that has anything queued, in flight
    /// or dead), as kept by the counters: no scan.
    pub fn counts(&self) -> BTreeMap<String, ConnectionCounts> {
        self.counters.snapshot()
    }

    /// Moves the figures by what a committed transaction changed; answers its result.
    fn counted<T>(&self, (result, changes): (T, Changes)) -> T {
        self.counters.commit(changes);
        result
    }

    /// Counts the figures once, streaming over the records (see [`super::counters`]).
    fn count_at_open(&self) -> Result<(), StoreError> {
        /// Records counted between two commits, so that counting holds little in memory.
        const CHUNK: usize = 4096;
        let mut changes = Changes::default();
        for (n, entry) in self.readable_contacts().enumerate() {
            changes.contact(None, &entry?);
            if n % CHUNK == CHUNK - 1 {
                self.counters.commit(std::mem::take(&mut changes));
            }
        }
        for item in self.dead_letters.iter() {
            let (key, bytes) = item?;
            match decode::<DeadLetter>(&key, &bytes) {
                Ok(letter) => changes.letter_made(&letter.connection),
                Err(error) => tracing::error!(%error, "an unreadable dead letter is not counted"),
            }
            if changes.len() >= CHUNK {
                self.counters.commit(std::mem::take(&mut changes));
            }
        }
        self.counters.commit(changes);
        Ok(())
    }

    /// Every contact whose record can be read. An unreadable one is logged and skipped, so
    /// that one bad record stops no scan (claiming it makes it a dead letter).
    fn readable_contacts(&self) -> impl Iterator<Item = Result<ContactEntry, StoreError>> + '_ {
        self.contacts.iter().filter_map(|item| match item {
            Err(error) => Some(Err(error.into())),
            Ok((key, bytes)) => match decode(&key, &bytes) {
                Ok(entry) => Some(Ok(entry)),
                Err(error) => {
                    tracing::error!(%error, "skipping an unreadable record");
                    None
                }
            },
        })
    }

    /// Whether an edit with this `edit_id` (from a backfill file) was already accepted.
    pub fn edit_seen(&self, edit_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .meta
            .contains_key(format!("{EDIT_ID_PREFIX}{edit_id}"))?)
    }

    /// Remembers that the edit `edit_id` was accepted. Durable with the next flush; a crash
    /// before it re-applies the edit on a re-run, which lands the same values again.
    pub fn remember_edit(&self, edit_id: &str) -> Result<(), StoreError> {
        let accepted_at = self.now().to_be_bytes();
        self.write(|| {
            self.meta
                .insert(format!("{EDIT_ID_PREFIX}{edit_id}"), &accepted_at)?;
            Ok(())
        })
    }

    /// Drops what `retention` says is kept no longer, as of `now`: dead letters (each as
    /// [`SledStore::drop_dead_letter`] does) and edit ids (kept with when they were
    /// accepted; those from before that was kept count as old). Works through the trees a
    /// chunk at a time, so its memory does not grow with them.
    pub fn prune(&self, retention: &Retention, now: u64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        if let Some(max_age) = retention.dead_letters_ms {
            let cutoff = now.saturating_sub(max_age);
            pruned.dead_letters = self.prune_chunks(
                &self.dead_letters,
                b"",
                |key, bytes| {
                    match decode::<DeadLetter>(key, bytes) {
                        Ok(letter) => letter.failed_at < cutoff,
                        // An unreadable letter is an operator's to look at.
                        Err(_) => false,
                    }
                },
                |key| match self.drop_dead_letter(&String::from_utf8_lossy(key)) {
                    Ok(_) | Err(StoreError::UnknownDeadLetter(_)) => Ok(()),
                    Err(error) => Err(error),
                },
            )?;
        }
        if let Some(max_age) = retention.edit_ids_ms {
            let cutoff = now.saturating_sub(max_age);
            pruned.edit_ids = self.prune_chunks(
                &self.meta,
                EDIT_ID_PREFIX.as_bytes(),
                |_, value| <[u8; 8]>::try_from(value).map_or(0, u64::from_be_bytes) < cutoff,
                |key| {
                    self.write(|| {
                        self.meta.remove(key)?;
                        Ok(())
                    })
                },
            )?;
        }
        Ok(pruned)
    }

    /// Removes, with `remove`, every record of `tree` under `prefix` that `old` says is old;
    /// answers how many. Reads a chunk of keys, then removes (no transaction runs on a tree
    /// while it is iterated), then reads on after the chunk's last key.
    fn prune_chunks(
        &self,
        tree: &sled::Tree,
        prefix: &[u8],
        old: impl Fn(&[u8], &[u8]) -> bool,
        remove: impl Fn(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        const CHUNK: usize = 1024;
        let mut removed = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut chunk = Vec::new();
            let mut last = None;
            let records = match &after {
                None => tree.scan_prefix(prefix),
                Some(key) => {
                    let mut from = key.clone();
                    from.push(0);
                    tree.range(from..)
                }
            };
            for item in records.take(CHUNK) {
                let (key, value) = item?;
                if !key.starts_with(prefix) {
                    break;
                }
                if old(&key, &value) {
                    chunk.push(key.to_vec());
                }
                last = Some(key.to_vec());
            }
            let Some(last) = last else {
                return Ok(removed);
            };
            for key in &chunk {
                remove(key)?;
            }
            removed += chunk.len() as u64;
            after = Some(last);
        }
    }

    /// Reads a value the daemon keeps for itself (e.g. a rotated credential).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(key)?
            .map(|value| String::from_utf8_lossy(&value).into_owned()))
    }

    /// Writes a value the daemon keeps for itself, durably before returning.
    pub fn meta_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.meta
            .scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item?;
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                ))
            })
            .collect()
    }

    pub fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        self.write(|| {
            self.meta.remove(key)?;
            self.db.flush()?;
            Ok(())
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|| {
            self.meta.insert(key, value.as_bytes())?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// Runs `change` on one contact's entry inside a transaction with the ready queue, and
    /// applies the queue change it answers (a new place is keyed with `seq`).
    fn update_contact<T>(
        &self,
        id: &str,
        seq: u64,
        change: impl Fn(&mut ContactEntry) -> TxResult<(QueueChange, T)>,
    ) -> Result<T, StoreError> {
        self.write(|| {
            (&self.contacts, &self.ready)
                .transaction(|(contacts, ready)| {
                    let Some(mut entry): Option<ContactEntry> = get(contacts, id.as_bytes())?
                    else {
                        return abort(StoreError::UnknownContact(id.to_string()));
                    };
                    let before = Tally::of(&entry);
                    let (queue_change, result) = change(&mut entry)?;
                    apply(&mut entry, ready, queue_change, seq)?;
                    contacts.insert(id.as_bytes(), encode(&entry))?;
                    let mut changes = Changes::default();
                    changes.contact(Some(before), &entry);
                    Ok((result, changes))
                })
                .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }
}

impl BatchSink for SledStore {
    fn apply(
        &self,
        batch: &[PendingAccept],
    ) -> Result<Vec<Result<Accepted, StoreError>>, StoreError> {
        let seqs: Vec<u64> = batch.iter().map(|_| self.next_seq()).collect();
        let now = self.now();
        self.write(|| {
            (&self.contacts, &self.ready)
                .transaction(|(contacts, ready)| {
                    let mut outcomes = Vec::with_capacity(batch.len());
                    let mut changes = Changes::default();
                    for (edit, &seq) in batch.iter().zip(&seqs) {
                        let id = edit.id.as_bytes();
                        let mut entry = match get::<ContactEntry>(contacts, id) {
                            Ok(Some(entry)) => entry,
                            Ok(None) => {
                                outcomes.push(Err(StoreError::UnknownContact(edit.id.clone())));
                                continue;
                            }
                            Err(ConflictableTransactionError::Abort(error)) => {
                                outcomes.push(Err(error));
                                continue;
                            }
                            Err(other) => return Err(other),
                        };
                        let before = Tally::of(&entry);
                        let change =
                            rules::accept(&mut entry, &edit.patch, &edit.connection, seq, now);
                        let queued = change != QueueChange::Leave;
                        apply(&mut entry, ready, change, seq)?;
                        contacts.insert(id, encode(&entry))?;
                        changes.contact(Some(before), &entry);
                        outcomes.push(Ok(Accepted {
                            contact: entry.contact,
                            queued,
                        }));
                    }
                    Ok((outcomes, changes))
                })
                .map_err(from_tx)
        })
        .map(|committed| self.counted(committed))
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.flusher.flush_blocking()
    }
}

/// What `unisync store compact` did.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub pruned: Pruned,
}

/// Compacts the sled store at `path` (no daemon may hold it: [`StoreError::Locked`]):
/// migrates it, prunes it by `retention`, then copies every tree into fresh files and puts
/// them in its place. sled never gives back the space of records rewritten or removed;
/// fresh files hold only the live ones. The swap is two renames: an interrupted compaction
/// is finished or undone at the next open ([`finish_interrupted_compaction`]).
pub async fn compact(
    path: &Path,
    cache_mib: u64,
    retention: &Retention,
) -> Result<Compacted, StoreError> {
    let bytes_before = dir_bytes(path);
    let pruned = {
        let store = SledStore::open(path, cache_mib)?;
        let pruned = store.prune(retention, store.now())?;
        store.flush().await?;
        pruned
    };
    let source = open_released(path, cache_mib).await?;
    let fresh = sibling(path, "compacting");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io_error)?;
    }
    // A fresh directory: compressed, whatever the old one was.
    let target = sled_config(&fresh, cache_mib).open()?;
    // Sequences (letter ids, acceptance order) go on from where the store was.
    let next_seq = source.generate_id()?;
    target.import(source.export());
    while target.generate_id()? < next_seq {}
    target.flush()?;
    drop((source, target));
    let old = sibling(path, "pre-compact");
    std::fs::rename(path, &old).map_err(io_error)?;
    std::fs::rename(&fresh, path).map_err(io_error)?;
    std::fs::remove_dir_all(&old).map_err(io_error)?;
    Ok(Compacted {
        bytes_before,
        bytes_after: dir_bytes(path),
        pruned,
    })
}

/// `path` with `.suffix` added to its last component.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

fn io_error(error: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(error))
}

/// sled's settings for the store at `path`: a cache of `cache_mib`, low space, and zstd
/// compression of its pages on disk unless the store was made without it (sled cannot change
/// that across restarts; `unisync store compact` writes a compressed copy).
fn sled_config(path: &Path, cache_mib: u64) -> sled::Config {
    // sled's `conf`: `key: value` lines, then a checksum.
    let uncompressed = std::fs::read(path.join("conf")).is_ok_and(|conf| {
        conf.split(|&byte| byte == b'\n')
            .any(|line| line == b"use_compression: false")
    });
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_mib * 1024 * 1024)
        .mode(sled::Mode::LowSpace)
        .use_compression(!uncompressed)
        .compression_factor(COMPRESSION_LEVEL)
}

/// zstd's level for sled's pages: low, as every flush of the accept path compresses.
const COMPRESSION_LEVEL: i32 = 1;

/// Why sled could not open the store at `path`: [`StoreError::Locked`] when another
/// process (or a handle not yet let go) holds it.
fn open_error(path: &Path, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            StoreError::Locked(path.to_path_buf())
        }
        other => StoreError::Sled(other),
    }
}

/// Opens the sled database at `path` once the store just dropped has let go of it (its
/// writer thread and flusher task end a moment after the last handle).
async fn open_released(path: &Path, cache_mib: u64) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled_config(path, cache_mib)
            .open()
            .map_err(|error| open_error(path, error))
        {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
}

/// A compaction stopped between its two renames leaves the old files at `PATH.pre-compact`:
/// when `path` is missing, the compacted copy never took its place and the old files go
/// back; when both are there, the copy did, and the old files go.
fn finish_interrupted_compaction(path: &Path) -> Result<(), StoreError> {
    let old = sibling(path, "pre-compact");
    if !old.exists() {
        return Ok(());
    }
    if path.exists() {
        tracing::warn!(old = %old.display(), "removing the files an interrupted compaction replaced");
        std::fs::remove_dir_all(&old).map_err(io_error)
    } else {
        tracing::warn!(old = %old.display(), "an interrupted compaction: the store's files go back");
        std::fs::rename(&old, path).map_err(io_error)
    }
}

/// The bytes of every file under `path`.
pub fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Brings the store at `db` to [`SCHEMA_VERSION`], or refuses a store a newer unisync wrote.
/// Each step writes the version only after it has done its work, and may run again.
fn migrate(db: &sled::Db, meta: &sled::Tree) -> Result<(), StoreError> {
    let version = meta.get("schema_version")?;
    let version = match version.as_deref() {
        None => {
            meta.insert("schema_version", SCHEMA_VERSION)?;
            return Ok(());
        }
        Some(version) => version.to_vec(),
    };
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version == b"1" {
        migrate_source_index(&db.open_tree("contacts")?, &db.open_tree("source_index")?)?;
        meta.insert("schema_version", "2")?;
        db.flush()?;
    }
    if version == b"1" || version == b"2" {
        reencode::<ContactEntry>(&db.open_tree("contacts")?)?;
        reencode::<DeadLetter>(&db.open_tree("dead_letters")?)?;
        reencode::<Customer>(&db.open_tree("customers")?)?;
        meta.insert("schema_version", SCHEMA_VERSION)?;
        db.flush()?;
        tracing::info!(
            "store migrated to schema 3 (records in postcard); `unisync store compact` returns the space the JSON records held"
        );
        return Ok(());
    }
    Err(StoreError::Misconfigured(format!(
        "the store's schema version is {}, newer than this unisync reads ({}): run the unisync \
         that wrote it, or restore a backup made for this version",
        String::from_utf8_lossy(&version),
        String::from_utf8_lossy(SCHEMA_VERSION)
    )))
}

/// Schema 2 → 3: every JSON record of `tree` is written again in postcard. A record that
/// cannot be read is left as it is (reading it fails as before: a claim dead-letters it).
fn reencode<T: Serialize + DeserializeOwned>(tree: &sled::Tree) -> Result<(), StoreError> {
    let mut reencoded = 0u64;
    for item in tree.iter() {
        let (key, bytes) = item?;
        if bytes.first() == Some(&POSTCARD) {
            continue;
        }
        match decode_json::<T>(&key, &bytes) {
            Ok(record) => {
                tree.insert(&key, encode(&record))?;
                reencoded += 1;
            }
            Err(error) => tracing::error!(%error, "migration leaves an unreadable record as it is"),
        }
    }
    tracing::info!(tree = %String::from_utf8_lossy(&tree.name()), reencoded, "records re-encoded");
    Ok(())
}

/// Schema 1 → 2: the source index is rebuilt keyed by connection. Each contact's connection
/// is the one its edits went to, else its `external_system_config_id`, else its
/// `source_system` (the default connection names equal the systems). Safe to run again if
/// interrupted: the version is written only after it.
/// Creates the store's directory readable by its owner only (the store holds every contact's
/// values and, with OAuth connections, rotated refresh tokens), and narrows an existing one.
fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |err| StoreError::Sled(::sled::Error::Io(err));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

fn migrate_source_index(contacts: &sled::Tree, index: &sled::Tree) -> Result<(), StoreError> {
    index.clear()?;
    let mut migrated = 0u64;
    for item in contacts.iter() {
        let (key, bytes) = item?;
        let mut entry: ContactEntry = match decode_json(&key, &bytes) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::error!(%error, "migration skips an unreadable record");
                continue;
            }
        };
        let connection = entry
            .source_connection
            .clone()
            .or_else(|| entry.sync.connection.clone())
            .or_else(|| entry.contact.external_system_config_id.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| entry.contact.source_system.clone());
        let index_key = keys::source_index(&connection, &entry.contact.source_id);
        if let Some(owner) = index.get(&index_key)? {
            tracing::warn!(
                contact = %entry.contact.id,
                owner = %String::from_utf8_lossy(&owner),
                %connection,
                source_id = %entry.contact.source_id,
                "two contacts name the same CRM record; the index keeps the first"
            );
        } else {
            index.insert(index_key, key.as_ref())?;
        }
        entry.source_connection = Some(connection);
        contacts.insert(&key, serde_json::to_vec(&entry).expect("records serialise"))?;
        migrated += 1;
    }
    tracing::info!(
        migrated,
        "store migrated to schema 2 (source index per connection)"
    );
    Ok(())
}

fn get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => match decode(key, &bytes) {
            Ok(value) => Ok(Some(value)),
            Err(error) => abort(error),
        },
    }
}

/// Carries out a rule's [`QueueChange`] on the ready queue; a new place is keyed with `seq`.
fn apply(
    entry: &mut ContactEntry,
    ready: &TransactionalTree,
    change: QueueChange,
    seq: u64,
) -> TxResult<()> {
    if change == QueueChange::Leave {
        return Ok(());
    }
    if let Some(old_key) = entry.sync.queued_key.take() {
        ready.remove(old_key)?;
    }
    if let QueueChange::Enqueue { not_before } = change {
        let connection = entry.sync.connection.as_deref().unwrap_or_default();
        let key = keys::ready(connection, not_before, seq);
        ready.insert(key.clone(), entry.contact.id.as_bytes())?;
        entry.sync.queued_key = Some(key);
    }
    Ok(())
}
