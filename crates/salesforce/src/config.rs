//! A Salesforce connection's config table, read and checked at start-up.

use std::time::Duration;

use jsonwebtoken::EncodingKey;
use unisync_core::{ConfigError, ConnectionConfig, CrmFieldNaming, FieldMapping, Secret};

use crate::mapping::{default_mapping, is_field_name};

const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";
const DEFAULT_API_VERSION: &str = "v62.0";
const DEFAULT_TIMEOUT_SECS: u64 = 30;

const KEYS: &[&str] = &[
    "login_url",
    "api_version",
    "username",
    "timeout_secs",
    "fields",
    "extra_fields",
];
const SECRETS: &[&str] = &["client_id", "client_secret", "refresh_token", "private_key"];

/// How the connection gets its sessions (`POST {login_url}/services/oauth2/token`).
#[derive(Clone, Debug)]
pub enum Grant {
    /// `grant_type=refresh_token`. The refresh token may be rotated by Salesforce; the
    /// rotated one is kept in the connection's credential store.
    RefreshToken {
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Secret,
    },
    /// `grant_type=client_credentials`, for a connected app with a run-as user.
    ClientCredentials {
        client_id: Secret,
        client_secret: Secret,
    },
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: an RS256 assertion signed
    /// with the connected app's certificate key, on behalf of `username`.
    JwtBearer {
        client_id: Secret,
        private_key: PrivateKey,
        username: String,
    },
}

/// An RSA private key, checked at start-up. Its `Debug` never shows it.
#[derive(Clone)]
pub struct PrivateKey(pub EncodingKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

/// Everything a Salesforce connection needs, checked.
#[derive(Clone, Debug)]
pub struct SalesforceConfig {
    /// Where the token endpoint lives (`https://login.salesforce.com`, a My Domain, ...).
    pub login_url: String,
    /// `vNN.N`, as it appears in API paths.
    pub api_version: String,
    pub grant: Grant,
    pub timeout: Duration,
    pub mapping: FieldMapping,
}

impl SalesforceConfig {
    /// Reads and checks the connection's table; every problem names its key.
    pub fn from_connection(config: &ConnectionConfig) -> Result<Self, ConfigError> {
        if config.settings.contains_key("budget_stop_share") {
            return Err(config.error(
                "budget_stop_share",
                "replaced by the connection's `reserve_share` (the share of the daily budget left to others: 1 - budget_stop_share)",
            ));
        }
        config.check_keys(KEYS, SECRETS)?;
        let login_url = config
            .string_or("login_url", DEFAULT_LOGIN_URL)?
            .trim_end_matches('/')
            .to_string();
        if !(login_url.starts_with("https://") || login_url.starts_with("http://")) {
            return Err(config.error("login_url", "must be an http(s) URL"));
        }
        let api_version = config.string_or("api_version", DEFAULT_API_VERSION)?;
        let version_number = api_version.strip_prefix('v').unwrap_or("");
        if version_number.parse::<f64>().is_err() || !version_number.contains('.') {
            return Err(config.error("api_version", "must look like v62.0"));
        }
        let timeout_secs = config.u64("timeout_secs")?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 {
            return Err(config.error("timeout_secs", "must be at least 1"));
        }
        Ok(SalesforceConfig {
            login_url,
            api_version,
            grant: read_grant(config)?,
            timeout: Duration::from_secs(timeout_secs),
            mapping: config.field_mapping(default_mapping(), &NAMING)?,
        })
    }
}

/// The grant follows from the secrets given: a private key means JWT bearer, a refresh token
/// the refresh-token flow, a client secret alone client credentials.
fn read_grant(config: &ConnectionConfig) -> Result<Grant, ConfigError> {
    let client_id = config.require_secret("client_id")?;
    if let Some(key) = config.secret("private_key")? {
        let username = config
            .string("username")?
            .filter(|name| !name.trim().is_empty())
            .ok_or_else(|| config.error("username", "required with private_key"))?;
        let private_key = EncodingKey::from_rsa_pem(key.expose().as_bytes()).map_err(|err| {
            config.error(
                "private_key",
                format!("not an RSA private key in PEM: {err}"),
            )
        })?;
        return Ok(Grant::JwtBearer {
            client_id,
            private_key: PrivateKey(private_key),
            username,
        });
    }
    if config.settings.contains_key("username") {
        return Err(config.error("username", "only used with private_key (JWT bearer)"));
    }
    let client_secret = config.require_secret("client_secret")?;
    Ok(match config.secret("refresh_token")? {
        Some(refresh_token) => Grant::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        },
        None => Grant::ClientCredentials {
            client_id,
            client_secret,
        },
    })
}

/// How the connection's `fields` and `extra_fields` may name the CRM's fields.
const NAMING: CrmFieldNaming = CrmFieldNaming {
    customer_field: "AccountId",
    name_kind: "a Salesforce field name",
    is_valid: is_field_name,
};

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use unisync_core::ContactField;

    use super::*;

    fn connection(settings: Value, secrets: &[(&str, &str)]) -> ConnectionConfig {
        ConnectionConfig::new("sf", "salesforce", settings.as_object().unwrap().clone())
            .with_inline_secrets(secrets.iter().copied())
    }

    #[test]
    fn defaults_and_refresh_token_grant() {
        let config = SalesforceConfig::from_connection(&connection(
            json!({}),
            &[
                ("client_id", "id"),
                ("client_secret", "s"),
                ("refresh_token", "r"),
            ],
        ))
        .unwrap();
        assert_eq!(config.login_url, "https://login.salesforce.com");
        assert_eq!(config.api_version, "v62.0");
        assert!(matches!(config.grant, Grant::RefreshToken { .. }));
        assert!(!format!("{config:?}").contains("\"s\""));
    }

    #[test]
    fn debug_output_shows_no_secret_of_any_grant() {
        let key_file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-test-key.pem"
        );
        let key = std::fs::read_to_string(key_file).unwrap();
        let key_body = key.lines().nth(1).unwrap();
        for (settings, secrets) in [
            (
                json!({}),
                vec![
                    ("client_id", "3MVG9ClientIdNeverShown"),
                    ("client_secret", "ClientSecretNeverShown"),
                    ("refresh_token", "5Aep861RefreshTokenNeverShown"),
                ],
            ),
            (
                json!({}),
                vec![
                    ("client_id", "3MVG9ClientIdNeverShown"),
                    ("client_secret", "ClientSecretNeverShown"),
                ],
            ),
            (
                json!({"username": "a@b.c"}),
                vec![
                    ("client_id", "3MVG9ClientIdNeverShown"),
                    ("private_key", key.as_str()),
                ],
            ),
        ] {
            let config =
                SalesforceConfig::from_connection(&connection(settings, &secrets)).unwrap();
            let shown = format!("{config:?} {:?}", config.grant);
            for secret in ["NeverShown", key_body] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn client_secret_alone_is_client_credentials() {
        let config = SalesforceConfig::from_connection(&connection(
            json!({"login_url": "https://example.my.salesforce.com/"}),
            &[("client_id", "id"), ("client_secret", "s")],
        ))
        .unwrap();
        assert!(matches!(config.grant, Grant::ClientCredentials { .. }));
        assert_eq!(config.login_url, "https://example.my.salesforce.com");
    }

    #[test]
    fn problems_name_their_key() {
        let secrets = [("client_id", "id"), ("client_secret", "s")];
        for (settings, key) in [
            (json!({"login_urll": "x"}), "login_urll"),
            (json!({"api_version": "62"}), "api_version"),
            (json!({"budget_stop_share": 1.5}), "budget_stop_share"),
            (json!({"timeout_secs": 0}), "timeout_secs"),
            (json!({"fields": {"titel": "Title"}}), "fields"),
            (
                json!({"fields": {"position": "Title FROM"}}),
                "fields.position",
            ),
            (
                json!({"fields": {"unified_customer_id": "Account__c"}}),
                "fields.unified_customer_id",
            ),
            (json!({"username": "a@b.c"}), "username"),
        ] {
            let err =
                SalesforceConfig::from_connection(&connection(settings, &secrets)).unwrap_err();
            assert_eq!(err.key, key);
        }
        let err = SalesforceConfig::from_connection(&connection(json!({}), &[("client_id", "id")]))
            .unwrap_err();
        assert_eq!(err.key, "client_secret_env");
        let err = SalesforceConfig::from_connection(&connection(
            json!({"username": "a@b.c"}),
            &[("client_id", "id"), ("private_key", "not a key")],
        ))
        .unwrap_err();
        assert_eq!(err.key, "private_key");
    }

    #[test]
    fn field_overrides_rename_fields() {
        let config = SalesforceConfig::from_connection(&connection(
            json!({"fields": {"position": "Job_Title__c"}}),
            &[("client_id", "id"), ("client_secret", "s")],
        ))
        .unwrap();
        assert_eq!(
            config.mapping.crm_field(ContactField::Position),
            Some("Job_Title__c")
        );
    }
}
