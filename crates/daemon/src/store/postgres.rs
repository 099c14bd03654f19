//! The PostgreSQL engine: the store in a database that several daemons share.
//!
//! Each contact is a row (its entry as JSONB, beside the columns the queue is read by: see
//! `migrations/0001_init.sql`). Each state change is one transaction that locks the contact's
//! row (`SELECT ... FOR UPDATE`), runs the rule, and writes the entry, its queue place and
//! the dead letter the rule made; the commit is the durability point, so [`PgStore::flush`]
//! has nothing left to do.
//!
//! Claims take ready rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never take
//! the same contact, and give each claimed edit a lease: this node owns it until
//! `leased_until`. Only the lease's owner may settle the edit (complete, retry, dead-letter,
//! hold conflicts, follow a merge): a node whose lease was taken over is refused
//! ([`StoreError::NotLeaseHolder`]), so its late answer cannot overwrite a newer push's. Once a
//! lease has expired, any node may claim the edit again: that is how the edits of a node that
//! died are recovered, instead of a recovery at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::de::DeserializeOwned;
use tokio_postgres::types::Json;
use tokio_postgres::{NoTls, Row as PgRow, Transaction};
use unisync_core::{AdapterError, ConfirmedContact, ContactField, ContactPatch, UnifiedContact};

use super::clock::CLOCK;
use super::rules::{self, LinkFailure, QueueChange};
use super::{
    Accepted, ClaimedEdit, ConnectionCounts, ContactEntry, Customer, DeadLetter, Held,
    MergeOutcome, Pruned, Replay, Retention, StoreError, keys, letter_id,
};
use crate::conflict::FieldConflict;

/// The migrations, in order: each is applied once, in one transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_queue_notify.sql")),
    (3, include_str!("../../migrations/0003_retention.sql")),
];

/// The schema version the migrations lead to.
fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _)| *version)
}

/// The advisory lock that one node at a time migrates under ("unisync" in ASCII).
const MIGRATION_LOCK: i64 = 0x0075_6e69_7379_6e63;

/// How to reach the database, and how long a claimed edit stays this node's.
#[derive(Clone)]
pub struct PgSettings {
    /// A libpq-style connection string or URL. Holds the password: never logged.
    pub url: unisync_core::Secret,
    /// The schema the tables live in; `None`: the database's search path (`public`).
    pub schema: Option<String>,
    pub pool_size: usize,
    /// How long a claim holds, in ms: longer than a push can take, retries included.
    pub lease_ms: u64,
    /// This node's name in the leases it takes; unique per process.
    pub node_id: String,
}

/// The PostgreSQL-backed store. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    node: Arc<str>,
    lease_ms: u64,
    /// How to open a connection of its own (a node session), beside the pool's.
    config: Arc<tokio_postgres::Config>,
    /// The schema the tables live in: it scopes the node sessions' locks and channel, so
    /// that stores in two schemas of one database never see each other.
    schema: Arc<str>,
}

/// A contact's row, locked for the transaction that reads it.
struct Row {
    id: String,
    entry: ContactEntry,
    /// The place in the ready queue: not-before and sequence.
    queue: Option<(u64, u64)>,
    lease: Option<Lease>,
}

#[derive(Clone, Debug)]
struct Lease {
    owner: String,
    until: u64,
}

const ROW_COLUMNS: &str = "id, entry, not_before, queue_seq, lease_owner, leased_until";

impl PgStore {
    /// Connects, applies the migrations this database lacks, and raises the store's clock to
    /// the latest time any node wrote.
    pub async fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = settings
            .url
            .expose()
            .parse()
            .map_err(|err: tokio_postgres::Error| StoreError::Connect(err.to_string()))?;
        if let Some(schema) = &settings.schema {
            config.options(format!("-c search_path={schema}"));
        }
        config.application_name(format!("unisync {}", settings.node_id));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .build()
            .map_err(|err| StoreError::Connect(err.to_string()))?;
        let client = pool.get().await?;
        let schema: String = client
            .query_one("SELECT current_schema()", &[])
            .await?
            .get(0);
        drop(client);
        let store = PgStore {
            pool,
            node: settings.node_id.as_str().into(),
            lease_ms: settings.lease_ms,
            config: Arc::new(config),
            schema: schema.into(),
        };
        store.migrate().await?;
        let client = store.pool.get().await?;
        let latest: Option<i64> = client
            .query_one("SELECT max(updated_ms) FROM contacts", &[])
            .await?
            .get(0);
        CLOCK.raise_to(latest.map_or(0, from_db));
        Ok(store)
    }

    /// Reaches the database `url` names without changing it, and answers the store's schema
    /// version there (0: no store yet) and the version this unisync migrates to.
    pub async fn schema_version(url: &unisync_core::Secret) -> Result<(i32, i32), StoreError> {
        let config: tokio_postgres::Config = url
            .expose()
            .parse()
            .map_err(|err: tokio_postgres::Error| StoreError::Connect(err.to_string()))?;
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| StoreError::Connect(err.to_string()))?;
        let session = tokio::spawn(connection);
        let exists: bool = client
            .query_one("SELECT to_regclass('unisync_migrations') IS NOT NULL", &[])
            .await?
            .get(0);
        let version: i32 = match exists {
            false => 0,
            true => client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM unisync_migrations",
                    &[],
                )
                .await?
                .get(0),
        };
        drop(client);
        let _ = session.await;
        Ok((version, latest_version()))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS unisync_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
        let applied: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM unisync_migrations",
                &[],
            )
            .await?
            .get(0);
        let known = latest_version();
        if applied > known {
            return Err(StoreError::Corrupt {
                key: "unisync_migrations".into(),
                message: format!(
                    "the database is at schema version {applied}, newer than this unisync's ({known})"
                ),
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO unisync_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "store schema migrated");
        }
        tx.commit().await?;
        Ok(())
    }

    /// This node's name in the leases it takes.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// How long a claim holds, in ms.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Extends this node's leases on the edits of `ids` to `now` + the lease; answers the
    /// contacts among them whose edit another node holds now (it took the edit over after
    /// this node's lease expired): this node must stop acting on those. A contact whose edit
    /// was settled meanwhile has no lease, and is neither renewed nor answered.
    pub async fn renew_leases(&self, ids: &[String], now: u64) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "WITH renewed AS (
                     UPDATE contacts SET leased_until = $3
                     WHERE id = ANY($1) AND lease_owner = $2
                     RETURNING id)
                 SELECT id FROM contacts
                 WHERE id = ANY($1) AND lease_owner IS NOT NULL AND lease_owner <> $2",
                &[&ids, &&*self.node, &to_db(now + self.lease_ms)],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Takes over the leases on the in-flight edits of `ids`, whoever held them: for the
    /// edits of a running bulk job that a new leader of their connection follows on (the
    /// node that started the job stopped or gave the connection up). Answers the contacts
    /// whose edit is still in flight.
    pub async fn adopt_leases(&self, ids: &[String], now: u64) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE contacts SET lease_owner = $2, leased_until = $3
                 WHERE id = ANY($1) AND lease_owner IS NOT NULL
                 RETURNING id",
                &[&ids, &&*self.node, &to_db(now + self.lease_ms)],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Opens this node's session: a connection of its own, outside the pool, that holds the
    /// node's leadership locks (they last as long as it does) and listens for queue
    /// notifications, handing each one's connection name to `notified`. `member`: the node
    /// counts among the daemons that share the connections out (a daemon); a one-shot command
    /// leads only what no daemon leads.
    pub async fn node_session(
        &self,
        member: bool,
        notified: impl Fn(&str) + Send + 'static,
    ) -> Result<NodeSession, StoreError> {
        let mut config = (*self.config).clone();
        let name = member_name(&self.schema);
        config.application_name(if member {
            name.as_str()
        } else {
            "unisync one-shot"
        });
        // A session whose peer vanished (a network partition) is found dead in seconds,
        // not after the kernel's two hours.
        config.keepalives_idle(std::time::Duration::from_secs(5));
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| StoreError::Connect(err.to_string()))?;
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                        notified(note.payload())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the node session to the database ended");
                        break;
                    }
                    None => break,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN \"{}\"", queue_channel(&self.schema)))
            .await?;
        Ok(NodeSession {
            client,
            scope: format!("unisync leader {}", self.schema),
            member_name: name,
        })
    }

    /// Every write is committed before it is answered: nothing to flush.
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Registers or refreshes a contact (see [`rules::register`]) in one transaction with its
    /// source index row, which a concurrent import of the same record waits for.
    pub async fn upsert_contact(
        &self,
        connection: &str,
        contact: UnifiedContact,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let owner: String = tx
            .query_one(
                "INSERT INTO source_index (connection, source_id, contact_id) VALUES ($1, $2, $3)
                 ON CONFLICT (connection, source_id)
                 DO UPDATE SET contact_id = source_index.contact_id
                 RETURNING contact_id",
                &[&connection, &contact.source_id, &contact.id],
            )
            .await?
            .get(0);
        if owner != contact.id {
            return Err(StoreError::SourceIdTaken {
                connection: connection.to_string(),
                source_id: contact.source_id,
                owner,
            });
        }
        let existing = match lock_row(&tx, &contact.id).await {
            Err(error @ StoreError::Corrupt { .. }) => {
                tracing::warn!(%error, "an unreadable record is replaced by its import");
                None
            }
            other => other?,
        };
        // The record moved (another source id or connection): its old index row goes.
        if let Some(old) = &existing
            && let Some(old_connection) = &old.entry.source_connection
            && (
                old_connection.as_str(),
                old.entry.contact.source_id.as_str(),
            ) != (connection, contact.source_id.as_str())
        {
            tx.execute(
                "DELETE FROM source_index
                 WHERE connection = $1 AND source_id = $2 AND contact_id = $3",
                &[old_connection, &old.entry.contact.source_id, &contact.id],
            )
            .await?;
        }
        let (queue, lease) = existing
            .as_ref()
            .map_or((None, None), |row| (row.queue, row.lease.clone()));
        let entry = rules::register(existing.map(|row| row.entry), &contact, connection);
        let row = Row {
            id: contact.id.clone(),
            entry,
            queue,
            lease,
        };
        save(&tx, &row).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn id_for_source(
        &self,
        connection: &str,
        source_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT contact_id FROM source_index WHERE connection = $1 AND source_id = $2",
                &[&connection, &source_id],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn contact(&self, id: &str) -> Result<Option<ContactEntry>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT entry FROM contacts WHERE id = $1", &[&id])
            .await?;
        row.map(|row| decode(id, row.get(0))).transpose()
    }

    pub async fn accept(
        &self,
        id: &str,
        patch: &ContactPatch,
        connection: &str,
        now: u64,
    ) -> Result<Accepted, StoreError> {
        self.update(id, Fence::None, |entry, seq| {
            let change = rules::accept(entry, patch, connection, seq, now);
            let accepted = Accepted {
                contact: entry.contact.clone(),
                queued: change != QueueChange::Leave,
            };
            Ok((change, None, accepted))
        })
        .await
    }

    /// Claims up to `max` edits of `connection` in one transaction: first those whose lease
    /// expired (their node stopped, or outlived its lease), then the ready ones in queue
    /// order. Rows another node is claiming are skipped, not waited for.
    pub async fn claim(
        &self,
        connection: &str,
        now: u64,
        max: usize,
    ) -> Result<Vec<ClaimedEdit>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now_db = to_db(now);
        let mut rows = tx
            .query(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM contacts
                     WHERE connection = $1 AND lease_owner IS NOT NULL AND leased_until <= $2
                     ORDER BY leased_until LIMIT $3 FOR UPDATE SKIP LOCKED"
                ),
                &[&connection, &now_db, &(max as i64)],
            )
            .await?;
        let left = max.saturating_sub(rows.len());
        if left > 0 {
            rows.extend(
                tx.query(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM contacts
                         WHERE connection = $1 AND not_before <= $2
                         ORDER BY not_before, queue_seq LIMIT $3 FOR UPDATE SKIP LOCKED"
                    ),
                    &[&connection, &now_db, &(left as i64)],
                )
                .await?,
            );
        }
        let mut claimed = Vec::new();
        for pg_row in rows {
            let mut row = match read_row(&pg_row) {
                Ok(row) => row,
                Err(error) => {
                    let id: String = pg_row.get("id");
                    self.dead_letter_unreadable(&tx, &id, connection, &error, now)
                        .await?;
                    continue;
                }
            };
            if let Some(lease) = row.lease.take() {
                tracing::warn!(
                    contact = %row.id,
                    owner = %lease.owner,
                    "the lease on an edit in flight expired: it is claimed again (its node stopped, or its push outlived the lease)"
                );
                let change = rules::recover(&mut row.entry, now, now);
                apply(&mut row, change, 0);
            }
            let (edit, change) = rules::claim(&mut row.entry);
            apply(&mut row, change, 0);
            if edit.is_some() {
                row.lease = Some(Lease {
                    owner: self.node.to_string(),
                    until: now + self.lease_ms,
                });
            }
            save(&tx, &row).await?;
            claimed.extend(edit);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Takes a contact whose record cannot be read out of the queue, and out of any lease,
    /// and keeps a dead letter saying so.
    async fn dead_letter_unreadable(
        &self,
        tx: &Transaction<'_>,
        id: &str,
        connection: &str,
        error: &StoreError,
        now: u64,
    ) -> Result<(), StoreError> {
        tracing::error!(%error, "an unreadable record leaves the queue as a dead letter");
        let letter_id = letter_id(next_seq(tx).await?);
        let letter = rules::unreadable_letter(id, connection, &error.to_string(), &letter_id, now);
        tx.execute(
            "UPDATE contacts SET not_before = NULL, queue_seq = NULL,
                 lease_owner = NULL, leased_until = NULL
             WHERE id = $1",
            &[&id],
        )
        .await?;
        insert_letter(tx, &letter).await
    }

    /// When the first waiting contact of `connection` may go, or the first lease another
    /// node holds on one of its edits expires (ms since the epoch).
    pub async fn next_ready_at(&self, connection: &str) -> Result<Option<u64>, StoreError> {
        let client = self.pool.get().await?;
        let at: Option<i64> = client
            .query_one(
                "SELECT least(
                     (SELECT min(not_before) FROM contacts
                      WHERE connection = $1 AND not_before IS NOT NULL),
                     (SELECT min(leased_until) FROM contacts
                      WHERE connection = $1 AND lease_owner IS NOT NULL AND lease_owner <> $2))",
                &[&connection, &&*self.node],
            )
            .await?
            .get(0);
        Ok(at.map(from_db))
    }

    pub async fn ready_window(
        &self,
        connection: &str,
        now: u64,
        limit: usize,
    ) -> Result<(usize, Option<u64>), StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), min(not_before) FROM (
                     SELECT not_before FROM contacts
                     WHERE connection = $1 AND not_before <= $2
                     ORDER BY not_before, queue_seq LIMIT $3) AS ready",
                &[&connection, &to_db(now), &(limit as i64)],
            )
            .await?;
        let count: i64 = row.get(0);
        let oldest: Option<i64> = row.get(1);
        Ok((count as usize, oldest.map(from_db)))
    }

    pub async fn complete(
        &self,
        id: &str,
        confirmed: &ConfirmedContact,
        linked_customer: Option<Option<String>>,
        now: u64,
    ) -> Result<(), StoreError> {
        self.update(id, Fence::LeaseHolder, |entry, _| {
            let change = rules::complete(entry, confirmed, linked_customer, now);
            Ok((change, None, ()))
        })
        .await
    }

    pub async fn retry_later(
        &self,
        id: &str,
        not_before: u64,
        count_attempt: bool,
        error: &AdapterError,
        now: u64,
    ) -> Result<u32, StoreError> {
        self.update(id, Fence::LeaseHolder, |entry, _| {
            let (attempts, change) =
                rules::retry_later(entry, not_before, count_attempt, error, now);
            Ok((change, None, attempts))
        })
        .await
    }

    pub async fn dead_letter(
        &self,
        id: &str,
        error: &AdapterError,
        retries_exhausted: bool,
        now: u64,
    ) -> Result<DeadLetter, StoreError> {
        self.update(id, Fence::LeaseHolder, |entry, seq| {
            let (letter, change) =
                rules::dead_letter(entry, error, retries_exhausted, &letter_id(seq), now);
            Ok((change, Some(letter.clone()), letter))
        })
        .await
    }

    pub async fn hold_conflicts(
        &self,
        id: &str,
        conflicts: &BTreeMap<ContactField, FieldConflict>,
        now: u64,
    ) -> Result<Held, StoreError> {
        self.update(id, Fence::LeaseHolderOfInFlight, |entry, seq| {
            let (letter, change) = rules::hold_conflicts(entry, conflicts, &letter_id(seq), now);
            let letter = letter.ok_or_else(|| StoreError::NotInFlight(entry.contact.id.clone()))?;
            let held = Held {
                letter: letter.clone(),
                in_flight_left: entry.sync.in_flight.is_some(),
            };
            Ok((change, Some(letter), held))
        })
        .await
    }

    pub async fn complete_except_link(
        &self,
        id: &str,
        confirmed: &ConfirmedContact,
        failure: LinkFailure<'_>,
        now: u64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.update(id, Fence::LeaseHolder, |entry, seq| {
            let (letter, change) =
                rules::complete_except_link(entry, confirmed, failure, &letter_id(seq), now);
            Ok((change, letter.clone(), letter))
        })
        .await
    }

    /// See [`super::Store::repoint`]: the contact's row and both source index rows change in
    /// one transaction.
    pub async fn repoint(
        &self,
        id: &str,
        survivor: &str,
        error: &AdapterError,
        now: u64,
    ) -> Result<MergeOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut row = lock_row(&tx, id)
            .await?
            .ok_or_else(|| StoreError::UnknownContact(id.to_string()))?;
        self.fence(&row, Fence::LeaseHolder)?;
        let seq = next_seq(&tx).await?;
        let connection = row
            .entry
            .source_connection
            .clone()
            .or_else(|| row.entry.sync.connection.clone())
            .unwrap_or_default();
        let old_source_id = row.entry.contact.source_id.clone();
        let owner: Option<String> = tx
            .query_opt(
                "SELECT contact_id FROM source_index
                 WHERE connection = $1 AND source_id = $2 FOR UPDATE",
                &[&connection, &survivor],
            )
            .await?
            .map(|row| row.get(0));
        let (letter, change) = rules::repoint(
            &mut row.entry,
            survivor,
            owner.as_deref(),
            error,
            &letter_id(seq),
            now,
        );
        let outcome = match letter {
            Some(letter) => {
                insert_letter(&tx, &letter).await?;
                MergeOutcome::SurvivorRegistered(Box::new(letter))
            }
            None => {
                tx.execute(
                    "DELETE FROM source_index
                     WHERE connection = $1 AND source_id = $2 AND contact_id = $3",
                    &[&connection, &old_source_id, &id],
                )
                .await?;
                tx.execute(
                    "INSERT INTO source_index (connection, source_id, contact_id)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (connection, source_id) DO UPDATE SET contact_id = $3",
                    &[&connection, &survivor, &id],
                )
                .await?;
                row.entry.source_connection = Some(connection);
                MergeOutcome::Followed
            }
        };
        apply(&mut row, change, seq);
        save(&tx, &row).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.pool.get().await?;
        client
            .query("SELECT id, letter FROM dead_letters ORDER BY id", &[])
            .await?
            .iter()
            .map(|row| decode(row.get(0), row.get(1)))
            .collect()
    }

    pub async fn dead_letter_by_id(
        &self,
        letter_id: &str,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let client = self.pool.get().await?;
        client
            .query_opt(
                "SELECT letter FROM dead_letters WHERE id = $1",
                &[&letter_id],
            )
            .await?
            .map(|row| decode(letter_id, row.get(0)))
            .transpose()
    }

    pub async fn replay_dead_letter(
        &self,
        letter_id: &str,
        now: u64,
    ) -> Result<Replay, StoreError> {
        self.settle_dead_letter(letter_id, false, |entry, letter| {
            let Some(entry) = entry else {
                return Err(StoreError::UnknownContact(letter.contact_id.clone()));
            };
            let (replay, change) = rules::replay(entry, letter, now);
            Ok((change, replay))
        })
        .await
    }

    pub async fn drop_dead_letter(&self, letter_id: &str) -> Result<DeadLetter, StoreError> {
        self.settle_dead_letter(letter_id, true, |entry, letter| {
            if let Some(entry) = entry {
                rules::drop_letter(entry, letter);
            }
            Ok((QueueChange::Leave, letter.clone()))
        })
        .await
    }

    /// Removes a dead letter and runs `settle` on its contact (`None` when the contact is
    /// unknown, or its record unreadable and `past_unreadable`), in one transaction.
    async fn settle_dead_letter<T>(
        &self,
        letter_id: &str,
        past_unreadable: bool,
        settle: impl FnOnce(
            Option<&mut ContactEntry>,
            &DeadLetter,
        ) -> Result<(QueueChange, T), StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let letter = tx
            .query_opt(
                "DELETE FROM dead_letters WHERE id = $1 RETURNING letter",
                &[&letter_id],
            )
            .await?
            .ok_or_else(|| StoreError::UnknownDeadLetter(letter_id.to_string()))?;
        let letter: DeadLetter = decode(letter_id, letter.get(0))?;
        let row = match lock_row(&tx, &letter.contact_id).await {
            Err(StoreError::Corrupt { .. }) if past_unreadable => None,
            other => other?,
        };
        let result = match row {
            None => settle(None, &letter)?.1,
            Some(mut row) => {
                let seq = next_seq(&tx).await?;
                let (change, result) = settle(Some(&mut row.entry), &letter)?;
                apply(&mut row, change, seq);
                save(&tx, &row).await?;
                result
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    pub async fn upsert_customer(&self, customer: &Customer) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO customers (id, customer) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET customer = excluded.customer",
                &[&customer.id, &Json(customer)],
            )
            .await?;
        Ok(())
    }

    pub async fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        let client = self.pool.get().await?;
        client
            .query_opt("SELECT customer FROM customers WHERE id = $1", &[&id])
            .await?
            .map(|row| decode(id, row.get(0)))
            .transpose()
    }

    pub async fn counts(&self, now: u64) -> Result<BTreeMap<String, ConnectionCounts>, StoreError> {
        let client = self.pool.get().await?;
        let mut counts: BTreeMap<String, ConnectionCounts> = BTreeMap::new();
        for row in client
            .query(
                "SELECT connection, count(*) FILTER (WHERE not_before <= $1),
                        count(*) FILTER (WHERE not_before > $1)
                 FROM contacts WHERE not_before IS NOT NULL GROUP BY connection",
                &[&to_db(now)],
            )
            .await?
        {
            let entry = counts
                .entry(row.get::<_, Option<String>>(0).unwrap_or_default())
                .or_default();
            entry.ready = row.get::<_, i64>(1) as u64;
            entry.retry_waiting = row.get::<_, i64>(2) as u64;
        }
        for row in client
            .query(
                "SELECT connection, count(*) FROM dead_letters GROUP BY connection",
                &[],
            )
            .await?
        {
            counts.entry(row.get(0)).or_default().dead_letters = row.get::<_, i64>(1) as u64;
        }
        Ok(counts)
    }

    /// Edits in flight per connection, on every node.
    pub async fn in_flight_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query(
                "SELECT connection, count(*) FROM contacts
                 WHERE lease_owner IS NOT NULL GROUP BY connection",
                &[],
            )
            .await?
            .iter()
            .map(|row| {
                let connection: Option<String> = row.get(0);
                (connection.unwrap_or_default(), row.get::<_, i64>(1) as u64)
            })
            .collect())
    }

    pub async fn edit_seen(&self, edit_id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt("SELECT 1 FROM seen_edits WHERE edit_id = $1", &[&edit_id])
            .await?
            .is_some())
    }

    pub async fn remember_edit(&self, edit_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO seen_edits (edit_id, accepted_ms) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&edit_id, &to_db(CLOCK.now())],
            )
            .await?;
        Ok(())
    }

    /// Drops what `retention` says is kept no longer, as of `now`: dead letters (each as
    /// [`PgStore::drop_dead_letter`] does, in its own transaction, so that pruning holds no
    /// long lock) and edit ids. Works a chunk at a time, by the time columns' indexes.
    pub async fn prune(&self, retention: &Retention, now: u64) -> Result<Pruned, StoreError> {
        /// Records read or removed per statement.
        const CHUNK: i64 = 1000;
        let mut pruned = Pruned::default();
        if let Some(max_age) = retention.dead_letters_ms {
            let cutoff = to_db(now.saturating_sub(max_age));
            loop {
                let old = self
                    .pool
                    .get()
                    .await?
                    .query(
                        "SELECT id FROM dead_letters WHERE failed_at < $1 ORDER BY failed_at LIMIT $2",
                        &[&cutoff, &CHUNK],
                    )
                    .await?;
                if old.is_empty() {
                    break;
                }
                for row in old {
                    match self.drop_dead_letter(row.get(0)).await {
                        Ok(_) => pruned.dead_letters += 1,
                        // Settled meanwhile, by an operator or another node.
                        Err(StoreError::UnknownDeadLetter(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        if let Some(max_age) = retention.edit_ids_ms {
            let cutoff = to_db(now.saturating_sub(max_age));
            loop {
                let removed = self
                    .pool
                    .get()
                    .await?
                    .execute(
                        "DELETE FROM seen_edits WHERE edit_id IN \
                         (SELECT edit_id FROM seen_edits WHERE accepted_ms < $1 LIMIT $2)",
                        &[&cutoff, &CHUNK],
                    )
                    .await?;
                pruned.edit_ids += removed;
                if removed == 0 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?
            .map(|row| row.get(0)))
    }

    pub async fn meta_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT key, value FROM meta WHERE left(key, length($1)) = $1 ORDER BY key",
                &[&prefix],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub async fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute("DELETE FROM meta WHERE key = $1", &[&key])
            .await?;
        Ok(())
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await?;
        Ok(())
    }

    /// Runs `change` on one contact's locked row, with a fresh store sequence (for a queue
    /// place, an acceptance, a letter id), and commits the entry, its queue place and the
    /// dead letter `change` answers, unless the fence refuses.
    async fn update<T>(
        &self,
        id: &str,
        fence: Fence,
        change: impl FnOnce(
            &mut ContactEntry,
            u64,
        ) -> Result<(QueueChange, Option<DeadLetter>, T), StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut row = lock_row(&tx, id)
            .await?
            .ok_or_else(|| StoreError::UnknownContact(id.to_string()))?;
        self.fence(&row, fence)?;
        // Taken under the row's lock, so that one contact's sequences rise in commit order.
        let seq = next_seq(&tx).await?;
        let (queue_change, letter, answer) = change(&mut row.entry, seq)?;
        apply(&mut row, queue_change, seq);
        save(&tx, &row).await?;
        if let Some(letter) = &letter {
            insert_letter(&tx, letter).await?;
        }
        tx.commit().await?;
        Ok(answer)
    }

    /// Refuses to settle an edit this node does not hold the lease of: another node claimed
    /// it after this node's lease expired (or settled it already), and this node's answer is
    /// older than what that node pushes.
    fn fence(&self, row: &Row, fence: Fence) -> Result<(), StoreError> {
        let holder = row.lease.as_ref().map(|lease| lease.owner.as_str());
        let refused = match fence {
            Fence::None => false,
            Fence::LeaseHolder => holder != Some(&*self.node),
            // Nothing in flight: the rule answers that itself, and changes nothing.
            Fence::LeaseHolderOfInFlight => {
                row.entry.sync.in_flight.is_some() && holder != Some(&*self.node)
            }
        };
        if refused {
            tracing::warn!(
                contact = %row.id,
                node = %self.node,
                holder = holder.unwrap_or("none"),
                "a push's outcome is refused: this node no longer holds the edit's lease"
            );
            return Err(StoreError::NotLeaseHolder {
                contact: row.id.clone(),
                holder: holder.map(str::to_string),
            });
        }
        Ok(())
    }
}

/// A node's own session to the database (see [`PgStore::node_session`]): the connection
/// leaderships are locks of, so that they end with it, whether the node stops, crashes or
/// loses the network.
pub struct NodeSession {
    client: tokio_postgres::Client,
    /// The first key of the leadership locks: the store's schema.
    scope: String,
    /// The `application_name` daemons' sessions go by in `pg_stat_activity`.
    member_name: String,
}

impl NodeSession {
    /// Whether the session is gone: every leadership it held is over.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Takes the leadership of `connection` if no session holds it (PostgreSQL's advisory
    /// lock on the store's schema and the connection's name). Answers whether it did.
    pub async fn try_lead(&self, connection: &str) -> Result<bool, StoreError> {
        Ok(self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))",
                &[&self.scope, &connection],
            )
            .await?
            .get(0))
    }

    /// Gives the leadership of `connection` up.
    pub async fn resign(&self, connection: &str) -> Result<(), StoreError> {
        self.client
            .query_one(
                "SELECT pg_advisory_unlock(hashtext($1), hashtext($2))",
                &[&self.scope, &connection],
            )
            .await?;
        Ok(())
    }

    /// How many daemons' sessions the database has on this store right now, this one's
    /// included when it is one: a session ends with its process, so a node that died is not
    /// counted once the database has noticed (at once for a process killed on a machine
    /// that stays up, after the keepalive otherwise).
    pub async fn members(&self) -> Result<usize, StoreError> {
        let count: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&self.member_name],
            )
            .await?
            .get(0);
        Ok(usize::try_from(count).unwrap_or_default())
    }
}

/// The channel queue notifications of the store in `schema` go on (see
/// `migrations/0002_queue_notify.sql`).
fn queue_channel(schema: &str) -> String {
    format!("unisync_queue.{schema}")
}

/// The `application_name` of a daemon's node session on the store in `schema`, within
/// PostgreSQL's 63 bytes (a longer name would be cut, and no longer match when counted).
fn member_name(schema: &str) -> String {
    let mut name = format!("unisync node {schema}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// Who may run a rule on a contact.
#[derive(Clone, Copy)]
enum Fence {
    /// Anyone (accepting an edit).
    None,
    /// Only the node holding the lease of the contact's edit in flight.
    LeaseHolder,
    /// As `LeaseHolder` while an edit is in flight; anyone otherwise.
    LeaseHolderOfInFlight,
}

/// Carries out a rule's [`QueueChange`] on the row; a new place is numbered `seq`. The lease
/// ends with the edit in flight.
fn apply(row: &mut Row, change: QueueChange, seq: u64) {
    match change {
        QueueChange::Leave => {}
        QueueChange::Dequeue => {
            row.queue = None;
            row.entry.sync.queued_key = None;
        }
        QueueChange::Enqueue { not_before } => {
            let connection = row.entry.sync.connection.as_deref().unwrap_or_default();
            row.queue = Some((not_before, seq));
            row.entry.sync.queued_key = Some(keys::ready(connection, not_before, seq));
        }
    }
    if row.entry.sync.in_flight.is_none() {
        row.lease = None;
    }
}

async fn lock_row(tx: &Transaction<'_>, id: &str) -> Result<Option<Row>, StoreError> {
    tx.query_opt(
        &format!("SELECT {ROW_COLUMNS} FROM contacts WHERE id = $1 FOR UPDATE"),
        &[&id],
    )
    .await?
    .map(|row| read_row(&row))
    .transpose()
}

fn read_row(row: &PgRow) -> Result<Row, StoreError> {
    let id: String = row.get("id");
    let entry = decode(&id, row.get("entry"))?;
    let not_before: Option<i64> = row.get("not_before");
    let queue_seq: Option<i64> = row.get("queue_seq");
    let owner: Option<String> = row.get("lease_owner");
    let until: Option<i64> = row.get("leased_until");
    Ok(Row {
        id,
        entry,
        queue: not_before
            .zip(queue_seq)
            .map(|(at, seq)| (from_db(at), from_db(seq))),
        lease: owner.zip(until).map(|(owner, until)| Lease {
            owner,
            until: from_db(until),
        }),
    })
}

async fn save(tx: &Transaction<'_>, row: &Row) -> Result<(), StoreError> {
    let (not_before, queue_seq) = row.queue.map(|(at, seq)| (to_db(at), to_db(seq))).unzip();
    let (owner, until) = row
        .lease
        .as_ref()
        .map(|lease| (lease.owner.as_str(), to_db(lease.until)))
        .unzip();
    tx.execute(
        "INSERT INTO contacts
             (id, entry, connection, not_before, queue_seq, lease_owner, leased_until, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET
             entry = excluded.entry, connection = excluded.connection,
             not_before = excluded.not_before, queue_seq = excluded.queue_seq,
             lease_owner = excluded.lease_owner, leased_until = excluded.leased_until,
             updated_ms = greatest(contacts.updated_ms, excluded.updated_ms)",
        &[
            &row.id,
            &Json(&row.entry),
            &row.entry.sync.connection,
            &not_before,
            &queue_seq,
            &owner,
            &until,
            &to_db(CLOCK.now()),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_letter(tx: &Transaction<'_>, letter: &DeadLetter) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO dead_letters (id, contact_id, connection, letter, failed_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &letter.id,
            &letter.contact_id,
            &letter.connection,
            &Json(letter),
            &to_db(letter.failed_at),
        ],
    )
    .await?;
    Ok(())
}

async fn next_seq(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let seq: i64 = tx
        .query_one("SELECT nextval('store_seq')", &[])
        .await?
        .get(0);
    Ok(from_db(seq))
}

fn decode<T: DeserializeOwned>(key: &str, value: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|err| StoreError::Corrupt {
        key: key.to_string(),
        message: err.to_string(),
    })
}

/// Times and sequences are `bigint` columns; neither comes near 2^63.
fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}
