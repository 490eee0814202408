//! Repository names contain slashes, so `/v2/<name>/...` cannot be matched by
//! path parameters alone. Like distribution's router, parse from the end: the
//! last segments name the API area, everything before them is the repository.

use axum::http::Method;

use crate::{auth::access::Access, telemetry::metrics::Handler};

/// A parsed `/v2/...` path below the API root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, id: String },
    Manifest { name: String, reference: String },
    Tags { name: String },
    Referrers { name: String, digest: String },
}

impl Route {
    /// The route template, as the `handler` label of the HTTP metrics.
    pub fn handler(&self) -> Handler {
        match self {
            Route::Base => Handler::Base,
            Route::Catalog => Handler::Catalog,
            Route::Blob { .. } => Handler::Blob,
            Route::UploadStart { .. } => Handler::BlobUpload,
            Route::Upload { .. } => Handler::BlobUploadChunk,
            Route::Manifest { .. } => Handler::Manifest,
            Route::Tags { .. } => Handler::Tags,
            Route::Referrers { .. } => Handler::Referrers,
        }
    }

    /// The repository the route names, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Manifest { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// The accesses a request on this route needs, in the order a challenge
    /// lists them. `mount_from` is the `from` of a cross-repository mount.
    pub fn required_access(&self, method: &Method, mount_from: Option<&str>) -> Vec<Access> {
        let read = matches!(*method, Method::GET | Method::HEAD);
        match self {
            Route::Base => vec![],
            Route::Catalog => vec![Access::catalog()],
            Route::Blob { name, .. } | Route::Manifest { name, .. }
                if *method == Method::DELETE =>
            {
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
            Route::Manifest { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. } => {
                let mut v = vec![Access::repo(name, "pull"), Access::repo(name, "push")];
                if let (Route::UploadStart { .. }, Some(from)) = (self, mount_from) {
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

    /// `path` is what follows `/v2/` (e.g. `library/ubuntu/manifests/latest`).
    pub fn parse(path: &str) -> Option<Route> {
        if path.is_empty() {
            return Some(Route::Base);
        }
        if path == "_catalog" {
            return Some(Route::Catalog);
        }
        let segs: Vec<&str> = path.split('/').collect();
        let n = segs.len();
        let name = |upto: usize| segs[..upto].join("/");
        // `<name>/blobs/uploads/` (trailing slash) or `<name>/blobs/uploads`
        if n >= 3 && segs[n - 2] == "uploads" && segs[n - 3] == "blobs" && segs[n - 1].is_empty() {
            return Some(Route::UploadStart { name: name(n - 3) });
        }
        if n >= 3 && segs[n - 1] == "uploads" && segs[n - 2] == "blobs" {
            return Some(Route::UploadStart { name: name(n - 2) });
        }
        if n >= 4 && segs[n - 2] == "uploads" && segs[n - 3] == "blobs" {
            return Some(Route::Upload {
                name: name(n - 3),
                id: segs[n - 1].to_string(),
            });
        }
        if n >= 3 && segs[n - 2] == "blobs" {
            return Some(Route::Blob {
                name: name(n - 2),
                digest: segs[n - 1].to_string(),
            });
        }
        if n >= 3 && segs[n - 2] == "manifests" {
            return Some(Route::Manifest {
                name: name(n - 2),
                reference: segs[n - 1].to_string(),
            });
        }
        if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
            return Some(Route::Tags { name: name(n - 2) });
        }
        if n >= 3 && segs[n - 2] == "referrers" {
            return Some(Route::Referrers {
                name: name(n - 2),
                digest: segs[n - 1].to_string(),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access::scope_string;

    #[test]
    fn scopes_per_route() {
        let push =
            Route::UploadStart { name: "a/b".into() }.required_access(&Method::POST, Some("c"));
        assert_eq!(
            scope_string(&push),
            "repository:a/b:pull,push repository:c:pull"
        );
        let pull = Route::Blob {
            name: "x".into(),
            digest: "d".into(),
        }
        .required_access(&Method::HEAD, None);
        assert_eq!(scope_string(&pull), "repository:x:pull");
        assert_eq!(
            scope_string(&Route::Catalog.required_access(&Method::GET, None)),
            "registry:catalog:*"
        );
        let del = Route::Manifest {
            name: "x".into(),
            reference: "t".into(),
        }
        .required_access(&Method::DELETE, None);
        assert_eq!(scope_string(&del), "repository:x:delete");
    }

    #[test]
    fn parses_from_the_end() {
        assert_eq!(
            Route::parse("a/b/c/manifests/latest"),
            Some(Route::Manifest {
                name: "a/b/c".into(),
                reference: "latest".into()
            })
        );
        assert_eq!(
            Route::parse("a/blobs/uploads/"),
            Some(Route::UploadStart { name: "a".into() })
        );
        assert_eq!(
            Route::parse("a/blobs/uploads/xyz"),
            Some(Route::Upload {
                name: "a".into(),
                id: "xyz".into()
            })
        );
        assert_eq!(
            Route::parse("a/blobs/sha256:00"),
            Some(Route::Blob {
                name: "a".into(),
                digest: "sha256:00".into()
            })
        );
        assert_eq!(
            Route::parse("a/tags/list"),
            Some(Route::Tags { name: "a".into() })
        );
        assert_eq!(Route::parse("_catalog"), Some(Route::Catalog));
        assert_eq!(Route::parse("a/unknown"), None);
    }

    mod properties {
        use super::super::*;
        use crate::registry::{
            error::Code,
            manifests::Reference,
            names::{is_valid_tag, validate_name},
        };
        use proptest::prelude::*;

        /// Valid repository names, API words included as components.
        fn name() -> impl Strategy<Value = String> {
            let component = prop_oneof![
                "[a-z0-9]{1,6}(([._]|__|-{1,2})[a-z0-9]{1,6}){0,2}",
                Just("blobs".to_string()),
                Just("uploads".to_string()),
                Just("manifests".to_string()),
                Just("tags".to_string()),
                Just("list".to_string()),
                Just("referrers".to_string()),
            ];
            proptest::collection::vec(component, 1..5).prop_map(|c| c.join("/"))
        }

        fn digest() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<[u8; 32]>().prop_map(|b| format!("sha256:{}", hex::encode(b))),
                any::<[u8; 64]>().prop_map(|b| format!("sha512:{}", hex::encode(b))),
            ]
        }

        fn reference() -> impl Strategy<Value = String> {
            prop_oneof!["[a-zA-Z0-9_][a-zA-Z0-9._-]{0,40}", digest()]
        }

        fn route() -> impl Strategy<Value = Route> {
            prop_oneof![
                Just(Route::Base),
                Just(Route::Catalog),
                (name(), digest()).prop_map(|(name, digest)| Route::Blob { name, digest }),
                name().prop_map(|name| Route::UploadStart { name }),
                (name(), "[0-9a-f-]{36}").prop_map(|(name, id)| Route::Upload { name, id }),
                (name(), reference())
                    .prop_map(|(name, reference)| Route::Manifest { name, reference }),
                name().prop_map(|name| Route::Tags { name }),
                (name(), digest()).prop_map(|(name, digest)| Route::Referrers { name, digest }),
            ]
        }

        fn path_of(route: &Route) -> String {
            match route {
                Route::Base => String::new(),
                Route::Catalog => "_catalog".into(),
                Route::Blob { name, digest } => format!("{name}/blobs/{digest}"),
                Route::UploadStart { name } => format!("{name}/blobs/uploads/"),
                Route::Upload { name, id } => format!("{name}/blobs/uploads/{id}"),
                Route::Manifest { name, reference } => format!("{name}/manifests/{reference}"),
                Route::Tags { name } => format!("{name}/tags/list"),
                Route::Referrers { name, digest } => format!("{name}/referrers/{digest}"),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Every route's path parses back to it, whatever its name holds.
            #[test]
            fn paths_parse_back(route in route()) {
                prop_assert_eq!(Route::parse(&path_of(&route)), Some(route));
            }

            /// Any path: a route or none, never a panic; a name it yields is
            /// only ever used after `validate_name`, which gives NAME_INVALID.
            #[test]
            fn any_path_parses_or_not(path in prop_oneof!["[a-z0-9/._:-]{0,60}", "([a-z]{1,3}/){0,3}(blobs|manifests|tags|referrers|uploads|list|_catalog|)/?[a-z0-9:]{0,5}", any::<String>()]) {
                let name = match Route::parse(&path) {
                    Some(Route::Blob { name, .. } | Route::UploadStart { name } | Route::Upload { name, .. } | Route::Manifest { name, .. } | Route::Tags { name } | Route::Referrers { name, .. }) => name,
                    Some(Route::Base | Route::Catalog) | None => return Ok(()),
                };
                if let Err(e) = validate_name(&name) {
                    prop_assert_eq!(e.code, Code::NameInvalid);
                }
            }

            /// A reference is a tag or a digest, each read back exactly, or
            /// the spec's error for it.
            #[test]
            fn references_are_tags_or_digests(s in prop_oneof![reference(), "[a-zA-Z0-9_.:@+-]{0,80}", any::<String>()]) {
                match Reference::parse(&s) {
                    Ok(Reference::Tag(t)) => {
                        prop_assert!(is_valid_tag(&t));
                        prop_assert_eq!(t, s);
                    }
                    Ok(Reference::Digest(d)) => prop_assert_eq!(d.to_string(), s),
                    Err(e) => prop_assert!(
                        matches!(e.code, Code::ManifestInvalid | Code::DigestInvalid),
                        "{e}"
                    ),
                }
            }
        }
    }
}
