//! The HTTP layer, one module per concern: [`state`] (what handlers share), [`error`] (the
//! error answers), [`body`] (reading request bodies), [`auth`] (bearer tokens by scope),
//! [`contacts`], [`admin`], [`probes`], [`ui`] and [`openapi`] (the handlers), and
//! [`server`] (connections and their limits). This module holds the route table and builds
//! the router from it: it depends on the handler modules, and none of them on it or on
//! each other.

pub mod admin;
pub mod auth;
pub mod body;
pub mod contacts;
pub mod error;
pub mod openapi;
pub mod probes;
pub mod server;
pub mod state;
#[cfg(test)]
pub(crate) mod testing;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};

use auth::{Scope, require_bearer};
use state::AppState;

/// One route: its method and path, who may call it (`None`: anyone), and its handler. The
/// router is built from [`routes`], and tests compare the same table with the OpenAPI
/// document and the README, so none can drift from the others.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub scope: Option<Scope>,
    /// Makes the route's handler for the method filter of `method`.
    pub handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
}

impl RouteSpec {
    const fn new(
        method: Method,
        path: &'static str,
        scope: Option<Scope>,
        handler: fn(MethodFilter) -> MethodRouter<Arc<AppState>>,
    ) -> Self {
        RouteSpec {
            method,
            path,
            scope,
            handler,
        }
    }
}

/// Every route the daemon serves.
pub fn routes() -> Vec<RouteSpec> {
    let contact = "/api/v1/unified/contact/{id}";
    let letter = "/api/v1/admin/dead-letters/{id}";
    let api = Some(Scope::Api);
    let admin = Some(Scope::Admin);
    vec![
        RouteSpec::new(Method::PUT, contact, api, |m| on(m, contacts::put_contact)),
        RouteSpec::new(Method::GET, contact, api, |m| on(m, contacts::get_contact)),
        RouteSpec::new(Method::GET, "/api/v1/unified/contact/{id}/sync", api, |m| {
            on(m, contacts::get_sync)
        }),
        RouteSpec::new(Method::GET, "/api/v1/openapi.json", None, |m| {
            on(m, openapi::document)
        }),
        RouteSpec::new(Method::GET, "/healthz", None, |m| on(m, probes::healthz)),
        RouteSpec::new(Method::GET, "/readyz", None, |m| on(m, probes::readyz)),
        RouteSpec::new(Method::GET, "/metrics", None, |m| {
            on(m, probes::metrics_text)
        }),
        RouteSpec::new(Method::GET, "/api/v1/admin/status", admin, |m| {
            on(m, admin::status)
        }),
        RouteSpec::new(Method::GET, "/api/v1/admin/dead-letters", admin, |m| {
            on(m, admin::list)
        }),
        RouteSpec::new(
            Method::POST,
            "/api/v1/admin/dead-letters/retry-all",
            admin,
            |m| on(m, admin::retry_all),
        ),
        RouteSpec::new(Method::GET, letter, admin, |m| on(m, admin::show)),
        RouteSpec::new(Method::DELETE, letter, admin, |m| on(m, admin::drop_letter)),
        RouteSpec::new(
            Method::POST,
            "/api/v1/admin/dead-letters/{id}/retry",
            admin,
            |m| on(m, admin::retry),
        ),
        RouteSpec::new(Method::POST, "/api/v1/admin/contacts", admin, |m| {
            on(m, admin::import_contacts)
        }),
        RouteSpec::new(Method::POST, "/api/v1/admin/customers", admin, |m| {
            on(m, admin::import_customers)
        }),
        RouteSpec::new(
            Method::POST,
            "/api/v1/admin/contacts/pull/{connection}",
            admin,
            |m| on(m, admin::pull_contacts),
        ),
        RouteSpec::new(Method::GET, "/ui", None, |m| on(m, ui::page)),
        RouteSpec::new(Method::GET, "/ui/app.js", None, |m| on(m, ui::script)),
        RouteSpec::new(Method::GET, "/ui/app.css", None, |m| on(m, ui::style)),
    ]
}

/// The API's router, from [`routes`]: each route behind the bearer check of its scope.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let mut public = Router::new();
    let mut scoped: Vec<(Scope, Router<Arc<AppState>>)> =
        vec![(Scope::Api, Router::new()), (Scope::Admin, Router::new())];
    for route in routes() {
        let filter = MethodFilter::try_from(route.method.clone()).expect("a routable method");
        let handler = (route.handler)(filter);
        match route.scope {
            None => public = public.route(route.path, handler.clone()),
            Some(scope) => {
                for (of, router) in &mut scoped {
                    if *of == scope {
                        *router = std::mem::take(router).route(route.path, handler.clone());
                    }
                }
            }
        }
    }
    for (scope, router) in scoped {
        let checked = router.route_layer(middleware::from_fn_with_state(
            (state.tokens.clone(), scope),
            require_bearer,
        ));
        public = public.merge(checked);
    }
    public
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use unisync_core::{ContactField, UnifiedContact};

    use super::*;
    use crate::http::openapi::OPENAPI;

    /// The OpenAPI document names exactly the routes the router serves, each with the
    /// security of its scope, and the update body field for field as the endpoint takes it.
    #[test]
    fn the_openapi_document_matches_the_route_table() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut documented = Vec::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let security = operation.get("security").unwrap_or(&document["security"]);
                let scope = match security.to_string().as_str() {
                    "[]" => None,
                    r#"[{"bearerAuth":[]}]"# => Some(Scope::Api),
                    r#"[{"adminAuth":[]}]"# => Some(Scope::Admin),
                    other => panic!("{method} {path}: security {other}"),
                };
                documented.push((method.to_uppercase(), path.clone(), scope));
            }
        }
        let mut served: Vec<_> = routes()
            .into_iter()
            .map(|route| {
                (
                    route.method.to_string(),
                    route.path.to_string(),
                    route.scope,
                )
            })
            .collect();
        documented.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        served.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(documented, served);

        let update = &document["components"]["schemas"]["ContactUpdate"];
        assert_eq!(update["required"], json!(["email", "first_name"]));
        let properties = update["properties"].as_object().unwrap();
        for field in ContactField::ALL {
            let property = &properties[field.name()];
            let expected = match field {
                ContactField::Email | ContactField::FirstName => json!("string"),
                _ => json!(["string", "null"]),
            };
            assert_eq!(property["type"], expected, "{}", field.name());
        }
        let contact = &document["components"]["schemas"]["UnifiedContact"]["properties"];
        let shown = serde_json::to_value(UnifiedContact::new("c1", "hubspot", "1")).unwrap();
        let shown: Vec<&String> = shown.as_object().unwrap().keys().collect();
        let listed: Vec<&String> = contact.as_object().unwrap().keys().collect();
        assert_eq!(listed, shown, "UnifiedContact, field for field");
        let import_line = &document["components"]["schemas"]["ContactImport"]["properties"];
        let importable: Vec<&String> = import_line.as_object().unwrap().keys().collect();
        assert_eq!(importable, shown, "a contacts import line, field for field");
    }

    /// The README's route table has a row for each route the router serves, and no other.
    #[test]
    fn the_readme_route_table_matches_the_route_table() {
        let mut listed = crate::http::testing::readme_table("route");
        let mut served: Vec<String> = routes()
            .iter()
            .map(|route| format!("{} {}", route.method, route.path))
            .collect();
        listed.sort();
        served.sort();
        assert_eq!(listed, served);
    }
}
