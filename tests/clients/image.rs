//! The container image: the Dockerfile's `prebuilt` stage packaging this
//! test's own berth binary, run by a private Docker engine with `--network
//! host`, then a docker push and pull through it.
//!
//! No base image can be pulled here, so `debian:bookworm-slim` is made
//! locally: `debootstrap --variant=minbase bookworm` from deb.debian.org,
//! slimmed, tarred once into ~/.cache/berth/images/ and `docker import`ed
//! under the name the Dockerfile uses. The runtime stage's `apt-get install
//! ca-certificates` reaches deb.debian.org too (the build runs with
//! `--network host`).
//!
//! The `builder` stage (rust image, `cargo build --release --locked`) is not
//! built here: no rust image can be pulled. `builder_stage_runs_the_ci_build`
//! checks what it runs and what the runtime copies from it.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::{
    daemons::Dockerd,
    images::{build, import_base, push},
    support::{http, require_tool, run, run_ok, stored_blobs},
};
use crate::common::free_port;

/// The name the Dockerfile's `DEBIAN_IMAGE` defaults to.
pub const DEBIAN_IMAGE: &str = "debian:bookworm-slim";
/// The non-root uid/gid the image runs as (the Helm chart assumes it too).
const BERTH_UID: u32 = 65532;

/// The repository root (the build context's source).
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A minimal Debian bookworm rootfs as a tar, made once and kept in
/// ~/.cache/berth/images/ so later runs only import it.
fn debian_rootfs_tar() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let cache = Path::new(&home).join(".cache/berth/images");
    let tarball = cache.join("debian-bookworm-minbase.tar");
    if tarball.is_file() {
        return tarball;
    }
    require_tool("debootstrap", "debootstrap");
    fs::create_dir_all(&cache).unwrap();
    // Beside the cache, so the final rename is atomic: a parallel run sees
    // either no tarball or a whole one.
    let work = tempfile::tempdir_in(&cache).unwrap();
    let root = work.path().join("root");
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg("http://deb.debian.org/debian");
    run_ok(&mut debootstrap, Duration::from_secs(900));
    // What debian:bookworm-slim leaves out too: apt's downloads and indexes,
    // docs, man pages, locales (about 200 MB down to 75).
    for dir in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ] {
        let dir = root.join(dir);
        fs::remove_dir_all(&dir).unwrap();
        fs::create_dir(&dir).unwrap();
    }
    fs::create_dir(root.join("var/lib/apt/lists/partial")).unwrap();
    let part = work.path().join("rootfs.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*"])
        .args(["--exclude=./sys/*", "-cf"])
        .arg(&part)
        .arg(".");
    run_ok(&mut tar, Duration::from_secs(300));
    fs::rename(&part, &tarball).unwrap();
    tarball
}

/// `docker import` the rootfs as `debian:bookworm-slim`, with the PATH and
/// CMD the official image sets.
pub fn import_debian(d: &Dockerd) {
    let tarball = debian_rootfs_tar();
    d.ok(&[
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        r#"CMD ["bash"]"#,
        tarball.to_str().unwrap(),
        DEBIAN_IMAGE,
    ]);
}

/// Build the Dockerfile's `prebuilt` target as `tag`, packaging this test's
/// berth binary. The context holds what .dockerignore lets through that the
/// stage reads, plus the binary, stripped of debug info (the debug build
/// is ~370 MB, and the vfs driver copies each layer whole).
pub fn build_prebuilt(d: &Dockerd, work: &Path, tag: &str) {
    let ctx = work.join("image-context");
    fs::create_dir_all(ctx.join("deploy/docker")).unwrap();
    for f in ["Dockerfile", ".dockerignore"] {
        fs::copy(repo().join(f), ctx.join(f)).unwrap();
    }
    for f in fs::read_dir(repo().join("deploy/docker")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), ctx.join("deploy/docker").join(f.file_name())).unwrap();
    }
    let mut strip = Command::new("objcopy");
    strip
        .arg("--strip-debug")
        .arg(env!("CARGO_BIN_EXE_berth"))
        .arg(ctx.join("berth"));
    run_ok(&mut strip, Duration::from_secs(120));
    run_ok(
        &mut d.cli(&[
            "build",
            "--network",
            "host",
            "--target",
            "prebuilt",
            "--build-arg",
            "BERTH_BINARY=berth",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ]),
        Duration::from_secs(600),
    );
}

/// A container removed (with its anonymous volumes) when dropped, before the
/// engine stops, so no mount outlives the test.
pub struct Container<'a> {
    pub d: &'a Dockerd,
    pub name: String,
}

impl Container<'_> {
    /// `docker run -d --network host --name NAME ARGS…`.
    pub fn run<'a>(d: &'a Dockerd, name: &str, args: &[&str]) -> Container<'a> {
        let mut all = vec!["run", "-d", "--network", "host", "--name", name];
        all.extend(args);
        d.ok(&all);
        Container {
            d,
            name: name.to_string(),
        }
    }

    pub fn inspect(&self, format: &str) -> String {
        self.d
            .ok(&["container", "inspect", "--format", format, &self.name])
            .stdout
            .trim()
            .to_string()
    }

    pub fn logs(&self) -> String {
        run(
            &mut self.d.cli(&["logs", "--tail", "40", &self.name]),
            Duration::from_secs(30),
        )
        .all()
    }

    /// Poll until `GET url` is `status`, at most 60 s; the container's logs on failure.
    pub fn wait_for(&self, url: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http("GET", url, &[]).status != status {
            assert!(
                self.inspect("{{.State.Running}}") == "true",
                "{} exited:\n{}",
                self.name,
                self.logs()
            );
            assert!(
                Instant::now() < deadline,
                "{url} not {status} in 60s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        run(
            &mut self.d.cli(&["rm", "-f", "-v", &self.name]),
            Duration::from_secs(60),
        );
    }
}

#[test]
fn image_runs_berth_as_non_root_and_takes_a_push_and_pull() {
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    import_debian(&d);
    build_prebuilt(&d, work.path(), "berth-test/berth:image");

    // What the image declares.
    let config = |f: &str| d.inspect("berth-test/berth:image", f);
    assert_eq!(config("{{.Config.User}}"), "65532:65532");
    assert_eq!(
        config("{{json .Config.ExposedPorts}}"),
        r#"{"5000/tcp":{}}"#
    );
    assert_eq!(
        config("{{json .Config.Volumes}}"),
        r#"{"/var/lib/registry":{}}"#
    );
    assert_eq!(
        config("{{json .Config.Cmd}}"),
        r#"["berth","serve","/etc/berth/config.yml"]"#
    );
    assert_eq!(
        config("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","berth-healthcheck"]"#
    );

    // The baked-in config passes the binary's own check.
    let check = d.ok(&[
        "run",
        "--rm",
        "berth-test/berth:image",
        "config",
        "check",
        "/etc/berth/config.yml",
    ]);
    assert_eq!(check.stdout.trim(), "/etc/berth/config.yml: ok");

    // Host networking on a free port; a named volume (initialised from the
    // image's /var/lib/registry, ownership included); health polled every
    // second instead of 30 s, with the image's own check command.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    d.ok(&["volume", "create", "berth-data"]);
    let berth = Container::run(
        &d,
        "berth",
        &[
            "--health-interval",
            "1s",
            "-e",
            &format!("REGISTRY_HTTP_ADDR={addr}"),
            "-v",
            "berth-data:/var/lib/registry",
            "berth-test/berth:image",
        ],
    );
    berth.wait_for(&format!("http://{addr}/v2/"), 200);

    // The server process itself runs as 65532, seen from the host.
    let pid = berth.inspect("{{.State.Pid}}");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uids}"
    );
    let exec_uid = d.ok(&["exec", "berth", "id", "-u"]).stdout;
    assert_eq!(exec_uid.trim(), BERTH_UID.to_string());

    // HEALTHCHECK: healthy within a bounded wait, never unhealthy on the way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = berth.inspect("{{.State.Health.Status}}");
        match health.as_str() {
            "healthy" => break,
            "starting" => {}
            other => panic!(
                "health {other}: {}\n{}",
                berth.inspect("{{json .State.Health.Log}}"),
                berth.logs()
            ),
        }
        assert!(Instant::now() < deadline, "not healthy in 60s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The same check fails where nothing answers: it is not a constant 0.
    let nothing = format!("BERTH_HEALTHCHECK_ADDR=127.0.0.1:{}", free_port());
    let failed = run(
        &mut d.cli(&["exec", "-e", &nothing, "berth", "berth-healthcheck"]),
        Duration::from_secs(30),
    );
    assert!(!failed.status.success(), "{}", failed.all());

    // docker push through the container.
    import_base(&d, work.path(), "berth-test/base:1");
    let app = build(
        &d,
        work.path(),
        "berth-test/base:1",
        "berth-test/app:1",
        &[("app.txt", "served from the container\n")],
    );
    let reference = format!("{addr}/team/app:1");
    d.ok(&["tag", &app.tag, &reference]);
    let (digest, _) = push(&d, &reference);

    // It landed in the volume, written by the non-root user.
    let volume = PathBuf::from(
        d.ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            "berth-data",
        ])
        .stdout
        .trim(),
    );
    let tag_link =
        volume.join("docker/registry/v2/repositories/team/app/_manifests/tags/1/current/link");
    assert_eq!(fs::read_to_string(&tag_link).unwrap(), digest);
    assert_eq!(fs::metadata(&tag_link).unwrap().uid(), BERTH_UID);
    assert_eq!(fs::metadata(&volume).unwrap().uid(), BERTH_UID);
    let blobs = stored_blobs(&volume);
    assert!(blobs.contains(&digest), "{blobs:?}");
    assert_eq!(blobs.len(), 4, "manifest + config + 2 layers: {blobs:?}");

    // docker pull from nothing: every layer comes back from the container.
    d.ok(&["image", "rm", &reference, &app.tag, "berth-test/base:1"]);
    let out = d.ok(&["pull", &reference]).all();
    assert_eq!(out.matches("Pull complete").count(), 2, "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(d.inspect(&reference, "{{.Id}}"), app.id);

    // Stopped with SIGTERM (docker stop), Berth exits 0 within the grace period.
    d.ok(&["stop", "berth"]);
    assert_eq!(
        berth.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        berth.logs()
    );
    drop(berth);
    d.ok(&["volume", "rm", "berth-data"]);

    serves_a_config_mounted_at_distributions_path(&d, work.path(), "berth-test/berth:image");
    d.ok(&["image", "rm", &reference, "berth-test/berth:image"]);
}

/// distribution's habit, `-v config.yml:/etc/docker/registry/config.yml`,
/// works: its address (not the baked-in :5000) answering proves it was read.
fn serves_a_config_mounted_at_distributions_path(d: &Dockerd, work: &Path, image: &str) {
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = work.join("config.yml");
    fs::write(
        &cfg,
        format!("version: 0.1\nstorage:\n  inmemory: {{}}\nhttp:\n  addr: {addr}\n"),
    )
    .unwrap();
    let mount = format!("{}:/etc/docker/registry/config.yml:ro", cfg.display());
    let berth = Container::run(d, "berth-distribution-path", &["-v", &mount, image]);
    berth.wait_for(&format!("http://{addr}/v2/"), 200);
}

#[test]
fn builder_stage_runs_the_ci_build() {
    // No rust image can be pulled here, so the stage is checked for what it
    // runs: a release build (without debug info) of the tree tests/run.sh
    // tests, with the lockfile enforced, and the runtime takes that binary.
    let dockerfile = fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages,
        [
            "FROM ${DEBIAN_IMAGE} AS runtime-base",
            "FROM runtime-base AS prebuilt",
            "FROM ${RUST_IMAGE} AS builder",
            "FROM runtime-base AS runtime",
        ],
        "prebuilt must come before builder: the legacy builder runs every stage before its target"
    );
    let builder = dockerfile.split("AS builder").nth(1).unwrap();
    let builder = builder.split("\nFROM ").next().unwrap();
    assert!(
        builder
            .contains("\nRUN CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked\n"),
        "{builder}"
    );
    for copied in ["Cargo.toml Cargo.lock", "loadtest", "src"] {
        assert!(builder.contains(&format!("COPY {copied} ")), "{copied}");
    }
    assert!(dockerfile
        .ends_with("COPY --from=builder /src/target/release/berth /usr/local/bin/berth\n"));
    // .dockerignore keeps what the builder copies in the context.
    let ignored = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for needed in ["src", "loadtest", "Cargo.toml", "Cargo.lock", "deploy"] {
        assert!(
            !ignored.lines().any(|l| l.trim() == needed),
            ".dockerignore drops {needed}"
        );
    }
}
