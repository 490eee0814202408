//! The pull-through cache with real clients: the Docker engine pulling
//! Docker Hub names through Berth as its `registry-mirrors` entry and a
//! `proxy.mirrors` prefix by its own name, and
//! skopeo copying a multi-arch index through a `proxy.mirrors` prefix. The
//! upstream ("Docker Hub") is another Berth on 127.0.0.1.

use super::{
    daemons::Dockerd,
    images::{build, import_base},
    oci::multi_arch,
    skopeo::{pull_layout, push_layout},
};
use crate::common::Berth;

fn mirror_of(upstream: &Berth, proxy: &str) -> Berth {
    Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: m\n\
             proxy:\n{}",
            proxy.replace("{upstream}", &upstream.url(""))
        )
    })
}

/// Access-log lines of `b` for GETs whose path contains `part`.
fn gets(b: &Berth, part: &str) -> usize {
    b.logs()
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(part))
        .count()
}

#[test]
fn docker_pulls_through_berth_as_its_registry_mirror_and_by_prefix() {
    let hub = Berth::start();
    let mirror = mirror_of(&hub, "  remoteurl: {upstream}\n");
    let d = Dockerd::start_with_mirrors(&[&mirror.url("")]);
    let work = tempfile::tempdir().unwrap();
    import_base(&d, work.path(), "mirror-base:1");
    let at_hub = format!("{}/library/mirrortest:v1", hub.addr);
    let image = build(
        &d,
        work.path(),
        "mirror-base:1",
        &at_hub,
        &[("greeting.txt", "pulled through the mirror\n")],
    );
    d.ok(&["push", &at_hub]);

    for round in 0..2 {
        d.remove_all_images();
        // A Docker Hub name: the daemon asks the mirror for library/mirrortest.
        d.ok(&["pull", "mirrortest:v1"]);
        assert_eq!(
            d.inspect("mirrortest:v1", "{{.Id}}"),
            image.id,
            "round {round}"
        );
    }
    // Both pulls went to the mirror ...
    assert!(
        gets(&mirror, "/v2/library/mirrortest/blobs/") >= 2 * 3,
        "{}",
        mirror.logs()
    );
    // ... which fetched each blob (config, base layer, COPY layer) once.
    assert_eq!(
        gets(&hub, "/v2/library/mirrortest/blobs/"),
        3,
        "{}",
        hub.logs()
    );

    // The prefix form, pulled by its own name from a second mirror.
    let prefixed = mirror_of(
        &hub,
        "  mirrors:\n    - prefix: hub\n      remoteurl: {upstream}\n",
    );
    d.remove_all_images();
    let name = format!("{}/hub/library/mirrortest:v1", prefixed.addr);
    d.ok(&["pull", &name]);
    assert_eq!(d.inspect(&name, "{{.Id}}"), image.id);
    assert_eq!(
        gets(&hub, "/v2/library/mirrortest/blobs/"),
        6,
        "{}",
        hub.logs()
    );
}

#[test]
fn skopeo_copies_a_multi_arch_index_through_a_mirror_prefix() {
    let upstream = Berth::start();
    let work = tempfile::tempdir().unwrap();
    let src = multi_arch(&work.path().join("src"), "v1", "mirror");
    push_layout(
        &src.layout.dir,
        "v1",
        &format!("docker://{}/multi/app:v1", upstream.addr),
    );
    let mirror = mirror_of(
        &upstream,
        "  mirrors:\n    - prefix: up\n      remoteurl: {upstream}\n",
    );
    let copied = pull_layout(
        &format!("docker://{}/up/multi/app:v1", mirror.addr),
        &work.path().join("copy"),
        "v1",
    );
    // Byte for byte what was pushed upstream: the index and every blob.
    let index = std::fs::read(
        copied
            .dir
            .join("blobs/sha256")
            .join(src.index_digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    assert_eq!(index, src.index_bytes);
    for img in &src.images {
        let hex = img.manifest.strip_prefix("sha256:").unwrap();
        assert!(
            copied.dir.join("blobs/sha256").join(hex).exists(),
            "{}",
            img.arch
        );
    }
    // The same copy again is served by the cache: no new manifest or blob
    // GETs upstream (tags are checked with a HEAD).
    let before = gets(&upstream, "/v2/multi/app/");
    pull_layout(
        &format!("docker://{}/up/multi/app:v1", mirror.addr),
        &work.path().join("again"),
        "v1",
    );
    assert_eq!(gets(&upstream, "/v2/multi/app/"), before);
}
