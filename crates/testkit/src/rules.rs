//! The behaviour rules. Each is one check of one behaviour, answering `Err` with what went
//! wrong; [`behaviour_suite!`](crate::behaviour_suite) makes each a test named after it.

use std::collections::BTreeMap;
use std::time::Duration;

use unisync_core::{
    AdapterError, ContactField, ContactPatch, CustomerLink, ErrorKind, PushItem, PushResult,
    SourceAdapter,
};
use unisync_sandbox::Fault;

use crate::AdapterHarness;

/// Fails the rule with a message unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// The CRM field holding `field`, by the harness's own table.
fn crm_field<H: AdapterHarness>(field: ContactField) -> Result<&'static str, String> {
    H::FIELDS
        .iter()
        .find(|(unified, _)| *unified == field)
        .map(|(_, crm)| *crm)
        .ok_or_else(|| format!("the harness's FIELDS table has no `{field}`"))
}

/// Creates a record from unified values, written under the harness's CRM field names.
fn create<H: AdapterHarness>(
    harness: &H,
    values: &[(ContactField, &str)],
) -> Result<String, String> {
    let fields = values
        .iter()
        .map(|(field, value)| Ok((crm_field::<H>(*field)?, *value)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(harness.create_record(&fields))
}

/// A record with a few values, tagged so that its email is its own.
fn seed<H: AdapterHarness>(harness: &H, tag: &str) -> Result<String, String> {
    create(
        harness,
        &[
            (ContactField::Email, &format!("{tag}@example.com")),
            (ContactField::FirstName, "Seed"),
            (ContactField::LastName, "Record"),
            (ContactField::Phone, "+1 555 0100"),
            (ContactField::City, "Lisbon"),
        ],
    )
}

/// The record's values as the CRM stores them, in unified terms by the harness's table.
fn stored<H: AdapterHarness>(
    harness: &H,
    source_id: &str,
) -> Result<BTreeMap<ContactField, String>, String> {
    let record = harness
        .crm_record(source_id)
        .ok_or_else(|| format!("the CRM has no record {source_id}"))?;
    Ok(H::FIELDS
        .iter()
        .filter_map(|(field, crm)| Some((*field, record.get(*crm)?.clone())))
        .collect())
}

fn patch(values: &[(ContactField, &str)]) -> ContactPatch {
    values
        .iter()
        .map(|(field, value)| (*field, Some(value.to_string())))
        .collect()
}

fn item(source_id: &str, patch: ContactPatch) -> PushItem {
    PushItem {
        source_id: source_id.to_string(),
        patch,
        customer: CustomerLink::Unchanged,
    }
}

/// Pushes one item; exactly one result must come back.
async fn push_one(adapter: &dyn SourceAdapter, item: PushItem) -> Result<PushResult, String> {
    let mut results = adapter.push(std::slice::from_ref(&item)).await;
    ensure!(
        results.len() == 1,
        "push of one item answered {} results",
        results.len()
    );
    Ok(results.remove(0))
}

/// Pushes one item that must land.
async fn lands(adapter: &dyn SourceAdapter, item: PushItem) -> Result<(), String> {
    match push_one(adapter, item).await? {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("the push should land, got {error:?}")),
    }
}

/// Pushes one item that must fail.
async fn fails(adapter: &dyn SourceAdapter, item: PushItem) -> Result<AdapterError, String> {
    match push_one(adapter, item).await? {
        Ok(confirmed) => Err(format!("the push should fail, it landed: {confirmed:?}")),
        Err(error) => Ok(error),
    }
}

fn expect_value<H: AdapterHarness>(
    harness: &H,
    source_id: &str,
    field: ContactField,
    expected: Option<&str>,
) -> Result<(), String> {
    let values = stored(harness, source_id)?;
    let actual = values.get(&field).map(String::as_str);
    ensure!(
        actual == expected,
        "the CRM's {} ({}) of {source_id} is {actual:?}, expected {expected:?}",
        crm_field::<H>(field)?,
        field
    );
    Ok(())
}

/// Fields the edit does not name keep their CRM values.
pub async fn partial_update_leaves_other_fields_alone<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let id = seed(harness, "partial")?;
    let edit = patch(&[
        (ContactField::FirstName, "Changed"),
        (ContactField::City, "Porto"),
    ]);
    lands(harness.adapter().as_ref(), item(&id, edit)).await?;
    expect_value(harness, &id, ContactField::FirstName, Some("Changed"))?;
    expect_value(harness, &id, ContactField::City, Some("Porto"))?;
    expect_value(harness, &id, ContactField::Phone, Some("+1 555 0100"))?;
    expect_value(harness, &id, ContactField::LastName, Some("Record"))?;
    expect_value(
        harness,
        &id,
        ContactField::Email,
        Some("partial@example.com"),
    )
}

/// A `None` in the patch empties the CRM field; fields not named stay.
pub async fn null_clears_a_field<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let id = seed(harness, "clear")?;
    let mut edit = ContactPatch::new();
    edit.clear(ContactField::Phone);
    lands(harness.adapter().as_ref(), item(&id, edit)).await?;
    expect_value(harness, &id, ContactField::Phone, None)?;
    expect_value(harness, &id, ContactField::City, Some("Lisbon"))
}

/// A value for every field the CRM stores, acceptable to every CRM.
fn sample(field: ContactField) -> &'static str {
    match field {
        ContactField::Email => "round.trip@example.com",
        ContactField::FirstName => "Ada",
        ContactField::LastName => "Lovelace",
        ContactField::Phone => "+44 20 7946 0018",
        ContactField::MobilePhone => "+44 7700 900123",
        ContactField::Fax => "+44 20 7946 0019",
        ContactField::Address => "12 St James's Square",
        ContactField::City => "London",
        ContactField::State => "Greater London",
        ContactField::Zip => "SW1Y 4JH",
        ContactField::Country => "United Kingdom",
        ContactField::Position => "Analyst",
        _ => "value",
    }
}

/// Every field reaches the CRM field the vendor documents for it, is confirmed with what the
/// CRM stored, and comes back from the CRM under its unified name (by `read`, or by `pull`
/// for an adapter that cannot read).
pub async fn every_field_round_trips_through_the_mapping<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let adapter = harness.adapter();
    let values: Vec<(ContactField, &str)> = H::FIELDS
        .iter()
        .map(|(field, _)| (*field, sample(*field)))
        .collect();
    let id = seed(harness, "written")?;
    let confirmed = match push_one(adapter.as_ref(), item(&id, patch(&values))).await? {
        Ok(confirmed) => confirmed,
        Err(error) => return Err(format!("the push should land, got {error:?}")),
    };
    for (field, value) in &values {
        expect_value(harness, &id, *field, Some(value))?;
        let reported = confirmed.values.get(field).cloned().flatten();
        ensure!(
            reported.as_deref() == Some(*value),
            "the push confirmed {field} as {reported:?}, the CRM stored {value:?}"
        );
    }
    let created = create(harness, &values)?;
    let contact = if adapter.capabilities().reads_records {
        adapter
            .read(std::slice::from_ref(&created))
            .await
            .map_err(|error| format!("read: {error:?}"))?
            .into_iter()
            .find(|contact| contact.source_id == created)
    } else {
        pulled(adapter.as_ref())
            .await?
            .into_iter()
            .find(|contact| contact.source_id == created)
    }
    .ok_or_else(|| format!("the adapter does not find record {created}"))?;
    for (field, value) in &values {
        let read = contact.values.get(field).cloned().flatten();
        ensure!(
            read.as_deref() == Some(*value),
            "the CRM's {} of {created} is {value:?}, the adapter read {field} as {read:?}",
            crm_field::<H>(*field)?
        );
    }
    Ok(())
}

/// In a batch, each item's result is its own, in order: the edits land on their own records,
/// and the deleted record's edit alone fails, as `RecordGone`.
pub async fn batch_results_map_to_their_own_edits<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let adapter = harness.adapter();
    let mut items = Vec::new();
    for n in 0..4 {
        let id = seed(harness, &format!("batch{n}"))?;
        items.push(item(
            &id,
            patch(&[(ContactField::City, &format!("City {n}"))]),
        ));
    }
    let gone = 1;
    harness.delete_record(&items[gone].source_id);
    let batch_size = adapter.capabilities().max_batch_size.max(1);
    let mut results = Vec::new();
    for chunk in items.chunks(batch_size) {
        let answered = adapter.push(chunk).await;
        ensure!(
            answered.len() == chunk.len(),
            "a push of {} items answered {} results",
            chunk.len(),
            answered.len()
        );
        results.extend(answered);
    }
    for (n, (item, result)) in items.iter().zip(&results).enumerate() {
        if n == gone {
            match result {
                Err(error) if error.kind == ErrorKind::RecordGone => {}
                other => {
                    return Err(format!(
                        "item {n} (the deleted record) should be RecordGone, got {other:?}"
                    ));
                }
            }
            continue;
        }
        let expected = format!("City {n}");
        match result {
            Ok(confirmed) => {
                let reported = confirmed.values.get(&ContactField::City).cloned().flatten();
                ensure!(
                    reported.as_deref() == Some(expected.as_str()),
                    "item {n}'s result confirms city {reported:?}, its edit was {expected:?}"
                );
            }
            Err(error) => return Err(format!("item {n} should land, got {error:?}")),
        }
        expect_value(
            harness,
            &item.source_id,
            ContactField::City,
            Some(&expected),
        )?;
    }
    Ok(())
}

/// The short-window rate limit is `RateLimited`, with the CRM's `Retry-After` when it names
/// one; nothing is written.
pub async fn rate_limit_is_rate_limited<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let id = seed(harness, "limited")?;
    harness.faults().fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: Some(3),
        },
    );
    let edit = item(&id, patch(&[(ContactField::City, "Faro")]));
    let error = fails(harness.adapter().as_ref(), edit).await?;
    let expected = H::RATE_LIMIT_NAMES_A_WAIT.then_some(Duration::from_secs(3));
    ensure!(
        error.kind
            == ErrorKind::RateLimited {
                retry_after: expected
            },
        "expected RateLimited after {expected:?}, got {error:?}"
    );
    expect_value(harness, &id, ContactField::City, Some("Lisbon"))
}

/// A spent daily (or long-window) budget is `QuotaExhausted`.
pub async fn daily_quota_is_quota_exhausted<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let id = seed(harness, "quota")?;
    harness.faults().fail_next(1, Fault::DailyLimit);
    let edit = item(&id, patch(&[(ContactField::City, "Faro")]));
    let error = fails(harness.adapter().as_ref(), edit).await?;
    ensure!(
        matches!(error.kind, ErrorKind::QuotaExhausted { .. }),
        "expected QuotaExhausted, got {error:?}"
    );
    expect_value(harness, &id, ContactField::City, Some("Lisbon"))
}

/// An access token the CRM no longer takes is refreshed and the request sent again, once:
/// the edit lands. (With a static token there is nothing to refresh: `Unauthorized`.)
pub async fn an_expired_token_is_refreshed<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let id = seed(harness, "expired")?;
    let adapter = harness.adapter();
    // A first request, so that the adapter holds a token that then expires.
    lands(
        adapter.as_ref(),
        item(&id, patch(&[(ContactField::City, "Braga")])),
    )
    .await?;
    harness.faults().fail_next(1, Fault::Unauthorized);
    let edit = item(&id, patch(&[(ContactField::City, "Faro")]));
    if H::REFRESHES_TOKENS {
        lands(adapter.as_ref(), edit).await?;
        expect_value(harness, &id, ContactField::City, Some("Faro"))
    } else {
        let error = fails(adapter.as_ref(), edit).await?;
        ensure!(
            error.kind == ErrorKind::Unauthorized,
            "a refused static token should be Unauthorized, got {error:?}"
        );
        Ok(())
    }
}

/// Credentials the CRM refuses, refresh included, are `Unauthorized`; nothing is written.
pub async fn refused_credentials_are_unauthorized<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let id = seed(harness, "refused")?;
    let adapter = harness.adapter_with_refused_credentials();
    let edit = item(&id, patch(&[(ContactField::City, "Faro")]));
    let error = fails(adapter.as_ref(), edit).await?;
    ensure!(
        error.kind == ErrorKind::Unauthorized,
        "expected Unauthorized, got {error:?}"
    );
    expect_value(harness, &id, ContactField::City, Some("Lisbon"))
}

/// A 5xx is `Retryable` and leaves the record as it was; the retry lands.
pub async fn server_errors_are_retryable<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let id = seed(harness, "outage")?;
    let adapter = harness.adapter();
    harness.faults().fail_next(1, Fault::ServerError(503));
    let edit = item(&id, patch(&[(ContactField::City, "Porto")]));
    let error = fails(adapter.as_ref(), edit.clone()).await?;
    ensure!(
        matches!(error.kind, ErrorKind::Retryable { .. }),
        "a 503 should be Retryable, got {error:?}"
    );
    expect_value(harness, &id, ContactField::City, Some("Lisbon"))?;
    lands(adapter.as_ref(), edit).await?;
    expect_value(harness, &id, ContactField::City, Some("Porto"))
}

/// A value the CRM refuses is `Permanent`, naming the unified field, with the CRM's code and
/// message.
pub async fn refused_values_are_permanent_naming_the_field<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let id = seed(harness, "invalid")?;
    let (field, refused) = H::refused_value();
    let before = stored(harness, &id)?.get(&field).cloned();
    let edit = item(&id, patch(&[(field, &refused)]));
    let error = fails(harness.adapter().as_ref(), edit).await?;
    let named = Some(field.name().to_string());
    ensure!(
        error.kind == ErrorKind::Permanent { field: named },
        "`{refused}` should be Permanent naming `{field}`, got {error:?}"
    );
    ensure!(
        !error.code.is_empty() && !error.message.is_empty(),
        "the CRM's code and message are kept: {error:?}"
    );
    expect_value(harness, &id, field, before.as_deref())
}

/// An edit of a record the CRM deleted is `RecordGone` — not a permanent refusal, which
/// would keep the unified record active.
pub async fn a_deleted_record_is_record_gone<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let id = seed(harness, "deleted")?;
    harness.delete_record(&id);
    let edit = item(&id, patch(&[(ContactField::City, "X")]));
    let error = fails(harness.adapter().as_ref(), edit).await?;
    ensure!(
        error.kind == ErrorKind::RecordGone,
        "expected RecordGone, got {error:?}"
    );
    ensure!(
        !error.code.is_empty() && !error.message.is_empty(),
        "the CRM's code and message are kept: {error:?}"
    );
    Ok(())
}

/// A customer link is set to the CRM's customer, and removed.
pub async fn customer_links_are_set_and_removed<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let adapter = harness.adapter();
    ensure!(
        adapter.capabilities().customer_links,
        "the adapter does not declare customer links"
    );
    let id = seed(harness, "linked")?;
    let customer = harness.create_customer("Acme");
    let mut link = item(&id, patch(&[(ContactField::City, "Coimbra")]));
    link.customer = CustomerLink::Link {
        id: customer.clone(),
        previous: None,
    };
    lands(adapter.as_ref(), link).await?;
    let links = harness.customer_links(&id);
    ensure!(
        links == [customer.clone()],
        "the record should be linked to {customer}, it is linked to {links:?}"
    );
    let mut unlink = item(&id, ContactPatch::new());
    unlink.customer = CustomerLink::Unlink {
        previous: Some(customer),
    };
    lands(adapter.as_ref(), unlink).await?;
    let links = harness.customer_links(&id);
    ensure!(links.is_empty(), "the link should be gone: {links:?}");
    Ok(())
}

/// A value of `len` characters fit for `field` (an email stays an email).
fn value_of_len(field: ContactField, len: usize) -> String {
    const DOMAIN: &str = "@example.com";
    if field == ContactField::Email {
        format!("{}{DOMAIN}", "a".repeat(len.saturating_sub(DOMAIN.len())))
    } else {
        "a".repeat(len)
    }
}

/// `validate` takes values up to the CRM's documented length and refuses longer ones and
/// clears of required fields, naming the field: refused at the API, never dead-lettered.
pub async fn validate_refuses_values_beyond_the_crms_limits<H: AdapterHarness>(
    harness: &H,
) -> Result<(), String> {
    let adapter = harness.adapter();
    let names = |violations: Vec<unisync_core::FieldViolation>| -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    };
    for (field, max) in H::LIMITS {
        let fits = patch(&[(*field, &value_of_len(*field, *max))]);
        let refused = names(adapter.validate(&fits));
        ensure!(
            refused.is_empty(),
            "{max} characters fit the CRM's {field}, validate refused {refused:?}"
        );
        let long = patch(&[(*field, &value_of_len(*field, max + 1))]);
        let refused = names(adapter.validate(&long));
        ensure!(
            refused == [field.name()],
            "{} characters are beyond the CRM's {field}, validate refused {refused:?}",
            max + 1
        );
    }
    for field in H::REQUIRED {
        let mut clear = ContactPatch::new();
        clear.clear(*field);
        let refused = names(adapter.validate(&clear));
        ensure!(
            refused == [field.name()],
            "the CRM requires {field}, validate let a clear through ({refused:?})"
        );
    }
    Ok(())
}

async fn pulled(adapter: &dyn SourceAdapter) -> Result<Vec<unisync_core::SourceContact>, String> {
    let mut cursor: Option<String> = None;
    let mut contacts = Vec::new();
    loop {
        let page = adapter
            .pull(cursor.as_deref())
            .await
            .map_err(|error| format!("pull: {error:?}"))?;
        contacts.extend(page.contacts);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(contacts),
        }
    }
}

/// Pulling pages through every record exactly once.
pub async fn pull_pages_through_every_record<H: AdapterHarness>(harness: &H) -> Result<(), String> {
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(seed(harness, &format!("pulled{n}"))?);
    }
    let seen: Vec<String> = pulled(harness.adapter().as_ref())
        .await?
        .into_iter()
        .map(|contact| contact.source_id)
        .collect();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == seen.len(), "a record came twice: {seen:?}");
    for id in &created {
        ensure!(seen.contains(id), "record {id} was not pulled");
    }
    Ok(())
}
