use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A secret value (token, client secret). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it (an HTTP header, a token request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A configuration problem, naming the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connections.{connection}.{key}: {problem}")]
pub struct ConfigError {
    /// The connection's name (`NAME` of `[connections.NAME]`).
    pub connection: String,
    /// The key at fault.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

/// One `[connections.NAME]` table, as a provider sees it: its own keys only (the daemon
/// takes out the keys it handles itself).
///
/// Secrets are never in the table: a secret `KEY` is given as `KEY_env` (the name of an
/// environment variable) or `KEY_file` (a file whose trimmed content is the secret).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionConfig {
    /// The connection's name (`NAME` of `[connections.NAME]`).
    pub name: String,
    /// Its `system` value, which picks the provider.
    pub system: String,
    /// The table's keys the provider reads.
    pub settings: Map<String, Value>,
    /// Secrets handed over in memory rather than through `_env` / `_file` keys (the built-in
    /// sandbox does this); they win over the table's.
    pub inline_secrets: BTreeMap<String, Secret>,
}

impl ConnectionConfig {
    /// A connection from its name, its system and the provider's keys; no inline secrets.
    pub fn new(
        name: impl Into<String>,
        system: impl Into<String>,
        settings: Map<String, Value>,
    ) -> Self {
        ConnectionConfig {
            name: name.into(),
            system: system.into(),
            settings,
            inline_secrets: BTreeMap::new(),
        }
    }

    /// Adds secrets handed over in memory (a sandbox's credentials, a test's).
    pub fn with_inline_secrets<K: Into<String>, V: Into<String>>(
        mut self,
        secrets: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.inline_secrets.extend(
            secrets
                .into_iter()
                .map(|(key, value)| (key.into(), Secret::new(value))),
        );
        self
    }

    /// A [`ConfigError`] of this connection naming `key`.
    pub fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            connection: self.name.clone(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// Refuses any key that is neither in `keys` nor a `_env` / `_file` form of one of
    /// `secrets`.
    pub fn check_keys(&self, keys: &[&str], secrets: &[&str]) -> Result<(), ConfigError> {
        for key in self.settings.keys() {
            let is_secret_key = secrets.iter().any(|secret| {
                key.strip_prefix(secret)
                    .is_some_and(|rest| rest == "_env" || rest == "_file")
            });
            if !keys.contains(&key.as_str()) && !is_secret_key {
                let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                expected.extend(secrets.iter().map(|s| format!("{s}_env")));
                return Err(self.error(
                    key,
                    format!("unknown key (expected one of: {})", expected.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The string value of `key`; an error when it is something else.
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.settings.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    /// The string value of `key`, or `default` without one.
    pub fn string_or(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.string(key)?.unwrap_or_else(|| default.to_string()))
    }

    /// The whole non-negative number value of `key`; an error when it is something else.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.settings.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.error(key, "must be a non-negative whole number")),
        }
    }

    /// The number value of `key`; an error when it is something else.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.settings.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(key, "must be a number")),
        }
    }

    /// A table of strings, e.g. `fields = { position = "hs_job_title" }`.
    pub fn string_table(&self, key: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(value) = self.settings.get(key) else {
            return Ok(BTreeMap::new());
        };
        let table = value
            .as_object()
            .ok_or_else(|| self.error(key, "must be a table"))?;
        table
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => Ok((name.clone(), text.clone())),
                _ => Err(self.error(&format!("{key}.{name}"), "must be a string")),
            })
            .collect()
    }

    /// The connection's field mapping: the provider's `default` with the connection's
    /// `fields` (unified field to another CRM field) and `extra_fields` (custom fields)
    /// applied. Every CRM field named must pass `naming.is_valid`, and neither table may move
    /// the customer link, which the provider always writes to `naming.customer_field`. Each
    /// problem names its key.
    pub fn field_mapping(
        &self,
        default: crate::FieldMapping,
        naming: &CrmFieldNaming,
    ) -> Result<crate::FieldMapping, ConfigError> {
        let overrides = self.string_table("fields")?;
        let extras = self.string_table("extra_fields")?;
        for (key, table) in [("fields", &overrides), ("extra_fields", &extras)] {
            for (unified, crm_field) in table {
                let key = format!("{key}.{unified}");
                if crate::ContactField::from_name(unified)
                    == Some(crate::ContactField::UnifiedCustomerId)
                {
                    let problem = format!(
                        "the customer is always the contact's {}",
                        naming.customer_field
                    );
                    return Err(self.error(&key, problem));
                }
                if !(naming.is_valid)(crm_field) {
                    let problem = format!("`{crm_field}` is not {}", naming.name_kind);
                    return Err(self.error(&key, problem));
                }
            }
        }
        default
            .with_overrides(&overrides)
            .map_err(|problem| self.error("fields", problem))?
            .with_extra_fields(&extras)
            .map_err(|problem| self.error("extra_fields", problem))
    }

    /// The secret `key`, from `inline_secrets`, `KEY_env` or `KEY_file`. A named variable or
    /// file that is missing or empty is an error; no key at all is `None`.
    pub fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        if let Some(secret) = self.inline_secrets.get(key) {
            return Ok(Some(secret.clone()));
        }
        let env_key = format!("{key}_env");
        let file_key = format!("{key}_file");
        let value = if let Some(variable) = self.string(&env_key)? {
            std::env::var(&variable).map_err(|_| {
                self.error(
                    &env_key,
                    format!("environment variable {variable} is not set"),
                )
            })?
        } else if let Some(path) = self.string(&file_key)? {
            std::fs::read_to_string(&path)
                .map_err(|err| self.error(&file_key, format!("cannot read {path}: {err}")))?
        } else {
            return Ok(None);
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(self.error(key, "the secret is empty"));
        }
        Ok(Some(Secret::new(value)))
    }

    /// Every secret the connection names (inline, or by a `KEY_env` / `KEY_file` key), as
    /// read now, by `KEY`: a daemon that reloads its config compares them with those its
    /// adapter was built from, since a rotated secret leaves the table as it was.
    pub fn secrets(&self) -> Result<BTreeMap<String, Secret>, ConfigError> {
        let named = self.settings.keys().filter_map(|key| {
            key.strip_suffix("_env")
                .or_else(|| key.strip_suffix("_file"))
        });
        let mut secrets = BTreeMap::new();
        for key in self.inline_secrets.keys().map(String::as_str).chain(named) {
            if let Some(secret) = self.secret(key)? {
                secrets.insert(key.to_string(), secret);
            }
        }
        Ok(secrets)
    }

    /// The secret `key` (see [`ConnectionConfig::secret`]); an error naming `KEY_env` without one.
    pub fn require_secret(&self, key: &str) -> Result<Secret, ConfigError> {
        self.secret(key)?
            .ok_or_else(|| self.error(&format!("{key}_env"), "missing (or give {key}_file)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(settings: Value) -> ConnectionConfig {
        ConnectionConfig::new("crm", "hubspot", settings.as_object().unwrap().clone())
    }

    #[test]
    fn unknown_keys_are_named() {
        let c = config(json!({"base_url": "x", "acess_token_env": "T"}));
        let err = c.check_keys(&["base_url"], &["access_token"]).unwrap_err();
        assert_eq!(err.key, "acess_token_env");
        assert!(c.check_keys(&["base_url", "acess_token_env"], &[]).is_ok());
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = std::env::temp_dir().join(format!("unisync-core-secret-{}", std::process::id()));
        std::fs::write(&dir, "tok-123\n").unwrap();
        let c = config(json!({"access_token_file": dir.to_str().unwrap()}));
        let secret = c.require_secret("access_token").unwrap();
        assert_eq!(secret.expose(), "tok-123");
        assert!(!format!("{secret:?}").contains("tok"));
        std::fs::remove_file(dir).unwrap();
        let missing = config(json!({"access_token_env": "UNISYNC_TEST_SURELY_UNSET_VAR"}));
        assert!(
            missing
                .secret("access_token")
                .unwrap_err()
                .problem
                .contains("not set")
        );
        assert!(config(json!({})).require_secret("access_token").is_err());
    }

    #[test]
    fn secrets_are_read_anew_from_every_source_the_table_names() {
        let file =
            std::env::temp_dir().join(format!("unisync-core-secrets-{}", std::process::id()));
        std::fs::write(&file, "first\n").unwrap();
        let c = config(json!({
            "base_url": "x",
            "client_secret_file": file.to_str().unwrap(),
        }))
        .with_inline_secrets([("access_token", "inline")]);
        let read = |c: &ConnectionConfig| -> Vec<(String, String)> {
            let secrets = c.secrets().unwrap();
            secrets
                .into_iter()
                .map(|(key, secret)| (key, secret.expose().to_string()))
                .collect()
        };
        let first = read(&c);
        assert_eq!(
            first,
            [
                ("access_token".to_string(), "inline".to_string()),
                ("client_secret".to_string(), "first".to_string()),
            ]
        );
        std::fs::write(&file, "rotated\n").unwrap();
        assert_eq!(read(&c)[1].1, "rotated", "read at each call");
        std::fs::remove_file(&file).unwrap();
        let error = c.secrets().unwrap_err();
        assert_eq!(error.key, "client_secret_file", "{error}");
    }
}

/// How a CRM names its fields, for [`ConnectionConfig::field_mapping`].
#[derive(Clone, Copy, Debug)]
pub struct CrmFieldNaming {
    /// The CRM field (or link) that always holds the contact's customer.
    pub customer_field: &'static str,
    /// What a valid name is called in errors, e.g. "a Salesforce field name".
    pub name_kind: &'static str,
    /// Whether a text is a valid field name of the CRM (no query syntax, no spaces, ...).
    pub is_valid: fn(&str) -> bool,
}
