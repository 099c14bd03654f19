//! A Dynamics 365 connection's config table, read and checked at start-up.

use std::time::Duration;

use reqwest::Url;
use unisync_core::{ConfigError, ConnectionConfig, CrmFieldNaming, FieldMapping, Secret};

use crate::mapping::{default_mapping, is_column_name};

const DEFAULT_API_VERSION: &str = "v9.2";
const DEFAULT_TIMEOUT_SECS: u64 = 30;

const KEYS: &[&str] = &[
    "base_url",
    "api_version",
    "tenant_id",
    "token_url",
    "timeout_secs",
    "fields",
    "extra_fields",
];
const SECRETS: &[&str] = &["client_id", "client_secret"];

/// Everything a Dynamics 365 connection needs, checked.
#[derive(Clone, Debug)]
pub struct DynamicsConfig {
    /// The environment (organisation) URL, e.g. `https://contoso.crm.dynamics.com`, without a
    /// trailing slash.
    pub base_url: Url,
    /// `v9.2`, as it appears in `/api/data/{version}/`.
    pub api_version: String,
    /// The Microsoft identity platform's token endpoint: `token_url`, else
    /// `https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token`.
    pub token_url: Url,
    /// The app registration's id and secret (client credentials grant).
    pub client_id: Secret,
    pub client_secret: Secret,
    pub timeout: Duration,
    pub mapping: FieldMapping,
}

impl DynamicsConfig {
    /// Reads and checks the connection's table; every problem names its key.
    pub fn from_connection(config: &ConnectionConfig) -> Result<Self, ConfigError> {
        config.check_keys(KEYS, SECRETS)?;
        let base_url = config.string("base_url")?.ok_or_else(|| {
            config.error(
                "base_url",
                "missing (the environment URL, e.g. https://contoso.crm.dynamics.com)",
            )
        })?;
        let base_url = http_url(config, "base_url", base_url.trim_end_matches('/'))?;
        let api_version = config.string_or("api_version", DEFAULT_API_VERSION)?;
        let number = api_version.strip_prefix('v').unwrap_or("");
        if !number.contains('.') || number.split('.').any(|part| part.parse::<u32>().is_err()) {
            return Err(config.error("api_version", "must look like v9.2"));
        }
        let token_url = match config.string("token_url")? {
            Some(url) => http_url(config, "token_url", &url)?,
            None => {
                let tenant = config
                    .string("tenant_id")?
                    .filter(|tenant| !tenant.trim().is_empty())
                    .ok_or_else(|| {
                        config.error(
                            "tenant_id",
                            "missing (the directory id or domain of the app registration)",
                        )
                    })?;
                if !tenant
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                {
                    return Err(config.error("tenant_id", "must be a directory id or domain"));
                }
                http_url(
                    config,
                    "tenant_id",
                    &format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
                )?
            }
        };
        let timeout_secs = config.u64("timeout_secs")?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 {
            return Err(config.error("timeout_secs", "must be at least 1"));
        }
        Ok(DynamicsConfig {
            base_url,
            api_version,
            token_url,
            client_id: config.require_secret("client_id")?,
            client_secret: config.require_secret("client_secret")?,
            timeout: Duration::from_secs(timeout_secs),
            mapping: config.field_mapping(default_mapping(), &NAMING)?,
        })
    }

    /// The token request's scope: the environment's `.default` permissions.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.base_url.as_str().trim_end_matches('/'))
    }
}

fn http_url(config: &ConnectionConfig, key: &str, text: &str) -> Result<Url, ConfigError> {
    Url::parse(text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .ok_or_else(|| config.error(key, format!("`{text}` is not an http(s) URL")))
}

/// How the connection's `fields` and `extra_fields` may name the CRM's fields.
const NAMING: CrmFieldNaming = CrmFieldNaming {
    customer_field: "parentcustomerid_account",
    name_kind: "a Dataverse column logical name",
    is_valid: is_column_name,
};

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use unisync_core::ContactField;

    use super::*;

    fn connection(settings: Value) -> ConnectionConfig {
        ConnectionConfig::new("d365", "dynamics", settings.as_object().unwrap().clone())
            .with_inline_secrets([
                ("client_id", "app-id-NeverShown"),
                ("client_secret", "SecretNeverShown"),
            ])
    }

    #[test]
    fn defaults_derive_the_token_url_and_scope() {
        let config = DynamicsConfig::from_connection(&connection(json!({
            "base_url": "https://contoso.crm.dynamics.com/",
            "tenant_id": "8f1d2c3b-0000-4000-8000-0123456789ab",
        })))
        .unwrap();
        assert_eq!(config.api_version, "v9.2");
        assert_eq!(
            config.token_url.as_str(),
            "https://login.microsoftonline.com/8f1d2c3b-0000-4000-8000-0123456789ab/oauth2/v2.0/token"
        );
        assert_eq!(config.scope(), "https://contoso.crm.dynamics.com/.default");
        assert!(!format!("{config:?}").contains("NeverShown"));
    }

    #[test]
    fn problems_name_their_key() {
        let base = "https://contoso.crm.dynamics.com";
        for (settings, key) in [
            (json!({"tenant_id": "t"}), "base_url"),
            (json!({"base_url": "contoso", "tenant_id": "t"}), "base_url"),
            (json!({"base_url": base}), "tenant_id"),
            (json!({"base_url": base, "tenant_id": "a/b"}), "tenant_id"),
            (
                json!({"base_url": base, "tenant_id": "t", "api_version": "9.2"}),
                "api_version",
            ),
            (
                json!({"base_url": base, "tenant_id": "t", "timeout_secs": 0}),
                "timeout_secs",
            ),
            (
                json!({"base_url": base, "tenant_id": "t", "tenantid": "t"}),
                "tenantid",
            ),
            (
                json!({"base_url": base, "tenant_id": "t", "fields": {"position": "job title"}}),
                "fields.position",
            ),
            (
                json!({"base_url": base, "tenant_id": "t", "fields": {"unified_customer_id": "x"}}),
                "fields.unified_customer_id",
            ),
        ] {
            let err = DynamicsConfig::from_connection(&connection(settings)).unwrap_err();
            assert_eq!(err.key, key);
        }
        let no_secret = ConnectionConfig::new(
            "d365",
            "dynamics",
            json!({"base_url": base, "tenant_id": "t"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            DynamicsConfig::from_connection(&no_secret).unwrap_err().key,
            "client_id_env"
        );
    }

    #[test]
    fn a_token_url_replaces_the_tenants_and_fields_rename_columns() {
        let config = DynamicsConfig::from_connection(&connection(json!({
            "base_url": "http://127.0.0.1:9",
            "token_url": "http://127.0.0.1:9/tenant/oauth2/v2.0/token",
            "fields": {"position": "new_jobtitle"},
        })))
        .unwrap();
        assert_eq!(
            config.token_url.as_str(),
            "http://127.0.0.1:9/tenant/oauth2/v2.0/token"
        );
        assert_eq!(
            config.mapping.crm_field(ContactField::Position),
            Some("new_jobtitle")
        );
    }
}
