//! The fake HubSpot API: contacts (single and batch update, read, list), company
//! associations (v4), account details and OAuth refresh, answering in HubSpot's own shapes
//! (from HubSpot's API documentation), in memory, on loopback.
//!
//! Tests drive it in-process through [`HubspotSandbox`]'s inspection methods: create and
//! read records behind the adapter's back, edit them as a person would and merge them as
//! HubSpot does, switch on rate limits, short-lived tokens and [`Fault`](unisync_sandbox::Fault)s, and
//! read [`HubspotStats`] afterwards.
//!
//! Like HubSpot, it applies a write it has received even when the client hangs up before
//! the answer (a client timeout does not undo a write). Overlapping writes to one contact are
//! only seen while both requests are being answered: set a latency
//! (`faults().set_latency(..)`) to make the check and late landings meaningful.

mod access;
mod email;
mod routes;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access::{AccountTimeZone, RateLimits, Tokens};
use store::Store;
use unisync_sandbox::{Faults, SandboxCrm};

/// Request counts of a running fake HubSpot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubspotStats {
    /// CRM API requests (every `/crm/...` call; token and account details requests excluded).
    pub requests: u64,
    /// Account details requests (`/account-info/v3/details`).
    pub account_details: u64,
    /// `batch/update` calls.
    pub batch_updates: u64,
    /// Contact writes that landed (a batch of 100 counts 100).
    pub contacts_written: u64,
    /// 429 answers, from the limits or from scripted faults.
    pub rate_limited: u64,
    /// Times a request started writing a contact while another request was still writing
    /// the same contact id. unisync must never cause one.
    pub overlapping_writes: u64,
}

/// The OAuth client and refresh token the fake accepts at `/oauth/v1/token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

/// A running fake HubSpot. Dropping it stops the server.
pub struct HubspotSandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl HubspotSandbox {
    /// Starts the fake on `listen` (port 0 for any), seeded with `demo_records` contacts,
    /// some of them associated with demo companies.
    pub async fn start(listen: SocketAddr, demo_records: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(addr.port()));
        seed_demo_records(&mut shared.store.lock().unwrap(), demo_records);
        let router = routes::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "the HubSpot sandbox stopped");
            }
        });
        Ok(HubspotSandbox {
            addr,
            shared,
            server,
        })
    }

    /// `http://ADDR`, the `base_url` that points a HubSpot connection here.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The static private-app token the fake always accepts.
    pub fn access_token(&self) -> String {
        self.shared.tokens.lock().unwrap().static_token.clone()
    }

    /// The OAuth client and the refresh token accepted now (it changes after each refresh
    /// when rotation is on).
    pub fn oauth_credentials(&self) -> OAuthCredentials {
        let tokens = self.shared.tokens.lock().unwrap();
        OAuthCredentials {
            client_id: tokens.client_id.clone(),
            client_secret: tokens.client_secret.clone(),
            refresh_token: tokens.refresh_token.clone(),
        }
    }

    /// Creates a contact from HubSpot property names and values (`("firstname", "Ann")`);
    /// returns its id. Empty values are left out; the email is stored lower-cased.
    pub fn create_contact(&self, properties: &[(&str, &str)]) -> String {
        self.shared
            .store
            .lock()
            .unwrap()
            .create_contact(properties)
            .to_string()
    }

    /// The contact's stored properties by HubSpot name, with `hs_object_id`, `createdate`,
    /// `lastmodifieddate` and, once others were merged into it, `hs_merged_object_ids`;
    /// cleared properties are absent. A merged-away id answers with the contact it was merged
    /// into (whose `hs_object_id` differs); `None` when there is no such contact.
    pub fn contact(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.shared.store.lock().unwrap().properties(id)
    }

    /// Deletes a contact (and its associations).
    pub fn delete_contact(&self, id: &str) {
        self.shared.store.lock().unwrap().delete_contact(id);
    }

    /// Merges contact `merged` into `primary`, as a HubSpot user would, and answers the id of
    /// the contact that results. As in HubSpot today, that is a new contact with a new id:
    /// the primary's values win, the other's fill the properties the primary lacks, and
    /// `hs_merged_object_ids` lists both old ids. Both old ids keep addressing it: a read
    /// answers the new contact (its `id` differs from the one asked for), and a write lands on
    /// it and answers with the new id (so a batch's `results` lack the id that was sent).
    /// `None` when either is missing or they are the same contact.
    pub fn merge_contacts(&self, primary: &str, merged: &str) -> Option<String> {
        let survivor = self.shared.store.lock().unwrap().merge(primary, merged)?;
        Some(survivor.to_string())
    }

    /// Edits a contact as a person in HubSpot's own screens would: the values pass HubSpot's
    /// validation and are stored as an API write stores them (an empty value clears), and
    /// `updatedAt` / `lastmodifieddate` move. It is no API request: [`HubspotStats`] does not
    /// count it, so tests can tell a person's write from unisync's. `Err` holds HubSpot's
    /// message when a value is refused or no contact has that id.
    pub fn edit_as_person(&self, id: &str, properties: &[(&str, &str)]) -> Result<(), String> {
        let properties: serde_json::Map<String, serde_json::Value> = properties
            .iter()
            .map(|(name, value)| (name.to_string(), (*value).into()))
            .collect();
        let mut store = self.shared.store.lock().unwrap();
        let normalised = store
            .normalise(&properties)
            .map_err(|invalid| store::invalid_properties_message(&invalid))?;
        match store.update(id, &normalised) {
            Ok(_) => Ok(()),
            Err(store::WriteError::NotFound) => Err(format!("No contact with ID {id} exists")),
            Err(store::WriteError::Conflict { existing_id }) => {
                Err(store::conflict_message(existing_id))
            }
        }
    }

    /// Adds a custom contact property (for field-table overrides in config).
    pub fn define_property(&self, name: &str) {
        self.shared.store.lock().unwrap().define_property(name);
    }

    /// Creates a company; returns its id.
    pub fn create_company(&self, name: &str) -> String {
        self.shared
            .store
            .lock()
            .unwrap()
            .create_company(name)
            .to_string()
    }

    /// The ids of the companies a contact is associated with (empty for a missing contact).
    pub fn company_ids_of(&self, contact_id: &str) -> Vec<String> {
        self.shared
            .store
            .lock()
            .unwrap()
            .company_ids(contact_id)
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Request counts so far.
    /// Per contact id, the writes that began while another write to it was in flight (the
    /// contacts of [`HubspotStats::overlapping_writes`]).
    pub fn overlapping_writes_by_record(&self) -> BTreeMap<String, u64> {
        self.shared.overlaps_by_record.lock().unwrap().clone()
    }

    pub fn stats(&self) -> HubspotStats {
        *self.shared.stats.lock().unwrap()
    }

    /// Limits CRM requests to `max` per rolling `window` (HubSpot: 100 to 250 per 10 s):
    /// beyond it, 429 `TEN_SECONDLY_ROLLING`. Every answer then carries
    /// `X-HubSpot-RateLimit-Max`, `-Remaining` and `-Interval-Milliseconds`.
    pub fn set_rate_limit(&self, max: u64, window: Duration) {
        self.shared
            .limits
            .lock()
            .unwrap()
            .set_window(Some((max, window)));
    }

    /// Removes the rolling-window limit (the default).
    pub fn remove_rate_limit(&self) {
        self.shared.limits.lock().unwrap().set_window(None);
    }

    /// Limits API requests per day (`None`: no limit, the default): beyond it, 429 `DAILY`.
    /// Answers then carry `X-HubSpot-RateLimit-Daily` and `-Daily-Remaining`. The count
    /// starts again at midnight in the account's time zone ([`HubspotSandbox::set_time_zone`]).
    pub fn set_daily_limit(&self, limit: Option<u64>) {
        self.shared.limits.lock().unwrap().set_daily(limit);
    }

    /// Sets the account's time zone (an IANA name; `US/Eastern` unless set), which the
    /// account details API reports and in which the daily limit resets.
    ///
    /// # Panics
    ///
    /// When `name` is not a time zone: a test's mistake.
    pub fn set_time_zone(&self, name: &str) {
        let time_zone = AccountTimeZone::named(name)
            .unwrap_or_else(|| panic!("{name} is not an IANA time zone name"));
        self.shared.limits.lock().unwrap().set_time_zone(time_zone);
    }

    /// The account's time zone, as the account details API names it.
    pub fn time_zone(&self) -> String {
        self.shared.limits.lock().unwrap().time_zone().name.clone()
    }

    /// Fault switches for the v4 association calls alone (link, unlink, list), taken when
    /// [`SandboxCrm::faults`] has none to show: to fail a company link after the contact's
    /// properties have landed.
    pub fn association_faults(&self) -> &Faults {
        &self.shared.association_faults
    }

    /// How long OAuth access tokens issued from now on live (default 30 minutes; the answer's
    /// `expires_in` says at least 1 second).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.tokens.lock().unwrap().lifetime = lifetime;
    }

    /// Whether each refresh issues a new refresh token and retires the old one.
    pub fn set_refresh_token_rotation(&self, rotate: bool) {
        self.shared.tokens.lock().unwrap().rotate_refresh_tokens = rotate;
    }

    /// Successful OAuth refreshes so far.
    pub fn token_refreshes(&self) -> u64 {
        self.shared.tokens.lock().unwrap().refreshes
    }

    /// Token requests that started while another was still being answered.
    pub fn overlapping_refreshes(&self) -> u64 {
        self.shared.tokens.lock().unwrap().overlapping_refreshes
    }
}

impl Drop for HubspotSandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SandboxCrm for HubspotSandbox {
    fn system(&self) -> &'static str {
        "hubspot"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connection_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut settings = serde_json::Map::new();
        settings.insert("base_url".into(), self.base_url().into());
        settings
    }

    fn connection_secrets(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("access_token".to_string(), self.access_token())])
    }

    fn faults(&self) -> &Faults {
        &self.shared.faults
    }
}

/// State shared by the routes and the inspection methods.
struct Shared {
    store: Mutex<Store>,
    tokens: Mutex<Tokens>,
    limits: Mutex<RateLimits>,
    stats: Mutex<HubspotStats>,
    /// Contact id to the number of requests writing it right now.
    writes_in_flight: Mutex<HashMap<String, usize>>,
    /// Contact id → writes to it that began while another was in flight.
    overlaps_by_record: Mutex<BTreeMap<String, u64>>,
    faults: Faults,
    association_faults: Faults,
    portal_id: u64,
}

impl Shared {
    fn new(portal_id: u16) -> Self {
        let portal_tag = portal_id.to_string();
        Shared {
            store: Mutex::new(Store::new()),
            tokens: Mutex::new(Tokens::new(&portal_tag)),
            limits: Mutex::new(RateLimits::new()),
            stats: Mutex::new(HubspotStats::default()),
            writes_in_flight: Mutex::new(HashMap::new()),
            overlaps_by_record: Mutex::new(BTreeMap::new()),
            faults: Faults::default(),
            association_faults: Faults::default(),
            portal_id: u64::from(portal_id),
        }
    }

    fn record(&self, change: impl FnOnce(&mut HubspotStats)) {
        change(&mut self.stats.lock().unwrap());
    }

    /// Waits the configured latency: the time a read takes.
    async fn pause(&self) {
        let latency = self.faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Applies a write to `ids` at the end of the configured latency, as `apply` says, and
    /// returns its answer. The work runs on its own task: a client that hangs up (a timeout)
    /// drops the request's handler, but, as at HubSpot, not the write it had sent.
    async fn land<T: Send + 'static>(
        self: &Arc<Self>,
        ids: Vec<String>,
        apply: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> T {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let _writing = shared.begin_writes(&ids).await;
            apply(&shared)
        })
        .await
        .expect("a sandbox write does not panic")
    }

    /// Marks `ids` as being written (counting overlaps with writes already running), then
    /// waits the configured latency. The marks last until the guard drops.
    async fn begin_writes(&self, ids: &[String]) -> WritesInFlight<'_> {
        {
            let mut in_flight = self.writes_in_flight.lock().unwrap();
            let mut overlaps = 0;
            for id in ids {
                let writers = in_flight.entry(id.clone()).or_default();
                if *writers > 0 {
                    overlaps += 1;
                    *self
                        .overlaps_by_record
                        .lock()
                        .unwrap()
                        .entry(id.clone())
                        .or_default() += 1;
                }
                *writers += 1;
            }
            if overlaps > 0 {
                self.record(|stats| stats.overlapping_writes += overlaps);
            }
        }
        let guard = WritesInFlight {
            shared: self,
            ids: ids.to_vec(),
        };
        self.pause().await;
        guard
    }

    fn begin_refresh(&self) -> RefreshInProgress<'_> {
        self.tokens.lock().unwrap().begin_refresh();
        RefreshInProgress { shared: self }
    }
}

/// Contact ids being written by one request.
struct WritesInFlight<'a> {
    shared: &'a Shared,
    ids: Vec<String>,
}

impl Drop for WritesInFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.shared.writes_in_flight.lock().unwrap();
        for id in &self.ids {
            if let Some(writers) = in_flight.get_mut(id) {
                *writers -= 1;
                if *writers == 0 {
                    in_flight.remove(id);
                }
            }
        }
    }
}

/// One token request being answered.
struct RefreshInProgress<'a> {
    shared: &'a Shared,
}

impl Drop for RefreshInProgress<'_> {
    fn drop(&mut self) {
        self.shared.tokens.lock().unwrap().end_refresh();
    }
}

/// Realistic contacts for demos: names, business emails (under `example.com`: HubSpot refuses
/// reserved TLDs such as `.example`), phones, addresses, job titles, and every third contact
/// associated with one of a few companies.
fn seed_demo_records(store: &mut Store, count: usize) {
    const FIRST_NAMES: [&str; 10] = [
        "Ana", "Ben", "Chloe", "Dmitri", "Emeka", "Fatima", "Gustavo", "Hana", "Ivan", "Jia",
    ];
    const LAST_NAMES: [&str; 10] = [
        "Silva", "Okafor", "Mueller", "Tanaka", "Kowalski", "Haddad", "Nguyen", "Larsen", "Garcia",
        "Brown",
    ];
    const PLACES: [(&str, &str, &str, &str); 5] = [
        ("Lisbon", "Lisboa", "1100-148", "Portugal"),
        ("Austin", "TX", "78701", "United States"),
        ("Berlin", "Berlin", "10115", "Germany"),
        ("Toronto", "ON", "M5H 2N2", "Canada"),
        ("Osaka", "Osaka", "530-0001", "Japan"),
    ];
    const JOB_TITLES: [&str; 5] = [
        "Head of Sales",
        "Procurement Manager",
        "CTO",
        "Account Executive",
        "Operations Lead",
    ];
    const COMPANIES: [(&str, &str); 4] = [
        ("Northwind Traders", "northwind.example.com"),
        ("Acme Logistics", "acme-logistics.example.com"),
        ("Globex Health", "globex.example.com"),
        ("Initech Software", "initech.example.com"),
    ];
    let companies: Vec<u64> = COMPANIES
        .iter()
        .map(|(name, _)| store.create_company(name))
        .collect();
    for n in 0..count {
        let first = FIRST_NAMES[n % FIRST_NAMES.len()];
        let last = LAST_NAMES[(n / FIRST_NAMES.len() + n) % LAST_NAMES.len()];
        let (city, state, zip, country) = PLACES[n % PLACES.len()];
        let (company, domain) = COMPANIES[n % COMPANIES.len()];
        let email = format!("{first}.{last}.{n}@{domain}").to_lowercase();
        let phone = format!("+1 555 {:04}", n % 10_000);
        let address = format!("{} Market Street", 10 + n % 890);
        let id = store.create_contact(&[
            ("email", &email),
            ("firstname", first),
            ("lastname", last),
            ("phone", &phone),
            ("address", &address),
            ("city", city),
            ("state", state),
            ("zip", zip),
            ("country", country),
            ("jobtitle", JOB_TITLES[n % JOB_TITLES.len()]),
            ("company", company),
        ]);
        if n % 3 == 0 {
            store
                .associate(&id.to_string(), &companies[n % companies.len()].to_string())
                .expect("both were just created");
        }
    }
}
