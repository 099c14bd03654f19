//! A HubSpot connection's settings, read and checked once at start-up.

use std::time::Duration;

use jiff::tz::TimeZone;
use reqwest::Url;
use unisync_core::{ConfigError, ConnectionConfig, FieldMapping, Secret};

use crate::mapping::default_mapping;

/// HubSpot's API host.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// The Free/Starter ten-second limit: a safe ceiling when the account's tier is unknown.
pub const DEFAULT_REQUESTS_PER_10S: u32 = 100;
const DEFAULT_TIMEOUT_SECS: u64 = 30;

const KEYS: [&str; 6] = [
    "base_url",
    "requests_per_10s",
    "timeout_secs",
    "daily_reset_tz",
    "fields",
    "extra_fields",
];
const SECRETS: [&str; 4] = [
    "access_token",
    "client_id",
    "client_secret",
    "refresh_token",
];
const OAUTH_SECRETS: [&str; 3] = ["client_id", "client_secret", "refresh_token"];

/// How the connection proves who it is.
#[derive(Clone, Debug)]
pub enum HubspotAuth {
    /// A private-app or service-key token (`pat-na1-...`): a static bearer token.
    AccessToken(Secret),
    /// An OAuth app: access tokens come from `base_url/oauth/v1/token` with the refresh token.
    OAuth {
        client_id: Secret,
        client_secret: Secret,
        refresh_token: Secret,
    },
}

/// A checked `[connections.NAME]` table with `system = "hubspot"`.
#[derive(Clone, Debug)]
pub struct HubspotConfig {
    pub base_url: Url,
    pub auth: HubspotAuth,
    /// The most requests per ten seconds the connection makes, whatever HubSpot's headers
    /// allow (the account tier's limit, or less to leave room for other apps).
    pub requests_per_10s: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The account's time zone (an IANA name in config), in which HubSpot's daily limit
    /// resets at midnight. `None`: read from HubSpot's account details.
    pub daily_reset_tz: Option<TimeZone>,
    /// The default field table with the connection's `fields` overrides.
    pub mapping: FieldMapping,
}

impl HubspotConfig {
    /// Reads and checks the table; errors name the key. Unknown keys are errors.
    pub fn from_connection(config: &ConnectionConfig) -> Result<Self, ConfigError> {
        config.check_keys(&KEYS, &SECRETS)?;
        let base_url_text = config.string_or("base_url", DEFAULT_BASE_URL)?;
        let base_url = Url::parse(&base_url_text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| config.error("base_url", "must be an http(s) URL"))?;
        let requests_per_10s = match config.u64("requests_per_10s")? {
            None => DEFAULT_REQUESTS_PER_10S,
            Some(limit) => u32::try_from(limit)
                .ok()
                .filter(|limit| *limit > 0)
                .ok_or_else(|| config.error("requests_per_10s", "must be at least 1"))?,
        };
        let timeout_secs = config.u64("timeout_secs")?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 {
            return Err(config.error("timeout_secs", "must be at least 1"));
        }
        let daily_reset_tz = match config.string("daily_reset_tz")? {
            None => None,
            Some(name) => Some(TimeZone::get(&name).map_err(|_| {
                config.error(
                    "daily_reset_tz",
                    format!(
                        "`{name}` is not an IANA time zone name (such as America/New_York); \
                         give the HubSpot account's time zone, or leave the key out to read it \
                         from HubSpot"
                    ),
                )
            })?),
        };
        let mapping = default_mapping()
            .with_overrides(&config.string_table("fields")?)
            .map_err(|problem| config.error("fields", problem))?
            .with_extra_fields(&config.string_table("extra_fields")?)
            .map_err(|problem| config.error("extra_fields", problem))?;
        Ok(HubspotConfig {
            base_url,
            auth: read_auth(config)?,
            requests_per_10s,
            timeout: Duration::from_secs(timeout_secs),
            daily_reset_tz,
            mapping,
        })
    }
}

/// A static token, or all three OAuth secrets; never both, never a part of OAuth.
fn read_auth(config: &ConnectionConfig) -> Result<HubspotAuth, ConfigError> {
    let access_token = config.secret("access_token")?;
    let mut oauth = Vec::with_capacity(OAUTH_SECRETS.len());
    for key in OAUTH_SECRETS {
        oauth.push((key, config.secret(key)?));
    }
    let given_oauth = oauth.iter().filter(|(_, secret)| secret.is_some()).count();
    match (access_token, given_oauth) {
        (Some(token), 0) => Ok(HubspotAuth::AccessToken(token)),
        (Some(_), _) => Err(config.error(
            "access_token_env",
            "give either access_token or the OAuth client_id, client_secret and \
             refresh_token, not both",
        )),
        (None, 0) => Err(config.error(
            "access_token_env",
            "missing: give access_token (a private-app token) or client_id, client_secret \
             and refresh_token (an OAuth app)",
        )),
        (None, _) => {
            let mut secrets = oauth.into_iter().map(|(key, secret)| {
                secret.ok_or_else(|| {
                    config.error(
                        &format!("{key}_env"),
                        "missing: OAuth needs client_id, client_secret and refresh_token",
                    )
                })
            });
            let mut next = || secrets.next().expect("three OAuth secrets");
            Ok(HubspotAuth::OAuth {
                client_id: next()?,
                client_secret: next()?,
                refresh_token: next()?,
            })
        }
    }
}

#[cfg(test)]
mod tests {

    use serde_json::{Value, json};
    use unisync_core::ContactField;

    use super::*;

    fn connection(settings: Value, secrets: &[(&str, &str)]) -> ConnectionConfig {
        ConnectionConfig::new("hs", "hubspot", settings.as_object().unwrap().clone())
            .with_inline_secrets(secrets.iter().copied())
    }

    #[test]
    fn defaults_apply_and_overrides_rename_fields() {
        let config = HubspotConfig::from_connection(&connection(
            json!({"fields": {"position": "hs_job_title"}}),
            &[("access_token", "pat")],
        ))
        .unwrap();
        assert_eq!(config.base_url.as_str(), "https://api.hubapi.com/");
        assert_eq!(config.requests_per_10s, 100);
        assert_eq!(
            config.mapping.crm_field(ContactField::Position),
            Some("hs_job_title")
        );
        assert!(matches!(config.auth, HubspotAuth::AccessToken(_)));
        assert_eq!(config.daily_reset_tz, None);
    }

    #[test]
    fn a_daily_reset_zone_is_an_iana_name_from_the_bundled_database() {
        let config = HubspotConfig::from_connection(&connection(
            json!({"daily_reset_tz": "US/Eastern"}),
            &[("access_token", "pat")],
        ))
        .unwrap();
        assert_eq!(
            config.daily_reset_tz.unwrap().iana_name(),
            Some("US/Eastern")
        );
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let config = HubspotConfig::from_connection(&connection(
            json!({}),
            &[
                ("client_id", "id-c0ffee"),
                ("client_secret", "secret-c0ffee"),
                ("refresh_token", "refresh-c0ffee"),
            ],
        ))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("c0ffee"), "{shown}");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let key_of = |settings: Value, secrets: &[(&str, &str)]| {
            HubspotConfig::from_connection(&connection(settings, secrets))
                .unwrap_err()
                .key
        };
        let token = [("access_token", "pat")];
        assert_eq!(key_of(json!({"base_ur": "x"}), &token), "base_ur");
        assert_eq!(key_of(json!({"base_url": "ftp://x"}), &token), "base_url");
        assert_eq!(
            key_of(json!({"requests_per_10s": 0}), &token),
            "requests_per_10s"
        );
        assert_eq!(key_of(json!({"fields": {"nope": "x"}}), &token), "fields");
        assert_eq!(
            key_of(json!({"daily_reset_tz": "Mars/Olympus_Mons"}), &token),
            "daily_reset_tz"
        );
        assert_eq!(
            key_of(json!({"daily_reset_tz": 5}), &token),
            "daily_reset_tz"
        );
        assert_eq!(key_of(json!({}), &[]), "access_token_env");
        assert_eq!(
            key_of(json!({}), &[("client_id", "c"), ("refresh_token", "r")]),
            "client_secret_env"
        );
        assert_eq!(
            key_of(json!({}), &[("access_token", "pat"), ("client_id", "c")]),
            "access_token_env"
        );
    }

    #[test]
    fn three_oauth_secrets_make_an_oauth_connection() {
        let config = HubspotConfig::from_connection(&connection(
            json!({}),
            &[
                ("client_id", "c"),
                ("client_secret", "s"),
                ("refresh_token", "r"),
            ],
        ))
        .unwrap();
        assert!(matches!(config.auth, HubspotAuth::OAuth { .. }));
    }
}
