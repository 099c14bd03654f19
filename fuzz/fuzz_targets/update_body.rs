//! The update endpoint's body, as bytes: malformed JSON (400), a patch, or violations that each
//! name a real fault (422); never a panic. The check is `validation::properties` of
//! unisync-core, which its proptests run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    unisync_core::check_update_body_bytes(body);
});
