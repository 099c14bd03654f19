//! `/metrics` in the Prometheus text format. Few enough series that writing the text beats
//! wiring a registry.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::connections::{ConnectionMetrics, Connections};
use crate::reload::Reloads;
use crate::store::{Store, StoreError, now_ms};

/// Per-connection counters of what became of edits on their way: name, help, counter.
type Counter = fn(&ConnectionMetrics) -> &AtomicU64;
const EDIT_COUNTERS: [(&str, &str, Counter); 6] = [
    (
        "unisync_fields_unchanged_total",
        "Fields of edits the CRM held already, so not sent.",
        |m| &m.fields_unchanged,
    ),
    (
        "unisync_edits_unchanged_total",
        "Edits the CRM held entirely already: confirmed without a call.",
        |m| &m.edits_unchanged,
    ),
    (
        "unisync_read_calls_total",
        "Reads of the CRM's current values before a write (on_conflict crm_wins or hold).",
        |m| &m.read_calls,
    ),
    (
        "unisync_bulk_jobs_total",
        "Bulk jobs started (edits above bulk_threshold go as one job of the CRM).",
        |m| &m.bulk_jobs,
    ),
    (
        "unisync_merges_followed_total",
        "Contacts re-pointed at the record that remained after the CRM merged theirs.",
        |m| &m.merges_followed,
    ),
    (
        "unisync_modified_since_read_total",
        "Conditional writes refused because a person changed the record after the read.",
        |m| &m.modified_since_read,
    ),
];

pub async fn render(
    store: &Store,
    connections: &Connections,
    reloads: &Reloads,
) -> Result<String, StoreError> {
    let counts = store.counts(now_ms()).await?;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = match labels.is_empty() {
                true => writeln!(out, "{name} {value}"),
                false => writeln!(out, "{name}{{{labels}}} {value}"),
            };
        }
    };
    let per_connection =
        |value: &dyn Fn(&crate::connections::Connection) -> f64| -> Vec<(String, f64)> {
            connections
                .iter()
                .map(|c| (format!("connection=\"{}\"", c.name()), value(c)))
                .collect()
        };
    let queue_row = |pick: fn(&crate::store::ConnectionCounts) -> u64| -> Vec<(String, f64)> {
        connections
            .iter()
            .map(|c| {
                let n = counts.get(c.name()).map(pick).unwrap_or(0);
                (format!("connection=\"{}\"", c.name()), n as f64)
            })
            .collect()
    };
    family(
        "unisync_queue_ready",
        "gauge",
        "Contacts queued for a push after an accepted edit (no failed attempt yet).",
        queue_row(|c| c.ready),
    );
    family(
        "unisync_queue_retry_waiting",
        "gauge",
        "Contacts queued again after a failed attempt or a stop mid-push, until their retry is claimed.",
        queue_row(|c| c.retry_waiting),
    );
    family(
        "unisync_dead_letters",
        "gauge",
        "Edits the CRM refused, kept for an operator.",
        queue_row(|c| c.dead_letters),
    );
    family(
        "unisync_in_flight",
        "gauge",
        "Edits in a push right now.",
        per_connection(&|c| c.metrics.in_flight.load(Ordering::Relaxed) as f64),
    );
    let mut outcomes = Vec::new();
    for c in connections.iter() {
        let m = &c.metrics;
        for (outcome, counter) in [
            ("ok", &m.pushed_ok),
            ("retry", &m.pushed_retry),
            ("rate_limited", &m.pushed_rate_limited),
            ("dead_letter", &m.pushed_dead_letter),
        ] {
            outcomes.push((
                format!("connection=\"{}\",outcome=\"{outcome}\"", c.name()),
                counter.load(Ordering::Relaxed) as f64,
            ));
        }
    }
    family(
        "unisync_pushed_edits_total",
        "counter",
        "Edits pushed, by outcome.",
        outcomes,
    );
    family(
        "unisync_push_calls_total",
        "counter",
        "Calls to the CRM adapter (one per batch).",
        per_connection(&|c| c.metrics.push_calls.load(Ordering::Relaxed) as f64),
    );
    for (name, help, counter) in EDIT_COUNTERS {
        family(
            name,
            "counter",
            help,
            per_connection(&|c| counter(&c.metrics).load(Ordering::Relaxed) as f64),
        );
    }
    let recent: Vec<(&str, crate::traffic::Totals, u64)> = connections
        .iter()
        .map(|c| {
            let queued = counts
                .get(c.name())
                .map_or(0, |counts| counts.ready + counts.retry_waiting);
            (c.name(), c.metrics.recent.totals(), queued)
        })
        .collect();
    family(
        "unisync_calls_per_landed_edit",
        "gauge",
        "Calls to the CRM (batch writes, reads, bulk jobs) per edit landed, over the last 5 minutes.",
        recent
            .iter()
            .filter_map(|(name, totals, _)| {
                Some((format!("connection=\"{name}\""), totals.calls_per_landed()?))
            })
            .collect(),
    );
    family(
        "unisync_queue_drain_seconds",
        "gauge",
        "Estimated time until the queued edits have landed, at the pace of the last 5 minutes.",
        recent
            .iter()
            .filter_map(|(name, totals, queued)| {
                Some((
                    format!("connection=\"{name}\""),
                    totals.seconds_to_drain(*queued)?,
                ))
            })
            .collect(),
    );
    let conflicts: Vec<(String, f64)> = connections
        .iter()
        .map(|c| {
            (
                format!(
                    "connection=\"{}\",policy=\"{}\"",
                    c.name(),
                    c.settings.on_conflict.name()
                ),
                c.metrics.conflicts.load(Ordering::Relaxed) as f64,
            )
        })
        .collect();
    family(
        "unisync_conflicts_total",
        "counter",
        "Fields a person changed in the CRM that ours would have overwritten, by policy.",
        conflicts,
    );
    family(
        "unisync_push_seconds_total",
        "counter",
        "Time spent in CRM pushes.",
        per_connection(&|c| c.metrics.push_micros_total.load(Ordering::Relaxed) as f64 / 1e6),
    );
    family(
        "unisync_rate_limit_waits_total",
        "counter",
        "Times a connection stopped to wait out a CRM rate limit or budget.",
        per_connection(&|c| c.metrics.rate_limit_waits.load(Ordering::Relaxed) as f64),
    );
    let usage: Vec<(String, f64)> = connections
        .iter()
        .filter_map(|c| c.adapter().api_usage().map(|u| (c.name().to_string(), u)))
        .flat_map(|(name, u)| {
            [
                (
                    format!("connection=\"{name}\",kind=\"used\""),
                    u.used as f64,
                ),
                (
                    format!("connection=\"{name}\",kind=\"limit\""),
                    u.limit as f64,
                ),
            ]
        })
        .collect();
    family(
        "unisync_crm_api_usage",
        "gauge",
        "The CRM's own count of API calls against its budget.",
        usage,
    );
    family(
        "unisync_config_reloads_total",
        "counter",
        "Config reloads (SIGHUP) since start, by result: applied, or refused with the config in force kept.",
        vec![
            ("result=\"applied\"".into(), reloads.applied() as f64),
            ("result=\"refused\"".into(), reloads.refused() as f64),
        ],
    );
    family(
        "unisync_config_last_reload_successful",
        "gauge",
        "1 when the last reload was applied (or none was asked since start), 0 when it was refused: the config file is not the one in force.",
        vec![(String::new(), u8::from(reloads.last_applied()).into())],
    );
    Ok(out)
}
