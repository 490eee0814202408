//! Berth as a cluster: three replicas sharing `http.secret`, one store and
//! one Redis, behind nginx. Every scenario runs once on S3 (s3s-fs) and once
//! on Azure Blob (Azurite), each test with a cluster of its own.
//!
//! Needs nginx, redis-server, dockerd/docker (Debian packages), s3s-fs and
//! Azurite (`tests/run.sh` installs them all), and root for dockerd.

mod common;

#[path = "cluster/chaos.rs"]
mod chaos;
#[path = "cluster/client.rs"]
mod client;
#[path = "cluster/engine.rs"]
mod engine;
#[path = "cluster/failures.rs"]
mod failures;
#[path = "cluster/faults.rs"]
mod faults;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/nginx.rs"]
mod nginx;
#[path = "cluster/replicas.rs"]
mod replicas;
#[path = "cluster/retries.rs"]
mod retries;

// The Docker engine harness of tests/clients.rs; only part of it is used here.
#[allow(dead_code)]
#[path = "clients/daemons.rs"]
mod daemons;
#[allow(dead_code)]
#[path = "clients/images.rs"]
mod images;
#[allow(dead_code)]
#[path = "clients/oci.rs"]
mod oci;
#[allow(dead_code)]
#[path = "clients/support.rs"]
mod support;

/// One module per backend, each with every scenario as its own test.
/// `lost_answer` takes `#[ignore]` where that scenario hits a known bug.
macro_rules! scenarios {
    ($backend:ident, $variant:expr, lost_answer: $(#[$lost:meta])*) => {
        mod $backend {
            use crate::harness::Backend;

            #[test]
            fn docker_push_pull_through_the_balancer() {
                crate::engine::docker_push_pull($variant);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn chunked_upload_hops_replicas() {
                crate::replicas::chunked_upload_hops_replicas($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn read_after_write_across_replicas() {
                crate::replicas::read_after_write_across_replicas($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_pushes_of_the_same_layers() {
                crate::failures::concurrent_pushes_of_the_same_layers($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn replica_killed_mid_push() {
                crate::failures::replica_killed_mid_push($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn blob_delete_is_seen_by_every_replica() {
                crate::replicas::blob_delete_is_seen_by_every_replica($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$lost])*
            async fn retried_chunk_after_a_lost_answer() {
                crate::retries::retried_chunk_after_a_lost_answer($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn delete_racing_a_read() {
                crate::retries::delete_racing_a_read($variant).await;
            }
        }
    };
}

scenarios!(s3, Backend::S3, lost_answer:);

/// Faults of the store (S3 only: the fault proxy speaks S3).
mod s3_faults {
    #[test]
    fn docker_push_pull_at_ten_percent_faults() {
        crate::faults::docker_push_pull_at_ten_percent_faults();
    }

    #[test]
    fn exhausted_retries_answer_503() {
        crate::faults::exhausted_retries_answer_503();
    }

    /// About 90 s: replicas killed, Redis restarted, GC, under load.
    #[test]
    fn chaos_run() {
        crate::chaos::chaos_run();
    }
}
scenarios!(azure, Backend::Azure, lost_answer:);
