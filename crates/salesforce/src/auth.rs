//! The token request of each OAuth grant, and Salesforce's answer to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use unisync_core::{AdapterError, Secret};

use crate::config::{Grant, PrivateKey};

/// The credential store key of a rotated refresh token.
pub const REFRESH_TOKEN_KEY: &str = "refresh_token";

/// How far ahead a JWT assertion expires. Salesforce wants a short-lived assertion.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(180);

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// What the token endpoint answers. There is no `expires_in`: a session lives until the org's
/// timeout, and a 401 `INVALID_SESSION_ID` says it ended.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    /// Where the org's API lives; every data call goes there.
    pub instance_url: String,
    /// Present only when the connected app rotates refresh tokens: the old one is dead.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// The form of a token request for `grant`. `refresh_token` is the newest refresh token (the
/// configured one, or one Salesforce rotated since); `login_url` is the JWT's audience.
pub fn token_form(
    grant: &Grant,
    refresh_token: Option<&Secret>,
    login_url: &str,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    Ok(match grant {
        Grant::RefreshToken {
            client_id,
            client_secret,
            refresh_token: configured,
        } => vec![
            ("grant_type", "refresh_token".to_string()),
            (
                "refresh_token",
                refresh_token.unwrap_or(configured).expose().to_string(),
            ),
            ("client_id", client_id.expose().to_string()),
            ("client_secret", client_secret.expose().to_string()),
        ],
        Grant::ClientCredentials {
            client_id,
            client_secret,
        } => vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.expose().to_string()),
            ("client_secret", client_secret.expose().to_string()),
        ],
        Grant::JwtBearer {
            client_id,
            private_key,
            username,
        } => vec![
            ("grant_type", JWT_BEARER_GRANT.to_string()),
            (
                "assertion",
                jwt_assertion(client_id, private_key, username, login_url)?,
            ),
        ],
    })
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

/// An RS256 assertion: issued by the connected app (`iss` = client id) for `username`, meant
/// for the login server, expiring [`ASSERTION_LIFETIME`] from now.
fn jwt_assertion(
    client_id: &Secret,
    private_key: &PrivateKey,
    username: &str,
    login_url: &str,
) -> Result<String, AdapterError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = AssertionClaims {
        iss: client_id.expose(),
        sub: username,
        aud: login_url,
        exp: (now + ASSERTION_LIFETIME).as_secs(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &private_key.0)
        .map_err(|err| AdapterError::unauthorized("JWT_SIGNING", err.to_string()))
}
