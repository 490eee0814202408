//! htpasswd basic auth.

use base64::Engine;
use reqwest::StatusCode;

use crate::common::Berth;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn start(htpasswd: &std::path::Path) -> Berth {
    let path = htpasswd.display().to_string();
    Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nauth:\n  htpasswd:\n    realm: test-realm\n    path: {path}\n"
        )
    })
}

fn entry(user: &str, password: &str) -> String {
    crate::common::htpasswd::entry(user, password, 5)
}

#[tokio::test]
async fn challenges_accepts_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("alice", "s3cret")).unwrap();
    let b = start(&file);
    let http = crate::common::http::client();
    let v2 = b.url("/v2/");

    let r = http.get(&v2).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "load balancers see 401 as healthy"
    );
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"test-realm\""
    );
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let ok = http
        .get(&v2)
        .header("authorization", basic("alice", "s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // A second request is served from the remembered check (same answer).
    let again = http
        .get(&v2)
        .header("authorization", basic("alice", "s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);

    for bad in [
        basic("alice", "wrong"),
        basic("bob", "s3cret"),
        basic("alice", "s3cret\0"),
        basic("alice", ""),
        "Basic !!!notbase64".to_string(),
        "Basic".to_string(),
        "Bearer abc".to_string(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("no-colon")
        ),
        format!("Basic {}", "A".repeat(10_000)),
    ] {
        let r = http
            .get(&v2)
            .header("authorization", &bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad:.40}");
    }
    // The liveness endpoint does not need credentials; storage health neither.
    assert_eq!(
        http.get(b.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(b.url("/health/storage"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(b.logs().contains("failed login"));
}

#[tokio::test]
async fn refused_request_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("alice", "pw")).unwrap();
    let b = start(&file);
    // The storage as the server left it at start (an empty one gets the
    // repository index's `complete` marker).
    let before = crate::common::files_under(&b.root);
    let http = crate::common::http::client();
    let r = http
        .post(b.url("/v2/x/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        crate::common::files_under(&b.root),
        before,
        "nothing reached storage"
    );
    let r = http
        .post(b.url("/v2/x/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"))
        .header("authorization", basic("alice", "pw"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("alice", "old")).unwrap();
    let b = start(&file);
    let http = crate::common::http::client();
    let v2 = b.url("/v2/");
    let status = |user: &'static str, pw: &'static str| {
        let http = http.clone();
        let v2 = v2.clone();
        async move {
            http.get(&v2)
                .header("authorization", basic(user, pw))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("alice", "old").await, StatusCode::OK);
    std::fs::write(
        &file,
        format!("{}{}", entry("alice", "new"), entry("carol", "pw")),
    )
    .unwrap();
    // The file is checked at most once a second: poll, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status("carol", "pw").await != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "new htpasswd never picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status("alice", "new").await, StatusCode::OK);
    assert_eq!(
        status("alice", "old").await,
        StatusCode::UNAUTHORIZED,
        "remembered checks are dropped on reload"
    );
}

#[test]
fn non_bcrypt_entries_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "http:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            file.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.htpasswd.path") && err.contains("only bcrypt"),
        "{err}"
    );
}

/// Berth with htpasswd from `file`, and `extra` YAML under `http:` (indented
/// by two) and under `auth.htpasswd:` (indented by four).
fn start_with(file: &std::path::Path, http_extra: &str, htpasswd_extra: &str) -> Berth {
    let path = file.display().to_string();
    let (http_extra, htpasswd_extra) = (http_extra.to_string(), htpasswd_extra.to_string());
    Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n{http_extra}\
             auth:\n  htpasswd:\n    realm: test-realm\n    path: {path}\n{htpasswd_extra}"
        )
    })
}

/// GET /v2/ with Basic credentials from the local address `from`, with an
/// X-Forwarded-For header if given.
async fn login_from(
    b: &Berth,
    from: &str,
    forwarded_for: Option<&str>,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let http = crate::common::http::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut req = http
        .get(b.url("/v2/"))
        .header("authorization", basic(user, password));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

async fn assert_throttled(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{what}: retry-after {wait}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{what}");
}

#[tokio::test]
async fn failed_logins_are_throttled_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("alice", "pw") + &entry("bob", "pw2")).unwrap();
    let b = start_with(
        &file,
        "",
        "    throttle:\n      maxfailures: 3\n      window: 300\n      maxdelay: 60\n",
    );
    let local = "127.0.0.1";
    // alice signs in first: her check is remembered.
    assert_eq!(
        login_from(&b, local, None, "alice", "pw").await.status(),
        200
    );
    for _ in 0..3 {
        let r = login_from(&b, local, None, "alice", "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Blocked: credentials that would need a bcrypt check are not looked at,
    // even right ones...
    assert_throttled(
        login_from(&b, local, None, "bob", "pw2").await,
        "bob from the guessing address",
    )
    .await;
    // ...but a remembered success costs nothing and goes through.
    assert_eq!(
        login_from(&b, local, None, "alice", "pw").await.status(),
        200
    );
    // Another client is unaffected.
    assert_eq!(
        login_from(&b, "127.0.0.2", None, "bob", "pw2")
            .await
            .status(),
        200
    );
    // No credentials: no guess, a plain challenge.
    let r = crate::common::http::get(b.url("/v2/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let logs = b.logs();
    assert!(logs.contains("basic auth: throttled"), "{logs}");
    assert!(logs.contains("failures_from_client=Some(3)"), "{logs}");
}

/// With `http.trustedproxies`, clients behind the proxy are told apart by
/// X-Forwarded-For, so one CI job's bad password does not lock out the
/// whole ingress; a client not among the proxies cannot dodge the count by
/// sending the header itself.
#[tokio::test]
async fn behind_trusted_proxies_clients_count_by_forwarded_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("ci", "pw") + &entry("bob", "pw2")).unwrap();
    let b = start_with(
        &file,
        "  trustedproxies: [127.0.0.1/32]\n",
        "    throttle:\n      maxfailures: 2\n",
    );
    let proxy = "127.0.0.1";
    for _ in 0..2 {
        let r = login_from(&b, proxy, Some("198.51.100.7"), "ci", "wrong").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(
        login_from(&b, proxy, Some("198.51.100.7"), "ci", "pw").await,
        "the job with the bad password",
    )
    .await;
    // The right-most hop is the one the proxy saw; what the client wrote
    // to the left of it is not believed.
    assert_throttled(
        login_from(&b, proxy, Some("203.0.113.1, 198.51.100.7"), "ci", "pw").await,
        "a forged hop to the left",
    )
    .await;
    assert_eq!(
        login_from(&b, proxy, Some("198.51.100.8"), "ci", "pw")
            .await
            .status(),
        200,
        "every other client of the ingress"
    );
    // Not a trusted proxy: its X-Forwarded-For is ignored.
    let direct = "127.0.0.3";
    for xff in ["192.0.2.1", "192.0.2.2"] {
        let r = login_from(&b, direct, Some(xff), "ci", "wrong").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // (bob: ci's success is remembered now, which the throttle lets by.)
    assert_throttled(
        login_from(&b, direct, Some("192.0.2.3"), "bob", "pw2").await,
        "a direct client rotating X-Forwarded-For",
    )
    .await;
}

/// A user name is client-chosen: with CR/LF in it, it must not start a log
/// line of its own.
#[tokio::test]
async fn user_names_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("alice", "pw")).unwrap();
    let b = start(&file);
    // (No ':' in it: Basic credentials split at the first.)
    let forged = "x\nERROR berth forged=1\r\nWARN forged=2";
    let r = login_from(&b, "127.0.0.1", None, forged, "pw").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let logs = b.logs();
    assert!(logs.contains("failed login"), "{logs}");
    for line in logs.lines() {
        assert!(
            !line.starts_with("ERROR berth") && !line.starts_with("WARN forged"),
            "forged line: {logs}"
        );
    }
    assert!(
        logs.contains(r#"user="x\nERROR berth forged=1\r\nWARN forged=2""#),
        "{logs}"
    );
}

/// Password checks wait in a bounded queue (`http.loginqueue`): with none
/// allowed to wait, a burst of slow checks larger than the cores gets 429
/// TOOMANYREQUESTS with Retry-After for the excess, the rest their answer,
/// and the server keeps answering afterwards.
#[tokio::test]
async fn password_checks_beyond_the_queue_get_429() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    // A slow hash (~0.3-1 s a check): the burst is all in flight at once.
    std::fs::write(&file, crate::common::htpasswd::entry("alice", "pw", 13)).unwrap();
    let b = start_with(
        &file,
        "  loginqueue: 0\n",
        "    throttle:\n      maxfailures: 0\n",
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burst = 2 * cores + 4;
    let answers = futures::future::join_all(
        (0..burst).map(|_| login_from(&b, "127.0.0.1", None, "alice", "wrong")),
    )
    .await;
    let mut refused = 0;
    for r in answers {
        match r.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_throttled(r, "beyond the queue").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // At most `cores` checks run at once and none may wait: with every
    // request of the burst in flight together, some are refused.
    assert!(refused >= 1, "none of {burst} refused");
    assert!(b.logs().contains("password checks queue full"));
    assert_eq!(
        login_from(&b, "127.0.0.1", None, "alice", "pw")
            .await
            .status(),
        200
    );
}

/// One warning at start when Basic credentials would cross the network in
/// clear; none on loopback.
#[test]
fn plain_http_on_a_public_address_warns_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, entry("alice", "pw")).unwrap();
    let warning = "would travel over plain HTTP";
    let local = start(&file);
    assert!(!local.logs().contains(warning), "{}", local.logs());
    let path = file.display().to_string();
    let public = Berth::start_with(move |root, addr| {
        let port = addr.rsplit(':').next().unwrap();
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 0.0.0.0:{port}\n  secret: s\n\
             auth:\n  htpasswd:\n    realm: r\n    path: {path}\n"
        )
    });
    let logs = public.logs();
    assert_eq!(logs.matches(warning).count(), 1, "{logs}");
    assert!(logs.contains("Basic credentials"), "{logs}");
}
