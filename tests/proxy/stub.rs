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
        Stub::serve(status, headers, 0)
    }

    /// Every GET answered with `status` and a chunked body of `len` bytes
    /// (no Content-Length to refuse it by): an upstream that sends far more
    /// than anything it serves may be.
    pub fn endless(status: &str, headers: &[(&str, &str)], len: usize) -> Stub {
        Stub::serve(status, headers, len)
    }

    fn serve(status: &str, headers: &[(&str, &str)], body: usize) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut head = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "Connection: close\r\n";
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let head = head.clone();
                thread::spawn(move || {
                    // The request's head, then the fixed answer.
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    let mut get = false;
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line == "\r\n" {
                            break;
                        }
                        get |= line.starts_with("GET ");
                        line.clear();
                    }
                    if body == 0 || !get {
                        let _ =
                            conn.write_all(format!("{head}Content-Length: 0\r\n\r\n").as_bytes());
                        return;
                    }
                    if conn
                        .write_all(format!("{head}Transfer-Encoding: chunked\r\n\r\n").as_bytes())
                        .is_err()
                    {
                        return;
                    }
                    let piece = vec![b' '; 64 * 1024];
                    let mut sent = 0;
                    while sent < body {
                        let n = piece.len().min(body - sent);
                        let framed =
                            [format!("{n:x}\r\n").as_bytes(), &piece[..n], b"\r\n"].concat();
                        if conn.write_all(&framed).is_err() {
                            return; // the client stopped reading: the point
                        }
                        sent += n;
                    }
                    let _ = conn.write_all(b"0\r\n\r\n");
                });
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
