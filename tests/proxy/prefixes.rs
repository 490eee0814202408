//! Berth's form, `proxy.mirrors`: repositories under a prefix mirror their
//! upstream (each with its own account), every other repository stays an
//! ordinary, writable one on the same server; and the section's mistakes
//! are configuration errors naming the key.

use crate::{
    common::{config_check, htpasswd, Berth},
    shared::pull,
    support::*,
};

/// A Berth that wants Basic auth (`puller`/`pull-pass`) for everything,
/// holding `repo:tag` (pushed by an open Berth on the same storage first),
/// and that push's answer.
fn basic_upstream(repo: &str, tag: &str) -> (Berth, Resp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let seed = Berth::start_on_root(&root, &[]);
    let put = push_image(&seed.url(""), repo, tag, None);
    assert_eq!(put.status, 201, "{}", put.text());
    drop(seed);
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, htpasswd::entry("puller", "pull-pass", 4)).unwrap();
    let b = Berth::start_on_root_with(&root, |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
            path.display()
        )
    });
    (b, put, dir)
}

#[test]
fn prefixes_mirror_several_upstreams_beside_writable_repositories() {
    let open = Berth::start();
    let a = push_image(&open.url(""), "team/app", "v1", None);
    assert_eq!(a.status, 201);
    let (guarded, b, _dir) = basic_upstream("tools/cli", "v2");

    let m = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: m\n\
             proxy:\n  mirrors:\n    - prefix: open\n      remoteurl: {}\n\
             \x20   - prefix: vendor/guarded\n      remoteurl: {}\n      username: puller\n      password: pull-pass\n",
            open.url(""),
            guarded.url("")
        )
    });
    let base = m.url("");
    let r = pull(&base, "open/team/app", "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(
        r.header("docker-content-digest"),
        a.header("docker-content-digest")
    );
    let r = pull(&base, "vendor/guarded/tools/cli", "v2");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(
        r.header("docker-content-digest"),
        b.header("docker-content-digest")
    );
    let layer = r.json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = get(
        &m.url(&format!("/v2/vendor/guarded/tools/cli/blobs/{layer}")),
        Auth::None,
    );
    assert_eq!(blob.status, 200);
    assert_eq!(sha256(&blob.body), layer);

    // Outside every prefix (the bare prefix included): an ordinary registry.
    for repo in ["local/app", "open"] {
        let r = push_image(&base, repo, "v1", None);
        assert_eq!(r.status, 201, "{repo}: {}", r.text());
        assert_eq!(pull(&base, repo, "v1").status, 200);
    }
    // Under a prefix: read-only.
    let r = push_image(&base, "open/team/app", "v9", None);
    assert_eq!((r.status, r.error_code()), (405, "UNSUPPORTED".into()));
    // Not upstream: the upstream's 404.
    let r = pull(&base, "open/team/nothing", "v1");
    assert_eq!((r.status, r.error_code()), (404, "MANIFEST_UNKNOWN".into()));
}

#[test]
fn an_upstream_refusing_the_mirrors_account_is_denied_not_unknown() {
    let (guarded, _, _dir) = basic_upstream("tools/cli", "v2");
    let m = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: m\n\
             proxy:\n  remoteurl: {}\n  username: puller\n  password: wrong\n",
            guarded.url("")
        )
    });
    let r = pull(&m.url(""), "tools/cli", "v2");
    assert_eq!(
        (r.status, r.error_code()),
        (403, "DENIED".into()),
        "{}",
        r.text()
    );
}

#[test]
fn proxy_mistakes_are_configuration_errors_naming_the_key() {
    let base = "version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  secret: s\n";
    for (section, env, key) in [
        (
            "proxy:\n  remoteurl: http://a\n  mirrors:\n    - {prefix: x, remoteurl: http://b}\n",
            vec![],
            "proxy.remoteurl and proxy.mirrors",
        ),
        (
            "proxy:\n  mirrors:\n    - {prefix: Bad_Prefix, remoteurl: http://b}\n",
            vec![],
            "proxy.mirrors[0].prefix",
        ),
        (
            "proxy:\n  mirrors:\n    - {prefix: x, remoteurl: http://b, username: u}\n",
            vec![],
            "proxy.mirrors[0].username",
        ),
        (
            "",
            vec![("REGISTRY_PROXY_REMOTEURL", "ftp://x")],
            "proxy.remoteurl",
        ),
        (
            "proxy:\n  remoteurl: http://a\n  tagttl: soon\n",
            vec![],
            "proxy.tagttl",
        ),
    ] {
        let (code, err) = config_check(&format!("{base}{section}"), &env);
        assert_eq!(code, Some(2), "{section}: {err}");
        assert!(err.contains(key), "{section}: {err}");
    }
    let (code, err) = config_check(
        &format!("{base}proxy:\n  mirrors:\n    - {{prefix: hub, remoteurl: https://registry-1.docker.io}}\n"),
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
}
