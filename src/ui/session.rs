//! The UI's session: a cookie that carries who logged in and until when,
//! encrypted and authenticated (XChaCha20-Poly1305) with a key derived
//! from `http.secret`, so any replica that shares the secret accepts it,
//! none keeps anything in memory, and what it carries (an outside token
//! server's refresh token) cannot be read out of it.
//!
//! Every visitor gets one (anonymous until a login) because its nonce is
//! what the CSRF token of every form is derived from: a form posted from
//! another site has the cookie (if SameSite let it through at all) but not
//! the token, which only a page of ours can show.
//!
//! A session cannot be revoked before it expires (nothing is stored):
//! logging out clears the cookie in that browser, and `ui.sessionttl`
//! bounds how long a copied cookie stays good.
//!
//! The same sealing makes the repository list's "next page" cursor opaque:
//! where a scan stopped may be a repository the viewer may not see.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chacha20poly1305::{aead::Aead, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "berth_ui";

/// What the cookie says, once its signature checks out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// The account logged in; None: an anonymous visitor.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Labels a directory or an ID token gave the account at login (the
    /// token server's ACL matches them); None: the configured ones.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Vec<String>>>,
    /// An outside token server's refresh token for the account (see
    /// `ui::realm`): how each page asks that server what it may show.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: u64,
    /// Random, per session: the CSRF token is derived from it.
    #[serde(rename = "n")]
    pub nonce: String,
}

/// What a request's cookie turned out to be.
#[derive(Debug, PartialEq)]
pub enum Found {
    Valid(Session),
    /// Signed by us, but past its expiry: the page says so.
    Expired {
        was_logged_in: bool,
    },
    /// No cookie, or not one of ours.
    None,
}

/// What a sealed value is for (authenticated with it): a session never
/// opens as a cursor or the other way round.
#[derive(Clone, Copy)]
pub enum Purpose {
    Session,
    Cursor,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"berth ui session v2",
            Purpose::Cursor => b"berth ui cursor v1",
        }
    }
}

/// Seals and opens sessions; derives their form tokens.
pub struct Sessions {
    cipher: XChaCha20Poly1305,
    /// Keys the CSRF tokens.
    csrf_key: Vec<u8>,
    ttl: Duration,
    /// Mark the cookie `Secure` (TLS here, or in front of us).
    secure: bool,
    /// The cookie's `Path`: `<http.prefix>/ui/`.
    path: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A key for `label` derived from `secret`.
fn derive(secret: &[u8], label: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().to_vec()
}

impl Sessions {
    /// `secret` is `http.secret`: the keys are derived from it for these
    /// uses only, so a session can never pass for an upload token or the
    /// other way round.
    pub fn new(secret: &[u8], ttl: Duration, secure: bool, path: String) -> Sessions {
        let key = derive(secret, b"berth ui seal key v1");
        Sessions {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("a 32-byte key"),
            csrf_key: derive(secret, b"berth ui csrf key v1"),
            ttl,
            secure,
            path,
        }
    }

    /// `plaintext`, encrypted and authenticated for `purpose`:
    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let payload = chacha20poly1305::aead::Payload {
            msg: plaintext,
            aad: purpose.label(),
        };
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .expect("encryption of a small buffer");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What [`Sessions::seal`] sealed for `purpose`; None if it was not
    /// sealed here (another secret, changed, or for another purpose).
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let payload = chacha20poly1305::aead::Payload {
            msg: ciphertext,
            aad: purpose.label(),
        };
        self.cipher
            .decrypt(&XNonce::try_from(nonce).ok()?, payload)
            .ok()
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.csrf_key).expect("hmac takes any key length");
        for p in parts {
            mac.update(p);
        }
        mac
    }

    /// A fresh session for `account` (None: anonymous).
    pub fn start(
        &self,
        account: Option<String>,
        labels: Option<BTreeMap<String, Vec<String>>>,
    ) -> Session {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        Session {
            account,
            labels,
            refresh: None,
            expires: now() + self.ttl.as_secs(),
            nonce: hex::encode(nonce),
        }
    }

    pub fn encode(&self, s: &Session) -> String {
        let json = serde_json::to_vec(s).expect("a session serializes");
        self.seal(Purpose::Session, &json)
    }

    /// The session in a cookie value, checked.
    pub fn decode(&self, value: &str) -> Found {
        let Some(session) = self
            .open(Purpose::Session, value)
            .and_then(|b| serde_json::from_slice::<Session>(&b).ok())
        else {
            return Found::None;
        };
        if session.expires <= now() {
            return Found::Expired {
                was_logged_in: session.account.is_some(),
            };
        }
        Found::Valid(session)
    }

    /// The session of a request's `Cookie` header(s).
    pub fn from_headers(&self, headers: &axum::http::HeaderMap) -> Found {
        let mut found = Found::None;
        for value in headers.get_all(axum::http::header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((name, v)) = pair.trim().split_once('=') {
                    if name == COOKIE {
                        match self.decode(v) {
                            Found::Valid(s) => return Found::Valid(s),
                            Found::Expired { was_logged_in } => {
                                found = Found::Expired { was_logged_in }
                            }
                            Found::None => {}
                        }
                    }
                }
            }
        }
        found
    }

    /// The form token of `session`: only pages of ours show it.
    pub fn csrf_token(&self, session: &Session) -> String {
        let mac = self.mac(&[b"csrf\0", session.nonce.as_bytes()]);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is `session`'s form token (constant time).
    pub fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        self.mac(&[b"csrf\0", session.nonce.as_bytes()])
            .verify_slice(&given)
            .is_ok()
    }

    /// `Set-Cookie` for `session`: HttpOnly (no script reads it), SameSite
    /// Lax (another site's page may link here, and the visitor arrives
    /// logged in; its forms and scripts get no cookie: every POST needs the
    /// form token anyway), Secure under TLS, expiring with the session.
    pub fn set_cookie(&self, session: &Session) -> String {
        let max_age = session.expires.saturating_sub(now());
        format!(
            "{COOKIE}={}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
            self.encode(session),
            self.path,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax{}",
            self.path,
            if self.secure { "; Secure" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(b"secret", Duration::from_secs(60), false, "/ui/".into())
    }

    #[test]
    fn a_session_round_trips_and_tampering_is_refused() {
        let s = sessions();
        let mut session = s.start(Some("alice".into()), None);
        session.refresh = Some("a-refresh-token".into());
        let value = s.encode(&session);
        assert_eq!(s.decode(&value), Found::Valid(session.clone()));
        // What it carries cannot be read out of it.
        let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("a-refresh-token"));
        // Any bit changed: refused.
        let mut flipped = raw.clone();
        flipped[30] ^= 1;
        assert_eq!(s.decode(&URL_SAFE_NO_PAD.encode(flipped)), Found::None);
        // Another secret (another registry): refused.
        let other = Sessions::new(b"other", Duration::from_secs(60), false, "/ui/".into());
        assert_eq!(other.decode(&value), Found::None);
        assert_eq!(s.decode("garbage"), Found::None);
        // A cursor is no session, and the other way round.
        let cursor = s.seal(Purpose::Cursor, br#"{"a":"admin","e":99999999999,"n":"0"}"#);
        assert_eq!(s.decode(&cursor), Found::None);
        assert_eq!(s.open(Purpose::Cursor, &value), None);
    }

    #[test]
    fn expired_sessions_are_told_apart() {
        let s = sessions();
        let mut session = s.start(Some("alice".into()), None);
        session.expires = now() - 1;
        let value = s.encode(&session);
        assert_eq!(
            s.decode(&value),
            Found::Expired {
                was_logged_in: true
            }
        );
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let s = sessions();
        let a = s.start(None, None);
        let b = s.start(None, None);
        let token = s.csrf_token(&a);
        assert!(s.csrf_ok(&a, &token));
        assert!(!s.csrf_ok(&b, &token));
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, "not base64!"));
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_under_tls() {
        let s = Sessions::new(b"k", Duration::from_secs(60), true, "/r/ui/".into());
        let c = s.set_cookie(&s.start(None, None));
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/r/ui/"] {
            assert!(c.contains(attr), "{c}");
        }
    }
}

/// Property tests: whatever a browser sends as the cookie or a form token,
/// it is read without a panic and never taken for a session or a token.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_cookie_or_token_is_refused_safely(value in "[ -~]{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let s = Sessions::new(b"secret", Duration::from_secs(60), false, "/ui/".into());
            prop_assert_eq!(s.decode(&value), Found::None);
            prop_assert_eq!(s.decode(&URL_SAFE_NO_PAD.encode(&bytes)), Found::None);
            prop_assert_eq!(s.open(Purpose::Cursor, &value), None);
            let session = s.start(None, None);
            prop_assert!(!s.csrf_ok(&session, &value));
            let mut h = axum::http::HeaderMap::new();
            if let Ok(v) = format!("berth_ui={value}; berth_ui=; x=y").parse() {
                h.insert(axum::http::header::COOKIE, v);
            }
            prop_assert_eq!(s.from_headers(&h), Found::None);
        }
    }
}
