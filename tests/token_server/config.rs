//! `token_server:` configuration errors: one line naming the key, exit 2,
//! from `berth config check` as from `berth serve`.

use std::process::Command;

use crate::support::*;

/// Run `berth config check` on `yaml`; (exit code, stderr).
fn check(dir: &std::path::Path, yaml: &str) -> (i32, String) {
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "check"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_name_the_key() {
    let s = Secrets::new(KeyKind::EcP256, &[("ci", "pw")]);
    let dir = s.dir.path();
    let base = |extra: &str| {
        format!(
            "version: 0.1\nstorage:\n  inmemory: {{}}\ntoken_server:\n  issuer: i\n  service: s\n  \
             htpasswd: {}\n{extra}",
            s.path("htpasswd")
        )
    };
    let key = format!("  signingkey: {}\n", s.path("token.key"));
    let (code, err) = check(dir, &base(&key));
    assert_eq!((code, err.as_str()), (0, ""), "the valid base config");

    let other = Secrets::new(KeyKind::EcP256, &[]);
    for (extra, expect) in [
        (String::new(), "token_server.signingkey: required"),
        (
            "  signingkey: /nonexistent.pem\n".into(),
            "token_server.signingkey: cannot read",
        ),
        (
            format!("{key}  acl:\n    - actions: [pul]\n"),
            "token_server.acl[0].actions",
        ),
        (
            format!("{key}  acl:\n    - match: {{name: \"/(/\"}}\n      actions: [pull]\n"),
            "token_server.acl[0].match.name",
        ),
        (
            format!("{key}  certificate: {}\n", other.path("token.crt")),
            "token_server.certificate",
        ),
        (format!("{key}  path: /v2/token\n"), "token_server.path"),
        (format!("{key}  experation: 60\n"), "token_server"),
        (
            format!("{key}  users:\n    bob: plain\n"),
            "token_server.users.bob",
        ),
        (
            format!("{key}  trustedproxies: [proxy]\n"),
            "token_server.trustedproxies",
        ),
    ] {
        let (code, err) = check(dir, &base(&extra));
        assert_eq!(code, 2, "{extra}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(expect), "{expect:?} not in {err}");
    }
}
