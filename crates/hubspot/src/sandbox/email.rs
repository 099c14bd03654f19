//! HubSpot's own rules for the `email` property, as its documentation states them ("How does
//! HubSpot validate email addresses?"): the address must be valid by RFC 2822, its local part
//! may not be quoted, and its domain must end in a top-level domain of IANA's root zone
//! (after unicode TLDs are put in their ASCII form, so `user@email.삼성` is valid). Anything
//! else is refused with `INVALID_EMAIL`.
//!
//! These differ from unisync's own check both ways: HubSpot refuses reserved and made-up
//! TLDs (`ann@corp.example`, `ann@mail.comx`) and dots out of place in the local part
//! (`ann..lee@x.com`), and sets no length limit that RFC 2822 does not (a local part longer
//! than SMTP's 64 characters is taken).

/// The characters RFC 2822 allows in an atom (`atext`) besides letters and digits.
const ATEXT_SYMBOLS: &str = "!#$%&'*+-/=?^_`{|}~";

/// Whether HubSpot takes `email` (already trimmed) as an email address.
pub(super) fn accepts(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    is_dot_atom(local) && is_domain_with_known_tld(domain)
}

/// RFC 2822's dot-atom: atoms of `atext` joined by single dots. A quoted local part, which
/// RFC 2822 also allows, is one HubSpot refuses.
fn is_dot_atom(text: &str) -> bool {
    text.split('.').all(|atom| {
        !atom.is_empty()
            && atom
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ATEXT_SYMBOLS.contains(c))
    })
}

/// A domain of at least two labels whose last label is a top-level domain in IANA's list.
/// Labels are letters (of any script), digits and inner hyphens.
fn is_domain_with_known_tld(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let well_formed = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    let Some(top) = labels.last().filter(|_| well_formed) else {
        return false;
    };
    idna::domain_to_ascii(top).is_ok_and(|ascii| tld::exist_case_insensitive(&ascii))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_hubspot_takes() {
        for email in [
            "ann@example.com",
            "ann.lee+crm@mail.example.co.uk",
            "o'brien@example.ie",
            "xyz@test.design",
            "ann/sales=1?{x}|y~@example.com",
            "user@email.삼성",
            "ann@EXAMPLE.COM",
        ] {
            assert!(accepts(email), "{email}");
        }
        let long_local_part = format!("{}@example.com", "a".repeat(70));
        assert!(accepts(&long_local_part));
    }

    #[test]
    fn what_hubspot_refuses() {
        for email in [
            "not-an-email",
            "ann@",
            "@example.com",
            "ann@localhost",
            "ann@corp.example",
            "ann@mail.test",
            "tb.tb@yahoo.comtttt",
            "\"ann lee\"@example.com",
            "ann..lee@example.com",
            ".ann@example.com",
            "ann.@example.com",
            "ann@-example.com",
            "ann@example..com",
            "ann@[192.0.2.1]",
            "ann@bob@example.com",
            "ann lee@example.com",
        ] {
            assert!(!accepts(email), "{email}");
        }
    }
}
