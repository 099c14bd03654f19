//! `unisync backfill`: push every edit of a JSONL file, show progress, print a summary.
//!
//! Every valid edit is accepted into the store first, then the connections' dispatchers run
//! until each touched contact is confirmed, dead-lettered or parked behind a paused
//! connection. Queueing everything first is what lets pushes go out in full batches.
//!
//! Lines are read and checked in order; their accepts run [`ACCEPTS_IN_FLIGHT`] at a time, as
//! concurrent PUTs do: on sled they share the accept pipeline's transactions and flushes, on
//! PostgreSQL the pool's connections. A line whose contact (or edit id) has an accept in flight
//! waits for every accept in flight first, so that a contact's edits land in file order and
//! each is checked against the record as the edits before it left it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::connections::{Connections, PauseReason};
use crate::dispatcher::Dispatchers;
use crate::edits::{CheckedEdit, EditRejected, check_edit};
use crate::ops::PauseView;
use crate::store::{Store, StoreError, now_ms};

pub struct BackfillOptions {
    pub input: String,
    pub dry_run: bool,
    pub report: Option<PathBuf>,
}

/// A line the backfill refused: its number (from 1) and why.
#[derive(Debug, Serialize)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// What a backfill did, printed and written to `--report`.
#[derive(Debug, Default, Serialize)]
pub struct BackfillReport {
    pub lines: u64,
    pub accepted: u64,
    pub duplicates_skipped: u64,
    pub invalid: Vec<LineError>,
    pub contacts: u64,
    pub landed: u64,
    pub dead_letters: Vec<crate::ops::DeadLetterView>,
    /// Contacts whose edits wait behind a paused connection (kept in the queue for the daemon).
    pub left_queued: u64,
    pub paused_connections: BTreeMap<String, PauseView>,
    pub elapsed_ms: u64,
    /// Of which: checking and accepting every line into the store.
    pub accept_ms: u64,
    /// Of which: pushing until every contact settled.
    pub push_ms: u64,
    pub contacts_per_second: f64,
    pub push_calls: u64,
    pub dry_run: bool,
}

impl BackfillReport {
    pub fn failed(&self) -> bool {
        !self.invalid.is_empty() || !self.dead_letters.is_empty() || self.left_queued > 0
    }
}

pub async fn backfill(
    config: &Config,
    input: &[u8],
    options: &BackfillOptions,
) -> Result<BackfillReport, String> {
    let store = Store::open_configured(&config.storage).await.map_err(|error| match error {
        StoreError::Locked(path) => format!(
            "the store at {} is held by a running unisync daemon: stop it for the backfill, or send the edits to its API",
            path.display()
        ),
        other => other.to_string(),
    })?;
    let settings = config.connections().map_err(|e| e.to_string())?;
    let connections = Arc::new(Connections::build(settings, &store)?);
    crate::serve::recover_in_flight(&store, &connections, config.dispatch.recovery_grace_ms)
        .await?;
    let started = Instant::now();
    let started_ms = now_ms();
    let mut report = BackfillReport {
        dry_run: options.dry_run,
        ..BackfillReport::default()
    };
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut accepts = Accepts::default();
    for (index, line) in input.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.lines += 1;
        let number = index as u64 + 1;
        let read = match parse_line(line) {
            Ok(read) => read,
            Err(message) => {
                report.invalid.push(LineError {
                    line: number,
                    message,
                });
                continue;
            }
        };
        if accepts.holds(&read) {
            while let Some(done) = accepts.next().await {
                report.count(done, &mut touched)?;
            }
        } else if accepts.len() >= ACCEPTS_IN_FLIGHT
            && let Some(done) = accepts.next().await
        {
            report.count(done, &mut touched)?;
        }
        match check_line(&store, &connections, read).await {
            Ok(None) => report.duplicates_skipped += 1,
            Ok(Some(checked)) if options.dry_run => {
                report.count((number, Ok(checked.contact_id)), &mut touched)?
            }
            Ok(Some(checked)) => accepts.start(&store, number, checked),
            Err(rejected) => report.count((number, Err(rejected)), &mut touched)?,
        }
    }
    while let Some(done) = accepts.next().await {
        report.count(done, &mut touched)?;
    }
    // An accept's refusal is counted when it ends, after lines read later.
    report.invalid.sort_by_key(|refused| refused.line);
    report.contacts = touched.len() as u64;
    if options.dry_run {
        return Ok(report);
    }
    store.flush().await.map_err(|e| e.to_string())?;
    report.accept_ms = started.elapsed().as_millis() as u64;
    let pushing = Instant::now();
    let dispatchers = Dispatchers::start(&store, &connections, false);
    let parked = wait_until_settled(&store, &connections, touched.clone()).await?;
    dispatchers.stop().await;
    report.push_ms = pushing.elapsed().as_millis() as u64;
    store.flush().await.map_err(|e| e.to_string())?;

    for letter in store.dead_letters().await.map_err(|e| e.to_string())? {
        if letter.failed_at >= started_ms && touched.contains(&letter.contact_id) {
            report
                .dead_letters
                .push(crate::ops::DeadLetterView::new(&letter));
        }
    }
    report.left_queued = parked.len() as u64;
    report.landed = report.contacts - report.left_queued - report.dead_letters.len() as u64;
    for connection in connections.iter() {
        report.push_calls += connection
            .metrics
            .push_calls
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Some(pause) = connection
            .pause()
            .filter(|p| p.reason != PauseReason::RateLimited)
        {
            report
                .paused_connections
                .insert(connection.name().to_string(), PauseView::new(&pause));
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.contacts_per_second = report.contacts as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(report)
}

/// Accepts in flight at once.
const ACCEPTS_IN_FLIGHT: usize = 256;

/// What became of a line whose accept ran: its number, and its contact's id or why not.
type AcceptDone = (u64, Result<String, LineRejected>);

impl BackfillReport {
    /// Counts a line's outcome; a failed store stops the backfill.
    fn count(
        &mut self,
        (line, outcome): AcceptDone,
        touched: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        match outcome {
            Ok(contact_id) => {
                self.accepted += 1;
                touched.insert(contact_id);
            }
            Err(LineRejected::Invalid(message)) => self.invalid.push(LineError { line, message }),
            Err(LineRejected::StoreFailed(error)) => return Err(format!("line {line}: {error}")),
        }
        Ok(())
    }
}

/// The accepts in flight, with the contacts and edit ids they are for.
#[derive(Default)]
struct Accepts {
    tasks: tokio::task::JoinSet<AcceptDone>,
    contacts: HashSet<String>,
    edit_ids: HashSet<String>,
}

/// A line checked and ready to be accepted.
struct CheckedLine {
    contact_id: String,
    edit_id: Option<String>,
    edit: CheckedEdit,
}

impl Accepts {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether an accept in flight is for the line's contact or carries its edit id.
    fn holds(&self, line: &BackfillLine) -> bool {
        self.contacts.contains(&line.contact_id)
            || line
                .edit_id
                .as_ref()
                .is_some_and(|id| self.edit_ids.contains(id))
    }

    /// Accepts line `number`'s edit durably, then remembers its edit id.
    fn start(&mut self, store: &Store, number: u64, line: CheckedLine) {
        self.contacts.insert(line.contact_id.clone());
        self.edit_ids.extend(line.edit_id.clone());
        let store = store.clone();
        self.tasks.spawn(async move {
            let accepted = async {
                store
                    .accept_durable(
                        &line.contact_id,
                        &line.edit.patch,
                        line.edit.connection.name(),
                    )
                    .await?;
                if let Some(edit_id) = &line.edit_id {
                    store.remember_edit(edit_id).await?;
                }
                Ok::<_, StoreError>(line.contact_id)
            };
            (number, accepted.await.map_err(LineRejected::from))
        });
    }

    /// The next accept to end (`None`: none in flight). The keys of the accepts in flight are
    /// forgotten once none is left (a line that waits for one waits for all).
    async fn next(&mut self) -> Option<AcceptDone> {
        let done = self.tasks.join_next().await?;
        if self.tasks.is_empty() {
            self.contacts.clear();
            self.edit_ids.clear();
        }
        Some(done.expect("an accept task never panics"))
    }
}

/// Why a line was not accepted: its own fault (reported, the backfill goes on), or the
/// store's failure (the backfill stops).
enum LineRejected {
    Invalid(String),
    StoreFailed(StoreError),
}

impl From<String> for LineRejected {
    fn from(message: String) -> Self {
        LineRejected::Invalid(message)
    }
}

impl From<&str> for LineRejected {
    fn from(message: &str) -> Self {
        LineRejected::Invalid(message.to_string())
    }
}

impl From<StoreError> for LineRejected {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Failed(_) => LineRejected::StoreFailed(error),
            other => LineRejected::Invalid(other.to_string()),
        }
    }
}

/// One backfill line, read: the contact it edits, its edit id (for exactly-once re-runs) and
/// the update body (the line without those two keys).
#[derive(Debug)]
struct BackfillLine {
    contact_id: String,
    edit_id: Option<String>,
    body: Value,
}

/// Reads a line without looking at the store; a line it refuses is named by why.
fn parse_line(line: &[u8]) -> Result<BackfillLine, String> {
    let mut body: Value =
        serde_json::from_slice(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let object = body
        .as_object_mut()
        .ok_or("the line must be a JSON object")?;
    let contact_id = match object.remove("unified_contact_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err("`unified_contact_id` is required (a string)".into()),
    };
    let edit_id = match object.remove("edit_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err("`edit_id` must be a string".into()),
    };
    Ok(BackfillLine {
        contact_id,
        edit_id,
        body,
    })
}

/// Checks a read line against the store: `None` when its edit id was accepted before.
async fn check_line(
    store: &Store,
    connections: &Connections,
    line: BackfillLine,
) -> Result<Option<CheckedLine>, LineRejected> {
    let BackfillLine {
        contact_id,
        edit_id,
        body,
    } = line;
    if let Some(edit_id) = &edit_id
        && store.edit_seen(edit_id).await?
    {
        return Ok(None);
    }
    let entry = store
        .contact(&contact_id)
        .await?
        .ok_or_else(|| format!("no unified contact with id `{contact_id}`"))?;
    let edit = check_edit(store, connections, &entry.contact, &body)
        .await
        .map_err(|rejected| match rejected {
            EditRejected::Invalid(violations) => LineRejected::Invalid(
                violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            EditRejected::Store(error) => error.into(),
        })?;
    Ok(Some(CheckedLine {
        contact_id,
        edit_id,
        edit,
    }))
}

/// Waits until every touched contact is settled (nothing pending or in flight), or parked
/// behind a connection that paused for a reason that will not pass soon. Answers the parked.
async fn wait_until_settled(
    store: &Store,
    connections: &Connections,
    mut remaining: BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    let progress = indicatif::ProgressBar::new(remaining.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} contacts  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let total = remaining.len() as u64;
    loop {
        let mut parked = BTreeSet::new();
        let mut settled = Vec::new();
        for id in &remaining {
            let Some(entry) = store.contact(id).await.map_err(|e| e.to_string())? else {
                settled.push(id.clone());
                continue;
            };
            let sync = &entry.sync;
            if sync.pending.is_none() && sync.in_flight.is_none() {
                settled.push(id.clone());
            } else if sync.in_flight.is_none()
                && let Some(connection) = sync
                    .connection
                    .as_deref()
                    .and_then(|name| connections.get(name))
                && (!connection.settings.enabled
                    || connection
                        .pause()
                        .is_some_and(|p| p.reason != PauseReason::RateLimited))
            {
                parked.insert(id.clone());
            }
        }
        for id in settled {
            remaining.remove(&id);
        }
        progress.set_position(total - remaining.len() as u64);
        if remaining.is_empty() || remaining.len() == parked.len() {
            progress.finish_and_clear();
            return Ok(parked);
        }
        // Makes the outcomes so far durable, and stops the backfill if the store failed.
        store.flush().await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backfill line parser's property, one check shared by the proptests below and the
/// `backfill_line` fuzz target (the repository's `fuzz/` folder): any bytes are read without
/// panicking, into the contact id, the edit id and the rest of the object as the body, exactly
/// when the line is a JSON object with a non-empty string `unified_contact_id` and an `edit_id`
/// that is absent, `null` or a string; any other line is refused with a reason
/// ([`LineRejected::Invalid`]: the backfill reports it by number and goes on).
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties {
    use super::*;

    /// Runs [`parse_line`] on `line`; panics if the property does not hold.
    pub fn check_backfill_line(line: &[u8]) {
        let sent: Option<Value> = serde_json::from_slice(line).ok();
        let object = sent.as_ref().and_then(Value::as_object);
        let contact_id = object.and_then(|object| object.get("unified_contact_id"));
        let edit_id = object.map(|object| object.get("edit_id"));
        let readable = matches!(contact_id, Some(Value::String(id)) if !id.is_empty())
            && matches!(edit_id, Some(None | Some(Value::Null | Value::String(_))));
        let shown = String::from_utf8_lossy(line);
        match (parse_line(line), object) {
            (Ok(read), Some(object)) => {
                assert!(readable, "read {read:?} from {shown}");
                assert_eq!(contact_id.and_then(Value::as_str), Some(&*read.contact_id));
                assert_eq!(
                    edit_id.flatten().and_then(Value::as_str),
                    read.edit_id.as_deref()
                );
                let mut rest = object.clone();
                rest.remove("unified_contact_id");
                rest.remove("edit_id");
                assert_eq!(read.body, Value::Object(rest), "{shown}");
            }
            (Ok(read), None) => panic!("read {read:?} from a line that is no object: {shown}"),
            (Err(reason), _) => {
                assert!(!readable, "a readable line refused ({reason}): {shown}");
                assert!(!reason.is_empty(), "refused without a reason: {shown}");
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;
        use serde_json::json;

        use super::*;

        /// A JSON object with every kind of contact id and edit id, and a body field.
        fn json_line() -> impl Strategy<Value = Vec<u8>> {
            let id = prop_oneof![
                Just(Value::Null),
                "\\PC{0,10}".prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
            ];
            let edit_id = prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                "\\PC{0,10}".prop_map(|id| Some(Value::from(id))),
                any::<bool>().prop_map(|b| Some(Value::from(b))),
            ];
            (prop::option::of(id), edit_id, "\\PC{0,20}").prop_map(
                |(contact_id, edit_id, first_name)| {
                    let mut line = json!({"first_name": first_name});
                    if let Some(contact_id) = contact_id {
                        line["unified_contact_id"] = contact_id;
                    }
                    if let Some(edit_id) = edit_id {
                        line["edit_id"] = edit_id;
                    }
                    line.to_string().into_bytes()
                },
            )
        }

        proptest! {
            #[test]
            fn any_bytes_are_a_line_or_a_reason(
                line in prop::collection::vec(any::<u8>(), 0..200)
            ) {
                check_backfill_line(&line);
            }

            #[test]
            fn json_lines_are_read_or_refused_by_their_keys(line in json_line()) {
                check_backfill_line(&line);
            }
        }
    }
}
