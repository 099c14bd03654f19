//! Salesforce's own check of Email fields, from its help articles "How does Salesforce qualify
//! an email address?" (000001145) and "Salesforce Email Address Format Technical Standards
//! Validation" (000384328). It is neither RFC 5322 nor any other validator's idea of an
//! address:
//! - the local part (before the `@`) takes letters, digits, dots and
//!   ``! # $ % & ' * / = ? ^ _ + - ` { | } ~``; a dot may not come first, but two dots in a
//!   row and a dot at the end are accepted (asked for by Japanese customers), which RFC 5322
//!   refuses;
//! - the domain takes letters, digits and hyphens in dot-separated labels: no international
//!   characters (they need Email Address Internationalization, which this org has not set up)
//!   and no IP literal (`[192.0.2.1]`), both of which RFC 5322 allows;
//! - comments in parentheses, in either part, are allowed and ignored;
//! - the address is stored in lower case.
//!
//! Where the articles are silent (a domain without a dot, a label starting with a hyphen), the
//! fake refuses the first and accepts the second, as the documented characters allow.

/// The characters besides letters, digits and dots a local part may hold.
const LOCAL_SPECIALS: &str = "!#$%&'*/=?^_+-`{|}~";

/// The address as Salesforce stores it, or `None` when Salesforce refuses it with
/// `INVALID_EMAIL_ADDRESS`.
pub fn stored_email(address: &str) -> Option<String> {
    let bare = without_comments(address)?;
    let (local, domain) = bare.split_once('@')?;
    let local_ok = !local.is_empty()
        && !local.starts_with('.')
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || LOCAL_SPECIALS.contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    (local_ok && domain_ok).then(|| address.to_lowercase())
}

/// `address` with its parenthesised comments taken out; `None` when a parenthesis is left open
/// or closes nothing, or a comment holds another.
fn without_comments(address: &str) -> Option<String> {
    let mut bare = String::with_capacity(address.len());
    let mut in_comment = false;
    for c in address.chars() {
        match (c, in_comment) {
            ('(', false) => in_comment = true,
            (')', true) => in_comment = false,
            ('(' | ')', _) => return None,
            (_, true) => {}
            (_, false) => bare.push(c),
        }
    }
    (!in_comment).then_some(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_salesforce_accepts_even_where_rfc_5322_does_not() {
        for address in [
            "ann@example.com",
            "a..a@test.jp",
            "a..@test.jp",
            "o'brien+news@mail.example.co.uk",
            "x!#$%&'*/=?^_`{|}~-@example.com",
            "john.doe@(comment)example.com",
            "john.doe(comment)@example.com",
            "ann@-example.com",
        ] {
            assert_eq!(
                stored_email(address).as_deref(),
                Some(address.to_lowercase().as_str()),
                "{address}"
            );
        }
    }

    #[test]
    fn refuses_what_salesforce_refuses_even_where_other_validators_do_not() {
        for address in [
            ".ann@example.com",
            "ann@bücher.de",
            "jörg@example.com",
            "ann@[192.0.2.1]",
            "\"ann smith\"@example.com",
            "ann@localhost",
            "ann@example..com",
            "ann@example.com.",
            "ann@@example.com",
            "ann@exa@mple.com",
            "ann,bob@example.com",
            "ann@example.com(open",
            "ann)@example.com",
            "@example.com",
            "nope",
        ] {
            assert_eq!(stored_email(address), None, "{address}");
        }
    }

    #[test]
    fn stores_addresses_in_lower_case() {
        assert_eq!(
            stored_email("Ann.Lee@Example.COM").as_deref(),
            Some("ann.lee@example.com")
        );
    }
}
