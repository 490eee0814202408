//! End-to-end tests with real clients against a real `berth` process: the
//! Docker engine, skopeo, and CNCF distribution sharing Berth's storage root.
//!
//! They need `dockerd`/`docker` (docker.io), `skopeo` and `docker-registry`
//! (distribution 2.8) on PATH, and root for dockerd; the container image and
//! compose tests also `debootstrap`, `docker-compose` and deb.debian.org. Each
//! test starts its own daemons on free 127.0.0.1 ports, so they may run in
//! parallel.

mod common;

#[path = "clients/auth.rs"]
mod auth;
#[path = "clients/compose.rs"]
mod compose;
#[path = "clients/daemons.rs"]
mod daemons;
#[path = "clients/docker.rs"]
mod docker;
#[path = "clients/image.rs"]
mod image;
#[path = "clients/images.rs"]
mod images;
#[path = "clients/interop.rs"]
mod interop;
#[path = "clients/mirror.rs"]
mod mirror;
#[path = "clients/oci.rs"]
mod oci;
#[path = "clients/skopeo.rs"]
mod skopeo;
#[path = "clients/support.rs"]
mod support;
#[path = "clients/tls.rs"]
mod tls;
#[path = "clients/token_server.rs"]
mod token_server;
