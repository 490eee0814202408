//! Scopes as docker's token spec writes them: `type[(class)]:name:actions`,
//! e.g. `repository:library/alpine:pull,push`, `repository(plugin):x:pull`,
//! `registry:catalog:*`. A name may hold ':' (`localhost:5000/app`), so the
//! type ends at the first colon and the actions start after the last one.

/// Bound on scopes per request: a token carries one entry per scope.
pub const MAX_SCOPES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    /// The `(class)` of `repository(plugin)`; carried into the token's entry.
    pub class: Option<String>,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// `type:name:actions` with `actions` as given (granted ones, say).
    pub fn render(&self, actions: &[String]) -> String {
        let kind = match &self.class {
            Some(c) => format!("{}({c})", self.kind),
            None => self.kind.clone(),
        };
        format!("{kind}:{}:{}", self.name, actions.join(","))
    }
}

fn word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One scope.
pub fn parse(s: &str) -> Result<Scope, String> {
    let bad = |why: &str| format!("invalid scope {s:?}: {why}");
    let (kind, rest) = s
        .split_once(':')
        .ok_or_else(|| bad("expected type:name:actions"))?;
    let (name, actions) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected type:name:actions"))?;
    let (kind, class) = match kind.split_once('(') {
        Some((k, c)) => {
            let c = c
                .strip_suffix(')')
                .ok_or_else(|| bad("unclosed '(' in type"))?;
            (k, Some(c))
        }
        None => (kind, None),
    };
    if !word(kind) || class.is_some_and(|c| !word(c)) {
        return Err(bad("bad resource type"));
    }
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("bad resource name"));
    }
    let mut list: Vec<String> = Vec::new();
    for a in actions.split(',') {
        if a != "*" && !word(a) {
            return Err(bad("bad action"));
        }
        if !list.iter().any(|x| x == a) {
            list.push(a.to_string());
        }
    }
    Ok(Scope {
        kind: kind.to_string(),
        class: class.map(str::to_string),
        name: name.to_string(),
        actions: list,
    })
}

/// Every `scope` value of a request (each may hold several, space-separated,
/// as OAuth2 writes them). The same resource asked twice is merged.
pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, String> {
    let mut out: Vec<Scope> = Vec::new();
    for s in values.into_iter().flat_map(str::split_whitespace) {
        let scope = parse(s)?;
        match out
            .iter_mut()
            .find(|o| o.kind == scope.kind && o.class == scope.class && o.name == scope.name)
        {
            Some(o) => {
                for a in scope.actions {
                    if !o.actions.contains(&a) {
                        o.actions.push(a);
                    }
                }
            }
            None => out.push(scope),
        }
        if out.len() > MAX_SCOPES {
            return Err(format!("more than {MAX_SCOPES} scopes in one request"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_the_spec_forms() {
        let p = parse("repository:library/alpine:pull,push").unwrap();
        assert_eq!(
            (p.kind.as_str(), p.name.as_str()),
            ("repository", "library/alpine")
        );
        assert_eq!(p.actions, s(&["pull", "push"]));
        assert_eq!(p.class, None);

        let p = parse("repository(plugin):vieux/sshfs:pull").unwrap();
        assert_eq!(
            (p.kind.as_str(), p.class.as_deref()),
            ("repository", Some("plugin"))
        );
        assert_eq!(p.render(&p.actions), "repository(plugin):vieux/sshfs:pull");

        let p = parse("repository:localhost:5000/app:push").unwrap();
        assert_eq!(p.name, "localhost:5000/app", "split on the last colon");
        assert_eq!(p.actions, s(&["push"]));

        let p = parse("registry:catalog:*").unwrap();
        assert_eq!((p.kind.as_str(), p.name.as_str()), ("registry", "catalog"));
        assert_eq!(p.actions, s(&["*"]));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "repository",
            "repository:name",
            "repository::pull",
            "repository:x:",
            "repository:x:pull,",
            "Repo:x:pull",
            "repository(plugin:x:pull",
            "repository:x:PULL",
            "repository:a b:pull",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn merges_and_splits() {
        let all = parse_all([
            "repository:a:pull",
            "repository:b:pull repository:a:push,pull",
        ])
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].actions, s(&["pull", "push"]));
        assert_eq!(all[1].name, "b");
        assert!(parse_all(std::iter::empty()).unwrap().is_empty());
        let many: Vec<String> = (0..=MAX_SCOPES)
            .map(|i| format!("repository:r{i}:pull"))
            .collect();
        assert!(parse_all(many.iter().map(String::as_str)).is_err());
    }
}

/// Property tests: any `scope` text a client sends parses or is refused
/// with a message, never a panic; what parses is well-formed and renders
/// back to itself; well-formed scopes always parse.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn is_word(s: &str) -> bool {
        word(s)
    }

    /// A scope as docker writes them, and its parts.
    fn valid() -> impl Strategy<Value = (String, Option<String>, String, Vec<String>)> {
        (
            "[a-z0-9_-]{1,12}",
            prop::option::of("[a-z0-9_-]{1,8}"),
            // Names may hold ':' (host:port) and any visible character.
            "[a-z0-9]([a-z0-9._/:-]{0,40}[a-z0-9])?",
            prop::collection::vec(prop_oneof!["[a-z]{1,8}", Just("*".to_string())], 1..4),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_text_never_panics_and_what_parses_is_well_formed(s in "\\PC{0,80}|[a-z():,*/ ]{0,40}") {
            match parse(&s) {
                Ok(p) => {
                    prop_assert!(is_word(&p.kind));
                    prop_assert!(p.class.as_deref().is_none_or(is_word));
                    prop_assert!(!p.name.is_empty() && p.name.len() <= 255);
                    prop_assert!(!p.name.chars().any(|c| c.is_whitespace() || c.is_control()));
                    prop_assert!(!p.actions.is_empty());
                    prop_assert!(p.actions.iter().all(|a| a == "*" || is_word(a)));
                    let mut dedup = p.actions.clone();
                    dedup.dedup();
                    prop_assert_eq!(dedup.len(), p.actions.len());
                    prop_assert_eq!(parse(&p.render(&p.actions)), Ok(p));
                }
                Err(e) => prop_assert!(e.starts_with("invalid scope"), "{e}"),
            }
        }

        #[test]
        fn well_formed_scopes_parse_to_their_parts((kind, class, name, actions) in valid()) {
            let head = match &class {
                Some(c) => format!("{kind}({c})"),
                None => kind.clone(),
            };
            let text = format!("{head}:{name}:{}", actions.join(","));
            let p = parse(&text).unwrap();
            prop_assert_eq!(&p.kind, &kind);
            prop_assert_eq!(&p.class, &class);
            prop_assert_eq!(&p.name, &name);
            let mut unique: Vec<String> = Vec::new();
            for a in actions {
                if !unique.contains(&a) {
                    unique.push(a);
                }
            }
            prop_assert_eq!(&p.actions, &unique);
            prop_assert_eq!(p.render(&p.actions), format!("{head}:{name}:{}", unique.join(",")));
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn lists_never_panic_and_stay_bounded(values in prop::collection::vec("\\PC{0,60}", 0..8)) {
            match parse_all(values.iter().map(String::as_str)) {
                Ok(all) => {
                    prop_assert!(all.len() <= MAX_SCOPES);
                    // One entry per resource.
                    for (i, a) in all.iter().enumerate() {
                        prop_assert!(!all[i + 1..].iter().any(|b| b.kind == a.kind && b.class == a.class && b.name == a.name));
                    }
                }
                Err(e) => prop_assert!(e.starts_with("invalid scope") || e.starts_with("more than"), "{e}"),
            }
        }
    }
}
