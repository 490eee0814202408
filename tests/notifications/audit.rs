//! The audit log: one line per push, mount and delete naming who, what and
//! from where, as JSON or text.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{
    client::{image_manifest, sha256, Client, OCI_MANIFEST},
    client_as,
    common::Berth,
    htpasswd, send,
};

/// The JSON log lines of target `berth::audit`.
fn audit_lines(b: &Berth) -> Vec<Value> {
    b.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "berth::audit")
        .collect()
}

#[tokio::test]
async fn audit_lines_name_who_what_and_from_where() {
    let dir = tempfile::tempdir().unwrap();
    // No endpoints: the audit log does not depend on webhooks.
    let auth = htpasswd(dir.path(), "bob", "pw");
    let b = Berth::start_with(move |root, addr| {
        format!(
            "log:\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: s\n{auth}"
        )
    });
    let c = client_as(&b, "bob", "pw");
    let config = br#"{"os":"linux"}"#;
    let config_d = c.push_blob("audit/app", config).await;
    let layer_d = c.push_blob("audit/app", b"layer").await;
    let manifest =
        serde_json::to_vec(&image_manifest(&config_d, config.len(), &layer_d, 5)).unwrap();
    let manifest_d = sha256(&manifest);
    let r = c
        .req(Method::PUT, "/v2/audit/app/manifests/latest")
        .header("content-type", OCI_MANIFEST)
        .header("x-forwarded-for", "203.0.113.9")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let put_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // Pulls are not audited.
    send(
        &c,
        Method::GET,
        "/v2/audit/app/manifests/latest",
        StatusCode::OK,
    )
    .await;
    let r = send(
        &c,
        Method::DELETE,
        &format!("/v2/audit/app/manifests/{manifest_d}"),
        StatusCode::ACCEPTED,
    )
    .await;
    let delete_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    // Written before the response: no waiting needed.
    let lines = audit_lines(&b);
    let summary: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("push".to_string(), config_d.clone()),
            ("push".to_string(), layer_d.clone()),
            ("push".to_string(), manifest_d.clone()),
            ("delete".to_string(), manifest_d.clone()),
            // The tag that pointed at it, as its own delete (distribution's events too).
            ("delete".to_string(), String::new()),
        ],
        "{lines:#?}"
    );
    let m = &lines[2];
    assert_eq!(m["message"], "audit");
    assert_eq!(m["repository"], "audit/app");
    assert_eq!(m["tag"], "latest");
    assert_eq!(m["media_type"], OCI_MANIFEST);
    assert_eq!(m["size"], manifest.len());
    assert_eq!(m["actor"], "bob");
    assert_eq!(m["request_id"], put_id.as_str());
    // The TCP peer is the client; the header is kept, as sent, beside it.
    assert!(
        m["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{m}"
    );
    assert_eq!(m["forwarded_for"], "203.0.113.9");
    assert!(lines[0].get("forwarded_for").is_none(), "{}", lines[0]);
    assert_eq!(lines[3]["request_id"], delete_id.as_str());
    assert_eq!(lines[3]["actor"], "bob");
    assert_eq!(lines[4]["tag"], "latest");
    assert_eq!(lines[4]["request_id"], delete_id.as_str());
}

#[tokio::test]
async fn anonymous_pushes_are_audited_as_anonymous_in_text_logs_too() {
    let b = Berth::start();
    let c = Client::new(&b);
    let d = c.push_blob("anon/app", b"x").await;
    let logs = b.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("berth::audit"))
        .unwrap_or_else(|| panic!("no audit line: {logs}"));
    assert!(line.contains("anonymous"), "{line}");
    assert!(line.contains(&d), "{line}");
    assert!(
        line.contains("action=\"push\"") || line.contains("action=push"),
        "{line}"
    );
}

#[tokio::test]
async fn a_request_id_sent_by_the_client_cannot_forge_fields_in_text_lines() {
    // Text lines print the request id bare: a client's X-Request-Id with a
    // space could append `actor=…` to its own audit (and access) line.
    let b = Berth::start();
    let c = Client::new(&b);
    let data = b"forged";
    let d = sha256(data);
    let r = c
        .req(
            Method::POST,
            &format!("/v2/forge/app/blobs/uploads/?digest={d}"),
        )
        .header("x-request-id", "r1 actor=mallory")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!id.contains(' '), "{id}");
    let logs = b.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("berth::audit"))
        .unwrap_or_else(|| panic!("no audit line: {logs}"));
    assert!(!logs.contains("mallory"), "{logs}");
    assert!(line.contains(&id), "{line}");
}
