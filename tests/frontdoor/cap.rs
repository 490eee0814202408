//! `http.maxconnections`: past the cap a connection is answered 503 (plain
//! HTTP) and closed, the server's descriptors stay bounded however many
//! more arrive, and a slot freed is used again.

use std::time::Duration;

use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};

use super::support::{self, Ended};

const CAP: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_connections_get_503_and_a_freed_slot_is_used_again() {
    // No idle timeout: the held connections stay until the test drops them.
    let berth = support::start(&format!(
        "  maxconnections: {CAP}\n  timeouts:\n    idle: 0\n"
    ));
    let pid = berth.child.id();
    assert!(
        berth.logs().contains(&format!("max_connections={CAP}")),
        "{}",
        berth.logs()
    );
    let fds_before = support::open_fds(pid);

    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(&berth.addr).await.unwrap();
        let answer = support::get(&mut s, "/v2/").await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        held.push(s);
    }

    // One more: a 503 a client can retry on, and the connection closed.
    let mut extra = TcpStream::connect(&berth.addr).await.unwrap();
    extra
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: berth\r\n\r\n")
        .await
        .unwrap();
    let Ended::Closed(answer) =
        support::read_until_closed(&mut extra, Duration::from_secs(60)).await
    else {
        panic!("the connection over the cap was kept open");
    };
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(lower.contains("connection: close"), "{answer}");
    assert!(lower.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"code\":\"UNAVAILABLE\""), "{answer}");

    // A real client sees the same.
    let r = crate::common::http::get(format!("http://{}/v2/", berth.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");

    // A crowd past the cap that never reads or closes: every one is turned
    // away, and the server's descriptors stay within the cap plus the
    // bounded refusals in progress.
    let crowd_size = 300;
    let mut crowd = JoinSet::new();
    for _ in 0..crowd_size {
        let addr = berth.addr.clone();
        crowd.spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            support::read_until_closed(&mut s, Duration::from_secs(60)).await
        });
    }
    let mut fds_peak = 0;
    let mut turned_away = 0;
    while !crowd.is_empty() {
        fds_peak = fds_peak.max(support::open_fds(pid));
        if let Ok(Some(ended)) =
            tokio::time::timeout(Duration::from_millis(20), crowd.join_next()).await
        {
            match ended.unwrap() {
                Ended::Closed(answer) => {
                    assert!(
                        answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
                        "{answer}"
                    );
                    turned_away += 1;
                }
                Ended::StillOpen(_) => panic!("a connection over the cap was kept open"),
            }
        }
    }
    assert_eq!(turned_away, crowd_size);
    // The held connections, and 64 refusals at most being written at once
    // (src/server/listener.rs).
    let bound = fds_before + CAP + 64 + 8;
    assert!(
        fds_peak <= bound,
        "{fds_peak} descriptors open while refusing (at most {bound} expected)"
    );

    // Free one slot: the next request is served (the server notices the
    // close at once; poll, bounded).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = crate::common::http::get(format!("http://{}/v2/", berth.addr))
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never used again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connections held all along are still served.
    for s in &mut held {
        let answer = support::get(s, "/v2/").await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
}
