//! End-to-end tests: the real `unisync` binary over loopback against sandbox CRMs started
//! in-process, so each test can look inside the CRM and switch faults on.

mod harness;
mod hubspot_write_path;
