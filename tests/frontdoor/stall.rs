//! `http.timeouts.stall`: a PATCH whose client stops sending ends, and its
//! upload resumes at the offset the last good chunk stored — on every
//! driver, whatever the failed PATCH had started to write. Nothing of it is
//! visible as a blob.

use rand::RngCore;
use reqwest::{Method, StatusCode};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::support::{self, Ended};
use crate::{
    client::{location, sha256, Client},
    common::{azurite::Azurite, s3::S3Server, Berth},
};

const STALL: &str = "2s";

fn start(storage: &str) -> Berth {
    Berth::start_with(|root, addr| {
        // Blob GETs served by Berth, not redirected to the store.
        let storage = format!(
            "{}  redirect:\n    disable: true\n",
            storage.replace("{root}", root)
        );
        format!(
            "version: 0.1\nstorage:\n{storage}http:\n  addr: {addr}\n  secret: test-secret\n  timeouts:\n    stall: {STALL}\n"
        )
    })
}

/// Path and query of a Location URL.
fn path_of(url: &str) -> &str {
    &url[url.find("/v2/").expect("a registry URL")..]
}

/// `first` bytes in a good PATCH, then a PATCH for the rest that sends
/// `stalled` bytes and stops; then the spec's resume flow finishes it.
async fn stalled_patch_is_resumable(berth: &Berth, first: usize, stalled: usize, rest: usize) {
    let c = Client::new(berth);
    let repo = "stall/app";
    let mut data = vec![0u8; first + rest];
    rand::rng().fill_bytes(&mut data);
    let digest = sha256(&data);

    let start = c.start_upload(repo).await;
    let r = c
        .req(Method::PATCH, &start)
        .header("content-type", "application/octet-stream")
        .body(data[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let after_first = location(&r);

    // The stalled PATCH: its head promises the rest, part of it comes, then
    // nothing.
    let mut s = TcpStream::connect(&berth.addr).await.unwrap();
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {rest}\r\nContent-Range: {first}-{}\r\n\r\n",
        path_of(&after_first),
        berth.addr,
        first + rest - 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data[first..first + stalled]).await.unwrap();
    let Ended::Closed(answer) =
        support::read_until_closed(&mut s, std::time::Duration::from_secs(120)).await
    else {
        panic!("a stalled PATCH was never ended:\n{}", berth.logs());
    };
    // An answer, if the client is still there to read one, is the client's
    // fault (4xx), never a server error or a success.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );

    // Nothing half-written is visible.
    let r = c.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Resume as the spec says: ask where the upload stands, go on from there.
    let r = c.get(path_of(&after_first)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", berth.logs());
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let stored: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert!(
        (first..=first + stalled).contains(&stored),
        "Range {range} after {first} good and {stalled} stalled bytes"
    );
    let r = c
        .req(Method::PATCH, &location(&r))
        .header("content-type", "application/octet-stream")
        .body(data[stored..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", berth.logs());
    let done = location(&r);
    let sep = if done.contains('?') { '&' } else { '?' };
    let r = c
        .req(Method::PUT, &format!("{done}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", berth.logs());
    let pulled = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(pulled.status(), StatusCode::OK);
    assert!(pulled.bytes().await.unwrap() == data, "the blob as pushed");
}

const MIB: usize = 1 << 20;

#[tokio::test]
async fn a_stalled_patch_ends_and_its_upload_resumes_on_the_filesystem() {
    let berth = start("  filesystem:\n    rootdirectory: {root}\n");
    stalled_patch_is_resumable(&berth, 64 * 1024, 300 * 1024, MIB).await;
}

/// On S3 the stalled PATCH gets far enough to upload a part of its own.
#[tokio::test]
async fn a_stalled_patch_ends_and_its_upload_resumes_on_s3() {
    let s3 = S3Server::s3s_fs();
    let storage = format!("{}    chunksize: 5242880\n", s3.yaml("/berth"));
    let berth = start(&storage);
    stalled_patch_is_resumable(&berth, 6 * MIB, 7 * MIB, 8 * MIB).await;
}

/// On Azure the stalled PATCH stages a block of its own.
#[tokio::test]
async fn a_stalled_patch_ends_and_its_upload_resumes_on_azure() {
    let az = Azurite::start();
    az.driver("registry", "").await; // creates the container
    let berth = start(&az.yaml("registry", "/berth"));
    stalled_patch_is_resumable(&berth, 6 * MIB, 7 * MIB, 8 * MIB).await;
}
