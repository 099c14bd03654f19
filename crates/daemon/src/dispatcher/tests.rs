//! The dispatcher against a scripted CRM and a real store in a temp dir: what it does after
//! each kind of failure, decided by the error's class alone.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::Duration;

use async_trait::async_trait;
use unisync_core::{
    ApiUsage, Capabilities, ConditionalPush, ConfirmedContact, ConnectionConfig, ContactPage,
    ContactPatch, FieldMapping, FieldRule, SourceAdapter, SourceContact, UnifiedContact,
};

use super::*;
use crate::config::{ConnectionSettings, DispatchConfig};
use crate::conflict::OnConflict;
use crate::connections::PRESSURE_LINGER;

/// How one push item is answered: by the call's number (from 0) and the item.
type Respond = dyn Fn(u32, &PushItem) -> PushResult + Send + Sync;

/// A CRM whose answers a test scripts, and that logs every call it gets.
struct ScriptedCrm {
    mapping: FieldMapping,
    /// What `read` answers: the records' current values, as a person left them.
    current: Mutex<BTreeMap<String, BTreeMap<ContactField, Option<String>>>>,
    /// Conditional writes still to refuse as modified since the read.
    modified_since: AtomicU32,
    /// The versions conditional writes were made against.
    conditional_versions: Mutex<Vec<String>>,
    /// The daily budget as the CRM last reported it.
    usage: Mutex<Option<ApiUsage>>,
    /// How full the short rate-limit window is.
    pressure: Mutex<f64>,
    /// When the daily budget resets.
    resets_in: Mutex<Option<Duration>>,
    /// Pushes begun; `calls` counts those answered.
    begun: AtomicU32,
    calls: AtomicU32,
    log: Mutex<Vec<Call>>,
    respond: Box<Respond>,
    /// How long each push takes.
    push_time: Mutex<Duration>,
}

struct Call {
    at: Instant,
    source_ids: Vec<String>,
    patches: Vec<ContactPatch>,
}

impl ScriptedCrm {
    fn new(respond: impl Fn(u32, &PushItem) -> PushResult + Send + Sync + 'static) -> Self {
        ScriptedCrm {
            current: Mutex::new(BTreeMap::new()),
            modified_since: AtomicU32::new(0),
            conditional_versions: Mutex::new(Vec::new()),
            usage: Mutex::new(None),
            pressure: Mutex::new(0.0),
            resets_in: Mutex::new(None),
            mapping: FieldMapping::new([
                FieldRule::new(ContactField::Email, "email"),
                FieldRule::new(ContactField::FirstName, "first"),
                FieldRule::new(ContactField::City, "city"),
            ]),
            begun: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            log: Mutex::new(Vec::new()),
            respond: Box::new(respond),
            push_time: Mutex::new(Duration::ZERO),
        }
    }

    /// The patches of every call, in order.
    fn patches(&self) -> Vec<ContactPatch> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .flat_map(|call| call.patches.clone())
            .collect()
    }

    fn calls(&self) -> Vec<(Instant, Vec<String>)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|call| (call.at, call.source_ids.clone()))
            .collect()
    }
}

/// The values a CRM holds after taking the item.
fn landed(item: &PushItem) -> PushResult {
    Ok(ConfirmedContact {
        values: item
            .patch
            .iter()
            .map(|(field, value)| (field, value.map(str::to_string)))
            .collect(),
        ..ConfirmedContact::default()
    })
}

const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

#[async_trait]
impl SourceAdapter for ScriptedCrm {
    fn system(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch_size: 10,
            customer_links: false,
            request_timeout: REQUEST_TIMEOUT,
            reads_records: true,
            conditional_update: true,
            max_bulk_items: 0,
            default_linger: Duration::ZERO,
        }
    }

    fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }

    fn api_usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().unwrap()
    }

    fn rate_limit_pressure(&self) -> f64 {
        *self.pressure.lock().unwrap()
    }

    fn budget_resets_in(&self) -> Option<Duration> {
        *self.resets_in.lock().unwrap()
    }

    async fn push_if_unmodified(
        &self,
        item: &PushItem,
        unmodified_since: &str,
    ) -> Result<ConditionalPush, AdapterError> {
        self.conditional_versions
            .lock()
            .unwrap()
            .push(unmodified_since.to_string());
        let refuse = self
            .modified_since
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Ok(ConditionalPush::ModifiedSince);
        }
        let result = self.push(std::slice::from_ref(item)).await.remove(0);
        result.map(ConditionalPush::Landed)
    }

    async fn push(&self, items: &[PushItem]) -> Vec<PushResult> {
        self.begun.fetch_add(1, Ordering::SeqCst);
        let push_time = *self.push_time.lock().unwrap();
        tokio::time::sleep(push_time).await;
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(Call {
            at: Instant::now(),
            source_ids: items.iter().map(|item| item.source_id.clone()).collect(),
            patches: items.iter().map(|item| item.patch.clone()).collect(),
        });
        items
            .iter()
            .map(|item| (self.respond)(call, item))
            .collect()
    }

    async fn pull(&self, _cursor: Option<&str>) -> Result<ContactPage, AdapterError> {
        Ok(ContactPage::default())
    }

    async fn read(&self, source_ids: &[String]) -> Result<Vec<SourceContact>, AdapterError> {
        let current = self.current.lock().unwrap();
        Ok(source_ids
            .iter()
            .filter_map(|id| {
                Some(SourceContact {
                    source_id: id.clone(),
                    values: current.get(id)?.clone(),
                    crm_version: Some("2026-11-28T12:00:00Z".into()),
                    ..SourceContact::default()
                })
            })
            .collect())
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    crm: Arc<ScriptedCrm>,
    connection: Arc<Connection>,
    stop: watch::Sender<bool>,
}

impl World {
    fn new(crm: ScriptedCrm, dispatch: DispatchConfig) -> World {
        World::with_policy(crm, dispatch, OnConflict::Overwrite)
    }

    fn with_policy(crm: ScriptedCrm, dispatch: DispatchConfig, on_conflict: OnConflict) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        let crm = Arc::new(crm);
        let settings = settings(dispatch, on_conflict);
        let connection = Arc::new(Connection::new(settings, crm.clone()));
        let (stop, stopped) = watch::channel(false);
        let seat = Arc::new(leadership::Seat::new(Role::Lead));
        tokio::spawn(run(store.clone(), connection.clone(), seat, stopped));
        World {
            _dir: dir,
            store,
            crm,
            connection,
            stop,
        }
    }

    /// Registers contact `id` (source id `src-ID`) and accepts an edit of its first name.
    async fn edit(&self, id: &str, first_name: &str) {
        self.accept(id, &[(ContactField::FirstName, Some(first_name))])
            .await;
    }

    /// Registers contact `id` (source id `src-ID`) as the CRM holds it, with `values`.
    async fn register(&self, id: &str, values: &[(ContactField, &str)]) {
        let mut contact = UnifiedContact::new(id, "scripted", format!("src-{id}"));
        for (field, value) in values {
            contact.set_field(*field, Some(value.to_string()));
        }
        self.store.upsert_contact("crm", contact).await.unwrap();
    }

    /// Accepts an edit of contact `id`, registering it first when it is new.
    async fn accept(&self, id: &str, values: &[(ContactField, Option<&str>)]) {
        if self.store.contact(id).await.unwrap().is_none() {
            self.register(id, &[]).await;
        }
        self.store.accept(id, &patch(values), "crm").await.unwrap();
        self.store.flush().await.unwrap();
        self.connection.wake.notify_one();
    }

    async fn synced(&self, id: &str) -> bool {
        let entry = self.store.contact(id).await.unwrap().unwrap();
        entry.sync.last_confirmed_at.is_some() && !entry.sync.has_unconfirmed_changes()
    }

    /// Whether contacts `c0` to `c{n-1}` are synced.
    async fn all_synced(&self, n: usize) -> bool {
        for n in 0..n {
            if !self.synced(&format!("c{n}")).await {
                return false;
            }
        }
        true
    }

    async fn confirmed_first_name(&self, id: &str) -> Option<String> {
        let entry = self.store.contact(id).await.unwrap().unwrap();
        entry.base.get(&ContactField::FirstName).cloned().flatten()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The scripted connection's settings.
fn settings(dispatch: DispatchConfig, on_conflict: OnConflict) -> ConnectionSettings {
    ConnectionSettings {
        name: "crm".into(),
        system: "scripted".into(),
        provider_id: None,
        img_url: None,
        dispatch,
        on_conflict,
        enabled: true,
        provider: ConnectionConfig::new("crm", "scripted", Default::default()),
    }
}

/// Polls `condition` until it holds; panics with `what` after a generous deadline.
async fn wait_until(what: &str, condition: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fast_dispatch() -> DispatchConfig {
    DispatchConfig {
        max_attempts: 3,
        concurrency: 2,
        retry_initial_ms: 10,
        retry_max_ms: 80,
        recovery_grace_ms: 0,
        settle_ms: None,
        max_linger_ms: None,
        reserve_share: 0.1,
        bulk_threshold: 2_000,
    }
}

#[tokio::test]
async fn edits_of_a_push_task_that_panicked_are_queued_again_without_a_restart() {
    let world = World::new(
        ScriptedCrm::new(|call, item| {
            if call == 0 {
                panic!("a bug in the adapter");
            }
            landed(item)
        }),
        fast_dispatch(),
    );
    world.edit("c1", "Ann").await;
    wait_until("the edit landed after the failed task", async || {
        world.synced("c1").await
    })
    .await;
    assert_eq!(
        world.confirmed_first_name("c1").await.as_deref(),
        Some("Ann")
    );
    assert_eq!(world.crm.calls().len(), 2);
    assert_eq!(world.connection.metrics.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_connection_the_crm_refuses_pauses_probes_with_one_edit_and_resumes_by_itself() {
    let refusing = Arc::new(AtomicBool::new(true));
    let crm = ScriptedCrm::new({
        let refusing = refusing.clone();
        move |_, item| {
            if refusing.load(Ordering::SeqCst) {
                Err(AdapterError::misconfigured(
                    "MISSING_SCOPES",
                    "This app hasn't been granted all required scopes to make this call.",
                ))
            } else {
                landed(item)
            }
        }
    });
    let world = World::new(crm, fast_dispatch());
    for n in 0..6 {
        world.edit(&format!("c{n}"), "Ann").await;
    }
    wait_until("three probes were refused", async || {
        world
            .connection
            .pause()
            .is_some_and(|pause| pause.failed_probes >= 3)
    })
    .await;
    let pause = world.connection.pause().unwrap();
    assert_eq!(pause.reason, PauseReason::Misconfigured);
    assert_eq!(pause.code, "MISSING_SCOPES");
    assert!(world.store.dead_letters().await.unwrap().is_empty());
    let calls = world.crm.calls();
    let probes = &calls[calls.len() - 2..];
    assert!(
        probes.iter().all(|(_, ids)| ids.len() == PROBE_BATCH),
        "probes carry one edit: {:?}",
        probes.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>()
    );
    for n in 0..6 {
        let entry = world
            .store
            .contact(&format!("c{n}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            entry.sync.attempts, 0,
            "a refused connection costs no attempt"
        );
    }

    refusing.store(false, Ordering::SeqCst);
    wait_until("every edit landed", async || world.all_synced(6).await).await;
    assert!(world.connection.pause().is_none());
    assert!(world.store.dead_letters().await.unwrap().is_empty());
}

/// A stop (a shutdown, a reload, a hand-off) that comes while a probe is in flight waits for
/// the probe's answer and reconciles it, as for any push: the probe's edit is not left in
/// flight, to be pushed again after a grace.
#[tokio::test]
async fn a_stop_during_a_probe_waits_for_its_answer() {
    let crm = ScriptedCrm::new(|call, item| match call {
        0 => Err(AdapterError::misconfigured(
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call.",
        )),
        _ => landed(item),
    });
    *crm.push_time.lock().unwrap() = Duration::from_millis(300);
    let world = World::new(crm, fast_dispatch());
    world.edit("c1", "Ann").await;
    wait_until("the probe is in flight", async || {
        world.crm.begun.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(world.connection.pause().is_some(), "a probe, not a push");
    let _ = world.stop.send(true);
    wait_until("the dispatcher stopped", async || {
        world.stop.receiver_count() == 0
    })
    .await;
    let entry = world.store.contact("c1").await.unwrap().unwrap();
    assert!(entry.sync.in_flight.is_none(), "reconciled before the stop");
    assert!(world.synced("c1").await);
    assert_eq!(world.crm.calls().len(), 2);
}

#[tokio::test]
async fn after_an_unknown_outcome_the_contact_waits_the_settle_time_before_its_next_push() {
    let settle = Duration::from_millis(400);
    let world = World::new(
        ScriptedCrm::new(|call, item| {
            if call == 0 {
                Err(AdapterError::outcome_unknown(
                    "TIMEOUT",
                    "operation timed out",
                ))
            } else {
                landed(item)
            }
        }),
        DispatchConfig {
            settle_ms: Some(settle.as_millis() as u64),
            ..fast_dispatch()
        },
    );
    world.edit("c1", "Old").await;
    wait_until("the first push went out", async || {
        !world.crm.calls().is_empty()
    })
    .await;
    world.edit("c1", "New").await;
    wait_until("the newer value landed", async || {
        world.confirmed_first_name("c1").await.as_deref() == Some("New")
    })
    .await;
    let calls = world.crm.calls();
    assert_eq!(calls.len(), 2, "the retry carries both edits, coalesced");
    let waited = calls[1].0 - calls[0].0;
    assert!(
        waited >= settle,
        "the next push went {waited:?} after the unanswered one, before the settle time"
    );
}

#[test]
fn the_settle_time_defaults_to_twice_the_request_timeout_and_covers_recovery() {
    let connection = Connection::new(
        settings(
            DispatchConfig {
                recovery_grace_ms: 50,
                ..fast_dispatch()
            },
            OnConflict::Overwrite,
        ),
        Arc::new(ScriptedCrm::new(|_, item| landed(item))),
    );
    assert_eq!(connection.settle_time(), 2 * REQUEST_TIMEOUT);
    assert_eq!(connection.recovery_grace(), 2 * REQUEST_TIMEOUT);
}

#[test]
fn the_linger_stretches_as_the_daily_budget_runs_low() {
    let crm = Arc::new(ScriptedCrm::new(|_, item| landed(item)));
    let connection = Connection::new(
        settings(
            DispatchConfig {
                max_linger_ms: Some(1000),
                ..fast_dispatch()
            },
            OnConflict::Overwrite,
        ),
        crm.clone(),
    );
    let at = |used: u64| {
        *crm.usage.lock().unwrap() = Some(ApiUsage { used, limit: 100 });
        connection.linger()
    };
    assert_eq!(at(10), Duration::from_secs(1), "plenty left");
    assert_eq!(at(50), Duration::from_secs(1));
    assert_eq!(at(75), Duration::from_millis(2500));
    assert_eq!(at(100), Duration::from_secs(4), "at most four times");
}

#[test]
fn a_connection_without_linger_lingers_while_its_rate_limit_binds() {
    let crm = Arc::new(ScriptedCrm::new(|_, item| landed(item)));
    let no_linger = DispatchConfig {
        max_linger_ms: Some(0),
        ..fast_dispatch()
    };
    let connection = Connection::new(settings(no_linger, OnConflict::Overwrite), crm.clone());
    let at = |pressure: f64| {
        *crm.pressure.lock().unwrap() = pressure;
        connection.linger()
    };
    assert_eq!(at(0.0), Duration::ZERO);
    assert_eq!(at(0.5), Duration::ZERO, "half the window left: no wait");
    assert_eq!(at(0.75), PRESSURE_LINGER / 2);
    assert_eq!(at(1.0), PRESSURE_LINGER);
}

/// A patch from field values (`None` clears).
fn patch(values: &[(ContactField, Option<&str>)]) -> ContactPatch {
    values
        .iter()
        .map(|(field, value)| (*field, value.map(str::to_string)))
        .collect()
}

#[tokio::test]
async fn an_edit_the_crm_holds_already_is_confirmed_without_a_call() {
    let world = World::new(ScriptedCrm::new(|_, item| landed(item)), fast_dispatch());
    world
        .register(
            "c1",
            &[
                (ContactField::Email, "ann@example.com"),
                (ContactField::FirstName, "Ann"),
            ],
        )
        .await;
    world
        .accept(
            "c1",
            &[
                (ContactField::Email, Some("ann@example.com")),
                (ContactField::FirstName, Some("Ann")),
                (ContactField::City, Some("")),
            ],
        )
        .await;
    wait_until("the edit is confirmed", async || world.synced("c1").await).await;
    assert!(
        world.crm.calls().is_empty(),
        "no call for values the CRM holds"
    );
    let entry = world.store.contact("c1").await.unwrap().unwrap();
    assert!(!entry.contact.local_was_updated);
    assert_eq!(entry.contact.city, None, "the CRM's clear stands");
    assert_eq!(
        world
            .connection
            .metrics
            .edits_unchanged
            .load(Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn only_the_changed_field_of_an_edit_is_sent() {
    let world = World::new(ScriptedCrm::new(|_, item| landed(item)), fast_dispatch());
    world
        .register(
            "c1",
            &[
                (ContactField::Email, "ann@example.com"),
                (ContactField::FirstName, "Ann"),
                (ContactField::City, "Lisbon"),
            ],
        )
        .await;
    world
        .accept(
            "c1",
            &[
                (ContactField::Email, Some("ann@example.com")),
                (ContactField::FirstName, Some("Anna")),
                (ContactField::City, Some("Lisbon")),
            ],
        )
        .await;
    wait_until("the edit is confirmed", async || world.synced("c1").await).await;
    assert_eq!(
        world.crm.patches(),
        [patch(&[(ContactField::FirstName, Some("Anna"))])]
    );
    let entry = world.store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.contact.first_name.as_deref(), Some("Anna"));
    assert_eq!(entry.contact.city.as_deref(), Some("Lisbon"));
    assert_eq!(
        world
            .connection
            .metrics
            .fields_unchanged
            .load(Ordering::SeqCst),
        2
    );
}

/// A person changed `contact_1`'s first name to "Anne" in the CRM after unisync confirmed
/// "Ann"; the world's edit renames her "Ours" and moves her to Porto.
async fn person_and_edit_collide(on_conflict: OnConflict) -> World {
    person_and_edit_collide_moving(on_conflict, 0).await
}

/// [`person_and_edit_collide`], the record moving again `moves` times between the conflict
/// check's read and the conditional write.
async fn person_and_edit_collide_moving(on_conflict: OnConflict, moves: u32) -> World {
    let crm = ScriptedCrm::new(|_, item| landed(item));
    crm.modified_since.store(moves, Ordering::SeqCst);
    crm.current.lock().unwrap().insert(
        "src-c1".into(),
        [
            (ContactField::FirstName, Some("Anne".to_string())),
            (ContactField::City, Some("Lisbon".to_string())),
        ]
        .into(),
    );
    let world = World::with_policy(crm, fast_dispatch(), on_conflict);
    world
        .register(
            "c1",
            &[
                (ContactField::FirstName, "Ann"),
                (ContactField::City, "Lisbon"),
            ],
        )
        .await;
    world
        .accept(
            "c1",
            &[
                (ContactField::FirstName, Some("Ours")),
                (ContactField::City, Some("Porto")),
            ],
        )
        .await;
    world
}

#[tokio::test]
async fn under_crm_wins_a_persons_edit_stays_and_goes_into_the_unified_record() {
    let world = person_and_edit_collide(OnConflict::CrmWins).await;
    wait_until("the edit is confirmed", async || world.synced("c1").await).await;
    assert_eq!(
        world.crm.patches(),
        [patch(&[(ContactField::City, Some("Porto"))])],
        "the other field goes through"
    );
    let entry = world.store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.contact.first_name.as_deref(), Some("Anne"));
    assert_eq!(entry.contact.city.as_deref(), Some("Porto"));
    assert_eq!(
        world.confirmed_first_name("c1").await.as_deref(),
        Some("Anne")
    );
    assert_eq!(world.connection.metrics.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!(
        world.connection.metrics.read_calls.load(Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn under_overwrite_ours_is_written_without_reading() {
    let world = person_and_edit_collide(OnConflict::Overwrite).await;
    wait_until("the edit is confirmed", async || world.synced("c1").await).await;
    assert_eq!(
        world.crm.patches(),
        [patch(&[
            (ContactField::FirstName, Some("Ours")),
            (ContactField::City, Some("Porto"))
        ])]
    );
    assert_eq!(
        world.connection.metrics.read_calls.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_lone_edit_is_written_against_the_version_read_and_read_again_when_it_moved() {
    let world = person_and_edit_collide_moving(OnConflict::CrmWins, 1).await;
    wait_until("the edit is confirmed", async || world.synced("c1").await).await;
    assert_eq!(
        *world.crm.conditional_versions.lock().unwrap(),
        ["2026-11-28T12:00:00Z", "2026-11-28T12:00:00Z"],
        "written against the version read, twice: refused once, then read again"
    );
    assert_eq!(
        world.connection.metrics.read_calls.load(Ordering::SeqCst),
        2
    );
    assert_eq!(
        world
            .connection
            .metrics
            .modified_since_read
            .load(Ordering::SeqCst),
        1
    );
    let entry = world.store.contact("c1").await.unwrap().unwrap();
    assert_eq!(entry.sync.attempts, 0, "a moved record costs no attempt");
}

#[tokio::test]
async fn a_partial_batch_lingers_for_more_edits_and_a_full_one_goes_at_once() {
    let linger = Duration::from_secs(2);
    let world = World::new(
        ScriptedCrm::new(|_, item| landed(item)),
        DispatchConfig {
            max_linger_ms: Some(linger.as_millis() as u64),
            concurrency: 1,
            ..fast_dispatch()
        },
    );
    let started = Instant::now();
    for n in 0..13 {
        world.edit(&format!("c{n}"), "Ann").await;
    }
    wait_until("every edit landed", async || world.all_synced(13).await).await;
    let calls = world.crm.calls();
    let sizes: Vec<usize> = calls.iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(
        sizes,
        [10, 3],
        "a full batch, then the rest after lingering"
    );
    assert!(
        calls[1].0 - started >= linger,
        "the partial batch waited for more edits"
    );
}

#[tokio::test]
async fn the_reserve_of_the_daily_budget_is_left_to_others_until_it_resets() {
    let crm = ScriptedCrm::new(|_, item| landed(item));
    *crm.usage.lock().unwrap() = Some(ApiUsage {
        used: 95,
        limit: 100,
    });
    *crm.resets_in.lock().unwrap() = Some(Duration::from_millis(300));
    let world = World::new(crm, fast_dispatch());
    world.edit("c1", "Ann").await;
    wait_until("the connection pauses at the reserve", async || {
        world
            .connection
            .pause()
            .is_some_and(|pause| pause.code == "BUDGET_RESERVE")
    })
    .await;
    let pause = world.connection.pause().unwrap();
    assert_eq!(pause.reason, PauseReason::QuotaExhausted);
    assert!(pause.message.contains("95 of 100"), "{}", pause.message);
    assert!(
        world.crm.calls().is_empty(),
        "nothing pushed into the reserve"
    );

    // The budget resets: the next reading shows it.
    *world.crm.usage.lock().unwrap() = Some(ApiUsage {
        used: 0,
        limit: 100,
    });
    wait_until("the edit lands after the reset", async || {
        world.synced("c1").await
    })
    .await;
    assert_eq!(world.crm.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_push_longer_than_its_lease_keeps_it_while_it_runs() {
    use crate::store::tests::{TEST_LEASE_MS, TestSchema};
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let other = schema.clone();
    schema
        .run(|store| async move {
            let crm = Arc::new(ScriptedCrm::new(|_, item| landed(item)));
            // Three leases long: only renewals keep the edit this node's.
            *crm.push_time.lock().unwrap() = Duration::from_millis(3 * TEST_LEASE_MS);
            let connection = Arc::new(Connection::new(
                settings(fast_dispatch(), OnConflict::Overwrite),
                crm.clone(),
            ));
            let contact = UnifiedContact::new("c1", "scripted", "src-c1");
            store.upsert_contact("crm", contact).await.unwrap();
            store
                .accept("c1", &patch(&[(ContactField::City, Some("Long"))]), "crm")
                .await
                .unwrap();
            let (stop, stopped) = watch::channel(false);
            let seat = Arc::new(leadership::Seat::new(Role::Lead));
            let dispatcher = tokio::spawn(run(store.clone(), connection, seat, stopped));
            let another_node = other.store().await;
            let started = Instant::now();
            // Claimed (and leased) by the dispatcher: the push is running.
            while store.in_flight_counts().await.unwrap().get("crm") != Some(&1) {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no push started"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(2 * TEST_LEASE_MS) {
                assert!(
                    another_node
                        .claim("crm", now_ms(), 10)
                        .await
                        .unwrap()
                        .is_empty(),
                    "another node took the edit of a push still running"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            while store
                .contact("c1")
                .await
                .unwrap()
                .unwrap()
                .contact
                .local_was_updated
            {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the edit never landed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(crm.calls.load(Ordering::SeqCst), 1, "pushed once");
            let _ = stop.send(true);
            dispatcher.await.unwrap();
        })
        .await;
}
