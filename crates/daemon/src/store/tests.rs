//! The store's state changes, checked against a real sled database in a temp dir and, for
//! the tests taking a `Store`, against PostgreSQL too when `UNISYNC_TEST_DATABASE_URL` names a
//! database (each test in a schema of its own, dropped after it): see `engine_tests!`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use unisync_core::{
    AdapterError, ConfirmedContact, ContactField, ContactPatch, ErrorKind, UnifiedContact,
};

use super::clock::Clock;
use super::model::SyncState;
use super::*;
use crate::conflict::FieldConflict;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 8).unwrap();
    (dir, store)
}

/// The variable naming the database the PostgreSQL tests use.
const TEST_DATABASE_URL: &str = "UNISYNC_TEST_DATABASE_URL";

/// How long a PostgreSQL test store's claims hold: one step of the tests' clocks.
pub(crate) const TEST_LEASE_MS: u64 = 1_000;

#[derive(Clone)]
/// A schema of its own in the test database, dropped after the test ([`TestSchema::run`]).
pub(crate) struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// `None` (the test is skipped) when `UNISYNC_TEST_DATABASE_URL` is not set.
    pub(crate) async fn create() -> Option<TestSchema> {
        let Ok(url) = std::env::var(TEST_DATABASE_URL) else {
            eprintln!("{TEST_DATABASE_URL} is not set: skipping the PostgreSQL run");
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "unisync_test_{}_{}_{}",
            std::process::id(),
            now_ms(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = connect(&url).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Some(TestSchema { url, name })
    }

    /// A store on this schema, as a node of its own (a new node id each time).
    pub(crate) async fn store(&self) -> Store {
        static NODE: AtomicU64 = AtomicU64::new(0);
        Store::open_postgres(&PgSettings {
            url: unisync_core::Secret::new(self.url.clone()),
            schema: Some(self.name.clone()),
            pool_size: 4,
            lease_ms: TEST_LEASE_MS,
            node_id: format!("node-{}", NODE.fetch_add(1, Ordering::Relaxed)),
        })
        .await
        .unwrap()
    }

    /// Runs `test` on a store of this schema, then drops the schema, whatever the test did.
    /// The test runs as a task, so that a panic in it drops its store (and ends its
    /// transactions) before the schema is dropped.
    pub(crate) async fn run<F>(self, test: impl FnOnce(Store) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(test(self.store().await)).await;
        connect(&self.url)
            .await
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    /// A connection to the schema, to reach under the store's API.
    async fn client(&self) -> tokio_postgres::Client {
        let client = connect(&self.url).await;
        client
            .batch_execute(&format!("SET search_path = {}", self.name))
            .await
            .unwrap();
        client
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("{TEST_DATABASE_URL}: cannot connect: {error}"));
    tokio::spawn(connection);
    client
}

/// Runs each `async fn name(store: Store)` on a sled store and, when a test database is set,
/// on a PostgreSQL one: `sled_engine::name` and `postgres_engine::name`.
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        mod sled_engine {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::open();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres_engine {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(schema) = super::TestSchema::create().await {
                        schema.run(super::$name).await;
                    }
                }
            )*
        }
    };
}

engine_tests!(
    accept_applies_locally_and_queues_once,
    edits_during_a_push_wait_and_follow_it,
    a_retry_waits_for_its_time_and_keeps_order,
    landed_fields_are_confirmed_when_only_the_customer_link_failed,
    dead_letters_keep_the_crms_error_and_can_be_replayed_or_dropped,
    a_merged_record_is_followed_in_one_step,
    a_merge_into_a_record_of_another_contact_is_a_dead_letter,
    held_conflicts_wait_for_an_operator_who_writes_ours_or_takes_the_crms,
    a_replay_never_puts_back_a_value_older_than_one_accepted_since,
    retry_all_replays_in_acceptance_order,
    the_source_index_keeps_each_connection_apart,
    queues_are_per_connection,
    pruning_drops_dead_letters_and_edit_ids_past_their_retention_only,
);

/// Opens the store at `path` with its own clock reading `wall_ms` (the wall clock at this
/// start); waits (bounded) for a store dropped just before to let go of the files.
async fn open_at(path: &Path, wall_ms: u64) -> Store {
    let clock: &'static Clock = Box::leak(Box::new(Clock::starting_at(wall_ms)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open_with_clock(path, 8, clock) {
            Ok(store) => return Store::from(store),
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(error) => panic!("reopening the store: {error}"),
        }
    }
}

async fn register(store: &Store, id: &str) {
    let mut contact = UnifiedContact::new(id, "hubspot", format!("src-{id}"));
    contact.first_name = Some("Ann".into());
    contact.phone = Some("555".into());
    store.upsert_contact("crm", contact).await.unwrap();
}

fn edit(values: &[(ContactField, Option<&str>)]) -> ContactPatch {
    values
        .iter()
        .map(|(field, value)| (*field, value.map(str::to_string)))
        .collect()
}

async fn accept_applies_locally_and_queues_once(store: Store) {
    register(&store, "c1").await;
    let first = store
        .accept("c1", &edit(&[(ContactField::FirstName, Some("Bo"))]), "crm")
        .await
        .unwrap();
    assert!(first.queued);
    assert!(first.contact.local_was_updated);
    assert_eq!(first.contact.first_name.as_deref(), Some("Bo"));
    let second = store
        .accept("c1", &edit(&[(ContactField::Phone, None)]), "crm")
        .await
        .unwrap();
    assert!(
        !second.queued,
        "already waiting: coalesced, not queued twice"
    );
    store.flush().await.unwrap();

    let claimed = store.claim("crm", now_ms(), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].patch,
        edit(&[
            (ContactField::FirstName, Some("Bo")),
            (ContactField::Phone, None)
        ])
    );
    assert!(
        store.claim("crm", now_ms(), 10).await.unwrap().is_empty(),
        "in flight: not claimable"
    );
    assert!(matches!(
        store.accept("nope", &ContactPatch::new(), "crm").await,
        Err(StoreError::UnknownContact(_))
    ));
}

async fn edits_during_a_push_wait_and_follow_it(store: Store) {
    register(&store, "c1").await;
    store
        .accept("c1", &edit(&[(ContactField::FirstName, Some("A"))]), "crm")
        .await
        .unwrap();
    let claimed = store.claim("crm", now_ms(), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let during = store
        .accept("c1", &edit(&[(ContactField::FirstName, Some("B"))]), "crm")
        .await
        .unwrap();
    assert!(!during.queued, "waits for the push in flight");
    let confirmed = ConfirmedContact {
        values: [(ContactField::FirstName, Some("A".to_string()))].into(),
        crm_version: Some("v1".into()),
        created_at: None,
        link_error: None,
    };
    store.complete("c1", &confirmed, None).await.unwrap();
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(
        entry.contact.first_name.as_deref(),
        Some("B"),
        "the CRM's older value does not overwrite a pending edit"
    );
    assert!(entry.contact.local_was_updated);
    assert_eq!(entry.crm_version.as_deref(), Some("v1"));
    let next = store.claim("crm", now_ms(), 10).await.unwrap();
    assert_eq!(next[0].patch, edit(&[(ContactField::FirstName, Some("B"))]));
    store
        .complete("c1", &ConfirmedContact::default(), None)
        .await
        .unwrap();
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert!(!entry.contact.local_was_updated);
    assert_eq!(entry.base[&ContactField::FirstName].as_deref(), Some("B"));
}

async fn a_retry_waits_for_its_time_and_keeps_order(store: Store) {
    register(&store, "c1").await;
    store
        .accept(
            "c1",
            &edit(&[
                (ContactField::City, Some("X")),
                (ContactField::Zip, Some("1")),
            ]),
            "crm",
        )
        .await
        .unwrap();
    store.claim("crm", now_ms(), 10).await.unwrap();
    store
        .accept("c1", &edit(&[(ContactField::City, Some("Y"))]), "crm")
        .await
        .unwrap();
    let later = now_ms() + 60_000;
    let attempts = store
        .retry_later(
            "c1",
            later,
            true,
            &AdapterError::retryable("HTTP_503", "down"),
        )
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        store.claim("crm", now_ms(), 10).await.unwrap().is_empty(),
        "not before its time"
    );
    assert_eq!(store.next_ready_at("crm").await.unwrap(), Some(later));
    let claimed = store.claim("crm", later, 10).await.unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[
            (ContactField::City, Some("Y")),
            (ContactField::Zip, Some("1"))
        ]),
        "the retried edit goes first, the later value wins"
    );
    assert_eq!(claimed[0].attempts, 1);
}

#[tokio::test]
async fn in_flight_edits_go_back_to_the_queue_on_recovery() {
    // The state a crash leaves: an edit claimed, its push never reconciled. (Surviving a real
    // kill -9 is the end-to-end tests' job.)
    let (_dir, store) = open();
    register(&store, "c1").await;
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .await
        .unwrap();
    assert_eq!(store.claim("crm", now_ms(), 10).await.unwrap().len(), 1);
    store
        .accept("c1", &edit(&[(ContactField::Zip, Some("9"))]), "crm")
        .await
        .unwrap();
    let grace_ends = now_ms() + 60_000;
    assert_eq!(
        store
            .recover_in_flight(|_| grace_ends, |_| false)
            .await
            .unwrap(),
        1
    );
    assert!(
        store.claim("crm", now_ms(), 10).await.unwrap().is_empty(),
        "waits out the grace"
    );
    let claimed = store.claim("crm", grace_ends, 10).await.unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[
            (ContactField::City, Some("X")),
            (ContactField::Zip, Some("9"))
        ])
    );
    assert_eq!(
        store
            .recover_in_flight(|_| now_ms(), |_| false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.claim("crm", now_ms(), 10).await.unwrap().len(),
        1,
        "queued once"
    );
}

#[tokio::test]
async fn each_connection_recovers_at_its_own_time() {
    let (_dir, store) = open();
    register(&store, "slow").await;
    register(&store, "fast").await;
    store
        .accept(
            "slow",
            &edit(&[(ContactField::City, Some("X"))]),
            "slow_crm",
        )
        .await
        .unwrap();
    store
        .accept(
            "fast",
            &edit(&[(ContactField::City, Some("Y"))]),
            "fast_crm",
        )
        .await
        .unwrap();
    store.claim("slow_crm", store.now(), 10).await.unwrap();
    store.claim("fast_crm", store.now(), 10).await.unwrap();
    let now = store.now();
    let recovered = store
        .recover_in_flight(
            |connection| match connection {
                "slow_crm" => now + 30_000,
                _ => now + 1_000,
            },
            |_| false,
        )
        .await
        .unwrap();
    assert_eq!(recovered, 2);
    assert_eq!(
        store.next_ready_at("slow_crm").await.unwrap(),
        Some(now + 30_000)
    );
    assert_eq!(
        store.next_ready_at("fast_crm").await.unwrap(),
        Some(now + 1_000)
    );
}

#[tokio::test]
async fn an_edit_a_running_bulk_job_holds_stays_in_flight_at_recovery() {
    let (_dir, store) = open();
    for id in ["held", "loose"] {
        register(&store, id).await;
        store
            .accept(id, &edit(&[(ContactField::FirstName, Some("Bo"))]), "crm")
            .await
            .unwrap();
    }
    assert_eq!(store.claim("crm", store.now(), 10).await.unwrap().len(), 2);
    let recovered = store
        .recover_in_flight(|_| 0, |contact| contact == "held")
        .await
        .unwrap();
    assert_eq!(recovered, 1);
    let held = store.contact("held").await.unwrap().unwrap();
    assert!(held.sync.in_flight.is_some(), "the job will answer for it");
    let loose = store.contact("loose").await.unwrap().unwrap();
    assert!(loose.sync.in_flight.is_none() && loose.sync.pending.is_some());
}

async fn landed_fields_are_confirmed_when_only_the_customer_link_failed(store: Store) {
    register(&store, "c1").await;
    store
        .accept(
            "c1",
            &edit(&[
                (ContactField::City, Some("Porto")),
                (ContactField::UnifiedCustomerId, Some("cust_1")),
            ]),
            "crm",
        )
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    let link_error = AdapterError::retryable("HTTP_502", "association failed");
    let confirmed = ConfirmedContact {
        values: [(ContactField::City, Some("PORTO".to_string()))].into(),
        crm_version: Some("v2".into()),
        created_at: None,
        link_error: Some(link_error.clone()),
    };
    let retry_at = store.now() + 5_000;
    let retry = LinkFailure::RetryLater {
        not_before: retry_at,
        count_attempt: true,
        error: &link_error,
    };
    assert_eq!(
        store
            .complete_except_link("c1", &confirmed, retry)
            .await
            .unwrap(),
        None
    );
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.base[&ContactField::City].as_deref(), Some("PORTO"));
    assert_eq!(entry.contact.city.as_deref(), Some("PORTO"));
    assert_eq!(entry.crm_version.as_deref(), Some("v2"));
    assert_eq!(
        entry.sync.pending,
        Some(edit(&[(ContactField::UnifiedCustomerId, Some("cust_1"))])),
        "only the link waits"
    );
    assert_eq!(entry.sync.attempts, 1);
    assert_eq!(entry.sync.last_error.as_ref().unwrap().code, "HTTP_502");
    assert!(entry.contact.local_was_updated);
    assert!(
        store
            .claim("crm", store.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The link alone fails again, while a newer link is accepted: attempts go on counting,
    // and the newer link is the one that waits.
    let claimed = store.claim("crm", retry_at, 10).await.unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[(ContactField::UnifiedCustomerId, Some("cust_1"))])
    );
    store
        .accept(
            "c1",
            &edit(&[(ContactField::UnifiedCustomerId, Some("cust_2"))]),
            "crm",
        )
        .await
        .unwrap();
    let retry = LinkFailure::RetryLater {
        not_before: retry_at,
        count_attempt: true,
        error: &link_error,
    };
    let link_only = ConfirmedContact {
        link_error: Some(link_error.clone()),
        ..ConfirmedContact::default()
    };
    store
        .complete_except_link("c1", &link_only, retry)
        .await
        .unwrap();
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.sync.attempts, 2);
    assert_eq!(
        entry.sync.pending,
        Some(edit(&[(ContactField::UnifiedCustomerId, Some("cust_2"))]))
    );

    // A link the CRM refuses for good becomes a dead letter of the link alone.
    let claimed = store.claim("crm", retry_at, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let refused = AdapterError::permanent("INVALID_ASSOCIATION", "no", None);
    let letter = store
        .complete_except_link(
            "c1",
            &link_only,
            LinkFailure::DeadLetter {
                error: &refused,
                retries_exhausted: false,
            },
        )
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(
        letter.patch,
        edit(&[(ContactField::UnifiedCustomerId, Some("cust_2"))])
    );
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.sync.open_dead_letters, 1);
    assert!(entry.sync.in_flight.is_none());
}

async fn dead_letters_keep_the_crms_error_and_can_be_replayed_or_dropped(store: Store) {
    register(&store, "c1").await;
    store
        .accept("c1", &edit(&[(ContactField::Phone, Some("bad"))]), "crm")
        .await
        .unwrap();
    store.claim("crm", now_ms(), 10).await.unwrap();
    let error = AdapterError::permanent("INVALID_PHONE", "Phone is invalid", Some("phone".into()));
    let letter = store.dead_letter("c1", &error, false).await.unwrap();
    assert_eq!(letter.error.code, "INVALID_PHONE");
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert!(
        entry.contact.local_was_updated,
        "stays true until replayed or dropped"
    );
    assert_eq!(store.counts(now_ms()).await.unwrap()["crm"].dead_letters, 1);

    store.replay_dead_letter(&letter.id).await.unwrap();
    let claimed = store.claim("crm", now_ms(), 10).await.unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[(ContactField::Phone, Some("bad"))])
    );
    let letter = store.dead_letter("c1", &error, false).await.unwrap();
    store.drop_dead_letter(&letter.id).await.unwrap();
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert!(!entry.contact.local_was_updated);
    assert_eq!(
        entry.contact.phone.as_deref(),
        Some("555"),
        "back to the CRM's value"
    );
    assert!(store.dead_letters().await.unwrap().is_empty());
    assert!(matches!(
        store.drop_dead_letter(&letter.id).await,
        Err(StoreError::UnknownDeadLetter(_))
    ));
}

async fn a_merged_record_is_followed_in_one_step(store: Store) {
    register(&store, "c1").await;
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    let failure = AdapterError::retryable("HTTP_503", "down");
    store
        .retry_later("c1", store.now(), true, &failure)
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    store
        .accept("c1", &edit(&[(ContactField::Zip, Some("9"))]), "crm")
        .await
        .unwrap();

    let merged = AdapterError::record_merged("MERGED", "merged into src-survivor", "src-survivor");
    assert_eq!(
        store.repoint("c1", "src-survivor", &merged).await.unwrap(),
        MergeOutcome::Followed
    );
    assert_eq!(
        store
            .id_for_source("crm", "src-survivor")
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    assert_eq!(store.id_for_source("crm", "src-c1").await.unwrap(), None);
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.contact.source_id, "src-survivor", "what GET shows");
    assert_eq!(
        entry.sync.last_error.as_ref().unwrap().class,
        "record_merged"
    );
    let claimed = store.claim("crm", store.now(), 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "queued to go now");
    assert_eq!(claimed[0].source_id, "src-survivor");
    assert_eq!(claimed[0].attempts, 1, "the merge cost no attempt");
    assert_eq!(
        claimed[0].patch,
        edit(&[
            (ContactField::City, Some("X")),
            (ContactField::Zip, Some("9"))
        ])
    );
    // The old record's id is free for an import again.
    store
        .upsert_contact("crm", UnifiedContact::new("c9", "hubspot", "src-c1"))
        .await
        .unwrap();
}

async fn a_merge_into_a_record_of_another_contact_is_a_dead_letter(store: Store) {
    register(&store, "c1").await;
    register(&store, "c2").await;
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    let merged = AdapterError::record_merged("MERGED", "merged into src-c2", "src-c2");
    let MergeOutcome::SurvivorRegistered(letter) =
        store.repoint("c1", "src-c2", &merged).await.unwrap()
    else {
        panic!("the survivor is c2's record");
    };
    assert_eq!(letter.error.code, rules::MERGED_INTO_REGISTERED);
    assert!(
        letter.error.message.contains("c2"),
        "{}",
        letter.error.message
    );
    assert_eq!(store.dead_letters().await.unwrap(), vec![*letter]);
    assert_eq!(
        store
            .id_for_source("crm", "src-c2")
            .await
            .unwrap()
            .as_deref(),
        Some("c2")
    );
    assert_eq!(
        store
            .id_for_source("crm", "src-c1")
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.contact.source_id, "src-c1");
    assert_eq!(entry.sync.open_dead_letters, 1);
    assert!(entry.sync.in_flight.is_none());
    assert!(matches!(
        store.repoint("nope", "x", &merged).await,
        Err(StoreError::UnknownContact(_))
    ));
}

/// A person's value of a field, and ours, for the conflict of `field` a check found.
fn person_changed(
    field: ContactField,
    crm: &str,
    ours: &str,
) -> BTreeMap<ContactField, FieldConflict> {
    let conflict = FieldConflict {
        base: Some("555".into()),
        crm: Some(crm.into()),
        ours: Some(ours.into()),
    };
    [(field, conflict)].into()
}

async fn held_conflicts_wait_for_an_operator_who_writes_ours_or_takes_the_crms(store: Store) {
    register(&store, "c1").await;
    store
        .accept(
            "c1",
            &edit(&[
                (ContactField::Phone, Some("ours")),
                (ContactField::City, Some("Porto")),
            ]),
            "crm",
        )
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    let conflicts = person_changed(ContactField::Phone, "person", "ours");
    let held = store.hold_conflicts("c1", &conflicts).await.unwrap();
    assert!(held.in_flight_left, "the city still goes");
    assert_eq!(held.letter.kind(), LetterKind::Conflict);
    assert_eq!(held.letter.conflict.as_ref(), Some(&conflicts));
    assert_eq!(
        store.dead_letters().await.unwrap(),
        vec![held.letter.clone()]
    );
    assert_eq!(
        store.counts(store.now()).await.unwrap()["crm"].dead_letters,
        1
    );
    store
        .complete("c1", &ConfirmedContact::default(), None)
        .await
        .unwrap();
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Porto"));
    assert_eq!(entry.base[&ContactField::Phone].as_deref(), Some("555"));
    assert_eq!(entry.contact.phone.as_deref(), Some("ours"));
    assert!(entry.contact.local_was_updated);

    // retry: ours goes again, checked against the person's value.
    let replay = store.replay_dead_letter(&held.letter.id).await.unwrap();
    assert_eq!(
        replay.replayed,
        edit(&[(ContactField::Phone, Some("ours"))])
    );
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.base[&ContactField::Phone].as_deref(), Some("person"));
    let claimed = store.claim("crm", store.now(), 10).await.unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[(ContactField::Phone, Some("ours"))])
    );

    // The person changes it again: held again, every field this time; then dropped.
    let conflicts = person_changed(ContactField::Phone, "person again", "ours");
    let held = store.hold_conflicts("c1", &conflicts).await.unwrap();
    assert!(!held.in_flight_left, "nothing left to push");
    assert!(matches!(
        store.hold_conflicts("c1", &conflicts).await,
        Err(StoreError::NotInFlight(_))
    ));
    store.drop_dead_letter(&held.letter.id).await.unwrap();
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.contact.phone.as_deref(), Some("person again"));
    assert_eq!(
        entry.base[&ContactField::Phone].as_deref(),
        Some("person again")
    );
    assert!(!entry.contact.local_was_updated);
    assert!(
        store
            .claim("crm", store.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_replay_never_puts_back_a_value_older_than_one_accepted_since(store: Store) {
    register(&store, "c1").await;
    let refused = AdapterError::permanent("INVALID", "refused", None);
    store
        .accept(
            "c1",
            &edit(&[
                (ContactField::City, Some("Old")),
                (ContactField::Zip, Some("1")),
            ]),
            "crm",
        )
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    let letter = store.dead_letter("c1", &refused, false).await.unwrap();
    store
        .accept("c1", &edit(&[(ContactField::City, Some("New"))]), "crm")
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    store
        .complete("c1", &ConfirmedContact::default(), None)
        .await
        .unwrap();

    let replay = store.replay_dead_letter(&letter.id).await.unwrap();
    assert_eq!(replay.dropped, vec![ContactField::City]);
    assert!(!replay.superseded());
    let claimed = store.claim("crm", store.now(), 10).await.unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[(ContactField::Zip, Some("1"))]),
        "the newer city is not overwritten"
    );
    store
        .complete("c1", &ConfirmedContact::default(), None)
        .await
        .unwrap();

    // A letter every field of which was accepted again since is resolved as superseded.
    store
        .accept("c1", &edit(&[(ContactField::Phone, Some("bad"))]), "crm")
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    let letter = store.dead_letter("c1", &refused, false).await.unwrap();
    store
        .accept("c1", &edit(&[(ContactField::Phone, Some("good"))]), "crm")
        .await
        .unwrap();
    let replay = store.replay_dead_letter(&letter.id).await.unwrap();
    assert!(replay.superseded());
    assert!(store.dead_letters().await.unwrap().is_empty());
    let entry = store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.sync.open_dead_letters, 0);
    assert_eq!(entry.contact.phone.as_deref(), Some("good"));
    assert_eq!(
        entry.sync.pending,
        Some(edit(&[(ContactField::Phone, Some("good"))]))
    );
    assert_eq!(entry.contact.city.as_deref(), Some("New"));
}

async fn retry_all_replays_in_acceptance_order(store: Store) {
    register(&store, "early").await;
    register(&store, "late").await;
    let refused = AdapterError::permanent("INVALID", "refused", None);
    store
        .accept("early", &edit(&[(ContactField::City, Some("A"))]), "crm")
        .await
        .unwrap();
    store
        .accept("late", &edit(&[(ContactField::City, Some("B"))]), "crm")
        .await
        .unwrap();
    store.claim("crm", store.now(), 10).await.unwrap();
    // Refused in the other order: the letter of the later edit is older.
    let late = store.dead_letter("late", &refused, false).await.unwrap();
    let early = store.dead_letter("early", &refused, false).await.unwrap();
    assert!(late.id < early.id);

    let attempts = store.replay_all_dead_letters().await.unwrap();
    let order: Vec<&str> = attempts.iter().map(|a| a.letter_id.as_str()).collect();
    assert_eq!(order, vec![early.id.as_str(), late.id.as_str()]);
    assert!(attempts.iter().all(|a| a.outcome.is_ok()));
    assert_eq!(store.claim("crm", store.now(), 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreadable_record_becomes_a_dead_letter_instead_of_blocking_its_queue() {
    let (_dir, store) = open();
    register(&store, "broken").await;
    register(&store, "fine").await;
    for id in ["broken", "fine"] {
        store
            .accept(id, &edit(&[(ContactField::City, Some("X"))]), "crm")
            .await
            .unwrap();
    }
    store
        .sled()
        .contacts
        .insert("broken", &b"{\"contact\": tru"[..])
        .unwrap();

    let claimed = store.claim("crm", store.now(), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].contact_id, "fine");
    let letters = store.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].contact_id, "broken");
    assert_eq!(letters[0].connection, "crm");
    assert_eq!(letters[0].error.code, "STORE_CORRUPT");
    assert!(
        letters[0].error.message.contains("broken"),
        "{}",
        letters[0].error.message
    );
    let counts = store.counts(store.now()).await.unwrap();
    assert_eq!(counts["crm"].ready + counts["crm"].retry_waiting, 0);
    assert_eq!(counts["crm"].dead_letters, 1);
    assert!(
        store
            .claim("crm", store.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Scans of every record skip it too.
    assert_eq!(store.recover_in_flight(|_| 0, |_| false).await.unwrap(), 1);
    assert_eq!(store.in_flight_counts().await.unwrap().len(), 0);
    assert!(matches!(
        store.replay_dead_letter(&letters[0].id).await,
        Err(StoreError::Corrupt { .. })
    ));
    store.drop_dead_letter(&letters[0].id).await.unwrap();
    assert!(store.dead_letters().await.unwrap().is_empty());
}

async fn the_source_index_keeps_each_connection_apart(store: Store) {
    let portal = async |id: &str, connection: &str| {
        let contact = UnifiedContact::new(id, "hubspot", "51001");
        store.upsert_contact(connection, contact).await
    };
    portal("hs_a_51001", "hs_a").await.unwrap();
    portal("hs_b_51001", "hs_b").await.unwrap();
    assert_eq!(
        store
            .id_for_source("hs_a", "51001")
            .await
            .unwrap()
            .as_deref(),
        Some("hs_a_51001")
    );
    assert_eq!(
        store
            .id_for_source("hs_b", "51001")
            .await
            .unwrap()
            .as_deref(),
        Some("hs_b_51001")
    );
    assert_eq!(store.id_for_source("hubspot", "51001").await.unwrap(), None);

    match portal("other", "hs_a").await {
        Err(StoreError::SourceIdTaken {
            connection,
            source_id,
            owner,
        }) => {
            assert_eq!((connection.as_str(), source_id.as_str()), ("hs_a", "51001"));
            assert_eq!(owner, "hs_a_51001");
        }
        other => panic!("a second unified id for one record: {other:?}"),
    }
    assert!(
        store.contact("other").await.unwrap().is_none(),
        "nothing was written"
    );

    // A contact imported again with another record frees its old one.
    let mut moved = UnifiedContact::new("hs_a_51001", "hubspot", "51002");
    moved.first_name = Some("Moved".into());
    store.upsert_contact("hs_a", moved).await.unwrap();
    assert_eq!(store.id_for_source("hs_a", "51001").await.unwrap(), None);
    portal("other", "hs_a").await.unwrap();
}

#[tokio::test]
async fn a_schema_1_store_is_migrated_to_a_source_index_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        // A store as unisync wrote it before: schema 1, the index keyed by system, no
        // connection on the entries.
        let store = Store::open(&path, 8).unwrap();
        let old_entry =
            |id: &str, source_id: &str, sync_connection: Option<&str>, config_id: Option<&str>| {
                let mut contact = UnifiedContact::new(id, "hubspot", source_id);
                contact.external_system_config_id = config_id.map(str::to_string);
                let sync = SyncState {
                    connection: sync_connection.map(str::to_string),
                    ..SyncState::default()
                };
                let entry = serde_json::json!({"contact": contact, "base": {}, "sync": sync});
                store
                    .sled()
                    .contacts
                    .insert(id, serde_json::to_vec(&entry).unwrap())
                    .unwrap();
                store
                    .sled()
                    .source_index
                    .insert(keys::source_index("hubspot", source_id), id)
                    .unwrap();
            };
        old_entry("edited", "1", Some("hs_b"), Some("hs_a"));
        old_entry("configured", "2", None, Some("hs_a"));
        old_entry("plain", "3", None, None);
        store.sled().meta.insert("schema_version", "1").unwrap();
        store.flush().await.unwrap();
    }
    let store = open_at(&path, now_ms()).await;
    assert_eq!(store.meta("schema_version").unwrap().as_deref(), Some("3"));
    for (connection, source_id, id) in [
        ("hs_b", "1", "edited"),
        ("hs_a", "2", "configured"),
        ("hubspot", "3", "plain"),
    ] {
        assert_eq!(
            store
                .id_for_source(connection, source_id)
                .await
                .unwrap()
                .as_deref(),
            Some(id),
            "{connection}/{source_id}"
        );
        let entry = store.contact(id).await.unwrap().unwrap();
        assert_eq!(entry.source_connection.as_deref(), Some(connection));
    }
    assert_eq!(store.id_for_source("hubspot", "1").await.unwrap(), None);
}

#[tokio::test]
async fn a_failed_flush_fails_the_store_for_good() {
    let (_dir, store) = open();
    register(&store, "c1").await;
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .await
        .unwrap();
    assert_eq!(store.failure(), None);
    store.fail_next_flush("No space left on device");
    let failed = store.flush().await.unwrap_err();
    assert!(
        matches!(&failed, StoreError::Failed(m) if m.contains("No space")),
        "{failed}"
    );
    assert!(store.failure().unwrap().contains("No space"));
    assert!(store.failed().await.contains("No space"));
    // Sticky: no later flush or write is trusted.
    assert!(matches!(store.flush().await, Err(StoreError::Failed(_))));
    assert!(matches!(
        store
            .accept("c1", &edit(&[(ContactField::City, Some("Y"))]), "crm")
            .await,
        Err(StoreError::Failed(_))
    ));
    assert!(matches!(
        store.claim("crm", store.now(), 10).await,
        Err(StoreError::Failed(_))
    ));
    assert!(
        store.contact("c1").await.unwrap().is_some(),
        "reads still answer"
    );
}

async fn queues_are_per_connection(store: Store) {
    register(&store, "c1").await;
    register(&store, "c2").await;
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "a")
        .await
        .unwrap();
    store
        .accept("c2", &edit(&[(ContactField::City, Some("Y"))]), "b")
        .await
        .unwrap();
    let from_a = store.claim("a", now_ms(), 10).await.unwrap();
    assert_eq!(from_a.len(), 1);
    assert_eq!(from_a[0].contact_id, "c1");
    assert_eq!(store.counts(now_ms()).await.unwrap()["b"].ready, 1);
    assert_eq!(
        store.in_flight_counts().await.unwrap(),
        BTreeMap::from([("a".to_string(), 1)])
    );
}

#[tokio::test]
async fn wall_clock_steps_across_restarts_neither_stall_nor_strand_the_queue() {
    const START: u64 = 1_700_000_000_000;
    const DAY: u64 = 86_400_000;
    const RETRY: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let error = AdapterError::retryable("HTTP_503", "down");
    // Claims the contact when its turn comes, checks it came one retry wait from now at the
    // latest, and makes it wait one more retry.
    let retry_once = async |store: &Store| {
        let ready_at = store.next_ready_at("crm").await.unwrap().expect("queued");
        assert!(
            ready_at <= store.now() + RETRY,
            "ready at {ready_at}, {} ms after now",
            ready_at - store.now()
        );
        assert_eq!(
            store
                .claim("crm", ready_at.max(store.now()), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        store
            .retry_later("c1", store.now() + RETRY, true, &error)
            .await
            .unwrap();
    };

    let store = open_at(&path, START).await;
    register(&store, "c1").await;
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .await
        .unwrap();
    retry_once(&store).await;
    store.flush().await.unwrap();
    drop(store);

    // Next start: the wall clock jumped a day ahead. The retry is simply due.
    let store = open_at(&path, START + DAY).await;
    assert!(store.now() >= START + DAY);
    retry_once(&store).await;
    store.flush().await.unwrap();
    drop(store);

    // Next start: the wall clock is put back a day. The store's clock does not go back with
    // it, so the retry queued a moment ago still waits one retry, not a day more.
    let store = open_at(&path, START).await;
    assert!(store.now() >= START + DAY);
    retry_once(&store).await;
}

#[tokio::test]
async fn on_postgres_an_expired_lease_lets_another_node_claim_the_edit() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let other = schema.clone();
    schema
        .run(|first| async move {
            let second = other.store().await;
            register(&first, "c1").await;
            first
                .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
                .await
                .unwrap();
            let claimed_at = now_ms();
            assert_eq!(first.claim("crm", claimed_at, 10).await.unwrap().len(), 1);
            assert!(
                second
                    .claim("crm", claimed_at, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "leased to the first node"
            );
            assert_eq!(second.in_flight_counts().await.unwrap()["crm"], 1);
            let lease_ends = claimed_at + TEST_LEASE_MS;
            assert_eq!(
                second.next_ready_at("crm").await.unwrap(),
                Some(lease_ends),
                "the other node looks again when the lease ends"
            );
            // An edit accepted meanwhile waits behind the one in flight.
            second
                .accept("c1", &edit(&[(ContactField::Zip, Some("9"))]), "crm")
                .await
                .unwrap();
            assert!(
                second
                    .claim("crm", lease_ends - 1, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "not before the lease ends"
            );
            let taken = second.claim("crm", lease_ends, 10).await.unwrap();
            assert_eq!(
                taken.len(),
                1,
                "the first node stopped: its edit is claimed again"
            );
            assert_eq!(
                taken[0].patch,
                edit(&[
                    (ContactField::City, Some("X")),
                    (ContactField::Zip, Some("9"))
                ])
            );
            assert_eq!(second.in_flight_counts().await.unwrap()["crm"], 1);
            second
                .complete("c1", &ConfirmedContact::default(), None)
                .await
                .unwrap();
            let entry = second.contact("c1").await.unwrap().unwrap();
            assert!(!entry.contact.local_was_updated);
            assert!(second.in_flight_counts().await.unwrap().is_empty());
        })
        .await;
}

#[tokio::test]
async fn on_postgres_a_renewed_lease_holds_until_another_node_takes_the_edit_over() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let other = schema.clone();
    schema
        .run(|first| async move {
            let second = other.store().await;
            for id in ["c1", "c2"] {
                register(&first, id).await;
                first
                    .accept(id, &edit(&[(ContactField::City, Some("X"))]), "crm")
                    .await
                    .unwrap();
            }
            let claimed_at = now_ms();
            assert_eq!(first.claim("crm", claimed_at, 10).await.unwrap().len(), 2);
            let ids = vec!["c1".to_string(), "c2".to_string()];
            assert!(
                first.renew_leases(&ids).await.unwrap().is_empty(),
                "the holder renews, and nobody else holds either edit"
            );
            let renewed_until = second.next_ready_at("crm").await.unwrap().unwrap();
            assert!(renewed_until >= claimed_at + TEST_LEASE_MS);
            assert!(
                second
                    .claim("crm", claimed_at + TEST_LEASE_MS - 1, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "a renewed lease is not claimed before it ends"
            );
            // c1 is settled; c2's lease runs out and the other node takes the edit over.
            first
                .complete("c1", &ConfirmedContact::default(), None)
                .await
                .unwrap();
            let taken = second.claim("crm", renewed_until, 10).await.unwrap();
            assert_eq!(taken.len(), 1);
            assert_eq!(
                first.renew_leases(&ids).await.unwrap(),
                vec!["c2".to_string()],
                "the first node learns it must stop acting on c2 (c1, settled, is no one's)"
            );
            // A new leader following a bulk job takes the job's leases over.
            assert_eq!(
                first.adopt_leases(&ids).await.unwrap(),
                vec!["c2".to_string()]
            );
            assert_eq!(
                second.renew_leases(&ids).await.unwrap(),
                vec!["c2".to_string()]
            );
        })
        .await;
}

#[tokio::test]
async fn on_postgres_only_the_lease_holder_settles_an_edit() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let other = schema.clone();
    schema
        .run(|stale| async move {
            let current = other.store().await;
            register(&stale, "c1").await;
            stale
                .accept("c1", &edit(&[(ContactField::City, Some("Old"))]), "crm")
                .await
                .unwrap();
            let claimed_at = now_ms();
            stale.claim("crm", claimed_at, 10).await.unwrap();
            // The stale node's push outlives its lease; the current node takes the edit over.
            let taken = current
                .claim("crm", claimed_at + TEST_LEASE_MS, 10)
                .await
                .unwrap();
            assert_eq!(taken.len(), 1);
            let before = current.contact("c1").await.unwrap().unwrap();

            let landed = ConfirmedContact {
                values: [(ContactField::City, Some("Old".to_string()))].into(),
                ..ConfirmedContact::default()
            };
            let refused = |result: Result<(), StoreError>| match result {
                Err(StoreError::NotLeaseHolder { contact, .. }) => assert_eq!(contact, "c1"),
                other => panic!("a stale node settled an edit: {other:?}"),
            };
            refused(stale.complete("c1", &landed, None).await);
            let error = AdapterError::retryable("HTTP_503", "down");
            refused(
                stale
                    .retry_later("c1", now_ms(), true, &error)
                    .await
                    .map(drop),
            );
            let permanent = AdapterError::permanent("INVALID", "refused", None);
            refused(stale.dead_letter("c1", &permanent, false).await.map(drop));
            let merged = AdapterError::record_merged("MERGED", "merged", "src-2");
            refused(stale.repoint("c1", "src-2", &merged).await.map(drop));
            let conflicts = person_changed(ContactField::City, "person", "Old");
            refused(stale.hold_conflicts("c1", &conflicts).await.map(drop));
            assert_eq!(
                current.contact("c1").await.unwrap().unwrap(),
                before,
                "nothing the stale node said was kept"
            );
            assert!(current.dead_letters().await.unwrap().is_empty());

            current
                .complete("c1", &ConfirmedContact::default(), None)
                .await
                .unwrap();
            // Settled and out of flight: a late answer is refused all the same.
            refused(stale.complete("c1", &landed, None).await);
            let entry = current.contact("c1").await.unwrap().unwrap();
            assert_eq!(entry.base[&ContactField::City].as_deref(), Some("Old"));
        })
        .await;
}

#[tokio::test]
async fn on_postgres_an_unreadable_record_becomes_a_dead_letter_instead_of_blocking_its_queue() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let client = schema.client().await;
    schema
        .run(|store| async move {
            register(&store, "broken").await;
            register(&store, "fine").await;
            for id in ["broken", "fine"] {
                store
                    .accept(id, &edit(&[(ContactField::City, Some("X"))]), "crm")
                    .await
                    .unwrap();
            }
            client
                .execute(
                    "UPDATE contacts SET entry = '{\"contact\": true}' WHERE id = 'broken'",
                    &[],
                )
                .await
                .unwrap();
            let claimed = store.claim("crm", store.now(), 10).await.unwrap();
            assert_eq!(claimed.len(), 1);
            assert_eq!(claimed[0].contact_id, "fine");
            let letters = store.dead_letters().await.unwrap();
            assert_eq!(letters.len(), 1);
            assert_eq!(letters[0].contact_id, "broken");
            assert_eq!(letters[0].error.code, "STORE_CORRUPT");
            let counts = store.counts(store.now()).await.unwrap();
            assert_eq!(counts["crm"].ready + counts["crm"].retry_waiting, 0);
            assert!(
                store
                    .claim("crm", store.now(), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(matches!(
                store.replay_dead_letter(&letters[0].id).await,
                Err(StoreError::Corrupt { .. })
            ));
            store.drop_dead_letter(&letters[0].id).await.unwrap();
            assert!(store.dead_letters().await.unwrap().is_empty());
        })
        .await;
}

mod model {
    //! Random interleavings of accepts, pushes that land, fail for a while, are refused for
    //! good, meet a person's change of a field (held as a conflict letter) or a merge of the
    //! record (followed, or into another contact's record: a dead letter), crashes, replays
    //! and drops of dead letters, checked against what the acceptance order, the people and
    //! the operator say the CRM must hold.

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const CONTACTS: [&str; 3] = ["a", "b", "c"];
    const FIELDS: [ContactField; 2] = [ContactField::City, ContactField::Zip];

    #[derive(Clone, Copy, Debug)]
    enum Outcome {
        Lands,
        FailsForAWhile,
        Refused,
        /// A person changed the edit's first field in the CRM since its base: that field is
        /// held (`on_conflict = hold`) and the rest lands.
        PersonChangedIt,
        /// The CRM merged the record into a new one, which the contact follows.
        Merged,
        /// The CRM merged the record into another contact's record.
        MergedIntoAnother,
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// An edit of one field of one contact.
        Accept(usize, usize),
        /// Claim what is ready; each claimed push then has this outcome.
        Push(Outcome),
        /// The process dies with everything claimed still in flight.
        Crash,
        /// An operator replays the n-th open dead letter (modulo their number).
        Replay(usize),
        /// `dead-letters retry --all`.
        ReplayAll,
        /// An operator drops the n-th open dead letter.
        Drop(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        let outcome = prop_oneof![
            6 => Just(Outcome::Lands),
            2 => Just(Outcome::FailsForAWhile),
            2 => Just(Outcome::Refused),
            2 => Just(Outcome::PersonChangedIt),
            1 => Just(Outcome::Merged),
            1 => Just(Outcome::MergedIntoAnother),
        ];
        prop_oneof![
            4 => (0..CONTACTS.len(), 0..FIELDS.len()).prop_map(|(c, f)| Step::Accept(c, f)),
            3 => outcome.prop_map(Step::Push),
            1 => Just(Step::Crash),
            1 => any::<usize>().prop_map(Step::Replay),
            1 => Just(Step::ReplayAll),
            1 => any::<usize>().prop_map(Step::Drop),
        ]
    }

    /// A field of a contact.
    type Slot = (String, ContactField);

    /// The model: every accepted value is unique (`v<n>`, n its acceptance order), so a value
    /// says when it was accepted; a person's value in the CRM is `p<n>`.
    struct Model {
        accepted: u64,
        /// The latest accepted value of each field.
        latest: BTreeMap<Slot, u64>,
        /// Values an operator dropped (with their dead letter).
        dropped: BTreeSet<u64>,
        /// What the CRM holds.
        crm: BTreeMap<Slot, String>,
        /// People's edits in the CRM so far.
        people: u64,
        /// Merges so far.
        merges: u64,
        /// Each contact's record in the CRM.
        source_ids: BTreeMap<String, String>,
        /// Edits claimed and not yet answered, per contact.
        in_flight: BTreeMap<String, ContactPatch>,
    }

    /// When an accepted value was accepted; `None` for a person's value.
    fn order(value: &str) -> Option<u64> {
        value
            .strip_prefix('v')
            .map(|n| n.parse().expect("a model value"))
    }

    impl Model {
        fn new() -> Model {
            Model {
                accepted: 0,
                latest: BTreeMap::new(),
                dropped: BTreeSet::new(),
                crm: BTreeMap::new(),
                people: 0,
                merges: 0,
                source_ids: CONTACTS
                    .iter()
                    .map(|id| (id.to_string(), format!("src-{id}")))
                    .collect(),
                in_flight: BTreeMap::new(),
            }
        }

        async fn accept(&mut self, store: &Store, contact: &str, field: ContactField) {
            self.accepted += 1;
            let value = format!("v{}", self.accepted);
            store
                .accept(contact, &edit(&[(field, Some(&value))]), "crm")
                .await
                .unwrap();
            self.latest
                .insert((contact.to_string(), field), self.accepted);
        }

        /// Claims everything ready at `at`; checks no contact is claimed while in flight, and
        /// that each edit goes to the contact's record as merges left it.
        async fn claim(&mut self, store: &Store, at: u64) -> Vec<ClaimedEdit> {
            let claimed = store.claim("crm", at, 100).await.unwrap();
            for edit in &claimed {
                assert_eq!(edit.source_id, self.source_ids[&edit.contact_id]);
                assert!(
                    self.in_flight
                        .insert(edit.contact_id.clone(), edit.patch.clone())
                        .is_none(),
                    "{} claimed while a push for it is in flight",
                    edit.contact_id
                );
            }
            claimed
        }

        /// The CRM applies a push, which must never put back a value older than one of ours
        /// it holds.
        async fn land(&mut self, store: &Store, edit: &ClaimedEdit) {
            self.in_flight.remove(&edit.contact_id);
            for (field, value) in edit.patch.iter() {
                let pushed = order(value.expect("the model only sets values")).unwrap();
                let slot = (edit.contact_id.clone(), field);
                if let Some(held) = self.crm.get(&slot).and_then(|held| order(held)) {
                    assert!(
                        pushed >= held,
                        "{slot:?}: v{pushed} pushed over the newer v{held}"
                    );
                }
                self.crm.insert(slot, format!("v{pushed}"));
            }
            store
                .complete(&edit.contact_id, &ConfirmedContact::default(), None)
                .await
                .unwrap();
        }

        async fn push(&mut self, store: &Store, at: u64, outcome: Outcome) {
            for claimed in self.claim(store, at).await {
                let id = claimed.contact_id.clone();
                match outcome {
                    Outcome::Lands => self.land(store, &claimed).await,
                    Outcome::FailsForAWhile => {
                        self.in_flight.remove(&id);
                        let error = AdapterError::retryable("HTTP_503", "down");
                        store
                            .retry_later(&id, at + 500, true, &error)
                            .await
                            .unwrap();
                    }
                    Outcome::Refused => {
                        self.in_flight.remove(&id);
                        let error = AdapterError::permanent("INVALID", "refused", None);
                        let letter = store.dead_letter(&id, &error, false).await.unwrap();
                        assert_eq!(letter.patch, claimed.patch);
                    }
                    Outcome::PersonChangedIt => {
                        self.person_changes_first_field(store, claimed).await
                    }
                    Outcome::Merged => {
                        self.in_flight.remove(&id);
                        self.merges += 1;
                        let survivor = format!("merged-{}", self.merges);
                        let error = AdapterError::record_merged("MERGED", "merged", &survivor);
                        let outcome = store.repoint(&id, &survivor, &error).await.unwrap();
                        assert_eq!(outcome, MergeOutcome::Followed);
                        self.source_ids.insert(id, survivor);
                    }
                    Outcome::MergedIntoAnother => {
                        self.in_flight.remove(&id);
                        let other = CONTACTS.iter().find(|other| **other != id).unwrap();
                        let survivor = self.source_ids[*other].clone();
                        let error = AdapterError::record_merged("MERGED", "merged", &survivor);
                        match store.repoint(&id, &survivor, &error).await.unwrap() {
                            MergeOutcome::SurvivorRegistered(letter) => {
                                assert_eq!(letter.patch, claimed.patch)
                            }
                            followed => panic!("{id} took {other}'s record: {followed:?}"),
                        }
                    }
                }
            }
        }

        /// A person changes the claimed edit's first field in the CRM: it is held, and the
        /// rest of the edit lands.
        async fn person_changes_first_field(&mut self, store: &Store, claimed: ClaimedEdit) {
            let id = &claimed.contact_id;
            let mut rest = claimed.clone();
            let field = claimed.patch.fields().next().expect("claims carry a field");
            let ours = rest.patch.take(field).unwrap();
            self.people += 1;
            let person = format!("p{}", self.people);
            self.crm.insert((id.clone(), field), person.clone());
            let base = store.contact(id).await.unwrap().unwrap().base[&field].clone();
            let conflict = FieldConflict {
                base,
                crm: Some(person),
                ours: ours.clone(),
            };
            let held = store
                .hold_conflicts(id, &[(field, conflict)].into())
                .await
                .unwrap();
            assert_eq!(held.letter.patch, [(field, ours)].into_iter().collect());
            assert_eq!(held.in_flight_left, !rest.patch.is_empty());
            if held.in_flight_left {
                self.land(store, &rest).await;
            } else {
                self.in_flight.remove(id);
            }
        }

        async fn drop_letter(&mut self, store: &Store, letter: &DeadLetter) {
            store.drop_dead_letter(&letter.id).await.unwrap();
            for (_, value) in letter.patch.iter() {
                self.dropped.insert(order(value.unwrap()).unwrap());
            }
        }
    }

    /// How the model's store survives a crash on its engine.
    enum Restart {
        /// The process restarts and puts what was in flight back in the queue.
        Sled,
        /// Another node takes over: it claims the edits whose leases expired.
        Postgres(TestSchema),
    }

    impl Restart {
        async fn restart(&self, store: Store, clock: u64) -> Store {
            match self {
                Restart::Sled => {
                    store.recover_in_flight(|_| clock, |_| false).await.unwrap();
                    store
                }
                Restart::Postgres(schema) => schema.store().await,
            }
        }
    }

    async fn check_model(mut store: Store, steps: Vec<Step>, restart: Restart) {
        for id in CONTACTS {
            register(&store, id).await;
        }
        let mut model = Model::new();
        // Time only moves forward by these steps, so retries and grace periods are
        // reached by claiming "later" rather than by sleeping.
        let mut clock = store.now();
        for step in steps {
            match step {
                Step::Accept(c, f) => model.accept(&store, CONTACTS[c], FIELDS[f]).await,
                Step::Push(outcome) => {
                    clock += 1_000;
                    model.push(&store, clock, outcome).await;
                }
                Step::Crash => {
                    model.claim(&store, clock).await;
                    model.in_flight.clear();
                    clock += 1_000;
                    store = restart.restart(store, clock).await;
                }
                Step::Replay(n) => {
                    let letters = store.dead_letters().await.unwrap();
                    if !letters.is_empty() {
                        store
                            .replay_dead_letter(&letters[n % letters.len()].id)
                            .await
                            .unwrap();
                    }
                }
                Step::ReplayAll => {
                    for attempt in store.replay_all_dead_letters().await.unwrap() {
                        attempt.outcome.unwrap();
                    }
                }
                Step::Drop(n) => {
                    let letters = store.dead_letters().await.unwrap();
                    if !letters.is_empty() {
                        model.drop_letter(&store, &letters[n % letters.len()]).await;
                    }
                }
            }
        }
        // The operator replays what is left (writing ours over people's values), and
        // every push now lands.
        for attempt in store.replay_all_dead_letters().await.unwrap() {
            attempt.outcome.unwrap();
        }
        loop {
            clock += 1_000;
            let claimed = model.claim(&store, clock).await;
            if claimed.is_empty() {
                break;
            }
            for edit in claimed {
                model.land(&store, &edit).await;
            }
        }
        assert!(store.dead_letters().await.unwrap().is_empty());
        for id in CONTACTS {
            let entry = store.contact(id).await.unwrap().unwrap();
            let source_id = &model.source_ids[id];
            assert_eq!(
                &entry.contact.source_id, source_id,
                "{id} follows its merges"
            );
            assert_eq!(
                store
                    .id_for_source("crm", source_id)
                    .await
                    .unwrap()
                    .as_deref(),
                Some(id)
            );
            assert!(!entry.contact.local_was_updated, "{id} is synced");
            assert!(entry.sync.pending.is_none() && entry.sync.in_flight.is_none());
            assert!(entry.sync.held.is_empty() && entry.sync.seen_in_crm.is_empty());
            for field in FIELDS {
                let slot = (id.to_string(), field);
                let held = model.crm.get(&slot).cloned();
                assert_eq!(
                    entry.contact.field(field),
                    held.as_deref(),
                    "{slot:?}: the record shows what the CRM holds"
                );
                assert_eq!(
                    entry.base[&field], held,
                    "{slot:?}: the base is what the CRM holds"
                );
                match model.latest.get(&slot) {
                    // A dropped value is forgotten: the CRM keeps what it had before,
                    // an older value of ours or a person's.
                    Some(latest) if model.dropped.contains(latest) => {
                        let ours = held.as_deref().and_then(order);
                        assert!(ours.is_none_or(|ours| ours < *latest), "{slot:?}: {held:?}");
                    }
                    latest => assert_eq!(
                        held,
                        latest.map(|n| format!("v{n}")),
                        "{slot:?}: the last accepted value wins"
                    ),
                }
            }
        }
        let counts = store.counts(clock).await.unwrap();
        assert_eq!(
            counts
                .get("crm")
                .map(|c| c.ready + c.retry_waiting)
                .unwrap_or(0),
            0
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_crm_ends_with_what_the_acceptance_order_says(steps in proptest::collection::vec(step(), 1..60)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (_dir, store) = open();
                check_model(store, steps, Restart::Sled).await;
            });
        }
    }

    proptest! {
        // Fewer cases: each runs in a schema of its own, over the network.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn on_postgres_the_crm_ends_with_what_the_acceptance_order_says(steps in proptest::collection::vec(step(), 1..60)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Some(schema) = TestSchema::create().await {
                    let restart = Restart::Postgres(schema.clone());
                    schema.run(|store| check_model(store, steps, restart)).await;
                }
            });
        }
    }
}

#[tokio::test]
async fn queue_figures_kept_as_changes_commit_equal_a_count_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let kept = {
        let store = open_at(&path, now_ms()).await;
        for id in ["a", "b", "c", "d", "e"] {
            register(&store, id).await;
            store
                .accept_durable(id, &edit(&[(ContactField::City, Some("X"))]), "crm")
                .await
                .unwrap();
        }
        let claimed = store.claim("crm", store.now(), 3).await.unwrap();
        assert_eq!(claimed.len(), 3);
        let error = AdapterError::new(ErrorKind::Retryable { retry_after: None }, "HTTP_503", "x");
        store
            .retry_later(&claimed[0].contact_id, store.now() + 60_000, true, &error)
            .await
            .unwrap();
        let refused = AdapterError::new(ErrorKind::Permanent { field: None }, "INVALID", "no");
        store
            .dead_letter(&claimed[1].contact_id, &refused, false)
            .await
            .unwrap();
        store.flush().await.unwrap();
        let kept = store.counts(store.now()).await.unwrap();
        assert_eq!(
            kept["crm"],
            ConnectionCounts {
                ready: 2,
                retry_waiting: 1,
                in_flight: 1,
                dead_letters: 1
            }
        );
        kept
    };
    let reopened = open_at(&path, now_ms()).await;
    assert_eq!(reopened.counts(reopened.now()).await.unwrap(), kept);
    assert_eq!(
        reopened.in_flight_counts().await.unwrap(),
        BTreeMap::from([("crm".to_string(), 1)])
    );
}

#[tokio::test]
async fn the_update_endpoints_accept_is_on_disk_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = open_at(&path, now_ms()).await;
        for n in 0..50 {
            register(&store, &format!("c{n}")).await;
        }
        store.flush().await.unwrap();
        // Concurrent edits: the writer takes them in batches; each answer means durable.
        let edits: Vec<_> = (0..50)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let patch = edit(&[(ContactField::City, Some("Durable"))]);
                    store.accept_durable(&format!("c{n}"), &patch, "crm").await
                })
            })
            .collect();
        for answer in edits {
            assert!(answer.await.unwrap().unwrap().queued);
        }
        let unknown = store
            .accept_durable("nobody", &edit(&[(ContactField::City, Some("X"))]), "crm")
            .await;
        assert!(matches!(unknown, Err(StoreError::UnknownContact(_))));
        // No flush and no clean close: what is on disk is what the next open finds.
        std::mem::forget(store);
    }
    // The forgotten store still holds the lock: read a copy of its files instead.
    let copy = dir.path().join("copy");
    copy_dir(&path, &copy);
    let reopened = open_at(&copy, now_ms()).await;
    for n in 0..50 {
        let entry = reopened.contact(&format!("c{n}")).await.unwrap().unwrap();
        assert_eq!(entry.contact.city.as_deref(), Some("Durable"), "c{n}");
    }
    assert_eq!(
        reopened.counts(reopened.now()).await.unwrap()["crm"].ready,
        50
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_schema_2_store_of_json_records_is_re_encoded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (entry, letter, customer) = {
        let store = open_at(&path, now_ms()).await;
        register(&store, "c1").await;
        store
            .accept("c1", &edit(&[(ContactField::City, Some("Old"))]), "crm")
            .await
            .unwrap();
        store
            .upsert_customer(&Customer {
                id: "cust".into(),
                source_system: "hubspot".into(),
                source_id: "9".into(),
                external_system_config_id: None,
            })
            .await
            .unwrap();
        let claimed = store.claim("crm", store.now(), 1).await.unwrap();
        let refused = AdapterError::new(ErrorKind::Retryable { retry_after: None }, "X", "y");
        let letter = store
            .dead_letter(&claimed[0].contact_id, &refused, true)
            .await
            .unwrap();
        let entry = store.contact("c1").await.unwrap().unwrap();
        let customer = store.customer("cust").await.unwrap().unwrap();
        // As schema 2 kept them: JSON records.
        let sled = store.sled();
        sled.contacts
            .insert("c1", serde_json::to_vec(&entry).unwrap())
            .unwrap();
        sled.meta.insert("schema_version", "2").unwrap();
        sled.dead_letters
            .insert(&letter.id, serde_json::to_vec(&letter).unwrap())
            .unwrap();
        sled.customers
            .insert("cust", serde_json::to_vec(&customer).unwrap())
            .unwrap();
        store.flush().await.unwrap();
        (entry, letter, customer)
    };
    let store = open_at(&path, now_ms()).await;
    assert_eq!(store.meta("schema_version").unwrap().as_deref(), Some("3"));
    assert_eq!(store.contact("c1").await.unwrap().unwrap(), entry);
    assert_eq!(
        store.dead_letter_by_id(&letter.id).await.unwrap().unwrap(),
        letter
    );
    assert_eq!(store.customer("cust").await.unwrap().unwrap(), customer);
    assert_eq!(
        store.counts(store.now()).await.unwrap()["crm"].dead_letters,
        1
    );
}

#[tokio::test]
async fn a_store_of_a_newer_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = open_at(&path, now_ms()).await;
        store.sled().meta.insert("schema_version", "99").unwrap();
        store.flush().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match SledStore::open(&path, 8) {
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(error) => break error.to_string(),
            Ok(_) => panic!("a newer store was opened"),
        }
    };
    assert!(
        refused.contains("99") && refused.contains("newer"),
        "{refused}"
    );
    assert!(
        refused.contains("run the unisync that wrote it"),
        "{refused}"
    );
}

/// Waits (bounded) until the store's clock is past `time`.
async fn clock_past(store: &Store, time: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.now() <= time {
        assert!(Instant::now() < deadline, "the clock stood still");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn pruning_drops_dead_letters_and_edit_ids_past_their_retention_only(store: Store) {
    let refused = AdapterError::new(ErrorKind::Permanent { field: None }, "INVALID", "no");
    let mut letters = Vec::new();
    for id in ["old", "new"] {
        register(&store, id).await;
        store
            .accept(id, &edit(&[(ContactField::City, Some("X"))]), "crm")
            .await
            .unwrap();
        store.claim("crm", store.now(), 1).await.unwrap();
        letters.push(store.dead_letter(id, &refused, false).await.unwrap());
        store.remember_edit(&format!("edit-{id}")).await.unwrap();
        clock_past(&store, store.now()).await;
    }
    let cutoff = letters[1].failed_at;
    let retention = Retention {
        dead_letters_ms: Some(0),
        edit_ids_ms: Some(0),
    };

    let pruned = store.prune_as_of(&retention, cutoff).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            dead_letters: 1,
            edit_ids: 1
        }
    );
    let left = store.dead_letters().await.unwrap();
    assert_eq!(left, vec![letters[1].clone()]);
    let old = store.contact("old").await.unwrap().unwrap();
    assert_eq!(
        old.sync.open_dead_letters, 0,
        "dropped as an operator would"
    );
    assert_eq!(old.contact.city, None, "its value went back to the CRM's");
    assert!(!store.edit_seen("edit-old").await.unwrap());
    assert!(store.edit_seen("edit-new").await.unwrap());
    assert_eq!(
        store.counts(store.now()).await.unwrap()["crm"].dead_letters,
        1
    );

    let keep_all = Retention::default();
    let pruned = store.prune_as_of(&keep_all, u64::MAX).await.unwrap();
    assert_eq!(pruned, Pruned::default(), "no retention: nothing goes");
}

#[tokio::test]
async fn edit_ids_remembered_before_retention_count_as_old() {
    let (_dir, store) = open();
    store.remember_edit("edit-new").await.unwrap();
    store
        .sled()
        .meta
        .insert("edit/from-before-retention", &[])
        .unwrap();
    let retention = Retention {
        dead_letters_ms: None,
        edit_ids_ms: Some(60_000),
    };
    let pruned = store.prune_as_of(&retention, store.now()).await.unwrap();
    assert_eq!(pruned.edit_ids, 1);
    assert!(!store.edit_seen("from-before-retention").await.unwrap());
    assert!(store.edit_seen("edit-new").await.unwrap());
}

#[tokio::test]
async fn compaction_keeps_every_contact_queued_edit_and_letter_and_gives_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (entries, counts, letter) = {
        let store = open_at(&path, now_ms()).await;
        for n in 0..200 {
            let id = format!("c{n}");
            register(&store, &id).await;
            for round in 0..5 {
                let value = format!("City {round}");
                store
                    .accept(&id, &edit(&[(ContactField::City, Some(&value))]), "crm")
                    .await
                    .unwrap();
            }
        }
        let claimed = store.claim("crm", store.now(), 2).await.unwrap();
        let refused = AdapterError::new(ErrorKind::Permanent { field: None }, "INVALID", "no");
        let letter = store
            .dead_letter(&claimed[0].contact_id, &refused, false)
            .await
            .unwrap();
        store.flush().await.unwrap();
        let mut entries = Vec::new();
        for n in 0..200 {
            entries.push(store.contact(&format!("c{n}")).await.unwrap().unwrap());
        }
        (entries, store.counts(store.now()).await.unwrap(), letter)
    };
    // Once the store just dropped has let go of its files.
    let deadline = Instant::now() + Duration::from_secs(10);
    let compacted = loop {
        match compact(&path, 8, &Retention::default()).await {
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => break other.unwrap(),
        }
    };
    assert!(
        compacted.bytes_after < compacted.bytes_before,
        "{} -> {}",
        compacted.bytes_before,
        compacted.bytes_after
    );
    assert!(!dir.path().join("db.pre-compact").exists());

    let store = open_at(&path, now_ms()).await;
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(
            &store.contact(&format!("c{n}")).await.unwrap().unwrap(),
            entry
        );
    }
    assert_eq!(store.counts(store.now()).await.unwrap(), counts);
    assert_eq!(store.dead_letters().await.unwrap(), vec![letter.clone()]);
    let claimed = store.claim("crm", store.now(), 1000).await.unwrap();
    assert_eq!(claimed.len(), 198, "every queued edit is still queued");
    // Sequences go on: a new letter takes a new id.
    let refused = AdapterError::new(ErrorKind::Permanent { field: None }, "INVALID", "no");
    let next = store
        .dead_letter(&claimed[0].contact_id, &refused, false)
        .await
        .unwrap();
    assert!(next.id > letter.id, "{} after {}", next.id, letter.id);
    assert_eq!(store.dead_letters().await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_interrupted_compaction_is_undone_or_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old = dir.path().join("db.pre-compact");
    {
        let store = open_at(&path, now_ms()).await;
        register(&store, "c1").await;
        store.flush().await.unwrap();
    }
    // Stopped between the renames: the old files are the store.
    std::fs::rename(&path, &old).unwrap();
    let store = open_at(&path, now_ms()).await;
    assert!(store.contact("c1").await.unwrap().is_some());
    assert!(!old.exists());
    drop(store);
    // Stopped after them: the old files are left over.
    std::fs::create_dir(&old).unwrap();
    let store = open_at(&path, now_ms()).await;
    assert!(store.contact("c1").await.unwrap().is_some());
    assert!(!old.exists());
}

#[tokio::test]
async fn a_store_made_without_compression_opens_as_it_is_and_compaction_compresses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // As unisync made stores before compression: sled's defaults.
    drop(::sled::Config::new().path(&path).open().unwrap());
    let conf = || String::from_utf8_lossy(&std::fs::read(path.join("conf")).unwrap()).into_owned();
    assert!(conf().contains("use_compression: false"));
    {
        let store = open_at(&path, now_ms()).await;
        register(&store, "c1").await;
        store.flush().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match compact(&path, 8, &Retention::default()).await {
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => {
                other.unwrap();
                break;
            }
        }
    }
    assert!(conf().contains("use_compression: true"), "{}", conf());
    let store = open_at(&path, now_ms()).await;
    assert!(store.contact("c1").await.unwrap().is_some());
}
