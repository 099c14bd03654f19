//! The sled engine's queue figures, kept as state changes commit instead of counted by a
//! scan: `/metrics`, `status` and `/readyz` cost the same at one contact and at a million.
//!
//! Every transaction that writes a contact reports the contact's [`Tally`] before and after,
//! and the dead letters it made or removed ([`Changes`]); once it has committed, the
//! figures move by the difference. They are counted once when the store opens (a stream over
//! the records: its time grows with the store, its memory does not).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ConnectionCounts, ContactEntry};

/// Where one contact stands in the figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Queued on this connection: `(connection, after a failure)`.
    queued: Option<(String, bool)>,
    /// In flight on this connection.
    in_flight: Option<String>,
}

impl Tally {
    pub fn of(entry: &ContactEntry) -> Tally {
        let sync = &entry.sync;
        let connection = || sync.connection.clone().unwrap_or_default();
        Tally {
            // A failed attempt (or a stop mid-push) set a not-before: the contact was queued
            // again to wait for its retry.
            queued: sync
                .queued_key
                .as_ref()
                .map(|_| (connection(), sync.next_attempt_at.is_some())),
            in_flight: sync.in_flight.as_ref().map(|_| connection()),
        }
    }
}

/// What one transaction changed in the figures.
#[derive(Debug, Default)]
pub struct Changes {
    /// Each written contact's tally before (`None`: new or unreadable) and after.
    contacts: Vec<(Option<Tally>, Tally)>,
    /// Dead letters made (+1) or removed (-1), by connection.
    letters: Vec<(String, i64)>,
    /// Connections a contact whose record could not be read left the queue of.
    unreadable_dequeued: Vec<String>,
}

impl Changes {
    /// A contact written: `before` is its tally as read in the transaction.
    pub fn contact(&mut self, before: Option<Tally>, after: &ContactEntry) {
        self.contacts.push((before, Tally::of(after)));
    }

    pub fn letter_made(&mut self, connection: &str) {
        self.letters.push((connection.to_string(), 1));
    }

    pub fn letter_removed(&mut self, connection: &str) {
        self.letters.push((connection.to_string(), -1));
    }

    /// A contact whose record cannot be read left the queue of `connection`. Counted as
    /// ready when it was queued (its record readable then), and not at all when it was
    /// unreadable at open: the figure goes down by one, never below zero.
    pub fn unreadable_dequeued(&mut self, connection: &str) {
        self.unreadable_dequeued.push(connection.to_string());
    }

    /// How many changes are held.
    pub fn len(&self) -> usize {
        self.contacts.len() + self.letters.len()
    }
}

/// The figures per connection.
#[derive(Default)]
pub struct Counters {
    by_connection: Mutex<BTreeMap<String, ConnectionCounts>>,
}

impl Counters {
    /// Moves the figures by what a committed transaction changed.
    pub fn commit(&self, changes: Changes) {
        let mut figures = self.by_connection.lock().expect("counter lock");
        let mut add = |connection: &str, pick: fn(&mut ConnectionCounts) -> &mut u64, by: i64| {
            let figure = pick(figures.entry(connection.to_string()).or_default());
            *figure = figure.saturating_add_signed(by);
        };
        for (before, after) in changes.contacts {
            for (tally, by) in before.into_iter().map(|t| (t, -1)).chain([(after, 1)]) {
                if let Some((connection, retry)) = &tally.queued {
                    let pick: fn(&mut ConnectionCounts) -> &mut u64 = if *retry {
                        |c| &mut c.retry_waiting
                    } else {
                        |c| &mut c.ready
                    };
                    add(connection, pick, by);
                }
                if let Some(connection) = &tally.in_flight {
                    add(connection, |c| &mut c.in_flight, by);
                }
            }
        }
        for (connection, by) in changes.letters {
            add(&connection, |c| &mut c.dead_letters, by);
        }
        for connection in changes.unreadable_dequeued {
            add(&connection, |c| &mut c.ready, -1);
        }
        figures.retain(|_, counts| *counts != ConnectionCounts::default());
    }

    /// The figures of every connection that has anything queued, in flight or dead.
    pub fn snapshot(&self) -> BTreeMap<String, ConnectionCounts> {
        self.by_connection.lock().expect("counter lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use unisync_core::{ContactPatch, UnifiedContact};

    use super::*;

    fn entry(queued: bool, retry: bool, in_flight: bool) -> ContactEntry {
        let mut entry = ContactEntry {
            contact: UnifiedContact::new("c1", "hubspot", "1"),
            base: BTreeMap::new(),
            crm_version: None,
            source_connection: None,
            sync: Default::default(),
        };
        entry.sync.connection = Some("hs".into());
        entry.sync.queued_key = queued.then(|| vec![1]);
        entry.sync.next_attempt_at = retry.then_some(5);
        entry.sync.in_flight = in_flight.then(ContactPatch::new);
        entry
    }

    #[test]
    fn figures_follow_a_contact_through_queue_flight_retry_and_letter() {
        let counters = Counters::default();
        let steps = [
            (None, entry(true, false, false), 0),
            (
                Some(entry(true, false, false)),
                entry(false, false, true),
                0,
            ),
            (Some(entry(false, false, true)), entry(true, true, false), 0),
            (
                Some(entry(true, true, false)),
                entry(false, false, false),
                1,
            ),
        ];
        let expected = [(1, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 1)];
        for ((before, after, letters), (ready, retry_waiting, in_flight, dead_letters)) in
            steps.into_iter().zip(expected)
        {
            let mut changes = Changes::default();
            changes.contact(before.as_ref().map(Tally::of), &after);
            for _ in 0..letters {
                changes.letter_made("hs");
            }
            counters.commit(changes);
            let figures = counters.snapshot();
            assert_eq!(
                figures["hs"],
                ConnectionCounts {
                    ready,
                    retry_waiting,
                    in_flight,
                    dead_letters
                }
            );
        }
        let mut changes = Changes::default();
        changes.letter_removed("hs");
        counters.commit(changes);
        assert!(counters.snapshot().is_empty(), "nothing left: no row");
    }
}
