//! Operator actions on the store, shared by the CLI (store opened locally) and the admin API
//! (the running daemon's store). Each answers JSON, printed as is by the CLI.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde_json::{Value, json};
use unisync_core::UnifiedContact;

use crate::connections::Connections;
use crate::store::{
    ConnectionCounts, Customer, DeadLetter, LetterKind, ReplayAttempt, Store, StoreError, now_ms,
};
use crate::timefmt::rfc3339;

/// The outcome of a JSONL import: how many lines were registered, and each bad line.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub imported: u64,
    pub failed: Vec<LineError>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

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
/// arrives, whatever its size), reporting each bad line by number and going on.
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
                Err(err) => Err(err.to_string()),
            },
            Import::Customers => match serde_json::from_str::<Customer>(line) {
                Ok(customer)
                    if customer.id.trim().is_empty() || customer.source_id.trim().is_empty() =>
                {
                    Err("`id` and `source_id` must not be empty".to_string())
                }
                Ok(customer) => self.store.upsert_customer(&customer).await.map(Ok)?,
                Err(err) => Err(err.to_string()),
            },
        };
        self.report.add(number, outcome);
        Ok(())
    }

    /// Counts line `number` as refused for `reason` (a line the reader could not take).
    pub fn refuse(&mut self, number: u64, reason: String) {
        self.report.add(number, Err(reason));
    }

    pub fn finish(self) -> ImportReport {
        self.report
    }
}

/// Registers the JSONL of `input` (see [`Import`]).
pub async fn import(
    store: &Store,
    what: Import<'_>,
    input: impl BufRead,
) -> Result<ImportReport, StoreError> {
    let mut importer = Importer::new(store, what);
    for (index, line) in input.lines().enumerate() {
        let number = index as u64 + 1;
        match line {
            Ok(line) => importer.line(number, &line).await?,
            Err(err) => importer.refuse(number, err.to_string()),
        }
    }
    Ok(importer.finish())
}

/// Registers one contact of an import; `Ok(Err(reason))` for a line refused.
async fn import_contact(
    store: &Store,
    connections: &Connections,
    mut contact: UnifiedContact,
) -> Result<Result<(), String>, StoreError> {
    for (key, value) in [
        ("id", &contact.id),
        ("source_system", &contact.source_system),
        ("source_id", &contact.source_id),
    ] {
        if value.trim().is_empty() {
            return Ok(Err(format!("`{key}` must not be empty")));
        }
    }
    let connection = match connections.route(&contact) {
        Ok(connection) => connection,
        Err(reason) => return Ok(Err(reason)),
    };
    contact.source_id = match connection.adapter.normalize_source_id(&contact.source_id) {
        Ok(source_id) => source_id,
        Err(reason) => {
            return Ok(Err(format!("source_id `{}`: {reason}", contact.source_id)));
        }
    };
    let id = contact.id.clone();
    match store.upsert_contact(connection.name(), contact).await {
        Ok(()) => Ok(Ok(())),
        Err(error @ StoreError::SourceIdTaken { .. }) => {
            Ok(Err(format!("{error}; this line is `{id}`")))
        }
        Err(error) => Err(error),
    }
}

impl ImportReport {
    /// Counts line `line` as imported, or keeps why it was not.
    fn add(&mut self, line: u64, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.imported += 1,
            Err(message) => self.failed.push(LineError { line, message }),
        }
    }
}

/// Queue figures per connection: every configured one (zeros included), and any other the
/// queue still names. `in_flight` gives each connection's edits in a push now.
pub async fn status(
    store: &Store,
    configured: &[String],
    in_flight: &BTreeMap<String, u64>,
) -> Result<Value, StoreError> {
    let mut counts = store.counts(now_ms()).await?;
    for name in configured {
        counts.entry(name.clone()).or_default();
    }
    for (name, edits) in in_flight {
        counts.entry(name.clone()).or_default().in_flight = *edits;
    }
    let unconfigured = unconfigured_connections(&counts, configured);
    Ok(json!({ "connections": counts, "unconfigured": unconfigured }))
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
pub fn dead_letter_json(letter: &DeadLetter) -> Value {
    let kind = letter.kind();
    let class = match kind {
        LetterKind::Conflict => "conflict",
        LetterKind::Refused if letter.retries_exhausted => "retries_exhausted",
        LetterKind::Refused => crate::store::class_name(&letter.error.kind),
    };
    let mut json = json!({
        "id": letter.id,
        "kind": kind,
        "contact_id": letter.contact_id,
        "connection": letter.connection,
        "patch": letter.patch,
        "error": {
            "code": letter.error.code,
            "message": letter.error.message,
            "class": class,
            "field": letter.error.field(),
        },
        "attempts": letter.attempts,
        "failed_at": rfc3339(letter.failed_at),
    });
    if let Some(conflict) = &letter.conflict {
        json["conflict"] = json!(conflict);
    }
    json
}

pub async fn list_dead_letters(store: &Store) -> Result<Value, StoreError> {
    let letters: Vec<Value> = store
        .dead_letters()
        .await?
        .iter()
        .map(dead_letter_json)
        .collect();
    Ok(json!({ "dead_letters": letters }))
}

/// What replaying dead letters did, as the admin API and the CLI answer it: the letters
/// whose edit went back in the queue (`retried`), those resolved as `superseded` (every field
/// had a later value), the fields each letter left out because a later value was accepted
/// (`dropped_fields`), and the letters that could not be replayed (`failed`, with why).
pub fn replay_json(attempts: &[ReplayAttempt]) -> Value {
    let mut retried = Vec::new();
    let mut superseded = Vec::new();
    let mut dropped = serde_json::Map::new();
    let mut failed = serde_json::Map::new();
    for attempt in attempts {
        let id = attempt.letter_id.clone();
        match &attempt.outcome {
            Ok(replay) => {
                if !replay.dropped.is_empty() {
                    let fields: Vec<&str> = replay.dropped.iter().map(|f| f.name()).collect();
                    dropped.insert(id.clone(), json!(fields));
                }
                if replay.superseded() {
                    superseded.push(id);
                } else {
                    retried.push(id);
                }
            }
            Err(error) => {
                failed.insert(id, json!(error.to_string()));
            }
        }
    }
    json!({
        "retried": retried,
        "superseded": superseded,
        "dropped_fields": dropped,
        "failed": failed,
    })
}

#[cfg(test)]
mod tests {
    use unisync_core::{AdapterError, ContactField};

    use super::*;
    use crate::conflict::FieldConflict;

    #[test]
    fn each_letter_shows_its_kind_and_a_conflict_letter_each_fields_three_values() {
        // A letter as unisync wrote them before conflict letters: it still loads, as refused.
        let refused: DeadLetter = serde_json::from_value(json!({
            "id": "dl-1", "contact_id": "c1", "connection": "crm", "patch": {"city": "X"},
            "error": AdapterError::permanent("INVALID", "no", Some("city".into())),
            "retries_exhausted": false, "attempts": 1, "failed_at": 5,
        }))
        .unwrap();
        let shown = dead_letter_json(&refused);
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
        let shown = dead_letter_json(&held);
        assert_eq!(shown["kind"], "conflict");
        assert_eq!(shown["error"]["class"], "conflict");
        assert_eq!(
            shown["conflict"],
            json!({"city": {"base": "Lisbon", "crm": "Porto", "ours": null}})
        );
    }
}
