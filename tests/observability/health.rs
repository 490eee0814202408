//! `health:` checks against a real `berth`: the storage driver check fails
//! when the storage root breaks and recovers by itself, a file check drains
//! the replica while its file exists, a TCP check to a closed port fails
//! from the start, an HTTP check compares the status code and never shows
//! a password from its URI; `GET /` (liveness) stays 200 throughout.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::common::{free_port, wait_for_port, Berth};

/// Poll `url` (bounded) until it answers `want`; the last body.
async fn wait_status(url: &str, want: StatusCode) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = crate::common::http::get(url).await.unwrap();
        let got = r.status();
        let body = r.text().await.unwrap();
        if got == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: still {got} ({body}), want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(url: &str) -> StatusCode {
    crate::common::http::get(url).await.unwrap().status()
}

fn start(health: &str) -> (Berth, String) {
    let debug = format!("127.0.0.1:{}", free_port());
    let b = {
        let (debug, health) = (debug.clone(), health.to_string());
        Berth::start_with(move |root, addr| {
            format!(
                "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n  debug:\n    addr: {debug}\nhealth:\n{health}"
            )
        })
    };
    assert!(
        wait_for_port(&debug, Duration::from_secs(20)),
        "{}",
        b.logs()
    );
    (b, debug)
}

#[tokio::test]
async fn storage_check_fails_when_storage_breaks_and_recovers_by_itself() {
    let (b, debug) =
        start("  storagedriver:\n    enabled: true\n    interval: 100ms\n    threshold: 2\n");
    assert_eq!(status(&b.url("/health/storage")).await, StatusCode::OK);
    assert_eq!(status(&b.url("/v2/")).await, StatusCode::OK);
    assert_eq!(
        wait_status(&format!("http://{debug}/debug/health"), StatusCode::OK).await,
        "{}"
    );

    // Storage breaks: the root becomes a plain file, so every path under it
    // fails with ENOTDIR (not "not found").
    std::fs::create_dir_all(&b.root).unwrap();
    let aside = b.root.with_extension("aside");
    std::fs::rename(&b.root, &aside).unwrap();
    std::fs::write(&b.root, b"not a directory").unwrap();

    let body = wait_status(&b.url("/health/storage"), StatusCode::SERVICE_UNAVAILABLE).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{v}");
    assert!(
        v["errors"][0]["detail"]["storagedriver_filesystem"].is_string(),
        "{v}"
    );
    // The whole API is drained, as distribution's health handler does...
    assert_eq!(
        status(&b.url("/v2/")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        status(&b.url("/v2/any/manifests/latest")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // ...but liveness stays up, so the replica is not restarted for it.
    assert_eq!(status(&b.url("/")).await, StatusCode::OK);
    let r = crate::common::http::get(format!("http://{debug}/debug/health"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert!(v["storagedriver_filesystem"].is_string(), "{v}");

    // Storage comes back: the next check clears it, no restart needed.
    std::fs::remove_file(&b.root).unwrap();
    std::fs::rename(&aside, &b.root).unwrap();
    assert_eq!(
        wait_status(&b.url("/health/storage"), StatusCode::OK).await,
        "ok"
    );
    assert_eq!(status(&b.url("/v2/")).await, StatusCode::OK);
    let logs = b.logs();
    assert_eq!(logs.matches("health check failing").count(), 1, "{logs}");
    assert!(logs.contains("health check recovered"), "{logs}");
}

#[tokio::test]
async fn file_check_drains_while_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("drain");
    let (b, _debug) = start(&format!(
        "  file:\n    - file: {}\n      interval: 100ms\n",
        flag.display()
    ));
    assert_eq!(status(&b.url("/v2/")).await, StatusCode::OK);
    std::fs::write(&flag, b"").unwrap();
    let body = wait_status(&b.url("/v2/"), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("file exists"), "{body}");
    // No storage check configured: /health/storage asks storage itself, but
    // the drain switch covers it too.
    assert_eq!(
        status(&b.url("/health/storage")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    std::fs::remove_file(&flag).unwrap();
    wait_status(&b.url("/v2/"), StatusCode::OK).await;
}

#[tokio::test]
async fn tcp_check_to_a_closed_port_fails_from_the_start() {
    let closed = format!("127.0.0.1:{}", free_port());
    let (b, debug) = start(&format!(
        "  tcp:\n    - addr: {closed}\n      timeout: 500ms\n      interval: 1h\n      threshold: 1\n"
    ));
    // The first round runs before the listener opens: no healthy window.
    assert_eq!(
        status(&b.url("/v2/")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(status(&b.url("/")).await, StatusCode::OK);
    let v: Value = crate::common::http::get(format!("http://{debug}/debug/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v[&closed].as_str().unwrap_or("").contains("connection to"),
        "{v}"
    );
}

#[tokio::test]
async fn http_checks_compare_the_status_code() {
    // Both probe this Berth's own `GET /` (200, outside the 503 gate); the
    // first round runs before the listener serves, hence `threshold: 2`, and
    // the long timeout lets a queued probe wait for it.
    let b = Berth::start_with(|root, addr| {
        let check = |code: u16| {
            format!("    - uri: http://{addr}/?want={code}\n      statuscode: {code}\n      timeout: 5s\n      interval: 100ms\n      threshold: 2\n")
        };
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nhealth:\n  http:\n{}{}",
            check(200),
            check(204)
        )
    });
    let body = wait_status(&b.url("/v2/"), StatusCode::SERVICE_UNAVAILABLE).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let detail = v["errors"][0]["detail"].as_object().unwrap();
    assert_eq!(detail.len(), 1, "only the 204 check fails: {body}");
    let (name, reason) = detail.iter().next().unwrap();
    assert!(name.ends_with("/?want=204"), "{body}");
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("unexpected status: 200 OK"),
        "{body}"
    );
}

#[tokio::test]
async fn an_http_check_never_shows_the_password_in_its_uri() {
    // The 503 body names the failing checks to any client (as distribution's
    // does); an http check's name is its URI, which may carry credentials.
    let uri = format!("http://probe:s3cr3t-pw@127.0.0.1:{}/ping", free_port());
    let (b, debug) = start(&format!(
        "  http:\n    - uri: {uri}\n      timeout: 500ms\n      interval: 1h\n      threshold: 1\n"
    ));
    let body = wait_status(&b.url("/v2/"), StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body.contains("probe:***@127.0.0.1"), "{body}");
    let report = crate::common::http::get(format!("http://{debug}/debug/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [&body, &report, &b.logs()] {
        assert!(!text.contains("s3cr3t-pw"), "{text}");
    }
}

/// `berth healthcheck` with the config a running Berth was started with.
fn healthcheck(b: &Berth, extra: &[&str]) -> std::process::Output {
    let cfg = b.log.with_file_name("config.yml");
    std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("healthcheck")
        .args(extra)
        .arg(&cfg)
        .output()
        .unwrap()
}

#[tokio::test]
async fn healthcheck_command_follows_the_config_and_fails_when_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("drain");
    let flag_str = flag.display().to_string();
    // A prefix and an every-interface address, as in a container.
    let b = Berth::start_with(move |root, addr| {
        let port = addr.rsplit(':').next().unwrap();
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: :{port}\n  prefix: /reg/\n  secret: s\n\
             health:\n  file:\n    - file: {flag_str}\n      interval: 100ms\n"
        )
    });
    let ok = healthcheck(&b, &[]);
    assert!(ok.status.success(), "{ok:?}\n{}", b.logs());

    std::fs::write(&flag, b"").unwrap();
    wait_status(&b.url("/reg/v2/"), StatusCode::SERVICE_UNAVAILABLE).await;
    let drained = healthcheck(&b, &[]);
    assert_eq!(drained.status.code(), Some(1), "{drained:?}");
    assert!(
        String::from_utf8_lossy(&drained.stderr).contains("503"),
        "{drained:?}"
    );
    std::fs::remove_file(&flag).unwrap();
    wait_status(&b.url("/reg/v2/"), StatusCode::OK).await;
    assert!(healthcheck(&b, &[]).status.success());

    // Nothing listening there: fails too.
    let closed = format!("127.0.0.1:{}", free_port());
    let none = healthcheck(&b, &["--addr", &closed]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
}

#[test]
fn health_config_is_validated() {
    for (yaml, key) in [
        (
            "health:\n  storagedriver:\n    enabled: true\n    interval: 0s\n",
            "health.storagedriver.interval",
        ),
        (
            "health:\n  file:\n    - interval: 1s\n",
            "health.file[0].file",
        ),
        (
            "health:\n  http:\n    - uri: localhost\n",
            "health.http[0].uri",
        ),
        ("health:\n  tcp:\n    - addr: ''\n", "health.tcp[0].addr"),
    ] {
        let e = berth::config::Config::from_yaml(yaml)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{yaml}: {e}");
    }
}
