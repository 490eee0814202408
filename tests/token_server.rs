//! Berth's built-in token server against a real `berth` process that also
//! verifies the tokens it issues (`token_server:` + `auth.token:` on one
//! listener), and against CNCF distribution 2.8 (`docker-registry`) trusting
//! Berth's tokens. Keys come from the `openssl` CLI, accounts are bcrypt.
//! Configs are the examples in tests/fixtures/token-server.

mod common;

#[path = "token_server/acl_examples.rs"]
mod acl_examples;
#[path = "token_server/clients.rs"]
mod clients;
#[path = "token_server/config.rs"]
mod config;
#[path = "token_server/distribution.rs"]
mod distribution;
#[path = "token_server/flow.rs"]
mod flow;
#[path = "token_server/ldap.rs"]
mod ldap;
#[path = "token_server/oauth.rs"]
mod oauth;
#[path = "token_server/oidc.rs"]
mod oidc;
#[path = "token_server/support.rs"]
mod support;
