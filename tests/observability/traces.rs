//! OpenTelemetry traces, received by a real OTLP/HTTP receiver (PyPI's
//! oteltap, installed by tests/run.sh), which prints every span it gets as
//! one JSON line: request spans continue the client's `traceparent`, storage
//! spans are their children, and the file config and OTEL_* env both work;
//! a collector that never answers holds up neither requests nor shutdown.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::Value;

use super::client::{sha256, Client};
use super::common::{free_port, Berth};

/// A running oteltap; the spans it printed so far.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

fn oteltap_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_OTELTAP") {
        return p.into();
    }
    let home = std::env::var("HOME").expect("HOME");
    PathBuf::from(home).join(".cache/berth/oteltap/bin/oteltap")
}

impl Receiver {
    fn start() -> Receiver {
        let bin = oteltap_bin();
        assert!(
            bin.exists(),
            "{} missing: tests/run.sh installs oteltap",
            bin.display()
        );
        let port = free_port();
        let mut child = Command::new(&bin)
            .args(["--port", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn oteltap");
        let stdout = child.stdout.take().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Listening") {
                    let _ = ready_tx.send(());
                } else if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("oteltap did not start listening");
        Receiver { child, port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Wait (bounded) until a span satisfying `pred` arrived; all spans so far.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if spans.iter().any(&pred) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} within 30 s; got {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn str_of<'a>(span: &'a Value, key: &str) -> &'a str {
    span[key].as_str().unwrap_or("")
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

#[tokio::test]
async fn request_spans_continue_traceparent_with_storage_spans_inside() {
    let rx = Receiver::start();
    let endpoint = rx.endpoint();
    // Configured by the standard environment alone; a short batch delay so
    // spans leave promptly.
    let b = Berth::start_with_env(
        |root, addr| {
            format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n")
        },
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let c = Client::new(&b);

    let blob = b"traced blob".to_vec();
    let digest = sha256(&blob);
    let r = c
        .req(
            Method::POST,
            &format!("/v2/traced/app/blobs/uploads/?digest={digest}"),
        )
        .header("traceparent", traceparent())
        .header("content-type", "application/octet-stream")
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // No traceparent: a trace of its own.
    let r = c.get("/v2/traced/app/manifests/missing").await;
    assert_eq!(r.status(), 404);

    let spans = rx.wait_for("for the manifest GET", |s| {
        str_of(s, "name") == "GET /v2/{name}/manifests/{reference}"
    });
    let push = spans
        .iter()
        .find(|s| str_of(s, "name") == "POST /v2/{name}/blobs/uploads/")
        .unwrap_or_else(|| panic!("no push span in {spans:#?}"));
    assert_eq!(str_of(push, "traceId"), TRACE_ID, "{push:#}");
    assert_eq!(str_of(push, "parentSpanId"), PARENT_ID, "{push:#}");
    assert_eq!(push["kind"], 2, "a server span: {push:#}");
    assert_eq!(
        attr(push, "http.response.status_code"),
        Some(&serde_json::json!({"intValue": "201"})),
        "{push:#}"
    );
    assert_eq!(
        attr(push, "http.route").and_then(|v| v["stringValue"].as_str()),
        Some("/v2/{name}/blobs/uploads/")
    );

    // The push wrote the blob and its link: storage spans under the request.
    let push_id = str_of(push, "spanId");
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| str_of(s, "parentSpanId") == push_id)
        .map(|s| str_of(s, "name"))
        .collect();
    assert!(
        children.contains(&"storage.Writer") && children.contains(&"storage.PutContent"),
        "storage spans under the push: {children:?}"
    );
    assert!(spans
        .iter()
        .filter(|s| str_of(s, "parentSpanId") == push_id)
        .all(|s| str_of(s, "traceId") == TRACE_ID));

    let get = spans
        .iter()
        .find(|s| str_of(s, "name") == "GET /v2/{name}/manifests/{reference}")
        .unwrap();
    assert_ne!(str_of(get, "traceId"), TRACE_ID);
    assert_eq!(str_of(get, "parentSpanId"), "", "a root span: {get:#}");

    // Background storage calls (upload purging) start no traces of their own.
    assert!(
        spans
            .iter()
            .filter(|s| str_of(s, "name").starts_with("storage."))
            .all(|s| !str_of(s, "parentSpanId").is_empty()),
        "orphan storage spans: {spans:#?}"
    );
}

#[tokio::test]
async fn config_file_sampling_ratio_zero_follows_only_sampled_parents() {
    let rx = Receiver::start();
    let endpoint = rx.endpoint();
    let b = Berth::start_with_env(
        move |root, addr| {
            format!(
                "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
                 tracing:\n  enabled: true\n  endpoint: {endpoint}\n  servicename: berth-test\n  samplingratio: 0.0\n"
            )
        },
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let c = Client::new(&b);
    // Unsampled (ratio 0, no parent): never exported.
    let r = c.get("/v2/sampled/app/tags/list").await;
    assert_eq!(r.status(), 404);
    // A sampled parent is followed whatever the ratio.
    let r = c
        .req(Method::GET, "/v2/")
        .header("traceparent", traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Spans are exported in the order they ended: once the second request's
    // span is in, the first one's would be too.
    let spans = rx.wait_for("for GET /v2/", |s| str_of(s, "name") == "GET /v2/");
    let base = spans
        .iter()
        .find(|s| str_of(s, "name") == "GET /v2/")
        .unwrap();
    assert_eq!(str_of(base, "traceId"), TRACE_ID);
    assert!(
        spans
            .iter()
            .all(|s| str_of(s, "name") != "GET /v2/{name}/tags/list"),
        "an unsampled request was exported: {spans:#?}"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_no_request_and_no_shutdown() {
    // Accepts connections and holds them without a byte of answer.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in blackhole.incoming().map_while(Result::ok) {
            held.push(conn);
        }
    });
    let mut b = Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             tracing:\n  enabled: true\n  endpoint: {endpoint}\n  timeout: 2s\n"
        )
    });
    let c = Client::new(&b);
    // Far more spans than one export batch: the exporter is stuck on the
    // first, so the queue fills and spans are dropped, not waited for.
    for i in 0..40u32 {
        let data = i.to_be_bytes();
        let d = c.push_blob("blackhole/app", &data).await;
        assert_eq!(sha256(&data), d);
        let r = c.get(&format!("/v2/blackhole/app/blobs/{d}")).await;
        assert_eq!(r.status(), 200);
    }
    // The final flush is bounded by `timeout`; allow generously more.
    let status = b.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {}", b.logs());
}

#[test]
fn tracing_config_is_validated() {
    for (yaml, key) in [
        ("tracing:\n  samplingratio: 1.5\n", "tracing.samplingratio"),
        ("tracing:\n  endpoint: collector:4318\n", "tracing.endpoint"),
        ("tracing:\n  timeout: soon\n", "tracing.timeout"),
    ] {
        let e = berth::config::Config::from_yaml(yaml)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{yaml}: {e}");
    }
}
