//! Test data made on the fly: a large blob is a small random header (unique per
//! seed, so every blob has its own digest) followed by a shared random pattern
//! repeated to the requested size. Chunks are zero-copy slices of the pattern,
//! so streaming 1 GiB costs the client neither memory nor memcpy.

use bytes::Bytes;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use sha2::{Digest as _, Sha256};

/// Size of the shared random pattern.
pub const PATTERN_LEN: usize = 8 << 20;
/// Size of the per-seed header.
const HEADER_LEN: usize = 4096;
/// Largest chunk handed to the HTTP client at once.
pub const STREAM_CHUNK: u64 = 1 << 20;

/// `len` random bytes from a seed (reproducible).
pub fn random_bytes(seed: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of a buffer.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex(Sha256::digest(data).as_slice()))
}

/// A blob that exists only as a recipe.
#[derive(Clone)]
pub struct BlobData {
    header: Bytes,
    pattern: Bytes,
    size: u64,
}

impl BlobData {
    pub fn new(pattern: &Bytes, seed: u64, size: u64) -> Self {
        BlobData {
            header: random_bytes(seed ^ 0x9e37_79b9_7f4a_7c15, HEADER_LEN),
            pattern: pattern.clone(),
            size,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Up to `max` bytes starting at `off` (fewer at a header/pattern boundary).
    pub fn chunk_at(&self, off: u64, max: u64) -> Bytes {
        let max = max.min(self.size.saturating_sub(off)) as usize;
        let h = self.header.len() as u64;
        if off < h {
            let start = off as usize;
            let end = (start + max).min(self.header.len());
            return self.header.slice(start..end);
        }
        let p = ((off - h) % self.pattern.len() as u64) as usize;
        let n = max.min(self.pattern.len() - p);
        self.pattern.slice(p..p + n)
    }

    /// Visit the blob's bytes in order, as the HTTP body will send them.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&[u8])) {
        let mut off = 0;
        while off < self.size {
            let c = self.chunk_at(off, STREAM_CHUNK);
            off += c.len() as u64;
            f(&c);
        }
    }

    /// `sha256:<hex>` computed in one streaming pass.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        self.for_each_chunk(|c| h.update(c));
        format!("sha256:{}", hex(h.finalize().as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_to_the_same_digest() {
        let pattern = random_bytes(1, 10_000);
        let blob = BlobData::new(&pattern, 7, 123_457);
        let mut all = Vec::new();
        blob.for_each_chunk(|c| all.extend_from_slice(c));
        assert_eq!(all.len(), 123_457);
        assert_eq!(digest_of(&all), blob.digest());
        // Odd chunk sizes give the same bytes.
        let mut again = Vec::new();
        let mut off = 0;
        while off < blob.size() {
            let c = blob.chunk_at(off, 777);
            off += c.len() as u64;
            again.extend_from_slice(&c);
        }
        assert_eq!(all, again);
        assert_ne!(BlobData::new(&pattern, 8, 123_457).digest(), blob.digest());
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
