//! The S3 driver through the fault-injecting proxy (tests/common/faults.rs)
//! in front of Garage: bodies that break mid-way are resumed byte-exact, the
//! requests that are safe to repeat are retried `maxretries` times, and the
//! two that are not (Create/CompleteMultipartUpload) only when the store
//! refused them outright. Requests here are sequential, so the proxy's
//! seeded faults fall on the same requests in every run.

use berth::{
    config::{s3::MIN_PART, S3Config},
    storage::{s3::S3Driver, StorageDriver, StorageError},
};
use bytes::Bytes;
use futures::StreamExt;

use crate::common::{
    faults::{FaultProxy, Faults},
    noise::xorshift_bytes,
    s3::S3Server,
};

const MIB: usize = 1024 * 1024;

/// A driver that reaches `s` through `proxy`, with 5 MiB parts.
fn through(s: &S3Server, proxy: &FaultProxy, maxretries: u64) -> S3Driver {
    let cfg = S3Config {
        regionendpoint: proxy.url(),
        maxretries,
        chunksize: MIN_PART,
        ..s.config("/faults")
    };
    S3Driver::new(&cfg, false).unwrap()
}

async fn read(d: &S3Driver, path: &str, offset: u64, len: Option<u64>) -> Vec<u8> {
    let mut body = d.reader(path, offset, len).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_are_resumed_byte_exact() {
    let s = S3Server::garage();
    let big = xorshift_bytes(91, 12 * MIB);
    let small = xorshift_bytes(92, 3 * MIB + 5);
    let direct = S3Driver::new(&s.config("/faults"), false).unwrap();
    direct
        .put_content("/big", Bytes::from(big.clone()))
        .await
        .unwrap();
    direct
        .put_content("/small", Bytes::from(small.clone()))
        .await
        .unwrap();

    let proxy = FaultProxy::start(
        &s.endpoint,
        Faults {
            reset: 0.4,
            ..Faults::none(7)
        },
    );
    let d = through(&s, &proxy, 10);
    for _ in 0..3 {
        assert!(read(&d, "/big", 0, None).await == big);
        let (at, len) = (MIB + 3, 5 * MIB);
        assert!(read(&d, "/big", at as u64, Some(len as u64)).await == big[at..at + len]);
        assert!(d.get_content("/small").await.unwrap() == small);
    }
    let [requests, _, _, resets, _] = proxy.counts.get();
    assert!(resets >= 3, "{resets} resets in {requests} requests");
}

/// A write whose multipart upload the store fails at its first POST
/// (CreateMultipartUpload): 6 MiB with 5 MiB parts.
async fn multipart_write(d: &S3Driver) -> Result<u64, StorageError> {
    let mut w = d.writer("/upload", 0).await?;
    w.write(Bytes::from(xorshift_bytes(93, 6 * MIB))).await?;
    w.commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_refused_requests_that_are_not_idempotent_are_retried() {
    let s = S3Server::garage();

    // A 500 on a POST: the store may have created the upload; never again.
    let proxy = FaultProxy::start(
        &s.endpoint,
        Faults {
            internal: 1.0,
            only: Some("POST"),
            ..Faults::none(1)
        },
    );
    let e = multipart_write(&through(&s, &proxy, 3)).await.unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
    assert_eq!(
        proxy.counts.get()[2],
        1,
        "one CreateMultipartUpload, not retried"
    );
    drop(proxy);

    // A 503 SlowDown: refused outright, so retried, maxretries times.
    let proxy = FaultProxy::start(
        &s.endpoint,
        Faults {
            slowdown: 1.0,
            only: Some("POST"),
            ..Faults::none(1)
        },
    );
    let e = multipart_write(&through(&s, &proxy, 3)).await.unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
    assert_eq!(proxy.counts.get()[1], 4, "the first attempt and 3 retries");
    drop(proxy);

    // A 500 on an idempotent request (the parts' PUTs): retried.
    let proxy = FaultProxy::start(
        &s.endpoint,
        Faults {
            internal: 1.0,
            only: Some("PUT"),
            ..Faults::none(1)
        },
    );
    let e = multipart_write(&through(&s, &proxy, 2)).await.unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
    assert_eq!(proxy.counts.get()[2], 3, "the first attempt and 2 retries");
}
