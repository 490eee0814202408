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
