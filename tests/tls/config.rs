//! `http.tls` configuration errors: `berth serve` refuses to start with exit
//! code 2 and one line naming the key.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{
    pki::{write, Ca},
    process::wait_with_deadline,
};

/// `berth serve` with `tls` under `http.tls:`; its exit code and stderr. A
/// server that starts anyway is killed and fails the test.
fn serve(dir: &Path, tls: &str, env: &[(&str, &str)]) -> (i32, String) {
    let cfg = write(
        dir,
        "config.yml",
        &format!("storage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n{tls}"),
    );
    let stderr = dir.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let Some(status) = wait_with_deadline(&mut child, Duration::from_secs(20)) else {
        panic!(
            "berth started with a bad tls config:\n{tls}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&stderr).unwrap(),
    )
}

#[test]
fn bad_tls_settings_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::root("Berth Test Root");
    let leaf = ca.server(&["127.0.0.1"]);
    let other = ca.server(&["127.0.0.1"]);
    let cert = write(d, "server.crt", &leaf.cert_pem).display().to_string();
    let key = write(d, "server.key", &leaf.key_pem).display().to_string();
    let wrong_key = write(d, "other.key", &other.key_pem).display().to_string();
    let not_pem = write(d, "notes.txt", "hello").display().to_string();
    let files = format!("    certificate: {cert}\n    key: {key}\n");

    let cases: Vec<(String, &str)> = vec![
        (
            format!("    certificate: {d}/missing.crt\n    key: {key}\n", d = d.display()),
            "http.tls.certificate",
        ),
        (
            format!("    certificate: {not_pem}\n    key: {key}\n"),
            "http.tls.certificate",
        ),
        (
            format!("    certificate: {cert}\n    key: {wrong_key}\n"),
            "http.tls.key",
        ),
        (format!("    certificate: {cert}\n"), "http.tls.key"),
        (
            format!("{files}    minimumtls: tls1.1\n"),
            "http.tls.minimumtls",
        ),
        (
            format!("{files}    clientcas: [{d}/missing-ca.pem]\n", d = d.display()),
            "http.tls.clientcas",
        ),
        (
            "    letsencrypt:\n      cachefile: /nonexistent-dir/le.json\n      hosts: [registry.example.com]\n".into(),
            "http.tls.letsencrypt.cachefile",
        ),
        (
            format!("    letsencrypt:\n      cachefile: {d}/le.json\n", d = d.display()),
            "http.tls.letsencrypt.hosts",
        ),
    ];
    for (tls, key) in cases {
        let (code, err) = serve(d, &tls, &[]);
        assert_eq!(code, 2, "{tls}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{tls}: {err}");
        assert!(err.contains(key), "{tls}: expected {key} in: {err}");
    }

    // The environment override is read and checked the same way.
    let (code, err) = serve(
        d,
        &files,
        &[("REGISTRY_HTTP_TLS_CERTIFICATE", "/nonexistent/env.crt")],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("http.tls.certificate") && err.contains("/nonexistent/env.crt"),
        "{err}"
    );
}
