//! The `broker` command line: the server (`serve`, `dev`), admin commands (topics, cluster,
//! partition moves, consumer groups, produce, consume) and benchmarks.

pub mod acl;
pub mod admin;
pub mod cluster;
pub mod dev;
pub mod group;
pub mod local_cluster;
pub mod output;
pub mod partition;
pub mod perf_consume;
pub mod perf_idle;
pub mod perf_produce;
pub mod perf_reassign;
pub mod progress;
pub mod serve;
pub mod user;
