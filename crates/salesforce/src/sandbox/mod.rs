//! The fake Salesforce: an org's token endpoint and REST API for Contacts, in memory.
//!
//! It answers as Salesforce's REST API documentation describes it: `PATCH .../sobjects/Contact/{Id}` (204),
//! `GET` of one record with `fields=`, collections `PATCH .../composite/sobjects` (200 with
//! one result per record, at most 200), SOQL over Contact with `WHERE Id IN (...)`,
//! `ORDER BY Id` and `nextRecordsUrl` paging, through `query` (live records) and `queryAll`
//! (the recycle bin too, with `IsDeleted` and `MasterRecordId`); `If-Unmodified-Since` on the
//! single-record PATCH (412 `PRECONDITION_FAILED` when the record was modified after that
//! second, 400 for a value that is no HTTP date); `Sforce-Limit-Info` on every data answer and
//! `REQUEST_LIMIT_EXCEEDED` past the daily limit; OAuth refresh-token, client-credentials and
//! JWT-bearer grants, sessions that end (401 `INVALID_SESSION_ID`), optional refresh-token
//! rotation; Bulk API 2.0 ingest jobs on Contact (`jobs/ingest`: create, upload one CSV,
//! close or abort, describe, successful / failed / unprocessed records; see `bulk.rs`), with
//! the org's daily Bulk record allowance. Versions v41.0 to v68.0 are served; v20.0 (the REST API's first) to v40.0 are
//! retired and answer 410; any other version, like any path the API does not have, answers
//! 404 `NOT_FOUND` "The requested resource does not exist", the body a missing record gets.
//!
//! Unkind where Salesforce is:
//! - Late landing: a write received is applied at the end of its delay even when the client
//!   has hung up (timed out) meanwhile.
//! - Ids: records have 18-character ids (15 characters and the case-safe suffix); URLs,
//!   collections records, `AccountId` values and SOQL `Id` filters take either form, the
//!   15-character one case-sensitively; answers always carry the 18-character form. A
//!   collections record whose id is no id fails with `MALFORMED_ID`.
//! - Email fields follow Salesforce's own rules (see `email.rs`), not unisync's: refused with
//!   400 `INVALID_EMAIL_ADDRESS` "Email: invalid email address: ..." and `fields: ["Email"]`,
//!   stored in lower case.
//! - Text is trimmed as Salesforce trims it (spaces and ASCII control characters at either
//!   end), and an empty value is stored as null.
//! - Merges ([`SalesforceSandbox::merge_contacts`]) and a person's edits
//!   ([`SalesforceSandbox::edit_as_person`]) happen beside the API, as they do in a real org:
//!   a merged-away record answers ENTITY_IS_DELETED to writes and only `queryAll` finds it;
//!   a person's edit moves LastModifiedDate like any write.
//!
//! How it shows [`Fault`](unisync_sandbox::Fault)s:
//! - `ServerError(503)`: 503 `SERVER_UNAVAILABLE`; another status: that status with
//!   `UNKNOWN_EXCEPTION`.
//! - `Locked`: 400 `UNABLE_TO_LOCK_ROW`; in a collections call, 200 with every record failed
//!   with `UNABLE_TO_LOCK_ROW`, as Salesforce reports row locks per record.
//! - `DailyLimit`: 403 `REQUEST_LIMIT_EXCEEDED` "TotalRequests Limit exceeded.".
//! - `Unauthorized`: 401 `INVALID_SESSION_ID` for that request (the session stays valid).
//! - `RateLimited`: Salesforce has no request-rate window and never sends 429 or
//!   `Retry-After`; its one short-lived limit is on concurrent long-running requests, answered
//!   403 `REQUEST_LIMIT_EXCEEDED` "ConcurrentPerOrgLongTxn Limit exceeded.". That is what
//!   this fault answers; `retry_after_secs` is ignored.
//! - `AccessRevoked`: 403 `API_DISABLED_FOR_ORG` "API is not enabled for this Organization or
//!   Partner".
//! - `EndpointNotFound`: 404 `NOT_FOUND` for the URI, as for a version not served.
//!
//! Every fault reaches every data call alike: sObject reads and writes, collections, queries
//! (so an adapter's read-back after a write sees it too), and every Bulk API 2.0 call (a
//! `Locked` fault there answers 400 `UNABLE_TO_LOCK_ROW` for the call). Every Bulk API call
//! counts as one API request, like any other.
//!
//! Latency ([`Faults::set_latency`]) delays every request, token requests included; a write
//! holds its records "in flight" during the delay, so overlapping writes to one record show in
//! [`SalesforceStats::overlapping_writes`], and lands at its end whether or not the client
//! still waits.
//!
//! Inspection API for tests (in-process, no HTTP): [`SalesforceSandbox::base_url`] /
//! [`instance_url`](SalesforceSandbox::instance_url), [`create_contact`](SalesforceSandbox::create_contact)
//! (Salesforce field names), [`contact`](SalesforceSandbox::contact),
//! [`short_id`](SalesforceSandbox::short_id) (a record's 15-character id),
//! [`delete_contact`](SalesforceSandbox::delete_contact),
//! [`merge_contacts`](SalesforceSandbox::merge_contacts),
//! [`edit_as_person`](SalesforceSandbox::edit_as_person),
//! [`advance_clock`](SalesforceSandbox::advance_clock),
//! [`create_account`](SalesforceSandbox::create_account), [`stats`](SalesforceSandbox::stats),
//! [`set_daily_limit`](SalesforceSandbox::set_daily_limit) /
//! [`set_api_usage`](SalesforceSandbox::set_api_usage),
//! [`set_session_lifetime`](SalesforceSandbox::set_session_lifetime),
//! [`invalidate_sessions`](SalesforceSandbox::invalidate_sessions),
//! [`token_requests`](SalesforceSandbox::token_requests),
//! [`overlapping_refreshes`](SalesforceSandbox::overlapping_refreshes),
//! [`set_refresh_token_rotation`](SalesforceSandbox::set_refresh_token_rotation),
//! [`register_jwt_public_key`](SalesforceSandbox::register_jwt_public_key),
//! [`credentials`](SalesforceSandbox::credentials),
//! [`set_query_page_size`](SalesforceSandbox::set_query_page_size),
//! [`set_bulk_processing_time`](SalesforceSandbox::set_bulk_processing_time),
//! [`set_bulk_daily_record_limit`](SalesforceSandbox::set_bulk_daily_record_limit) /
//! [`set_bulk_records_used`](SalesforceSandbox::set_bulk_records_used) /
//! [`bulk_records_used`](SalesforceSandbox::bulk_records_used),
//! [`bulk_job_state`](SalesforceSandbox::bulk_job_state),
//! [`abort_bulk_job`](SalesforceSandbox::abort_bulk_job), and the fault switches
//! through [`SandboxCrm::faults`].
//!
//! Differences from a real org worth knowing: LastModifiedDate has millisecond precision and
//! moves on every write (a real org's has one-second precision); custom fields `X__c` exist
//! as 255-character text; queries page 200 records at a time by default (a real org: 2000);
//! the 410 body's error code (`API_VERSION_RETIRED`), the code for an AccountId that is no
//! Account (`INVALID_CROSS_REFERENCE_KEY`), the 412 body's message, the 400 body for a bad
//! `If-Unmodified-Since` (`INVALID_HEADER_TYPE`), and what Salesforce counts as white space
//! when it trims (Java's and Apex's `trim`: U+0020 and below) are guesses; the 412 body's
//! code (`PRECONDITION_FAILED`) is Salesforce's for its other 412 answers; whether a merge
//! moves the loser's LastModifiedDate (here it does, with the master's) is a guess too; API
//! requests are counted only when served; email addresses whose local part has two dots in a row or ends with one are stored
//! as sent, in lower case (Salesforce's Spring '25 notes say it now puts such a local part in quotes; not
//! confirmed).

mod bulk;
mod email;
mod http;
mod ids;
mod org;
mod soql;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use org::OrgData;
use unisync_sandbox::{Faults, SandboxCrm};

/// The API version of record URLs in answers.
const LATEST_VERSION: &str = "v62.0";

/// The daily API request limit a new fake org has.
const DEFAULT_DAILY_LIMIT: u64 = 100_000;

/// Records per query page, unless set otherwise.
const DEFAULT_QUERY_PAGE_SIZE: usize = 200;

/// The OAuth credentials the fake org accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalesforceCredentials {
    pub client_id: String,
    pub client_secret: String,
    /// The current refresh token (a new one after each rotation).
    pub refresh_token: String,
    /// The user a JWT bearer assertion may name as `sub`.
    pub username: String,
}

/// Counters of what the fake has served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SalesforceStats {
    /// Data API requests answered (token requests not included).
    pub requests: u64,
    /// Collections calls among them.
    pub collection_calls: u64,
    /// Contact updates applied.
    pub records_written: u64,
    /// Times a write to a record began while another write to it was in flight.
    pub overlapping_writes: u64,
    /// Bulk API 2.0 ingest jobs created.
    pub bulk_jobs_created: u64,
    /// Records Bulk API 2.0 jobs processed (stored or refused), as counted against the
    /// org's daily Bulk record allowance.
    pub bulk_records_processed: u64,
}

/// A running fake Salesforce org. Dropping it stops the server.
pub struct SalesforceSandbox {
    addr: SocketAddr,
    org: Arc<Org>,
    server: tokio::task::JoinHandle<()>,
}

/// The org behind the HTTP routes.
struct Org {
    base_url: String,
    faults: Faults,
    state: Mutex<OrgState>,
}

struct OrgState {
    data: OrgData,
    credentials: SalesforceCredentials,
    rotate_refresh_tokens: bool,
    jwt_keys: Vec<DecodingKey>,
    /// Access token → when it expires (`None`: at the org's pleasure).
    sessions: HashMap<String, Option<Instant>>,
    session_lifetime: Option<Duration>,
    daily_limit: u64,
    api_used: u64,
    token_requests: u64,
    token_requests_in_flight: u64,
    overlapping_refreshes: u64,
    stats: SalesforceStats,
    writes_in_flight: HashMap<String, usize>,
    /// Record id → writes to it that began while another was in flight.
    overlaps_by_record: BTreeMap<String, u64>,
    query_page_size: usize,
    /// Query locator → the resource that ran the query and its whole result, paged by
    /// `nextRecordsUrl`.
    query_results: HashMap<String, (http::Resource, Arc<Vec<Value>>)>,
    bulk: bulk::BulkState,
}

impl Org {
    fn state(&self) -> std::sync::MutexGuard<'_, OrgState> {
        self.state.lock().unwrap()
    }
}

impl SalesforceSandbox {
    /// Starts the fake on `listen` (port 0 for any), seeded with `demo_records` contacts.
    pub async fn start(listen: SocketAddr, demo_records: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let org = Arc::new(Org {
            base_url: format!("http://{addr}"),
            faults: Faults::default(),
            state: Mutex::new(OrgState {
                data: OrgData::default(),
                credentials: SalesforceCredentials {
                    client_id: format!("3MVG9sandbox{}", random_token(16)),
                    client_secret: random_token(32),
                    refresh_token: format!("5Aep861{}", random_token(40)),
                    username: "integration@unisync.sandbox".to_string(),
                },
                rotate_refresh_tokens: false,
                jwt_keys: Vec::new(),
                sessions: HashMap::new(),
                session_lifetime: None,
                daily_limit: DEFAULT_DAILY_LIMIT,
                api_used: 0,
                token_requests: 0,
                token_requests_in_flight: 0,
                overlapping_refreshes: 0,
                stats: SalesforceStats::default(),
                writes_in_flight: HashMap::new(),
                overlaps_by_record: BTreeMap::new(),
                query_page_size: DEFAULT_QUERY_PAGE_SIZE,
                query_results: HashMap::new(),
                bulk: bulk::BulkState::default(),
            }),
        });
        seed(&mut org.state().data, demo_records);
        let router = http::router(org.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "the Salesforce sandbox stopped");
            }
        });
        Ok(SalesforceSandbox { addr, org, server })
    }

    /// `http://ADDR`: the login URL, and the instance URL the token endpoint hands out.
    pub fn base_url(&self) -> String {
        self.org.base_url.clone()
    }

    /// The instance URL sessions are valid on (the same server as the login URL).
    pub fn instance_url(&self) -> String {
        self.base_url()
    }

    /// Creates a Contact from Salesforce field names and values.
    ///
    /// # Panics
    /// When Salesforce would refuse the values (no LastName, too long, unknown field, ...).
    pub fn create_contact(&self, fields: &[(&str, &str)]) -> String {
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(name, value)| (name.to_string(), Value::String(value.to_string())))
            .collect();
        self.org
            .state()
            .data
            .create_contact(&fields)
            .unwrap_or_else(|refusal| panic!("the sandbox refused the contact: {refusal:?}"))
    }

    /// Every field of a Contact as the API shows it (`Id` in 18 characters, `CreatedDate`,
    /// `LastModifiedDate`, `AccountId`, empty fields as `null`); `None` when there is none or
    /// it was deleted. `id` in either form.
    pub fn contact(&self, id: &str) -> Option<BTreeMap<String, Value>> {
        self.org.state().data.contact(id)
    }

    /// The 15-character, case-sensitive form of a record id (given in either form): what
    /// Salesforce's UI, reports and formula fields show, and what an export may hold.
    ///
    /// # Panics
    /// When `id` is no Salesforce id.
    pub fn short_id(&self, id: &str) -> String {
        let id = ids::resolve(id).unwrap_or_else(|| panic!("`{id}` is no Salesforce id"));
        id[..15].to_string()
    }

    /// Deletes a Contact; later writes get 404 `ENTITY_IS_DELETED`. False when there was no
    /// live Contact `id` (either form).
    pub fn delete_contact(&self, id: &str) -> bool {
        self.org.state().data.delete_contact(id)
    }

    /// Merges Contact `loser` into Contact `master` (ids in either form), as a person does in
    /// Salesforce: the master keeps its own values and its LastModifiedDate moves; the loser
    /// is deleted with `MasterRecordId` = the master's 18-character id, left out of queries
    /// and of [`contact`](Self::contact), shown by `queryAll`, and writes to it answer 404
    /// `ENTITY_IS_DELETED`. Not an API request: the stats do not count it.
    ///
    /// # Panics
    /// When Salesforce would refuse the merge: one record twice, or either not a live Contact.
    pub fn merge_contacts(&self, master: &str, loser: &str) {
        self.org
            .state()
            .data
            .merge_contacts(master, loser)
            .unwrap_or_else(|refusal| panic!("the sandbox refused the merge: {refusal}"));
    }

    /// A person editing Contact `id` (either form) in Salesforce's UI: `fields` (Salesforce
    /// field names; an empty value clears the field) are checked and stored by the same rules
    /// as an API write, and LastModifiedDate / SystemModstamp move. Not an API request: it
    /// counts in neither the API usage nor [`stats`](Self::stats), so a test tells a person's
    /// write from unisync's.
    ///
    /// # Panics
    /// When there is no live Contact `id` or Salesforce would refuse the values.
    pub fn edit_as_person(&self, id: &str, fields: &[(&str, &str)]) {
        let fields: Map<String, Value> = fields
            .iter()
            .map(|(name, value)| (name.to_string(), Value::String(value.to_string())))
            .collect();
        let mut state = self.org.state();
        let changes = state
            .data
            .check_update(id, &fields)
            .unwrap_or_else(|refusal| panic!("the sandbox refused the edit: {refusal:?}"));
        state.data.apply_update(id, changes);
    }

    /// Moves the org's clock `by` ahead: writes from now on are stamped that much later, as
    /// if the time had passed. `If-Unmodified-Since` has one-second precision, so a test that
    /// needs a later edit to fail the precondition moves the clock a second instead of waiting.
    pub fn advance_clock(&self, by: Duration) {
        self.org.state().data.advance_clock(by);
    }

    /// Creates an Account (a customer); returns its id (`001...`).
    pub fn create_account(&self, name: &str) -> String {
        self.org.state().data.create_account(name)
    }

    /// Per record, the writes that began while another write to it was in flight (the
    /// records of [`SalesforceStats::overlapping_writes`]).
    pub fn overlapping_writes_by_record(&self) -> BTreeMap<String, u64> {
        self.org.state().overlaps_by_record.clone()
    }

    pub fn stats(&self) -> SalesforceStats {
        self.org.state().stats
    }

    /// Sets the daily API request limit; requests past it answer 403 `REQUEST_LIMIT_EXCEEDED`.
    pub fn set_daily_limit(&self, limit: u64) {
        self.org.state().daily_limit = limit;
    }

    /// Sets the count of API requests used today.
    pub fn set_api_usage(&self, used: u64) {
        self.org.state().api_used = used;
    }

    /// Sessions issued from now on end after `lifetime` (`None`: they do not end by time).
    pub fn set_session_lifetime(&self, lifetime: Option<Duration>) {
        self.org.state().session_lifetime = lifetime;
    }

    /// Ends every session: the next data request with any of them answers 401.
    pub fn invalidate_sessions(&self) {
        self.org.state().sessions.clear();
    }

    /// Token requests received, granted or not.
    pub fn token_requests(&self) -> u64 {
        self.org.state().token_requests
    }

    /// Token requests that arrived while another was being answered.
    pub fn overlapping_refreshes(&self) -> u64 {
        self.org.state().overlapping_refreshes
    }

    /// With rotation on, each refresh-token grant answers a new refresh token and the old one
    /// stops working.
    pub fn set_refresh_token_rotation(&self, rotate: bool) {
        self.org.state().rotate_refresh_tokens = rotate;
    }

    /// Trusts an RSA public key (PEM) for JWT bearer assertions, like uploading a connected
    /// app's certificate.
    pub fn register_jwt_public_key(&self, pem: &str) -> Result<(), String> {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|err| err.to_string())?;
        self.org.state().jwt_keys.push(key);
        Ok(())
    }

    /// The credentials the org accepts now.
    pub fn credentials(&self) -> SalesforceCredentials {
        self.org.state().credentials.clone()
    }

    /// How long a closed Bulk API 2.0 job takes before its records are processed (default:
    /// none, processed at once). Jobs running already wait for the new time, so a test can
    /// hold a job `InProgress` with a long time and let it finish by setting zero.
    pub fn set_bulk_processing_time(&self, time: Duration) {
        self.org.state().bulk.processing_time = time;
    }

    /// Sets the records the org may process by Bulk API in a day (Salesforce: 150,000,000). A
    /// job whose next internal batch of 10,000 would pass it fails, that batch and the ones
    /// after it unprocessed.
    pub fn set_bulk_daily_record_limit(&self, limit: u64) {
        self.org.state().bulk.daily_record_limit = limit;
    }

    /// Sets the records processed by Bulk API today.
    pub fn set_bulk_records_used(&self, used: u64) {
        self.org.state().bulk.records_used = used;
    }

    /// Records processed by Bulk API today.
    pub fn bulk_records_used(&self) -> u64 {
        self.org.state().bulk.records_used
    }

    /// The state of Bulk API 2.0 job `id` (`Open`, `UploadComplete`, `InProgress`,
    /// `JobComplete`, `Failed`, `Aborted`); `None` when there is no such job.
    pub fn bulk_job_state(&self, id: &str) -> Option<&'static str> {
        self.org.state().bulk.job_state(id)
    }

    /// Every Bulk API 2.0 job's id and state.
    pub fn bulk_jobs(&self) -> Vec<(String, &'static str)> {
        self.org.state().bulk.job_states()
    }

    /// Aborts Bulk API 2.0 job `id` as a person with "Manage Data Integrations" does in
    /// Setup: its records not yet processed stay unprocessed. Not an API request. False when
    /// there is no such job or it has ended.
    pub fn abort_bulk_job(&self, id: &str) -> bool {
        self.org.state().bulk.abort(id)
    }

    /// Records per query page (Salesforce allows 200 to 2000).
    pub fn set_query_page_size(&self, size: usize) {
        self.org.state().query_page_size = size.max(1);
    }
}

impl Drop for SalesforceSandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SandboxCrm for SalesforceSandbox {
    fn system(&self) -> &'static str {
        "salesforce"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connection_settings(&self) -> Map<String, Value> {
        let mut settings = Map::new();
        settings.insert("login_url".into(), Value::String(self.base_url()));
        settings
    }

    /// The refresh-token grant's secrets.
    fn connection_secrets(&self) -> BTreeMap<String, String> {
        let credentials = self.credentials();
        BTreeMap::from([
            ("client_id".to_string(), credentials.client_id),
            ("client_secret".to_string(), credentials.client_secret),
            ("refresh_token".to_string(), credentials.refresh_token),
        ])
    }

    fn faults(&self) -> &Faults {
        &self.org.faults
    }
}

/// Demo contacts, every third at one of a few demo accounts.
fn seed(data: &mut OrgData, demo_records: usize) {
    const FIRST: [&str; 6] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"];
    const LAST: [&str; 6] = [
        "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson",
    ];
    const CITIES: [&str; 4] = ["London", "Arlington", "Austin", "Boston"];
    let accounts: Vec<String> = ["Acme Corp", "Globex", "Initech"]
        .iter()
        .map(|name| data.create_account(name))
        .collect();
    for n in 0..demo_records {
        let (first, last) = (FIRST[n % FIRST.len()], LAST[(n / FIRST.len()) % LAST.len()]);
        let mut fields: Map<String, Value> = [
            ("FirstName", first.to_string()),
            ("LastName", last.to_string()),
            (
                "Email",
                format!(
                    "{}.{}{n}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
            ),
            ("Phone", format!("+1 555 {:04}", n % 10_000)),
            ("MailingCity", CITIES[n % CITIES.len()].to_string()),
            ("Title", "Engineer".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
        if n % 3 == 0 {
            fields.insert(
                "AccountId".into(),
                Value::String(accounts[n % accounts.len()].clone()),
            );
        }
        data.create_contact(&fields).expect("demo values fit");
    }
}

/// A random token of `len` letters and digits.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}
