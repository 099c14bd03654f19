//! A config file's text: a config that keeps every rule of the loader and from which the
//! daemon's start-up values derive without overflow, or an error that says why; never a panic.
//! The check is `config::properties` of the daemon, which its proptests run too. Bytes that
//! are not UTF-8 are not a config file's text (the loader reads a `String`).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &[u8]| {
    if let Ok(text) = std::str::from_utf8(text) {
        unisync::check_config_text(text);
    }
});
