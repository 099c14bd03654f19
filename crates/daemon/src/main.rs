//! `unisync`: pushes edits of unified contacts into the CRMs they came from.

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
mod render;
mod retry_policy;
mod serve;
mod store;
mod timefmt;
mod traffic;

fn main() -> std::process::ExitCode {
    cli::main()
}
