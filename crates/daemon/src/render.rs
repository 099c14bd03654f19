//! Operator reports as people read them: aligned tables and key–value lines. `--json` prints
//! the same typed reports as JSON instead.

use crate::ops::{DeadLetterList, DeadLetterView, ReplayReport, StatusReport};

/// `rows` under `header`, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// One line per connection: its state (ok, disabled, paused and why), its queue and the
/// CRM's API usage; then the connections the config no longer has.
pub fn status(status: &StatusReport) -> String {
    let rows: Vec<Vec<String>> = status
        .connections
        .iter()
        .map(|(name, counts)| {
            let state = if status.disabled.contains(name) {
                "disabled".to_string()
            } else if status.unconfigured.contains(name) {
                "unconfigured".to_string()
            } else if let Some(pause) = status.pauses.get(name) {
                format!(
                    "paused: {} until {} ({}: {})",
                    pause.reason.name(),
                    pause.until_local,
                    pause.code,
                    pause.message
                )
            } else {
                "ok".to_string()
            };
            let usage = status
                .api_usage
                .get(name)
                .map_or_else(|| "-".to_string(), |u| format!("{}/{}", u.used, u.limit));
            vec![
                name.clone(),
                counts.ready.to_string(),
                counts.retry_waiting.to_string(),
                counts.in_flight.to_string(),
                counts.dead_letters.to_string(),
                usage,
                state,
            ]
        })
        .collect();
    let mut text = table(
        &[
            "CONNECTION",
            "READY",
            "RETRY WAITING",
            "IN FLIGHT",
            "DEAD LETTERS",
            "API USAGE",
            "STATE",
        ],
        &rows,
    );
    if !status.unconfigured.is_empty() {
        text.push_str(&format!(
            "\nnot in the config (edits kept until a connection of that name is configured again): {}\n",
            status.unconfigured.join(", ")
        ));
    }
    text
}

/// One line per letter.
pub fn dead_letters(list: &DeadLetterList) -> String {
    if list.dead_letters.is_empty() {
        return "no dead letters\n".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .dead_letters
        .iter()
        .map(|letter| {
            let fields: Vec<&str> = letter.patch.fields().map(|f| f.name()).collect();
            vec![
                letter.id.clone(),
                kind(letter).to_string(),
                letter.contact_id.clone(),
                letter.connection.clone(),
                letter.error.code.clone(),
                fields.join(","),
                letter.attempts.to_string(),
                letter.failed_at_local.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "KIND",
            "CONTACT",
            "CONNECTION",
            "ERROR",
            "FIELDS",
            "ATTEMPTS",
            "FAILED AT",
        ],
        &rows,
    )
}

/// A letter in full: its facts, then per field the value it carries (and, for a conflict
/// letter, the base and the CRM's value).
pub fn dead_letter(letter: &DeadLetterView) -> String {
    let facts: Vec<Vec<String>> = [
        ("id", letter.id.clone()),
        ("kind", kind(letter).to_string()),
        ("contact", letter.contact_id.clone()),
        ("connection", letter.connection.clone()),
        (
            "error",
            format!(
                "{} ({}): {}",
                letter.error.code, letter.error.class, letter.error.message
            ),
        ),
        (
            "field named",
            letter.error.field.clone().unwrap_or_else(|| "-".into()),
        ),
        ("attempts", letter.attempts.to_string()),
        (
            "failed at",
            format!("{} ({})", letter.failed_at_local, letter.failed_at),
        ),
    ]
    .into_iter()
    .map(|(key, value)| vec![format!("{key}:"), value])
    .collect();
    let mut text = table(&["", ""], &facts)
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default();
    let shown = |value: Option<&str>| value.map_or_else(|| "(clear)".to_string(), str::to_string);
    let rows: Vec<Vec<String>> = letter
        .patch
        .fields()
        .map(|field| {
            let ours = shown(letter.patch.change(field).flatten());
            match letter.conflict.as_ref().and_then(|c| c.get(&field)) {
                Some(conflict) => vec![
                    field.name().to_string(),
                    shown(conflict.base.as_deref()),
                    shown(conflict.crm.as_deref()),
                    ours,
                ],
                None => vec![field.name().to_string(), "".into(), "".into(), ours],
            }
        })
        .collect();
    text.push('\n');
    text.push_str(&table(&["FIELD", "BASE", "CRM", "OURS"], &rows));
    text
}

/// What a replay did, a line per outcome.
pub fn replay(report: &ReplayReport) -> String {
    let mut text = String::new();
    if !report.retried.is_empty() {
        text.push_str(&format!("retried: {}\n", report.retried.join(", ")));
    }
    if !report.superseded.is_empty() {
        text.push_str(&format!(
            "superseded (every field had a later edit): {}\n",
            report.superseded.join(", ")
        ));
    }
    for (letter, fields) in &report.dropped_fields {
        let fields: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        text.push_str(&format!(
            "{letter}: left out (a later edit took them over): {}\n",
            fields.join(", ")
        ));
    }
    for (letter, reason) in &report.failed {
        text.push_str(&format!("{letter}: failed: {reason}\n"));
    }
    if text.is_empty() {
        text.push_str("nothing to replay\n");
    }
    text
}

fn kind(letter: &DeadLetterView) -> &'static str {
    match letter.kind {
        crate::store::LetterKind::Refused => "refused",
        crate::store::LetterKind::Conflict => "conflict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let text = table(
            &["ID", "STATE"],
            &[
                vec!["dl-1".into(), "ok".into()],
                vec!["a-long-id".into(), "paused".into()],
            ],
        );
        assert_eq!(text, "ID         STATE\ndl-1       ok\na-long-id  paused\n");
    }
}
