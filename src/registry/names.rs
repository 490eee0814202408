//! Repository names and tags, per the OCI distribution spec's grammar. Anything
//! that fails here never reaches storage (it would otherwise become a path).

use super::error::{Code, Error, Result};

/// distribution's limit on a full repository name.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = || {
        Error::new(
            Code::NameInvalid,
            format!("invalid repository name {:?}", truncate(name)),
        )
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid());
    }
    if name.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        // A separator run stands between two alphanumerics: `a_-b` is not
        // one run but two, which the grammar does not allow.
        if !ok || i == b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/ubuntu", "a-b/c__d/e.f", "x--y", "a0/b1/c2/d3"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/../b",
            "..",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "0_-0",
            "a.-b",
            "a-_b",
            "-a",
            "a.",
            &"a".repeat(256),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(is_valid_tag("latest"));
        assert!(is_valid_tag("_v1.0-rc"));
        assert!(!is_valid_tag(".hidden"));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(!is_valid_tag("a/b"));
    }

    mod properties {
        use std::sync::LazyLock;

        use super::super::*;
        use proptest::prelude::*;

        /// The spec's grammar, as a regular expression: the reference the
        /// hand-written matcher must agree with.
        static NAME: LazyLock<regex::Regex> = LazyLock::new(|| {
            regex::Regex::new(
                r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$",
            )
            .unwrap()
        });
        static TAG: LazyLock<regex::Regex> =
            LazyLock::new(|| regex::Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap());

        /// Mostly the characters names are made of, so that many are valid.
        fn nameish() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9._/-]{0,40}",
                "[a-z0-9]{1,8}(([._]|__|-{1,3})[a-z0-9]{1,8}){0,3}(/[a-z0-9]{1,8}(([._]|__|-{1,3})[a-z0-9]{1,8}){0,3}){0,4}",
                "[a-zA-Z0-9._/ %:-]{0,300}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn names_follow_the_grammar(name in nameish()) {
                let want = NAME.is_match(&name) && name.len() <= MAX_NAME_LEN;
                match validate_name(&name) {
                    Ok(()) => prop_assert!(want, "accepted {name:?}"),
                    Err(e) => {
                        prop_assert!(!want, "refused {name:?}");
                        prop_assert_eq!(e.code, Code::NameInvalid);
                    }
                }
            }

            #[test]
            fn tags_follow_the_grammar(tag in prop_oneof!["[a-zA-Z0-9._-]{0,130}", "[a-zA-Z0-9_/:@ .-]{0,20}", any::<String>()]) {
                prop_assert_eq!(is_valid_tag(&tag), TAG.is_match(&tag), "{:?}", tag);
            }
        }
    }
}
