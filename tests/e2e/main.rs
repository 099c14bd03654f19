//! End-to-end tests: the real `unisync` binary over loopback against sandbox CRMs started
//! in-process, so each test can look inside the CRM and switch faults on.

mod backfill;
mod config;
mod crm;
mod fleet;
mod harness;
mod hubspot;
mod portals;
mod readme;
mod replay;
mod salesforce;
mod service;
mod store_failure;
mod world;
mod write_path;
