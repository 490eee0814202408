//! TLS: certificate chains, HTTP/2 by ALPN, mutual TLS, the minimum version,
//! reload on file change, configuration errors, and Let's Encrypt (ACME)
//! against pebble, Let's Encrypt's test server (`apt-get install pebble`).
//! Certificates are made per test with rcgen; everything is on 127.0.0.1.

mod common;

#[path = "tls/acme.rs"]
mod acme;
#[path = "tls/client.rs"]
mod client;
#[path = "tls/config.rs"]
mod config;
#[path = "tls/mtls.rs"]
mod mtls;
#[path = "tls/serving.rs"]
mod serving;
