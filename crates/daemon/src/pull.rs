//! `contacts pull`: page through a CRM's contacts and register each as a unified contact.

use unisync_core::{ContactField, UnifiedContact};

use crate::connections::Connection;
use crate::store::Store;

#[derive(Debug, Default, serde::Serialize)]
pub struct PullReport {
    pub registered: u64,
    pub updated: u64,
    pub pages: u64,
}

/// Registers every contact of the connection's CRM. A contact already registered (by its
/// source id) is updated in place, so re-running never duplicates.
pub async fn pull_contacts(store: &Store, connection: &Connection) -> Result<PullReport, String> {
    let system = connection.settings.system.clone();
    let mut report = PullReport::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = connection
            .adapter
            .pull(cursor.as_deref())
            .await
            .map_err(|error| format!("pulling from {}: {error}", connection.name()))?;
        report.pages += 1;
        for source in page.contacts {
            let existing_id = store
                .id_for_source(&system, &source.source_id)
                .map_err(|e| e.to_string())?;
            let mut contact = match &existing_id {
                Some(id) => store
                    .contact(id)
                    .map_err(|e| e.to_string())?
                    .map(|entry| entry.contact)
                    .unwrap_or_else(|| UnifiedContact::new(id, &system, &source.source_id)),
                None => UnifiedContact::new(
                    format!("{system}_{}", source.source_id),
                    &system,
                    &source.source_id,
                ),
            };
            for field in ContactField::ALL {
                if let Some(value) = source.values.get(&field) {
                    contact.set_field(field, value.clone());
                }
            }
            contact.external_system_config_id = Some(connection.name().to_string());
            contact.external_system_provider_id = connection.settings.provider_id.clone();
            contact.source_system_img_url = connection.settings.img_url.clone();
            contact.source_system_customer_id = source.customer_source_id.clone();
            contact.source_data_created_at =
                source.created_at.clone().or(contact.source_data_created_at);
            contact.is_active = source.is_active;
            store.upsert_contact(contact).map_err(|e| e.to_string())?;
            if existing_id.is_some() {
                report.updated += 1;
            } else {
                report.registered += 1;
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(report)
}
