//! The one place that names providers: each provider crate's factory, registered here.

use unisync_core::AdapterFactory;

/// Every provider this build of unisync can push to.
pub fn factories() -> Vec<Box<dyn AdapterFactory>> {
    vec![
        Box::new(unisync_hubspot::HubspotFactory),
        Box::new(unisync_salesforce::SalesforceFactory),
        Box::new(unisync_dynamics::DynamicsFactory),
    ]
}
