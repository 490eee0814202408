//! The shared driver suite, run against every driver compiled in.

#[path = "storage/azure.rs"]
mod azure;
#[path = "storage/azure_direct.rs"]
mod azure_direct;
#[path = "storage/azure_readahead.rs"]
mod azure_readahead;
#[path = "storage/azure_redirect.rs"]
mod azure_redirect;
#[path = "storage/catalog.rs"]
mod catalog;
mod common;
#[path = "storage/limits.rs"]
mod limits;
#[path = "storage/s3.rs"]
mod s3;
#[path = "storage/s3_direct.rs"]
mod s3_direct;
#[path = "storage/s3_faults.rs"]
mod s3_faults;
#[path = "storage/s3_readahead.rs"]
mod s3_readahead;

use berth::storage::{filesystem::FilesystemDriver, inmemory::InMemoryDriver, testsuite};

#[tokio::test]
async fn filesystem_driver_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::run_all(&FilesystemDriver::new(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn inmemory_driver_passes_the_suite() {
    testsuite::run_all(&InMemoryDriver::new()).await;
}
