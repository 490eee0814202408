//! The docker-compose files: compose.yaml (TLS + htpasswd) and
//! deploy/compose/token/compose.yaml (token server + Redis). Debian's
//! docker-compose (1.29) resolves each one; the test checks what it resolved
//! to, then runs `berth config check` on the configuration Berth would load
//! in that container: the mounted (or baked-in) file plus the service's
//! REGISTRY_* variables, with the mounted directories' container paths
//! pointed at files made here. Then the TLS + htpasswd file is brought up
//! with the image built as tests/clients/image.rs builds it, and takes a
//! docker login, push and pull.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use figment::providers::Format as _;
use serde_json::{json, Value};

use super::{
    daemons::Dockerd,
    image::{build_prebuilt, import_debian},
    images::{build, import_base, push},
    support::{require_tool, run, run_ok, Out},
};
use crate::common::{free_port, pki::Ca};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `docker-compose -f FILE config`, parsed. Run from an empty directory with
/// no BERTH_*/REGISTRY_* variables, so only `env` can change the result.
fn resolve(file: &Path, env: &[(&str, &str)]) -> Value {
    require_tool("docker-compose", "docker-compose");
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(cwd.path())
        .arg("-f")
        .arg(file)
        .arg("config");
    for (k, _) in std::env::vars() {
        if k.starts_with("BERTH_") || k.starts_with("REGISTRY_") || k.starts_with("COMPOSE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = run_ok(&mut cmd, Duration::from_secs(60));
    figment::Figment::from(figment::providers::Yaml::string(&out.stdout))
        .extract()
        .unwrap_or_else(|e| panic!("{e}:\n{}", out.stdout))
}

/// A service's `volumes`, as the strings docker-compose prints.
fn volumes(service: &Value) -> Vec<&str> {
    service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Files an operator provides, made under `dir`: TLS certificate (for
/// 127.0.0.1) and key in certs/, htpasswd (admin / admin-password) in auth/.
/// Returns the two directories and the CA's PEM.
fn operator_files(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (certs, auth) = (dir.join("certs"), dir.join("auth"));
    fs::create_dir_all(&certs).unwrap();
    fs::create_dir_all(&auth).unwrap();
    let ca = Ca::root("compose test CA");
    let leaf = ca.server(&["127.0.0.1", "localhost"]);
    fs::write(certs.join("domain.crt"), leaf.cert_pem + &ca.pem()).unwrap();
    fs::write(certs.join("domain.key"), leaf.key_pem).unwrap();
    let hash = bcrypt::hash("admin-password", 4).unwrap();
    fs::write(auth.join("htpasswd"), format!("admin:{hash}\n")).unwrap();
    (certs, auth, ca.pem())
}

fn write_token_key(auth: &Path) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["berth-token".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    fs::write(auth.join("token.key"), key.serialize_pem()).unwrap();
    fs::write(auth.join("token.crt"), cert.pem()).unwrap();
}

/// `berth config check` on what the `berth` service would load: the file
/// mounted at /etc/berth/config.yml (else the image's own,
/// deploy/docker/config.yml) and the service's environment, with every path
/// under a mounted directory (container side, e.g. /certs) rewritten to
/// `dirs`' host side.
fn config_check(service: &Value, dirs: &[(&str, &Path)], work: &Path) -> Out {
    let host_path = |value: &str| -> String {
        for (target, host) in dirs {
            if let Some(rest) = value.strip_prefix(&format!("{target}/")) {
                return host.join(rest).display().to_string();
            }
        }
        value.to_string()
    };
    let baked = repo().join("deploy/docker/config.yml");
    let source = volumes(service)
        .iter()
        .find_map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (parts[1] == "/etc/berth/config.yml").then(|| PathBuf::from(parts[0]))
        })
        .unwrap_or(baked);
    let config: String = fs::read_to_string(&source)
        .unwrap()
        .lines()
        .map(|line| match line.split_once(": /") {
            Some((key, value)) => format!("{key}: {}\n", host_path(&format!("/{value}"))),
            None => format!("{line}\n"),
        })
        .collect();
    let file = work.join("config.yml");
    fs::write(&file, config).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("config").arg("check").arg(&file);
    for (k, _) in std::env::vars() {
        if k.starts_with("REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in service["environment"].as_object().unwrap() {
        cmd.env(k, host_path(v.as_str().unwrap()));
    }
    run(&mut cmd, Duration::from_secs(30))
}

#[test]
fn compose_tls_htpasswd_resolves_and_its_config_checks() {
    let file = repo().join("compose.yaml");
    let resolved = resolve(&file, &[]);
    let services: Vec<&String> = resolved["services"].as_object().unwrap().keys().collect();
    assert_eq!(services, ["berth"]);
    let berth = &resolved["services"]["berth"];
    assert_eq!(berth["image"], "berth:latest");
    assert_eq!(berth["build"]["context"], repo().display().to_string());
    assert_eq!(berth["ports"], json!([{"published": 5000, "target": 5000}]));
    let compose_dir = repo().join("deploy/compose");
    assert_eq!(
        volumes(berth),
        [
            "berth-data:/var/lib/registry:rw".to_string(),
            format!("{}:/certs:ro", compose_dir.join("certs").display()),
            format!("{}:/auth:ro", compose_dir.join("auth").display()),
        ]
    );
    assert!(resolved["volumes"]["berth-data"].is_object(), "{resolved}");
    assert_eq!(
        berth["environment"],
        json!({
            "REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/domain.crt",
            "REGISTRY_HTTP_TLS_KEY": "/certs/domain.key",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
        })
    );
    // The published port and the image follow the environment.
    let moved = resolve(
        &file,
        &[("BERTH_PORT", "5443"), ("BERTH_IMAGE", "reg/berth:1")],
    );
    let moved = &moved["services"]["berth"];
    assert_eq!(moved["ports"], json!([{"published": 5443, "target": 5000}]));
    assert_eq!(moved["image"], "reg/berth:1");

    let work = tempfile::tempdir().unwrap();
    let (certs, auth, _) = operator_files(work.path());
    let dirs = [("/certs", certs.as_path()), ("/auth", auth.as_path())];
    let check = config_check(berth, &dirs, work.path());
    assert!(check.status.success(), "{}", check.all());
    assert!(check.stdout.trim().ends_with(": ok"), "{}", check.all());
    // The check reads the mounted files: without the key it fails, naming it.
    fs::remove_file(certs.join("domain.key")).unwrap();
    let check = config_check(berth, &dirs, work.path());
    assert_eq!(check.status.code(), Some(2), "{}", check.all());
    assert!(check.stderr.contains("http.tls.key"), "{}", check.all());
}

#[test]
fn compose_token_server_redis_resolves_and_its_config_checks() {
    let dir = repo().join("deploy/compose/token");
    let file = dir.join("compose.yaml");
    let resolved = resolve(&file, &[("REGISTRY_HOST", "registry.example.com")]);
    let mut services: Vec<&String> = resolved["services"].as_object().unwrap().keys().collect();
    services.sort();
    assert_eq!(services, ["berth", "redis"]);
    let berth = &resolved["services"]["berth"];
    assert_eq!(berth["build"]["context"], repo().display().to_string());
    assert_eq!(berth["ports"], json!([{"published": 5000, "target": 5000}]));
    assert_eq!(berth["depends_on"]["redis"]["condition"], "service_started");
    let compose_dir = repo().join("deploy/compose");
    assert_eq!(
        volumes(berth),
        [
            "berth-data:/var/lib/registry:rw".to_string(),
            format!(
                "{}:/etc/berth/config.yml:ro",
                dir.join("config.yml").display()
            ),
            format!("{}:/certs:ro", compose_dir.join("certs").display()),
            format!("{}:/auth:ro", compose_dir.join("auth").display()),
        ]
    );
    assert_eq!(
        berth["environment"]["REGISTRY_AUTH_TOKEN_REALM"],
        "https://registry.example.com:5000/auth/token"
    );
    // Redis is internal: no published port, no volume (a cache Berth refills).
    let redis = &resolved["services"]["redis"];
    assert!(redis.get("ports").is_none(), "{redis}");
    assert!(redis.get("volumes").is_none(), "{redis}");
    assert_eq!(
        redis["healthcheck"]["test"],
        json!(["CMD", "redis-cli", "ping"])
    );

    // The mounted config.yml names the Redis service and the token files.
    let config = fs::read_to_string(dir.join("config.yml")).unwrap();
    assert!(config.contains("addr: redis:6379"), "{config}");
    assert!(config.contains("blobdescriptor: redis"), "{config}");

    let work = tempfile::tempdir().unwrap();
    let (certs, auth, _) = operator_files(work.path());
    let dirs = [("/certs", certs.as_path()), ("/auth", auth.as_path())];
    // No signing key yet: the token server section is read and refused.
    let check = config_check(berth, &dirs, work.path());
    assert_eq!(check.status.code(), Some(2), "{}", check.all());
    assert!(check.stderr.contains("signingkey"), "{}", check.all());
    write_token_key(&auth);
    let check = config_check(berth, &dirs, work.path());
    assert!(check.status.success(), "{}", check.all());
    assert!(check.stdout.trim().ends_with(": ok"), "{}", check.all());
}

/// `docker-compose -p PROJECT -f FILE ARGS…` against a private engine.
fn compose(d: &Dockerd, project: &str, file: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker-compose");
    // The engine's socket and client config, as its own CLI is given them.
    for (k, v) in d.cli(&[]).get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.args(["-p", project, "-f"]).arg(file).args(args);
    cmd
}

/// `docker-compose down -v` when dropped, before the engine stops.
struct Project<'a> {
    d: &'a Dockerd,
    name: String,
    file: PathBuf,
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        run(
            &mut compose(self.d, &self.name, &self.file, &["down", "-v"]),
            Duration::from_secs(120),
        );
    }
}

/// Status of `GET url` over TLS trusting only `ca_pem` (0: no answer).
fn https_status(url: &str, ca_pem: &str, basic: Option<(&str, &str)>) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = crate::common::http::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = c.get(url);
        if let Some((user, password)) = basic {
            req = req.basic_auth(user, Some(password));
        }
        req.send().await.map_or(0, |r| r.status().as_u16())
    })
}

#[test]
fn compose_up_tls_htpasswd_takes_a_login_push_and_pull() {
    let d = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    import_debian(&d);
    // The image compose.yaml names; present, so `up --no-build` uses it.
    build_prebuilt(&d, work.path(), "berth:latest");

    // The project as an operator lays it out: compose.yaml beside
    // deploy/compose/{certs,auth}, readable by the image's group.
    let project = work.path().join("project");
    let file = project.join("compose.yaml");
    fs::create_dir_all(&project).unwrap();
    fs::copy(repo().join("compose.yaml"), &file).unwrap();
    let (certs, auth, ca) = operator_files(&project.join("deploy/compose"));
    for path in [
        &certs,
        &auth,
        &certs.join("domain.key"),
        &auth.join("htpasswd"),
    ] {
        std::os::unix::fs::chown(path, None, Some(65532)).unwrap();
    }
    fs::set_permissions(certs.join("domain.key"), fs::Permissions::from_mode(0o640)).unwrap();

    let port = free_port().to_string();
    let mut up = compose(&d, "berthcompose", &file, &["up", "-d", "--no-build"]);
    up.env("BERTH_PORT", &port);
    let _project = Project {
        d: &d,
        name: "berthcompose".into(),
        file: file.clone(),
    };
    run_ok(&mut up, Duration::from_secs(180));

    // Up once the published port answers over TLS: 401 without credentials.
    let registry = format!("127.0.0.1:{port}");
    let base = format!("https://{registry}/v2/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while https_status(&base, &ca, None) != 401 {
        assert!(
            Instant::now() < deadline,
            "no 401 from {base} in 60s:\n{}",
            run(
                &mut d.cli(&["logs", "berthcompose_berth_1"]),
                Duration::from_secs(30)
            )
            .all()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        https_status(&base, &ca, Some(("admin", "admin-password"))),
        200
    );
    assert_eq!(https_status(&base, &ca, Some(("admin", "wrong"))), 401);

    // docker login, push, pull. 127.0.0.0/8 is an insecure registry to
    // docker by default, so it takes the test CA's certificate unverified.
    let login = run(
        &mut d.cli(&["login", "-u", "admin", "-p", "wrong", &registry]),
        Duration::from_secs(60),
    );
    assert!(!login.status.success(), "{}", login.all());
    d.ok(&["login", "-u", "admin", "-p", "admin-password", &registry]);
    import_base(&d, work.path(), "berth-test/base:1");
    let app = build(
        &d,
        work.path(),
        "berth-test/base:1",
        "berth-test/app:1",
        &[("app.txt", "pushed through docker-compose\n")],
    );
    let reference = format!("{registry}/team/app:1");
    d.ok(&["tag", &app.tag, &reference]);
    let (digest, _) = push(&d, &reference);
    d.ok(&["image", "rm", &reference, &app.tag, "berth-test/base:1"]);
    let out = d.ok(&["pull", &reference]).all();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(d.inspect(&reference, "{{.Id}}"), app.id);

    // The push is in the project's named volume.
    let volume = d
        .ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            "berthcompose_berth-data",
        ])
        .stdout;
    let link = Path::new(volume.trim())
        .join("docker/registry/v2/repositories/team/app/_manifests/tags/1/current/link");
    assert_eq!(fs::read_to_string(link).unwrap(), digest);
}
