//! Times as the API shows them.

/// Milliseconds since the epoch as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Milliseconds since the epoch in the machine's time zone, for people
/// (`2024-01-01 13:00:00 CET`).
pub fn local(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::rfc3339(1_704_110_400_000), "2024-01-01T12:00:00Z");
    }

    #[test]
    fn local_time_names_the_same_instant_in_the_machines_zone() {
        let shown = super::local(1_704_110_400_000);
        let zoned = jiff::Timestamp::from_millisecond(1_704_110_400_000)
            .unwrap()
            .to_zoned_datetime(jiff::tz::TimeZone::system());
        assert!(
            shown.starts_with(&zoned.strftime("%Y-%m-%d %H:%M:%S").to_string()),
            "{shown}"
        );
    }
}
