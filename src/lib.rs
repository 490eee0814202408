//! Berth: an OCI Distribution v1.1 container registry.
//!
//! Where things live: a request enters in [`api`] (HTTP only), its rules live in
//! [`registry`], and bytes go through a [`storage`] driver. [`config`] holds
//! every setting; [`server`] wires them together. [`ui`] is the web UI,
//! which reads through [`registry`] like the API.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod digest;
pub mod health;
pub mod notify;
pub mod outbound;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod ui;
