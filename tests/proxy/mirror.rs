//! One upstream mirrored whole (distribution's `proxy:` form): content
//! fetched once, verified and served from the mirror's own storage; writes
//! refused; tags checked upstream after `tagttl`; cached content served
//! while the upstream is gone; wrong bytes never cached; one upstream fetch
//! for many clients pulling the same blob at once.

use crate::{
    common::{distribution::Distribution, files_under, http::exchange, Berth},
    shared::{blobs_of, gets, metric, mirror, pull, OCI_MANIFEST},
    support::*,
};

/// distribution trusting Berth's token server `realm` (signing cert `cert`).
fn token_upstream(realm: &str, cert: &str) -> Distribution {
    Distribution::start(|dir, addr| {
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: upstream\n\
             auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
            root = dir.join("data").display(),
        )
    })
}

#[test]
fn a_mirror_of_a_token_protected_upstream_serves_what_it_cached_and_refuses_writes() {
    let secrets = Secrets::new(
        KeyKind::EcP256,
        &[("ci", "ci-pass"), ("alice", "alice-pass")],
    );
    let tokens = start_fixture("ci-push.yml", &secrets, "");
    let upstream = token_upstream(&token_url(&tokens), &secrets.path("token.crt"));
    let up = upstream.url("");
    let put = push_image(&up, "library/app", "v1", Some(("ci", "ci-pass")));
    assert_eq!(put.status, 201, "{}", put.text());
    let digest = put.header("docker-content-digest").unwrap().to_string();

    // The mirror logs in upstream as alice (pull only), with tags checked on
    // every pull so that the upstream's absence below is noticed at once.
    let m = mirror(&format!(
        "  remoteurl: {up}\n  username: alice\n  password: alice-pass\n  tagttl: 0s\n"
    ));
    let base = m.url("");
    let tokens_before = gets(&tokens, "/auth/token");
    let r = pull(&base, "library/app", "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let blobs = blobs_of(&r);
    for b in &blobs {
        let r = get(&m.url(&format!("/v2/library/app/blobs/{b}")), Auth::None);
        assert_eq!(r.status, 200, "{b}: {}\n{}", r.text(), m.logs());
        assert_eq!(&sha256(&r.body), b, "the mirror served other bytes");
    }
    // By digest too, and everything is in the mirror's own storage.
    let r = pull(&base, "library/app", &digest);
    assert_eq!(r.status, 200, "{}", r.text());
    // One token for the scope served every upstream request above (a tag
    // HEAD, a manifest GET, one GET per blob): it is kept until it expires.
    assert_eq!(
        gets(&tokens, "/auth/token") - tokens_before,
        1,
        "{}",
        tokens.logs()
    );
    let stored = files_under(&m.root);
    for b in &blobs {
        let hex = b.strip_prefix("sha256:").unwrap();
        assert!(
            stored
                .iter()
                .any(|f| f.contains(hex) && f.ends_with("/data")),
            "{b} not stored: {stored:?}"
        );
    }

    // Writes are refused as distribution's proxy refuses them, and leave
    // storage as it was.
    for (method, path) in [
        ("POST", "/v2/library/app/blobs/uploads/"),
        ("PUT", "/v2/library/app/manifests/v2"),
        ("DELETE", &format!("/v2/library/app/manifests/{digest}")),
        ("DELETE", &format!("/v2/library/app/blobs/{}", blobs[0])),
    ] {
        let r = send(method, &m.url(path), Auth::None, &[], b"{}".to_vec());
        assert_eq!(
            (r.status, r.error_code()),
            (405, "UNSUPPORTED".into()),
            "{method} {path}"
        );
    }
    assert_eq!(files_under(&m.root), stored);

    // Upstream gone: what the mirror has is still served, the tag included
    // (past its TTL); what it lacks is a retryable 503.
    drop(upstream);
    let r = pull(&base, "library/app", "v1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let r = get(
        &m.url(&format!("/v2/library/app/blobs/{}", blobs[1])),
        Auth::None,
    );
    assert_eq!(r.status, 200);
    let r = pull(&base, "library/other", "v1");
    assert_eq!(
        (r.status, r.error_code()),
        (503, "UNAVAILABLE".into()),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
}

#[test]
fn a_moved_tag_is_seen_after_the_ttl_and_not_before() {
    let upstream = Berth::start();
    let up = upstream.url("");
    assert_eq!(push_image(&up, "team/app", "latest", None).status, 201);
    let patient = mirror(&format!("  remoteurl: {up}\n  tagttl: 1h\n"));
    let eager = mirror(&format!("  remoteurl: {up}\n  tagttl: 0s\n"));
    let first = pull(&patient.url(""), "team/app", "latest");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(pull(&eager.url(""), "team/app", "latest").status, 200);

    // The tag moves upstream (another image under the same tag).
    let moved = push_image(&up, "team/app", "latest-new", None);
    assert_eq!(moved.status, 201);
    let new_digest = moved.header("docker-content-digest").unwrap().to_string();
    let body = pull(&up, "team/app", &new_digest).body;
    let r = send(
        "PUT",
        &upstream.url("/v2/team/app/manifests/latest"),
        Auth::None,
        &[("content-type", OCI_MANIFEST)],
        body,
    );
    assert_eq!(r.status, 201);

    // Within its TTL the mirror serves what it has; past it, the new one.
    let r = pull(&patient.url(""), "team/app", "latest");
    assert_eq!(
        r.header("docker-content-digest"),
        first.header("docker-content-digest")
    );
    let r = pull(&eager.url(""), "team/app", "latest");
    assert_eq!(r.header("docker-content-digest"), Some(new_digest.as_str()));
}

#[test]
fn wrong_bytes_from_the_upstream_are_refused_and_never_cached() {
    let upstream = Distribution::start(|dir, addr| {
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n  secret: upstream\n",
            dir.join("data").display()
        )
    });
    let up = upstream.url("");
    assert_eq!(push_image(&up, "bad/app", "v1", None).status, 201);
    let layer = blobs_of(&pull(&up, "bad/app", "v1"))[1].clone();
    // Same length, other bytes, in the upstream's own storage.
    let hex = layer.strip_prefix("sha256:").unwrap();
    let data = upstream.dir.path().join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let m = mirror(&format!("  remoteurl: {up}\n"));
    assert_eq!(pull(&m.url(""), "bad/app", "v1").status, 200);
    // The pull streams: its body breaks off before the last byte (which
    // waits for the digest) rather than ever completing with wrong bytes.
    let url = m.url(&format!("/v2/bad/app/blobs/{layer}"));
    for _ in 0..2 {
        let r = exchange(crate::common::http::builder(), |c| c.get(&url));
        if let Ok(r) = &r {
            assert_ne!(r.status, 200, "a whole body of wrong bytes was served");
        }
        assert!(
            !files_under(&m.root).iter().any(|f| f.contains(hex)),
            "the wrong bytes entered the cache"
        );
    }
}

#[test]
fn clients_pulling_one_missing_blob_at_once_cause_one_upstream_fetch() {
    let upstream = Berth::start();
    let up = upstream.url("");
    assert_eq!(push_image(&up, "fan/app", "v1", None).status, 201);
    let m = mirror(&format!("  remoteurl: {up}\n"));
    let layer = blobs_of(&pull(&m.url(""), "fan/app", "v1"))[1].clone();
    let url = m.url(&format!("/v2/fan/app/blobs/{layer}"));
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&url, Auth::None))
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sha256(&r.body), layer);
    }
    let fetches = gets(&upstream, &format!("/v2/fan/app/blobs/{layer}"));
    assert_eq!(fetches, 1, "upstream GETs of the layer");
}

#[test]
fn the_cache_counts_hits_misses_and_upstream_traffic() {
    let upstream = Berth::start();
    let up = upstream.url("");
    assert_eq!(push_image(&up, "team/app", "v1", None).status, 201);
    let debug = format!("127.0.0.1:{}", crate::common::free_port());
    let m = Berth::start_with(|root, addr| {
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: mirror\n  debug:\n    addr: {debug}\n\
             proxy:\n  remoteurl: {up}\n  tagttl: 1h\n"
        )
    });
    assert!(crate::common::wait_for_port(
        &debug,
        std::time::Duration::from_secs(20)
    ));
    let mut bodies = 0;
    for _ in 0..2 {
        let r = pull(&m.url(""), "team/app", "v1");
        assert_eq!(r.status, 200);
        for b in blobs_of(&r) {
            let blob = get(&m.url(&format!("/v2/team/app/blobs/{b}")), Auth::None);
            assert_eq!(blob.status, 200);
            bodies += blob.body.len();
        }
        bodies += r.body.len();
    }
    let text = get(&format!("http://{debug}/metrics"), Auth::None).text();
    let up_label = format!("upstream=\"{up}\"");
    let count = |kind: &str, result: &str| {
        metric(
            &text,
            "registry_proxy_requests_total",
            &[
                &up_label,
                &format!("kind=\"{kind}\""),
                &format!("result=\"{result}\""),
            ],
        )
    };
    assert_eq!(count("manifest", "miss"), 1.0, "{text}");
    assert_eq!(count("manifest", "hit"), 1.0);
    assert_eq!(count("blob", "miss"), 2.0);
    assert_eq!(count("blob", "hit"), 2.0);
    assert_eq!(count("manifest", "stale"), 0.0);
    // Upstream: the tag's HEAD, the manifest's GET, one GET per blob; the
    // bodies received are what the first round served.
    assert_eq!(
        metric(
            &text,
            "registry_proxy_upstream_requests_total",
            &[&up_label, "status=\"200\""]
        ),
        4.0
    );
    assert_eq!(
        metric(&text, "registry_proxy_upstream_bytes_total", &[&up_label]),
        (bodies / 2) as f64
    );
}

#[test]
fn pull_events_say_whether_the_cache_served_them() {
    let upstream = Berth::start();
    assert_eq!(
        push_image(&upstream.url(""), "team/app", "v1", None).status,
        201
    );
    let hook = crate::stub::Recorder::start();
    let m = mirror(&format!(
        "  remoteurl: {}\n  tagttl: 1h\n\
         notifications:\n  endpoints:\n    - name: hook\n      url: {}\n      backoff: 50ms\n",
        upstream.url(""),
        hook.url()
    ));
    for _ in 0..2 {
        let r = pull(&m.url(""), "team/app", "v1");
        assert_eq!(r.status, 200);
        let layer = blobs_of(&r)[1].clone();
        assert_eq!(
            get(&m.url(&format!("/v2/team/app/blobs/{layer}")), Auth::None).status,
            200
        );
    }
    // Delivery is asynchronous: wait (bounded) for the four pull events.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pulls = loop {
        let pulls: Vec<_> = hook
            .events()
            .into_iter()
            .filter(|e| e["action"] == "pull")
            .collect();
        if pulls.len() >= 4 {
            break pulls;
        }
        assert!(std::time::Instant::now() < deadline, "{pulls:?}");
        std::thread::yield_now();
    };
    let caches = |blob: bool| -> Vec<String> {
        pulls
            .iter()
            .filter(|e| (e["target"]["mediaType"] == "application/octet-stream") == blob)
            .map(|e| e["target"]["cache"].as_str().unwrap_or("none").to_string())
            .collect()
    };
    assert_eq!(caches(false), ["miss", "hit"], "manifest pulls: {pulls:?}");
    assert_eq!(caches(true), ["miss", "hit"], "blob pulls: {pulls:?}");
}

#[test]
fn tag_lists_are_the_upstreams_while_it_answers() {
    let upstream = Berth::start();
    let up = upstream.url("");
    for tag in ["v1", "v2", "v3"] {
        assert_eq!(push_image(&up, "team/app", tag, None).status, 201);
    }
    let m = mirror(&format!("  remoteurl: {up}\n"));
    let list = |q: &str| get(&m.url(&format!("/v2/team/app/tags/list{q}")), Auth::None);
    let r = list("");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["v1", "v2", "v3"]));
    // Pages pass through: n, last, and a Link while more follow.
    let r = list("?n=2");
    assert_eq!(r.json()["tags"], serde_json::json!(["v1", "v2"]));
    assert!(r.header("link").is_some(), "{:?}", r.headers);
    let r = list("?n=2&last=v2");
    assert_eq!(r.json()["tags"], serde_json::json!(["v3"]));
    // Unknown upstream: unknown here.
    let r = get(&m.url("/v2/team/none/tags/list"), Auth::None);
    assert_eq!((r.status, r.error_code()), (404, "NAME_UNKNOWN".into()));
    // Upstream gone: what is cached.
    assert_eq!(pull(&m.url(""), "team/app", "v2").status, 200);
    drop(upstream);
    let r = list("");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tags"], serde_json::json!(["v2"]));
}
