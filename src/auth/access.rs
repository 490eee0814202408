//! What a request needs: the scopes of docker's token spec
//! (`repository:<name>:pull,push`, `registry:catalog:*`), derived from the route.

use axum::http::Method;

use crate::api::route::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// "repository" or "registry"
    pub kind: String,
    pub name: String,
    pub action: String,
}

impl Access {
    fn repo(name: &str, action: &str) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            action: action.into(),
        }
    }
}

/// The accesses a request needs, in the order a challenge lists them.
/// `mount_from` is the `from` of a cross-repository mount.
pub fn required(method: &Method, route: &Route, mount_from: Option<&str>) -> Vec<Access> {
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        Route::Base => vec![],
        Route::Catalog => vec![Access {
            kind: "registry".into(),
            name: "catalog".into(),
            action: "*".into(),
        }],
        Route::Blob { name, .. } | Route::Manifest { name, .. } if *method == Method::DELETE => {
            vec![Access::repo(name, "delete")]
        }
        Route::Blob { name, .. }
        | Route::Manifest { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. }
            if read =>
        {
            vec![Access::repo(name, "pull")]
        }
        Route::Manifest { name, .. } | Route::UploadStart { name } | Route::Upload { name, .. } => {
            let mut v = vec![Access::repo(name, "pull"), Access::repo(name, "push")];
            if let (Route::UploadStart { .. }, Some(from)) = (route, mount_from) {
                v.push(Access::repo(from, "pull"));
            }
            v
        }
        // Anything else is refused by the router anyway; demand the most.
        Route::Blob { name, .. } | Route::Tags { name } | Route::Referrers { name, .. } => {
            vec![Access::repo(name, "pull"), Access::repo(name, "push")]
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
    fn scopes_per_route() {
        let push = required(
            &Method::POST,
            &Route::UploadStart { name: "a/b".into() },
            Some("c"),
        );
        assert_eq!(
            scope_string(&push),
            "repository:a/b:pull,push repository:c:pull"
        );
        let pull = required(
            &Method::HEAD,
            &Route::Blob {
                name: "x".into(),
                digest: "d".into(),
            },
            None,
        );
        assert_eq!(scope_string(&pull), "repository:x:pull");
        assert_eq!(
            scope_string(&required(&Method::GET, &Route::Catalog, None)),
            "registry:catalog:*"
        );
        let del = required(
            &Method::DELETE,
            &Route::Manifest {
                name: "x".into(),
                reference: "t".into(),
            },
            None,
        );
        assert_eq!(scope_string(&del), "repository:x:delete");
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
