//! Large reads on S3 as ranged GetObjects fetched ahead
//! (src/storage/s3/readahead.rs), on Garage, with 1 MiB chunks so a few MiB
//! show it: the bytes are exact whatever the range, with or without budget
//! for the chunks ahead and through broken connections; each chunk is one
//! request; and an object replaced mid-read ends the read with an error,
//! never with another version's bytes.

use std::time::Duration;

use berth::{
    config::S3Config,
    storage::{budget::BufferBudget, s3::S3Driver, StorageDriver},
};
use bytes::Bytes;
use futures::StreamExt;

use crate::common::{
    faults::{FaultProxy, Faults},
    noise::xorshift_bytes,
    s3::S3Server,
};

const MIB: u64 = 1024 * 1024;
/// An object of 5 whole chunks and a bit.
const SIZE: u64 = 5 * MIB + 7;

/// Reads of 2 MiB or more in 1 MiB chunks, 3 ahead.
fn split_reads(cfg: S3Config) -> S3Config {
    S3Config {
        readaheadthresholdsize: 2 * MIB,
        readaheadchunksize: MIB,
        readaheadmaxconcurrency: 3,
        ..cfg
    }
}

/// The bytes of `[offset, offset + len)`, or the error that ended the read
/// with what came before it.
async fn read(
    d: &S3Driver,
    path: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, (std::io::Error, usize)> {
    let mut body = d.reader(path, offset, Some(len)).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => return Err((e, got.len())),
        }
    }
    Ok(got)
}

/// Every range a client might ask for, checked byte by byte, with the S3
/// requests each read cost.
async fn check_ranges(d: &S3Driver, data: &[u8]) -> Vec<u64> {
    let mut costs = Vec::new();
    for (at, len) in [
        (0, SIZE),
        (MIB / 2 + 3, 3 * MIB),
        (SIZE - 2 * MIB - 1, 2 * MIB + 1),
        (7, MIB + 1),
    ] {
        let before = d.requests();
        let got = read(d, "/big", at, len).await.unwrap();
        costs.push(d.requests() - before);
        let (at, len) = (at as usize, len as usize);
        assert!(got == data[at..at + len], "bytes {at}+{len} differ");
    }
    costs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_are_chunked_byte_exact_with_and_without_budget() {
    let s = S3Server::garage();
    let data = xorshift_bytes(41, SIZE as usize);
    let d = S3Driver::new(&split_reads(s.config("/ahead")), true).unwrap();
    d.put_content("/big", Bytes::from(data.clone()))
        .await
        .unwrap();
    // One GetObject per chunk a range touches; under the threshold, one.
    let expected = vec![6, 3, 3, 1];
    assert_eq!(check_ranges(&d, &data).await, expected);

    // No room in the budget: every chunk streams in its turn, same bytes,
    // same requests, and no chunk was held (the 7-byte tail fits).
    let starved = BufferBudget::new(64 * 1024, Duration::from_millis(10));
    let d = S3Driver::new(&split_reads(s.config("/ahead")), true)
        .unwrap()
        .with_buffer_budget(starved.clone());
    assert_eq!(check_ranges(&d, &data).await, expected);
    assert!(starved.high_water() < MIB, "{}", starved.high_water());

    // Read-ahead off: one GetObject per read, as before it existed.
    let cfg = S3Config {
        readaheadmaxconcurrency: 0,
        ..split_reads(s.config("/ahead"))
    };
    let d = S3Driver::new(&cfg, true).unwrap();
    assert_eq!(check_ranges(&d, &data).await, vec![1, 1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_ahead_hold_budget_and_give_it_back() {
    let s = S3Server::garage();
    let data = xorshift_bytes(42, SIZE as usize);
    let budget = BufferBudget::new(64 * MIB, Duration::from_secs(1));
    let d = S3Driver::new(&split_reads(s.config("/held")), true)
        .unwrap()
        .with_buffer_budget(budget.clone());
    d.put_content("/big", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert!(read(&d, "/big", 0, SIZE).await.unwrap() == data);
    // Chunks were fetched ahead (3 ahead and the one being sent at most) ...
    let peak = budget.high_water();
    assert!((MIB..=4 * MIB).contains(&peak), "peak {peak}");
    // ... and all of it is free again once the read is over.
    assert_eq!(budget.available(), budget.total());

    // A client that goes away mid-read gives the room back too.
    let mut body = d.reader("/big", 0, Some(SIZE)).await.unwrap();
    body.next().await.unwrap().unwrap();
    drop(body);
    assert_eq!(budget.available(), budget.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_resume_through_broken_connections() {
    let s = S3Server::garage();
    let data = xorshift_bytes(43, SIZE as usize);
    let direct = S3Driver::new(&s.config("/broken"), true).unwrap();
    direct
        .put_content("/big", Bytes::from(data.clone()))
        .await
        .unwrap();
    let proxy = FaultProxy::start(
        &s.endpoint,
        Faults {
            reset: 0.3,
            ..Faults::none(11)
        },
    );
    let cfg = S3Config {
        regionendpoint: proxy.url(),
        maxretries: 10,
        ..split_reads(s.config("/broken"))
    };
    let d = S3Driver::new(&cfg, true).unwrap();
    for _ in 0..3 {
        check_ranges(&d, &data).await;
    }
    let [requests, _, _, resets, _] = proxy.counts.get();
    assert!(resets >= 3, "{resets} resets in {requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_mid_read_ends_the_read_without_its_bytes() {
    let s = S3Server::garage();
    let old = xorshift_bytes(44, 8 * MIB as usize);
    let new = xorshift_bytes(45, 8 * MIB as usize);
    let d = S3Driver::new(&split_reads(s.config("/replaced")), true).unwrap();
    d.put_content("/obj", Bytes::from(old.clone()))
        .await
        .unwrap();
    let mut body = d.reader("/obj", 0, Some(8 * MIB)).await.unwrap();
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    d.put_content("/obj", Bytes::from(new)).await.unwrap();
    // Chunks 5.. are planned only as earlier ones are taken: after the
    // replacement, so their `If-Match` fails.
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the read of a replaced object ran to its end");
    assert!(got.len() < old.len() && got == old[..got.len()]);
}
