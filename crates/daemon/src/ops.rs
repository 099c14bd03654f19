//! Operator actions on the store, shared by the CLI (store opened locally) and the admin API
//! (the running daemon's store). Each answers a typed report: the admin API sends it as JSON,
//! the CLI reads it back into the same type and shows it as a table or, with `--json`, as is.

use std::collections::BTreeMap;
use std::io::BufRead;

use unisync_core::{ContactField, ContactPatch, UnifiedContact};

use crate::conflict::FieldConflict;
use crate::connections::{Connections, PauseReason};
use crate::store::{
    ConnectionCounts, Customer, DeadLetter, LetterKind, ReplayAttempt, Store, StoreError, now_ms,
};
use crate::timefmt::{local, rfc3339};

/// The outcome of a JSONL import: how many lines were registered, and each line refused.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub imported: u64,
    pub failed: Vec<RefusedLine>,
}

/// A line of an import that was not registered: its number (from 1), why in one word, and
/// the reason in full.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RefusedLine {
    pub line: u64,
    pub code: LineRefusal,
    pub message: String,
}

/// Why an import line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineRefusal {
    /// Its bytes are not UTF-8.
    NotUtf8,
    /// Longer than the server's `max_body_bytes`.
    TooLong,
    /// Not JSON.
    MalformedJson,
    /// JSON, but not a record: a required key missing, an unknown key, a value of the
    /// wrong type.
    InvalidRecord,
    /// A key that must hold a value is empty or blank (`id`, `source_id`, and a contact's
    /// `source_system`).
    EmptyField,
    /// No configured connection takes it (its `external_system_config_id`, or its
    /// `source_system` served by none or by several).
    Unroutable,
    /// A `source_id` its CRM could not have issued.
    InvalidSourceId,
    /// Its connection's record is already another unified contact.
    SourceIdTaken,
}

impl LineRefusal {
    /// The refusal of a line that did not read as the record (not JSON, or not its shape).
    fn of_json(error: &serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => LineRefusal::InvalidRecord,
            _ => LineRefusal::MalformedJson,
        }
    }
}

/// Why a line was not registered: the refusal and the reason.
type Refused = (LineRefusal, String);

/// An import that registers nothing because it holds no record (an empty or blank input is
/// almost always the wrong file or a broken pipe, not an import of nothing).
#[derive(Debug, thiserror::Error)]
#[error("the input holds no record (every line is empty)")]
pub struct EmptyImport;

/// What a JSONL import registers: unified contacts (each routed by the connections) or
/// unified customers, upserting by `id`.
#[derive(Clone, Copy)]
pub enum Import<'a> {
    /// Each contact is a record of the connection the daemon routes it to (its
    /// `external_system_config_id`, else the one connection of its `source_system`), its
    /// `source_id` in that CRM's canonical form. A line is refused when it cannot be routed,
    /// when its source id is one the CRM could not have issued, or when its connection's
    /// record is already another unified contact.
    Contacts(&'a Connections),
    Customers,
}

/// A JSONL import, fed one line at a time (so that the admin API registers a body as it
/// arrives, whatever its size), reporting each refused line by number and going on: lines
/// are upserted by `id`, so importing the input again once its bad lines are mended is safe.
pub struct Importer<'a> {
    store: &'a Store,
    what: Import<'a>,
    report: ImportReport,
}

impl<'a> Importer<'a> {
    pub fn new(store: &'a Store, what: Import<'a>) -> Self {
        Importer {
            store,
            what,
            report: ImportReport::default(),
        }
    }

    /// Registers line `number` (blank lines are skipped); `Err` only when the store fails.
    pub async fn line(&mut self, number: u64, line: &str) -> Result<(), StoreError> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let outcome = match self.what {
            Import::Contacts(connections) => match serde_json::from_str(line) {
                Ok(contact) => import_contact(self.store, connections, contact).await?,
                Err(err) => Err((LineRefusal::of_json(&err), err.to_string())),
            },
            Import::Customers => match serde_json::from_str::<Customer>(line) {
                Ok(customer)
                    if customer.id.trim().is_empty() || customer.source_id.trim().is_empty() =>
                {
                    Err((
                        LineRefusal::EmptyField,
                        "`id` and `source_id` must not be empty".to_string(),
                    ))
                }
                Ok(customer) => self.store.upsert_customer(&customer).await.map(Ok)?,
                Err(err) => Err((LineRefusal::of_json(&err), err.to_string())),
            },
        };
        self.report.add(number, outcome);
        Ok(())
    }

    /// Counts line `number` as refused (a line the reader could not take).
    pub fn refuse(&mut self, number: u64, code: LineRefusal, reason: String) {
        self.report.add(number, Err((code, reason)));
    }

    /// The report, or [`EmptyImport`] when no line held a record.
    pub fn finish(self) -> Result<ImportReport, EmptyImport> {
        let report = self.report;
        if report.imported == 0 && report.failed.is_empty() {
            return Err(EmptyImport);
        }
        Ok(report)
    }
}

/// Registers the JSONL of `input` (see [`Import`]); `Ok(Err(EmptyImport))` when it holds no
/// record.
pub async fn import(
    store: &Store,
    what: Import<'_>,
    input: impl BufRead,
) -> Result<Result<ImportReport, EmptyImport>, StoreError> {
    let mut importer = Importer::new(store, what);
    for (index, line) in input.lines().enumerate() {
        let number = index as u64 + 1;
        match line {
            Ok(line) => importer.line(number, &line).await?,
            // Read from memory, a line fails only for not being UTF-8.
            Err(err) => importer.refuse(number, LineRefusal::NotUtf8, err.to_string()),
        }
    }
    Ok(importer.finish())
}

/// Registers one contact of an import; `Ok(Err(refused))` for a line refused.
async fn import_contact(
    store: &Store,
    connections: &Connections,
    mut contact: UnifiedContact,
) -> Result<Result<(), Refused>, StoreError> {
    for (key, value) in [
        ("id", &contact.id),
        ("source_system", &contact.source_system),
        ("source_id", &contact.source_id),
    ] {
        if value.trim().is_empty() {
            return Ok(Err((
                LineRefusal::EmptyField,
                format!("`{key}` must not be empty"),
            )));
        }
    }
    let connection = match connections.route(&contact) {
        Ok(connection) => connection,
        Err(reason) => return Ok(Err((LineRefusal::Unroutable, reason))),
    };
    contact.source_id = match connection.adapter().normalize_source_id(&contact.source_id) {
        Ok(source_id) => source_id,
        Err(reason) => {
            let reason = format!("source_id `{}`: {reason}", contact.source_id);
            return Ok(Err((LineRefusal::InvalidSourceId, reason)));
        }
    };
    let id = contact.id.clone();
    match store.upsert_contact(connection.name(), contact).await {
        Ok(()) => Ok(Ok(())),
        Err(error @ StoreError::SourceIdTaken { .. }) => Ok(Err((
            LineRefusal::SourceIdTaken,
            format!("{error}; this line is `{id}`"),
        ))),
        Err(error) => Err(error),
    }
}

impl ImportReport {
    /// Counts line `line` as imported, or keeps why it was not.
    fn add(&mut self, line: u64, outcome: Result<(), Refused>) {
        match outcome {
            Ok(()) => self.imported += 1,
            Err((code, message)) => self.failed.push(RefusedLine {
                line,
                code,
                message,
            }),
        }
    }
}

/// What `status` shows, from the store (queue figures), the config (`disabled`) and, from a
/// running daemon only, each connection's pause and the CRM's API usage.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StatusReport {
    /// Every configured connection (zeros included), and any other the queue still names.
    pub connections: BTreeMap<String, ConnectionCounts>,
    /// Connections the store holds edits for that the config does not have.
    pub unconfigured: Vec<String>,
    /// Configured connections with `enabled = false`: edits kept, nothing pushed.
    pub disabled: Vec<String>,
    /// Connections not pushing right now, with the CRM's words (a running daemon's).
    #[serde(default)]
    pub pauses: BTreeMap<String, PauseView>,
    /// The CRM's API budget, where the adapter reads it (a running daemon's).
    #[serde(default)]
    pub api_usage: BTreeMap<String, ApiUsageView>,
    /// On a shared (PostgreSQL) store: the daemon leading each connection, as it last
    /// reported; a connection missing here has no leader now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leaders: BTreeMap<String, LeaderView>,
}

/// The daemon that pushes a connection's edits, on a shared store.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LeaderView {
    /// The node (host, process id, start time).
    pub node: String,
    /// When it last reported (RFC 3339, UTC).
    pub reported_at: String,
}

/// A connection's pause as operators see it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PauseView {
    /// `rate_limited`, `quota_exhausted`, `unauthorized`, `misconfigured`.
    pub reason: PauseReason,
    /// When it ends, or the next probe goes (RFC 3339, UTC).
    pub until: String,
    /// The same instant in the machine's time zone.
    pub until_local: String,
    pub code: String,
    pub message: String,
}

impl PauseView {
    pub fn new(pause: &crate::connections::Pause) -> Self {
        PauseView {
            reason: pause.reason.clone(),
            until: rfc3339(pause.until_ms),
            until_local: local(pause.until_ms),
            code: pause.code.clone(),
            message: pause.message.clone(),
        }
    }
}

/// API calls used of the CRM's budget.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ApiUsageView {
    pub used: u64,
    pub limit: u64,
}

/// Queue figures per connection: every configured one (zeros included), and any other the
/// queue still names. `in_flight` gives each connection's edits in a push now; `disabled`
/// names the configured connections that push nothing.
pub async fn status(
    store: &Store,
    configured: &[String],
    in_flight: &BTreeMap<String, u64>,
    disabled: Vec<String>,
) -> Result<StatusReport, StoreError> {
    let mut counts = store.counts(now_ms()).await?;
    for name in configured {
        counts.entry(name.clone()).or_default();
    }
    for (name, edits) in in_flight {
        counts.entry(name.clone()).or_default().in_flight = *edits;
    }
    let unconfigured = unconfigured_connections(&counts, configured);
    Ok(StatusReport {
        connections: counts,
        unconfigured,
        disabled,
        ..StatusReport::default()
    })
}

/// Connections the store holds edits or dead letters for that no configured connection
/// serves (renamed or removed from the config): their edits wait and are never pushed until
/// a connection of that name is configured again.
pub fn unconfigured_connections(
    counts: &BTreeMap<String, ConnectionCounts>,
    configured: &[String],
) -> Vec<String> {
    counts
        .iter()
        .filter(|(name, counts)| {
            !configured.contains(name)
                && counts.ready + counts.retry_waiting + counts.in_flight + counts.dead_letters > 0
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// A dead letter as `dead-letters list` and `show` answer it: its `kind` (`refused` by the
/// CRM, or a `conflict` held for an operator, which shows per field `base`, `crm` and
/// `ours`), the edit, and the error.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterView {
    pub id: String,
    pub kind: LetterKind,
    pub contact_id: String,
    pub connection: String,
    pub patch: ContactPatch,
    pub error: LetterError,
    pub attempts: u32,
    /// RFC 3339, UTC.
    pub failed_at: String,
    /// The same instant in the machine's time zone.
    pub failed_at_local: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<BTreeMap<ContactField, FieldConflict>>,
}

/// Why a letter exists: the CRM's code and words, the error's class (`conflict`,
/// `retries_exhausted`, or the adapter's class) and the field the CRM named.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LetterError {
    pub code: String,
    pub message: String,
    pub class: String,
    pub field: Option<String>,
}

impl DeadLetterView {
    pub fn new(letter: &DeadLetter) -> Self {
        let kind = letter.kind();
        let class = match kind {
            LetterKind::Conflict => "conflict",
            LetterKind::Refused if letter.retries_exhausted => "retries_exhausted",
            LetterKind::Refused => crate::store::class_name(&letter.error.kind),
        };
        DeadLetterView {
            id: letter.id.clone(),
            kind,
            contact_id: letter.contact_id.clone(),
            connection: letter.connection.clone(),
            patch: letter.patch.clone(),
            error: LetterError {
                code: letter.error.code.clone(),
                message: letter.error.message.clone(),
                class: class.to_string(),
                field: letter.error.field().map(str::to_string),
            },
            attempts: letter.attempts,
            failed_at: rfc3339(letter.failed_at),
            failed_at_local: local(letter.failed_at),
            conflict: letter.conflict.clone(),
        }
    }
}

/// Every dead letter, as `dead-letters list` answers them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
}

pub async fn list_dead_letters(store: &Store) -> Result<DeadLetterList, StoreError> {
    let letters = store.dead_letters().await?;
    Ok(DeadLetterList {
        dead_letters: letters.iter().map(DeadLetterView::new).collect(),
    })
}

/// What replaying dead letters did, as the admin API and the CLI answer it: the letters
/// whose edit went back in the queue (`retried`), those resolved as `superseded` (every field
/// had a later value), the fields each letter left out because a later value was accepted
/// (`dropped_fields`), and the letters that could not be replayed (`failed`, with why).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplayReport {
    pub retried: Vec<String>,
    pub superseded: Vec<String>,
    pub dropped_fields: BTreeMap<String, Vec<ContactField>>,
    pub failed: BTreeMap<String, String>,
}

impl ReplayReport {
    pub fn new(attempts: &[ReplayAttempt]) -> Self {
        let mut report = ReplayReport::default();
        for attempt in attempts {
            let id = attempt.letter_id.clone();
            match &attempt.outcome {
                Ok(replay) => {
                    if !replay.dropped.is_empty() {
                        report
                            .dropped_fields
                            .insert(id.clone(), replay.dropped.to_vec());
                    }
                    if replay.superseded() {
                        report.superseded.push(id);
                    } else {
                        report.retried.push(id);
                    }
                }
                Err(error) => {
                    report.failed.insert(id, error.to_string());
                }
            }
        }
        report
    }
}

/// The letters `dead-letters drop` forgot.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DropReport {
    pub dropped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use unisync_core::AdapterError;

    use super::*;

    #[test]
    fn each_letter_shows_its_kind_and_a_conflict_letter_each_fields_three_values() {
        // A letter as unisync wrote them before conflict letters: it still loads, as refused.
        let refused: DeadLetter = serde_json::from_value(json!({
            "id": "dl-1", "contact_id": "c1", "connection": "crm", "patch": {"city": "X"},
            "error": AdapterError::permanent("INVALID", "no", Some("city".into())),
            "retries_exhausted": false, "attempts": 1, "failed_at": 5,
        }))
        .unwrap();
        let shown = serde_json::to_value(DeadLetterView::new(&refused)).unwrap();
        assert_eq!(shown["kind"], "refused");
        assert_eq!(shown["error"]["class"], "permanent");
        assert!(shown.get("conflict").is_none(), "{shown}");

        let conflict = FieldConflict {
            base: Some("Lisbon".into()),
            crm: Some("Porto".into()),
            ours: None,
        };
        let held = DeadLetter {
            patch: [(ContactField::City, None)].into_iter().collect(),
            conflict: Some([(ContactField::City, conflict)].into()),
            ..refused
        };
        let shown = serde_json::to_value(DeadLetterView::new(&held)).unwrap();
        assert_eq!(shown["kind"], "conflict");
        assert_eq!(shown["error"]["class"], "conflict");
        assert_eq!(
            shown["conflict"],
            json!({"city": {"base": "Lisbon", "crm": "Porto", "ours": null}})
        );
    }
}
