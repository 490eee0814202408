//! A Berth cluster on 127.0.0.1: one shared store (Garage or Azurite), one
//! Redis for the blob-descriptor cache, three replicas sharing `http.secret`,
//! and nginx in front. Every process stops when the `Cluster` is dropped.

use berth::storage::{layout, Driver, StorageDriver};

use super::nginx::Nginx;
use crate::common::{
    azurite::Azurite,
    faults::{FaultProxy, Faults},
    redis::RedisServer,
    s3::S3Server,
    Berth,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    S3,
    Azure,
}

enum Store {
    S3(S3Server),
    /// Held only so that dropping the cluster stops it.
    Azure(#[allow(dead_code)] Azurite),
}

/// `rootdirectory` of every replica: keys live under `berth/` in the bucket.
const ROOT: &str = "/berth";
const CONTAINER: &str = "registry";
/// Stands for a replica's listen address in `Cluster::template`.
const ADDR: &str = "@ADDR@";
pub const REPLICAS: usize = 3;

/// How a cluster is set up, beyond the backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve blob GETs by 307 to the store (Berth's default) rather than
    /// streaming them through Berth and nginx.
    pub redirect: bool,
    /// S3 only: the replicas reach the store through a fault-injecting proxy.
    pub faults: Option<Faults>,
    /// `storage.s3.maxretries` of the replicas (Berth's default if None).
    pub maxretries: Option<u32>,
}

pub struct Cluster {
    // Fields drop in this order: the balancer first, the store last.
    pub nginx: Nginx,
    replicas: Vec<Berth>,
    pub redis: RedisServer,
    /// Between the replicas and the store, when `Options::faults` asked.
    pub proxy: Option<FaultProxy>,
    store: Store,
    /// The `storage:` section (driver only) every replica uses.
    storage: String,
    /// A replica's whole config, with `ADDR` for its listen address.
    template: String,
}

impl Cluster {
    /// `redirect`: serve blob GETs by 307 to the store (Berth's default) or
    /// stream them through Berth and nginx.
    pub fn start(backend: Backend, redirect: bool) -> Cluster {
        Self::start_with(
            backend,
            Options {
                redirect,
                ..Options::default()
            },
        )
    }

    pub fn start_with(backend: Backend, opts: Options) -> Cluster {
        let redirect = opts.redirect;
        let (store, storage) = match backend {
            Backend::S3 => {
                let s = S3Server::garage();
                let yaml = s.yaml(ROOT);
                (Store::S3(s), yaml)
            }
            Backend::Azure => {
                let az = Azurite::start();
                // The container must exist. The driver is async and this
                // may run inside a test's runtime: use a thread of its own.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap()
                            .block_on(async {
                                az.driver(CONTAINER, "").await;
                            })
                    })
                    .join()
                    .unwrap()
                });
                let yaml = az.yaml(CONTAINER, ROOT);
                (Store::Azure(az), yaml)
            }
        };
        // The replicas' own storage section: through the proxy, if any.
        let mut replica_storage = storage.clone();
        let proxy = match (&store, opts.faults) {
            (Store::S3(s), Some(f)) => {
                let p = FaultProxy::start(&s.endpoint, f);
                replica_storage = replica_storage.replace(&s.endpoint, &p.url());
                Some(p)
            }
            (Store::Azure(_), Some(_)) => panic!("the fault proxy speaks S3 only"),
            (_, None) => None,
        };
        if let Some(n) = opts.maxretries {
            assert_eq!(backend, Backend::S3, "maxretries is an S3 key");
            replica_storage += &format!("    maxretries: {n}\n");
        }
        let redis = RedisServer::start();
        // Every replica's config, its listen address left as ADDR.
        let template = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n{replica_storage}  delete:\n    enabled: true\n  redirect:\n    disable: {}\n  cache:\n    blobdescriptor: redis\nredis:\n  addr: {}\nhttp:\n  addr: {ADDR}\n  secret: one-secret-for-every-replica\n",
            !redirect,
            redis.addr()
        );
        let replicas: Vec<Berth> = (0..REPLICAS)
            .map(|_| Berth::start_with(|_root, addr| template.replace(ADDR, addr)))
            .collect();
        let addrs: Vec<String> = replicas.iter().map(|b| b.addr.clone()).collect();
        let nginx = Nginx::start(&addrs);
        Cluster {
            nginx,
            replicas,
            redis,
            proxy,
            store,
            storage,
            template,
        }
    }

    /// Start replica `i` again (after `kill`) on its old address, which
    /// nginx still names.
    pub fn restart(&mut self, i: usize) {
        let addr = self.replicas[i].addr.clone();
        let config = self.template.replace(ADDR, &addr);
        // The config names the address; the harness's own pick goes unused.
        let mut b = Berth::start_with(|_, _| config);
        assert!(
            b.logs().contains(&format!("berth listening addr={addr}")),
            "{}",
            b.logs()
        );
        b.addr = addr;
        self.replicas[i] = b;
    }

    /// Kill Redis and start an empty one on the same port.
    pub fn restart_redis(&mut self) {
        self.redis.restart();
    }

    /// `berth garbage-collect` on the replicas' config, with `args`.
    pub fn garbage_collect(&self, args: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, self.template.replace(ADDR, "127.0.0.1:0")).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("garbage-collect")
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .unwrap()
    }

    /// `http://<balancer>`.
    pub fn balancer(&self) -> String {
        self.nginx.url("")
    }

    /// `http://<replica i>`, bypassing the balancer.
    pub fn replica(&self, i: usize) -> String {
        self.replicas[i].url("")
    }

    pub fn replica_addr(&self, i: usize) -> &str {
        &self.replicas[i].addr
    }

    /// SIGKILL replica `i`: no draining, no cleanup, as a crash would.
    pub fn kill(&mut self, i: usize) {
        let b = &mut self.replicas[i];
        b.child.kill().unwrap();
        b.child.wait().unwrap();
    }

    /// Every replica's log and nginx's error log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (i, b) in self.replicas.iter().enumerate() {
            all += &format!("--- replica {i} ({})\n{}", b.addr, b.logs());
        }
        all + "--- nginx\n" + &self.nginx.error_log()
    }

    /// A driver on the shared store, to look behind the replicas.
    pub fn driver(&self) -> Driver {
        let cfg = berth::config::Config::from_yaml(&format!("storage:\n{}", self.storage)).unwrap();
        // An Azure driver's reqwest takes the process-default TLS provider.
        berth::config::tls::install_default_provider();
        berth::server::build_driver(&cfg).unwrap()
    }

    /// Every object under `prefix` (a driver path such as
    /// `/docker/registry/v2/blobs`), as driver paths. On S3 this is the raw
    /// key listing, so the driver's `<key>.berth-upload` state objects, which
    /// its `list` hides, show up too.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        match &self.store {
            Store::S3(s) => {
                let root = ROOT.trim_start_matches('/');
                let mut pages = s
                    .client()
                    .list_objects_v2()
                    .bucket(&s.bucket)
                    .prefix(format!("{root}{prefix}/"))
                    .into_paginator()
                    .send();
                let mut keys = Vec::new();
                while let Some(page) = pages.next().await {
                    for o in page.unwrap().contents() {
                        keys.push(o.key().unwrap()[root.len()..].to_string());
                    }
                }
                keys.sort();
                keys
            }
            Store::Azure(_) => {
                let d = self.driver();
                let mut out = Vec::new();
                walk(d.as_ref(), prefix, &mut out).await;
                out.sort();
                out
            }
        }
    }

    /// Objects left under `repo`'s `_uploads`: a finished upload must leave
    /// none.
    pub async fn upload_leftovers(&self, repo: &str) -> Vec<String> {
        self.objects(&format!("{}/_uploads", layout::repository(repo)))
            .await
    }

    /// Parts of unfinished multipart uploads in the S3 store; None on Azure.
    pub async fn s3_parts(&self) -> Option<usize> {
        match &self.store {
            Store::S3(s) => Some(s.pending_parts().await),
            Store::Azure(_) => None,
        }
    }
}

/// Depth-first listing through the driver: a path that lists is a directory.
async fn walk(d: &dyn StorageDriver, dir: &str, out: &mut Vec<String>) {
    let children = match d.list(dir).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => return,
        Err(e) => panic!("list {dir}: {e}"),
    };
    for child in children {
        match d.list(&child).await {
            Ok(_) => Box::pin(walk(d, &child, out)).await,
            Err(e) if e.is_not_found() => out.push(child),
            Err(e) => panic!("list {child}: {e}"),
        }
    }
}
