//! Configuration: YAML in distribution's schema, REGISTRY_* overrides,
//! `config check`, one-line errors with exit code 2, and the http.* options.

use std::process::Command;

use reqwest::StatusCode;

use crate::client::{header, location, Client};
use crate::common::Berth;

fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let (code, err) = crate::common::config_check(yaml, env);
    (code.expect("config check exited by a signal"), err)
}

#[test]
fn config_check_accepts_distribution_config() {
    let yaml = "version: 0.1\nlog:\n  level: debug\n  formatter: json\n  fields:\n    service: registry\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\n";
    assert_eq!(check(yaml, &[]).0, 0);
}

#[test]
fn config_errors_are_one_line_naming_the_key() {
    let (code, err) = check("storage:\n  delete:\n    enabled: maybe\n", &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("enabled") && err.trim().lines().count() == 1,
        "{err}"
    );

    let (code, err) = check("storage:\n  gcs:\n    bucket: x\n", &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("gcs") && err.trim().lines().count() == 1,
        "{err}"
    );

    let (code, err) = check("log:\n  formatter: xml\n", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("log.formatter"), "{err}");

    let (code, err) = check(
        "version: 0.1\n",
        &[("REGISTRY_STORAGE_DELETE_ENABLED", "sometimes")],
    );
    assert_eq!(code, 2, "env overrides are type-checked too: {err}");
    assert!(err.contains("REGISTRY_STORAGE_DELETE_ENABLED:"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "check", "/nonexistent/config.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.yml"));

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config", "/nonexistent/config.yml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "serve refuses a bad config with exit 2"
    );
}

#[tokio::test]
async fn env_overrides_the_file() {
    let env_root = tempfile::tempdir().unwrap();
    let root_str = env_root.path().to_str().unwrap().to_string();
    let b = Berth::start_on_root(
        std::path::Path::new("/nonexistent-root-from-file"),
        &[(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            root_str.as_str(),
        )],
    );
    let c = Client::new(&b);
    let d = c.push_blob("env/repo", b"from env").await;
    let hex = &d[7..];
    assert!(env_root
        .path()
        .join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
        .exists());
}

/// distribution's deploy guide: `REGISTRY_AUTH=htpasswd` names the section,
/// `REGISTRY_AUTH_HTPASSWD_*` fill it; `REGISTRY_STORAGE=<driver>` replaces the
/// file's driver.
#[tokio::test]
async fn env_selects_auth_and_storage_by_name_as_distribution_does() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let b = Berth::start_with_env(
        |root, addr| {
            format!("storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: s\n")
        },
        &[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", htpasswd.to_str().unwrap()),
            ("REGISTRY_STORAGE", "inmemory"),
        ],
    );
    let r = crate::common::http::get(b.url("/v2/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Basic realm=\"Registry Realm\"")
    );
    let http = crate::common::http::client();
    let r = http
        .post(b.url("/v2/sel/app/blobs/uploads/"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // In memory, not in the file's directory; the file's `delete` stays.
    assert!(!b.root.join("docker").exists(), "wrote to the file's root");
    let logs = b.logs();
    assert!(logs.contains("storage=inmemory"), "{logs}");

    let (code, err) = check("version: 0.1\n", &[("REGISTRY_STORAGE", "gcs")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("REGISTRY_STORAGE") && err.contains("gcs"),
        "{err}"
    );
    let (code, err) = check(
        "storage:\n  s3:\n    region: us-east-1\n    bucket: b\n",
        &[
            ("REGISTRY_STORAGE", "filesystem"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/tmp/x"),
        ],
    );
    assert_eq!(code, 0, "the file's s3 gave way to the env's choice: {err}");

    // Keys whose own names hold `_` are reachable from the environment too.
    let (code, err) = check(
        "storage:\n  azure:\n    accountname: a\n    accountkey: a2V5\n    container: reg\n",
        &[("REGISTRY_STORAGE_AZURE_MAX_RETRIES", "many")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("REGISTRY_STORAGE_AZURE_MAX_RETRIES"), "{err}");
}

/// HTTP/2 without TLS (h2c) carries the host in `:authority`, not Host:
/// Location URLs are still absolute and name it.
#[tokio::test]
async fn h2c_location_urls_name_the_authority() {
    let b = Berth::start();
    let h2 = crate::common::http::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(b.url("/v2/h2c/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    assert!(
        loc.starts_with(&format!("http://{}/v2/h2c/app/blobs/uploads/", b.addr)),
        "{loc}"
    );
}

#[tokio::test]
async fn http_prefix_headers_host_and_relative_urls() {
    let b = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n  prefix: /reg\n  relativeurls: true\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
        )
    });
    let c = Client::new(&b);
    let r = c.get("/reg/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    assert_eq!(c.get("/v2/").await.status(), StatusCode::NOT_FOUND);
    let r = c
        .req(reqwest::Method::POST, "/reg/v2/p/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert!(
        location(&r).starts_with("/reg/v2/p/blobs/uploads/"),
        "{}",
        location(&r)
    );

    let b = Berth::start_with(|root, addr| {
        format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n  host: https://registry.example.com\n")
    });
    let c = Client::new(&b);
    let r = c
        .req(reqwest::Method::POST, "/v2/p/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("https://registry.example.com/v2/p/blobs/uploads/"));

    // Behind a TLS-terminating proxy, with no http.host: X-Forwarded-*.
    let b = Berth::start();
    let c = Client::new(&b);
    let r = c
        .req(reqwest::Method::POST, "/v2/p/blobs/uploads/")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.example.com")
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("https://public.example.com/v2/p/blobs/uploads/"));
}

#[tokio::test]
async fn json_access_log_and_secret_warning() {
    let b = Berth::start_with(|root, addr| {
        format!("log:\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n")
    });
    let c = Client::new(&b);
    c.get("/v2/").await;
    c.get("/v2/x/manifests/missing").await;
    drop(c);
    let mut b = b;
    let _ = b.child.kill();
    let _ = b.child.wait();
    let logs = b.logs();
    assert!(logs.contains("http.secret is not set"), "{logs}");
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "berth::access")
        .collect();
    let miss = access
        .iter()
        .find(|v| v["path"] == "/v2/x/manifests/missing")
        .expect("access line");
    assert_eq!(miss["status"], 404);
    assert_eq!(miss["method"], "GET");
    assert!(
        miss["request_id"].is_string()
            && miss["duration_ms"].is_number()
            && miss["bytes"].is_number()
    );
}

#[tokio::test]
async fn read_only_maintenance_mode_from_env() {
    let writer = Berth::start();
    let (digest, _) = Client::new(&writer).push_image("ro/repo", "v1", "ro").await;
    let ro = Berth::start_on_root(
        &writer.root,
        &[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")],
    );
    let c = Client::new(&ro);
    let before = crate::client::snapshot(&ro);
    assert_eq!(
        c.get("/v2/ro/repo/manifests/v1").await.status(),
        StatusCode::OK,
        "reads unaffected"
    );
    assert_eq!(
        c.head(&format!("/v2/ro/repo/manifests/{digest}"))
            .await
            .status(),
        StatusCode::OK
    );
    let r = c
        .req(reqwest::Method::POST, "/v2/ro/repo/blobs/uploads/")
        .send()
        .await
        .unwrap();
    crate::client::expect_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .req(
            reqwest::Method::DELETE,
            &format!("/v2/ro/repo/manifests/{digest}"),
        )
        .send()
        .await
        .unwrap();
    crate::client::expect_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .req(reqwest::Method::PUT, "/v2/ro/repo/manifests/v2")
        .header("content-type", crate::client::OCI_MANIFEST)
        .body("{}")
        .send()
        .await
        .unwrap();
    crate::client::expect_error(r, 405, "UNSUPPORTED").await;
    assert_eq!(crate::client::snapshot(&ro), before, "nothing written");
}
