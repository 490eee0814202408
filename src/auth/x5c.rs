//! `x5c` certificate chains in token headers, verified as a PKI path the way
//! distribution's Go `x509.Verify` does: the first certificate signs the
//! token, the others are candidate intermediates, and a path must lead from
//! it to a certificate of `rootcertbundle`.
//!
//! rustls-webpki builds and checks the path (with ring's signature
//! algorithms, the process's one provider): name chaining, signatures,
//! validity at now, CA:TRUE on every intermediate, path lengths, critical
//! extensions. What webpki leaves to its caller is checked here, on the path
//! it found: key usage (keyCertSign on issuers, digitalSignature on the
//! signer, where the extension is present) and the bundle certificate's own
//! constraints when it issues (CA:TRUE, its path length). Like Go with
//! `ExtKeyUsageAny`, any extended key usage is accepted.
//!
//! A signer that is itself a bundle certificate is trusted as it is, as its
//! key would be by `kid` (a token server's self-signed certificate).
//! Unlike Go, webpki takes X.509 v3 certificates only (a v1 one cannot say
//! whether it is a CA): a chain's certificates must be v3.

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, Error, ExtendedKeyUsageValidator, KeyPurposeIdIter, VerifiedPath};
use x509_parser::prelude::*;

/// The signature algorithms a chain may use: all of webpki's, through ring.
static ALGORITHMS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_3072_8192_SHA384,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// A bundle certificate and what it says about issuing, read once at load.
struct Root {
    der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
    /// A CA (CA:TRUE, or a v1 root, which has no extensions to say so)
    /// whose key usage, if given, allows signing certificates.
    issues: bool,
    /// Its pathLenConstraint: at most this many intermediates below it.
    path_len: Option<u32>,
    /// notBefore, notAfter (Unix seconds).
    validity: (i64, i64),
}

/// The bundle's certificates as trust anchors, parsed once.
#[derive(Default)]
pub struct Roots {
    roots: Vec<Root>,
}

/// Any extended key usage will do (Go's `ExtKeyUsageAny`), as long as the
/// extension parses.
struct AnyPurpose;

impl ExtendedKeyUsageValidator for AnyPurpose {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match parse_x509_certificate(der) {
        Ok((&[], cert)) => Ok(cert),
        _ => Err("bad certificate".into()),
    }
}

impl Roots {
    /// `ders`: the bundle's certificates. One webpki cannot take as an
    /// anchor is left out with a warning (its key still serves by `kid`).
    pub fn new(ders: &[Vec<u8>]) -> Result<Roots, String> {
        let mut roots = Vec::new();
        for (i, der) in ders.iter().enumerate() {
            let bad = |e: String| format!("certificate {}: {e}", i + 1);
            let cert = parse(der).map_err(bad)?;
            let der = CertificateDer::from(der.clone());
            let anchor = match webpki::anchor_from_trusted_cert(&der) {
                Ok(a) => a.to_owned(),
                Err(e) => {
                    tracing::warn!(
                        certificate = i + 1,
                        error = ?e,
                        "auth.token.rootcertbundle: certificate unusable as an x5c root"
                    );
                    continue;
                }
            };
            let bc = cert.basic_constraints().map_err(|e| bad(e.to_string()))?;
            let ku = cert.key_usage().map_err(|e| bad(e.to_string()))?;
            let ca = match &bc {
                Some(bc) => bc.value.ca,
                None => cert.version() == X509Version::V1,
            };
            let validity = cert.validity();
            roots.push(Root {
                issues: ca && ku.is_none_or(|k| k.value.key_cert_sign()),
                path_len: bc.and_then(|b| b.value.path_len_constraint),
                validity: (
                    validity.not_before.timestamp(),
                    validity.not_after.timestamp(),
                ),
                der,
                anchor,
            });
        }
        Ok(Roots { roots })
    }

    fn root_of(&self, anchor: &TrustAnchor<'_>) -> Option<&Root> {
        self.roots.iter().find(|r| {
            r.anchor.subject == anchor.subject
                && r.anchor.subject_public_key_info == anchor.subject_public_key_info
        })
    }

    /// Check `chain` (DER, signer first) at `now`; Ok means the signer's key
    /// may sign tokens.
    pub fn verify(&self, chain: &[Vec<u8>], now: UnixTime) -> Result<(), String> {
        let (signer, rest) = chain.split_first().ok_or("empty chain")?;
        if let Some(root) = self
            .roots
            .iter()
            .find(|r| r.der.as_ref() == signer.as_slice())
        {
            let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            let (not_before, not_after) = root.validity;
            return match (not_before..=not_after).contains(&now) {
                true => Ok(()),
                false => Err("certificate outside its validity period".into()),
            };
        }
        let signer_cert = parse(signer)?;
        if let Some(ku) = signer_cert.key_usage().map_err(|e| e.to_string())? {
            if !ku.value.digital_signature() {
                return Err("the signing certificate's key usage excludes digitalSignature".into());
            }
        }
        let signer_der = CertificateDer::from(signer.as_slice());
        let leaf = EndEntityCert::try_from(&signer_der).map_err(|e| match e {
            Error::UnsupportedCertVersion => "the signing certificate is not X.509 v3".to_string(),
            e => format!("signing certificate: {e:?}"),
        })?;
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let anchors: Vec<TrustAnchor<'_>> = self.roots.iter().map(|r| r.anchor.clone()).collect();
        let check_path = |path: &VerifiedPath<'_>| self.check_path(path);
        leaf.verify_for_usage(
            ALGORITHMS,
            &anchors,
            &intermediates,
            now,
            AnyPurpose,
            None,
            Some(&check_path),
        )
        .map(|_| ())
        .map_err(|e| format!("no valid path to rootcertbundle: {e:?}"))
    }

    /// What webpki does not check on a path it built: issuers' key usage and
    /// the bundle certificate's own constraints. An error makes webpki try
    /// another path, if there is one.
    fn check_path(&self, path: &VerifiedPath<'_>) -> Result<(), Error> {
        let mut issuers = 0u32;
        for cert in path.intermediate_certificates() {
            issuers += 1;
            let der = cert.der();
            let parsed = parse(der.as_ref()).map_err(|_| Error::BadDer)?;
            let ku = parsed.key_usage().map_err(|_| Error::BadDer)?;
            if ku.is_some_and(|k| !k.value.key_cert_sign()) {
                return Err(Error::EndEntityUsedAsCa);
            }
        }
        let root = self.root_of(path.anchor()).ok_or(Error::UnknownIssuer)?;
        // A bundle certificate that is no CA (or may not sign certificates)
        // is trusted for its own key only, never as an issuer.
        if !root.issues {
            return Err(Error::EndEntityUsedAsCa);
        }
        if root.path_len.is_some_and(|max| issuers > max) {
            return Err(Error::PathLenConstraintViolated);
        }
        Ok(())
    }
}
