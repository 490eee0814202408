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
