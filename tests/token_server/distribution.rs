//! The wider ecosystem: CNCF distribution 2.8 (Debian's `docker-registry`)
//! configured with `auth.token` pointing at Berth's token server, trusting
//! the signing key's certificate. It finds the key by the libtrust `kid`,
//! so this proves the header, claims and signature formats, for RSA and
//! ECDSA keys alike.

use crate::{common::distribution::Distribution, support::*};

/// distribution trusting `cert` for tokens from `realm`.
pub fn start_distribution(realm: &str, cert: &str) -> Distribution {
    Distribution::start(|dir, addr| {
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: interop\n\
             auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
            root = dir.join("data").display(),
        )
    })
}

fn interop(kind: KeyKind, alg: &str) {
    let secrets = Secrets::new(kind, &[("ci", "ci-pass"), ("alice", "alice-pass")]);
    let berth = start_fixture("ci-push.yml", &secrets, "");
    let dist = start_distribution(&token_url(&berth), &secrets.path("token.crt"));
    let base = dist.url("");

    // distribution's challenge sends clients to Berth.
    let r = get(&dist.url("/v2/"), Auth::None);
    assert_eq!(r.status, 401, "{}", dist.logs());
    let c = challenge(r.header("www-authenticate").unwrap());
    assert_eq!(c["realm"], token_url(&berth));

    // Berth-issued tokens: a whole push as ci, a pull as alice.
    let t = token(
        &berth,
        "repository:interop/app:pull",
        Auth::Basic("ci", "ci-pass"),
    );
    assert_eq!(jwt_parts(&t).0["alg"], alg);
    let put = push_image(&base, "interop/app", "v1", Some(("ci", "ci-pass")));
    assert_eq!(put.status, 201, "{}\n{}", put.text(), dist.logs());
    let pulled = pull_manifest(&base, "interop/app", "v1", Some(("alice", "alice-pass")));
    assert_eq!(pulled.status, 200, "{}\n{}", pulled.text(), dist.logs());
    assert_eq!(
        pulled.header("docker-content-digest"),
        put.header("docker-content-digest")
    );

    // alice's token lists the push scope with no actions: distribution
    // refuses (it answers 401 insufficient_scope where Berth says 403).
    let r = push_image(&base, "interop/app", "alice", Some(("alice", "alice-pass")));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("insufficient_scope"),
        "{:?}",
        r.headers
    );

    // A token from another token server (another key) is refused.
    let stranger = Secrets::new(KeyKind::EcP256, &[("ci", "ci-pass")]);
    let other = start_fixture("ci-push.yml", &stranger, "");
    let t = token(
        &other,
        "repository:interop/app:pull",
        Auth::Basic("ci", "ci-pass"),
    );
    let r = get(&dist.url("/v2/interop/app/manifests/v1"), Auth::Bearer(&t));
    assert_eq!(r.status, 401, "a foreign key's token must not pass");
}

#[test]
fn distribution_accepts_berth_tokens_rs256() {
    interop(KeyKind::Rsa, "RS256");
}

#[test]
fn distribution_accepts_berth_tokens_es256() {
    interop(KeyKind::EcP256, "ES256");
}
