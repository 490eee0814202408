//! The Azure driver against Azurite: the shared suite, writers resumed by
//! another driver instance (another replica), and a `berth` process pushing
//! and pulling through it.

use berth::storage::{layout, testsuite, StorageDriver, StorageError};
use bytes::Bytes;
use futures::StreamExt;

use crate::common::{azurite::Azurite, http::sha256, noise::xorshift_bytes, Berth};

const MIB: usize = 1024 * 1024;

/// Deterministic bytes that differ at every offset (a misplaced block shows).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    xorshift_bytes(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, len)
}

async fn read_all(d: &dyn StorageDriver, path: &str) -> Vec<u8> {
    let mut s = d.reader(path, 0, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn azure_driver_passes_the_suite() {
    let az = Azurite::start();
    // Under a root directory, as distribution's `rootdirectory` puts it.
    let d = az.driver("suite", "/berth/root").await;
    testsuite::run_all(&d).await;
    // Every name the suite wrote lies under the root.
    let bare = az.driver("suite", "").await;
    assert_eq!(bare.list("/").await.unwrap(), ["/berth"]);
    assert_eq!(bare.list("/berth").await.unwrap(), ["/berth/root"]);
    assert!(bare
        .list("/berth/root")
        .await
        .unwrap()
        .contains(&"/berth/root/suite".to_string()));
}

#[tokio::test]
async fn azure_writer_resumes_across_instances() {
    let az = Azurite::start();
    let a = az.driver("resume", "").await;
    let b = az.driver("resume", "").await; // another replica: no shared state
    let p = "/docker/registry/v2/repositories/r/_uploads/u1/data";
    let parts: Vec<Vec<u8>> = (0..3).map(|i| noise(i, 6 * MIB)).collect();
    let whole: Vec<u8> = parts.concat();

    // Three PATCHes, alternating replicas; after each the data is readable at its size.
    let mut offset = 0u64;
    for (i, part) in parts.iter().enumerate() {
        let d: &dyn StorageDriver = if i % 2 == 0 { &a } else { &b };
        let mut w = d.writer(p, offset).await.unwrap();
        assert_eq!(w.size(), offset);
        // Uneven chunks, as a request body arrives.
        for c in part.chunks(1_000_003) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        offset = if i < 2 {
            w.close().await.unwrap()
        } else {
            w.commit().await.unwrap()
        };
        assert_eq!(offset, ((i + 1) * 6 * MIB) as u64);
        let other: &dyn StorageDriver = if i % 2 == 0 { &b } else { &a };
        assert_eq!(other.stat(p).await.unwrap().size, offset);
    }
    let got = read_all(&a, p).await;
    assert_eq!(got.len(), whole.len());
    assert!(got == whole, "content differs after resumed writes");

    // A retried PATCH at a block boundary (6 MiB) replaces what followed.
    let replacement = noise(9, 2 * MIB + 17);
    let mut w = b.writer(p, 6 * MIB as u64).await.unwrap();
    w.write(Bytes::from(replacement.clone())).await.unwrap();
    assert_eq!(w.close().await.unwrap(), (8 * MIB + 17) as u64);
    let expect = [&whole[..6 * MIB], &replacement[..]].concat();
    assert!(read_all(&a, p).await == expect, "boundary truncation");

    // An offset inside a block: the kept part is re-staged from the blob.
    let mid = 5 * MIB as u64 + 12_345;
    let tail = noise(10, 3 * MIB);
    let mut w = a.writer(p, mid).await.unwrap();
    assert_eq!(w.size(), mid);
    w.write(Bytes::from(tail.clone())).await.unwrap();
    w.commit().await.unwrap();
    let expect = [&whole[..mid as usize], &tail[..]].concat();
    let got = read_all(&b, p).await;
    assert!(got == expect, "mid-block truncation");
    // A ranged read across the splice.
    let mut s = b.reader(p, mid - 10, Some(20)).await.unwrap();
    let mut r = Vec::new();
    while let Some(c) = s.next().await {
        r.extend_from_slice(&c.unwrap());
    }
    assert_eq!(r, &expect[mid as usize - 10..mid as usize + 10]);

    // Past the end: refused, nothing changes.
    let size = expect.len() as u64;
    assert!(matches!(
        a.writer(p, size + 1).await.err().unwrap(),
        StorageError::InvalidOffset { .. }
    ));
    assert_eq!(b.stat(p).await.unwrap().size, size);

    // Two writers racing from the same state: the second commit fails loudly.
    let mut w1 = a.writer(p, size).await.unwrap();
    let mut w2 = b.writer(p, size).await.unwrap();
    w1.write(Bytes::from_static(b"first")).await.unwrap();
    w2.write(Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(w1.close().await.unwrap(), size + 5);
    assert!(w2.close().await.is_err(), "a stale writer must not commit");
    assert_eq!(&read_all(&b, p).await[size as usize..], b"first");

    // Resuming an object written in one piece (Put Blob, no blocks).
    let q = "/docker/registry/v2/repositories/r/_uploads/u2/data";
    a.put_content(q, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let mut w = b.writer(q, 4).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 7);
    assert_eq!(a.get_content(q).await.unwrap(), "0123abc");

    // Moving the result into place keeps it whole.
    let dest = "/docker/registry/v2/blobs/sha256/ab/abcd/data";
    a.rename(p, dest).await.unwrap();
    assert!(b.stat(p).await.unwrap_err().is_not_found());
    let mut moved = expect;
    moved.extend_from_slice(b"first");
    assert!(read_all(&b, dest).await == moved, "rename changed the data");
    a.rename(dest, dest).await.unwrap();
    assert!(
        read_all(&b, dest).await == moved,
        "renaming onto itself lost it"
    );
}

#[tokio::test]
async fn berth_pushes_and_pulls_through_azure() {
    let az = Azurite::start();
    let raw = az.driver("registry", "").await; // creates the container
    let storage = az.yaml("registry", "/berth");
    let berth = Berth::start_with(|_root, addr| {
        format!(
            "version: 0.1\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n"
        )
    });
    let http = crate::common::http::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let name = "team/app";

    // A layer pushed in three chunks.
    let layer = noise(42, 5 * MIB + 321);
    let layer_digest = sha256(&layer);
    let r = http
        .post(berth.url(&format!("/v2/{name}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", berth.logs());
    let mut location = r.headers()["location"].to_str().unwrap().to_string();
    let mut start = 0;
    for chunk in layer.chunks(2 * MIB) {
        let end = start + chunk.len() - 1;
        let url = if location.starts_with("http") {
            location.clone()
        } else {
            berth.url(&location)
        };
        let r = http
            .patch(url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        assert_eq!(r.headers()["range"].to_str().unwrap(), format!("0-{end}"));
        location = r.headers()["location"].to_str().unwrap().to_string();
        start = end + 1;
    }
    let url = if location.starts_with("http") {
        location.clone()
    } else {
        berth.url(&location)
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = http
        .put(format!("{url}{sep}digest={layer_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // A config blob in one request, then the manifest.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256(config);
    let r = http
        .post(berth.url(&format!("/v2/{name}/blobs/uploads/?digest={config_digest}")))
        .body(config.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}]
    }))
    .unwrap();
    let r = http
        .put(berth.url(&format!("/v2/{name}/manifests/v1")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Pull it all back.
    let r = http
        .get(berth.url(&format!("/v2/{name}/manifests/v1")))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        sha256(&manifest)
    );
    assert_eq!(r.bytes().await.unwrap(), manifest);
    // By default a blob GET redirects to a read-only SAS URL on the emulator.
    let r = http
        .get(berth.url(&format!("/v2/{name}/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let sas = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        sas.starts_with(&az.service_url()) && sas.contains("sig="),
        "{sas}"
    );
    let r = http.get(&sas).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == layer, "SAS download differs");
    let r = http
        .head(berth.url(&format!("/v2/{name}/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        layer.len().to_string()
    );

    // Another replica on the same storage, with redirects off, serves the bytes.
    let proxy = Berth::start_with(|_root, addr| {
        format!(
            "storage:\n{storage}  redirect:\n    disable: true\nhttp:\n  addr: {addr}\n  secret: test-secret\n"
        )
    });
    let r = http
        .get(proxy.url(&format!("/v2/{name}/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", proxy.logs());
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), layer.len());
    assert!(body == layer, "pulled layer differs");
    let r = http
        .get(proxy.url(&format!("/v2/{name}/blobs/{layer_digest}")))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &layer[1000..2000]);
    let r = http
        .get(berth.url(&format!("/v2/{name}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["tags"],
        serde_json::json!(["v1"])
    );

    // In the container, under the root, in distribution's layout; no upload left.
    let d: berth::registry::digest::Digest = layer_digest.parse().unwrap();
    let blob = format!("/berth{}", layout::blob_data(&d));
    assert_eq!(raw.stat(&blob).await.unwrap().size, layer.len() as u64);
    assert!(read_all(&raw, &blob).await == layer);
    let uploads = format!("/berth{}/_uploads", layout::repository(name));
    assert!(raw.list(&uploads).await.unwrap_err().is_not_found());
}
