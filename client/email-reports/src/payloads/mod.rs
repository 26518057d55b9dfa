//! # Payloads: canonical intents → provider webhook bodies (the parsers' inverse)
//!
//! **One job:** write the body a provider would post for some events, so a load generator (and
//! tests) can send realistic provider traffic to the webhook endpoints. It is the mirror of
//! [`crate::providers`]; the round-trip tests between the two keep both honest.
//!
//! **Owns:** [`OutgoingEvent`] (one event in provider-neutral terms), each provider's body
//! shape and batching ([`batches`], [`max_events`]), which [`EventKind`]s each provider can
//! express ([`supports`]) and how (the event-type fields the parser maps back to that kind),
//! where tenant and campaign go (the carriers of [`crate::carrier`]), how each provider writes
//! a time ([`reported_time`]), and [`PayloadError`].
//!
//! **Invariants:**
//! - Round trip: for every body [`build`] returns, [`crate::parse`] with the same provider and
//!   keys yields exactly one event per [`OutgoingEvent`], in order, with its recipient, kind,
//!   tenant, campaign, click URL and [`reported_time`] of its `occurred_at`.
//! - Identity: the event's `event_id` is a function of the provider, the `provider_event_id`
//!   and the kind only where the provider has per-event ids, and of the fields the parser
//!   synthesises it from otherwise; either way, building the same [`OutgoingEvent`] twice gives
//!   the same `event_id` (a redelivery is recognisable), and events with distinct
//!   `provider_event_id`s get distinct ones. Providers without per-event ids (SES, Postmark
//!   outside bounces, Mandrill) get that uniqueness by carrying `provider_event_id` as the
//!   provider's *message id*, the part of their synthesised key that can hold it; their
//!   canonical `message_id` is therefore the `provider_event_id` (see each provider's file).
//! - Pure: no clock, IO or randomness; the same input gives the same bytes. No panics: an
//!   event a provider cannot express or whose fields would not survive the round trip is a
//!   [`PayloadError`].
//! - Bodies are unsigned. Mailgun's `signature` block and SES's SNS signature fields are
//!   placeholders that the signing side replaces: it takes [`mailgun_event_data`] /
//!   [`ses_message`] and builds the signed wrapper itself.
//!
//! **Must not depend on:** signatures, HTTP or the producer, and nothing in
//! [`crate::providers`] but the public [`crate::parse`] its tests call: the builders restate
//! the providers' formats from the fixtures, so a parser bug is caught rather than copied.
//!
//! **Files:** `outgoing.rs` the event and its checks; `error.rs`; `timestamps.rs` the
//! providers' time notations; one file per provider.

mod error;
mod mailgun;
mod mandrill;
mod outgoing;
mod postmark;
mod sendgrid;
mod ses;
mod sparkpost;
mod timestamps;

use std::collections::HashMap;

use crate::carrier::CarrierKeys;
use crate::event::{EventKind, Provider};
use crate::time::EventTime;

pub use error::PayloadError;
pub use outgoing::OutgoingEvent;
pub use ses::{SES_SIGNING_CERT_URL, SES_TOPIC_ARN};

/// A body ready to post: its bytes and its `Content-Type`. Signing (headers, or Mailgun's and
/// SNS's in-body fields) is done elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The request body.
    pub body: Vec<u8>,
    /// The `Content-Type` header the provider sends with it.
    pub content_type: &'static str,
}

/// The body `provider` would post for `events`, with tenant and campaign in its carrier under
/// `keys`.
///
/// Batching providers (SendGrid, SparkPost, Mandrill) put all events in one body, in order;
/// the others (Mailgun, Postmark, SES) post exactly one event per body, so `events` must hold
/// one. A batch must not repeat a `provider_event_id`: providers never do within one POST (a
/// redelivery is a new POST), and SendGrid's parser stops trusting an id it sees twice.
pub fn build(provider: Provider, events: &[OutgoingEvent], keys: &CarrierKeys) -> Result<Payload, PayloadError> {
    check_batch(provider, events, keys)?;
    match provider {
        Provider::SendGrid => sendgrid::body(events, keys),
        Provider::Mailgun => mailgun::body(&events[0], keys),
        Provider::Ses => ses::body(&events[0], keys),
        Provider::Postmark => postmark::body(&events[0], keys),
        Provider::SparkPost => sparkpost::body(events, keys),
        Provider::Mandrill => mandrill::body(events, keys),
    }
}

/// Mailgun's `event-data` object for `event`: what the signing side wraps as
/// `{"signature": {…}, "event-data": …}`. [`build`] wraps it with an unsigned placeholder
/// signature block instead.
pub fn mailgun_event_data(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<serde_json::Value, PayloadError> {
    check_batch(Provider::Mailgun, std::slice::from_ref(event), keys)?;
    mailgun::event_data(event, keys)
}

/// The SES event-publishing JSON for `event`: the text an SNS notification carries as its
/// `Message` (the signing side builds and signs that envelope; [`build`] makes an unsigned one).
pub fn ses_message(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<String, PayloadError> {
    check_batch(Provider::Ses, std::slice::from_ref(event), keys)?;
    ses::message(event, keys)
}

/// Whether `provider` posts several events in one body.
pub fn batches(provider: Provider) -> bool {
    max_events(provider) != Some(1)
}

/// The most events `provider` puts in one body (`None`: no count limit; SendGrid's is 768 KB).
pub fn max_events(provider: Provider) -> Option<usize> {
    match provider {
        Provider::SendGrid | Provider::SparkPost => None,
        Provider::Mandrill => Some(mandrill::MAX_EVENTS),
        Provider::Mailgun | Provider::Ses | Provider::Postmark => Some(1),
    }
}

/// Whether `provider` has a webhook event that its parser reads as `kind`.
///
/// SendGrid and SES express every kind; Mailgun all but deferred and resubscribe; Postmark
/// only delivered, the bounces, spam block and complaint, open, click, unsubscribe and
/// resubscribe; SparkPost all but resubscribe; Mandrill all but spam block and resubscribe.
pub fn supports(provider: Provider, kind: EventKind) -> bool {
    match provider {
        Provider::SendGrid => sendgrid::supports(kind),
        Provider::Mailgun => mailgun::supports(kind),
        Provider::Ses => ses::supports(kind),
        Provider::Postmark => postmark::supports(kind),
        Provider::SparkPost => sparkpost::supports(kind),
        Provider::Mandrill => mandrill::supports(kind),
    }
}

/// The event time the parser reads back from `provider`'s body for `time`: `time` truncated
/// to what the provider writes — whole seconds (SendGrid, SparkPost, Mandrill), milliseconds
/// (SES) or microseconds (Mailgun's float seconds, Postmark's seven fractional digits).
pub fn reported_time(provider: Provider, time: EventTime) -> EventTime {
    timestamps::truncate(time, timestamps::resolution_micros(provider))
}

/// Everything [`build`] needs to hold for the round trip: usable carrier keys, a batch size
/// the provider posts, kinds it can express, fields the parser reads back unchanged, and no
/// `provider_event_id` twice.
fn check_batch(provider: Provider, events: &[OutgoingEvent], keys: &CarrierKeys) -> Result<(), PayloadError> {
    keys.validate().map_err(|detail| PayloadError::CarrierKeys { detail })?;
    if provider == Provider::SendGrid {
        sendgrid::check_keys(keys)?;
    }
    let max = max_events(provider).unwrap_or(usize::MAX);
    if events.is_empty() || events.len() > max {
        return Err(PayloadError::BatchSize {
            provider,
            count: events.len(),
            max,
        });
    }
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if !supports(provider, event.kind) {
            return Err(PayloadError::UnsupportedKind {
                provider,
                kind: event.kind,
            });
        }
        event.check(index)?;
        if let Some(&first) = first_use.get(event.provider_event_id.as_str()) {
            return Err(PayloadError::DuplicateEventId {
                index,
                first,
                id: event.provider_event_id.clone(),
            });
        }
        first_use.insert(&event.provider_event_id, index);
    }
    Ok(())
}

/// `{tenant key: tenant, campaign key: campaign}`, the map most carriers are.
fn carrier_map(event: &OutgoingEvent, keys: &CarrierKeys) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert(keys.tenant.clone(), event.tenant.clone().into());
    map.insert(keys.campaign.clone(), event.campaign.clone().into());
    map
}

/// The domain of an address (after the last `@`), for the fields providers derive from it.
fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(_, domain)| domain)
}

/// Serialises a JSON value built here (string keys only, so it cannot fail).
fn to_json_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a serde_json::Value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: EventKind) -> OutgoingEvent {
        OutgoingEvent {
            provider_event_id: id.into(),
            message_id: "m-1".into(),
            tenant: "t-1".into(),
            campaign: "c-1".into(),
            recipient: "a@example.com".into(),
            kind,
            occurred_at: EventTime::from_unix_micros(1_700_000_000_123_456).unwrap(),
            url: (kind == EventKind::Click).then(|| "https://example.com/x".into()),
        }
    }

    #[test]
    fn batching_and_limits_per_provider() {
        let batching: Vec<Provider> = Provider::ALL.into_iter().filter(|p| batches(*p)).collect();
        assert_eq!(batching, [Provider::SendGrid, Provider::SparkPost, Provider::Mandrill]);
        assert_eq!(max_events(Provider::Mandrill), Some(1_000));
    }

    #[test]
    fn unsupported_kinds_are_errors_not_bodies() {
        for provider in Provider::ALL {
            for kind in EventKind::ALL {
                let result = build(provider, &[event("e1", kind)], &CarrierKeys::default());
                if supports(provider, kind) {
                    assert!(result.is_ok(), "{provider} {kind}: {result:?}");
                } else {
                    assert_eq!(result, Err(PayloadError::UnsupportedKind { provider, kind }));
                }
            }
        }
        assert!(mailgun_event_data(&event("e1", EventKind::Deferred), &CarrierKeys::default()).is_err());
        assert!(ses_message(&event("e1", EventKind::Open), &CarrierKeys::default()).is_ok());
    }

    #[test]
    fn batch_sizes_duplicates_and_keys_are_checked() {
        let keys = CarrierKeys::default();
        let two = [event("e1", EventKind::Open), event("e2", EventKind::Open)];
        assert!(matches!(
            build(Provider::Postmark, &two, &keys),
            Err(PayloadError::BatchSize { count: 2, max: 1, .. })
        ));
        assert!(matches!(
            build(Provider::SendGrid, &[], &keys),
            Err(PayloadError::BatchSize { count: 0, .. })
        ));
        let repeated = [event("e1", EventKind::Open), event("e1", EventKind::Click)];
        assert_eq!(
            build(Provider::SparkPost, &repeated, &keys),
            Err(PayloadError::DuplicateEventId {
                index: 1,
                first: 0,
                id: "e1".into()
            })
        );
        let reserved = CarrierKeys {
            tenant: "email".into(),
            campaign: "campaign_id".into(),
        };
        assert!(matches!(
            build(Provider::SendGrid, &two, &reserved),
            Err(PayloadError::CarrierKeys { .. })
        ));
        assert!(build(Provider::SparkPost, &two, &reserved).is_ok());
    }

    #[test]
    fn reported_time_is_the_providers_precision() {
        let t = EventTime::from_unix_micros(1_700_000_000_123_456).unwrap();
        let micros = |provider| reported_time(provider, t).unix_micros();
        assert_eq!(micros(Provider::SendGrid), 1_700_000_000_000_000);
        assert_eq!(micros(Provider::Ses), 1_700_000_000_123_000);
        assert_eq!(micros(Provider::Mailgun), 1_700_000_000_123_456);
        assert_eq!(micros(Provider::Postmark), 1_700_000_000_123_456);
    }
}
