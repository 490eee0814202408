//! Deterministic test bytes: the same run after run, different at every
//! offset (a misplaced block shows) and incompressible.

/// `len` bytes of xorshift64 output from `state`, which must not be 0.
pub fn xorshift_bytes(mut state: u64, len: usize) -> Vec<u8> {
    assert_ne!(state, 0, "xorshift from 0 stays 0");
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
