//! Record ids as Salesforce writes and reads them. An id is 15 case-sensitive letters and
//! digits; the API writes it with a 3-character suffix that spells out where its capital
//! letters are (the 18-character, case-safe form), and accepts either form. The fake org keys
//! its records by the 18-character form and always answers with it.

/// The suffix characters, one per 5-bit value.
const SUFFIX_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 18-character form of a 15-character id: each block of 5 characters adds one suffix
/// character, the value whose bit `n` says that the block's character `n` is a capital.
pub fn case_safe(id15: &str) -> String {
    let mut id = id15.to_string();
    for block in id15.as_bytes().chunks(5) {
        let value = block.iter().rev().fold(0, |value, c| {
            value * 2 + usize::from(c.is_ascii_uppercase())
        });
        id.push(SUFFIX_CHARS.as_bytes()[value] as char);
    }
    id
}

/// The record `id` names, in its 18-character form: a 15-character id as it is (its case
/// matters), an 18-character id in any case (its suffix says which letters are capitals).
/// `None` when `id` cannot be an id.
pub fn resolve(id: &str) -> Option<String> {
    if !id.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(case_safe(id)),
        18 => {
            let (body, suffix) = id.split_at(15);
            let mut capitals = Vec::with_capacity(15);
            for c in suffix.to_ascii_uppercase().chars() {
                let value = SUFFIX_CHARS.find(c)?;
                capitals.extend((0..5).map(|n| value >> n & 1 == 1));
            }
            let body: String = body
                .chars()
                .zip(capitals)
                .map(|(c, capital)| match capital {
                    true if c.is_ascii_digit() => None,
                    true => Some(c.to_ascii_uppercase()),
                    false => Some(c.to_ascii_lowercase()),
                })
                .collect::<Option<_>>()?;
            Some(case_safe(&body))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_either_form_name_one_record() {
        // Published with Salesforce's description of the suffix.
        for (short, long) in [
            ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
            ("70130000001tcyI", "70130000001tcyIAAQ"),
            ("001550V000WOQZi", "001550V000WOQZiACP"),
        ] {
            assert_eq!(case_safe(short), long);
            assert_eq!(resolve(short).as_deref(), Some(long));
            assert_eq!(resolve(long).as_deref(), Some(long));
            assert_eq!(resolve(&long.to_lowercase()).as_deref(), Some(long));
        }
        // A 15-character id is case-sensitive: another case is another record.
        assert_ne!(resolve("A0D30000001N7PI"), resolve("a0D30000001n7Pi"));
        for not_an_id in [
            "003",
            "a0D30000001n7Pi'",
            "a0D30000001n7Pi999",
            "000000000000000BAA",
        ] {
            assert_eq!(resolve(not_an_id), None, "{not_an_id}");
        }
    }
}
