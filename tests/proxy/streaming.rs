//! A first pull of a blob streams to its client while the mirror is still
//! fetching it, and every client pulling it meanwhile follows the same
//! fetch (one that leaves early stops nothing): the upstream's body is held
//! in the middle (tests/proxy/gate.rs) and the clients already have bytes.

use crate::{
    common::{
        files_under,
        http::{block_on, client},
        noise::xorshift_bytes,
        Berth,
    },
    gate::Gate,
    shared::{gets, push_blob, MIB},
    support::*,
};

#[test]
fn a_first_pull_streams_while_the_blob_is_fetched_and_one_fetch_serves_all() {
    let upstream = Berth::start();
    let layer = xorshift_bytes(7, 16 * MIB);
    let digest = push_blob(&upstream, "big/app", &layer);
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();

    // The upstream's answers stop after 4 MiB until the gate opens.
    let gate = Gate::start(&upstream.addr, 4 * MIB as u64);
    let m = Berth::start_with(|root, addr| {
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: mirror\nproxy:\n  remoteurl: {}\n",
            gate.url()
        )
    });
    let url = m.url(&format!("/v2/big/app/blobs/{digest}"));
    let stored = || {
        files_under(&m.root)
            .iter()
            .any(|f| f.contains(&hex) && f.ends_with("/data"))
    };

    block_on(async {
        let c = client();
        let mut first = c.get(&url).send().await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.content_length(), Some(16 * MIB as u64));
        let mut a = Vec::new();
        while a.len() < MIB {
            a.extend_from_slice(&first.chunk().await.unwrap().expect("body ended early"));
        }
        // A second client, while the fetch is held: it follows the same one.
        let mut second = c.get(&url).send().await.unwrap();
        assert_eq!(second.status(), 200);
        let mut b = second.chunk().await.unwrap().expect("no bytes").to_vec();
        assert!(!b.is_empty());
        // A third that reads a little and goes away stops nothing.
        let mut third = c.get(&url).send().await.unwrap();
        assert!(!third.chunk().await.unwrap().expect("no bytes").is_empty());
        drop(third);
        assert!(
            a.len() < 16 * MIB,
            "the whole blob came through a closed gate"
        );
        assert!(!stored(), "stored before the upstream sent it all");

        gate.open();
        while let Some(piece) = first.chunk().await.unwrap() {
            a.extend_from_slice(&piece);
        }
        while let Some(piece) = second.chunk().await.unwrap() {
            b.extend_from_slice(&piece);
        }
        assert!(a == layer, "the first client got other bytes");
        assert!(b == layer, "the second client got other bytes");
    });
    // Stored once verified, served from storage from then on.
    let r = get(&url, Auth::None);
    assert_eq!(r.status, 200);
    assert_eq!(sha256(&r.body), digest);
    assert!(stored());
    let fetches = gets(&upstream, &format!("/v2/big/app/blobs/{digest}"));
    assert_eq!(fetches, 1, "upstream GETs of the blob");
}
