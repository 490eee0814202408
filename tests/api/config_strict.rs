//! Strict configuration, through the real binary: an unknown key anywhere is
//! a one-line error naming it (the dotted YAML path, or the `REGISTRY_*`
//! variable) with exit code 2, in `serve` and `config check` alike;
//! distribution keys Berth does not act on warn once; those whose absence
//! would change behaviour are refused; stray `REGISTRY_*` variables
//! (Kubernetes service links, other tools') are skipped with a warning.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{process::wait_with_deadline, Berth};

/// Every section Berth reads (`[]`: a list's element).
const SECTIONS: &[&str] = &[
    "",
    "log",
    "log.accesslog",
    "storage",
    "storage.filesystem",
    "storage.inmemory",
    "storage.s3",
    "storage.azure",
    "storage.azure.credentials",
    "storage.delete",
    "storage.redirect",
    "storage.cache",
    "storage.maintenance",
    "storage.uploadbuffers",
    "storage.maintenance.uploadpurging",
    "storage.maintenance.readonly",
    "storage.tag",
    "http",
    "http.tls",
    "http.tls.letsencrypt",
    "http.debug",
    "http.debug.prometheus",
    "http.http2",
    "http.h2c",
    "http.timeouts",
    "auth",
    "auth.htpasswd",
    "auth.htpasswd.throttle",
    "auth.token",
    "token_server",
    "token_server.throttle",
    "token_server.acl[]",
    "token_server.acl[].match",
    "notifications",
    "notifications.events",
    "notifications.endpoints[]",
    "notifications.endpoints[].ignore",
    "redis",
    "redis.tls",
    "redis.pool",
    "tracing",
    "health",
    "health.storagedriver",
    "health.file[]",
    "health.http[]",
    "health.tcp[]",
    "validation",
    "reporting",
    "compatibility",
    "catalog",
    "tags",
    "referrers",
];

/// What one run of `berth <args> FILE` printed: (exit code, stderr).
struct Run {
    code: i32,
    stderr: String,
}

/// `berth config check FILE` or `berth serve --config FILE` with `yaml`,
/// the inherited REGISTRY_* variables removed and `env` added. A `serve`
/// that starts serving is stopped at the deadline and fails the test.
fn run(command: &str, yaml: &str, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yml");
    std::fs::write(&file, yaml).unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    match command {
        "check" => cmd.args(["config", "check"]).arg(&file),
        "serve" => cmd.args(["serve", "--config"]).arg(&file),
        other => panic!("{other}"),
    };
    for (name, _) in std::env::vars() {
        if name.to_ascii_uppercase().starts_with("REGISTRY_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("berth {command} did not exit: {stderr}"));
    Run {
        code: status.code().expect("exited, not killed"),
        stderr,
    }
}

/// Both commands refuse `yaml` (with `env`) with exit 2 and one line that
/// names `key` as `<key>: ...`.
fn refused_by_both(yaml: &str, env: &[(&str, &str)], key: &str) {
    for command in ["check", "serve"] {
        let r = run(command, yaml, env);
        assert_eq!(r.code, 2, "{command}: {yaml}{env:?}: {}", r.stderr);
        let line = r.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{command}: one line: {line}");
        assert!(
            line.starts_with(&format!("berth: configuration error: {key}: ")),
            "{command}: should name {key}: {line}"
        );
    }
}

/// JSON (which YAML reads) with `typo: 1` in `section`, and the key an
/// error must name.
fn with_typo(section: &str) -> (String, String) {
    let mut doc = serde_json::json!({ "typo": 1 });
    let mut shown = Vec::new();
    for segment in section.split('.').filter(|s| !s.is_empty()).rev() {
        let (name, list) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        doc = if list {
            serde_json::json!({ name: [doc] })
        } else {
            serde_json::json!({ name: doc })
        };
        shown.push(segment.replace("[]", "[0]"));
    }
    shown.reverse();
    shown.push("typo".into());
    (doc.to_string(), shown.join("."))
}

#[test]
fn an_unknown_key_in_any_section_exits_2_naming_it() {
    for section in SECTIONS {
        let (yaml, key) = with_typo(section);
        refused_by_both(&yaml, &[], &key);
    }
    // The error lists what the section does take.
    let r = run("check", "http:\n  secrte: s\n", &[]);
    assert!(
        r.stderr.contains("secret") && r.stderr.contains("prefix"),
        "{}",
        r.stderr
    );
}

/// A variable in a section Berth reads is parsed, so a typo in its name is
/// the same error as in the file, naming the variable.
#[test]
fn an_unknown_variable_in_a_known_section_exits_2_naming_it() {
    let base = "version: 0.1\n";
    refused_by_both(
        base,
        &[("REGISTRY_HTTP_SECRTE", "s")],
        "REGISTRY_HTTP_SECRTE",
    );
    refused_by_both(
        base,
        &[("REGISTRY_STORAGE_DELETE_ENABLE", "true")],
        "REGISTRY_STORAGE_DELETE_ENABLE",
    );
    refused_by_both(
        "storage:\n  s3:\n    region: r\n    bucket: b\n",
        &[("REGISTRY_STORAGE_S3_BUKET", "b")],
        "REGISTRY_STORAGE_S3_BUKET",
    );
    refused_by_both(
        base,
        &[("REGISTRY_LOG_LEVEL", "inof")],
        "REGISTRY_LOG_LEVEL",
    );
    refused_by_both(
        base,
        &[("REGISTRY_PROXY_REMOTEURI", "https://registry-1.docker.io")],
        "REGISTRY_PROXY_REMOTEURI",
    );
}

/// Kubernetes gives a pod `REGISTRY_*` variables for a Service named
/// `registry` (or `registry-*`); other tools use the prefix too. Skipped,
/// with a warning, as distribution does.
#[test]
fn stray_variables_are_skipped_with_a_warning() {
    let links = [
        ("REGISTRY_PORT", "tcp://10.0.0.7:5000"),
        ("REGISTRY_SERVICE_HOST", "10.0.0.7"),
        ("REGISTRY_SERVICE_PORT", "5000"),
        ("REGISTRY_PORT_5000_TCP", "tcp://10.0.0.7:5000"),
        ("REGISTRY_PORT_5000_TCP_ADDR", "10.0.0.7"),
        ("REGISTRY_REDIS_SERVICE_HOST", "10.0.0.8"),
        ("REGISTRY_REDIS_PORT_6379_TCP_PORT", "6379"),
    ];
    let mut env = links.to_vec();
    env.push(("REGISTRY_HOST", "registry.example.com"));
    env.push(("REGISTRY_HTTP_SECRET", "from-env"));
    let r = run("check", "version: 0.1\n", &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let warnings: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("berth: warning: REGISTRY_HOST: names no configuration key"),
        "{warnings:?}"
    );
    for (name, _) in links {
        assert!(warnings[1].contains(name), "{name}: {}", warnings[1]);
    }
    assert!(warnings[1].contains("Kubernetes"), "{}", warnings[1]);
    assert!(!r.stderr.contains("REGISTRY_HTTP_SECRET"), "a key is read");

    // And the server starts, saying so once in its log.
    let b = Berth::start_with_env(
        |root, addr| {
            format!("storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n")
        },
        &env,
    );
    let logs = b.logs();
    assert_eq!(
        logs.matches("REGISTRY_HOST: names no configuration key")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("REGISTRY_PORT_5000_TCP_ADDR").count(),
        1,
        "{logs}"
    );
}

/// distribution keys whose absence would change what the registry does are
/// refused until Berth implements them.
#[test]
fn behaviour_changing_keys_are_refused() {
    for (yaml, key) in [
        (
            "proxy:\n  remoteurl: https://registry-1.docker.io\n  exec:\n    command: h\n",
            "proxy.exec",
        ),
        (
            "middleware:\n  storage:\n    - name: cloudfront\n      options: {baseurl: x}\n",
            "middleware.storage",
        ),
        (
            "validation:\n  manifests:\n    urls:\n      allow: ['^https://example\\.com/']\n",
            "validation.manifests",
        ),
        ("policy:\n  repository:\n    classes: [image]\n", "policy"),
        (
            "http:\n  net: unix\n  addr: /run/registry.sock\n",
            "http.net",
        ),
        (
            "http:\n  tls:\n    ciphersuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n",
            "http.tls.ciphersuites",
        ),
        (
            "log:\n  hooks:\n    - type: mail\n      levels: [panic]\n",
            "log.hooks",
        ),
        (
            "redis:\n  addrs: [r:6379]\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n",
            "redis.tls.certificate",
        ),
        (
            "redis:\n  addrs: [r:26379]\n  mastername: m\n",
            "redis.mastername",
        ),
    ] {
        refused_by_both(yaml, &[], key);
    }
}

/// distribution keys Berth knowingly leaves undone: accepted, one warning
/// each, at start (in the log) and from `config check` (on stderr).
#[test]
fn ignored_keys_warn_once_each() {
    let warned = [
        "loglevel",
        "log.reportcaller",
        "http.http2.disabled",
        "http.h2c.enabled",
        "storage.tag.concurrencylimit",
        "storage.cache.blobdescriptorsize",
        "storage.filesystem.maxthreads",
        "reporting.bugsnag",
        "compatibility.schema1",
        "validation.disabled",
        "health.file[0].threshold",
    ];
    let config = |root: &str, addr: &str| {
        format!(
            "version: 0.1\nloglevel: debug\nlog:\n  level: info\n  reportcaller: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n    maxthreads: 100\n  tag:\n    concurrencylimit: 8\n  cache:\n    blobdescriptor: inmemory\n    blobdescriptorsize: 10000\n\
             http:\n  addr: {addr}\n  secret: s\n  net: tcp\n  http2:\n    disabled: true\n  h2c:\n    enabled: false\n\
             reporting:\n  bugsnag:\n    apikey: k\ncompatibility:\n  schema1:\n    enabled: true\n\
             catalog:\n  maxentries: 500\nvalidation:\n  disabled: true\n\
             health:\n  file:\n    - file: /nonexistent/drain\n      threshold: 3\n"
        )
    };
    let r = run("check", &config("/tmp/berth-unused", "127.0.0.1:5000"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let b = Berth::start_with(config);
    let logs = b.logs();
    for key in warned {
        let line = format!("{key}: accepted, not acted on: ");
        assert_eq!(r.stderr.matches(&line).count(), 1, "{key}: {}", r.stderr);
        assert_eq!(logs.matches(&line).count(), 1, "{key}: {logs}");
    }
    assert_eq!(r.stderr.lines().count(), warned.len(), "{}", r.stderr);
    assert!(!logs.contains("http.net"), "tcp is what Berth does: {logs}");

    // Redis' pool and client options (checked only: no Redis here).
    let r = run(
        "check",
        "redis:\n  addr: r:6379\n  pool:\n    maxidle: 16\n    maxactive: 64\n    idletimeout: 300s\n  poolsize: 10\n  maxretries: 3\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for key in ["redis.pool", "redis.poolsize", "redis.maxretries"] {
        let line = format!("berth: warning: {key}: accepted, not acted on: ");
        assert_eq!(r.stderr.matches(&line).count(), 1, "{key}: {}", r.stderr);
    }
}

#[test]
fn a_log_level_typo_is_refused() {
    for typo in ["inf", "warning", "verbose"] {
        refused_by_both(&format!("log:\n  level: {typo}\n"), &[], "log.level");
    }
    let r = run("check", "log:\n  level: DEBUG\n", &[]);
    assert_eq!(r.code, 0, "any case, as distribution: {}", r.stderr);
}
