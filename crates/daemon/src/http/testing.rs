//! Test helpers: the API served over loopback, and the README's tables that the route
//! and command tables are compared with.

use std::sync::Arc;

use unisync_core::Secret;

use super::auth::Tokens;
use super::state::AppState;
use crate::config::Config;
use crate::connections::Connections;
use crate::store::Store;

/// Serves the API on `store` over loopback, with one connection `crm` (a HubSpot one no
/// request reaches), API token `api-token` and admin token `admin-token`; answers its
/// base URL.
pub async fn serve_on_loopback(store: &Store) -> String {
    let config = Config::parse(
        "[connections.crm]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut settings = config.connections().unwrap();
    let provider = std::mem::take(&mut settings[0].provider);
    settings[0].provider = provider.with_inline_secrets([("access_token", "crm-token")]);
    let connections = Arc::new(Connections::build(settings, store).unwrap());
    let state = Arc::new(AppState {
        store: store.clone(),
        connections,
        tokens: Arc::new(Tokens {
            api: vec![Secret::new("api-token")],
            admin: vec![Secret::new("admin-token")],
        }),
        max_body_bytes: 65_536,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = crate::config::ServerConfig::default().limits();
    tokio::spawn(crate::serve::run_server(
        listener,
        state,
        limits,
        std::future::pending(),
    ));
    base
}

/// The rows of the README's table headed `| first | ...`: each row's first cell, without
/// its backticks, up to the blank line that ends the table.
pub fn readme_table(first: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README");
    let header = format!("| {first} |");
    let table = readme
        .split_once(&format!("\n{header}"))
        .unwrap_or_else(|| panic!("the README has no table headed {header}"))
        .1;
    table
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            let cell = row.split(" | ").next().unwrap_or_default();
            cell.trim_start_matches("| ").trim_matches('`').to_string()
        })
        .collect()
}
