//! Online garbage collection (`berth garbage-collect`): the real binary on
//! storage a running Berth was pushed to (filesystem, S3, Azure) or that
//! distribution 2.8 serves, pushes
//! during a run driven through the library's phase hook, and the
//! blob-descriptor caches (in-memory, Redis) after a sweep.

mod common;

#[path = "gc/cli.rs"]
mod cli;
#[path = "gc/drivers.rs"]
mod drivers;
#[path = "gc/errors.rs"]
mod errors;
#[path = "gc/index.rs"]
mod index;
#[path = "gc/interop.rs"]
mod interop;
#[path = "gc/marking.rs"]
mod marking;
#[path = "gc/online.rs"]
mod online;
#[path = "gc/support.rs"]
mod support;
