//! The front door under abuse: slowloris and idle-connection floods, the
//! connection cap, request bodies that stall, and SIGTERM's bounded drain —
//! on the plain, TLS and debug listeners — against a real `berth` process
//! (`http.timeouts.*`, `http.maxconnections`, `http.draintimeout`).
mod common;

#[path = "api/client.rs"]
mod client;
// The raw TLS client of tests/tls.rs; only part of it is used here.
#[allow(dead_code)]
#[path = "tls/client.rs"]
mod tls_client;

#[path = "frontdoor/cap.rs"]
mod cap;
#[path = "frontdoor/config.rs"]
mod config;
#[path = "frontdoor/drain.rs"]
mod drain;
#[path = "frontdoor/flood.rs"]
mod flood;
#[path = "frontdoor/h2.rs"]
mod h2;
#[path = "frontdoor/listeners.rs"]
mod listeners;
#[path = "frontdoor/stall.rs"]
mod stall;
#[path = "frontdoor/support.rs"]
mod support;
