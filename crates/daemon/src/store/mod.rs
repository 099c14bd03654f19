//! The durable queue and contact store, behind one API over two engines: sled (embedded, one
//! process; the default) and PostgreSQL (several daemons on one database).
//!
//! What each state change does to a contact is decided in [`rules`], plain functions over one
//! contact's entry, shared by both engines; an engine only loads, saves, claims and commits,
//! applying each rule's queue change and dead letter inside the rule's transaction. The
//! callers see [`Store`]: accept, claim, complete, retry later, dead-letter, hold conflicts,
//! re-point, replay, drop, recover, and the reads around them.

mod clock;
mod counters;
mod flush;
mod keys;
mod model;
mod pipeline;
mod postgres;
mod rules;
mod sled;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use unisync_core::{AdapterError, ConfirmedContact, ContactField, ContactPatch, UnifiedContact};

pub use self::sled::compact;
use crate::config::{StorageConfig, StorageEngine};
use crate::conflict::FieldConflict;
pub use model::{
    ClaimedEdit, ConnectionCounts, ContactEntry, Customer, DeadLetter, Held, LetterKind,
    MergeOutcome, Pruned, Replay, Retention,
};
pub use rules::{LinkFailure, class_name};

use self::postgres::PgStore;
pub use self::postgres::{NodeSession, PgSettings};
use self::sled::SledStore;
use clock::CLOCK;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {0} is locked by another unisync process (is the daemon running?)")]
    Locked(PathBuf),
    #[error("store: {0}")]
    Sled(#[from] ::sled::Error),
    #[error("store: unreadable record {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("unknown contact {0}")]
    UnknownContact(String),
    #[error("unknown dead letter {0}")]
    UnknownDeadLetter(String),
    #[error("contact {0} has none of the conflicting fields in flight")]
    NotInFlight(String),
    #[error("{connection} record `{source_id}` is already registered as unified contact `{owner}`")]
    SourceIdTaken {
        connection: String,
        source_id: String,
        owner: String,
    },
    #[error("store: the flush task has stopped")]
    FlusherGone,
    #[error(
        "the store failed ({0}); it takes no more writes until unisync restarts from what is on disk"
    )]
    Failed(String),
    #[error("store: cannot reach the database: {0}")]
    Connect(String),
    #[error("{0}")]
    Misconfigured(String),
    #[error("store: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("store: no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(
        "contact {contact}: this node no longer holds the lease of its edit in flight (held by {})",
        holder.as_deref().unwrap_or("no node")
    )]
    NotLeaseHolder {
        contact: String,
        holder: Option<String>,
    },
}

/// A PostgreSQL error with the server's own words (the driver's display says only "db
/// error" for them).
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// Milliseconds since the Unix epoch, as the store counts them: never backwards, within a
/// process or across restarts (see [`clock`]). Every time given to the store comes from here.
pub fn now_ms() -> u64 {
    CLOCK.now()
}

/// One letter of a replay of every dead letter: what the replay did, or why it could not.
pub struct ReplayAttempt {
    pub letter_id: String,
    pub outcome: Result<Replay, StoreError>,
}

/// How an accepted edit left the contact.
pub struct Accepted {
    pub contact: UnifiedContact,
    /// True when the contact joined its connection's ready queue (the dispatcher should look).
    pub queued: bool,
}

/// A dead letter's id: its store sequence, so that ids sort in the order letters were made.
fn letter_id(seq: u64) -> String {
    format!("dl-{seq:016x}")
}

/// The store. Cheap to clone; clones share the engine (its database, its pool).
#[derive(Clone)]
pub struct Store {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    Sled(SledStore),
    Postgres(PgStore),
}

impl From<SledStore> for Store {
    fn from(store: SledStore) -> Store {
        Store {
            engine: Engine::Sled(store),
        }
    }
}

impl Store {
    /// Opens (creating if missing) the sled store at `path`. Must be called inside a tokio
    /// runtime (the group-commit flusher is a task).
    pub fn open(path: &Path, cache_mib: u64) -> Result<Store, StoreError> {
        SledStore::open(path, cache_mib).map(Store::from)
    }

    /// Opens the store `storage` configures: sled's directory, or the PostgreSQL database.
    pub async fn open_configured(storage: &StorageConfig) -> Result<Store, StoreError> {
        match storage.engine {
            StorageEngine::Sled => Store::open(&storage.path, storage.cache_mib),
            StorageEngine::Postgres => {
                let url = storage
                    .postgres_url()
                    .map_err(|error| StoreError::Misconfigured(error.to_string()))?
                    .ok_or_else(|| StoreError::Misconfigured("storage.url_env: missing".into()))?;
                Store::open_postgres(&PgSettings {
                    url,
                    schema: None,
                    pool_size: storage.pool_size,
                    lease_ms: storage.lease_ms(),
                    node_id: node_id(),
                })
                .await
            }
        }
    }

    /// The schema version of the PostgreSQL store at `url`, read without changing anything
    /// (0: none yet), and the version this unisync migrates it to at start.
    pub async fn postgres_schema_version(
        url: &unisync_core::Secret,
    ) -> Result<(i32, i32), StoreError> {
        PgStore::schema_version(url).await
    }

    /// Connects to the PostgreSQL store `settings` name, creating or migrating its schema.
    pub async fn open_postgres(settings: &PgSettings) -> Result<Store, StoreError> {
        Ok(Store {
            engine: Engine::Postgres(PgStore::open(settings).await?),
        })
    }

    /// The sled engine, for tests that reach under the API (an unreadable record, an old
    /// schema).
    #[cfg(test)]
    fn sled(&self) -> &SledStore {
        match &self.engine {
            Engine::Sled(store) => store,
            Engine::Postgres(_) => panic!("a sled-only test on PostgreSQL"),
        }
    }

    /// Now, by the store's clock (see [`now_ms`]).
    #[cfg(test)]
    fn now(&self) -> u64 {
        match &self.engine {
            Engine::Sled(store) => store.now(),
            Engine::Postgres(_) => now_ms(),
        }
    }

    /// Makes every write so far durable. Concurrent callers share one flush. A failure fails
    /// the store for good ([`StoreError::Failed`]). PostgreSQL commits each write before
    /// answering it: nothing is left to flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.flush().await,
            Engine::Postgres(store) => store.flush(),
        }
    }

    /// Why the store failed, once it has (a flush or a write could not reach the disk): it
    /// refuses every write from then on, and the process should stop and restart from what
    /// is durable.
    pub fn failure(&self) -> Option<String> {
        match &self.engine {
            Engine::Sled(store) => store.failure(),
            // A failed write is answered as such, and the next one may succeed.
            Engine::Postgres(_) => None,
        }
    }

    /// Waits until the store fails; answers why.
    pub async fn failed(&self) -> String {
        match &self.engine {
            Engine::Sled(store) => store.failed().await,
            Engine::Postgres(_) => std::future::pending().await,
        }
    }

    /// Test builds only: the next flush fails with `message`, as a full disk would.
    #[cfg(test)]
    pub fn fail_next_flush(&self, message: &str) {
        self.sled().fail_next_flush(message);
    }

    /// This process's name in the leases it takes (PostgreSQL); `sled` on sled.
    pub fn node_id(&self) -> &str {
        match &self.engine {
            Engine::Sled(_) => "sled",
            Engine::Postgres(store) => store.node_id(),
        }
    }

    /// How long a claim holds, in ms, on an engine several nodes share (PostgreSQL); `None`
    /// on sled, whose one process holds every edit it claimed until it stops.
    pub fn lease_ms(&self) -> Option<u64> {
        match &self.engine {
            Engine::Sled(_) => None,
            Engine::Postgres(store) => Some(store.lease_ms()),
        }
    }

    /// Extends this node's leases on the in-flight edits of `ids`; answers the contacts whose
    /// edit another node holds now, which this node must stop acting on (see
    /// `PgStore::renew_leases`). sled: none (one process holds every edit).
    pub async fn renew_leases(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        match &self.engine {
            Engine::Sled(_) => Ok(Vec::new()),
            Engine::Postgres(store) => store.renew_leases(ids, now_ms()).await,
        }
    }

    /// Takes the leases on the in-flight edits of `ids` over, for a running bulk job this
    /// node follows on (see `PgStore::adopt_leases`). sled: nothing to take over.
    pub async fn adopt_leases(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        match &self.engine {
            Engine::Sled(_) => Ok(ids.to_vec()),
            Engine::Postgres(store) => store.adopt_leases(ids, now_ms()).await,
        }
    }

    /// Opens this node's session on a shared store (see `PgStore::node_session`); `None` on
    /// sled, where the one process that holds the store leads every connection.
    pub async fn node_session(
        &self,
        member: bool,
        notified: impl Fn(&str) + Send + 'static,
    ) -> Option<Result<NodeSession, StoreError>> {
        match &self.engine {
            Engine::Sled(_) => None,
            Engine::Postgres(store) => Some(store.node_session(member, notified).await),
        }
    }

    /// Puts every edit that was in flight when the process stopped back in its connection's
    /// ready queue (delivery is at least once), to go at `not_before(connection)`: each
    /// connection's own grace, long enough for the dead process's last requests to settle.
    /// Returns how many. An unreadable record is skipped (its claim dead-letters it).
    ///
    /// PostgreSQL: nothing to do (0). Other nodes may be pushing their edits; an edit whose
    /// node stopped is claimed again once its lease expires.
    pub async fn recover_in_flight(
        &self,
        not_before: impl Fn(&str) -> u64,
        still_in_flight: impl Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.recover_in_flight(not_before, still_in_flight),
            Engine::Postgres(_) => Ok(0),
        }
    }

    /// Registers or refreshes a contact (import, pull) as a record of `connection` (see
    /// [`rules::register`]). Refused with [`StoreError::SourceIdTaken`] when the connection's
    /// record is already registered under another unified id. A record that cannot be read is
    /// replaced: importing the contact again is how it is repaired.
    pub async fn upsert_contact(
        &self,
        connection: &str,
        contact: UnifiedContact,
    ) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.upsert_contact(connection, contact),
            Engine::Postgres(store) => store.upsert_contact(connection, contact).await,
        }
    }

    /// The unified id registered for the record `source_id` of `connection`.
    pub async fn id_for_source(
        &self,
        connection: &str,
        source_id: &str,
    ) -> Result<Option<String>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.id_for_source(connection, source_id),
            Engine::Postgres(store) => store.id_for_source(connection, source_id).await,
        }
    }

    pub async fn contact(&self, id: &str) -> Result<Option<ContactEntry>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.contact(id),
            Engine::Postgres(store) => store.contact(id).await,
        }
    }

    /// Applies an edit to the stored record and merges it into the contact's pending patch;
    /// queues the contact on `connection` unless it is already waiting or in flight.
    /// Not durable until [`Store::flush`].
    /// Tests accept through it; the daemon accepts durably ([`Store::accept_durable`]).
    #[cfg(test)]
    pub async fn accept(
        &self,
        id: &str,
        patch: &ContactPatch,
        connection: &str,
    ) -> Result<Accepted, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.accept(id, patch, connection),
            Engine::Postgres(store) => store.accept(id, patch, connection, now_ms()).await,
        }
    }

    /// [`Store::accept`], durable when it answers: what the API's update endpoint calls. On
    /// sled the edit joins the accept pipeline (one writer applies every edit that arrived
    /// during a flush as one batch, flushes once and answers them all); PostgreSQL commits
    /// each edit before answering it.
    pub async fn accept_durable(
        &self,
        id: &str,
        patch: &ContactPatch,
        connection: &str,
    ) -> Result<Accepted, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.accept_durable(id, patch, connection).await,
            Engine::Postgres(store) => store.accept(id, patch, connection, now_ms()).await,
        }
    }

    /// Takes up to `max` contacts of `connection` whose turn has come (not-before ≤ `now`),
    /// moving each one's pending patch to in flight, each in one transaction, so a crash
    /// never leaves one half claimed. A contact whose record cannot be read is taken out of
    /// the queue as a `STORE_CORRUPT` dead letter instead of blocking the connection's queue.
    pub async fn claim(
        &self,
        connection: &str,
        now: u64,
        max: usize,
    ) -> Result<Vec<ClaimedEdit>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.claim(connection, now, max),
            Engine::Postgres(store) => store.claim(connection, now, max).await,
        }
    }

    /// When the first waiting contact of `connection` may go (ms since the epoch).
    pub async fn next_ready_at(&self, connection: &str) -> Result<Option<u64>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.next_ready_at(connection),
            Engine::Postgres(store) => store.next_ready_at(connection).await,
        }
    }

    /// How many contacts of `connection` may go now (counted up to `limit`), and since when
    /// the longest-waiting of them has been ready: what a lingering dispatcher weighs.
    pub async fn ready_window(
        &self,
        connection: &str,
        now: u64,
        limit: usize,
    ) -> Result<(usize, Option<u64>), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.ready_window(connection, now, limit),
            Engine::Postgres(store) => store.ready_window(connection, now, limit).await,
        }
    }

    /// The CRM confirmed the in-flight edit: reconcile its values into the record, and queue
    /// what is pending behind it. `linked_customer` is the CRM id of the customer the contact
    /// is now linked to, when the edit changed the link (`Some(None)`: unlinked).
    pub async fn complete(
        &self,
        id: &str,
        confirmed: &ConfirmedContact,
        linked_customer: Option<Option<String>>,
    ) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.complete(id, confirmed, linked_customer),
            Engine::Postgres(store) => {
                store
                    .complete(id, confirmed, linked_customer, now_ms())
                    .await
            }
        }
    }

    /// The push failed but may succeed later: the in-flight edit goes back in front of what
    /// is pending, to be tried at `not_before`. `count_attempt` is false for failures that are
    /// not the edit's fault (rate limits, paused connections).
    pub async fn retry_later(
        &self,
        id: &str,
        not_before: u64,
        count_attempt: bool,
        error: &AdapterError,
    ) -> Result<u32, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.retry_later(id, not_before, count_attempt, error),
            Engine::Postgres(store) => {
                store
                    .retry_later(id, not_before, count_attempt, error, now_ms())
                    .await
            }
        }
    }

    /// The CRM refused the in-flight edit for good (or its attempts ran out): keep it as a
    /// dead letter with the CRM's error, and let what is pending behind it go on.
    pub async fn dead_letter(
        &self,
        id: &str,
        error: &AdapterError,
        retries_exhausted: bool,
    ) -> Result<DeadLetter, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.dead_letter(id, error, retries_exhausted),
            Engine::Postgres(store) => {
                store
                    .dead_letter(id, error, retries_exhausted, now_ms())
                    .await
            }
        }
    }

    /// A person changed fields of the contact's in-flight edit in the CRM since their base
    /// (`conflicts`, from the check before the write; `on_conflict = hold`). Called before the
    /// push of the rest: the conflicting fields leave the in-flight edit for a conflict letter
    /// (see [`rules::hold_conflicts`]), so that the later [`Store::complete`] neither confirms
    /// nor writes them. Answers the letter and whether anything is left in flight to push.
    /// [`StoreError::NotInFlight`] when none of the fields is in flight (nothing changes).
    pub async fn hold_conflicts(
        &self,
        id: &str,
        conflicts: &BTreeMap<ContactField, FieldConflict>,
    ) -> Result<Held, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.hold_conflicts(id, conflicts),
            Engine::Postgres(store) => store.hold_conflicts(id, conflicts, now_ms()).await,
        }
    }

    /// The CRM merged the contact's record into `survivor` (its canonical id; `error` is the
    /// CRM's answer saying so). In one transaction the contact is re-pointed at the survivor
    /// (its `source_id`, and its key in the source index) and its in-flight edit goes back to
    /// the queue in front of what is pending, now, without counting an attempt (see
    /// [`rules::repoint`]). When the survivor is already another unified contact's record, the
    /// contact is left as it is and the edit becomes a `MERGED_INTO_REGISTERED` dead letter
    /// naming both.
    pub async fn repoint(
        &self,
        id: &str,
        survivor: &str,
        error: &AdapterError,
    ) -> Result<MergeOutcome, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.repoint(id, survivor, error),
            Engine::Postgres(store) => store.repoint(id, survivor, error, now_ms()).await,
        }
    }

    /// The in-flight edit's fields landed but its customer link did not
    /// (`ConfirmedContact::link_error`): the values are confirmed as by [`Store::complete`],
    /// and only the link change is retried or dead-lettered, as `failure` says (see
    /// [`rules::complete_except_link`]). Answers the dead letter, if one was made.
    pub async fn complete_except_link(
        &self,
        id: &str,
        confirmed: &ConfirmedContact,
        failure: LinkFailure<'_>,
    ) -> Result<Option<DeadLetter>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.complete_except_link(id, confirmed, failure),
            Engine::Postgres(store) => {
                store
                    .complete_except_link(id, confirmed, failure, now_ms())
                    .await
            }
        }
    }

    /// Every open dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.dead_letters(),
            Engine::Postgres(store) => store.dead_letters().await,
        }
    }

    pub async fn dead_letter_by_id(
        &self,
        letter_id: &str,
    ) -> Result<Option<DeadLetter>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.dead_letter_by_id(letter_id),
            Engine::Postgres(store) => store.dead_letter_by_id(letter_id).await,
        }
    }

    /// Puts a dead letter's values back in the queue, except those of fields accepted again
    /// since (see [`rules::replay`]); a letter with nothing left is resolved as superseded.
    /// A conflict letter's values are written over the person's: their base becomes the
    /// CRM's value the letter recorded.
    pub async fn replay_dead_letter(&self, letter_id: &str) -> Result<Replay, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.replay_dead_letter(letter_id),
            Engine::Postgres(store) => store.replay_dead_letter(letter_id, now_ms()).await,
        }
    }

    /// Replays every dead letter, one transaction each, in the order their edits were
    /// accepted. A letter that cannot be replayed (its contact unknown or unreadable) is
    /// answered with its error, and the others go on.
    pub async fn replay_all_dead_letters(&self) -> Result<Vec<ReplayAttempt>, StoreError> {
        let mut letters = self.dead_letters().await?;
        letters.sort_by(|a, b| (a.accepted_seq(), &a.id).cmp(&(b.accepted_seq(), &b.id)));
        let mut attempts = Vec::with_capacity(letters.len());
        for letter in letters {
            let outcome = match self.replay_dead_letter(&letter.id).await {
                // Settled meanwhile by another request.
                Err(StoreError::UnknownDeadLetter(_)) => continue,
                Err(error @ (StoreError::UnknownContact(_) | StoreError::Corrupt { .. })) => {
                    Err(error)
                }
                Err(error) => return Err(error),
                Ok(replay) => Ok(replay),
            };
            attempts.push(ReplayAttempt {
                letter_id: letter.id,
                outcome,
            });
        }
        Ok(attempts)
    }

    /// Forgets a dead letter: the record's values it touched go back to the CRM's last
    /// confirmed ones (a conflict letter's: the CRM's value it recorded, which becomes the
    /// base too), unless a later value was accepted (see [`rules::drop_letter`]). A letter
    /// whose contact is unknown or unreadable is removed all the same.
    pub async fn drop_dead_letter(&self, letter_id: &str) -> Result<DeadLetter, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.drop_dead_letter(letter_id),
            Engine::Postgres(store) => store.drop_dead_letter(letter_id).await,
        }
    }

    pub async fn upsert_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.upsert_customer(customer),
            Engine::Postgres(store) => store.upsert_customer(customer).await,
        }
    }

    pub async fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.customer(id),
            Engine::Postgres(store) => store.customer(id).await,
        }
    }

    /// Queue figures per connection (every connection that has anything queued or dead).
    /// sled keeps them as state changes commit (no scan: the same cost at any size), where
    /// `retry_waiting` counts the contacts queued again after a failed attempt and `ready`
    /// the others, and `in_flight` the edits marked in flight. PostgreSQL counts them in the
    /// database: `ready` and `retry_waiting` split by `now`, `in_flight` left at zero (see
    /// [`Store::in_flight_counts`]).
    pub async fn counts(&self, now: u64) -> Result<BTreeMap<String, ConnectionCounts>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => Ok(store.counts()),
            Engine::Postgres(store) => store.counts(now).await,
        }
    }

    /// Edits marked in flight, per connection: for a store no daemon is running on (a running
    /// daemon counts its pushes itself), the edits the last stop left in flight, to be pushed
    /// again at the next start.
    pub async fn in_flight_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => Ok(store
                .counts()
                .into_iter()
                .filter(|(_, counts)| counts.in_flight > 0)
                .map(|(connection, counts)| (connection, counts.in_flight))
                .collect()),
            Engine::Postgres(store) => store.in_flight_counts().await,
        }
    }

    /// Drops what `retention` says is kept no longer: dead letters (as
    /// [`Store::drop_dead_letter`] does) and a backfill's edit ids.
    pub async fn prune(&self, retention: &Retention) -> Result<Pruned, StoreError> {
        self.prune_as_of(retention, now_ms()).await
    }

    /// [`Store::prune`] as if the time were `now`.
    async fn prune_as_of(&self, retention: &Retention, now: u64) -> Result<Pruned, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.prune(retention, now),
            Engine::Postgres(store) => store.prune(retention, now).await,
        }
    }

    /// Whether an edit with this `edit_id` (from a backfill file) was already accepted.
    pub async fn edit_seen(&self, edit_id: &str) -> Result<bool, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.edit_seen(edit_id),
            Engine::Postgres(store) => store.edit_seen(edit_id).await,
        }
    }

    /// Remembers that the edit `edit_id` was accepted. Durable with the next flush; a crash
    /// before it re-applies the edit on a re-run, which lands the same values again.
    pub async fn remember_edit(&self, edit_id: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.remember_edit(edit_id),
            Engine::Postgres(store) => store.remember_edit(edit_id).await,
        }
    }

    /// Reads a value the daemon keeps for itself (a rotated credential). Synchronous, for
    /// an adapter's credential store (a synchronous trait): on PostgreSQL it blocks the
    /// thread, which must be one of a multi-threaded runtime (the daemon's is).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.meta(key),
            Engine::Postgres(store) => block_on(store.meta(key)),
        }
    }

    /// Every value the daemon keeps for itself under keys starting with `prefix`.
    pub async fn meta_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.meta_under(prefix),
            Engine::Postgres(store) => store.meta_under(prefix).await,
        }
    }

    /// Forgets a value the daemon kept for itself, durably before returning.
    pub async fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.remove_meta(key),
            Engine::Postgres(store) => store.remove_meta(key).await,
        }
    }

    /// Writes a value the daemon keeps for itself, durably before returning, from async code.
    pub async fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.set_meta(key, value),
            Engine::Postgres(store) => store.set_meta(key, value).await,
        }
    }

    /// Writes a value the daemon keeps for itself, durably before returning. Synchronous, as
    /// [`Store::meta`].
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sled(store) => store.set_meta(key, value),
            Engine::Postgres(store) => block_on(store.set_meta(key, value)),
        }
    }
}

/// This process's name in the leases it takes: its host, its pid and when it started, so that
/// a restarted daemon never takes its predecessor's leases for its own.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}/{}/{}", std::process::id(), now_ms())
}

/// Runs `future` to its end from synchronous code inside the runtime.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}
