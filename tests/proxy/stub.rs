//! An "upstream" that answers every request with one fixed status and
//! headers: a registry that rate-limits everyone.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    thread,
};

pub struct Stub {
    pub addr: String,
}

impl Stub {
    pub fn start(status: &str, headers: &[(&str, &str)]) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut answer = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in headers {
            answer += &format!("{k}: {v}\r\n");
        }
        answer += "Content-Length: 0\r\nConnection: close\r\n\r\n";
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                // The request's head, then the fixed answer.
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        Stub { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A webhook receiver: keeps every request body it is sent, answers 200.
pub struct Recorder {
    pub addr: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let kept = kept.clone();
                thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        // One request: its head, then Content-Length bytes.
                        let mut len = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if !reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        kept.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&body).into_owned());
                        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                        if conn.write_all(ok.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Recorder { addr, bodies }
    }

    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Every event received so far (the envelopes' `events`, in order).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .flat_map(|v| v["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}
