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

use super::matchers::{Pattern, Vars};
pub use crate::auth::client::IpNet;
use crate::config::token_server::{AclMatch, AclRule};

/// The actions a rule may grant.
pub const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

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
}
