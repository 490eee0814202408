//! The docker-compose files: compose.yaml (TLS + htpasswd) and
//! deploy/compose/token/compose.yaml (token server + Redis). Debian's
//! docker-compose (1.29) resolves each one; the test checks what it resolved
//! to, then runs `berth config check` on the configuration Berth would load
//! in that container: the mounted (or baked-in) file plus the service's
//! REGISTRY_* variables, with the mounted directories' container paths
//! pointed at files made here.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use figment::providers::Format as _;
use serde_json::{json, Value};

use super::support::{require_tool, run, run_ok, Out};
use crate::common::pki::Ca;

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

/// Files an operator provides, made under `dir`: TLS certificate and key in
/// certs/, htpasswd plus the token signing key and certificate in auth/.
fn operator_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (certs, auth) = (dir.join("certs"), dir.join("auth"));
    fs::create_dir_all(&certs).unwrap();
    fs::create_dir_all(&auth).unwrap();
    let ca = Ca::root("compose test CA");
    let leaf = ca.server(&["registry.example.com"]);
    fs::write(certs.join("domain.crt"), leaf.cert_pem + &ca.pem()).unwrap();
    fs::write(certs.join("domain.key"), leaf.key_pem).unwrap();
    let hash = bcrypt::hash("admin-password", 4).unwrap();
    fs::write(auth.join("htpasswd"), format!("admin:{hash}\n")).unwrap();
    (certs, auth)
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
    let (certs, auth) = operator_files(work.path());
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
    let (certs, auth) = operator_files(work.path());
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
