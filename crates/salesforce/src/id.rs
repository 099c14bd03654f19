//! Salesforce record ids. Every record has a 15-character, case-sensitive id; the API also
//! writes it in an 18-character, case-safe form: the 15 characters and a 3-character suffix
//! that spells out which of their letters are capitals. Both forms name one record, so
//! unisync keeps the 18-character form only: two spellings of one record must not become two
//! contacts, and a 15-character id must match the 18-character ids a query answers.

/// The suffix alphabet: one character per 5-bit value.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 18-character form of a Salesforce record id.
///
/// - 15 characters: the id and its case-safe suffix.
/// - 18 characters: kept, its suffix written in capitals. When the first 15 characters are all
///   in one case (the id went through something that changed its case), their case is put
///   back from the suffix, which is what the suffix is for.
/// - Anything else is refused with the reason: a wrong length, a character that is not a
///   letter or digit, a suffix that is no suffix or disagrees with the letters before it.
///
/// Since the result has only letters and digits, it is safe in URLs and SOQL text.
pub fn canonical_id(id: &str) -> Result<String, String> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "`{id}` is not a Salesforce record id: only letters and digits may appear in one"
        ));
    }
    match id.len() {
        15 => Ok(format!("{id}{}", suffix(id))),
        18 => {
            let (body, given) = id.split_at(15);
            let given = given.to_ascii_uppercase();
            let capitals = decode_suffix(&given).ok_or_else(|| {
                format!("`{id}` is not a Salesforce record id: `{given}` is not a case-safe suffix")
            })?;
            if suffix(body) == given {
                return Ok(format!("{body}{given}"));
            }
            let case_lost = !body.chars().any(|c| c.is_ascii_lowercase())
                || !body.chars().any(|c| c.is_ascii_uppercase());
            let restored = case_lost
                .then(|| restore_case(body, capitals))
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "`{id}` is not a Salesforce record id: its suffix does not match the \
                         letters before it"
                    )
                })?;
            Ok(format!("{restored}{given}"))
        }
        other => Err(format!(
            "`{id}` is not a Salesforce record id: it has {other} characters, not 15 or 18"
        )),
    }
}

/// The case-safe suffix of a 15-character id: for each block of 5 characters, the bits of its
/// capital letters (the first character the lowest bit), as one character of the alphabet.
fn suffix(body: &str) -> String {
    body.as_bytes()
        .chunks(5)
        .map(|block| {
            let bits = block
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_ascii_uppercase())
                .fold(0, |bits, (n, _)| bits | (1 << n));
            SUFFIX_ALPHABET[bits] as char
        })
        .collect()
}

/// The capitals a suffix (in capitals) spells out, one bit per character of the 15; `None`
/// for a character outside the alphabet.
fn decode_suffix(suffix: &str) -> Option<u16> {
    suffix
        .bytes()
        .enumerate()
        .try_fold(0u16, |capitals, (block, c)| {
            let bits = SUFFIX_ALPHABET.iter().position(|&a| a == c)? as u16;
            Some(capitals | (bits << (5 * block)))
        })
}

/// `body` with the letters `capitals` marks in capitals and the others in small letters;
/// `None` when it marks a digit, which has no case.
fn restore_case(body: &str, capitals: u16) -> Option<String> {
    body.chars()
        .enumerate()
        .map(|(n, c)| {
            let capital = (capitals >> n) & 1 == 1;
            match (capital, c.is_ascii_alphabetic()) {
                (true, true) => Some(c.to_ascii_uppercase()),
                (true, false) => None,
                (false, _) => Some(c.to_ascii_lowercase()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs as published with Salesforce's description of the algorithm (the `CASESAFEID()`
    /// formula function gives the same).
    const KNOWN_PAIRS: &[(&str, &str)] = &[
        ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
        ("70130000001tcyI", "70130000001tcyIAAQ"),
        ("001550V000WOQZi", "001550V000WOQZiACP"),
        ("a0RE000000IJmcN", "a0RE000000IJmcNMAT"),
        ("a01M00000062mPg", "a01M00000062mPgIAI"),
        ("001M000000qfPyS", "001M000000qfPySIAU"),
        ("a0FE000000D6r3F", "a0FE000000D6r3FMAR"),
        ("0F9E000000092w2", "0F9E000000092w2KAA"),
        ("aaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaAAA"),
    ];

    #[test]
    fn fifteen_characters_gain_their_case_safe_suffix() {
        for (short, long) in KNOWN_PAIRS {
            assert_eq!(canonical_id(short).as_deref(), Ok(*long), "{short}");
        }
        assert_eq!(
            canonical_id("AAAAAAAAAAAAAAA").as_deref(),
            Ok("AAAAAAAAAAAAAAA555")
        );
    }

    #[test]
    fn eighteen_characters_are_kept_and_their_case_restored_when_lost() {
        for (_, long) in KNOWN_PAIRS {
            assert_eq!(canonical_id(long).as_deref(), Ok(*long));
            assert_eq!(
                canonical_id(&long.to_ascii_lowercase()).as_deref(),
                Ok(*long)
            );
            assert_eq!(
                canonical_id(&long.to_ascii_uppercase()).as_deref(),
                Ok(*long)
            );
        }
        // A suffix written in small letters is the same suffix.
        assert_eq!(
            canonical_id("a0D30000001n7Pieai").as_deref(),
            Ok("a0D30000001n7PiEAI")
        );
    }

    #[test]
    fn what_cannot_be_an_id_is_refused_with_the_reason() {
        for (id, reason) in [
            ("003' OR Id != '", "only letters and digits"),
            ("003A", "4 characters"),
            ("a0D30000001n7Pi99", "17 characters"),
            ("a0D30000001n7Pi999", "`999` is not a case-safe suffix"),
            // Mixed case that the suffix contradicts: a typo, not a lost case.
            ("a0D30000001n7PiAAA", "does not match"),
            // The suffix marks a digit as a capital.
            ("000000000000000BAA", "does not match"),
            ("", "0 characters"),
        ] {
            let error = canonical_id(id).unwrap_err();
            assert!(error.contains(reason), "{id}: {error}");
        }
    }
}
