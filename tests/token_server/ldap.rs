//! Directory logins against Debian's slapd (tests/common/ldap.rs): people
//! log in with their directory password, their groups become ACL labels,
//! names with filter metacharacters match only themselves, and a directory
//! that is down or untrusted fails logins closed.

use crate::{
    common::{
        ldap::{Slapd, BIND_DN, BIND_PASSWORD, GROUPS, PEOPLE},
        pki, Berth,
    },
    support::*,
};

/// Berth whose token server logs people in against `ldap` (lines under
/// `token_server.ldap:`): platform pushes `team/**`, developers `dev/**`,
/// everyone pulls. The failed-login throttle is off: these tests fail
/// logins on purpose.
fn registry(secrets: &Secrets, ldap: &str) -> Berth {
    registry_throttled(secrets, ldap, "    maxfailures: 0\n")
}

/// [`registry`] with `throttle` (lines under `token_server.throttle:`).
fn registry_throttled(secrets: &Secrets, ldap: &str, throttle: &str) -> Berth {
    let dir = secrets.dir.path().display().to_string();
    let (ldap, throttle) = (ldap.to_string(), throttle.to_string());
    Berth::start_with(move |root, addr| {
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {dir}/token.crt\n\
             token_server:\n  issuer: {ISSUER}\n  service: {SERVICE}\n  signingkey: {dir}/token.key\n\
             \x20 throttle:\n{throttle}\
             \x20 ldap:\n{ldap}\
             \x20 acl:\n    - match: {{labels: {{group: platform}}, name: \"team/**\"}}\n      actions: [pull, push]\n\
             \x20   - match: {{labels: {{group: developers}}, name: \"dev/**\"}}\n      actions: [pull, push]\n\
             \x20   - match: {{account: \"/.+/\"}}\n      actions: [pull]\n"
        )
    })
}

/// The `ldap:` lines for `slapd` at `url`, plus `extra`.
fn ldap_config(slapd: &Slapd, url: &str, extra: &str) -> String {
    format!(
        "    url: [{url}]\n    cafile: {}\n    binddn: {BIND_DN}\n    bindpassword: {BIND_PASSWORD}\n    basedn: {PEOPLE}\n{extra}",
        slapd.ca.display()
    )
}

fn both() -> Result<Vec<String>, u16> {
    Ok(vec!["pull".into(), "push".into()])
}

fn pull() -> Result<Vec<String>, u16> {
    Ok(vec!["pull".into()])
}

#[test]
fn people_log_in_against_the_directory_and_their_groups_are_labels() {
    let slapd = Slapd::start();
    let secrets = Secrets::new(KeyKind::EcP256, &[]);
    let b = registry(
        &secrets,
        &ldap_config(&slapd, &slapd.ldaps_url(), "    cachettl: 0s\n"),
    );
    assert_eq!(
        granted_with(&b, "alice", "alice-pw", "team/app"),
        both(),
        "{}",
        b.logs()
    );
    assert_eq!(granted_with(&b, "bob", "bob-pw", "team/app"), pull());
    // Refused: a wrong password, an unknown user, an empty password.
    assert_eq!(granted_with(&b, "alice", "wrong", "team/app"), Err(401));
    assert_eq!(
        granted_with(&b, "mallory", "alice-pw", "team/app"),
        Err(401)
    );
    assert_eq!(granted_with(&b, "alice", "", "team/app"), Err(401));
    // Filter metacharacters match only themselves: eve is eve, and neither
    // a wildcard nor an injected filter logs in as anyone.
    assert_eq!(
        granted_with(&b, "eve*)(uid=*", "eve-pw", "team/app"),
        pull()
    );
    assert_eq!(granted_with(&b, "*", "alice-pw", "team/app"), Err(401));
    assert_eq!(
        granted_with(&b, "alice)(|(uid=*", "alice-pw", "team/app"),
        Err(401)
    );
    // Control characters (a NUL ends a C string in some directories): no one.
    for name in ["alice\u{0}", "alice\u{0})(uid=*", "ali\nce", "alice\u{7f}"] {
        assert_eq!(
            granted_with(&b, name, "alice-pw", "team/app"),
            Err(401),
            "{name:?}"
        );
    }
    assert!(!b.logs().contains("alice-pw"), "a password was logged");
}

#[test]
fn active_directory_style_names_group_search_and_starttls() {
    let slapd = Slapd::start();
    let secrets = Secrets::new(KeyKind::EcP256, &[]);
    // sAMAccountName, groups searched by member (carol's DN has an escaped
    // comma), StartTLS on ldap://.
    let extra = format!(
        "    starttls: true\n    userfilter: \"(sAMAccountName={{username}})\"\n    groupattribute: \"-\"\n    groupbasedn: {GROUPS}\n"
    );
    let b = registry(&secrets, &ldap_config(&slapd, &slapd.url(), &extra));
    assert_eq!(
        granted_with(&b, "carol", "carol-pw", "team/app"),
        both(),
        "{}",
        b.logs()
    );
    assert_eq!(granted_with(&b, "carol", "carol-pw", "dev/tool"), both());
    assert_eq!(granted_with(&b, "alice", "alice-pw", "dev/tool"), pull());
    assert_eq!(granted_with(&b, "carol", "alice-pw", "team/app"), Err(401));
}

#[test]
fn a_directory_that_is_down_or_untrusted_fails_logins_closed() {
    let mut slapd = Slapd::start();
    let secrets = Secrets::new(KeyKind::EcP256, &[]);
    let b = registry(&secrets, &ldap_config(&slapd, &slapd.ldaps_url(), ""));
    assert_eq!(granted_with(&b, "alice", "alice-pw", "team/app"), both());
    slapd.stop();
    // alice's success is remembered (cachettl); bob needs the directory.
    assert_eq!(granted_with(&b, "alice", "alice-pw", "team/app"), both());
    assert_eq!(granted_with(&b, "bob", "bob-pw", "team/app"), Err(503));
    slapd.restart();
    assert_eq!(granted_with(&b, "bob", "bob-pw", "team/app"), pull());

    // A directory whose certificate no trusted CA signed: never an allow.
    let other = pki::Ca::root("someone else");
    let wrong_ca = pki::write(secrets.dir.path(), "other-ca.pem", &other.pem());
    let config = ldap_config(&slapd, &slapd.ldaps_url(), "").replace(
        &slapd.ca.display().to_string(),
        &wrong_ca.display().to_string(),
    );
    let untrusting = registry(&secrets, &config);
    assert_eq!(
        granted_with(&untrusting, "alice", "alice-pw", "team/app"),
        Err(503)
    );
}

#[test]
fn distribution_takes_the_tokens_and_wrong_directory_passwords_are_throttled() {
    let slapd = Slapd::start();
    let secrets = Secrets::new(KeyKind::Rsa, &[]);
    // The throttle on (5 failures, the default), unlike the other tests here.
    let b = registry_throttled(
        &secrets,
        &ldap_config(&slapd, &slapd.ldaps_url(), ""),
        "    maxfailures: 5\n",
    );
    // distribution 2.8.2 trusting the token server: a directory user's
    // token pushes there too.
    let cert = secrets.path("token.crt");
    let realm = token_url(&b);
    let dist = crate::distribution::start_distribution(&realm, &cert);
    let put = push_image(&dist.url(""), "team/app", "v1", Some(("alice", "alice-pw")));
    assert_eq!(put.status, 201, "{}\n{}", put.text(), dist.logs());

    // Wrong directory passwords count like any failed login: the sixth
    // attempt from this address is not even checked.
    for _ in 0..5 {
        assert_eq!(granted_with(&b, "alice", "wrong", "team/app"), Err(401));
    }
    assert_eq!(granted_with(&b, "alice", "alice-pw", "team/app"), Err(429));
}
