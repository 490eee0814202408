//! Repository names outside the spec's grammar never reach storage.

use std::io::{Read, Write};

use reqwest::Method;

use crate::client::{expect_error, snapshot, Client};
use crate::common::Berth;

/// Send a request line verbatim (HTTP clients normalise `..` away).
fn raw_status(b: &Berth, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(&b.addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b.addr
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[tokio::test]
async fn invalid_names_are_refused_before_storage() {
    let b = Berth::start();
    let c = Client::new(&b);
    c.push_blob("valid/name", b"x").await;
    let before = snapshot(&b);
    let long = "a".repeat(256);
    for name in [
        "UPPER/case",
        "a%2e%2e/b",
        "-lead",
        "trail-",
        "dou..ble",
        long.as_str(),
    ] {
        let r = c
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "NAME_INVALID").await;
        expect_error(
            c.get(&format!("/v2/{name}/tags/list")).await,
            400,
            "NAME_INVALID",
        )
        .await;
        expect_error(
            c.get(&format!("/v2/{name}/manifests/latest")).await,
            400,
            "NAME_INVALID",
        )
        .await;
    }
    for path in [
        "/v2/../../etc/blobs/uploads/",
        "/v2/a/../b/blobs/uploads/",
        "/v2/a/./b/manifests/x",
    ] {
        let (status, body) = raw_status(&b, "POST", path);
        assert!(
            status == 400 || status == 404 || status == 405,
            "{path}: {body}"
        );
        assert!(status != 400 || body.contains("NAME_INVALID"), "{body}");
    }
    assert_eq!(snapshot(&b), before, "no refused name reached storage");
}
