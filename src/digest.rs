//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the hashers behind them.
//!
//! A leaf: nothing else in Berth is imported here, so the storage layout
//! (which names blobs by digest) and the registry rules both build on it
//! without depending on each other.

use std::{fmt, str::FromStr};

use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated digest: a supported algorithm and its lowercase hex encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("malformed digest {0:?}")]
    Malformed(String),
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    /// Build from an algorithm and a hex string, validating the encoding.
    pub fn from_parts(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::Malformed(format!("{algorithm}:{hex}")));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// Parses the OCI grammar `algorithm ":" encoded`; only sha256 and sha512 are
    /// supported, anything else well-formed is `Unsupported`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || DigestError::Malformed(s.chars().take(200).collect());
        let (alg, enc) = s.split_once(':').ok_or_else(malformed)?;
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !enc.is_empty()
            && enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !alg_ok || !enc_ok {
            return Err(malformed());
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::Unsupported(other.to_string())),
        };
        Digest::from_parts(algorithm, enc).map_err(|_| malformed())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

/// A running hash of either supported algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert!(format!("sha512:{}", "0".repeat(128))
            .parse::<Digest>()
            .is_ok());
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            format!("sha256:{}", "A".repeat(64)).parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
        assert!(matches!(
            "nocolon".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            "sha256:../../x".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
    }

    #[test]
    fn hashes_known_values() {
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    mod properties {
        use std::sync::LazyLock;

        use super::super::*;
        use proptest::prelude::*;

        /// The OCI digest grammar, as a regular expression.
        static GRAMMAR: LazyLock<regex::Regex> = LazyLock::new(|| {
            regex::Regex::new(r"^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").unwrap()
        });

        fn digestish() -> impl Strategy<Value = String> {
            prop_oneof![
                "(sha256|sha512|sha384|md5|SHA256|sha256\\+b64|)[:]?[0-9a-fA-F]{0,130}",
                "sha256:[0-9a-f]{64}",
                "sha512:[0-9a-f]{128}",
                "[a-z0-9+._-]{0,10}:[a-zA-Z0-9=_./-]{0,70}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Anything parses to a digest that prints back as it was read,
            /// or to the right error: Unsupported only for a well-formed
            /// digest of another algorithm.
            #[test]
            fn parses_round_trip_or_names_the_fault(s in digestish()) {
                match s.parse::<Digest>() {
                    Ok(d) => prop_assert_eq!(d.to_string(), s),
                    Err(DigestError::Unsupported(alg)) => {
                        prop_assert!(GRAMMAR.is_match(&s), "{:?}", s);
                        prop_assert!(alg != "sha256" && alg != "sha512");
                    }
                    Err(DigestError::Malformed(shown)) => {
                        prop_assert!(shown.chars().count() <= 200);
                        let alg = s.split(':').next().unwrap_or("");
                        prop_assert!(
                            !GRAMMAR.is_match(&s) || alg == "sha256" || alg == "sha512",
                            "{:?}", s
                        );
                    }
                }
            }

            /// The digest of any content is a digest that parses back.
            #[test]
            fn computed_digests_parse_back(data in proptest::collection::vec(any::<u8>(), 0..512), sha512 in any::<bool>()) {
                let alg = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
                let d = Digest::of(alg, &data);
                prop_assert_eq!(d.to_string().parse::<Digest>(), Ok(d.clone()));
                prop_assert_eq!(Digest::from_parts(alg, d.hex()), Ok(d));
            }
        }
    }
}
