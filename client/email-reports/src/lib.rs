//! # email-reports: the email-event pipeline, a client application of the cluster
//!
//! **One job (so far):** turn the webhook bodies that six email providers post (SendGrid,
//! Mailgun, Amazon SES through SNS, Postmark, SparkPost, Mandrill) into one
//! [`CanonicalEvent`] each — the record value of topic `email-events`, keyed by campaign.
//!
//! **Owns:** the canonical event model ([`event`]: provider, event id, tenant, campaign,
//! recipient, kind, event time, click URL), where each provider carries those fields
//! ([`providers`]), the synthesised dedup keys for providers that have no per-event id, and
//! the parse errors a malformed body gets ([`ParseError`], which the HTTP layer turns into a 400).
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
//! the broker never depends on it), HTTP or tokio in the parsing core.
//!
//! **Modules (and the ones planned, in this order):**
//! - [`event`] the canonical event, its kinds and [`Provider`]; [`time`] the event time;
//!   [`carrier`] which metadata keys carry tenant and campaign; [`error`] [`ParseError`].
//! - [`providers`] `parse(provider, body, keys)` and one module per provider.
//! - [`payloads`] the inverse, for load generation and tests: `build(provider, events, keys)`
//!   writes the (unsigned) body a provider would post, which `parse` reads back exactly.
//! - next: `signature/` (verify the raw bytes before parsing, per provider), `ingest/` (axum
//!   handlers: verify → parse → produce with acks=all → 2xx), `materialiser/` (one consumer
//!   group, exact aggregates in sled), `reports/` (the HTTP JSON API).
#![deny(missing_docs)]

pub mod carrier;
pub mod error;
pub mod event;
pub mod payloads;
pub mod providers;
pub mod time;

pub use carrier::CarrierKeys;
pub use error::ParseError;
pub use event::{CanonicalEvent, EventKind, Provider, UnknownProvider};
pub use providers::{parse, Entry, Ignored, ParseOutcome, SubscriptionConfirmation};
pub use time::EventTime;
