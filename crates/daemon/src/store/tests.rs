//! The store's state changes, checked against a real sled database in a temp dir.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use unisync_core::{AdapterError, ConfirmedContact, ContactField, ContactPatch, UnifiedContact};

use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 8).unwrap();
    (dir, store)
}

/// Opens the store at `path` with its own clock reading `wall_ms` (the wall clock at this
/// start); waits (bounded) for a store dropped just before to let go of the files.
async fn open_at(path: &Path, wall_ms: u64) -> Store {
    let clock: &'static Clock = Box::leak(Box::new(Clock::starting_at(wall_ms)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_with_clock(path, 8, clock) {
            Ok(store) => return store,
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(error) => panic!("reopening the store: {error}"),
        }
    }
}

fn register(store: &Store, id: &str) {
    let mut contact = UnifiedContact::new(id, "hubspot", format!("src-{id}"));
    contact.first_name = Some("Ann".into());
    contact.phone = Some("555".into());
    store.upsert_contact(contact).unwrap();
}

fn edit(values: &[(ContactField, Option<&str>)]) -> ContactPatch {
    values
        .iter()
        .map(|(field, value)| (*field, value.map(str::to_string)))
        .collect()
}

#[tokio::test]
async fn accept_applies_locally_and_queues_once() {
    let (_dir, store) = open();
    register(&store, "c1");
    let first = store
        .accept("c1", &edit(&[(ContactField::FirstName, Some("Bo"))]), "crm")
        .unwrap();
    assert!(first.queued);
    assert!(first.contact.local_was_updated);
    assert_eq!(first.contact.first_name.as_deref(), Some("Bo"));
    let second = store
        .accept("c1", &edit(&[(ContactField::Phone, None)]), "crm")
        .unwrap();
    assert!(
        !second.queued,
        "already waiting: coalesced, not queued twice"
    );
    store.flush().await.unwrap();

    let claimed = store.claim("crm", now_ms(), 10).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].patch,
        edit(&[
            (ContactField::FirstName, Some("Bo")),
            (ContactField::Phone, None)
        ])
    );
    assert!(
        store.claim("crm", now_ms(), 10).unwrap().is_empty(),
        "in flight: not claimable"
    );
    assert!(matches!(
        store.accept("nope", &ContactPatch::new(), "crm"),
        Err(StoreError::UnknownContact(_))
    ));
}

#[tokio::test]
async fn edits_during_a_push_wait_and_follow_it() {
    let (_dir, store) = open();
    register(&store, "c1");
    store
        .accept("c1", &edit(&[(ContactField::FirstName, Some("A"))]), "crm")
        .unwrap();
    let claimed = store.claim("crm", now_ms(), 10).unwrap();
    assert_eq!(claimed.len(), 1);
    let during = store
        .accept("c1", &edit(&[(ContactField::FirstName, Some("B"))]), "crm")
        .unwrap();
    assert!(!during.queued, "waits for the push in flight");
    let confirmed = ConfirmedContact {
        values: [(ContactField::FirstName, Some("A".to_string()))].into(),
        crm_version: Some("v1".into()),
        created_at: None,
        link_error: None,
    };
    store.complete("c1", &confirmed, None).unwrap();
    let entry = store.contact("c1").unwrap().unwrap();
    assert_eq!(
        entry.contact.first_name.as_deref(),
        Some("B"),
        "the CRM's older value does not overwrite a pending edit"
    );
    assert!(entry.contact.local_was_updated);
    assert_eq!(entry.crm_version.as_deref(), Some("v1"));
    let next = store.claim("crm", now_ms(), 10).unwrap();
    assert_eq!(next[0].patch, edit(&[(ContactField::FirstName, Some("B"))]));
    store
        .complete("c1", &ConfirmedContact::default(), None)
        .unwrap();
    let entry = store.contact("c1").unwrap().unwrap();
    assert!(!entry.contact.local_was_updated);
    assert_eq!(entry.base[&ContactField::FirstName].as_deref(), Some("B"));
}

#[tokio::test]
async fn a_retry_waits_for_its_time_and_keeps_order() {
    let (_dir, store) = open();
    register(&store, "c1");
    store
        .accept(
            "c1",
            &edit(&[
                (ContactField::City, Some("X")),
                (ContactField::Zip, Some("1")),
            ]),
            "crm",
        )
        .unwrap();
    store.claim("crm", now_ms(), 10).unwrap();
    store
        .accept("c1", &edit(&[(ContactField::City, Some("Y"))]), "crm")
        .unwrap();
    let later = now_ms() + 60_000;
    let attempts = store
        .retry_later(
            "c1",
            later,
            true,
            &AdapterError::retryable("HTTP_503", "down"),
        )
        .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        store.claim("crm", now_ms(), 10).unwrap().is_empty(),
        "not before its time"
    );
    assert_eq!(store.next_ready_at("crm").unwrap(), Some(later));
    let claimed = store.claim("crm", later, 10).unwrap();
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
    register(&store, "c1");
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .unwrap();
    assert_eq!(store.claim("crm", now_ms(), 10).unwrap().len(), 1);
    store
        .accept("c1", &edit(&[(ContactField::Zip, Some("9"))]), "crm")
        .unwrap();
    let grace_ends = now_ms() + 60_000;
    assert_eq!(store.recover_in_flight(grace_ends).unwrap(), 1);
    assert!(
        store.claim("crm", now_ms(), 10).unwrap().is_empty(),
        "waits out the grace"
    );
    let claimed = store.claim("crm", grace_ends, 10).unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[
            (ContactField::City, Some("X")),
            (ContactField::Zip, Some("9"))
        ])
    );
    assert_eq!(store.recover_in_flight(now_ms()).unwrap(), 1);
    assert_eq!(
        store.claim("crm", now_ms(), 10).unwrap().len(),
        1,
        "queued once"
    );
}

#[tokio::test]
async fn dead_letters_keep_the_crms_error_and_can_be_replayed_or_dropped() {
    let (_dir, store) = open();
    register(&store, "c1");
    store
        .accept("c1", &edit(&[(ContactField::Phone, Some("bad"))]), "crm")
        .unwrap();
    store.claim("crm", now_ms(), 10).unwrap();
    let error = AdapterError::permanent("INVALID_PHONE", "Phone is invalid", Some("phone".into()));
    let letter = store.dead_letter("c1", &error, false).unwrap();
    assert_eq!(letter.error.code, "INVALID_PHONE");
    let entry = store.contact("c1").unwrap().unwrap();
    assert!(
        entry.contact.local_was_updated,
        "stays true until replayed or dropped"
    );
    assert_eq!(store.counts(now_ms()).unwrap()["crm"].dead_letters, 1);

    store.replay_dead_letter(&letter.id).unwrap();
    let claimed = store.claim("crm", now_ms(), 10).unwrap();
    assert_eq!(
        claimed[0].patch,
        edit(&[(ContactField::Phone, Some("bad"))])
    );
    let letter = store.dead_letter("c1", &error, false).unwrap();
    store.drop_dead_letter(&letter.id).unwrap();
    let entry = store.contact("c1").unwrap().unwrap();
    assert!(!entry.contact.local_was_updated);
    assert_eq!(
        entry.contact.phone.as_deref(),
        Some("555"),
        "back to the CRM's value"
    );
    assert!(store.dead_letters().unwrap().is_empty());
    assert!(matches!(
        store.drop_dead_letter(&letter.id),
        Err(StoreError::UnknownDeadLetter(_))
    ));
}

#[tokio::test]
async fn queues_are_per_connection() {
    let (_dir, store) = open();
    register(&store, "c1");
    register(&store, "c2");
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "a")
        .unwrap();
    store
        .accept("c2", &edit(&[(ContactField::City, Some("Y"))]), "b")
        .unwrap();
    let from_a = store.claim("a", now_ms(), 10).unwrap();
    assert_eq!(from_a.len(), 1);
    assert_eq!(from_a[0].contact_id, "c1");
    assert_eq!(store.counts(now_ms()).unwrap()["b"].ready, 1);
    assert_eq!(
        store.in_flight_counts().unwrap(),
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
    let retry_once = |store: &Store| {
        let ready_at = store.next_ready_at("crm").unwrap().expect("queued");
        assert!(
            ready_at <= store.now() + RETRY,
            "ready at {ready_at}, {} ms after now",
            ready_at - store.now()
        );
        assert_eq!(
            store
                .claim("crm", ready_at.max(store.now()), 10)
                .unwrap()
                .len(),
            1
        );
        store
            .retry_later("c1", store.now() + RETRY, true, &error)
            .unwrap();
    };

    let store = open_at(&path, START).await;
    register(&store, "c1");
    store
        .accept("c1", &edit(&[(ContactField::City, Some("X"))]), "crm")
        .unwrap();
    retry_once(&store);
    store.flush().await.unwrap();
    drop(store);

    // Next start: the wall clock jumped a day ahead. The retry is simply due.
    let store = open_at(&path, START + DAY).await;
    assert!(store.now() >= START + DAY);
    retry_once(&store);
    store.flush().await.unwrap();
    drop(store);

    // Next start: the wall clock is put back a day. The store's clock does not go back with
    // it, so the retry queued a moment ago still waits one retry, not a day more.
    let store = open_at(&path, START).await;
    assert!(store.now() >= START + DAY);
    retry_once(&store);
}

mod model {
    //! Random interleavings of accepts, pushes, retries and crashes, checked against what a
    //! CRM receiving the pushes in order would hold.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const CONTACTS: [&str; 3] = ["a", "b", "c"];
    const FIELDS: [ContactField; 2] = [ContactField::City, ContactField::Zip];

    #[derive(Clone, Debug)]
    enum Step {
        /// An edit of one field of one contact.
        Accept(usize, usize, u8),
        /// Claim what is ready; each claimed push then succeeds (`true`) or fails for a while.
        Push(bool),
        /// The process dies with everything claimed still in flight.
        Crash,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..CONTACTS.len(), 0..FIELDS.len(), any::<u8>()).prop_map(|(c, f, v)| Step::Accept(c, f, v)),
            2 => any::<bool>().prop_map(Step::Push),
            1 => Just(Step::Crash),
        ]
    }

    /// Claims everything ready at `at` and checks no contact is claimed while in flight.
    fn claim_all(
        store: &Store,
        at: u64,
        in_flight: &mut BTreeMap<String, ContactPatch>,
    ) -> Vec<ClaimedEdit> {
        let claimed = store.claim("crm", at, 100).unwrap();
        for edit in &claimed {
            assert!(
                in_flight
                    .insert(edit.contact_id.clone(), edit.patch.clone())
                    .is_none(),
                "{} claimed while a push for it is in flight",
                edit.contact_id
            );
        }
        claimed
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn the_crm_ends_with_every_contacts_last_accepted_values(steps in proptest::collection::vec(step(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (_dir, store) = open();
                for id in CONTACTS {
                    register(&store, id);
                }
                let mut accepted: BTreeMap<(String, ContactField), String> = BTreeMap::new();
                let mut crm: BTreeMap<(String, ContactField), String> = BTreeMap::new();
                let mut in_flight: BTreeMap<String, ContactPatch> = BTreeMap::new();
                // Time only moves forward by these steps, so retries and grace periods are
                // reached by claiming "later" rather than by sleeping.
                let mut clock = now_ms();
                for step in steps {
                    match step {
                        Step::Accept(c, f, v) => {
                            let value = format!("v{v}");
                            store.accept(CONTACTS[c], &edit(&[(FIELDS[f], Some(&value))]), "crm").unwrap();
                            accepted.insert((CONTACTS[c].to_string(), FIELDS[f]), value);
                        }
                        Step::Push(succeeds) => {
                            clock += 1_000;
                            for claimed in claim_all(&store, clock, &mut in_flight) {
                                in_flight.remove(&claimed.contact_id);
                                if succeeds {
                                    for (field, value) in claimed.patch.iter() {
                                        crm.insert((claimed.contact_id.clone(), field), value.unwrap().to_string());
                                    }
                                    store.complete(&claimed.contact_id, &ConfirmedContact::default(), None).unwrap();
                                } else {
                                    let error = AdapterError::retryable("HTTP_503", "down");
                                    store.retry_later(&claimed.contact_id, clock + 500, true, &error).unwrap();
                                }
                            }
                        }
                        Step::Crash => {
                            claim_all(&store, clock, &mut in_flight);
                            in_flight.clear();
                            clock += 1_000;
                            store.recover_in_flight(clock).unwrap();
                        }
                    }
                }
                // Drain: every push now succeeds.
                loop {
                    clock += 1_000;
                    let claimed = claim_all(&store, clock, &mut in_flight);
                    if claimed.is_empty() {
                        break;
                    }
                    for edit in claimed {
                        in_flight.remove(&edit.contact_id);
                        for (field, value) in edit.patch.iter() {
                            crm.insert((edit.contact_id.clone(), field), value.unwrap().to_string());
                        }
                        store.complete(&edit.contact_id, &ConfirmedContact::default(), None).unwrap();
                    }
                }
                assert_eq!(crm, accepted, "the CRM holds the last accepted value of every field");
                for id in CONTACTS {
                    let entry = store.contact(id).unwrap().unwrap();
                    assert!(!entry.contact.local_was_updated, "{id} is synced");
                    assert!(entry.sync.pending.is_none() && entry.sync.in_flight.is_none());
                }
                let counts = store.counts(clock).unwrap();
                assert_eq!(counts.get("crm").map(|c| c.ready + c.retry_waiting).unwrap_or(0), 0);
            });
        }
    }
}
