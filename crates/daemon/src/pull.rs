//! `contacts pull`: page through a CRM's contacts and register each as a unified contact.

use unisync_core::{ContactField, UnifiedContact};

use crate::connections::Connection;
use crate::store::{Store, StoreError};

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PullReport {
    pub registered: u64,
    pub updated: u64,
    pub pages: u64,
    /// CRM records not registered, each with why (an id the adapter refuses, a record already
    /// registered under another unified id).
    pub refused: Vec<String>,
}

/// Registers every contact of the connection's CRM account as a record of that connection: a
/// new one as `CONNECTION_SOURCEID` (the connection's name, then the record's id in its
/// canonical form), one already registered (by connection and source id) updated in place, so
/// re-running never duplicates and two accounts of one CRM never mix.
pub async fn pull_contacts(store: &Store, connection: &Connection) -> Result<PullReport, String> {
    let name = connection.name();
    let system = &connection.settings.system;
    let mut report = PullReport::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = connection
            .adapter()
            .pull(cursor.as_deref())
            .await
            .map_err(|error| format!("pulling from {name}: {error}"))?;
        report.pages += 1;
        for source in page.contacts {
            let source_id = match connection.adapter().normalize_source_id(&source.source_id) {
                Ok(id) => id,
                Err(reason) => {
                    report
                        .refused
                        .push(format!("record `{}`: {reason}", source.source_id));
                    continue;
                }
            };
            let existing_id = store
                .id_for_source(name, &source_id)
                .await
                .map_err(|e| e.to_string())?;
            let mut contact = match &existing_id {
                Some(id) => store
                    .contact(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|entry| entry.contact)
                    .unwrap_or_else(|| UnifiedContact::new(id, system, &source_id)),
                None => UnifiedContact::new(format!("{name}_{source_id}"), system, &source_id),
            };
            for field in ContactField::ALL {
                if let Some(value) = source.values.get(&field) {
                    contact.set_field(field, value.clone());
                }
            }
            contact.external_system_config_id = Some(name.to_string());
            contact.external_system_provider_id = connection.settings.provider_id.clone();
            contact.source_system_img_url = connection.settings.img_url.clone();
            contact.source_system_customer_id = source.customer_source_id.clone();
            contact.source_data_created_at =
                source.created_at.clone().or(contact.source_data_created_at);
            contact.is_active = source.is_active;
            match store.upsert_contact(name, contact).await {
                Ok(()) if existing_id.is_some() => report.updated += 1,
                Ok(()) => report.registered += 1,
                // Registered meanwhile by an import under another id: that one stands.
                Err(error @ StoreError::SourceIdTaken { .. }) => {
                    report.refused.push(error.to_string())
                }
                Err(error) => return Err(error.to_string()),
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
