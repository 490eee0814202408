//! The S3 driver through the fault-injecting proxy (tests/common/faults.rs)
//! in front of Garage: bodies that break mid-way are resumed byte-exact, the
//! requests that are safe to repeat are retried `maxretries` times, and the
//! two that are not (Create/CompleteMultipartUpload) only when the store
//! refused them outright. Requests here are sequential, so the proxy's
//! seeded faults fall on the same requests in every run.

use std::time::Duration;

use berth::{
    config::{s3::MIN_PART, S3Config},
    storage::{
        budget::BufferBudget,
        s3::{S3Driver, PARTS_IN_FLIGHT},
        StorageDriver, StorageError,
    },
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

/// A write of one 5 MiB part, so a multipart upload (its POST,
/// CreateMultipartUpload, comes first) with a single UploadPart: parts go
/// out concurrently, and the counts below are of one request's attempts.
async fn multipart_write(d: &S3Driver) -> Result<u64, StorageError> {
    let mut w = d.writer("/upload", 0).await?;
    w.write(Bytes::from(xorshift_bytes(93, MIN_PART as usize)))
        .await?;
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

/// Polls `cond` (a count of the proxy's) until it holds, at most 20 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

/// A writer's parts go out while it fills the next ones: with the proxy
/// holding every UploadPart until the test lets them through, the writes go
/// on until `PARTS_IN_FLIGHT` parts wait at once, each with budget of its
/// own. With budget for one part beyond the writer's 5 MiB base, parts go
/// one at a time and the budget is never exceeded. The blob reads back
/// byte-exact, and all the budget comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_in_flight_while_the_next_fills_within_the_budget() {
    let s = S3Server::garage();
    let part = MIN_PART as usize;
    let body = xorshift_bytes(94, (PARTS_IN_FLIGHT + 2) * part + 3);
    for (room, in_flight) in [(PARTS_IN_FLIGHT + 2, PARTS_IN_FLIGHT), (1, 1)] {
        let proxy = FaultProxy::start(
            &s.endpoint,
            Faults {
                hold: Some("partNumber="),
                ..Faults::none(1)
            },
        );
        let budget = BufferBudget::new(((1 + room) * part) as u64, Duration::from_secs(1));
        let d = through(&s, &proxy, 0).with_buffer_budget(budget.clone());
        let path = format!("/pipelined-{room}");
        let mut w = d.writer(&path, 0).await.unwrap();
        let chunks: Vec<Bytes> = body.chunks(MIB).map(Bytes::copy_from_slice).collect();
        let writing = tokio::spawn(async move {
            for c in chunks {
                w.write(c).await?;
            }
            w.commit().await
        });
        until("parts held at the proxy", || {
            proxy.counts.held() == in_flight as u64
        })
        .await;
        proxy.open_gate();
        assert_eq!(writing.await.unwrap().unwrap(), body.len() as u64);
        assert!(read(&d, &path, 0, None).await == body, "bytes differ");
        assert_eq!(proxy.counts.peak(), in_flight as u64, "parts at once");
        assert_eq!(
            budget.high_water(),
            ((1 + in_flight) * part) as u64,
            "the base and a part's room per part in flight"
        );
        assert_eq!(budget.available(), budget.total(), "all given back");
    }
}

/// A part that fails (every UploadPart answered 500, no retries) while later
/// ones are in flight fails the writer, whose multipart upload is aborted
/// once its other parts have ended: nothing is left in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_fails_the_writer_and_its_upload_is_aborted() {
    let s = S3Server::garage();
    let proxy = FaultProxy::start(
        &s.endpoint,
        Faults {
            internal: 1.0,
            only: Some("PUT"),
            ..Faults::none(1)
        },
    );
    let d = through(&s, &proxy, 0);
    let body = xorshift_bytes(95, (PARTS_IN_FLIGHT + 2) * MIN_PART as usize);
    let mut w = d.staged_writer("/failing").await.unwrap().unwrap();
    let written = async {
        for c in body.chunks(MIB) {
            w.write(Bytes::copy_from_slice(c)).await?;
        }
        w.commit().await
    };
    let e = written.await.unwrap_err();
    assert!(matches!(e, StorageError::Unavailable(_)), "{e}");
    d.settled().await;
    let uploads = s
        .client()
        .list_multipart_uploads()
        .bucket(&s.bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 0, "the upload was aborted");
    assert!(d.stat("/failing").await.unwrap_err().is_not_found());
    assert!(proxy.counts.get()[2] >= 1, "parts were refused");
}
