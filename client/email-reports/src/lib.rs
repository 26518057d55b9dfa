//! # email-reports: the email-event pipeline, a client application of the cluster
//!
//! **One job (so far):** turn the webhook bodies that six email providers post (SendGrid,
//! Mailgun, Amazon SES through SNS, Postmark, SparkPost, Mandrill) into one
//! [`CanonicalEvent`] each — the record value of topic `email-events`, keyed by campaign.
//!
//! **Owns:** the canonical event model ([`event`]: provider, event id, tenant, campaign,
//! recipient, kind, event time, click URL), where each provider carries those fields
//! ([`providers`]), the synthesised dedup keys for providers that have no per-event id, and
//! the parse errors a malformed body gets ([`ParseError`], which the HTTP layer turns into a 400),
//! and whether a request really comes from its provider ([`signature`]: a [`Verifier`] built
//! from [`SignatureConfig`]; a [`SignatureError`] is a 401), with the mirror-image signer for
//! load generation and tests ([`signing`]).
//!
//! **Invariants:**
//! - Parsing is a pure function of `(provider, raw body, carrier keys)`: no clock, no IO, no
//!   randomness. The same body always yields the same events with the same ids, so a provider's
//!   retry is recognisable downstream by `(provider, event_id)`.
//! - The event time is the provider's time of the event, never the POST or signature time.
//! - No input makes a parser panic; malformed input is a [`ParseError`] naming the field path.
//! - An event type the crate does not count (an SNS "hello world", a SparkPost ping, an account
//!   notice) is an [`Entry::Ignored`] with its reason, not an error, so one unknown entry never
//!   makes a provider retry — and finally drop — a whole batch.
//!
//! **Must not depend on:** the broker (this crate is built on `client` and `proto` only, and
//! the broker never depends on it), an HTTP server or tokio in the parsing and verification
//! cores (`signature` uses only the `http` crate's `HeaderMap` type).
//!
//! **Modules (and the ones planned, in this order):**
//! - [`event`] the canonical event, its kinds and [`Provider`]; [`time`] the event time;
//!   [`carrier`] which metadata keys carry tenant and campaign; [`error`] [`ParseError`].
//! - [`providers`] `parse(provider, body, keys)` and one module per provider.
//! - [`signature`] verify the raw bytes before parsing, one file per provider scheme;
//!   [`signing`] the dev/test signer ([`DevSecrets`]).
//! - next: `ingest/` (axum handlers: verify → parse → produce with acks=all →
//!   `mark_accepted` → 2xx), `materialiser/` (one consumer group, exact aggregates in sled),
//!   `reports/` (the HTTP JSON API).
#![deny(missing_docs)]

pub mod carrier;
pub mod error;
pub mod event;
pub mod payloads;
pub mod providers;
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
