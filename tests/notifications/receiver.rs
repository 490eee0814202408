//! A webhook receiver on 127.0.0.1:0 (axum): every POST is recorded into a
//! channel with its headers and parsed body; the answer is 200 unless a
//! status was queued for it (`fail_next`).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use serde_json::Value;
use tokio::sync::mpsc;

/// One POST as the receiver saw it.
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Value,
    /// What the receiver answered.
    pub status: u16,
}

impl Delivery {
    /// The envelope's only event (Berth sends one per request, as distribution).
    pub fn event(&self) -> &Value {
        let events = self.body["events"].as_array().expect("events array");
        assert_eq!(events.len(), 1, "{}", self.body);
        &events[0]
    }
}

#[derive(Clone)]
struct Shared {
    tx: mpsc::UnboundedSender<Delivery>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Delivery>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = s.answers.lock().unwrap().pop_front().unwrap_or(200);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = s.tx.send(Delivery {
        headers,
        body,
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

fn app() -> (
    Router,
    mpsc::UnboundedReceiver<Delivery>,
    Arc<Mutex<VecDeque<u16>>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let answers = Arc::new(Mutex::new(VecDeque::new()));
    let app = Router::new()
        .route("/events", post(record))
        .with_state(Shared {
            tx,
            answers: answers.clone(),
        });
    (app, rx, answers)
}

impl Receiver {
    /// Plain HTTP.
    pub async fn start() -> Receiver {
        let (app, rx, answers) = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            rx,
            answers,
            task,
        }
    }

    /// HTTPS with this certificate and key (PEM), for `https://127.0.0.1:…`.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Receiver {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (app, rx, answers) = app();
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert_pem.as_bytes().to_vec(),
            key_pem.as_bytes().to_vec(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}/events", listener.local_addr().unwrap());
        let server = axum_server::from_tcp_rustls(listener, config).unwrap();
        let task = tokio::spawn(async move {
            server.serve(app.into_make_service()).await.unwrap();
        });
        Receiver {
            url,
            rx,
            answers,
            task,
        }
    }

    /// Answer the next POSTs with these statuses (then 200 again).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    /// The next POST, waiting at most 20 s.
    pub async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("no event within 20 s")
            .expect("receiver stopped")
    }

    /// A POST already received, if any (no waiting).
    pub fn try_next(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// The next event, with `action` and `target.repository` checked.
    pub async fn expect(&mut self, action: &str, repository: &str) -> Value {
        let d = self.next().await;
        let e = d.event().clone();
        assert_eq!(e["action"], action, "{e:#}");
        assert_eq!(e["target"]["repository"], repository, "{e:#}");
        e
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
