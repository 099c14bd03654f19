//! The fake Dataverse: an environment's Web API for contacts and the Microsoft identity
//! platform's token endpoint, in memory, on loopback. Written from Microsoft's documentation
//! of the Dataverse Web API, not from the adapter.
//!
//! It answers as Dataverse does:
//! - `POST /{tenant}/oauth2/v2.0/token`: client credentials only, `scope` must be
//!   `{environment URL}/.default`; tokens last an hour (`expires_in: 3599`) unless set
//!   otherwise. Refusals in the identity platform's shape (`error`, `error_description` with
//!   its `AADSTS` number, `error_codes`, `trace_id`, ...): an unknown tenant (400
//!   `invalid_request`, AADSTS90002), an unknown client (400 `unauthorized_client`,
//!   AADSTS700016), a wrong secret (401 `invalid_client`, AADSTS7000215), a scope for another
//!   resource (400 `invalid_resource`, AADSTS500011), another grant (400
//!   `unsupported_grant_type`, AADSTS70003).
//! - `/api/data/v9.0` to `v9.2`; any other version or entity set answers 404 `0x8006088a`
//!   "Resource not found for the segment".
//! - `PATCH contacts({id})` is an upsert: without `If-Match` a missing row is created. With
//!   `If-Match: *` a missing row is 404 `0x80040217` and nothing is created; with an ETag, a
//!   row at another version is 412 `0x80060882`. 204 with `OData-EntityId`, or 200 with the
//!   row under `Prefer: return=representation` (`$select` limits its columns). Every answer
//!   about a row carries its `ETag` (`W/"<versionnumber>"`), which moves on every write.
//! - Columns and their maximum lengths as Microsoft's contact entity reference lists them (400 `0x80044331` naming
//!   the attribute and its limit; an unknown property 400 `0x80060888`); an empty string is
//!   stored as no value; values are kept as sent (no case folding, no trimming).
//! - `parentcustomerid_account@odata.bind` takes `/accounts(id)` (or `accounts(id)`, or an
//!   absolute URL); a missing account is 404 `0x80040217` "account With Id = ... Does Not
//!   Exist"; `null` (on the bind or on `parentcustomerid_account`) removes the link.
//! - `GET contacts({id})` and `GET contacts` with `$select`, `$filter` (`contactid eq {id}`
//!   terms joined by `or`), `Prefer: odata.maxpagesize` (at most 5000, the default) and
//!   `@odata.nextLink` paging in primary key order.
//! - `POST $batch` (multipart/mixed, at most 1000 requests): each change set succeeds or
//!   fails as a whole and a failed one answers a single error part; requests run in order;
//!   without `Prefer: odata.continue-on-error` the batch stops at the first failure and
//!   answers with its status.
//! - Service protection (see `throttle.rs`): 429 with `Retry-After` over the requests or
//!   execution time in a 5-minute sliding window, or over the concurrent requests.
//! - Errors are `{"error": {"code", "message"}}`; a refused token is 401 with an empty body
//!   and `WWW-Authenticate: Bearer`.
//! - Merges ([`DynamicsSandbox::merge_contacts`]) work as the Merge action: the subordinate
//!   row stays, deactivated (`statecode` 1), with `merged` true and `_masterid_value`
//!   naming the row kept; writes to it still succeed.
//!
//! Unkind where Dataverse is: a write received is applied at the end of its delay even when
//! the client has hung up (late landing); overlapping writes to one row are counted.
//!
//! How it shows [`Fault`](unisync_sandbox::Fault)s (for every data request, a `$batch` as a
//! whole):
//! - `ServerError(s)`: status `s`, `0x80040216` "An unexpected error occurred."
//! - `RateLimited { retry_after_secs }`: 429 `0x80072322` with `Retry-After` (60 when none).
//! - `DailyLimit`: Dataverse has no daily request budget its API refuses by; the longest wait
//!   it imposes is the execution-time limit's: 429 `0x80072321` with `Retry-After: 300`.
//! - `Unauthorized`: 401 as for an expired token (the token stays valid).
//! - `Locked`: 500 `0x80044150` "Sql error: Generic SQL error ... Sql Number: 1205" (a
//!   deadlock).
//! - `AccessRevoked`: 403 `0x80040220`, the user is missing the `prvWriteContact` privilege.
//! - `EndpointNotFound`: 404 `0x8006088a` for the segment.
//!
//! Guesses (not documented by Microsoft): the 404 answer's code for an unknown API version,
//! the code and wording of a malformed bind or `$batch` body (`0x80048d19`), the fault
//! bodies for 5xx, the 1-second wait announced for the concurrency limit, and the status of
//! a bind to a missing account (404, as for a missing row).

mod http;
mod multipart;
mod org;
mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use unisync_sandbox::{Faults, SandboxCrm};

use org::OrgData;
pub use org::codes;
pub use throttle::ServiceProtection;

/// How long the tokens the fake issues last (Microsoft identity: an hour, `expires_in` 3599).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// The app registration the fake's tenant knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicsCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// Counters of what the fake has served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DynamicsStats {
    /// Web API requests answered (a `$batch` counts once; token requests not included).
    pub requests: u64,
    /// `$batch` requests among them.
    pub batch_calls: u64,
    /// Contact rows written (an update in a change set rolled back does not count).
    pub records_written: u64,
    /// Times a write to a row began while another write to it was in flight.
    pub overlapping_writes: u64,
    /// Requests refused by the service protection limits.
    pub throttled: u64,
}

/// A running fake Dataverse environment. Dropping it stops the server.
pub struct DynamicsSandbox {
    addr: SocketAddr,
    env: Arc<Environment>,
    server: tokio::task::JoinHandle<()>,
}

/// The environment behind the routes.
struct Environment {
    /// `http://ADDR`: the environment URL, and the identity platform's host.
    base_url: String,
    tenant_id: String,
    faults: Faults,
    state: Mutex<EnvState>,
}

struct EnvState {
    data: OrgData,
    credentials: DynamicsCredentials,
    /// Access token → when it expires.
    tokens: HashMap<String, Instant>,
    token_lifetime: Duration,
    token_requests: u64,
    token_requests_in_flight: u64,
    overlapping_token_requests: u64,
    throttle: throttle::Throttle,
    stats: DynamicsStats,
    writes_in_flight: HashMap<String, usize>,
    /// Per row, the writes that began while another write to it was in flight.
    overlaps_by_record: BTreeMap<String, u64>,
}

impl Environment {
    fn state(&self) -> std::sync::MutexGuard<'_, EnvState> {
        self.state.lock().unwrap()
    }
}

impl DynamicsSandbox {
    /// Starts the fake on `listen` (port 0 for any), seeded with `demo_records` contacts.
    pub async fn start(listen: SocketAddr, demo_records: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let env = Arc::new(Environment {
            base_url: format!("http://{addr}"),
            tenant_id: org::new_guid(),
            faults: Faults::default(),
            state: Mutex::new(EnvState {
                data: OrgData::default(),
                credentials: DynamicsCredentials {
                    client_id: org::new_guid(),
                    client_secret: random_secret(),
                },
                tokens: HashMap::new(),
                token_lifetime: DEFAULT_TOKEN_LIFETIME,
                token_requests: 0,
                token_requests_in_flight: 0,
                overlapping_token_requests: 0,
                throttle: throttle::Throttle::default(),
                stats: DynamicsStats::default(),
                writes_in_flight: HashMap::new(),
                overlaps_by_record: BTreeMap::new(),
            }),
        });
        seed(&mut env.state().data, demo_records);
        let router = http::router(env.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "the Dynamics sandbox stopped");
            }
        });
        Ok(DynamicsSandbox { addr, env, server })
    }

    /// `http://ADDR`: the environment URL (`base_url` of a connection).
    pub fn base_url(&self) -> String {
        self.env.base_url.clone()
    }

    /// The directory (tenant) id the token endpoint serves.
    pub fn tenant_id(&self) -> String {
        self.env.tenant_id.clone()
    }

    /// The token endpoint: `{base_url}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.env.base_url, self.env.tenant_id
        )
    }

    /// The app registration the tenant accepts now.
    pub fn credentials(&self) -> DynamicsCredentials {
        self.env.state().credentials.clone()
    }

    /// Replaces the app's client secret, as an administrator does when one expires: the old
    /// one is refused from now on (tokens already issued stay valid). Answers the new one.
    pub fn rotate_client_secret(&self) -> String {
        let secret = random_secret();
        self.env.state().credentials.client_secret = secret.clone();
        secret
    }

    /// Creates a contact from column names and values (`parentcustomerid_account` takes an
    /// account id); answers its id.
    ///
    /// # Panics
    /// When Dataverse would refuse the values (too long, unknown column, missing account).
    pub fn create_contact(&self, columns: &[(&str, &str)]) -> String {
        self.env
            .state()
            .data
            .create_contact(&update_body(columns))
            .unwrap_or_else(|refusal| panic!("the sandbox refused the contact: {refusal:?}"))
    }

    /// The contact as `GET contacts({id})` shows it (every column, empty ones `null`, the
    /// system columns); `None` when there is no such row.
    pub fn contact(&self, id: &str) -> Option<BTreeMap<String, Value>> {
        let state = self.env.state();
        let contact = state.data.contact(id)?;
        Some(
            contact
                .representation(&id.to_ascii_lowercase(), None)
                .into_iter()
                .collect(),
        )
    }

    /// Deletes a contact; false when there was none.
    pub fn delete_contact(&self, id: &str) -> bool {
        self.env.state().data.delete_contact(id)
    }

    /// Merges contact `subordinate` into `master` as a person does with the Merge action (see
    /// the module notes). Not an API request.
    ///
    /// # Panics
    /// When Dataverse would refuse the merge: one row twice, or either not an active contact.
    pub fn merge_contacts(&self, master: &str, subordinate: &str) {
        self.env
            .state()
            .data
            .merge(master, subordinate)
            .unwrap_or_else(|refusal| panic!("the sandbox refused the merge: {refusal}"));
    }

    /// A person editing the contact in the app: checked and stored like an API write (the
    /// version moves), counted neither as a request nor as a write.
    ///
    /// # Panics
    /// When there is no such contact or Dataverse would refuse the values.
    pub fn edit_as_person(&self, id: &str, columns: &[(&str, &str)]) {
        self.env
            .state()
            .data
            .edit_as_person(id, &update_body(columns))
            .unwrap_or_else(|refusal| panic!("the sandbox refused the edit: {refusal:?}"));
    }

    /// Moves the environment's clock ahead: rows written from now on are stamped later.
    pub fn advance_clock(&self, by: Duration) {
        self.env.state().data.advance_clock(by);
    }

    /// Creates an account; answers its id.
    pub fn create_account(&self, name: &str) -> String {
        self.env.state().data.create_account(name)
    }

    pub fn stats(&self) -> DynamicsStats {
        let state = self.env.state();
        DynamicsStats {
            throttled: state.throttle.throttled,
            ..state.stats
        }
    }

    /// API writes that landed on contact `id` (updates and upserts; a person's edits and
    /// rolled-back change sets excluded).
    pub fn writes_to(&self, id: &str) -> u64 {
        self.env.state().data.writes_to(id)
    }

    /// Sets the service protection limits (per user; the fake has one user).
    pub fn set_service_protection(&self, limits: ServiceProtection) {
        self.env.state().throttle.limits = limits;
    }

    /// Tokens issued from now on expire after `lifetime` (`expires_in` says so).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.env.state().token_lifetime = lifetime;
    }

    /// Ends every token issued: the next request with any of them answers 401.
    pub fn invalidate_tokens(&self) {
        self.env.state().tokens.clear();
    }

    /// Token requests received, granted or not.
    pub fn token_requests(&self) -> u64 {
        self.env.state().token_requests
    }

    /// Per row id, the writes that began while another write to it was in flight (the rows
    /// of [`DynamicsStats::overlapping_writes`]).
    pub fn overlapping_writes_by_record(&self) -> BTreeMap<String, u64> {
        self.env.state().overlaps_by_record.clone()
    }

    /// Token requests that arrived while another was being answered.
    pub fn overlapping_token_requests(&self) -> u64 {
        self.env.state().overlapping_token_requests
    }
}

impl Drop for DynamicsSandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SandboxCrm for DynamicsSandbox {
    fn system(&self) -> &'static str {
        "dynamics"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connection_settings(&self) -> Map<String, Value> {
        let mut settings = Map::new();
        settings.insert("base_url".into(), Value::String(self.base_url()));
        settings.insert("tenant_id".into(), Value::String(self.tenant_id()));
        settings.insert("token_url".into(), Value::String(self.token_url()));
        settings
    }

    fn connection_secrets(&self) -> BTreeMap<String, String> {
        let credentials = self.credentials();
        BTreeMap::from([
            ("client_id".to_string(), credentials.client_id),
            ("client_secret".to_string(), credentials.client_secret),
        ])
    }

    fn faults(&self) -> &Faults {
        &self.env.faults
    }
}

/// An update body from column names and values; `parentcustomerid_account` becomes its bind.
fn update_body(columns: &[(&str, &str)]) -> Map<String, Value> {
    columns
        .iter()
        .map(|(name, value)| {
            if *name == org::PARENT_ACCOUNT {
                (
                    format!("{name}@odata.bind"),
                    Value::String(format!("/accounts({value})")),
                )
            } else {
                (name.to_string(), Value::String(value.to_string()))
            }
        })
        .collect()
}

/// Demo contacts, every third at one of a few demo accounts.
fn seed(data: &mut OrgData, demo_records: usize) {
    const FIRST: [&str; 6] = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"];
    const LAST: [&str; 6] = [
        "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson",
    ];
    const CITIES: [&str; 4] = ["London", "Arlington", "Austin", "Boston"];
    let accounts: Vec<String> = ["Contoso", "Fabrikam", "Northwind Traders"]
        .iter()
        .map(|name| data.create_account(name))
        .collect();
    for n in 0..demo_records {
        let (first, last) = (FIRST[n % FIRST.len()], LAST[(n / FIRST.len()) % LAST.len()]);
        let email = format!(
            "{}.{}{n}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        let phone = format!("+1 555 {:04}", n % 10_000);
        let mut columns = vec![
            ("firstname", first),
            ("lastname", last),
            ("emailaddress1", email.as_str()),
            ("telephone1", phone.as_str()),
            ("address1_city", CITIES[n % CITIES.len()]),
            ("jobtitle", "Engineer"),
        ];
        if n % 3 == 0 {
            columns.push((org::PARENT_ACCOUNT, &accounts[n % accounts.len()]));
        }
        data.create_contact(&update_body(&columns))
            .expect("demo values fit");
    }
}

/// A client secret in the identity platform's style (40 characters).
fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
    (0..40)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Starts the fake Dataverse for the daemon's sandbox mode (the kit's [`SandboxStart`]).
///
/// [`SandboxStart`]: unisync_kit::SandboxStart
pub fn start(listen: SocketAddr, demo_records: usize) -> unisync_kit::SandboxFuture {
    Box::pin(async move {
        let sandbox: Arc<dyn SandboxCrm> =
            Arc::new(DynamicsSandbox::start(listen, demo_records).await?);
        Ok(sandbox)
    })
}
