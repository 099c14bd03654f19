//! Who may call what: bearer tokens by scope, checked before a scoped route's handler runs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use unisync_core::Secret;

use super::error::ApiError;

/// The bearer tokens the daemon accepts, by scope: API tokens reach the contact routes only,
/// admin tokens the admin routes only (a client that may PUT contacts cannot import a
/// contact with any source id and so write any CRM record; an operator's token does not
/// edit contacts).
pub struct Tokens {
    pub api: Vec<Secret>,
    pub admin: Vec<Secret>,
}

/// Which routes a token opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/api/v1/unified/...`
    Api,
    /// `/api/v1/admin/...`
    Admin,
}

impl Tokens {
    fn of(&self, scope: Scope) -> &[Secret] {
        match scope {
            Scope::Api => &self.api,
            Scope::Admin => &self.admin,
        }
    }
}

/// Whether `presented` is one of `tokens`: compared with every token without stopping
/// early, each in constant time.
fn is_one_of(tokens: &[Secret], presented: &str) -> bool {
    tokens.iter().fold(false, |found, token| {
        found | bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes()))
    })
}

/// Lets the request through when it bears a token of `scope`: 401 `unauthorized` without a
/// known token, 403 `forbidden` with a token of the other scope.
pub async fn require_bearer(
    State((tokens, scope)): State<(Arc<Tokens>, Scope)>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        )
        .into_response();
    };
    let in_scope = is_one_of(tokens.of(scope), presented);
    let other_scope = match scope {
        Scope::Api => Scope::Admin,
        Scope::Admin => Scope::Api,
    };
    let of_other_scope = is_one_of(tokens.of(other_scope), presented);
    if in_scope {
        next.run(request).await
    } else if of_other_scope {
        let message = match scope {
            Scope::Api => "an admin token cannot reach the contact routes: use an API token",
            Scope::Admin => "an API token cannot reach the admin routes: use an admin token",
        };
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use unisync_core::UnifiedContact;

    use crate::http::testing::serve_on_loopback;
    use crate::store::Store;

    #[tokio::test]
    async fn api_tokens_open_only_the_contact_routes_and_admin_tokens_only_the_admin_routes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 8).unwrap();
        store
            .upsert_contact("crm", UnifiedContact::new("c1", "hubspot", "1"))
            .await
            .unwrap();
        let base = serve_on_loopback(&store).await;
        let client = reqwest::Client::new();
        let ask = |method: reqwest::Method, path: &str, token: Option<&str>| {
            let mut request = client.request(method, format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if path.ends_with("/contacts") {
                request = request.body(r#"{"id":"c2","source_system":"hubspot","source_id":"2"}"#);
            } else if path.contains("/unified/") {
                request = request.json(&json!({"email": "ann@example.com", "first_name": "Ann"}));
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (
                    status,
                    body["error"]["code"].as_str().unwrap_or("").to_string(),
                )
            }
        };
        let contact = "/api/v1/unified/contact/c1";
        let sync = "/api/v1/unified/contact/c1/sync";
        let import = "/api/v1/admin/contacts";
        let status = "/api/v1/admin/status";
        use reqwest::Method;
        for (method, path, token, expected) in [
            (Method::PUT, contact, Some("api-token"), (200, "")),
            (Method::GET, sync, Some("api-token"), (200, "")),
            (
                Method::PUT,
                contact,
                Some("admin-token"),
                (403, "forbidden"),
            ),
            (
                Method::GET,
                contact,
                Some("admin-token"),
                (403, "forbidden"),
            ),
            (Method::POST, import, Some("api-token"), (403, "forbidden")),
            (Method::GET, status, Some("api-token"), (403, "forbidden")),
            (Method::GET, status, Some("admin-token"), (200, "")),
            (Method::POST, import, Some("admin-token"), (200, "")),
            (Method::GET, status, None, (401, "unauthorized")),
            (
                Method::GET,
                status,
                Some("admin-token-"),
                (401, "unauthorized"),
            ),
            (
                Method::PUT,
                contact,
                Some("api-toke"),
                (401, "unauthorized"),
            ),
        ] {
            let (got_status, got_code) = ask(method.clone(), path, token).await;
            assert_eq!(
                (got_status, got_code.as_str()),
                expected,
                "{method} {path} with {token:?}"
            );
        }
        assert!(
            store.contact("c2").await.unwrap().is_some(),
            "the admin token's import"
        );
    }
}
