//! # email-reports: the email-event pipeline, a client application of the cluster
//!
//! **One job:** take the webhooks six email providers post (SendGrid, Mailgun, Amazon SES
//! through SNS, Postmark, SparkPost, Mandrill), keep every event in topic `email-events`, and
//! serve exact per-campaign and per-tenant reports, a suppression list, engaged recipients and
//! spam alerts from what one consumer group materialises.
//!
//! **Owns:** the canonical event model ([`event`]), each provider's body ([`providers`]) and
//! signature scheme ([`signature`]), the report state and its definitions ([`reports`]), the
//! consumer group that keeps it ([`materialiser`]), the HTTP routes ([`http`]), the process
//! ([`service`], [`dev`]), and the load generator with its checker ([`loadgen`]).
//!
//! **Invariants:**
//! - Parsing is a pure function of `(provider, raw body, carrier keys)`: the same body always
//!   yields the same events with the same ids, so a provider's retry is recognisable
//!   downstream by `(provider, event_id)`.
//! - The event time is the provider's time of the event, never the POST or signature time.
//! - A webhook gets 2xx only after its events are committed (acks=all); the reports count
//!   each `(provider, event_id)` once, whatever crashes, rebalances or redeliveries happen.
//! - No input makes a parser panic; malformed input is a [`ParseError`] naming the field path.
//!
//! **Must not depend on:** the broker (this crate is built on `client` and `proto` only, and
//! the broker never depends on it).
//!
//! **Modules:**
//! - [`event`] the canonical event, its kinds and [`Provider`]; [`time`] the event time;
//!   [`carrier`] which metadata keys carry tenant and campaign; [`error`] [`ParseError`].
//! - [`providers`] `parse(provider, body, keys)` and one module per provider.
//! - [`signature`] verify the raw bytes before parsing, one file per provider scheme;
//!   [`signing`] the dev/test signer ([`DevSecrets`]).
//! - [`reports`] the state: definitions, keys, the pure counting step, the sled store.
//! - [`materialiser`] the changelog applier and the group member that counts.
//! - [`http`] ingest, reports and job routes; [`jobs`] rebuild and CSV export; [`service`] one
//!   instance; [`dev`] the local product.
//! - [`payloads`] provider bodies built from events (the inverse of [`providers`]), for
//!   [`loadgen`], which posts signed traffic and checks the reports against its ground truth.
#![deny(missing_docs)]

pub mod carrier;
pub mod dev;
pub mod error;
pub mod event;
pub mod http;
pub mod jobs;
pub mod loadgen;
pub mod materialiser;
pub mod payloads;
pub mod providers;
pub mod reports;
pub mod service;
pub mod signature;
pub mod signing;
pub mod time;

pub use carrier::CarrierKeys;
pub use error::ParseError;
pub use event::{CanonicalEvent, EventKind, Provider, UnknownProvider};
pub use providers::{parse, Entry, Ignored, ParseOutcome, SubscriptionConfirmation};
pub use signature::{SignatureConfig, SignatureConfigError, SignatureError, Verified, Verifier};
pub use signing::DevSecrets;
pub use time::EventTime;
