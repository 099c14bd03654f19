//! The operators' status page under `/ui`: one static page, a script and a style sheet, all
//! built into the binary (no external assets, so it works on a machine without internet).
//! The page holds no data: its script asks for an admin token and reads the admin routes
//! with it, as the CLI does, so the page needs no session or cookie of its own and opens no
//! cross-site request surface.

use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::on;

use crate::api::RouteSpec;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Only the page's own script and styles run, it talks only to this daemon, and no other site
/// may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
    base-uri 'none'; frame-ancestors 'none'";

/// The page's routes, for [`crate::api::routes`]: open to anyone, since they hold no data.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/ui", None, |on_method| {
            on(on_method, || asset("text/html; charset=utf-8", PAGE))
        }),
        RouteSpec::new(Method::GET, "/ui/app.js", None, |on_method| {
            on(on_method, || {
                asset("text/javascript; charset=utf-8", SCRIPT)
            })
        }),
        RouteSpec::new(Method::GET, "/ui/app.css", None, |on_method| {
            on(on_method, || asset("text/css; charset=utf-8", STYLE))
        }),
    ]
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}
