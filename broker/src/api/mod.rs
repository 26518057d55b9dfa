//! # API: the wire ⇄ domain boundary
//!
//! **One job:** translate between `proto::v1` messages and the broker's subsystems. Handlers
//! decode, call a subsystem, encode; they hold no state and do no IO of their own.
//!
//! **Owns:** the single mapping from internal errors to wire error codes ([`error_codes`]), the
//! one way a refusal becomes a response (`answer`), and the request → domain conversions
//! (`convert`: stamp, size and acks validation, defaults). [`service`] is the `broker.v1` gRPC
//! service; its methods delegate in one line to a module per RPC family:
//!
//! - `produce`: Produce.
//! - `fetch`: Fetch and ListOffsets (the reads).
//! - `topics`: Metadata, DescribeTopics, CreateTopics, DeleteTopics.
//! - `leadership`: TransferLeadership.
//! - `producer_ids`: InitProducerId.
//! - [`groups`]: the `broker.v1.Groups` service (consumer groups), its own tonic service over
//!   the `coordinator`.
//! - `reassignments`: ReassignPartitions, CancelReassignments, ListReassignments (replica
//!   moves, served by the controller).
//! - `acls`: AddAcls, RemoveAcls, ListAcls, and `acls::check`, the one refusal of a request the
//!   ACLs deny (every handler asks it through `security::access::Access`).
//! - `users`: UpsertUser, DeleteUser, ListUsers (SCRAM users, served by the controller).
//! - [`auth`]: the `broker.v1.Auth` service (a SCRAM exchange for a session token).
//! - [`cluster`]: the internal `cluster.v1.Cluster` service (brokers proposing metadata
//!   commands through the controller leader).
//!
//! [`metrics`] counts bytes and records produced and fetched, and refusals per error code.
//! (Topic configs by name ⇄ `LogConfig` is `storage::settings`.)
//!
//! **Adding an RPC family** (consumer groups come next): give it its own file here, each
//! handler decode → call → encode — decode with a function in `convert`, call its subsystem,
//! return `Result<Response, answer::Refusal>` (implement `answer::Refused` for a new response
//! type), map new errors in [`error_codes`] only — and add one delegating line per method to
//! [`service`]. Do not grow an existing family's file with it.
//!
//! **Must not depend on:** openraft (replication keeps it inside), or any subsystem's internals
//! beyond its public operations.

mod acls;
mod answer;
pub mod auth;
pub mod cluster;
mod controller_voters;
mod convert;
pub mod error_codes;
mod fetch;
pub mod groups;
mod leadership;
pub mod metrics;
mod produce;
mod producer_ids;
mod reassignments;
pub mod service;
mod topics;
mod users;
