//! The checks every edit passes before it is accepted, from the API or a backfill: the
//! unified rules, the routing to a connection, the CRM's own limits, the customer relation.

use std::sync::Arc;

use serde_json::Value;
use unisync_core::{ContactField, ContactPatch, FieldViolation, UnifiedContact, parse_update_body};

use crate::connections::{Connection, Connections};
use crate::store::{Store, StoreError};

/// An edit that passed every check, and the connection it goes to.
pub struct CheckedEdit {
    pub patch: ContactPatch,
    pub connection: Arc<Connection>,
}

/// Why an edit was not accepted.
pub enum EditRejected {
    Invalid(Vec<FieldViolation>),
    Store(StoreError),
}

impl From<StoreError> for EditRejected {
    fn from(error: StoreError) -> Self {
        EditRejected::Store(error)
    }
}

/// Checks an update body for `contact`. Nothing is written.
pub async fn check_edit(
    store: &Store,
    connections: &Connections,
    contact: &UnifiedContact,
    body: &Value,
) -> Result<CheckedEdit, EditRejected> {
    let patch = parse_update_body(body).map_err(EditRejected::Invalid)?;
    let connection = connections.route(contact).map_err(|reason| {
        EditRejected::Invalid(vec![FieldViolation::new(
            "source_system",
            "no_connection",
            reason,
        )])
    })?;
    let mut violations = connection.adapter().validate(&patch);
    if let Some(Some(customer_id)) = patch.change(ContactField::UnifiedCustomerId) {
        match store.customer(customer_id).await? {
            None => violations.push(FieldViolation::new(
                "unified_customer_id",
                "unknown_customer",
                format!("no unified customer with id `{customer_id}` is registered"),
            )),
            Some(customer) if customer.source_system != contact.source_system => {
                violations.push(FieldViolation::new(
                    "unified_customer_id",
                    "customer_in_other_system",
                    format!(
                        "customer `{customer_id}` lives in {}, the contact in {}",
                        customer.source_system, contact.source_system
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    if violations.is_empty() {
        Ok(CheckedEdit {
            patch,
            connection: connection.clone(),
        })
    } else {
        Err(EditRejected::Invalid(violations))
    }
}
