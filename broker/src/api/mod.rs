//! # API: the wire ⇄ domain boundary
//!
//! **One job:** translate between `proto::v1` messages and the broker's subsystems. Handlers
//! decode, call a subsystem, encode; they hold no state and do no IO of their own.
//!
//! **Owns:** the single mapping from internal errors to wire error codes ([`error_codes`]).
//! [`service`] is the `broker.v1` gRPC service; [`topic_config`] the wire form of topic configs.

pub mod error_codes;
pub mod service;
pub mod topic_config;
