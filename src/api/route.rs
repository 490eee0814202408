//! Repository names contain slashes, so `/v2/<name>/...` cannot be matched by
//! path parameters alone. Like distribution's router, parse from the end: the
//! last segments name the API area, everything before them is the repository.

use crate::telemetry::metrics::Handler;

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
    use super::Route;

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
}
