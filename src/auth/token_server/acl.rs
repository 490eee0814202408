//! Access rules in docker_auth's shape: `match` (account, name, type, ip,
//! labels) → `actions`. The first rule whose every key matches decides; an
//! empty `actions` list is an explicit deny; no matching rule denies.
//!
//! Patterns are globs or `/regex/`. Two deliberate differences from
//! docker_auth, both towards refusing: a regex must match the whole value
//! (docker_auth's unanchored `/admin/` also matches `notadmin`), and values
//! substituted for `${account}` / `${labels:NAME}` are literal text, so an
//! account named `*` cannot widen `${account}/*`.

use std::{collections::BTreeMap, net::IpAddr};

use regex::Regex;

use crate::config::token_server::{AclMatch, AclRule};

/// The actions a rule may grant.
pub const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];
/// Bound on the patterns one multi-valued `${labels:…}` expands to.
const MAX_EXPANSIONS: usize = 64;

/// Who is asking, as the rules see them.
pub struct Subject<'a> {
    /// "" for anonymous.
    pub account: &'a str,
    pub labels: &'a BTreeMap<String, Vec<String>>,
    pub ip: Option<IpAddr>,
}

pub struct Acl {
    rules: Vec<Rule>,
}

/// The rule that decided.
pub struct Decision<'a> {
    pub index: usize,
    pub actions: &'a [String],
    pub comment: Option<&'a str>,
}

struct Rule {
    account: Option<Pattern>,
    name: Option<Pattern>,
    kind: Option<Pattern>,
    ip: Option<IpNet>,
    labels: Vec<(String, Pattern)>,
    actions: Vec<String>,
    comment: Option<String>,
}

impl Acl {
    /// Compile the rules; errors name the key (`token_server.acl[2].match.name`).
    pub fn compile(rules: &[AclRule]) -> Result<Acl, String> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| compile_rule(r, &format!("token_server.acl[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Acl { rules })
    }

    /// The first rule matching `who` asking for `kind`:`name`; None: no rule
    /// matched, which denies.
    pub fn decide(&self, who: &Subject, kind: &str, name: &str) -> Option<Decision<'_>> {
        let vars = Vars {
            account: who.account,
            labels: who.labels,
        };
        let hit = |p: &Option<Pattern>, v: &str| p.as_ref().is_none_or(|p| p.matches(v, &vars));
        self.rules.iter().enumerate().find_map(|(index, r)| {
            let ok = hit(&r.account, who.account)
                && hit(&r.kind, kind)
                && hit(&r.name, name)
                && r.ip
                    .as_ref()
                    .is_none_or(|net| who.ip.is_some_and(|ip| net.contains(ip)))
                && r.labels.iter().all(|(label, p)| {
                    who.labels
                        .get(label)
                        .is_some_and(|values| values.iter().any(|v| p.matches(v, &vars)))
                });
            ok.then(|| Decision {
                index,
                actions: &r.actions,
                comment: r.comment.as_deref(),
            })
        })
    }
}

/// The requested actions that `allowed` covers, in request order.
pub fn grant(requested: &[String], allowed: &[String]) -> Vec<String> {
    let all = allowed.iter().any(|a| a == "*");
    let mut out: Vec<String> = Vec::new();
    for r in requested {
        if (all || allowed.contains(r)) && !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

fn compile_rule(r: &AclRule, key: &str) -> Result<Rule, String> {
    let AclMatch {
        account,
        name,
        kind,
        ip,
        labels,
    } = &r.matches;
    let pattern = |p: &Option<String>, k: &str| {
        p.as_deref()
            .map(|p| Pattern::compile(p).map_err(|e| format!("{key}.match.{k}: {e}")))
            .transpose()
    };
    for a in &r.actions {
        if !ACTIONS.contains(&a.as_str()) {
            return Err(format!(
                "{key}.actions: {a:?} is not one of pull, push, delete, \"*\""
            ));
        }
    }
    Ok(Rule {
        account: pattern(account, "account")?,
        name: pattern(name, "name")?,
        kind: pattern(kind, "type")?,
        ip: ip
            .as_deref()
            .map(|s| IpNet::parse(s).map_err(|e| format!("{key}.match.ip: {e}")))
            .transpose()?,
        labels: labels
            .iter()
            .map(|(l, p)| {
                Pattern::compile(p)
                    .map(|p| (l.clone(), p))
                    .map_err(|e| format!("{key}.match.labels.{l}: {e}"))
            })
            .collect::<Result<_, _>>()?,
        actions: r.actions.clone(),
        comment: r.comment.clone(),
    })
}

/// Values for placeholders.
struct Vars<'a> {
    account: &'a str,
    labels: &'a BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Account,
    Label(String),
}

struct Pattern {
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
    fn compile(raw: &str) -> Result<Pattern, String> {
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

    fn matches(&self, value: &str, vars: &Vars) -> bool {
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

/// An IP network (`10.0.0.0/8`, `::1`, a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let (net, ip) = (self.addr.to_canonical(), ip.to_canonical());
        let (a, b, bits) = match (net, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let prefix = u32::from(self.prefix).min(bits);
        if prefix == 0 {
            return true;
        }
        let shift = bits - prefix;
        (a >> shift) == (b >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::token_server::TokenServerConfig;

    fn acl(yaml: &str) -> Acl {
        let cfg: TokenServerConfig = serde_json::from_value(serde_json::json!({
            "acl": serde_yaml_like(yaml)
        }))
        .unwrap();
        Acl::compile(&cfg.acl).unwrap()
    }

    /// The tests write rules as JSON (YAML's flow subset) to stay dependency-free.
    fn serde_yaml_like(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    fn who<'a>(account: &'a str, labels: &'a BTreeMap<String, Vec<String>>) -> Subject<'a> {
        Subject {
            account,
            labels,
            ip: Some("10.1.2.3".parse().unwrap()),
        }
    }

    fn allowed(a: &Acl, s: &Subject, name: &str) -> Option<Vec<String>> {
        a.decide(s, "repository", name).map(|d| d.actions.to_vec())
    }

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

    #[test]
    fn first_match_wins_and_no_match_denies() {
        let a = acl(r#"[
              {"match": {"account": "ci"}, "actions": ["pull", "push"]},
              {"match": {"account": "banned"}, "actions": []},
              {"match": {"account": "/.+/"}, "actions": ["pull"]}
            ]"#);
        let l = BTreeMap::new();
        assert_eq!(
            allowed(&a, &who("ci", &l), "x"),
            Some(vec!["pull".into(), "push".into()])
        );
        assert_eq!(allowed(&a, &who("bob", &l), "x"), Some(vec!["pull".into()]));
        assert_eq!(
            allowed(&a, &who("banned", &l), "x"),
            Some(vec![]),
            "explicit deny"
        );
        assert_eq!(
            allowed(&a, &who("", &l), "x"),
            None,
            "regex is anchored: /.+/ needs an account"
        );
    }

    #[test]
    fn regex_is_anchored() {
        let a = acl(r#"[{"match": {"account": "/admin/"}, "actions": ["*"]}]"#);
        let l = BTreeMap::new();
        assert!(allowed(&a, &who("admin", &l), "x").is_some());
        assert!(allowed(&a, &who("notadmin", &l), "x").is_none());
    }

    #[test]
    fn account_placeholder_is_literal() {
        let a = acl(r#"[{"match": {"name": "${account}/**"}, "actions": ["pull", "push"]}]"#);
        let l = BTreeMap::new();
        assert!(allowed(&a, &who("alice", &l), "alice/app").is_some());
        assert!(allowed(&a, &who("alice", &l), "alice/a/b").is_some());
        assert!(allowed(&a, &who("alice", &l), "bob/app").is_none());
        assert!(allowed(&a, &who("alice", &l), "alice").is_none());
        // An account called `*` gets its own namespace, not everyone's.
        assert!(allowed(&a, &who("*", &l), "bob/app").is_none());
        let r = acl(r#"[{"match": {"name": "/${account}/[a-z]+/"}, "actions": ["pull"]}]"#);
        assert!(allowed(&r, &who("a.b", &l), "a.b/x").is_some());
        assert!(
            allowed(&r, &who("a.b", &l), "axb/x").is_none(),
            "`.` is escaped"
        );
    }

    #[test]
    fn labels_match_and_expand() {
        let a = acl(r#"[
              {"match": {"labels": {"group": "admin"}}, "actions": ["*"]},
              {"match": {"name": "${labels:team}/*"}, "actions": ["pull", "push"]},
              {"match": {"labels": {"group": "/dev|ops/"}}, "actions": ["pull"]}
            ]"#);
        let mut l = BTreeMap::new();
        l.insert(
            "group".to_string(),
            vec!["viewer".to_string(), "admin".to_string()],
        );
        assert_eq!(
            allowed(&a, &who("x", &l), "any").unwrap(),
            vec!["*".to_string()]
        );
        let mut l = BTreeMap::new();
        l.insert(
            "team".to_string(),
            vec!["red".to_string(), "blue".to_string()],
        );
        assert!(allowed(&a, &who("x", &l), "blue/app").is_some());
        assert!(allowed(&a, &who("x", &l), "red/app").is_some());
        assert!(allowed(&a, &who("x", &l), "green/app").is_none());
        let mut l = BTreeMap::new();
        l.insert("group".to_string(), vec!["ops".to_string()]);
        assert_eq!(
            allowed(&a, &who("x", &l), "z").unwrap(),
            vec!["pull".to_string()]
        );
        // No labels at all: the label rules and the ${labels:…} rule fail.
        assert!(allowed(&a, &who("x", &BTreeMap::new()), "z").is_none());
    }

    #[test]
    fn type_and_ip() {
        let a = acl(r#"[
              {"match": {"type": "registry", "ip": "10.0.0.0/8"}, "actions": ["*"]},
              {"match": {"type": "repository", "ip": "192.168.1.7"}, "actions": ["pull"]}
            ]"#);
        let l = BTreeMap::new();
        let s = who("a", &l);
        assert!(a.decide(&s, "registry", "catalog").is_some());
        assert!(
            a.decide(&s, "repository", "x").is_none(),
            "ip not in 192.168.1.7"
        );
        let s = Subject {
            ip: None,
            ..who("a", &l)
        };
        assert!(
            a.decide(&s, "registry", "catalog").is_none(),
            "unknown ip never matches"
        );
    }

    #[test]
    fn grant_intersects() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(grant(&s(&["pull", "push"]), &s(&["pull"])), s(&["pull"]));
        assert_eq!(
            grant(&s(&["pull", "push", "pull"]), &s(&["*"])),
            s(&["pull", "push"])
        );
        assert_eq!(grant(&s(&["*"]), &s(&["pull"])), s(&[]));
        assert_eq!(grant(&s(&["*"]), &s(&["*"])), s(&["*"]));
        assert_eq!(grant(&s(&["pull"]), &s(&[])), s(&[]));
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |rules: &str| {
            let cfg: TokenServerConfig =
                serde_json::from_value(serde_json::json!({ "acl": serde_yaml_like(rules) }))
                    .unwrap();
            Acl::compile(&cfg.acl).err().unwrap()
        };
        assert!(err(r#"[{"actions": ["pul"]}]"#).starts_with("token_server.acl[0].actions"));
        assert!(err(r#"[{}, {"match": {"name": "/(/"}}]"#)
            .starts_with("token_server.acl[1].match.name: bad regex"));
        assert!(err(r#"[{"match": {"name": "${user}"}}]"#).contains("unknown placeholder"));
        assert!(err(r#"[{"match": {"ip": "10.0.0.0/33"}}]"#)
            .starts_with("token_server.acl[0].match.ip"));
    }

    #[test]
    fn ip_nets() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(
            n.contains("::ffff:10.0.0.1".parse().unwrap()),
            "v4-mapped v6"
        );
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(!IpNet::parse("::1")
            .unwrap()
            .contains("::2".parse().unwrap()));
        assert!(IpNet::parse("nope").is_err());
    }
}
