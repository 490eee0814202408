//! The token server's signing key: PEM in, `alg`/`kid`/`x5c` and JWT
//! signing out.
//!
//! Every common PEM form is taken (PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE
//! KEY`, PKCS#8 `PRIVATE KEY`) and normalised to what jsonwebtoken signs with.
//! The default `kid` is docker/libtrust's key id of the public key, the id
//! distribution and Berth's verifier compute for the certificate in their
//! `rootcertbundle`, so a token names the key the registry already trusts.

use base64::{engine::general_purpose::STANDARD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{de::DeserializeOwned, Serialize};
use x509_parser::prelude::*;

use crate::{auth::token::libtrust_key_id, config::token_server::TokenServerConfig};

/// Weaker RSA keys are refused outright.
const MIN_RSA_BITS: usize = 2048;

pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    /// base64 DER certificates, leaf first, when `x5c: true`.
    pub x5c: Option<Vec<String>>,
    encoding: EncodingKey,
    /// The public half, to verify our own refresh tokens.
    decoding: DecodingKey,
}

/// What a private key PEM yields.
struct Parsed {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    spki_der: Vec<u8>,
}

fn rsa_key(key: rsa::RsaPrivateKey) -> Result<Parsed, String> {
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use rsa::pkcs8::EncodePublicKey;
    use rsa::traits::PublicKeyParts;
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of {bits} bits; at least {MIN_RSA_BITS} needed"
        ));
    }
    let public = key.to_public_key();
    let err = |e: &dyn std::fmt::Display| format!("cannot encode RSA key: {e}");
    Ok(Parsed {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().map_err(|e| err(&e))?.as_bytes()),
        decoding: DecodingKey::from_rsa_der(public.to_pkcs1_der().map_err(|e| err(&e))?.as_bytes()),
        spki_der: public.to_public_key_der().map_err(|e| err(&e))?.into_vec(),
    })
}

/// One ECDSA curve: the same steps for P-256 and P-384.
macro_rules! ec_key {
    ($curve:ident, $alg:expr, $secret:expr) => {{
        use $curve::elliptic_curve::sec1::ToEncodedPoint;
        use $curve::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let secret: $curve::SecretKey = $secret;
        let public = secret.public_key();
        let err = |e: &dyn std::fmt::Display| format!("cannot encode EC key: {e}");
        Parsed {
            alg: $alg,
            encoding: EncodingKey::from_ec_der(
                secret.to_pkcs8_der().map_err(|e| err(&e))?.as_bytes(),
            ),
            decoding: DecodingKey::from_ec_der(public.to_encoded_point(false).as_bytes()),
            spki_der: public.to_public_key_der().map_err(|e| err(&e))?.into_vec(),
        }
    }};
}

fn parse_private_key(label: &str, der: &[u8]) -> Result<Parsed, String> {
    use p256::pkcs8::DecodePrivateKey;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let unsupported = "unsupported key: use RSA (2048 bits or more) or ECDSA P-256 / P-384";
    match label {
        "RSA PRIVATE KEY" => rsa_key(
            rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| format!("bad RSA key: {e}"))?,
        ),
        "EC PRIVATE KEY" => {
            if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                Ok(ec_key!(p256, Algorithm::ES256, k))
            } else if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
                Ok(ec_key!(p384, Algorithm::ES384, k))
            } else {
                Err(unsupported.into())
            }
        }
        "PRIVATE KEY" => {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
                rsa_key(k)
            } else if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
                Ok(ec_key!(p256, Algorithm::ES256, k))
            } else if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
                Ok(ec_key!(p384, Algorithm::ES384, k))
            } else {
                Err(unsupported.into())
            }
        }
        "ENCRYPTED PRIVATE KEY" => Err("encrypted keys are not supported".into()),
        other => Err(format!("{other} is not a private key")),
    }
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("token_server.{key}: cannot read {path}: {e}"))
}

impl SigningKey {
    /// Load `signingkey` (and `certificate`); errors name the key.
    pub fn load(cfg: &TokenServerConfig) -> Result<SigningKey, String> {
        let pem = read("signingkey", &cfg.signingkey)?;
        let block = Pem::iter_from_buffer(&pem)
            .filter_map(Result::ok)
            // `openssl ecparam -genkey` writes an EC PARAMETERS block first.
            .find(|p| p.label.ends_with("PRIVATE KEY"))
            .ok_or_else(|| {
                format!(
                    "token_server.signingkey: no PEM private key in {}",
                    cfg.signingkey
                )
            })?;
        let parsed = parse_private_key(&block.label, &block.contents)
            .map_err(|e| format!("token_server.signingkey: {e}"))?;
        let mut x5c = None;
        if !cfg.certificate.is_empty() {
            let chain = certificates(cfg, &parsed.spki_der)?;
            x5c = cfg
                .x5c
                .then(|| chain.iter().map(|der| STANDARD.encode(der)).collect());
        }
        Ok(SigningKey {
            alg: parsed.alg,
            kid: if cfg.kid.is_empty() {
                libtrust_key_id(&parsed.spki_der)
            } else {
                cfg.kid.clone()
            },
            x5c,
            encoding: parsed.encoding,
            decoding: parsed.decoding,
        })
    }

    /// A signed JWT with our header (alg, typ, kid, x5c).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.x5c = self.x5c.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| format!("signing: {e}"))
    }

    /// Verify a JWT we signed, for `audience`; exp is checked.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<T, String> {
        if token.len() > crate::auth::token::MAX_TOKEN_LEN {
            return Err("token too large".into());
        }
        let mut v = Validation::new(self.alg);
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 0;
        jsonwebtoken::decode::<T>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// The `certificate` file's certificates (DER, in file order); the first
/// must be the signing key's.
fn certificates(cfg: &TokenServerConfig, spki_der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let pem = read("certificate", &cfg.certificate)?;
    let mut chain = Vec::new();
    for p in Pem::iter_from_buffer(&pem) {
        let p = p.map_err(|e| format!("token_server.certificate: {e}"))?;
        if p.label == "CERTIFICATE" {
            chain.push(p.contents);
        }
    }
    let leaf_der = chain.first().ok_or_else(|| {
        format!(
            "token_server.certificate: no certificate in {}",
            cfg.certificate
        )
    })?;
    let (_, leaf) = parse_x509_certificate(leaf_der)
        .map_err(|e| format!("token_server.certificate: bad certificate: {e}"))?;
    if leaf.public_key().raw != spki_der {
        return Err(
            "token_server.certificate: its public key is not token_server.signingkey's".into(),
        );
    }
    // Verifiers refuse an x5c chain outside its validity period: say so now
    // rather than with every token.
    if cfg.x5c && !leaf.validity().is_valid() {
        return Err("token_server.certificate: expired or not yet valid (x5c: true)".into());
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(dir: &std::path::Path, key_pem: &str, cert_pem: Option<&str>) -> TokenServerConfig {
        let key = dir.join("key.pem");
        std::fs::write(&key, key_pem).unwrap();
        let mut cfg = TokenServerConfig {
            signingkey: key.display().to_string(),
            ..Default::default()
        };
        if let Some(c) = cert_pem {
            let cert = dir.join("cert.pem");
            std::fs::write(&cert, c).unwrap();
            cfg.certificate = cert.display().to_string();
            cfg.x5c = true;
        }
        cfg
    }

    #[test]
    fn ec_keys_and_their_certificate() {
        let dir = tempfile::tempdir().unwrap();
        for (alg, expect) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384),
        ] {
            let kp = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["token".into()])
                .unwrap()
                .self_signed(&kp)
                .unwrap();
            let cfg = cfg_with(dir.path(), &kp.serialize_pem(), Some(&cert.pem()));
            let key = SigningKey::load(&cfg).unwrap();
            assert_eq!(key.alg, expect);
            // The kid is the libtrust id of the certificate's key, as a
            // registry computes it from its rootcertbundle.
            let (_, parsed) = parse_x509_certificate(cert.der()).unwrap();
            assert_eq!(key.kid, libtrust_key_id(parsed.public_key().raw));
            assert_eq!(key.x5c.as_ref().unwrap().len(), 1);

            #[derive(Serialize, serde::Deserialize)]
            struct C {
                iss: String,
                aud: String,
                sub: String,
                exp: u64,
            }
            let exp = jsonwebtoken::get_current_timestamp() + 60;
            let t = key
                .sign(&C {
                    iss: "i".into(),
                    aud: "a".into(),
                    sub: "s".into(),
                    exp,
                })
                .unwrap();
            assert!(key.verify::<C>(&t, "i", "a").is_ok());
            assert!(
                key.verify::<C>(&t, "i", "other").is_err(),
                "audience is checked"
            );
            let mut tampered = t.clone();
            tampered.insert(t.find('.').unwrap() + 2, 'A');
            assert!(key.verify::<C>(&tampered, "i", "a").is_err());
        }
    }

    #[test]
    fn mismatched_certificate_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        let cfg = cfg_with(dir.path(), &kp.serialize_pem(), Some(&cert.pem()));
        let err = SigningKey::load(&cfg).err().unwrap();
        assert!(err.contains("is not token_server.signingkey's"), "{err}");

        let cfg = cfg_with(dir.path(), &cert.pem(), None);
        let err = SigningKey::load(&cfg).err().unwrap();
        assert!(
            err.starts_with("token_server.signingkey: no PEM private key"),
            "{err}"
        );

        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = SigningKey::load(&cfg_with(dir.path(), &ed.serialize_pem(), None))
            .err()
            .unwrap();
        assert!(err.contains("unsupported key"), "{err}");

        let cfg = TokenServerConfig {
            signingkey: "/nonexistent/key.pem".into(),
            ..Default::default()
        };
        assert!(SigningKey::load(&cfg)
            .err()
            .unwrap()
            .starts_with("token_server.signingkey: cannot read"));
    }
}
