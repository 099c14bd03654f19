//! Bulk API 2.0 ingest jobs: the CSV a job uploads, and Salesforce's answers about a job.
//!
//! One job updates Contacts from one CSV, whose header names the columns of every row. Items
//! whose edits touch different fields share that one header: an item leaves the cells of the
//! fields it does not touch empty, and Bulk API 2.0 leaves a field whose cell is empty
//! unchanged, which is exactly what an absent field means. A field cleared is `#N/A`, Bulk's
//! null; a value Salesforce would store as nothing (empty or blank) is sent as `#N/A` too, as
//! an empty cell would leave the old value in place. The one value Bulk cannot carry is the
//! text `#N/A` itself, which Salesforce takes for a clear.
//!
//! Salesforce answers a job's records in three CSVs of its own (successful, failed and
//! unprocessed records), in no particular order, each row carrying the record's `Id` as it
//! was uploaded (and, from v53.0, `sf__Id` with the 18-character id); [`result_rows`] reads
//! them.

use serde::Deserialize;
use serde_json::Value;
use unisync_core::{FieldMapping, PushItem};

use crate::error::SalesforceError;
use crate::id::canonical_id;
use crate::mapping::{is_field_name, record_fields, stored_form};

/// Bulk API 2.0's null: a cell holding it clears the field.
const NULL_CELL: &str = "#N/A";

/// The column naming the record in job data.
const ID_COLUMN: &str = "Id";

/// The code of a failed record whose `sf__Error` is not in Salesforce's `CODE:message:fields
/// --` form.
const UNRECOGNISED_ERROR: &str = "UNRECOGNISED_BULK_ERROR";

/// A job as Salesforce describes it (`GET .../jobs/ingest/{id}`, and the answers to creating
/// and closing one); only what the adapter reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    pub id: String,
    pub state: String,
    /// Why a `Failed` job failed (`InvalidBatch : Field name not found : Foo__c`).
    #[serde(default)]
    pub error_message: Option<String>,
}

/// The body creating a job that updates Contacts from CSV with LF line endings.
pub fn create_job_body() -> Value {
    serde_json::json!({
        "object": "Contact",
        "operation": "update",
        "contentType": "CSV",
        "lineEnding": "LF",
    })
}

/// The job data updating `items`, each addressed by its canonical id: `Id`, then every
/// Contact field any item writes (mapped fields and `AccountId`), in the order first met.
pub fn job_csv(mapping: &FieldMapping, items: &[(&PushItem, &str)]) -> String {
    let records: Vec<_> = items
        .iter()
        .map(|(item, id)| (*id, record_fields(mapping, item)))
        .collect();
    let mut columns: Vec<&str> = vec![ID_COLUMN];
    for (_, fields) in &records {
        for name in fields.keys() {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    csv.write_record(&columns).expect("writes to memory");
    for (id, fields) in &records {
        let row = columns
            .iter()
            .map(|column| match (*column, fields.get(*column)) {
                (ID_COLUMN, _) => (*id).to_string(),
                (_, None) => String::new(),
                (_, Some(Value::String(value))) if stored_form(column, Some(value)).is_some() => {
                    value.clone()
                }
                // A clear, or a value Salesforce would store as nothing.
                (_, Some(_)) => NULL_CELL.to_string(),
            });
        csv.write_record(row).expect("writes to memory");
    }
    String::from_utf8(csv.into_inner().expect("writes to memory")).expect("UTF-8 cells")
}

/// One row of a job's results: the record it is about (canonical id, when the row names one)
/// and, for a failed record, Salesforce's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    pub id: Option<String>,
    pub error: Option<SalesforceError>,
}

/// The rows of a results CSV (`successfulResults/`, `failedResults/`, `unprocessedrecords/`).
/// A record is named by `sf__Id`, or by the `Id` it was uploaded with when `sf__Id` is empty
/// (Salesforce leaves it empty for some failures). An empty answer has no rows.
pub fn result_rows(csv_text: &str) -> Result<Vec<ResultRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(csv_text.as_bytes());
    let headers = reader.headers().map_err(|err| err.to_string())?.clone();
    let column = |name: &str| headers.iter().position(|header| header == name);
    let (sf_id, sf_error, id) = (column("sf__Id"), column("sf__Error"), column(ID_COLUMN));
    reader
        .records()
        .map(|row| {
            let row = row.map_err(|err| err.to_string())?;
            let cell = |at: Option<usize>| at.and_then(|at| row.get(at)).filter(|c| !c.is_empty());
            let named = cell(sf_id).or_else(|| cell(id));
            Ok(ResultRow {
                id: named.map(|id| canonical_id(id).unwrap_or_else(|_| id.to_string())),
                error: cell(sf_error).map(record_error),
            })
        })
        .collect()
}

/// Reads an `sf__Error`: `CODE:message:Field1,Field2 --`, or `CODE:message:--` when no field
/// is blamed. The message may hold colons itself, so the fields are what follows the last
/// one, and only when the text ends with `--` and they are field names.
pub fn record_error(text: &str) -> SalesforceError {
    let unrecognised = || SalesforceError {
        code: UNRECOGNISED_ERROR.to_string(),
        message: text.to_string(),
        fields: Vec::new(),
    };
    let Some((code, rest)) = text.split_once(':') else {
        return unrecognised();
    };
    let is_code = |code: &str| {
        !code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if !is_code(code) {
        return unrecognised();
    }
    let trailer = rest
        .strip_suffix("--")
        .map(str::trim_end)
        .and_then(|body| body.rsplit_once(':'))
        .and_then(|(message, fields)| {
            let fields: Vec<String> = fields
                .split(',')
                .map(str::trim)
                .filter(|field| !field.is_empty())
                .map(str::to_string)
                .collect();
            fields
                .iter()
                .all(|field| is_field_name(field))
                .then_some((message, fields))
        });
    let (message, fields) = trailer.unwrap_or((rest, Vec::new()));
    SalesforceError {
        code: code.to_string(),
        message: message.to_string(),
        fields,
    }
}

#[cfg(test)]
mod tests {
    use unisync_core::{ContactField, ContactPatch, CustomerLink};

    use super::*;
    use crate::mapping::default_mapping;

    fn item(changes: &[(ContactField, Option<&str>)], customer: CustomerLink) -> PushItem {
        PushItem {
            source_id: String::new(),
            patch: changes
                .iter()
                .map(|(field, value)| (*field, value.map(str::to_string)))
                .collect::<ContactPatch>(),
            customer,
        }
    }

    #[test]
    fn one_header_serves_edits_of_different_fields() {
        let first = item(
            &[
                (ContactField::FirstName, Some("Ann, \"Annie\"")),
                (ContactField::Phone, None),
            ],
            CustomerLink::Unchanged,
        );
        let second = item(
            &[
                (ContactField::Address, Some("1 Main St\nFloor 2")),
                (ContactField::Position, Some("  ")),
            ],
            CustomerLink::Link {
                id: "001000000000001AAA".into(),
                previous: None,
            },
        );
        let third = item(&[], CustomerLink::Unlink { previous: None });
        let csv = job_csv(
            &default_mapping(),
            &[
                (&first, "003000000000001AAA"),
                (&second, "003000000000002AAA"),
                (&third, "003000000000003AAA"),
            ],
        );
        assert_eq!(
            csv,
            "Id,FirstName,Phone,MailingStreet,Title,AccountId\n\
             003000000000001AAA,\"Ann, \"\"Annie\"\"\",#N/A,,,\n\
             003000000000002AAA,,,\"1 Main St\nFloor 2\",#N/A,001000000000001AAA\n\
             003000000000003AAA,,,,,#N/A\n"
        );
    }

    #[test]
    fn results_name_records_by_sf_id_or_the_id_uploaded() {
        let csv = "\"sf__Id\",\"sf__Error\",Id,Email\n\
                   \"003000000000001AAA\",\"INVALID_EMAIL_ADDRESS:Email: invalid email address: a:b:Email --\",003000000000001AAA,a:b\n\
                   \"\",\"INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--\",003000000000002,x@example.com\n";
        let rows = result_rows(csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id.as_deref(), Some("003000000000001AAA"));
        assert_eq!(
            rows[0].error,
            Some(SalesforceError {
                code: "INVALID_EMAIL_ADDRESS".into(),
                message: "Email: invalid email address: a:b".into(),
                fields: vec!["Email".into()],
            })
        );
        assert_eq!(rows[1].id.as_deref(), Some("003000000000002AAA"));
        let error = rows[1].error.as_ref().unwrap();
        assert_eq!(error.code, "INVALID_CROSS_REFERENCE_KEY");
        assert_eq!(error.message, "invalid cross reference id");
        assert!(error.fields.is_empty());
        let successes = result_rows(
            "\"sf__Id\",\"sf__Created\",Id,Phone\n\"003000000000001AAA\",\"false\",003000000000001AAA,5\n",
        )
        .unwrap();
        assert_eq!(
            successes,
            vec![ResultRow {
                id: Some("003000000000001AAA".into()),
                error: None
            }]
        );
        assert_eq!(result_rows("").unwrap(), Vec::new());
        assert_eq!(result_rows("Id,Phone\n").unwrap(), Vec::new());
    }

    #[test]
    fn record_errors_keep_salesforces_code_message_and_fields() {
        let error = record_error(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",
        );
        assert_eq!(error.code, "REQUIRED_FIELD_MISSING");
        assert_eq!(error.message, "Required fields are missing: [LastName]");
        assert_eq!(error.fields, vec!["LastName".to_string()]);
        let several = record_error("FIELD_INTEGRITY_EXCEPTION:bad pair:Phone, Fax --");
        assert_eq!(several.fields, vec!["Phone".to_string(), "Fax".to_string()]);
        // Without the trailer, the whole rest is the message.
        let bare = record_error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access: 003x");
        assert_eq!(bare.code, "UNABLE_TO_LOCK_ROW");
        assert_eq!(bare.message, "unable to obtain exclusive access: 003x");
        assert!(bare.fields.is_empty());
        for odd in ["", "no code here", "lower:case"] {
            let error = record_error(odd);
            assert_eq!(error.code, UNRECOGNISED_ERROR, "{odd:?}");
            assert_eq!(error.message, odd);
        }
    }
}
