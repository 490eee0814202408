//! The Docker engine against Berth's built-in token server: `docker login`
//! (GET with `offline_token=true`: the refresh token docker keeps as its
//! identity token), then push and pull on that identity token (the OAuth2
//! refresh-token grant, by POST), and a push the ACL denies.

use std::time::Duration;

use super::{
    daemons::Dockerd,
    docker::{build, import_base, push},
    support::run,
};
use crate::common::Berth;

/// Berth's log lines, without the terminal colour codes the text format has.
fn log_lines(berth: &Berth) -> Vec<String> {
    let mut out = String::new();
    let mut chars = berth.logs().chars().collect::<Vec<_>>().into_iter();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.lines().map(str::to_string).collect()
}

/// Whether a "token issued" line has every one of `fields`.
fn issued(berth: &Berth, fields: &[&str]) -> bool {
    log_lines(berth)
        .iter()
        .any(|l| l.contains("token issued") && fields.iter().all(|f| l.contains(f)))
}

/// A token-signing key and its self-signed certificate, as `token.key` and
/// `token.crt` in `dir`.
fn signing_key(dir: &std::path::Path) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["berth-token".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("token.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("token.crt"), cert.pem()).unwrap();
}

/// `docker login` to `berth` (not required to succeed).
fn docker_login(d: &Dockerd, berth: &Berth, user: &str, password: &str) -> super::support::Out {
    run(
        &mut d.cli(&["login", "-u", user, "-p", password, &berth.addr]),
        Duration::from_secs(60),
    )
}

#[test]
fn docker_login_push_pull_through_the_token_server() {
    let work = tempfile::tempdir().unwrap();
    signing_key(work.path());
    let p = |n: &str| work.path().join(n).display().to_string();
    let entry = |u: &str, pw: &str| crate::common::htpasswd::entry(u, pw, 5);
    std::fs::write(
        p("htpasswd"),
        entry("ci", "ci-password") + &entry("viewer", "viewer-password"),
    )
    .unwrap();
    let berth = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: berth-test\n    \
             issuer: berth-test-issuer\n    rootcertbundle: {crt}\n\
             token_server:\n  issuer: berth-test-issuer\n  service: berth-test\n  signingkey: {key}\n  \
             certificate: {crt}\n  htpasswd: {htpasswd}\n  acl:\n    - match: {{account: ci}}\n      \
             actions: [pull, push]\n    - match: {{account: \"/.+/\"}}\n      actions: [pull]\n",
            crt = p("token.crt"),
            key = p("token.key"),
            htpasswd = p("htpasswd"),
        )
    });
    let d = Dockerd::start();
    import_base(&d, work.path(), "berth-ts/base:1");
    let reference = format!("{}/team/app:1", berth.addr);
    let image = build(
        &d,
        work.path(),
        "berth-ts/base:1",
        &reference,
        &[("app.txt", "token server layer\n")],
    );
    let login = |user: &str, password: &str| docker_login(&d, &berth, user, password);

    let bad = login("ci", "wrong");
    assert!(!bad.status.success(), "{}", bad.all());
    let good = login("ci", "ci-password");
    assert!(good.status.success(), "{}", good.all());
    // docker login asked for a refresh token, its identity token.
    assert!(
        issued(&berth, &["account=\"ci\"", "via=basic", "refresh=true"]),
        "{}",
        berth.logs()
    );

    // The push runs on the identity token: refresh-token grants, no password.
    let (digest, _) = push(&d, &reference);
    assert!(
        issued(&berth, &["account=\"ci\"", "via=refresh_token", "push"]),
        "{}",
        berth.logs()
    );
    d.remove_all_images();
    let by_digest = format!("{}/team/app@{digest}", berth.addr);
    d.ok(&["pull", &by_digest]);
    assert_eq!(d.inspect(&by_digest, "{{.Id}}"), image.id);

    // viewer may pull, not push: docker reports the registry's denial.
    let good = login("viewer", "viewer-password");
    assert!(good.status.success(), "{}", good.all());
    d.ok(&["pull", &reference]);
    let other = format!("{}/team/other:1", berth.addr);
    d.ok(&["tag", &reference, &other]);
    let out = run(&mut d.cli(&["push", &other]), Duration::from_secs(120));
    assert!(!out.status.success(), "viewer's push must fail");
    assert!(out.all().contains("denied"), "{}", out.all());
    assert!(!berth
        .root
        .join("docker/registry/v2/repositories/team/other")
        .exists());
}

#[test]
fn docker_logs_in_with_a_ci_id_token_and_pushes() {
    use crate::common::oidc::{Issuer, IssuerKey, AUDIENCE};

    let work = tempfile::tempdir().unwrap();
    signing_key(work.path());
    let p = |n: &str| work.path().join(n).display().to_string();
    let signer = IssuerKey::new("job-key");
    let issuer = Issuer::start(&[&signer]);
    std::fs::write(p("oidc-ca.pem"), &issuer.ca_pem).unwrap();
    let berth = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: berth-test\n    \
             issuer: berth-test-issuer\n    rootcertbundle: {crt}\n\
             token_server:\n  issuer: berth-test-issuer\n  service: berth-test\n  signingkey: {key}\n  \
             oidc:\n    - issuer: {iss}\n      audience: [{AUDIENCE}]\n      cafile: {ca}\n      \
             account: repository\n      accountprefix: \"github:\"\n      labels: {{repository: repository, ref: ref}}\n  \
             acl:\n    - match: {{labels: {{repository: org/app, ref: refs/heads/main}}, name: \"org/app/**\"}}\n      \
             actions: [pull, push]\n",
            key = p("token.key"),
            crt = p("token.crt"),
            iss = issuer.url,
            ca = p("oidc-ca.pem"),
        )
    });
    let d = Dockerd::start();
    import_base(&d, work.path(), "berth-oidc/base:1");
    let reference = format!("{}/org/app/api:1", berth.addr);
    build(
        &d,
        work.path(),
        "berth-oidc/base:1",
        &reference,
        &[("job.txt", "pushed by a CI job\n")],
    );
    let id_token = signer.sign(&issuer.claims("org/app", "refs/heads/main"));
    let login = docker_login(&d, &berth, "ci", &id_token);
    assert!(login.status.success(), "{}\n{}", login.all(), berth.logs());
    push(&d, &reference);
    assert!(
        issued(&berth, &["account=\"github:org/app\"", "via=oidc", "push"]),
        "{}",
        berth.logs()
    );
}

#[test]
fn docker_logs_in_against_the_directory_and_groups_decide_pushes() {
    use crate::common::ldap::{Slapd, BIND_DN, BIND_PASSWORD, PEOPLE};

    let slapd = Slapd::start();
    let work = tempfile::tempdir().unwrap();
    signing_key(work.path());
    let p = |n: &str| work.path().join(n).display().to_string();
    let berth = Berth::start_with(|root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: berth-test\n    \
             issuer: berth-test-issuer\n    rootcertbundle: {crt}\n\
             token_server:\n  issuer: berth-test-issuer\n  service: berth-test\n  signingkey: {key}\n  \
             ldap:\n    url: [{url}]\n    cafile: {ca}\n    binddn: {BIND_DN}\n    bindpassword: {BIND_PASSWORD}\n    basedn: {PEOPLE}\n  \
             acl:\n    - match: {{labels: {{group: platform}}}}\n      actions: [pull, push]\n    \
             - match: {{account: \"/.+/\"}}\n      actions: [pull]\n",
            crt = p("token.crt"),
            key = p("token.key"),
            url = slapd.ldaps_url(),
            ca = slapd.ca.display(),
        )
    });
    let d = Dockerd::start();
    import_base(&d, work.path(), "berth-ldap/base:1");
    let reference = format!("{}/team/app:1", berth.addr);
    build(
        &d,
        work.path(),
        "berth-ldap/base:1",
        &reference,
        &[("ldap.txt", "pushed by a directory user\n")],
    );
    let login = |user: &str, password: &str| docker_login(&d, &berth, user, password);
    let bad = login("alice", "wrong");
    assert!(!bad.status.success(), "{}", bad.all());
    // alice is in platform: she pushes.
    let good = login("alice", "alice-pw");
    assert!(good.status.success(), "{}\n{}", good.all(), berth.logs());
    push(&d, &reference);
    assert!(
        issued(&berth, &["account=\"alice\"", "via=ldap", "push"]),
        "{}",
        berth.logs()
    );
    // bob is in no group: he pulls, and his push is denied.
    let good = login("bob", "bob-pw");
    assert!(good.status.success(), "{}", good.all());
    d.remove_all_images();
    d.ok(&["pull", &reference]);
    let other = format!("{}/team/bobs:1", berth.addr);
    d.ok(&["tag", &reference, &other]);
    let out = run(&mut d.cli(&["push", &other]), Duration::from_secs(120));
    assert!(!out.status.success(), "bob's push must fail");
    assert!(out.all().contains("denied"), "{}", out.all());
}
