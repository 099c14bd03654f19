//! Bulk API 2.0 ingest jobs, as Salesforce's Bulk API 2.0 Developer Guide describes them.
//!
//! - `POST .../jobs/ingest` creates a job (`Open`); `PUT .../jobs/ingest/{id}/batches` takes
//!   its CSV once (201; a second upload is refused, "Found multiple contents for job");
//!   `PATCH .../jobs/ingest/{id}` with `state` `UploadComplete` closes it, with `Aborted`
//!   aborts it; `GET .../jobs/ingest/{id}` describes it; `successfulResults/`,
//!   `failedResults/` and `unprocessedrecords/` (with or without the final slash) answer CSV
//!   once it ended.
//! - A closed job goes `InProgress` at once and is processed when its processing time
//!   ([`BulkState::processing_time`], changeable while it runs) has passed, all its records at
//!   that moment, in internal batches of 10,000: each record checked and stored by the same
//!   rules as a collections record, `#N/A` clearing a field and an empty cell leaving it
//!   alone. Then `JobComplete`, or `Failed` when a batch would pass the org's daily Bulk
//!   record allowance: that batch and the ones after it are not processed.
//! - A job whose data cannot be read fails as a whole with an `errorMessage`: a header naming
//!   a field Contact does not have (or no `Id`) "InvalidBatch : Field name not found : X", a
//!   line ending other than the job's "ClientInputError : LineEnding is invalid on user
//!   data...", a CSV that does not parse or a job closed without data "ClientInputError : ...";
//!   its records are unprocessed.
//! - Results: `"sf__Id","sf__Created"` or `"sf__Id","sf__Error"` then the columns as uploaded;
//!   `sf__Error` is `CODE:message:Field --` (`CODE:message:--` without a field); a failed
//!   record's `sf__Id` is empty when its `Id` names no record. Unprocessed records are the
//!   rows as uploaded.
//!
//! Guesses, where the guide says nothing: the status and code of refusals (400 `INVALIDJOB`
//! for a job request Salesforce would refuse, 409 `INVALIDJOBSTATE` for a request the job's
//! state does not allow, including results asked before the job ended), the `errorMessage` of
//! a job past the daily record allowance (`ExceededQuota : ...`) and of a job closed without
//! data, and that a line ending is judged by the header line. Only `update` jobs on Contact
//! with comma-separated CSV are modelled; other operations and delimiters are refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::http::{json_body, refused, refused_one, uri_not_found};
use super::ids::resolve;
use super::org::{OrgData, SfError, is_contact_field};
use super::{Org, OrgState};

/// Records Salesforce processes in one internal batch of a job.
const BATCH_RECORDS: usize = 10_000;

/// Records an org may process by Bulk API in a rolling 24 hours.
const DEFAULT_DAILY_RECORD_LIMIT: u64 = 150_000_000;

/// Bulk API 2.0's null: a cell holding it clears the field.
const NULL_CELL: &str = "#N/A";

/// How often a running job looks at its processing time again.
const PROCESSING_CHECK: Duration = Duration::from_millis(10);

/// The user jobs are created by, in job descriptions.
const CREATED_BY: &str = "005SB0000000001AAA";

/// The org's Bulk API 2.0 jobs and allowance.
#[derive(Debug)]
pub struct BulkState {
    jobs: HashMap<String, IngestJob>,
    /// How long a closed job takes to process.
    pub processing_time: Duration,
    /// Records the org may process by Bulk API in a day.
    pub daily_record_limit: u64,
    /// Records processed by Bulk API today.
    pub records_used: u64,
}

impl Default for BulkState {
    fn default() -> Self {
        BulkState {
            jobs: HashMap::new(),
            processing_time: Duration::ZERO,
            daily_record_limit: DEFAULT_DAILY_RECORD_LIMIT,
            records_used: 0,
        }
    }
}

impl BulkState {
    /// The state of job `id` (either form), as its description names it.
    pub fn job_state(&self, id: &str) -> Option<&'static str> {
        self.jobs.get(&job_key(id)).map(|job| job.state.name())
    }

    /// The states of every job, by id.
    pub fn job_states(&self) -> Vec<(String, &'static str)> {
        self.jobs
            .iter()
            .map(|(id, job)| (id.clone(), job.state.name()))
            .collect()
    }

    /// Aborts job `id` as a person with "Manage Data Integrations" does in Setup; false when
    /// there is no such job or it has ended.
    pub fn abort(&mut self, id: &str) -> bool {
        match self.jobs.get_mut(&job_key(id)) {
            Some(job) if !job.state.ended() => {
                job.abort();
                true
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    fn ended(self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

#[derive(Debug)]
struct IngestJob {
    id: String,
    api_version: f64,
    created: String,
    state: JobState,
    /// `LF` or `CRLF`.
    line_ending: &'static str,
    data: Option<Bytes>,
    closed_at: Option<Instant>,
    processing_ms: u64,
    error_message: Option<String>,
    /// The data's header and each row's outcome, once the job was processed or aborted.
    results: Option<Results>,
}

#[derive(Debug)]
struct Results {
    header: Vec<String>,
    rows: Vec<(Vec<String>, RowOutcome)>,
}

#[derive(Debug)]
enum RowOutcome {
    /// Stored; the record's 18-character id.
    Succeeded(String),
    /// Refused; the record's 18-character id (empty when the row names no record).
    Failed {
        sf_id: String,
        error: SfError,
    },
    Unprocessed,
}

/// How much of a job a description shows: the answer to creating it, closing or aborting
/// it, or reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detail {
    Created,
    Changed,
    Full,
}

impl IngestJob {
    fn description(&self, detail: Detail) -> Value {
        let mut info = json!({
            "id": self.id,
            "operation": "update",
            "object": "Contact",
            "createdById": CREATED_BY,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state.name(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
        });
        if detail != Detail::Changed {
            info["contentUrl"] = json!(format!(
                "services/data/v{:.1}/jobs/ingest/{}/batches",
                self.api_version, self.id
            ));
            info["lineEnding"] = json!(self.line_ending);
            info["columnDelimiter"] = json!("COMMA");
        }
        if detail == Detail::Full {
            let rows = self.results.iter().flat_map(|results| &results.rows);
            let (mut processed, mut failed) = (0, 0);
            for (_, outcome) in rows {
                match outcome {
                    RowOutcome::Succeeded(_) => processed += 1,
                    RowOutcome::Failed { .. } => {
                        processed += 1;
                        failed += 1;
                    }
                    RowOutcome::Unprocessed => {}
                }
            }
            info["jobType"] = json!("V2Ingest");
            info["numberRecordsProcessed"] = json!(processed);
            info["numberRecordsFailed"] = json!(failed);
            info["retries"] = json!(0);
            info["totalProcessingTime"] = json!(self.processing_ms);
            info["apiActiveProcessingTime"] = json!(self.processing_ms);
            info["apexProcessingTime"] = json!(0);
            if let Some(message) = &self.error_message {
                info["errorMessage"] = json!(message);
            }
        }
        info
    }

    /// Aborts the job: nothing more of it is processed, and its records are unprocessed.
    fn abort(&mut self) {
        self.end_unprocessed(JobState::Aborted, None);
    }

    /// Ends the job in `state` without processing any record (those its data holds, when it
    /// can be read, are unprocessed), for the reason `error_message`.
    fn end_unprocessed(&mut self, state: JobState, error_message: Option<String>) {
        self.state = state;
        self.error_message = error_message;
        self.results = self.table().ok().map(|(header, rows)| Results {
            header,
            rows: rows
                .into_iter()
                .map(|row| (row, RowOutcome::Unprocessed))
                .collect(),
        });
    }

    /// The job's data as a header and rows, or why it cannot be read.
    fn table(&self) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
        let data = self
            .data
            .as_ref()
            .ok_or("ClientInputError : No data was uploaded for this job")?;
        let text = std::str::from_utf8(data)
            .map_err(|_| "ClientInputError : The job data is not UTF-8".to_string())?;
        let header_line = text.split_inclusive('\n').next().unwrap_or_default();
        if (self.line_ending == "LF") == header_line.ends_with("\r\n") {
            return Err(format!(
                "ClientInputError : LineEnding is invalid on user data. Current LineEnding \
                 setting is {}",
                self.line_ending
            ));
        }
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let unreadable = |err: csv::Error| format!("ClientInputError : {err}");
        let header: Vec<String> = reader
            .headers()
            .map_err(unreadable)?
            .iter()
            .map(str::to_string)
            .collect();
        let rows = reader
            .records()
            .map(|row| Ok(row?.iter().map(str::to_string).collect()))
            .collect::<Result<_, csv::Error>>()
            .map_err(unreadable)?;
        Ok((header, rows))
    }

    /// The CSV of one of the job's results.
    fn results_csv(&self, kind: ResultKind) -> String {
        let Some(results) = &self.results else {
            return String::new();
        };
        let end = if self.line_ending == "LF" {
            "\n"
        } else {
            "\r\n"
        };
        let columns = csv_line(&results.header);
        let mut csv = match kind {
            ResultKind::Successful => format!("\"sf__Id\",\"sf__Created\",{columns}{end}"),
            ResultKind::Failed => format!("\"sf__Id\",\"sf__Error\",{columns}{end}"),
            ResultKind::Unprocessed => format!("{columns}{end}"),
        };
        for (row, outcome) in &results.rows {
            let prefix = match (kind, outcome) {
                (ResultKind::Successful, RowOutcome::Succeeded(id)) => {
                    format!("{},\"false\",", quoted(id))
                }
                (ResultKind::Failed, RowOutcome::Failed { sf_id, error }) => {
                    format!("{},{},", quoted(sf_id), quoted(&record_error(error)))
                }
                (ResultKind::Unprocessed, RowOutcome::Unprocessed) => String::new(),
                _ => continue,
            };
            csv.push_str(&prefix);
            csv.push_str(&csv_line(row));
            csv.push_str(end);
        }
        csv
    }
}

#[derive(Clone, Copy)]
enum ResultKind {
    Successful,
    Failed,
    Unprocessed,
}

/// `POST .../jobs/ingest`.
pub(super) async fn create_job(
    State(org): State<Arc<Org>>,
    Path(version): Path<String>,
    body: Bytes,
) -> Response {
    let request = match json_body(&body) {
        Ok(Value::Object(request)) => request,
        Ok(_) => return refused_one(400, "JSON_PARSER_ERROR", "Expected a JSON object"),
        Err(refusal) => return refused(refusal),
    };
    let line_ending = match job_request(&request) {
        Ok(line_ending) => line_ending,
        Err(message) => return refused_one(400, "INVALIDJOB", &message),
    };
    let mut state = org.state();
    let id = state.data.new_id("750");
    let job = IngestJob {
        id: id.clone(),
        api_version: version.trim_start_matches('v').parse().unwrap_or_default(),
        created: state.data.timestamp(),
        state: JobState::Open,
        line_ending,
        data: None,
        closed_at: None,
        processing_ms: 0,
        error_message: None,
        results: None,
    };
    let description = job.description(Detail::Created);
    state.bulk.jobs.insert(id, job);
    state.stats.bulk_jobs_created += 1;
    Json(description).into_response()
}

/// The line ending of a job Salesforce would create from `request`, or why it would not.
fn job_request(request: &Map<String, Value>) -> Result<&'static str, String> {
    let field = |name: &str| request.get(name).and_then(Value::as_str);
    match field("object") {
        Some("Contact") => {}
        Some(other) => return Err(format!("Invalid object: {other}")),
        None => return Err("Required field missing: object".into()),
    }
    match field("operation") {
        Some("update") => {}
        Some(modelled @ ("insert" | "upsert" | "delete" | "hardDelete")) => {
            return Err(format!(
                "This sandbox models update jobs only, not {modelled}"
            ));
        }
        Some(other) => return Err(format!("Invalid operation: {other}")),
        None => return Err("Required field missing: operation".into()),
    }
    if !matches!(field("contentType"), None | Some("CSV")) {
        return Err("Invalid contentType: only CSV is supported".into());
    }
    if !matches!(field("columnDelimiter"), None | Some("COMMA")) {
        return Err("This sandbox models the COMMA columnDelimiter only".into());
    }
    match field("lineEnding") {
        None | Some("LF") => Ok("LF"),
        Some("CRLF") => Ok("CRLF"),
        Some(other) => Err(format!("Invalid lineEnding: {other}")),
    }
}

/// `PUT .../jobs/ingest/{id}/batches`: the job's CSV, once.
pub(super) async fn upload(
    State(org): State<Arc<Org>>,
    Path((_version, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut state = org.state();
    let Some(job) = state.bulk.jobs.get_mut(&job_key(&id)) else {
        return uri_not_found();
    };
    if job.state != JobState::Open {
        return invalid_state(&format!(
            "Job {} is {}: data can be uploaded to an Open job only",
            job.id,
            job.state.name()
        ));
    }
    if job.data.is_some() {
        return invalid_state(&format!(
            "Found multiple contents for job: <{}>, please 'Close' / 'Abort' / 'Delete' the \
             current Job then create a new Job and make sure you only do 'PUT' once on a given \
             Job.",
            job.id
        ));
    }
    job.data = Some(body);
    StatusCode::CREATED.into_response()
}

/// `PATCH .../jobs/ingest/{id}`: `UploadComplete` closes an open job, which then runs;
/// `Aborted` aborts a job that has not ended.
pub(super) async fn change_state(
    State(org): State<Arc<Org>>,
    Path((_version, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let requested = match json_body(&body) {
        Ok(request) => request
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Err(refusal) => return refused(refusal),
    };
    let mut state = org.state();
    let Some(job) = state.bulk.jobs.get_mut(&job_key(&id)) else {
        return uri_not_found();
    };
    match (requested.as_str(), job.state) {
        ("UploadComplete", JobState::Open) => {
            job.state = JobState::UploadComplete;
            job.closed_at = Some(Instant::now());
            tokio::spawn(run(org.clone(), job.id.clone()));
        }
        ("UploadComplete", current) => {
            return invalid_state(&format!(
                "Job {} is {}: only an Open job can be closed",
                job.id,
                current.name()
            ));
        }
        ("Aborted", current) if !current.ended() => job.abort(),
        ("Aborted", _) => return invalid_state("Aborting already Completed Job not allowed"),
        (other, _) => {
            return refused_one(
                400,
                "INVALIDJOBSTATE",
                &format!("Invalid state: {other:?}; a job can be set to UploadComplete or Aborted"),
            );
        }
    }
    Json(job.description(Detail::Changed)).into_response()
}

/// `GET .../jobs/ingest/{id}`.
pub(super) async fn describe(
    State(org): State<Arc<Org>>,
    Path((_version, id)): Path<(String, String)>,
) -> Response {
    match org.state().bulk.jobs.get(&job_key(&id)) {
        Some(job) => Json(job.description(Detail::Full)).into_response(),
        None => uri_not_found(),
    }
}

/// `GET .../jobs/ingest/{id}/{successfulResults|failedResults|unprocessedrecords}`.
pub(super) async fn results(
    State(org): State<Arc<Org>>,
    Path((_version, id, resource)): Path<(String, String, String)>,
) -> Response {
    let kind = match resource.as_str() {
        "successfulResults" => ResultKind::Successful,
        "failedResults" => ResultKind::Failed,
        "unprocessedrecords" => ResultKind::Unprocessed,
        _ => return uri_not_found(),
    };
    let state = org.state();
    let Some(job) = state.bulk.jobs.get(&job_key(&id)) else {
        return uri_not_found();
    };
    if !job.state.ended() {
        return invalid_state(&format!(
            "Job {} is {}: its results are ready once it ends",
            job.id,
            job.state.name()
        ));
    }
    ([(CONTENT_TYPE, "text/csv")], job.results_csv(kind)).into_response()
}

/// Runs closed job `id`: `InProgress` at once, processed when its processing time has
/// passed (read again as it waits, so a test can change it), unless it was aborted meanwhile.
async fn run(org: Arc<Org>, id: String) {
    match org.state().bulk.jobs.get_mut(&id) {
        Some(job) if job.state == JobState::UploadComplete => job.state = JobState::InProgress,
        _ => return,
    }
    loop {
        let wait = {
            let state = org.state();
            match state.bulk.jobs.get(&id) {
                Some(job) if job.state == JobState::InProgress => {
                    let closed_at = job.closed_at.expect("a running job was closed");
                    (closed_at + state.bulk.processing_time)
                        .saturating_duration_since(Instant::now())
                }
                _ => return,
            }
        };
        if wait.is_zero() {
            break;
        }
        tokio::time::sleep(wait.min(PROCESSING_CHECK)).await;
    }
    process(&mut org.state(), &id);
}

/// Processes running job `id`: all its records, batch by batch within the daily allowance.
fn process(state: &mut OrgState, id: &str) {
    let OrgState {
        bulk, data, stats, ..
    } = state;
    let Some(job) = bulk.jobs.get_mut(id) else {
        return;
    };
    if job.state != JobState::InProgress {
        return;
    }
    job.processing_ms = job.closed_at.map_or(0, |at| {
        at.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
    });
    let (header, rows) = match job.table() {
        Ok(table) => table,
        Err(message) => return job.end_unprocessed(JobState::Failed, Some(message)),
    };
    let unknown = header
        .iter()
        .map(String::as_str)
        .find(|column| !is_contact_field(column));
    let id_at = header.iter().position(|column| column == "Id");
    let id_at = match (unknown, id_at) {
        (None, Some(id_at)) => id_at,
        (unknown, _) => {
            let message = format!(
                "InvalidBatch : Field name not found : {}",
                unknown.unwrap_or("Id")
            );
            return job.end_unprocessed(JobState::Failed, Some(message));
        }
    };
    let mut outcomes = Vec::with_capacity(rows.len());
    for batch in rows.chunks(BATCH_RECORDS) {
        let count = batch.len() as u64;
        if job.error_message.is_some() || bulk.records_used + count > bulk.daily_record_limit {
            job.error_message.get_or_insert_with(|| {
                "ExceededQuota : The daily limit of records processed by Bulk API was exceeded"
                    .to_string()
            });
            outcomes.extend(batch.iter().map(|_| RowOutcome::Unprocessed));
            continue;
        }
        bulk.records_used += count;
        stats.bulk_records_processed += count;
        for row in batch {
            let outcome = apply_row(data, &header, id_at, row);
            if matches!(outcome, RowOutcome::Succeeded(_)) {
                stats.records_written += 1;
            }
            outcomes.push(outcome);
        }
    }
    job.state = if job.error_message.is_some() {
        JobState::Failed
    } else {
        JobState::JobComplete
    };
    job.results = Some(Results {
        header,
        rows: rows.into_iter().zip(outcomes).collect(),
    });
}

/// Checks and stores one row as a collections record would be: its `Id` names the record, an
/// empty cell leaves a field alone, `#N/A` clears it.
fn apply_row(data: &mut OrgData, header: &[String], id_at: usize, row: &[String]) -> RowOutcome {
    let given = &row[id_at];
    let refused = |sf_id: &str, error: SfError| RowOutcome::Failed {
        sf_id: sf_id.to_string(),
        error,
    };
    if given.is_empty() {
        let error = SfError::new(
            "MISSING_ARGUMENT",
            "Id not specified in an update call",
            &[],
        );
        return refused("", error);
    }
    let Some(id) = resolve(given) else {
        let error = SfError::new(
            "MALFORMED_ID",
            format!("Contact ID: id value of incorrect type: {given}"),
            &["Id"],
        );
        return refused("", error);
    };
    let fields: Map<String, Value> = header
        .iter()
        .zip(row)
        .filter(|(column, cell)| *column != "Id" && !cell.is_empty())
        .map(|(column, cell)| {
            let value = if cell == NULL_CELL {
                Value::Null
            } else {
                Value::String(cell.clone())
            };
            (column.clone(), value)
        })
        .collect();
    match data.check_update(&id, &fields) {
        Ok(changes) => {
            data.apply_update(&id, changes);
            RowOutcome::Succeeded(id)
        }
        Err(refusal) => {
            let sf_id = if data.knows(&id) { id.as_str() } else { "" };
            refused(sf_id, refusal.errors[0].clone())
        }
    }
}

/// An error as a failed-results row writes it: `CODE:message:Field1,Field2 --`, or
/// `CODE:message:--` without a field.
fn record_error(error: &SfError) -> String {
    let fields = if error.fields.is_empty() {
        String::new()
    } else {
        format!("{} ", error.fields.join(","))
    };
    format!("{}:{}:{fields}--", error.code, error.message)
}

/// `cells` as one CSV line without its line ending, quoted where CSV needs it.
fn csv_line(cells: &[String]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer.write_record(cells).expect("writes to memory");
    let mut line =
        String::from_utf8(writer.into_inner().expect("writes to memory")).expect("UTF-8 cells");
    line.pop();
    line
}

fn quoted(cell: &str) -> String {
    format!("\"{}\"", cell.replace('"', "\"\""))
}

fn invalid_state(message: &str) -> Response {
    refused_one(409, "INVALIDJOBSTATE", message)
}

/// The key of job `id`: its 18-character form, as records' ids.
fn job_key(id: &str) -> String {
    resolve(id).unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(data: &str, line_ending: &'static str) -> IngestJob {
        IngestJob {
            id: "750SB0000000001AAA".into(),
            api_version: 62.0,
            created: String::new(),
            state: JobState::InProgress,
            line_ending,
            data: Some(Bytes::from(data.to_string())),
            closed_at: None,
            processing_ms: 0,
            error_message: None,
            results: None,
        }
    }

    #[test]
    fn job_data_is_read_as_salesforce_reads_it() {
        let (header, rows) = job("Id,Title\n003A,\"CTO, \"\"acting\"\"\"\n", "LF")
            .table()
            .unwrap();
        assert_eq!(header, vec!["Id", "Title"]);
        assert_eq!(rows, vec![vec!["003A", "CTO, \"acting\""]]);
        let wrong_ending = job("Id,Title\r\n003A,CTO\r\n", "LF").table().unwrap_err();
        assert!(wrong_ending.starts_with("ClientInputError : LineEnding is invalid"));
        assert!(job("Id,Title\r\n003A,CTO\r\n", "CRLF").table().is_ok());
        assert!(job("Id,Title\n003A,CTO\n", "CRLF").table().is_err());
        let ragged = job("Id,Title\n003A\n", "LF").table().unwrap_err();
        assert!(ragged.starts_with("ClientInputError : "), "{ragged}");
    }

    #[test]
    fn failed_rows_carry_the_error_in_salesforces_form() {
        let error = SfError::new(
            "INVALID_EMAIL_ADDRESS",
            "Email: invalid email address: x",
            &["Email"],
        );
        assert_eq!(
            record_error(&error),
            "INVALID_EMAIL_ADDRESS:Email: invalid email address: x:Email --"
        );
        let unfielded = SfError::new("NOT_FOUND", "The requested resource does not exist", &[]);
        assert_eq!(
            record_error(&unfielded),
            "NOT_FOUND:The requested resource does not exist:--"
        );
        let mut job = job("Id,Title\n003A,\"a,b\"\n003B,c\n", "LF");
        job.state = JobState::JobComplete;
        job.results = Some(Results {
            header: vec!["Id".into(), "Title".into()],
            rows: vec![
                (
                    vec!["003A".into(), "a,b".into()],
                    RowOutcome::Succeeded("003A".into()),
                ),
                (
                    vec!["003B".into(), "c".into()],
                    RowOutcome::Failed {
                        sf_id: String::new(),
                        error: unfielded,
                    },
                ),
            ],
        });
        assert_eq!(
            job.results_csv(ResultKind::Successful),
            "\"sf__Id\",\"sf__Created\",Id,Title\n\"003A\",\"false\",003A,\"a,b\"\n"
        );
        assert_eq!(
            job.results_csv(ResultKind::Failed),
            "\"sf__Id\",\"sf__Error\",Id,Title\n\"\",\"NOT_FOUND:The requested resource does \
             not exist:--\",003B,c\n"
        );
        assert_eq!(job.results_csv(ResultKind::Unprocessed), "Id,Title\n");
    }
}
