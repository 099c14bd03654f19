use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contact::READ_ONLY_FIELDS;
use crate::{ContactField, ContactPatch};

/// Why one field of an edit is refused. `code` is stable and machine-readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// The unified field at fault.
    pub field: String,
    /// A machine-readable code (`too_long`, `required_by_crm`, ...).
    pub code: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Parses an update endpoint body into a patch, applying the unified rules:
/// `email` and `first_name` present, non-empty strings, the email well-formed; other writable
/// fields a string or `null`; read-only fields of the unified contact ignored; anything else
/// refused by name. Every problem is reported, not just the first.
pub fn parse_update_body(body: &Value) -> Result<ContactPatch, Vec<FieldViolation>> {
    let Some(object) = body.as_object() else {
        return Err(vec![FieldViolation::new(
            "body",
            "invalid_type",
            "the body must be a JSON object",
        )]);
    };
    let mut patch = ContactPatch::new();
    let mut violations = Vec::new();
    for (name, value) in object {
        let Some(field) = ContactField::from_name(name) else {
            if !READ_ONLY_FIELDS.contains(&name.as_str()) {
                violations.push(FieldViolation::new(
                    name.as_str(),
                    "unknown_field",
                    format!("unknown field `{name}`"),
                ));
            }
            continue;
        };
        match value {
            Value::String(text) => {
                patch.set(field, text.clone());
            }
            Value::Null if !field.is_required() => {
                patch.clear(field);
            }
            Value::Null => violations.push(FieldViolation::new(
                name.as_str(),
                "required",
                format!("`{name}` is required and cannot be null"),
            )),
            _ => violations.push(FieldViolation::new(
                name.as_str(),
                "invalid_type",
                format!("`{name}` must be a string or null"),
            )),
        }
    }
    for field in ContactField::ALL.into_iter().filter(|f| f.is_required()) {
        match patch.change(field) {
            None if !object.contains_key(field.name()) => violations.push(FieldViolation::new(
                field.name(),
                "required",
                format!("`{field}` is required"),
            )),
            Some(Some(value)) if value.trim().is_empty() => violations.push(FieldViolation::new(
                field.name(),
                "empty",
                format!("`{field}` must not be empty"),
            )),
            _ => {}
        }
    }
    if let Some(Some(email)) = patch.change(ContactField::Email)
        && !email.trim().is_empty()
        && !is_valid_email(email)
    {
        violations.push(FieldViolation::new(
            "email",
            "invalid_email",
            format!("`{email}` is not a valid email address"),
        ));
    }
    if violations.is_empty() {
        Ok(patch)
    } else {
        Err(violations)
    }
}

/// A deliberately plain check, close to what CRMs accept: one `@`, a non-empty local part,
/// a dotted domain of letters, digits, `-` and `.`, no whitespace, at most 254 characters.
pub fn is_valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(result: Result<ContactPatch, Vec<FieldViolation>>) -> Vec<(String, String)> {
        result
            .unwrap_err()
            .into_iter()
            .map(|v| (v.field, v.code))
            .collect()
    }

    #[test]
    fn keeps_absent_null_and_value_apart() {
        let patch =
            parse_update_body(&json!({"email": "a@b.co", "first_name": "Ann", "phone": null}))
                .unwrap();
        assert_eq!(patch.change(ContactField::Phone), Some(None));
        assert_eq!(patch.change(ContactField::City), None);
        assert_eq!(patch.len(), 3);
    }

    #[test]
    fn requires_email_and_first_name() {
        assert_eq!(
            codes(parse_update_body(&json!({"first_name": "Ann"}))),
            vec![("email".to_string(), "required".to_string())]
        );
        assert_eq!(
            codes(parse_update_body(
                &json!({"email": "a@b.co", "first_name": " "})
            )),
            vec![("first_name".to_string(), "empty".to_string())]
        );
        assert_eq!(
            codes(parse_update_body(
                &json!({"email": null, "first_name": "A"})
            )),
            vec![("email".to_string(), "required".to_string())]
        );
    }

    #[test]
    fn names_unknown_fields_and_ignores_read_only_ones() {
        let body = json!({"email": "a@b.co", "first_name": "A", "firstname": "B",
                          "id": "c1", "local_was_updated": true, "external_system_data": {}});
        assert_eq!(
            codes(parse_update_body(&body)),
            vec![("firstname".to_string(), "unknown_field".to_string())]
        );
    }

    #[test]
    fn refuses_bad_email_and_wrong_types() {
        let body = json!({"email": "not-an-email", "first_name": "A", "zip": 90001});
        let mut found = codes(parse_update_body(&body));
        found.sort();
        assert_eq!(
            found,
            vec![
                ("email".to_string(), "invalid_email".to_string()),
                ("zip".to_string(), "invalid_type".to_string())
            ]
        );
    }

    #[test]
    fn email_check() {
        for ok in ["a@b.co", "john.doe+x@mail.example.org", "x_y@sub-domain.io"] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a b@c.co", "a@b..co", "a@-b.co", "a@@b.co",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }
}

/// The update body parser's property, one check shared by the proptests below and the
/// `update_body` fuzz target (the repository's `fuzz/` folder): whatever bytes a client sends,
/// reading them answers without panicking, and they are refused as malformed JSON (the API's
/// 400), refused with violations that each name a real fault (422), or accepted as a patch of
/// exactly the writable fields sent, its required fields filled and its email well-formed.
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties {
    use serde_json::{Map, Value};

    use super::*;

    /// Reads `bytes` as the update endpoint does, JSON first (a failure is its 400
    /// `malformed_json`, a typed `serde_json::Error`), then the unified rules; panics if the
    /// property does not hold.
    pub fn check_update_body_bytes(bytes: &[u8]) {
        if let Ok(body) = serde_json::from_slice::<Value>(bytes) {
            check_update_body(&body);
        }
    }

    /// Runs [`parse_update_body`] on `body`; panics if the property does not hold.
    pub fn check_update_body(body: &Value) {
        match (parse_update_body(body), body.as_object()) {
            (Ok(patch), Some(object)) => check_accepted(&patch, object),
            (Ok(_), None) => panic!("a patch from a body that is not an object: {body}"),
            (Err(violations), object) => {
                assert!(!violations.is_empty(), "refused without a reason: {body}");
                for violation in &violations {
                    assert!(!violation.message.is_empty(), "{violation:?}");
                    let real = match object {
                        None => violation.field == "body" && violation.code == "invalid_type",
                        Some(object) => names_a_fault(object, violation),
                    };
                    assert!(real, "{violation:?} names no fault of {body}");
                }
            }
        }
    }

    /// A patch holds each writable field as sent (a string set, `null` cleared), nothing
    /// else; the body had no unknown field, its required fields filled and a valid email.
    fn check_accepted(patch: &ContactPatch, object: &Map<String, Value>) {
        for (name, value) in object {
            let Some(field) = ContactField::from_name(name) else {
                assert!(
                    READ_ONLY_FIELDS.contains(&name.as_str()),
                    "unknown field `{name}` accepted"
                );
                continue;
            };
            let sent = match value {
                Value::String(text) => Some(text.as_str()),
                Value::Null => None,
                other => panic!("`{name}`: {other} accepted"),
            };
            assert_eq!(patch.change(field), Some(sent), "`{name}`");
        }
        let writable = object
            .keys()
            .filter(|name| ContactField::from_name(name).is_some())
            .count();
        assert_eq!(patch.len(), writable, "fields the body did not send");
        for field in ContactField::ALL.into_iter().filter(|f| f.is_required()) {
            assert!(
                matches!(patch.change(field), Some(Some(value)) if !value.trim().is_empty()),
                "`{field}` accepted absent, null or blank"
            );
        }
        if let Some(Some(email)) = patch.change(ContactField::Email) {
            assert!(is_valid_email(email), "`{email}` accepted");
        }
    }

    /// Whether `violation` is true of the body: each code stands for one documented fault.
    fn names_a_fault(object: &Map<String, Value>, violation: &FieldViolation) -> bool {
        let sent = object.get(&violation.field);
        let field = ContactField::from_name(&violation.field);
        match violation.code.as_str() {
            "unknown_field" => {
                sent.is_some()
                    && field.is_none()
                    && !READ_ONLY_FIELDS.contains(&violation.field.as_str())
            }
            "invalid_type" => {
                field.is_some() && sent.is_some_and(|v| !v.is_string() && !v.is_null())
            }
            "required" => {
                field.is_some_and(ContactField::is_required) && sent.is_none_or(Value::is_null)
            }
            "empty" => {
                field.is_some_and(ContactField::is_required)
                    && sent
                        .and_then(Value::as_str)
                        .is_some_and(|text| text.trim().is_empty())
            }
            "invalid_email" => {
                field == Some(ContactField::Email)
                    && sent
                        .and_then(Value::as_str)
                        .is_some_and(|email| !is_valid_email(email))
            }
            _ => false,
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;

        /// Field names clients send, known or not, read-only ones included.
        fn field_name() -> impl Strategy<Value = String> {
            let known: Vec<String> = ContactField::ALL
                .iter()
                .map(|field| field.name().to_string())
                .chain(READ_ONLY_FIELDS.iter().map(|name| name.to_string()))
                .collect();
            prop_oneof![
                3 => proptest::sample::select(known),
                1 => "\\PC{0,12}",
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,40}".prop_map(Value::String),
                "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((field_name(), inner), 0..6)
                        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        /// Bodies close to acceptable: both required fields, emails of every shape, and a
        /// few more fields, so that acceptance is as common as refusal.
        fn nearly_valid_body() -> impl Strategy<Value = Value> {
            let email = prop_oneof![
                "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}",
                "[a-z.@-]{0,12}",
                "\\PC{0,12}",
            ];
            (
                email,
                "\\PC{0,8}",
                prop::collection::vec((field_name(), json_value()), 0..3),
            )
                .prop_map(|(email, first_name, more)| {
                    let mut body = Map::new();
                    body.insert("email".into(), Value::String(email));
                    body.insert("first_name".into(), Value::String(first_name));
                    body.extend(more);
                    Value::Object(body)
                })
        }

        proptest! {
            #[test]
            fn any_body_is_a_patch_of_the_fields_sent_or_violations_that_name_its_faults(
                body in prop_oneof![json_value(), nearly_valid_body()]
            ) {
                check_update_body(&body);
            }

            #[test]
            fn any_bytes_are_malformed_json_or_a_body_the_rules_answer(
                bytes in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..200),
                    json_value().prop_map(|body| body.to_string().into_bytes()),
                ]
            ) {
                check_update_body_bytes(&bytes);
            }
        }
    }
}
