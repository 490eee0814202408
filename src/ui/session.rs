//! The UI's session: a cookie that carries who logged in and until when,
//! HMAC-signed with a key derived from `http.secret`, so any replica that
//! shares the secret accepts it and none keeps anything in memory.
//!
//! Every visitor gets one (anonymous until a login) because its nonce is
//! what the CSRF token of every form is derived from: a form posted from
//! another site has the cookie (if SameSite let it through at all) but not
//! the token, which only a page of ours can show.
//!
//! A session cannot be revoked before it expires (nothing is stored):
//! logging out clears the cookie in that browser, and `ui.sessionttl`
//! bounds how long a copied cookie stays good.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
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

/// Signs and checks sessions.
pub struct Sessions {
    key: Vec<u8>,
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

impl Sessions {
    /// `secret` is `http.secret`: the key is derived from it for this use
    /// only, so a session can never pass for an upload token or the other
    /// way round.
    pub fn new(secret: &[u8], ttl: Duration, secure: bool, path: String) -> Sessions {
        let mut mac = HmacSha256::new_from_slice(secret).expect("hmac takes any key length");
        mac.update(b"berth ui session v1");
        Sessions {
            key: mac.finalize().into_bytes().to_vec(),
            ttl,
            secure,
            path,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("hmac takes any key length");
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

    /// `base64(json) "." base64(hmac)`.
    pub fn encode(&self, s: &Session) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(s).expect("a session serializes"));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&[body.as_bytes()]).finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// The session in a cookie value, checked.
    pub fn decode(&self, value: &str) -> Found {
        let Some((body, sig)) = value.split_once('.') else {
            return Found::None;
        };
        let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
            return Found::None;
        };
        // Constant-time comparison (hmac's verify).
        if self.mac(&[body.as_bytes()]).verify_slice(&sig).is_err() {
            return Found::None;
        }
        let Some(session) = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
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
    /// Strict (no other site's page sends it), Secure under TLS, expiring
    /// with the session.
    pub fn set_cookie(&self, session: &Session) -> String {
        let max_age = session.expires.saturating_sub(now());
        format!(
            "{COOKIE}={}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            self.encode(session),
            self.path,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict{}",
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
        let session = s.start(Some("alice".into()), None);
        let value = s.encode(&session);
        assert_eq!(s.decode(&value), Found::Valid(session.clone()));
        // Another account in the same signature: refused.
        let (_, sig) = value.split_once('.').unwrap();
        let forged = Session {
            account: Some("admin".into()),
            ..session.clone()
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.decode(&format!("{body}.{sig}")), Found::None);
        // Another secret (another registry): refused.
        let other = Sessions::new(b"other", Duration::from_secs(60), false, "/ui/".into());
        assert_eq!(other.decode(&value), Found::None);
        assert_eq!(s.decode("garbage"), Found::None);
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
    fn the_cookie_is_http_only_and_strict() {
        let s = Sessions::new(b"k", Duration::from_secs(60), true, "/r/ui/".into());
        let c = s.set_cookie(&s.start(None, None));
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/r/ui/"] {
            assert!(c.contains(attr), "{c}");
        }
    }
}
