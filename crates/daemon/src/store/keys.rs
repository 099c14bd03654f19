//! Key layouts. Big-endian numbers keep sled's byte order equal to numeric order.

use std::ops::RangeInclusive;

/// `connection \0 not_before seq` → the ready queue orders each connection's contacts by when
/// they may go, then by when they were queued.
pub fn ready(connection: &str, not_before: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(connection.len() + 17);
    key.extend_from_slice(connection.as_bytes());
    key.push(0);
    key.extend_from_slice(&not_before.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Every ready key of `connection` whose not-before is at most `until`.
pub fn ready_range(connection: &str, until: u64) -> RangeInclusive<Vec<u8>> {
    ready(connection, 0, 0)..=ready(connection, until, u64::MAX)
}

pub fn ready_not_before(key: &[u8]) -> u64 {
    let start = key.len() - 16;
    u64::from_be_bytes(key[start..start + 8].try_into().expect("8 bytes"))
}

/// `connection \0 source_id` → a CRM record is known by the connection (CRM account) it lives
/// in, so two accounts of one CRM can hold the same id without mixing.
pub fn source_index(connection: &str, source_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(connection.len() + source_id.len() + 1);
    key.extend_from_slice(connection.as_bytes());
    key.push(0);
    key.extend_from_slice(source_id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_keys_order_by_time_then_sequence_within_a_connection() {
        let early = ready("crm", 5, 9);
        let late = ready("crm", 6, 1);
        assert!(early < late);
        assert!(ready("crm", 5, 1) < early);
        assert!(ready_range("crm", 5).contains(&early));
        assert!(!ready_range("crm", 5).contains(&late));
        assert!(!ready_range("crm", u64::MAX).contains(&ready("crm2", 0, 0)));
        assert_eq!(ready_not_before(&late), 6);
    }
}
