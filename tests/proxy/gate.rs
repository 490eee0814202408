//! A TCP relay in front of an upstream that stops passing the upstream's
//! bytes on after a set amount until the test opens it: a blob fetch the
//! test holds in the middle, to see what a mirror does meanwhile.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    thread,
};

pub struct Gate {
    pub addr: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

struct State {
    open: bool,
    /// Bytes passed from the upstream, over all connections.
    passed: u64,
    hold_after: u64,
}

impl Gate {
    /// Relay to `upstream` (`host:port`), holding once `hold_after` bytes
    /// came back from it.
    pub fn start(upstream: &str, hold_after: u64) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new((
            Mutex::new(State {
                open: false,
                passed: 0,
                hold_after,
            }),
            Condvar::new(),
        ));
        let (st, upstream) = (state.clone(), upstream.to_string());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pipe(c2, s2, None));
                let st = st.clone();
                thread::spawn(move || pipe(server, client, Some(st)));
            }
        });
        Gate { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Let everything through from now on.
    pub fn open(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().open = true;
        cv.notify_all();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, gate: Option<Arc<(Mutex<State>, Condvar)>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(g) = &gate {
            let (m, cv) = &**g;
            let mut s = m.lock().unwrap();
            while !s.open && s.passed >= s.hold_after {
                s = cv.wait(s).unwrap();
            }
            s.passed += n as u64;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
