//! Who a login comes from and what the log says about it: the token server
//! reads `http.trustedproxies` (shared with Basic logins on `/v2/`; its own
//! older `trustedproxies` key still works alone), and a client-chosen
//! account name never writes a line of its own into the log.

use crate::{
    common::Berth,
    support::{self, *},
};

fn users() -> Vec<(&'static str, &'static str)> {
    vec![("ci", "ci-pass")]
}

/// A GET of the token endpoint, as forwarded by a proxy for `client`.
fn forwarded(b: &Berth, client: &str, password: &str) -> support::Resp {
    let url = reqwest::Url::parse_with_params(&token_url(b), [("service", SERVICE)]).unwrap();
    send(
        "GET",
        url.as_str(),
        Auth::Basic("ci", password),
        &[("x-forwarded-for", client)],
        vec![],
    )
}

/// Two failures from the client behind the proxy block it, and only it.
fn throttles_by_forwarded_for(b: &Berth) {
    for _ in 0..2 {
        assert_eq!(forwarded(b, "198.51.100.7", "guess").status, 401);
    }
    let r = forwarded(b, "198.51.100.7", "ci-pass");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    let other = forwarded(b, "198.51.100.8", "ci-pass");
    assert_eq!(other.status, 200, "{}", other.text());
}

const THROTTLE: &str = "  throttle:\n    maxfailures: 2\n";

#[test]
fn http_trustedproxies_names_clients_behind_the_proxy() {
    let secrets = Secrets::new(KeyKind::EcP256, &users());
    let b = Berth::start_with(|root, addr| {
        fixture("ci-push.yml", &secrets, root, addr)
            .replace("  secret:", "  trustedproxies: [127.0.0.0/8]\n  secret:")
            + THROTTLE
    });
    throttles_by_forwarded_for(&b);
}

#[test]
fn the_older_token_server_key_still_works() {
    let secrets = Secrets::new(KeyKind::EcP256, &users());
    let extra = format!("  trustedproxies: [127.0.0.1]\n{THROTTLE}");
    let b = start_fixture("ci-push.yml", &secrets, &extra);
    throttles_by_forwarded_for(&b);
}

#[test]
fn account_names_cannot_forge_log_lines() {
    let secrets = Secrets::new(KeyKind::EcP256, &users());
    let b = start_fixture("ci-push.yml", &secrets, "");
    let forged = "x\nERROR berth: forged=1\rWARN forged=2";
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "password")
        .append_pair("username", forged)
        .append_pair("password", "guess")
        .append_pair("service", SERVICE)
        .finish();
    let r = send(
        "POST",
        &token_url(&b),
        Auth::None,
        &[("content-type", "application/x-www-form-urlencoded")],
        form.into(),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let logs = b.logs();
    assert!(logs.contains("token server: failed login"), "{logs}");
    for line in logs.lines() {
        assert!(
            !line.starts_with("ERROR berth") && !line.starts_with("WARN forged"),
            "forged line: {logs}"
        );
    }
    assert!(
        logs.contains(r#"account="x\nERROR berth: forged=1\rWARN forged=2""#),
        "{logs}"
    );
}
