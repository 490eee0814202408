//! Each example config of tests/fixtures/token-server, as README readers
//! would run it: what it allows works end to end, what it denies is 403
//! DENIED at the registry (the token lists the scope with no actions) and
//! leaves storage as it was.

use crate::{
    common::Berth,
    support::{self, *},
};

/// A push that must be refused, and storage untouched by it.
fn assert_push_denied(b: &Berth, repo: &str, creds: Option<(&str, &str)>) {
    let before = files(&b.root);
    let r = push_image(&b.url(""), repo, "denied", creds);
    assert_eq!(r.status, 403, "push to {repo} as {creds:?}: {}", r.text());
    assert_eq!(r.error_code(), "DENIED");
    assert_eq!(files(&b.root), before, "a denied push stored something");
}

fn assert_pull(b: &Berth, repo: &str, creds: Option<(&str, &str)>, status: u16) {
    let r = pull_manifest(&b.url(""), repo, "v1", creds);
    assert_eq!(r.status, status, "pull {repo} as {creds:?}: {}", r.text());
    if status == 403 {
        assert_eq!(r.error_code(), "DENIED");
    }
}

fn pushed(b: &Berth, repo: &str, creds: (&str, &str)) {
    let r = push_image(&b.url(""), repo, "v1", Some(creds));
    assert_eq!(r.status, 201, "push {repo} as {}: {}", creds.0, r.text());
}

#[test]
fn everyone_pulls_only_ci_pushes() {
    let secrets = Secrets::new(KeyKind::Rsa, &[("ci", "ci-pass"), ("alice", "alice-pass")]);
    let b = start_fixture("ci-push.yml", &secrets, "");
    pushed(&b, "team/app", ("ci", "ci-pass"));
    assert_pull(&b, "team/app", Some(("alice", "alice-pass")), 200);
    assert_push_denied(&b, "team/app", Some(("alice", "alice-pass")));
    // Unknown account and anonymous: the token server says 401.
    assert_eq!(
        pull_manifest(&b.url(""), "team/app", "v1", Some(("mallory", "x"))).status,
        401
    );
    assert_eq!(
        pull_manifest(&b.url(""), "team/app", "v1", None).status,
        401
    );
}

#[test]
fn roles_through_labels() {
    let secrets = Secrets::new(
        KeyKind::EcP256,
        &[
            ("alice", "a-pass"),
            ("bob", "b-pass"),
            ("carol", "c-pass"),
            ("dave", "d-pass"),
        ],
    );
    let b = start_fixture("roles.yml", &secrets, "");
    let (admin, dev, viewer) = (("alice", "a-pass"), ("bob", "b-pass"), ("carol", "c-pass"));
    pushed(&b, "svc/api", dev);
    assert_pull(&b, "svc/api", Some(viewer), 200);
    assert_push_denied(&b, "svc/api", Some(viewer));
    // No label, no rule: dave is denied everything.
    assert_pull(&b, "svc/api", Some(("dave", "d-pass")), 403);

    // The catalog (registry:catalog:*) is the admin's alone.
    let catalog = |who| with_token("GET", &b.url("/v2/_catalog"), Some(who), &[], vec![]);
    let r = catalog(admin);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["repositories"], serde_json::json!(["svc/api"]));
    assert_eq!(catalog(dev).status, 403);

    // delete: the developer may not, the admin may.
    let digest = pull_manifest(&b.url(""), "svc/api", "v1", Some(dev))
        .header("docker-content-digest")
        .unwrap()
        .to_string();
    let url = b.url(&format!("/v2/svc/api/manifests/{digest}"));
    let r = with_token("DELETE", &url, Some(dev), &[], vec![]);
    assert_eq!((r.status, r.error_code()), (403, "DENIED".into()));
    let r = with_token("DELETE", &url, Some(admin), &[], vec![]);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_pull(&b, "svc/api", Some(admin), 404);
}

#[test]
fn anonymous_pulls_one_public_repository() {
    let secrets = Secrets::new(KeyKind::EcP256, &[("ci", "ci-pass")]);
    let b = start_fixture("public-repo.yml", &secrets, "");
    pushed(&b, "public/hello", ("ci", "ci-pass"));
    pushed(&b, "private/app", ("ci", "ci-pass"));

    // Anonymous: the whole dance without credentials.
    let r = get(&b.url("/v2/public/hello/manifests/v1"), Auth::None);
    assert_eq!(r.status, 401, "the registry still asks for a token");
    let t = token(&b, "repository:public/hello:pull", Auth::None);
    let (_, claims) = jwt_parts(&t);
    assert_eq!(claims["sub"], "");
    assert_eq!(support::granted(&claims, "public/hello"), vec!["pull"]);
    assert_pull(&b, "public/hello", None, 200);
    assert_pull(&b, "private/app", None, 403);
    assert_push_denied(&b, "public/hello", None);
    // Wrong credentials are not downgraded to anonymous.
    assert_eq!(
        pull_manifest(&b.url(""), "public/hello", "v1", Some(("ci", "bad"))).status,
        401
    );
    assert_pull(&b, "private/app", Some(("ci", "ci-pass")), 200);
}

#[test]
fn personal_namespaces() {
    let secrets = Secrets::new(
        KeyKind::EcP256,
        &[
            ("alice", "a-pass"),
            ("bob", "b-pass"),
            ("admin", "admin-pass"),
        ],
    );
    let b = start_fixture("personal.yml", &secrets, "");
    let (alice, bob) = (("alice", "a-pass"), ("bob", "b-pass"));
    pushed(&b, "alice/app", alice);
    pushed(&b, "alice/tools/cli", alice);
    pushed(&b, "library/base", ("admin", "admin-pass"));
    assert_pull(&b, "alice/app", Some(alice), 200);
    assert_pull(&b, "alice/app", Some(bob), 403);
    assert_push_denied(&b, "alice/app", Some(bob));
    assert_push_denied(&b, "library/base", Some(bob));
    assert_pull(&b, "library/base", Some(bob), 200);
    // `alice` alone is not under alice/.
    assert_push_denied(&b, "alice", Some(alice));
    pushed(&b, "bob/app", bob);
}
