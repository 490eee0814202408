//! Keyless CI logins: ID tokens from a local OIDC issuer (HTTPS with its
//! own CA, OpenID discovery, a JWKS whose keys rotate mid-test) as the
//! password. A job token for the right repository and ref pushes; a wrong
//! audience, an expired token, a foreign issuer, an unknown `kid`,
//! `alg: none`, HS256 keyed with the public key, and a token whose claims
//! name another repository are all refused, and storage is unchanged.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::{
    common::{
        oidc::{Issuer, IssuerKey, AUDIENCE},
        pki, Berth,
    },
    support::*,
};

/// Berth with its token server trusting `issuer` (CI jobs of `org/app` on
/// main push `org/app/**`; any other job token pulls) and alice's password.
/// The failed-login throttle is off: this test fails many logins on purpose
/// (refused ID tokens count toward it like wrong passwords).
fn registry(secrets: &Secrets, issuer: &Issuer) -> Berth {
    registry_refreshing(secrets, issuer, "0s")
}

/// [`registry`] with `keysrefresh: <every>`.
fn registry_refreshing(secrets: &Secrets, issuer: &Issuer, every: &str) -> Berth {
    let every = every.to_string();
    let ca = pki::write(secrets.dir.path(), "oidc-ca.pem", &issuer.ca_pem);
    let dir = secrets.dir.path().display().to_string();
    let url = issuer.url.clone();
    Berth::start_with(move |root, addr| {
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: http://{addr}/auth/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {dir}/token.crt\n\
             token_server:\n  issuer: {ISSUER}\n  service: {SERVICE}\n  signingkey: {dir}/token.key\n  htpasswd: {dir}/htpasswd\n\
             \x20 throttle:\n    maxfailures: 0\n\
             \x20 oidc:\n    - issuer: {url}\n      audience: [{AUDIENCE}]\n      cafile: {ca}\n      account: repository\n      accountprefix: \"github:\"\n      keysrefresh: {every}\n      labels:\n        repository: repository\n        ref: ref\n\
             \x20 acl:\n    - match: {{account: \"/github:.+/\", labels: {{repository: org/app, ref: refs/heads/main}}, name: \"org/app/**\"}}\n      actions: [pull, push]\n\
             \x20   - match: {{account: \"/github:.+/\"}}\n      actions: [pull]\n\
             \x20   - match: {{account: alice}}\n      actions: [pull]\n",
            ca = ca.display(),
        )
    })
}

/// [`granted_with`] a CI job (any user name goes with an ID token).
fn granted_to(b: &Berth, password: &str, repo: &str) -> Result<Vec<String>, u16> {
    granted_with(b, "ci", password, repo)
}

#[test]
fn ci_jobs_log_in_with_their_id_token_and_get_what_their_claims_allow() {
    let k1 = IssuerKey::new("k1");
    let issuer = Issuer::start(&[&k1]);
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "alice-pass")]);
    let b = registry(&secrets, &issuer);

    // The right repository on main: push; elsewhere: pull.
    let main = k1.sign(&issuer.claims("org/app", "refs/heads/main"));
    assert_eq!(
        granted_to(&b, &main, "org/app/api"),
        Ok(vec!["pull".to_string(), "push".to_string()]),
        "{}",
        b.logs()
    );
    assert_eq!(
        granted_to(&b, &main, "other/app"),
        Ok(vec!["pull".to_string()])
    );
    // A branch, and a fork naming its own repository: no push.
    let branch = k1.sign(&issuer.claims("org/app", "refs/heads/feature"));
    assert_eq!(
        granted_to(&b, &branch, "org/app/api"),
        Ok(vec!["pull".to_string()])
    );
    let fork = k1.sign(&issuer.claims("evil/app", "refs/heads/main"));
    assert_eq!(
        granted_to(&b, &fork, "org/app/api"),
        Ok(vec!["pull".to_string()])
    );
    // People still log in with passwords.
    assert_eq!(
        granted_with(&b, "alice", "alice-pass", "org/app/api"),
        Ok(vec!["pull".to_string()])
    );

    // Refused outright.
    let mut c = issuer.claims("org/app", "refs/heads/main");
    c["aud"] = json!("someone-else");
    let wrong_audience = k1.sign(&c);
    let mut c = issuer.claims("org/app", "refs/heads/main");
    c["exp"] = json!(c["iat"].as_u64().unwrap() - 3600);
    let expired = k1.sign(&c);
    let mut c = issuer.claims("org/app", "refs/heads/main");
    c["nbf"] = json!(c["iat"].as_u64().unwrap() + 3600);
    let not_yet = k1.sign(&c);
    let mut c = issuer.claims("org/app", "refs/heads/main");
    c["iat"] = json!(u64::MAX);
    let from_the_future = k1.sign(&c);
    let mut c = issuer.claims("org/app", "refs/heads/main");
    c["repository"] = json!(42);
    let account_not_a_string = k1.sign(&c);
    let stranger = IssuerKey::new("k1");
    let forged = stranger.sign(&issuer.claims("org/app", "refs/heads/main"));
    let other = Issuer::start(&[&stranger]);
    let foreign = stranger.sign(&other.claims("org/app", "refs/heads/main"));
    let unknown_kid =
        IssuerKey::new("k-unknown").sign(&issuer.claims("org/app", "refs/heads/main"));
    let payload = URL_SAFE_NO_PAD.encode(issuer.claims("org/app", "refs/heads/main").to_string());
    let alg_none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hs256 = encode(
        &h,
        &issuer.claims("org/app", "refs/heads/main"),
        &EncodingKey::from_secret(k1.public_pem.as_bytes()),
    )
    .unwrap();
    for (what, token) in [
        ("wrong audience", &wrong_audience),
        ("expired", &expired),
        ("not valid yet (nbf)", &not_yet),
        ("issued at the end of time", &from_the_future),
        (
            "an account claim that is not a string",
            &account_not_a_string,
        ),
        ("signed by another key with the same kid", &forged),
        ("foreign issuer", &foreign),
        ("unknown kid", &unknown_kid),
        ("alg none", &alg_none),
        ("HS256 keyed with the public key", &hs256),
    ] {
        assert_eq!(granted_to(&b, token, "org/app/api"), Err(401), "{what}");
    }
    assert!(!b.logs().contains(&main), "an ID token was logged");

    // Key rotation: the issuer now signs with k2; the first k2 token makes
    // Berth fetch the keys again, and k1 tokens stop working once k1 is gone.
    let k2 = IssuerKey::new("k2");
    issuer.publish(&[&k2]);
    let fetched = *issuer.fetches.lock().unwrap();
    let rotated = k2.sign(&issuer.claims("org/app", "refs/heads/main"));
    assert_eq!(
        granted_to(&b, &rotated, "org/app/api").map(|a| a.len()),
        Ok(2)
    );
    assert!(*issuer.fetches.lock().unwrap() > fetched);
    let old = k1.sign(&issuer.claims("org/app", "refs/heads/main"));
    assert_eq!(granted_to(&b, &old, "org/app/api"), Err(401));

    // Never a refresh token for an ID-token login.
    let r = send(
        "POST",
        &token_url(&b),
        Auth::None,
        &[("content-type", "application/x-www-form-urlencoded")],
        format!(
            "grant_type=password&service={SERVICE}&client_id=docker&access_type=offline&username=ci&password={rotated}&scope=repository:org/app/api:pull"
        )
        .into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("refresh_token").is_none(), "{}", r.text());
}

#[test]
fn a_job_pushes_with_its_id_token_and_a_fork_cannot() {
    let k1 = IssuerKey::new("k1");
    let issuer = Issuer::start(&[&k1]);
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "alice-pass")]);
    let b = registry(&secrets, &issuer);
    let base = b.url("");
    let fork = k1.sign(&issuer.claims("evil/app", "refs/heads/main"));
    let before = files(&b.root);
    let r = push_image(&base, "org/app/api", "v1", Some(("ci", &fork)));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(files(&b.root), before, "a refused push stored something");
    let main = k1.sign(&issuer.claims("org/app", "refs/heads/main"));
    let r = push_image(&base, "org/app/api", "v1", Some(("ci", &main)));
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn distribution_accepts_tokens_issued_for_id_token_logins() {
    let k1 = IssuerKey::new("k1");
    let issuer = Issuer::start(&[&k1]);
    let secrets = Secrets::new(KeyKind::Rsa, &[("alice", "alice-pass")]);
    let berth = registry(&secrets, &issuer);
    let cert = secrets.path("token.crt");
    let realm = token_url(&berth);
    let dist = crate::distribution::start_distribution(&realm, &cert);
    let job = k1.sign(&issuer.claims("org/app", "refs/heads/main"));
    let put = push_image(&dist.url(""), "org/app/api", "v1", Some(("ci", &job)));
    assert_eq!(put.status, 201, "{}\n{}", put.text(), dist.logs());
    let pulled = pull_manifest(
        &dist.url(""),
        "org/app/api",
        "v1",
        Some(("alice", "alice-pass")),
    );
    assert_eq!(pulled.status, 200, "{}", pulled.text());
}

#[test]
fn an_issuer_that_is_down_fails_its_own_logins_only() {
    let k1 = IssuerKey::new("k1");
    let issuer = Issuer::start(&[&k1]);
    let job = k1.sign(&issuer.claims("org/app", "refs/heads/main"));
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "alice-pass")]);
    let warm = registry(&secrets, &issuer);
    // Keys fetched once while the issuer answers ...
    assert!(granted_to(&warm, &job, "org/app/api").is_ok());
    let cold = registry(&secrets, &issuer);
    drop(issuer);
    // ... keep serving the tokens they verify; a registry that never got
    // them answers 503 (retry), never an allow; passwords work throughout.
    assert!(granted_to(&warm, &job, "org/app/api").is_ok());
    assert_eq!(granted_to(&cold, &job, "org/app/api"), Err(503));
    for b in [&warm, &cold] {
        assert_eq!(
            granted_with(b, "alice", "alice-pass", "org/app/api"),
            Ok(vec!["pull".to_string()])
        );
    }
}

#[test]
fn unknown_key_ids_fetch_the_keys_at_most_every_keysrefresh() {
    let k1 = IssuerKey::new("k1");
    let issuer = Issuer::start(&[&k1]);
    let secrets = Secrets::new(KeyKind::EcP256, &[("alice", "alice-pass")]);
    let b = registry_refreshing(&secrets, &issuer, "1h");
    let job = k1.sign(&issuer.claims("org/app", "refs/heads/main"));
    assert!(granted_to(&b, &job, "org/app/api").is_ok());
    assert_eq!(*issuer.fetches.lock().unwrap(), 1);
    // Random key ids cannot make Berth hammer the issuer.
    for i in 0..5 {
        let t = IssuerKey::new(&format!("random-{i}"))
            .sign(&issuer.claims("org/app", "refs/heads/main"));
        assert_eq!(granted_to(&b, &t, "org/app/api"), Err(401));
    }
    assert_eq!(*issuer.fetches.lock().unwrap(), 1);
}
