//! Access control against a real `berth` process: htpasswd basic auth (with
//! its failed-login throttle and bounded bcrypt queue) and bearer tokens
//! minted the way an external token server (docker_auth) does, `x5c` chains
//! included, with every refusal the spec and common sense ask for.

mod common;

#[path = "auth/basic.rs"]
mod basic;
#[path = "auth/chains.rs"]
mod chains;
#[path = "auth/keys.rs"]
mod keys;
#[path = "auth/tokens.rs"]
mod tokens;
