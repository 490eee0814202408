//! Bearer tokens minted the way an external token server (docker_auth) mints
//! them, and every way a token can be wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::Berth;
use crate::keys::{b64, leaf_signed_by, self_signed, Key};

const ISSUER: &str = "test-issuer";
const SERVICE: &str = "test-registry";
const REALM: &str = "https://auth.example.com/token";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(access: Value) -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": SERVICE, "exp": now() + 300, "nbf": now() - 5,
           "iat": now(), "jti": "1", "access": access})
}

fn pull_push(name: &str) -> Value {
    json!([{"type": "repository", "name": name, "actions": ["pull", "push"]}])
}

fn kid(k: &Key) -> String {
    berth::auth::token::libtrust_key_id(&k.spki_der)
}

fn mint(alg: Algorithm, key: &Key, header_kid: Option<String>, body: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = header_kid;
    let ek = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&key.key_pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&key.key_pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&key.key_pem).unwrap(),
    };
    encode(&h, body, &ek).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    rsa: Key,
    ec: Key,
    ed: Key,
    other: Key,
    ca: Key,
    leaf: Key,
    berth: Berth,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let rsa = self_signed(p, "rsa", "rsa");
    let ec = self_signed(p, "ec", "ec");
    let ed = self_signed(p, "ed", "ed25519");
    let other = self_signed(p, "other", "rsa");
    let ca = self_signed(p, "ca", "ec");
    let leaf = leaf_signed_by(p, "leaf", "ca", "ec");
    // The bundle: the three signing certs and the CA (not the leaf, not `other`).
    let bundle = p.join("bundle.pem");
    std::fs::write(
        &bundle,
        [&rsa.cert_pem[..], &ec.cert_pem, &ed.cert_pem, &ca.cert_pem].concat(),
    )
    .unwrap();
    let bundle = bundle.display().to_string();
    let berth = Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nauth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n"
        )
    });
    Setup {
        _dir: dir,
        rsa,
        ec,
        ed,
        other,
        ca,
        leaf,
        berth,
    }
}

async fn status_with(b: &Berth, method: Method, path: &str, token: &str) -> reqwest::Response {
    crate::common::http::client()
        .request(method, b.url(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn challenge_names_realm_service_and_scope() {
    let s = setup();
    let http = crate::common::http::client();
    let r = http.get(s.berth.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")
    );
    let r = http
        .post(
            s.berth
                .url("/v2/team/app/blobs/uploads/?mount=sha256:00&from=base/img"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:team/app:pull,push repository:base/img:pull\"")
    );
    let r = http.get(s.berth.url("/v2/_catalog")).send().await.unwrap();
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .ends_with("scope=\"registry:catalog:*\""));
    let r = http
        .delete(s.berth.url("/v2/a/manifests/t"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .ends_with("scope=\"repository:a:delete\""));
}

#[tokio::test]
async fn valid_tokens_from_every_key_kind_are_accepted() {
    let s = setup();
    let b = &s.berth;
    let c = claims(pull_push("team/app"));
    let tokens = [
        mint(Algorithm::RS256, &s.rsa, Some(kid(&s.rsa)), &c),
        mint(Algorithm::RS512, &s.rsa, Some(kid(&s.rsa)), &c),
        mint(Algorithm::PS256, &s.rsa, Some(kid(&s.rsa)), &c),
        mint(Algorithm::ES256, &s.ec, Some(kid(&s.ec)), &c),
        mint(Algorithm::EdDSA, &s.ed, Some(kid(&s.ed)), &c),
    ];
    for t in &tokens {
        let r = status_with(b, Method::GET, "/v2/team/app/tags/list", t).await;
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "authorized, then NAME_UNKNOWN"
        );
    }
    // An x5c chain ending in a CA of the bundle, no kid.
    let mut h = Header::new(Algorithm::ES256);
    h.x5c = Some(vec![b64(&s.leaf.cert_der), b64(&s.ca.cert_der)]);
    let t = encode(&h, &c, &EncodingKey::from_ec_pem(&s.leaf.key_pem).unwrap()).unwrap();
    assert_eq!(
        status_with(b, Method::GET, "/v2/team/app/tags/list", &t)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // A push with the token goes through.
    let r = crate::common::http::client()
        .post(b.url("/v2/team/app/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"))
        .header("authorization", format!("Bearer {}", tokens[0]))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn every_bad_token_is_refused() {
    let s = setup();
    let b = &s.berth;
    let path = "/v2/team/app/tags/list";
    let good = claims(pull_push("team/app"));
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        mint(Algorithm::RS256, &s.rsa, Some(kid(&s.rsa)), &c)
    };
    let b64u = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64u(&json!({"alg": "none", "typ": "JWT"})),
        b64u(&good)
    );
    // HS256 keyed with the public certificate: the classic algorithm confusion.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid(&s.rsa));
    let confused = encode(&hs, &good, &EncodingKey::from_secret(&s.rsa.cert_pem)).unwrap();
    let good_token = with(json!({}));
    let (head, rest) = good_token.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut flipped = sig.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let wrong_sig = format!("{head}.{payload}.{}", String::from_utf8(flipped).unwrap());
    let mut tampered_claims = good.clone();
    tampered_claims["access"] = pull_push("*");
    let tampered = format!("{head}.{}.{sig}", b64u(&tampered_claims));
    let mut x5c_h = Header::new(Algorithm::RS256);
    x5c_h.x5c = Some(vec![b64(&s.other.cert_der)]);
    let untrusted_chain = encode(
        &x5c_h,
        &good,
        &EncodingKey::from_rsa_pem(&s.other.key_pem).unwrap(),
    )
    .unwrap();

    let cases: Vec<(&str, String)> = vec![
        ("alg none", none),
        ("HS256 with public key as secret", confused),
        ("wrong signature", wrong_sig),
        ("tampered claims", tampered),
        (
            "unknown key",
            mint(Algorithm::RS256, &s.other, Some(kid(&s.other)), &good),
        ),
        ("no kid", mint(Algorithm::RS256, &s.rsa, None, &good)),
        ("x5c not from bundle", untrusted_chain),
        (
            "ES256 header on RSA kid",
            mint(Algorithm::ES256, &s.ec, Some(kid(&s.rsa)), &good),
        ),
        ("expired", with(json!({"exp": now() - 3600}))),
        ("not yet valid", with(json!({"nbf": now() + 3600}))),
        ("wrong issuer", with(json!({"iss": "evil"}))),
        (
            "wrong audience (token for another service)",
            with(json!({"aud": "other-registry"})),
        ),
        ("no audience", with(json!({"aud": null}))),
        ("oversized", with(json!({"pad": "x".repeat(20_000)}))),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, token) in cases {
        let r = status_with(b, Method::GET, path, &token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.contains("error=\"invalid_token\""), "{what}: {www}");
    }
    // "Bearer" with nothing after it is no token at all: a plain challenge.
    let r = status_with(b, Method::GET, path, "").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scope_is_enforced() {
    let s = setup();
    let b = &s.berth;
    let t = |access: Value| mint(Algorithm::ES256, &s.ec, Some(kid(&s.ec)), &claims(access));
    let pull_only = t(json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}]));
    let other_repo = t(pull_push("team/other"));
    let denied = t(json!([{"type": "repository", "name": "team/app", "actions": []}]));
    let star = t(json!([{"type": "repository", "name": "team/app", "actions": ["*"]}]));

    let r = status_with(b, Method::GET, "/v2/team/app/tags/list", &other_repo).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a token for another repository"
    );
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));

    let before = std::fs::read_dir(&b.root).map(|d| d.count()).unwrap_or(0);
    let r = status_with(b, Method::POST, "/v2/team/app/blobs/uploads/", &pull_only).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "pull-only token cannot push"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let r = status_with(b, Method::GET, "/v2/team/app/tags/list", &denied).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "explicit denial");
    let r = status_with(
        b,
        Method::DELETE,
        "/v2/team/app/manifests/latest",
        &pull_only,
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another action");
    assert_eq!(
        std::fs::read_dir(&b.root).map(|d| d.count()).unwrap_or(0),
        before,
        "storage unchanged"
    );

    let r = status_with(b, Method::POST, "/v2/team/app/blobs/uploads/", &star).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "* grants every action");
    let r = status_with(b, Method::GET, "/v2/_catalog", &star).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "catalog needs registry:catalog:*"
    );
    let cat = t(json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]));
    assert_eq!(
        status_with(b, Method::GET, "/v2/_catalog", &cat)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwks_keys_are_used_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let ec = self_signed(dir.path(), "jw", "ec");
    // Build the JWK from the SPKI's uncompressed point (04 || x || y).
    let point = &ec.spki_der[ec.spki_der.len() - 65..];
    let b64u = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "key-1", "use": "sig", "alg": "ES256",
        "x": b64u(&point[1..33]), "y": b64u(&point[33..])}]});
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let p = path.display().to_string();
    let b = Berth::start_with(move |root, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\n  secret: s\nauth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    jwks: {p}\n    signingalgorithms: [ES256]\n"
        )
    });
    let c = claims(pull_push("x"));
    let ok = mint(Algorithm::ES256, &ec, Some("key-1".into()), &c);
    assert_eq!(
        status_with(&b, Method::GET, "/v2/x/tags/list", &ok)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let bad_kid = mint(Algorithm::ES256, &ec, Some("key-2".into()), &c);
    assert_eq!(
        status_with(&b, Method::GET, "/v2/x/tags/list", &bad_kid)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}
