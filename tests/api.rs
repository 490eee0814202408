//! HTTP API integration tests: every endpoint and error path, against a real
//! `berth` process (see `common`). One binary, one module per API area.

mod common;

#[path = "api/blobs.rs"]
mod blobs;
#[path = "api/catalog_index.rs"]
mod catalog_index;
#[path = "api/client.rs"]
mod client;
#[path = "api/config.rs"]
mod config;
#[path = "api/config_strict.rs"]
mod config_strict;
#[path = "api/errors.rs"]
mod errors;
#[path = "api/maintenance.rs"]
mod maintenance;
#[path = "api/manifests.rs"]
mod manifests;
#[path = "api/names.rs"]
mod names;
#[path = "api/pagination.rs"]
mod pagination;
#[path = "api/tags.rs"]
mod tags;
#[path = "api/uploads.rs"]
mod uploads;
