//! Access control against a real `berth` process: htpasswd basic auth and
//! bearer tokens minted the way an external token server (docker_auth) does,
//! with every refusal the spec and common sense ask for.

mod common;

#[path = "auth/basic.rs"]
mod basic;
#[path = "auth/keys.rs"]
mod keys;
#[path = "auth/tokens.rs"]
mod tokens;
