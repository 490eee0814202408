//! The pull-through cache (`proxy:`) against real upstreams on 127.0.0.1:
//! CNCF distribution 2.8 (Debian's `docker-registry`) behind token auth
//! from Berth's token server, and Berth itself.

#[path = "proxy/cluster.rs"]
mod cluster;
mod common;

#[path = "proxy/eviction.rs"]
mod eviction;
#[path = "proxy/gate.rs"]
mod gate;
#[path = "proxy/mirror.rs"]
mod mirror;
#[path = "proxy/outages.rs"]
mod outages;
#[path = "proxy/prefixes.rs"]
mod prefixes;
#[path = "proxy/shared.rs"]
mod shared;
#[path = "proxy/streaming.rs"]
mod streaming;
#[path = "proxy/stub.rs"]
mod stub;
#[path = "token_server/support.rs"]
#[allow(dead_code)]
mod support;
