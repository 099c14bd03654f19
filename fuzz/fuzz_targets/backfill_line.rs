//! One line of a backfill file, as bytes: a contact id, an edit id and a body, or a reason the
//! line is reported invalid; never a panic. The check is `backfill::properties` of the daemon,
//! which its proptests run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|line: &[u8]| {
    unisync::check_backfill_line(line);
});
