//! Bearer token verification (docker's token spec): JWTs signed by a token
//! server — an external one such as docker_auth, or Berth's own.
//!
//! Keys come from `rootcertbundle` (by libtrust `kid`, as distribution and
//! docker_auth compute it, or as roots of an `x5c` chain in the token header,
//! verified as a PKI path: [`super::x5c`]) and from a `jwks` file (by `kid`).
//! Only asymmetric algorithms are accepted, so `alg: none` and
//! HS256-with-the-public-key-as-secret are impossible. The bundle and the
//! JWKS are read once, when the verifier is built.

use std::collections::HashMap;

use base64::{engine::general_purpose::STANDARD, Engine};
use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use x509_parser::prelude::*;

use super::{access::Access, x5c::Roots};
use crate::config::auth::TokenConfig;

/// Tokens larger than this are refused before parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated on exp/nbf, as distribution does.
const LEEWAY_SECS: u64 = 60;

const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::EdDSA,
];

/// One `access` entry of a token.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    access: Vec<ResourceActions>,
}

/// Why a token does not let a request through.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenRejection {
    /// Missing, malformed, badly signed, expired, wrong issuer/audience...
    Invalid(String),
    /// Valid, but the resource is not in it at all: ask for a better token.
    InsufficientScope,
    /// Valid and it names the resource, without the action: the token server
    /// decided, so asking again will not help.
    Denied(String),
}

struct KeyEntry {
    key: DecodingKey,
    family: KeyFamily,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

fn family_of(alg: Algorithm) -> Option<KeyFamily> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(KeyFamily::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(KeyFamily::Ec),
        Algorithm::EdDSA => Some(KeyFamily::Ed),
        _ => None,
    }
}

pub struct TokenVerifier {
    issuer: String,
    service: String,
    algorithms: Vec<Algorithm>,
    /// Keys by `kid`.
    keys: HashMap<String, KeyEntry>,
    /// The bundle's certificates as roots for `x5c` chains.
    roots: Roots,
}

/// docker/libtrust's key id: the SHA-256 of the DER SubjectPublicKeyInfo,
/// first 240 bits, base32, in groups of four joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let sum = Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&sum[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn key_from_spki(spki: &SubjectPublicKeyInfo) -> Option<KeyEntry> {
    let raw = spki.subject_public_key.data.as_ref();
    let oid = spki.algorithm.algorithm.to_id_string();
    let (key, family) = match oid.as_str() {
        "1.2.840.113549.1.1.1" => (DecodingKey::from_rsa_der(raw), KeyFamily::Rsa),
        "1.2.840.10045.2.1" => (DecodingKey::from_ec_der(raw), KeyFamily::Ec),
        "1.3.101.112" => (DecodingKey::from_ed_der(raw), KeyFamily::Ed),
        _ => return None,
    };
    Some(KeyEntry { key, family })
}

impl TokenVerifier {
    pub fn new(cfg: &TokenConfig) -> Result<TokenVerifier, String> {
        let mut keys = HashMap::new();
        let mut roots = Vec::new();
        if !cfg.rootcertbundle.is_empty() {
            let pem = std::fs::read(&cfg.rootcertbundle).map_err(|e| {
                format!(
                    "auth.token.rootcertbundle: cannot read {}: {e}",
                    cfg.rootcertbundle
                )
            })?;
            for p in Pem::iter_from_buffer(&pem) {
                let p = p.map_err(|e| format!("auth.token.rootcertbundle: {e}"))?;
                if p.label != "CERTIFICATE" {
                    continue;
                }
                let cert = p
                    .parse_x509()
                    .map_err(|e| format!("auth.token.rootcertbundle: bad certificate: {e}"))?;
                let spki = cert.public_key();
                if let Some(entry) = key_from_spki(spki) {
                    keys.insert(libtrust_key_id(spki.raw), entry);
                }
                roots.push(p.contents.clone());
            }
            if roots.is_empty() {
                return Err("auth.token.rootcertbundle: no certificates found".into());
            }
        }
        let roots = Roots::new(&roots).map_err(|e| format!("auth.token.rootcertbundle: {e}"))?;
        if !cfg.jwks.is_empty() {
            let text = std::fs::read_to_string(&cfg.jwks)
                .map_err(|e| format!("auth.token.jwks: cannot read {}: {e}", cfg.jwks))?;
            let set: JwkSet =
                serde_json::from_str(&text).map_err(|e| format!("auth.token.jwks: {e}"))?;
            for jwk in &set.keys {
                let Some(kid) = jwk.common.key_id.clone() else {
                    continue;
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.token.jwks: key {kid}: {e}"))?;
                let family = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
                    _ => continue, // symmetric keys are never trusted
                };
                keys.insert(kid, KeyEntry { key, family });
            }
        }
        let algorithms = if cfg.signingalgorithms.is_empty() {
            ASYMMETRIC.to_vec()
        } else {
            cfg.signingalgorithms
                .iter()
                .map(|a| {
                    a.parse::<Algorithm>()
                        .ok()
                        .filter(|alg| family_of(*alg).is_some())
                        .ok_or_else(|| {
                            format!(
                                "auth.token.signingalgorithms: {a:?} is not an accepted algorithm"
                            )
                        })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(TokenVerifier {
            issuer: cfg.issuer.clone(),
            service: cfg.service.clone(),
            algorithms,
            keys,
            roots,
        })
    }

    /// The key a token's header points at: by `kid`, or the leaf of an `x5c`
    /// chain that ends in one of the bundle's certificates.
    fn key_for(&self, header: &jsonwebtoken::Header) -> Result<KeyEntry, String> {
        if let Some(chain) = &header.x5c {
            return self.key_from_chain(chain);
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or("token names no key (kid or x5c)")?;
        let entry = self
            .keys
            .get(kid)
            .ok_or_else(|| format!("unknown signing key {kid:?}"))?;
        Ok(KeyEntry {
            key: entry.key.clone(),
            family: entry.family,
        })
    }

    fn key_from_chain(&self, chain: &[String]) -> Result<KeyEntry, String> {
        let ders: Vec<Vec<u8>> = chain
            .iter()
            .map(|c| {
                STANDARD
                    .decode(c)
                    .map_err(|_| "x5c: bad base64".to_string())
            })
            .collect::<Result<_, _>>()?;
        self.roots
            .verify(&ders, rustls::pki_types::UnixTime::now())
            .map_err(|e| format!("x5c: {e}"))?;
        let (_, leaf) = parse_x509_certificate(&ders[0]).map_err(|_| "x5c: bad certificate")?;
        key_from_spki(leaf.public_key()).ok_or_else(|| "x5c: unsupported key type".into())
    }

    /// Verify `token` and that it grants every access in `need`.
    /// Returns the token's subject (the account).
    pub fn verify(&self, token: &str, need: &[Access]) -> Result<String, TokenRejection> {
        let claims = self.claims(token)?;
        for a in need {
            let entries: Vec<&ResourceActions> = claims
                .access
                .iter()
                .filter(|r| r.kind == a.kind && r.name == a.name)
                .collect();
            if entries.is_empty() {
                return Err(TokenRejection::InsufficientScope);
            }
            if !entries
                .iter()
                .any(|r| r.actions.iter().any(|x| x == &a.action || x == "*"))
            {
                return Err(TokenRejection::Denied(format!(
                    "{} {}:{} is not granted",
                    a.action, a.kind, a.name
                )));
            }
        }
        Ok(claims.sub)
    }

    /// Verify `token` and return its subject and every access it grants
    /// (the web UI asks an outside token server what an account may do).
    pub fn granted(&self, token: &str) -> Result<(String, Vec<ResourceActions>), TokenRejection> {
        self.claims(token).map(|c| (c.sub, c.access))
    }

    /// The claims of a token that is well signed, by a key we trust, for
    /// us, and current.
    fn claims(&self, token: &str) -> Result<Claims, TokenRejection> {
        let invalid = |m: String| TokenRejection::Invalid(m);
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too large".into()));
        }
        let header = decode_header(token).map_err(|e| invalid(format!("malformed token: {e}")))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid(format!(
                "signing algorithm {:?} not accepted",
                header.alg
            )));
        }
        let entry = self.key_for(&header).map_err(invalid)?;
        if family_of(header.alg) != Some(entry.family) {
            return Err(invalid("algorithm does not match the key type".into()));
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECS;
        let data = decode::<Claims>(token, &entry.key, &v)
            .map_err(|e| invalid(format!("token rejected: {e}")))?;
        Ok(data.claims)
    }
}

/// Property tests: whatever a client sends as a bearer token, `verify`
/// neither panics nor lets it through, and says why with the right kind.
#[cfg(test)]
mod props {
    use std::sync::LazyLock;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    const ISSUER: &str = "iss";
    const SERVICE: &str = "svc";

    struct Fixture {
        verifier: TokenVerifier,
        key: EncodingKey,
        kid: String,
        /// DER of the bundle's certificate, for x5c headers.
        cert: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
        let dir = tempfile::tempdir().unwrap();
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["signer".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, cert.pem()).unwrap();
        let verifier = TokenVerifier::new(&TokenConfig {
            realm: "https://auth".into(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: bundle.display().to_string(),
            ..Default::default()
        })
        .unwrap();
        Fixture {
            verifier,
            key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            kid: libtrust_key_id(&kp.public_key_der()),
            cert: cert.der().to_vec(),
            _dir: dir,
        }
    });

    fn need() -> Vec<Access> {
        vec![Access {
            kind: "repository".into(),
            name: "a".into(),
            action: "pull".into(),
        }]
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Arbitrary JSON, a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A header a client might send: real and made-up algorithms, kids, and
    /// x5c chains of garbage or of the bundle's own certificate.
    fn header() -> impl Strategy<Value = Value> {
        let alg = prop_oneof![
            Just("ES256".to_string()),
            Just("RS256".to_string()),
            Just("EdDSA".to_string()),
            Just("HS256".to_string()),
            Just("none".to_string()),
            ".{0,8}",
        ];
        let x5c = prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300)
                    .prop_map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
                Just(base64::engine::general_purpose::STANDARD.encode(&FIXTURE.cert)),
                ".{0,40}",
            ],
            0..4,
        );
        (
            alg,
            prop::option::of(prop_oneof![Just(FIXTURE.kid.clone()), ".{0,20}"]),
            prop::option::of(x5c),
            prop::option::of(json_value()),
        )
            .prop_map(|(alg, kid, x5c, extra)| {
                let mut h = json!({"alg": alg, "typ": "JWT"});
                if let Some(k) = kid {
                    h["kid"] = k.into();
                }
                if let Some(c) = x5c {
                    h["x5c"] = c.into();
                }
                if let Some(e) = extra {
                    h["extra"] = e;
                }
                h
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_text_is_refused_as_invalid(token in ".{0,300}") {
            let r = FIXTURE.verifier.verify(&token, &need());
            prop_assert!(matches!(r, Err(TokenRejection::Invalid(_))), "{r:?}");
        }

        #[test]
        fn arbitrary_segments_are_refused_as_invalid(
            segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..5),
            encode_them in any::<bool>(),
        ) {
            let token = segments
                .iter()
                .map(|s| if encode_them { b64(s) } else { String::from_utf8_lossy(s).into_owned() })
                .collect::<Vec<_>>()
                .join(".");
            let r = FIXTURE.verifier.verify(&token, &need());
            prop_assert!(matches!(r, Err(TokenRejection::Invalid(_))), "{r:?}");
        }

        /// Well-formed JSON in every segment, but never our signature.
        #[test]
        fn unsigned_headers_and_claims_are_refused_as_invalid(
            header in header(),
            claims in json_value(),
            signature in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            let token = format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes()),
                b64(&signature)
            );
            let r = FIXTURE.verifier.verify(&token, &need());
            prop_assert!(matches!(r, Err(TokenRejection::Invalid(_))), "{r:?}");
        }
    }

    /// One access entry as a token server might write it.
    fn entry() -> impl Strategy<Value = (String, String, Vec<String>)> {
        (
            prop_oneof![Just("repository"), Just("registry"), Just("x")],
            prop_oneof![Just("a"), Just("b"), Just("catalog")],
            prop::collection::vec(
                prop_oneof![
                    Just("pull"),
                    Just("push"),
                    Just("delete"),
                    Just("*"),
                    Just("")
                ],
                0..3,
            ),
        )
            .prop_map(|(k, n, a)| {
                (
                    k.to_string(),
                    n.to_string(),
                    a.into_iter().map(str::to_string).collect(),
                )
            })
    }

    /// What the token spec says a set of entries grants `need`.
    fn expected(
        access: &[(String, String, Vec<String>)],
        need: &[Access],
    ) -> Result<String, &'static str> {
        for a in need {
            let entries: Vec<_> = access
                .iter()
                .filter(|(k, n, _)| *k == a.kind && *n == a.name)
                .collect();
            if entries.is_empty() {
                return Err("insufficient_scope");
            }
            if !entries
                .iter()
                .any(|(_, _, acts)| acts.iter().any(|x| *x == a.action || x == "*"))
            {
                return Err("denied");
            }
        }
        Ok("alice".into())
    }

    proptest! {
        // Each case signs a token (P-256, unoptimised in tests): fewer cases.
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Signed tokens with any access entries: exactly what they grant.
        #[test]
        fn signed_access_claims_grant_exactly_what_they_list(
            access in prop::collection::vec(entry(), 0..4),
            need in prop::collection::vec(
                (prop_oneof![Just("repository"), Just("registry")],
                 prop_oneof![Just("a"), Just("catalog")],
                 prop_oneof![Just("pull"), Just("push"), Just("*")]),
                0..3,
            ),
        ) {
            let need: Vec<Access> = need
                .into_iter()
                .map(|(k, n, a)| Access { kind: k.into(), name: n.into(), action: a.into() })
                .collect();
            let now = unix_now();
            let claims = json!({
                "iss": ISSUER, "aud": SERVICE, "sub": "alice", "exp": now + 300, "nbf": now - 5,
                "access": access.iter().map(|(k, n, a)| json!({"type": k, "name": n, "actions": a}))
                    .collect::<Vec<_>>(),
            });
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(FIXTURE.kid.clone());
            let token = encode(&h, &claims, &FIXTURE.key).unwrap();
            let got = match FIXTURE.verifier.verify(&token, &need) {
                Ok(sub) => Ok(sub),
                Err(TokenRejection::InsufficientScope) => Err("insufficient_scope"),
                Err(TokenRejection::Denied(_)) => Err("denied"),
                Err(TokenRejection::Invalid(why)) => panic!("a valid token refused: {why}"),
            };
            prop_assert_eq!(got, expected(&access, &need));
        }

        /// Signed, but with any JSON where the claims go: never a panic, and
        /// a malformed `access` or a missing exp/iss/aud is invalid.
        #[test]
        fn signed_malformed_claims_are_invalid(access in json_value(), drop in 0usize..4) {
            let now = unix_now();
            let mut claims = json!({"iss": ISSUER, "aud": SERVICE, "exp": now + 300, "access": access});
            let dropped = ["iss", "aud", "exp", ""][drop];
            claims.as_object_mut().unwrap().remove(dropped);
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(FIXTURE.kid.clone());
            let token = encode(&h, &claims, &FIXTURE.key).unwrap();
            let r = FIXTURE.verifier.verify(&token, &need());
            let well_formed = claims["access"].is_array();
            if !dropped.is_empty() || !well_formed {
                prop_assert!(matches!(r, Err(TokenRejection::Invalid(_))), "{r:?}");
            }
        }
    }
}
