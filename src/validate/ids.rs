//! Account and contract ids: the policy's pattern, with the built-in one
//! matched by a byte loop, since every row checks two ids (the regex for
//! it too: 1.18× the CPU of `validate` at 10 M rows, benches/RESULTS.md).

/// The built-in pattern of account and contract ids (policy `[identifiers]`).
const DEFAULT_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._/-]{1,63}$";

/// An id pattern: the built-in one matched by hand (a byte loop instead of
/// a regex search per field), any other with its regex.
#[derive(Clone)]
pub(crate) enum IdPattern {
    Default,
    Regex(regex::Regex),
}

impl IdPattern {
    pub(crate) fn new(re: &regex::Regex) -> IdPattern {
        if re.as_str() == DEFAULT_ID_PATTERN {
            IdPattern::Default
        } else {
            IdPattern::Regex(re.clone())
        }
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        match self {
            IdPattern::Default => default_id_match(s),
            IdPattern::Regex(re) => re.is_match(s),
        }
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._/-]{1,63}$`: the class is ASCII, so a byte is
/// a character and the length bound is in bytes.
fn default_id_match(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|&c| ID_BYTES[usize::from(c)])
}

/// The bytes of `[A-Za-z0-9._/-]`, as a table: one load per byte instead of
/// a chain of range tests (every row checks two ids).
static ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-');
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn the_built_in_id_patterns_take_the_hand_written_matcher() {
        let p = Policy::load(None).unwrap();
        assert!(matches!(
            IdPattern::new(&p.account_pattern),
            IdPattern::Default
        ));
        assert!(matches!(
            IdPattern::new(&p.contract_pattern),
            IdPattern::Default
        ));
        let other = regex::Regex::new("^A-[0-9]+$").unwrap();
        assert!(matches!(IdPattern::new(&other), IdPattern::Regex(_)));
    }

    proptest::proptest! {
        /// The hand-written matcher of the built-in id pattern agrees with
        /// the regex on any text, Unicode included.
        #[test]
        fn default_id_matcher_equals_the_regex(s in "[A-Za-z0-9._/\\-é ]{0,70}|\\PC{0,70}") {
            let re = regex::Regex::new(DEFAULT_ID_PATTERN).unwrap();
            proptest::prop_assert_eq!(default_id_match(&s), re.is_match(&s));
        }
    }
}
