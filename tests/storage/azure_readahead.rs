//! Large reads on Azure as ranged Gets fetched ahead
//! (src/storage/readahead.rs), on Azurite, with 1 MiB chunks: byte-exact
//! whatever the range, with or without budget for the chunks ahead, one Get
//! per chunk, and a blob replaced mid-read ends the read with an error,
//! never with the other version's bytes.

use std::time::Duration;

use berth::storage::{azure::AzureDriver, budget::BufferBudget, StorageDriver};
use bytes::Bytes;
use futures::StreamExt;

use crate::common::{azurite::Azurite, noise::xorshift_bytes};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 5 * MIB + 7;

/// A driver reading 2 MiB or more in 1 MiB chunks, 3 ahead.
async fn driver(az: &Azurite, container: &str, budget: Option<BufferBudget>) -> AzureDriver {
    let mut s = az.settings(container, "");
    s.read_ahead = (2 * MIB, MIB, 3);
    let d = AzureDriver::new(&s).unwrap();
    d.create_container().await.unwrap();
    match budget {
        Some(b) => d.with_buffer_budget(b),
        None => d,
    }
}

async fn read(d: &AzureDriver, path: &str, at: u64, len: u64) -> Result<Vec<u8>, usize> {
    let mut body = d.reader(path, at, Some(len)).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => return Err(got.len()),
        }
    }
    Ok(got)
}

/// Each range checked byte by byte, with the requests its read cost.
async fn check_ranges(d: &AzureDriver, data: &[u8]) -> Vec<u64> {
    let mut costs = Vec::new();
    for (at, len) in [(0, SIZE), (MIB / 2 + 3, 3 * MIB), (7, MIB + 1)] {
        let before = d.requests();
        let got = read(d, "/big", at, len).await.unwrap();
        costs.push(d.requests() - before);
        let (at, len) = (at as usize, len as usize);
        assert!(got == data[at..at + len], "bytes {at}+{len} differ");
    }
    costs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_azure_reads_are_chunked_byte_exact() {
    let az = Azurite::start();
    let data = xorshift_bytes(51, SIZE as usize);
    let d = driver(&az, "ahead", None).await;
    d.put_content("/big", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(check_ranges(&d, &data).await, vec![6, 3, 1]);
    // No room for chunks ahead: each streams in its turn, same bytes.
    let starved = BufferBudget::new(64 * 1024, Duration::from_millis(10));
    let d = driver(&az, "ahead", Some(starved.clone())).await;
    assert_eq!(check_ranges(&d, &data).await, vec![6, 3, 1]);
    assert!(starved.high_water() < MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_replaced_mid_read_ends_the_read_without_its_bytes() {
    let az = Azurite::start();
    let old = xorshift_bytes(52, 8 * MIB as usize);
    let d = driver(&az, "replaced", None).await;
    d.put_content("/obj", Bytes::from(old.clone()))
        .await
        .unwrap();
    let mut body = d.reader("/obj", 0, Some(8 * MIB)).await.unwrap();
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    d.put_content("/obj", Bytes::from(xorshift_bytes(53, 8 * MIB as usize)))
        .await
        .unwrap();
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
    assert!(failed, "the read of a replaced blob ran to its end");
    assert!(got.len() < old.len() && got == old[..got.len()]);
}
