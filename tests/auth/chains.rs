//! `x5c` chains in token headers are verified as PKI paths to
//! `rootcertbundle`, the way distribution's Go `x509.Verify` does: every
//! forged or broken chain is refused with 401 even when its token claims
//! push, and nothing reaches storage; a proper leaf ← intermediate ← root
//! chain is accepted.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::Berth;

const ISSUER: &str = "chain-issuer";
const SERVICE: &str = "chain-registry";
const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// A certificate with its key.
struct Cert {
    cert: Certificate,
    key: KeyPair,
}

enum Kind {
    /// CA:TRUE, keyCertSign (and digitalSignature, so a CA certificate used
    /// as the signer is refused for being a CA); `Some(n)`: pathLenConstraint n.
    Ca(Option<u8>),
    /// An end entity that says so (CA:FALSE), digitalSignature.
    Leaf,
    /// CA:FALSE on a certificate used as an intermediate.
    NotCa,
}

fn params(cn: &str, kind: Kind) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    match kind {
        Kind::Ca(len) => {
            p.is_ca = IsCa::Ca(match len {
                Some(n) => BasicConstraints::Constrained(n),
                None => BasicConstraints::Unconstrained,
            });
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        }
        Kind::Leaf | Kind::NotCa => {
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
    }
    p
}

fn self_signed(p: CertificateParams) -> Cert {
    let key = KeyPair::generate().unwrap();
    Cert {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

fn issue(p: CertificateParams, by: &Cert) -> Cert {
    let key = KeyPair::generate().unwrap();
    Cert {
        cert: p.signed_by(&key, &by.cert, &by.key).unwrap(),
        key,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token claiming pull and push on team/app, signed by `chain[0]`'s key,
/// with the chain in its `x5c` header.
fn token(chain: &[&Cert]) -> String {
    let claims = json!({"iss": ISSUER, "sub": "mallory", "aud": SERVICE,
        "exp": now() + 300, "nbf": now() - 5, "iat": now(), "jti": "1",
        "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]});
    let mut h = Header::new(Algorithm::ES256);
    h.x5c = Some(
        chain
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c.cert.der()))
            .collect(),
    );
    let key = EncodingKey::from_ec_pem(chain[0].key.serialize_pem().as_bytes()).unwrap();
    encode(&h, &claims, &key).unwrap()
}

/// A monolithic blob push with `token`.
async fn push(b: &Berth, token: &str) -> reqwest::Response {
    crate::common::http::client()
        .post(b.url(&format!("/v2/team/app/blobs/uploads/?digest={HELLO}")))
        .bearer_auth(token)
        .body("hello")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forged_and_broken_chains_are_refused_and_a_real_one_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root = self_signed(params("Corp Root CA", Kind::Ca(None)));
    // A second root that allows no intermediate below it.
    let strict_root = self_signed(params("Strict Root CA", Kind::Ca(Some(0))));
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, root.cert.pem() + &strict_root.cert.pem()).unwrap();
    let bundle = bundle.display().to_string();
    let b = Berth::start_with(move |data, addr| {
        format!(
            "storage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: {addr}\n  secret: s\n\
             auth:\n  token:\n    realm: https://auth.example.com/token\n    service: {SERVICE}\n    \
             issuer: {ISSUER}\n    rootcertbundle: {bundle}\n"
        )
    });

    // Any TLS server certificate the corporate CA issued (CA:FALSE)...
    let server = issue(params("www.corp.example", Kind::Leaf), &root);
    // ...signing a certificate of the attacker's own.
    let attacker = issue(params("mallory", Kind::Leaf), &server);
    // A self-signed CA that copies the root's name, and a leaf under it.
    let lookalike = self_signed(params("Corp Root CA", Kind::Ca(None)));
    let under_lookalike = issue(params("signer", Kind::Leaf), &lookalike);
    // An intermediate that expired long ago.
    let mut expired_p = params("Expired Intermediate", Kind::Ca(None));
    expired_p.not_before = date_time_ymd(2000, 1, 1);
    expired_p.not_after = date_time_ymd(2001, 1, 1);
    let expired = issue(expired_p, &root);
    let under_expired = issue(params("signer", Kind::Leaf), &expired);
    // An intermediate that says it is no CA.
    let not_ca = issue(params("Not A CA", Kind::NotCa), &root);
    let under_not_ca = issue(params("signer", Kind::Leaf), &not_ca);
    // pathLenConstraint 0 on an intermediate with another CA below it.
    let zero = issue(params("Issuing CA 0", Kind::Ca(Some(0))), &root);
    let deeper = issue(params("Deeper CA", Kind::Ca(None)), &zero);
    let under_deeper = issue(params("signer", Kind::Leaf), &deeper);
    // ... and on the bundle's root itself, with one intermediate below it.
    let below_strict = issue(params("Below Strict", Kind::Ca(None)), &strict_root);
    let under_strict = issue(params("signer", Kind::Leaf), &below_strict);
    // An intermediate whose key usage does not allow signing certificates.
    let mut no_cert_sign_p = params("No CertSign CA", Kind::Ca(None));
    no_cert_sign_p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let no_cert_sign = issue(no_cert_sign_p, &root);
    let under_no_cert_sign = issue(params("signer", Kind::Leaf), &no_cert_sign);
    // A signer whose key usage excludes signatures.
    let mut no_sig_p = params("signer", Kind::Leaf);
    no_sig_p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let no_sig = issue(no_sig_p, &root);

    let cases: Vec<(&str, String)> = vec![
        ("leaf signed by a leaf", token(&[&attacker, &server])),
        ("self-signed lookalike of the root", token(&[&lookalike])),
        (
            "leaf under a lookalike of the root",
            token(&[&under_lookalike, &lookalike]),
        ),
        ("expired intermediate", token(&[&under_expired, &expired])),
        (
            "intermediate with CA:FALSE",
            token(&[&under_not_ca, &not_ca]),
        ),
        (
            "path length of an intermediate",
            token(&[&under_deeper, &deeper, &zero]),
        ),
        (
            "path length of the bundle's root",
            token(&[&under_strict, &below_strict]),
        ),
        (
            "issuer without keyCertSign",
            token(&[&under_no_cert_sign, &no_cert_sign]),
        ),
        ("signer without digitalSignature", token(&[&no_sig])),
        ("intermediate missing", token(&[&under_deeper, &zero])),
    ];
    let before = crate::common::files_under(&b.root);
    for (what, t) in &cases {
        let r = push(&b, t).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.contains("error=\"invalid_token\""), "{what}: {www}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{what}");
        assert_eq!(
            crate::common::files_under(&b.root),
            before,
            "{what}: storage unchanged"
        );
    }
    assert!(b.logs().contains("x5c"), "refusals are logged with why");

    // The real thing: leaf ← intermediate ← root, in any order after the leaf;
    // and straight under the strict root (no intermediate: within its length).
    let issuing = issue(params("Issuing CA", Kind::Ca(Some(0))), &root);
    let signer = issue(params("token-signer", Kind::Leaf), &issuing);
    let direct = issue(params("token-signer-2", Kind::Leaf), &strict_root);
    for (what, t) in [
        ("leaf, intermediate", token(&[&signer, &issuing])),
        (
            "leaf, intermediate, root",
            token(&[&signer, &issuing, &root]),
        ),
        ("leaf under a pathlen-0 root", token(&[&direct])),
    ] {
        let r = push(&b, &t).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{what}");
    }
    let blob = b
        .root
        .join("docker/registry/v2/blobs/sha256/2c")
        .join(&HELLO[7..])
        .join("data");
    assert_eq!(std::fs::read(blob).unwrap(), b"hello");
}
