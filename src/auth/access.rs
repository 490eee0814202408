//! What a request needs: the scopes of docker's token spec
//! (`repository:<name>:pull,push`, `registry:catalog:*`). The HTTP layer
//! derives them from its routes (`api::route`); auth only checks them.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// "repository" or "registry"
    pub kind: String,
    pub name: String,
    pub action: String,
}

impl Access {
    /// `repository:<name>:<action>`
    pub fn repo(name: &str, action: &str) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            action: action.into(),
        }
    }

    /// `registry:catalog:*`
    pub fn catalog() -> Access {
        Access {
            kind: "registry".into(),
            name: "catalog".into(),
            action: "*".into(),
        }
    }
}

/// `repository:a:pull,push repository:b:pull` — one scope per resource.
pub fn scope_string(access: &[Access]) -> String {
    let mut scopes: Vec<(String, String, Vec<String>)> = Vec::new();
    for a in access {
        match scopes
            .iter_mut()
            .find(|(k, n, _)| *k == a.kind && *n == a.name)
        {
            Some((_, _, actions)) => actions.push(a.action.clone()),
            None => scopes.push((a.kind.clone(), a.name.clone(), vec![a.action.clone()])),
        }
    }
    scopes
        .into_iter()
        .map(|(k, n, a)| format!("{k}:{n}:{}", a.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scope_per_resource() {
        let need = [
            Access::repo("a/b", "pull"),
            Access::repo("a/b", "push"),
            Access::repo("c", "pull"),
            Access::catalog(),
        ];
        assert_eq!(
            scope_string(&need),
            "repository:a/b:pull,push repository:c:pull registry:catalog:*"
        );
    }
}

/// Property test: the scope of a challenge is what the token server reads
/// back — the same resources with the same actions.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::auth::token_server::scope;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn challenge_scopes_read_back(
            need in prop::collection::vec(
                (
                    prop_oneof![Just("repository"), Just("registry")],
                    // Repository names as routes accept them (and host:port ones).
                    "[a-z0-9]{1,10}([._-][a-z0-9]{1,10}){0,2}(/[a-z0-9]{1,10}([._-][a-z0-9]{1,10}){0,2}){0,3}(:[0-9]{1,5}/[a-z]{1,5})?",
                    prop_oneof![Just("pull"), Just("push"), Just("delete"), Just("*")],
                ),
                1..6,
            ),
        ) {
            let need: Vec<Access> = need
                .into_iter()
                .map(|(k, n, a)| Access { kind: k.into(), name: n, action: a.into() })
                .collect();
            let text = scope_string(&need);
            let parsed = scope::parse_all([text.as_str()]).unwrap();
            for a in &need {
                let s = parsed.iter().find(|s| s.kind == a.kind && s.name == a.name).unwrap();
                prop_assert!(s.actions.contains(&a.action), "{text}");
            }
            prop_assert!(parsed.iter().all(|s| need.iter().any(|a| a.kind == s.kind && a.name == s.name)));
        }
    }
}
