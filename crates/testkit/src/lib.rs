//! The behaviour suite every unisync adapter passes against its fake CRM: one named test per
//! rule, as object_store's integration functions are for its backends.
//!
//! A provider crate implements [`AdapterHarness`] in its tests — its adapter pointed at its
//! fake, plus the fake's controls — and instantiates the suite:
//!
//! ```ignore
//! struct MyHarness { /* the fake and the adapter */ }
//! impl unisync_testkit::AdapterHarness for MyHarness { /* ... */ }
//! unisync_testkit::behaviour_suite!(MyHarness);
//! ```
//!
//! which generates one `#[tokio::test]` per rule of [`rules`], named after it, so that a
//! failure names the behaviour that broke ("behaviour rule `null_clears_a_field` failed:
//! ...").
//!
//! The suite's expectations never come from the adapter: a harness reads the fake's records
//! in the CRM's own field names, and the suite maps them with the harness's
//! [`FIELDS`](AdapterHarness::FIELDS), a table restated from the vendor's documentation. An
//! adapter whose mapping is wrong therefore fails, instead of agreeing with itself.
//!
//! [`Flawed`] wraps a harness's adapter with a deliberate flaw; [`behaviour_rule_fails!`]
//! proves the suite catches it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use unisync_core::{
    AdapterError, ApiUsage, Capabilities, ContactField, ContactPage, ContactPatch, FieldMapping,
    FieldViolation, PushItem, PushResult, SourceAdapter, SourceContact,
};
use unisync_sandbox::Faults;

pub mod rules;

/// An adapter wired to its running fake CRM, and the fake's controls, in the CRM's own terms.
pub trait AdapterHarness: Send + Sync + Sized + 'static {
    /// Each unified field and the CRM field that holds it, from the vendor's documentation
    /// (restated here, never taken from the adapter's mapping). Fields the CRM links rather
    /// than stores (`unified_customer_id`) are not listed.
    const FIELDS: &'static [(ContactField, &'static str)];
    /// The most characters the CRM takes in each field, from the vendor's documentation.
    const LIMITS: &'static [(ContactField, usize)];
    /// Fields the CRM refuses to leave empty.
    const REQUIRED: &'static [ContactField];
    /// Whether the CRM says how long to wait when its short-window rate limit is hit
    /// (HubSpot's `Retry-After`; Salesforce's concurrency limit names no wait).
    const RATE_LIMIT_NAMES_A_WAIT: bool = true;
    /// Whether the adapter's credentials can be refreshed (false for a static token).
    const REFRESHES_TOKENS: bool = true;

    /// A value the CRM itself refuses for a field, by its own validation rules (the adapter
    /// sends it: the suite pushes without validating first). By default an email without an
    /// `@`, which HubSpot and Salesforce refuse; a CRM that keeps any email text (Dataverse)
    /// names another refusal, such as a value longer than the column.
    fn refused_value() -> (ContactField, String) {
        (ContactField::Email, "not-an-email".to_string())
    }
    /// A fresh fake on a loopback port and an adapter pointed at it.
    fn start() -> impl Future<Output = Self> + Send;
    /// The adapter under test.
    fn adapter(&self) -> Arc<dyn SourceAdapter>;
    /// An adapter pointed at the same fake whose credentials the CRM refuses, refresh
    /// included (a revoked refresh token, a wrong static token).
    fn adapter_with_refused_credentials(&self) -> Arc<dyn SourceAdapter>;
    /// Creates a record holding `fields` (CRM field names and values); answers its id.
    fn create_record(&self, fields: &[(&str, &str)]) -> String;
    /// The record's non-empty values by CRM field name; `None` when it does not exist.
    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>>;
    /// Deletes a record behind the adapter's back.
    fn delete_record(&self, source_id: &str);
    /// Creates the CRM's kind of customer (company, account); answers its id.
    fn create_customer(&self, name: &str) -> String;
    /// The ids of the customers the record is linked to.
    fn customer_links(&self, source_id: &str) -> Vec<String>;
    /// The fake's fault switches.
    fn faults(&self) -> &Faults;
}

/// What a generated test reports when `rule` failed: the rule's name and what went wrong.
pub fn failure_message(rule: &str, outcome: &Result<(), String>) -> Option<String> {
    let failure = outcome.as_ref().err()?;
    Some(format!("behaviour rule `{rule}` failed: {failure}"))
}

/// Ends a generated test: panics with the [`failure_message`] when `rule` failed.
pub fn verdict(rule: &str, outcome: Result<(), String>) {
    if let Some(message) = failure_message(rule, &outcome) {
        panic!("{message}");
    }
}

/// Runs one rule, turning a panic inside it into its failure, so that every failure is
/// reported with the rule's name.
pub async fn run_rule(rule: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(rule).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_else(|| "panicked".to_string())),
    }
}

/// Generates one `#[tokio::test]` per behaviour rule for a harness type, each named after
/// its rule. Use it once per harness, in a module of its own when a crate has several.
#[macro_export]
macro_rules! behaviour_suite {
    ($harness:ty) => {
        $crate::behaviour_suite!(
            @rules $harness,
            partial_update_leaves_other_fields_alone,
            null_clears_a_field,
            every_field_round_trips_through_the_mapping,
            batch_results_map_to_their_own_edits,
            rate_limit_is_rate_limited,
            daily_quota_is_quota_exhausted,
            an_expired_token_is_refreshed,
            refused_credentials_are_unauthorized,
            server_errors_are_retryable,
            refused_values_are_permanent_naming_the_field,
            a_deleted_record_is_record_gone,
            customer_links_are_set_and_removed,
            validate_refuses_values_beyond_the_crms_limits,
            pull_pages_through_every_record,
        );
    };
    (@rules $harness:ty, $($rule:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $rule() {
            let harness = <$harness as $crate::AdapterHarness>::start().await;
            $crate::verdict(
                stringify!($rule),
                $crate::run_rule($crate::rules::$rule(&harness)).await,
            );
        }
    )*};
}

/// Generates a test proving that `rule` fails for a harness (one whose adapter is
/// [`Flawed`]), with the message the suite's own test would show, naming the rule.
#[macro_export]
macro_rules! behaviour_rule_fails {
    ($harness:ty, $rule:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $rule() {
            let harness = <$harness as $crate::AdapterHarness>::start().await;
            let outcome = $crate::run_rule($crate::rules::$rule(&harness)).await;
            let message = $crate::failure_message(stringify!($rule), &outcome).expect(concat!(
                "the flaw passes `",
                stringify!($rule),
                "`"
            ));
            let named = concat!("behaviour rule `", stringify!($rule), "` failed: ");
            assert!(message.starts_with(named), "{message}");
            eprintln!("{message}");
        }
    };
}

/// A deliberate flaw of an adapter, for proving that the suite can fail.
pub trait Flaw: Send + Sync + 'static {
    /// The items as the flawed adapter sends them.
    fn items(items: &[PushItem]) -> Vec<PushItem> {
        items.to_vec()
    }
    /// The results as the flawed adapter reports them.
    fn results(results: Vec<PushResult>) -> Vec<PushResult> {
        results
    }
}

/// Drops every clear from an edit, as an adapter that skips `None` values would.
pub struct DropsNullClears;

impl Flaw for DropsNullClears {
    fn items(items: &[PushItem]) -> Vec<PushItem> {
        items
            .iter()
            .map(|item| PushItem {
                patch: item
                    .patch
                    .iter()
                    .filter(|(_, value)| value.is_some())
                    .map(|(field, value)| (field, value.map(str::to_string)))
                    .collect(),
                ..item.clone()
            })
            .collect()
    }
}

/// Reports a deleted record as a permanent refusal, as an adapter that reads every 404 as
/// a validation error would.
pub struct MisreadsAMissingRecord;

impl Flaw for MisreadsAMissingRecord {
    fn results(results: Vec<PushResult>) -> Vec<PushResult> {
        results
            .into_iter()
            .map(|result| {
                result.map_err(|error| match error.kind {
                    unisync_core::ErrorKind::RecordGone => {
                        AdapterError::permanent(error.code, error.message, None)
                    }
                    _ => error,
                })
            })
            .collect()
    }
}

/// A harness `H` whose adapter has the flaw `F`.
pub struct Flawed<H, F> {
    inner: H,
    flaw: std::marker::PhantomData<F>,
}

impl<H: AdapterHarness, F: Flaw> AdapterHarness for Flawed<H, F> {
    const FIELDS: &'static [(ContactField, &'static str)] = H::FIELDS;
    const LIMITS: &'static [(ContactField, usize)] = H::LIMITS;
    const REQUIRED: &'static [ContactField] = H::REQUIRED;
    const RATE_LIMIT_NAMES_A_WAIT: bool = H::RATE_LIMIT_NAMES_A_WAIT;
    const REFRESHES_TOKENS: bool = H::REFRESHES_TOKENS;

    async fn start() -> Self {
        Flawed {
            inner: H::start().await,
            flaw: std::marker::PhantomData,
        }
    }
    fn adapter(&self) -> Arc<dyn SourceAdapter> {
        Arc::new(FlawedAdapter::<F> {
            inner: self.inner.adapter(),
            flaw: std::marker::PhantomData,
        })
    }
    fn adapter_with_refused_credentials(&self) -> Arc<dyn SourceAdapter> {
        self.inner.adapter_with_refused_credentials()
    }
    fn create_record(&self, fields: &[(&str, &str)]) -> String {
        self.inner.create_record(fields)
    }
    fn crm_record(&self, source_id: &str) -> Option<BTreeMap<String, String>> {
        self.inner.crm_record(source_id)
    }
    fn delete_record(&self, source_id: &str) {
        self.inner.delete_record(source_id)
    }
    fn create_customer(&self, name: &str) -> String {
        self.inner.create_customer(name)
    }
    fn customer_links(&self, source_id: &str) -> Vec<String> {
        self.inner.customer_links(source_id)
    }
    fn faults(&self) -> &Faults {
        self.inner.faults()
    }
}

/// An adapter with the flaw `F`: everything else is the wrapped adapter's.
struct FlawedAdapter<F> {
    inner: Arc<dyn SourceAdapter>,
    flaw: std::marker::PhantomData<F>,
}

#[async_trait]
impl<F: Flaw> SourceAdapter for FlawedAdapter<F> {
    fn system(&self) -> &str {
        self.inner.system()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn mapping(&self) -> &FieldMapping {
        self.inner.mapping()
    }
    fn validate(&self, patch: &ContactPatch) -> Vec<FieldViolation> {
        self.inner.validate(patch)
    }
    async fn wait_for_capacity(&self) {
        self.inner.wait_for_capacity().await
    }
    async fn push(&self, items: &[PushItem]) -> Vec<PushResult> {
        F::results(self.inner.push(&F::items(items)).await)
    }
    async fn pull(&self, cursor: Option<&str>) -> Result<ContactPage, AdapterError> {
        self.inner.pull(cursor).await
    }
    async fn read(&self, source_ids: &[String]) -> Result<Vec<SourceContact>, AdapterError> {
        self.inner.read(source_ids).await
    }
    fn api_usage(&self) -> Option<ApiUsage> {
        self.inner.api_usage()
    }
}
