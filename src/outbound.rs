//! What Berth's own HTTP requests to other services share (an upstream
//! registry, its token server, an OIDC issuer): reading an answer's body
//! with a cap, so a misbehaving or hostile server cannot make Berth buffer
//! more than the document it asked for may be.

use bytes::{Bytes, BytesMut};

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the cap (by its Content-Length, or as it streamed in).
    TooLarge,
    Transport(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("the answer is larger than expected"),
            BodyError::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// `resp`'s whole body if it is at most `max` bytes; reading stops at the
/// first byte past it.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(piece) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + piece.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}
