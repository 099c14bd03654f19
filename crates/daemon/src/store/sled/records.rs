//! How the sled engine lays out its records.
//!
//! Every record is a tag byte, then the value in postcard (positional, no field names):
//! changing a stored type's fields means a new schema version and a migration. A contact's
//! entry is kept as two records: its **document** in `contacts` (the record, the CRM's
//! confirmed base and version, and the two facts of its sync that outlive its edits: the
//! connection they go to and when the CRM last confirmed one), and its **sync state** in
//! `sync`, only while its edits have something left to do or to settle. Claims, retries and
//! recoveries rewrite the small sync record alone; a finished contact has none, and the scans
//! at open read the `sync` tree, whose size is the work in progress, not the store.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use unisync_core::{ContactField, UnifiedContact};

use super::super::model::SyncState;
use super::super::{ContactEntry, StoreError};

/// The tag of a postcard record (schema 3 on): a sync state, a dead letter, a customer, or,
/// in a store of schema 3, a contact's whole entry. Records of older schemas are JSON
/// objects (first byte `{`); the migrations tell them apart by it, so that an interrupted
/// migration can run again.
const POSTCARD: u8 = 1;
/// The tag of a contact's document (schema 4 on).
const DOCUMENT: u8 = 2;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    tagged(POSTCARD, value)
}

fn tagged<T: Serialize>(tag: u8, value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![tag]).expect("store records always serialise")
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    untagged(POSTCARD, key, bytes)
}

fn untagged<T: DeserializeOwned>(tag: u8, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&first, record)) if first == tag => {
            postcard::from_bytes(record).map_err(|err| corrupt(key, err.to_string()))
        }
        _ => Err(corrupt(key, "not a record of this store's encoding".into())),
    }
}

fn corrupt(key: &[u8], message: String) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    }
}

/// Whether `bytes` is a record of schema 3 (a postcard record, not a document).
pub fn is_postcard(bytes: &[u8]) -> bool {
    bytes.first() == Some(&POSTCARD)
}

/// A record of schema 1 or 2 (JSON), for the migrations.
pub fn decode_json<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| corrupt(key, err.to_string()))
}

/// A contact's document as decoded: the fields of [`ContactEntry`] outside its sync state,
/// then the sync's connection and last confirmation.
type Document = (
    UnifiedContact,
    BTreeMap<ContactField, Option<String>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u64>,
);

/// The document record of `entry` (encoded from references: the same bytes as [`Document`]).
pub fn encode_document(entry: &ContactEntry) -> Vec<u8> {
    let sync = &entry.sync;
    tagged(
        DOCUMENT,
        &(
            &entry.contact,
            &entry.base,
            &entry.crm_version,
            &entry.source_connection,
            &sync.connection,
            &sync.last_confirmed_at,
        ),
    )
}

/// A contact's entry from its document and its sync record (`None`: its edits are finished).
pub fn join(key: &[u8], document: &[u8], sync: Option<&[u8]>) -> Result<ContactEntry, StoreError> {
    let (contact, base, crm_version, source_connection, connection, last_confirmed_at): Document =
        untagged(DOCUMENT, key, document)?;
    let sync = match sync {
        Some(bytes) => decode(key, bytes)?,
        None => SyncState {
            connection,
            last_confirmed_at,
            ..SyncState::default()
        },
    };
    Ok(ContactEntry {
        contact,
        base,
        crm_version,
        source_connection,
        sync,
    })
}

/// Whether `sync` holds nothing its document does not: it needs no record of its own.
pub fn at_rest(sync: &SyncState) -> bool {
    *sync
        == SyncState {
            connection: sync.connection.clone(),
            last_confirmed_at: sync.last_confirmed_at,
            ..SyncState::default()
        }
}

#[cfg(test)]
mod tests {
    use unisync_core::ContactPatch;

    use super::*;

    fn entry() -> ContactEntry {
        let mut contact = UnifiedContact::new("c1", "hubspot", "51");
        contact.city = Some("Faro".into());
        ContactEntry {
            contact,
            base: [(ContactField::City, Some("Faro".to_string()))].into(),
            crm_version: Some("v7".into()),
            source_connection: Some("hs".into()),
            sync: SyncState {
                connection: Some("hs".into()),
                last_confirmed_at: Some(42),
                ..SyncState::default()
            },
        }
    }

    #[test]
    fn a_finished_entry_is_its_document_alone() {
        let entry = entry();
        assert!(at_rest(&entry.sync));
        let document = encode_document(&entry);
        assert_eq!(join(b"c1", &document, None).unwrap(), entry);
    }

    #[test]
    fn an_entry_with_work_keeps_its_sync_record_apart_from_its_document() {
        let mut entry = entry();
        entry.sync.pending = Some(ContactPatch::from_iter([(
            ContactField::Zip,
            Some("8000".to_string()),
        )]));
        entry.sync.accepted_seqs.insert(ContactField::Zip, 9);
        assert!(!at_rest(&entry.sync));
        let document = encode_document(&entry);
        let sync = encode(&entry.sync);
        assert_eq!(join(b"c1", &document, Some(&sync)).unwrap(), entry);
        // The document does not change when only the sync state does.
        let mut claimed = entry.clone();
        claimed.sync.in_flight = claimed.sync.pending.take();
        assert_eq!(encode_document(&claimed), document);
    }

    #[test]
    fn records_of_another_kind_are_refused_as_corrupt() {
        let entry = entry();
        let sync = encode(&entry.sync);
        assert!(matches!(
            join(b"c1", &sync, None),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode::<SyncState>(b"c1", &encode_document(&entry)),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
