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
    let http = crate::common::http::client();
    let r = http
        .post(b.url("/v2/x/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!b.root.join("docker").exists(), "nothing reached storage");
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
