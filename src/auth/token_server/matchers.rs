//! The patterns ACL rules are made of: globs or `/regex/`, with
//! `${account}` and `${labels:NAME}` placeholders (their IP networks are
//! [`crate::auth::client::IpNet`]).
//!
//! Globs: `*` is any run within a path segment, `**` any run across `/`, `?`
//! one character but `/`, `\` escapes. A regex must match the whole value.
//! Placeholder values are literal text (escaped in a regex, literal tokens in
//! a glob): an account named `*` cannot widen `${account}/*`.

use std::collections::BTreeMap;

use regex::Regex;

/// Bound on the patterns one multi-valued `${labels:…}` expands to.
const MAX_EXPANSIONS: usize = 64;

/// Values for placeholders.
pub(super) struct Vars<'a> {
    pub account: &'a str,
    pub labels: &'a BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Account,
    Label(String),
}

pub(super) struct Pattern {
    regex: bool,
    parts: Vec<Part>,
    /// Compiled once when the pattern has no placeholders.
    fixed: Option<Compiled>,
}

enum Compiled {
    Glob(Vec<Tok>),
    Regex(Regex),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character, not `/`.
    One,
    /// `*`: any run within a path segment.
    Star,
    /// `**`: any run, `/` included.
    Deep,
}

impl Pattern {
    pub fn compile(raw: &str) -> Result<Pattern, String> {
        let (regex, body) = match raw.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(inner) if raw.len() > 2 => (true, inner),
            _ => (false, raw),
        };
        let parts = split_placeholders(body)?;
        let has_vars = parts.iter().any(|p| !matches!(p, Part::Text(_)));
        // Compile with stand-in values so a broken regex fails at start, not
        // at the first request that reaches it.
        let probe = Self::build(regex, &parts, &|_| "x".to_string())?;
        Ok(Pattern {
            regex,
            parts,
            fixed: (!has_vars).then_some(probe),
        })
    }

    fn build(
        regex: bool,
        parts: &[Part],
        value: &dyn Fn(&Part) -> String,
    ) -> Result<Compiled, String> {
        if regex {
            let mut src = String::from("^(?:");
            for p in parts {
                match p {
                    Part::Text(t) => src.push_str(t),
                    v => src.push_str(&regex::escape(&value(v))),
                }
            }
            src.push_str(")$");
            return Regex::new(&src)
                .map(Compiled::Regex)
                // regex's message spans lines (pattern, caret, reason):
                // config errors are one line.
                .map_err(|e| {
                    let e = e.to_string();
                    let words: Vec<&str> = e.split_whitespace().collect();
                    format!("bad regex: {}", words.join(" "))
                });
        }
        let mut toks = Vec::new();
        for p in parts {
            match p {
                Part::Text(t) => glob_tokens(t, &mut toks)?,
                v => toks.extend(value(v).chars().map(Tok::Lit)),
            }
        }
        Ok(Compiled::Glob(toks))
    }

    pub fn matches(&self, value: &str, vars: &Vars) -> bool {
        if let Some(c) = &self.fixed {
            return c.matches(value);
        }
        // One pattern per combination of placeholder values.
        let mut combos: Vec<Vec<(Part, String)>> = vec![vec![]];
        for p in &self.parts {
            let values: Vec<String> = match p {
                Part::Text(_) => continue,
                Part::Account => vec![vars.account.to_string()],
                Part::Label(l) => vars.labels.get(l).cloned().unwrap_or_default(),
            };
            // A missing label fails the match (as docker_auth does).
            if values.is_empty() {
                return false;
            }
            if combos.iter().any(|c| c.iter().any(|(q, _)| q == p)) {
                continue; // the same placeholder twice takes the same value
            }
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((p.clone(), v.clone()));
                        c
                    })
                })
                .take(MAX_EXPANSIONS)
                .collect();
        }
        combos.iter().any(|combo| {
            let value_of = |p: &Part| {
                combo
                    .iter()
                    .find(|(q, _)| q == p)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            Self::build(self.regex, &self.parts, &value_of).is_ok_and(|c| c.matches(value))
        })
    }
}

impl Compiled {
    fn matches(&self, s: &str) -> bool {
        match self {
            Compiled::Regex(r) => r.is_match(s),
            Compiled::Glob(t) => glob_match(t, s),
        }
    }
}

/// `a${account}b${labels:team}` → parts; unknown placeholders are errors.
fn split_placeholders(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if at > 0 {
            parts.push(Part::Text(rest[..at].to_string()));
        }
        let end = rest[at..]
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {s:?}"))?;
        let var = &rest[at + 2..at + end];
        parts.push(match var {
            "account" => Part::Account,
            v => match v.strip_prefix("labels:") {
                Some(l) if !l.is_empty() => Part::Label(l.to_string()),
                _ => {
                    return Err(format!(
                        "unknown placeholder ${{{v}}} (use ${{account}} or ${{labels:NAME}})"
                    ))
                }
            },
        });
        rest = &rest[at + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

fn glob_tokens(t: &str, out: &mut Vec<Tok>) -> Result<(), String> {
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => Tok::Lit(chars.next().ok_or("trailing '\\' in glob")?),
            '?' => Tok::One,
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Tok::Deep
            }
            '*' => Tok::Star,
            c => Tok::Lit(c),
        });
    }
    Ok(())
}

/// Dynamic programming over (token, position): linear in pattern × value,
/// so no pattern can make matching blow up.
fn glob_match(toks: &[Tok], s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let mut dp = vec![false; n + 1];
    dp[0] = true;
    for t in toks {
        let mut next = vec![false; n + 1];
        for j in 0..=n {
            next[j] = match t {
                Tok::Lit(c) => j > 0 && dp[j - 1] && chars[j - 1] == *c,
                Tok::One => j > 0 && dp[j - 1] && chars[j - 1] != '/',
                Tok::Star => dp[j] || (j > 0 && next[j - 1] && chars[j - 1] != '/'),
                Tok::Deep => dp[j] || (j > 0 && next[j - 1]),
            };
        }
        dp = next;
    }
    dp[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let c = |p: &str, s: &str| {
            let mut t = Vec::new();
            glob_tokens(p, &mut t).unwrap();
            glob_match(&t, s)
        };
        assert!(c("*", "abc"));
        assert!(c("*", ""));
        assert!(!c("*", "a/b"), "* stays within a segment");
        assert!(c("**", "a/b/c"));
        assert!(c("a/*", "a/b"));
        assert!(!c("a/*", "a/b/c"));
        assert!(c("a/**", "a/b/c"));
        assert!(c("a?c", "abc"));
        assert!(!c("a?c", "a/c"));
        assert!(!c("abc", "abcd"));
        assert!(c("a\\*", "a*"));
        assert!(!c("a\\*", "ab"));
        assert!(c("*-dev/**", "team-dev/x/y"));
        // Pathological pattern stays linear.
        assert!(!c(&"*a".repeat(50), &"a".repeat(40)));
    }
}
