//! Signing keys and certificates for the tests, made with the openssl CLI.
#![allow(dead_code)]

use std::path::Path;

use base64::Engine;

fn openssl(args: &[&str], dir: &Path) {
    crate::common::process::openssl_in(dir, args);
}

pub struct Key {
    /// PEM private key
    pub key_pem: Vec<u8>,
    /// PEM self-signed certificate (or CA-signed, see `leaf_signed_by`)
    pub cert_pem: Vec<u8>,
    pub cert_der: Vec<u8>,
    /// DER SubjectPublicKeyInfo, for the libtrust key id
    pub spki_der: Vec<u8>,
}

fn read_key(dir: &Path, name: &str) -> Key {
    openssl(
        &[
            "x509",
            "-in",
            &format!("{name}.crt"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.der"),
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-in",
            &format!("{name}.crt"),
            "-noout",
            "-pubkey",
            "-out",
            &format!("{name}.pub"),
        ],
        dir,
    );
    openssl(
        &[
            "pkey",
            "-pubin",
            "-in",
            &format!("{name}.pub"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.spki"),
        ],
        dir,
    );
    Key {
        key_pem: std::fs::read(dir.join(format!("{name}.key"))).unwrap(),
        cert_pem: std::fs::read(dir.join(format!("{name}.crt"))).unwrap(),
        cert_der: std::fs::read(dir.join(format!("{name}.der"))).unwrap(),
        spki_der: std::fs::read(dir.join(format!("{name}.spki"))).unwrap(),
    }
}

fn new_key(dir: &Path, name: &str, kind: &str) {
    let key = format!("{name}.key");
    match kind {
        "rsa" => openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key,
            ],
            dir,
        ),
        "ec" => openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ],
            dir,
        ),
        "ed25519" => openssl(&["genpkey", "-algorithm", "ED25519", "-out", &key], dir),
        other => panic!("unknown key kind {other}"),
    }
}

/// A key with a self-signed certificate. `kind`: rsa, ec, ed25519.
pub fn self_signed(dir: &Path, name: &str, kind: &str) -> Key {
    new_key(dir, name, kind);
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
        ],
        dir,
    );
    read_key(dir, name)
}

/// A key whose certificate is signed by `ca` (which must exist in `dir`): an
/// X.509 v3 end-entity certificate for signing (`x5c` chains must be v3).
pub fn leaf_signed_by(dir: &Path, name: &str, ca: &str, kind: &str) -> Key {
    new_key(dir, name, kind);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &format!("{name}.csr"),
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
        ],
        dir,
    );
    read_key(dir, name)
}

pub fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}
