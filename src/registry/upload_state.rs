//! Upload state that travels with the client instead of living in a replica.
//!
//! Like distribution's `hmac.go`, the state is HMAC-SHA256 signed with
//! `http.secret` and carried in the upload's Location URL (`?_state=`). Berth also
//! carries the running SHA-256 state, so whichever replica takes the next PATCH
//! continues the hash without re-reading earlier chunks.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{digest::common::hazmat::SerializableState, Sha256};

use super::error::{Code, Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Tokens longer than this are refused before any decoding work.
const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadState {
    /// Repository the upload belongs to; a token is only valid for its own.
    pub name: String,
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
    /// Unix seconds when the upload was started.
    pub started_at: u64,
    /// Serialized SHA-256 state after `offset` bytes (base64). Empty at
    /// offset 0; empty past it when the state was rebuilt from what storage
    /// holds (a client resuming after a lost answer), and then the digest is
    /// computed from the stored bytes at the end.
    #[serde(default)]
    pub hash: String,
    /// Storage holds nothing for this upload, as this request has just seen
    /// (never carried in a token): its first chunk needs no second look.
    #[serde(skip)]
    pub(crate) fresh: bool,
}

impl UploadState {
    pub fn new(name: &str, id: &str, started_at: u64) -> Self {
        UploadState {
            name: name.to_string(),
            id: id.to_string(),
            offset: 0,
            started_at,
            hash: String::new(),
            fresh: false,
        }
    }

    /// The running SHA-256 over the first `offset` bytes; `None` when it was
    /// not carried along (see `hash`).
    pub fn hasher(&self) -> Result<Option<Sha256>> {
        if self.hash.is_empty() {
            return Ok((self.offset == 0).then(<Sha256 as sha2::Digest>::new));
        }
        let raw = B64.decode(&self.hash).map_err(|_| invalid())?;
        let arr = raw.as_slice().try_into().map_err(|_| invalid())?;
        Sha256::deserialize(arr).map(Some).map_err(|_| invalid())
    }

    /// This upload as it stands at `stored` bytes, where storage says it is:
    /// the running hash of another offset does not apply there.
    pub fn moved_to(self, stored: u64) -> UploadState {
        UploadState {
            offset: stored,
            hash: String::new(),
            fresh: false,
            ..self
        }
    }

    pub fn set_hasher(&mut self, h: &Sha256) {
        self.hash = B64.encode(h.serialize().as_slice());
    }

    /// `base64(json) "." base64(hmac)`
    pub fn sign(&self, secret: &[u8]) -> String {
        let payload = B64.encode(serde_json::to_vec(self).expect("state serializes"));
        let mut mac = HmacSha256::new_from_slice(secret).expect("hmac takes any key length");
        mac.update(payload.as_bytes());
        format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// Verify a token's signature (in constant time) and that it belongs to
    /// `name`/`id`. Anything else is BLOB_UPLOAD_INVALID and touches nothing.
    pub fn verify(token: &str, secret: &[u8], name: &str, id: &str) -> Result<Self> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let (payload, sig) = token.split_once('.').ok_or_else(invalid)?;
        let sig = B64.decode(sig).map_err(|_| invalid())?;
        let mut mac = HmacSha256::new_from_slice(secret).expect("hmac takes any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).map_err(|_| invalid())?;
        let json = B64.decode(payload).map_err(|_| invalid())?;
        let state: UploadState = serde_json::from_slice(&json).map_err(|_| invalid())?;
        if state.name != name || state.id != id {
            return Err(invalid());
        }
        Ok(state)
    }
}

fn invalid() -> Error {
    Error::new(Code::BlobUploadInvalid, "invalid or foreign upload state")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn round_trip_with_hash_state() {
        let mut s = UploadState::new("a/b", "id1", 7);
        let mut h = Sha256::new();
        h.update(b"hello ");
        s.set_hasher(&h);
        s.offset = 6;
        let token = s.sign(b"k");
        let back = UploadState::verify(&token, b"k", "a/b", "id1").unwrap();
        assert_eq!(back, s);
        let mut h2 = back.hasher().unwrap().unwrap();
        h2.update(b"world");
        assert_eq!(
            hex::encode(h2.finalize()),
            hex::encode(Sha256::digest(b"hello world"))
        );
    }

    #[test]
    fn refuses_forged_or_foreign() {
        let token = UploadState::new("a", "id", 0).sign(b"k");
        assert!(UploadState::verify(&token, b"other", "a", "id").is_err());
        assert!(UploadState::verify(&token, b"k", "b", "id").is_err());
        assert!(UploadState::verify(&token, b"k", "a", "id2").is_err());
        let (p, s) = token.split_once('.').unwrap();
        let forged = format!("{}x.{s}", p);
        assert!(UploadState::verify(&forged, b"k", "a", "id").is_err());
        assert!(UploadState::verify("garbage", b"k", "a", "id").is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use sha2::Digest as _;

        fn state() -> impl Strategy<Value = UploadState> {
            (
                ".{0,40}",
                "[0-9a-f-]{0,36}",
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            )
                .prop_map(|(name, id, offset, started_at, hashed)| {
                    let mut s = UploadState::new(&name, &id, started_at);
                    s.offset = offset;
                    if let Some(data) = hashed {
                        let mut h = Sha256::new();
                        h.update(&data);
                        s.set_hasher(&h);
                    }
                    s
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// A signed state verifies as itself, for its own name and id
            /// only, under its own secret only.
            #[test]
            fn signed_states_verify(s in state(), secret in proptest::collection::vec(any::<u8>(), 1..64)) {
                let token = s.sign(&secret);
                prop_assert_eq!(UploadState::verify(&token, &secret, &s.name, &s.id).unwrap(), s.clone());
                let other = [secret.as_slice(), b"x"].concat();
                prop_assert!(UploadState::verify(&token, &other, &s.name, &s.id).is_err());
                let foreign = format!("{}x", s.id);
                prop_assert!(UploadState::verify(&token, &secret, &s.name, &foreign).is_err());
            }

            /// Any change to a token's text is refused.
            #[test]
            fn tampered_tokens_are_refused(s in state(), at in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.=+/-]") {
                let token = s.sign(b"k");
                let i = at.index(token.len());
                let mut tampered = token.clone();
                tampered.replace_range(i..i + 1, &c);
                prop_assume!(tampered != token);
                let e = UploadState::verify(&tampered, b"k", &s.name, &s.id).unwrap_err();
                prop_assert_eq!(e.code, Code::BlobUploadInvalid);
            }

            /// Any text as a token: BLOB_UPLOAD_INVALID, never a panic.
            #[test]
            fn any_token_is_refused(token in prop_oneof!["[A-Za-z0-9_-]{0,100}\\.[A-Za-z0-9_-]{0,50}", any::<String>()]) {
                let e = UploadState::verify(&token, b"k", "a", "id").unwrap_err();
                prop_assert_eq!(e.code, Code::BlobUploadInvalid);
            }

            /// A hash state that is not one (from a genuine but odd token):
            /// an error, never a panic; none carried is none at an offset.
            #[test]
            fn odd_hash_states_are_refused(hash in ".{0,150}", offset in any::<u64>()) {
                let mut s = UploadState::new("a", "id", 0);
                s.offset = offset;
                s.hash = hash;
                match s.hasher() {
                    Ok(Some(_)) => prop_assert!(!s.hash.is_empty() || offset == 0),
                    Ok(None) => prop_assert!(s.hash.is_empty() && offset > 0),
                    Err(e) => prop_assert_eq!(e.code, Code::BlobUploadInvalid),
                }
            }
        }
    }
}
