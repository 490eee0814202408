//! `http.draintimeout`: on SIGTERM new connections are refused, a request
//! in flight may finish, and a client that hangs is cut off once the drain
//! time is up — the process then exits by itself, successfully.

use std::time::Duration;

use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::support::{self, Ended};
use crate::{client::Client, common::process};

/// A PATCH of 10 bytes with the first 5 sent, on its own connection.
async fn half_a_patch(addr: &str, upload: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\n12345"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_for_draintimeout_then_cuts_a_hung_client() {
    // Only the drain may end the hung PATCH: no stall timeout.
    let mut berth = support::start("  draintimeout: 3s\n  timeouts:\n    stall: 0\n");
    let c = Client::new(&berth);
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let loc = c.start_upload("drain/app").await;
        uploads.push(loc[loc.find("/v2/").unwrap()..].to_string());
    }
    let mut hung = half_a_patch(&berth.addr, &uploads[0]).await;
    let mut finishing = half_a_patch(&berth.addr, &uploads[1]).await;
    // Both requests are in the handler, waiting for their bodies, once the
    // server has begun writing their data (the upload's data file exists).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while walk_files(&berth.root)
        .iter()
        .filter(|p| p.ends_with("/data"))
        .count()
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", berth.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SAFETY: kill(2) on the child this test started.
    assert_eq!(
        unsafe { libc::kill(berth.child.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !berth.logs().contains("shutting down") {
        assert!(tokio::time::Instant::now() < deadline, "{}", berth.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No new connections (poll: the listener closes right after the line).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&berth.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The request in flight finishes, and its connection is closed after it.
    finishing.write_all(b"67890").await.unwrap();
    let answer = support::read_response(&mut finishing).await;
    assert!(answer.starts_with("HTTP/1.1 202 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // The hung one is cut when the drain time is up; then the process ends.
    let ended = support::read_until_closed(&mut hung, Duration::from_secs(120)).await;
    assert_eq!(
        ended,
        Ended::Closed(String::new()),
        "the hung client:\n{}",
        berth.logs()
    );
    let status = process::wait_with_deadline(&mut berth.child, Duration::from_secs(60));
    let status = status.unwrap_or_else(|| panic!("still running:\n{}", berth.logs()));
    assert!(status.success(), "{status}:\n{}", berth.logs());
    assert!(
        berth.logs().contains("http.draintimeout passed"),
        "{}",
        berth.logs()
    );
}

/// Every file under `dir`, as paths.
fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}
