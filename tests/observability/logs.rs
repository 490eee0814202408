//! `log.fields` on every line, in text and in JSON, against a real `berth`.

use serde_json::Value;

use super::client::Client;
use super::common::Berth;

fn start(formatter: &str) -> Berth {
    let formatter = formatter.to_string();
    Berth::start_with(move |root, addr| {
        format!(
            "log:\n  formatter: {formatter}\n  fields:\n    service: registry\n    environment: \"staging eu\"\n    level: L9\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n"
        )
    })
}

#[tokio::test]
async fn text_lines_end_with_the_static_fields() {
    let b = start("text");
    let r = Client::new(&b).get("/v2/").await;
    assert_eq!(r.status(), 200);
    let logs = b.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains("berth listening")),
        "{logs}"
    );
    assert!(lines.iter().any(|l| l.contains("berth::access")), "{logs}");
    for l in &lines {
        // Sorted by key; a value with a space is quoted.
        assert!(
            l.ends_with(r#" environment="staging eu" level=L9 service=registry"#),
            "{l}"
        );
    }
}

#[tokio::test]
async fn json_lines_carry_the_static_fields_as_members() {
    let b = start("json");
    let r = Client::new(&b).get("/v2/").await;
    assert_eq!(r.status(), 200);
    let logs = b.logs();
    let mut access = 0;
    for l in logs.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["service"], "registry", "{l}");
        assert_eq!(v["environment"], "staging eu", "{l}");
        // A static field named like a built-in one is renamed, as logrus does.
        assert_eq!(v["fields.level"], "L9", "{l}");
        assert_ne!(v["level"], "L9", "{l}");
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        if v["target"] == "berth::access" {
            access += 1;
            assert_eq!(v["path"], "/v2/", "{l}");
            assert_eq!(v["status"], 200, "{l}");
            assert_eq!(v["bytes"], 2, "the body `{{}}`: {l}");
        }
    }
    assert_eq!(access, 1, "{logs}");
}
