//! `unisync`: pushes edits of unified contacts into the CRMs they came from.
//!
//! The daemon is a library with a thin binary (`src/main.rs`) so that the fuzz targets in the
//! repository's `fuzz/` folder can reach its parsers. Its modules are private: the binary needs
//! only [`main`], the fuzz targets only the parsers' property checks (feature `fuzzing`).

mod backfill;
mod cli;
mod config;
mod conflict;
mod connections;
mod dispatcher;
mod edits;
mod http;
mod metrics;
mod ops;
mod providers;
mod pull;
mod reload;
mod render;
mod retry_policy;
mod serve;
mod store;
mod timefmt;
mod traffic;

pub use cli::main;

/// The parsers' properties as checks, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub use backfill::properties::check_backfill_line;
#[cfg(feature = "fuzzing")]
pub use config::properties::check_config_text;
