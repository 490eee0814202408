//! A local OIDC issuer for the keyless CI login tests: OpenID discovery
//! and a JWKS over HTTPS (its own CA) on 127.0.0.1, keys that can rotate,
//! and GitHub Actions-like job tokens signed with them.

use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::pki;

pub const AUDIENCE: &str = "registry.example.com";

/// A signing key of the issuer: its `kid`, private key, public JWK.
pub struct IssuerKey {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
    pub public_pem: String,
}

impl IssuerKey {
    pub fn new(kid: &str) -> IssuerKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        // Uncompressed point: 0x04 || x || y.
        let (x, y) = (&raw[1..33], &raw[33..65]);
        IssuerKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
            public_pem: kp.public_key_pem(),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        encode(&h, claims, &self.encoding).unwrap()
    }
}

/// The issuer: discovery and JWKS over HTTPS on 127.0.0.1.
pub struct Issuer {
    pub url: String,
    pub ca_pem: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    pub fetches: Arc<Mutex<usize>>,
    _rt: tokio::runtime::Runtime,
}

impl Issuer {
    pub fn start(keys: &[&IssuerKey]) -> Issuer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = pki::Ca::root("test oidc ca");
        let leaf = ca.server(&["127.0.0.1"]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let jwks: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let fetches = Arc::new(Mutex::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (issuer, set, count) = (url.clone(), jwks.clone(), fetches.clone());
        rt.spawn(async move {
            let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
            let app = axum::Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(move || async move { axum::Json(discovery) }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || async move {
                        *count.lock().unwrap() += 1;
                        let keys = set.lock().unwrap().clone();
                        axum::Json(json!({ "keys": keys }))
                    }),
                );
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                leaf.cert_pem.into_bytes(),
                leaf.key_pem.into_bytes(),
            )
            .await
            .unwrap();
            axum_server::from_tcp_rustls(listener, config)
                .unwrap()
                .serve(app.into_make_service())
                .await
                .unwrap();
        });
        Issuer {
            url,
            ca_pem: ca.pem(),
            jwks,
            fetches,
            _rt: rt,
        }
    }

    pub fn publish(&self, keys: &[&IssuerKey]) {
        *self.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// A GitHub Actions-like job token.
    pub fn claims(&self, repository: &str, git_ref: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "iss": self.url, "aud": AUDIENCE, "sub": format!("repo:{repository}:ref:{git_ref}"),
            "repository": repository, "repository_owner": repository.split('/').next().unwrap(),
            "ref": git_ref, "iat": now, "nbf": now, "exp": now + 300,
        })
    }
}
