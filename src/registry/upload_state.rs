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
    /// Serialized SHA-256 state after `offset` bytes (base64), empty at 0.
    #[serde(default)]
    pub hash: String,
}

impl UploadState {
    pub fn new(name: &str, id: &str, started_at: u64) -> Self {
        UploadState {
            name: name.to_string(),
            id: id.to_string(),
            offset: 0,
            started_at,
            hash: String::new(),
        }
    }

    /// The running SHA-256 over the first `offset` bytes.
    pub fn hasher(&self) -> Result<Sha256> {
        if self.hash.is_empty() {
            return Ok(<Sha256 as sha2::Digest>::new());
        }
        let raw = B64.decode(&self.hash).map_err(|_| invalid())?;
        let arr = raw.as_slice().try_into().map_err(|_| invalid())?;
        Sha256::deserialize(arr).map_err(|_| invalid())
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
        let mut h2 = back.hasher().unwrap();
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
}
