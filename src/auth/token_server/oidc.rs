//! Keyless CI logins: a job logs in with the OIDC ID token its CI system
//! gave it as the password (`docker login -u ci --password $ID_TOKEN`), and
//! the token server verifies it against the issuers it trusts
//! (`token_server.oidc`) instead of a password file.
//!
//! - **Which password.** One that is a JWT (three base64url parts) whose
//!   unverified `iss` names a trusted issuer; anything else is an ordinary
//!   password.
//! - **Verification.** The header's `alg` must be an asymmetric one (RS*,
//!   PS*, ES256/384, EdDSA: never `none`, never HS*, so a public key can
//!   not be used as an HMAC secret) and match the key's; the key is the
//!   issuer's JWKS entry for the header's `kid`; `iss` exactly, `aud` one of
//!   the configured audiences, `exp`/`nbf`/`iat` with `leeway`.
//! - **Keys.** From OpenID discovery (`<issuer>/.well-known/
//!   openid-configuration` → `jwks_uri`) or a fixed JWKS URL or file, over
//!   verified HTTPS (the system's roots plus `cafile`), kept for
//!   `keysmaxage` (1h) and fetched again at once for an unknown `kid` (key
//!   rotation), at most every `keysrefresh` (10s) per issuer. An issuer
//!   that cannot be reached fails its own logins (503), never others.
//! - **Identity.** The account is `accountprefix` + the `account` claim;
//!   `labels` maps claims to the labels ACL rules match (`ref`,
//!   `ref_protected`, …): a string is one value, a list its strings, a
//!   boolean or number its text.
//!
//! No refresh token is ever issued for such a login: the CI token is short
//! lived on purpose. Refusals are logged with their reason, never the token.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{
    decode, decode_header,
    jwk::{Jwk, JwkSet},
    Algorithm, DecodingKey, Validation,
};
use serde_json::Value;

use super::{Identity, Refusal};
use crate::config::token_server::OidcIssuerConfig;

/// An issuer's discovery document or JWKS that takes longer fails the login.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a discovery document or JWKS may weigh.
const MAX_DOCUMENT: usize = 1 << 20;

pub struct Oidc {
    issuers: Vec<Issuer>,
}

struct Issuer {
    cfg: OidcIssuerConfig,
    max_age: Duration,
    min_gap: Duration,
    client: reqwest::Client,
    keys: tokio::sync::Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    set: Vec<Jwk>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

impl Oidc {
    /// `None` without issuers; errors name the key (a `cafile` that does
    /// not read).
    pub fn new(cfgs: &[OidcIssuerConfig]) -> Result<Option<Oidc>, String> {
        if cfgs.is_empty() {
            return Ok(None);
        }
        let mut issuers = Vec::new();
        for (i, cfg) in cfgs.iter().enumerate() {
            let mut b = reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none());
            if !cfg.cafile.is_empty() {
                let pem = std::fs::read(&cfg.cafile)
                    .map_err(|e| format!("token_server.oidc[{i}].cafile: {e}"))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("token_server.oidc[{i}].cafile: {e}"))?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            let client = b
                .build()
                .map_err(|e| format!("token_server.oidc[{i}]: {e}"))?;
            let (max_age, min_gap) = cfg
                .key_times()
                .map_err(|e| format!("token_server.oidc[{i}]: {e}"))?;
            issuers.push(Issuer {
                cfg: cfg.clone(),
                max_age,
                min_gap,
                client,
                keys: Default::default(),
            });
        }
        Ok(Some(Oidc { issuers }))
    }

    /// The issuer `password` claims to come from, if it is a JWT of a
    /// trusted one (nothing verified yet).
    fn issuer_of(&self, password: &str) -> Option<&Issuer> {
        let mut parts = password.split('.');
        let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next())
        else {
            return None;
        };
        let raw = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let claims: Value = serde_json::from_slice(&raw).ok()?;
        let iss = claims.get("iss")?.as_str()?;
        self.issuers.iter().find(|i| i.cfg.issuer == iss)
    }

    /// Whether `password` is an ID token for this server to verify.
    pub fn claims(&self, password: &str) -> bool {
        self.issuer_of(password).is_some()
    }

    /// Verify `token` and map its claims to an account and labels.
    pub async fn verify(&self, token: &str) -> Result<Identity, Refusal> {
        let issuer = self
            .issuer_of(token)
            .ok_or_else(|| Refusal::Invalid("not from a trusted issuer".into()))?;
        issuer.verify(token).await
    }
}

/// The algorithms an ID token may be signed with.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Issuer {
    async fn verify(&self, token: &str) -> Result<Identity, Refusal> {
        let header = decode_header(token)
            .map_err(|e| Refusal::Invalid(format!("unreadable header: {e}")))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(Refusal::Invalid(format!(
                "alg {:?} is not accepted",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm {
            if format!("{alg:?}") != format!("{:?}", header.alg) {
                return Err(Refusal::Invalid(format!(
                    "alg {:?} does not match the key's {alg:?}",
                    header.alg
                )));
            }
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| Refusal::Invalid(format!("the issuer's key is unusable: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&self.cfg.audience);
        v.leeway = self.cfg.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = decode::<Value>(token, &key, &v)
            .map_err(|e| Refusal::Invalid(format!("{e}")))?
            .claims;
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if iat > now.saturating_add(self.cfg.leeway) {
                return Err(Refusal::Invalid("issued in the future (iat)".into()));
            }
        }
        self.identity(&claims)
    }

    fn identity(&self, claims: &Value) -> Result<Identity, Refusal> {
        let name = claims
            .get(&self.cfg.account)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Refusal::Invalid(format!(
                    "claim {:?} (the account) is missing or not a string",
                    self.cfg.account
                ))
            })?;
        let mut labels = BTreeMap::new();
        for (label, claim) in &self.cfg.labels {
            let values: Vec<String> = match claims.get(claim) {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Bool(b)) => vec![b.to_string()],
                Some(Value::Number(n)) => vec![n.to_string()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => continue,
            };
            labels.insert(label.clone(), values);
        }
        Ok(Identity {
            account: format!("{}{name}", self.cfg.accountprefix),
            labels,
        })
    }

    /// The JWKS entry for `kid` (the only key when the token names none),
    /// fetching the keys when they are old or do not have it.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, Refusal> {
        let mut keys = self.keys.lock().await;
        let stale = keys.fetched.is_none_or(|t| t.elapsed() > self.max_age);
        if stale || find(&keys.set, kid).is_none() {
            let may = keys.tried.is_none_or(|t| t.elapsed() >= self.min_gap);
            if may {
                keys.tried = Some(Instant::now());
                match self.fetch().await {
                    Ok(set) => {
                        keys.set = set;
                        keys.fetched = Some(Instant::now());
                    }
                    // Keys still fresh: keep using them.
                    Err(e) if !stale => tracing::warn!(issuer = %self.cfg.issuer, "oidc: {e}"),
                    Err(e) => return Err(Refusal::Unavailable(e)),
                }
            }
        }
        find(&keys.set, kid)
            .cloned()
            .ok_or_else(|| Refusal::Invalid(format!("no key {kid:?} in the issuer's JWKS")))
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, String> {
        let source = &self.cfg.jwks;
        let body = if source.is_empty() {
            let discovery = format!(
                "{}/.well-known/openid-configuration",
                self.cfg.issuer.trim_end_matches('/')
            );
            let doc: Value = serde_json::from_slice(&self.get(&discovery).await?)
                .map_err(|e| format!("{discovery}: not JSON: {e}"))?;
            let uri = doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{discovery}: no jwks_uri"))?;
            if !uri.starts_with("https://") {
                return Err(format!("{discovery}: jwks_uri {uri:?} is not https"));
            }
            self.get(uri).await?
        } else if source.starts_with("https://") {
            self.get(source).await?
        } else {
            std::fs::read(source)
                .map_err(|e| format!("{source}: {e}"))?
                .into()
        };
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("JWKS is not readable: {e}"))?;
        Ok(set.keys)
    }

    async fn get(&self, url: &str) -> Result<bytes::Bytes, String> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        crate::outbound::read_capped(resp, MAX_DOCUMENT)
            .await
            .map_err(|e| format!("{url}: {e} (at most {MAX_DOCUMENT} bytes)"))
    }
}

fn find<'a>(set: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => set.iter().find(|k| k.common.key_id.as_deref() == Some(kid)),
        None if set.len() == 1 => set.first(),
        None => None,
    }
}
