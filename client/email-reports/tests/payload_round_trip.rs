//! The payload builders against the parsers: every body `payloads::build` writes must parse
//! back into exactly the events it was built from — same count and order, recipient, kind,
//! tenant, campaign, event time (at the provider's resolution, `reported_time`) and click URL
//! — with distinct `event_id`s for distinct events and the same `event_id` when an event is
//! built again (a provider's redelivery must be recognisable downstream).
//!
//! A table test walks every provider and every kind it supports; a property test does the same
//! over random events, batches and carrier keys.

use std::collections::HashSet;

use email_reports::payloads::{
    self, batches, build, mailgun_event_data, reported_time, ses_message, supports, OutgoingEvent, Payload,
};
use email_reports::{parse, CanonicalEvent, CarrierKeys, Entry, EventKind, EventTime, ParseOutcome, Provider};
use proptest::prelude::*;

/// Microseconds of 2200-01-01T00:00:00Z, the end of the range the builders accept.
const END_MICROS: i64 = 7_258_118_400 * 1_000_000;

fn events_of(provider: Provider, payload: &Payload, keys: &CarrierKeys) -> Vec<CanonicalEvent> {
    match parse(provider, &payload.body, keys) {
        Ok(ParseOutcome::Entries(entries)) => entries
            .into_iter()
            .map(|entry| match entry {
                Entry::Event(event) => event,
                Entry::Ignored(ignored) => panic!("{provider}: an entry was ignored: {ignored:?}"),
            })
            .collect(),
        other => panic!(
            "{provider}: {other:?}\nbody: {}",
            String::from_utf8_lossy(&payload.body)
        ),
    }
}

/// Asserts `parsed` is `sent`, field by field, as `provider` reports it.
fn assert_round_trip(provider: Provider, sent: &[OutgoingEvent], parsed: &[CanonicalEvent]) {
    assert_eq!(parsed.len(), sent.len(), "{provider}: event count");
    for (sent, parsed) in sent.iter().zip(parsed) {
        let context = format!("{provider} {sent:?} → {parsed:?}");
        assert_eq!(parsed.provider, provider, "{context}");
        assert_eq!(parsed.kind, sent.kind, "{context}");
        assert_eq!(parsed.recipient, sent.recipient, "{context}");
        assert_eq!(parsed.tenant.as_deref(), Some(sent.tenant.as_str()), "{context}");
        assert_eq!(parsed.campaign.as_deref(), Some(sent.campaign.as_str()), "{context}");
        assert_eq!(
            parsed.occurred_at,
            reported_time(provider, sent.occurred_at),
            "{context}"
        );
        let url = (sent.kind == EventKind::Click).then(|| sent.url.clone().unwrap());
        assert_eq!(parsed.url, url, "{context}");
        assert!(parsed.event_id.starts_with(&format!("{}|", sent.kind)), "{context}");
        // Where the provider has no event id, its message id carries the provider_event_id.
        let message_id = match provider {
            Provider::SendGrid | Provider::Mailgun | Provider::SparkPost => &sent.message_id,
            Provider::Ses | Provider::Postmark | Provider::Mandrill => &sent.provider_event_id,
        };
        assert_eq!(parsed.message_id.as_ref(), Some(message_id), "{context}");
        let has_event_id = match provider {
            Provider::SendGrid | Provider::Mailgun | Provider::SparkPost => true,
            Provider::Postmark => matches!(
                sent.kind,
                EventKind::HardBounce | EventKind::SoftBounce | EventKind::SpamBlock | EventKind::SpamComplaint
            ),
            Provider::Ses | Provider::Mandrill => false,
        };
        let provider_event_id = has_event_id.then(|| sent.provider_event_id.clone());
        assert_eq!(parsed.provider_event_id, provider_event_id, "{context}");
    }
}

/// Builds `events` as `provider` posts them (batches of up to `batch` where it batches, else
/// one per body) and parses every body back.
fn post_all(provider: Provider, events: &[OutgoingEvent], batch: usize, keys: &CarrierKeys) -> Vec<CanonicalEvent> {
    let size = if batches(provider) { batch.max(1) } else { 1 };
    let mut parsed = Vec::new();
    for chunk in events.chunks(size) {
        let payload = build(provider, chunk, keys).unwrap_or_else(|error| panic!("{provider}: {error}"));
        parsed.extend(events_of(provider, &payload, keys));
    }
    parsed
}

fn sample(provider: Provider, kind: EventKind, n: usize) -> OutgoingEvent {
    OutgoingEvent {
        provider_event_id: format!("{provider}-{kind}-{n}"),
        message_id: format!("msg-{n}@example.com"),
        tenant: format!("tenant-{}", n % 2),
        campaign: format!("campaign {n}"),
        recipient: format!("user.{n}+tag@example.com"),
        kind,
        // Sub-second parts on purpose: the providers that keep only seconds truncate them.
        occurred_at: EventTime::from_unix_micros(1_700_000_000_000_000 + n as i64 * 1_234_567).unwrap(),
        url: Some(format!("https://example.com/landing?c={n}&x=a|b")),
    }
}

#[test]
fn every_supported_kind_of_every_provider_round_trips() {
    let keys = CarrierKeys::default();
    for provider in Provider::ALL {
        let mut events = Vec::new();
        for kind in EventKind::ALL.into_iter().filter(|kind| supports(provider, *kind)) {
            for _ in 0..3 {
                events.push(sample(provider, kind, events.len()));
            }
        }
        let parsed = post_all(provider, &events, 4, &keys);
        assert_round_trip(provider, &events, &parsed);
        let ids: HashSet<&str> = parsed.iter().map(|event| event.event_id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "{provider}: event ids are not distinct");
        // A redelivery — each event alone, or in a different batch — keeps its id.
        let again = post_all(provider, &events, 1, &keys);
        let first: Vec<&str> = parsed.iter().map(|event| event.event_id.as_str()).collect();
        let second: Vec<&str> = again.iter().map(|event| event.event_id.as_str()).collect();
        assert_eq!(first, second, "{provider}: a redelivered event changed its id");
    }
}

/// The case the synthesised keys make hard: a load generator's events that differ only in
/// their id (two opens of one message by one recipient in the same second) are two events.
#[test]
fn events_differing_only_in_provider_event_id_are_distinct() {
    let keys = CarrierKeys::default();
    for provider in Provider::ALL {
        for kind in EventKind::ALL.into_iter().filter(|kind| supports(provider, *kind)) {
            let first = sample(provider, kind, 1);
            let second = OutgoingEvent {
                provider_event_id: format!("{}-again", first.provider_event_id),
                ..first.clone()
            };
            let parsed = post_all(provider, &[first.clone(), second.clone()], 2, &keys);
            assert_round_trip(provider, &[first, second], &parsed);
            assert_ne!(parsed[0].event_id, parsed[1].event_id, "{provider} {kind}");
        }
    }
}

#[test]
fn supported_kinds_per_provider() {
    use EventKind::*;
    let kinds =
        |provider| -> Vec<EventKind> { EventKind::ALL.into_iter().filter(|k| supports(provider, *k)).collect() };
    assert_eq!(kinds(Provider::SendGrid), EventKind::ALL);
    assert_eq!(kinds(Provider::Ses), EventKind::ALL);
    assert_eq!(
        kinds(Provider::Mailgun),
        [
            Processed,
            Delivered,
            HardBounce,
            SoftBounce,
            SpamBlock,
            SpamComplaint,
            Open,
            Click,
            Unsubscribe,
            Dropped
        ]
    );
    assert_eq!(
        kinds(Provider::Postmark),
        [
            Delivered,
            HardBounce,
            SoftBounce,
            SpamBlock,
            SpamComplaint,
            Open,
            Click,
            Unsubscribe,
            Resubscribe
        ]
    );
    assert_eq!(
        kinds(Provider::SparkPost),
        [
            Processed,
            Delivered,
            Deferred,
            HardBounce,
            SoftBounce,
            SpamBlock,
            SpamComplaint,
            Open,
            Click,
            Unsubscribe,
            Dropped
        ]
    );
    assert_eq!(
        kinds(Provider::Mandrill),
        [
            Processed,
            Delivered,
            Deferred,
            HardBounce,
            SoftBounce,
            SpamComplaint,
            Open,
            Click,
            Unsubscribe,
            Dropped
        ]
    );
}

#[test]
fn bodies_have_the_providers_shape_and_content_type() {
    let keys = CarrierKeys::default();
    let content_type = |provider| {
        build(provider, &[sample(provider, EventKind::Open, 1)], &keys)
            .unwrap()
            .content_type
    };
    assert_eq!(content_type(Provider::SendGrid), "application/json");
    assert_eq!(content_type(Provider::Ses), "text/plain; charset=UTF-8");
    assert_eq!(content_type(Provider::Mandrill), "application/x-www-form-urlencoded");

    let mailgun = build(
        Provider::Mailgun,
        &[sample(Provider::Mailgun, EventKind::Open, 1)],
        &keys,
    )
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&mailgun.body).unwrap();
    assert_eq!(
        body["signature"],
        serde_json::json!({"timestamp": "0", "token": "", "signature": ""})
    );
    assert_eq!(body["event-data"]["user-variables"]["tenant_id"], "tenant-1");

    let ses_event = sample(Provider::Ses, EventKind::Delivered, 1);
    let ses = build(Provider::Ses, std::slice::from_ref(&ses_event), &keys).unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&ses.body).unwrap();
    assert_eq!(envelope["Type"], "Notification");
    assert_eq!(envelope["MessageId"], ses_event.provider_event_id.as_str());
    assert_eq!(envelope["TopicArn"], payloads::SES_TOPIC_ARN);
    assert_eq!(envelope["SignatureVersion"], "2");
    assert_eq!(envelope["Signature"], "");
    assert_eq!(envelope["SigningCertURL"], payloads::SES_SIGNING_CERT_URL);
    let message: serde_json::Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        message["mail"]["tags"]["campaign_id"],
        serde_json::json!(["campaign 1"])
    );

    let mandrill = build(
        Provider::Mandrill,
        &[sample(Provider::Mandrill, EventKind::Open, 1)],
        &keys,
    )
    .unwrap();
    assert!(mandrill.body.starts_with(b"mandrill_events=%5B"));
}

/// What the signing side does with `mailgun_event_data` and `ses_message`: wrap them in its
/// own (signed) envelope. The events must not depend on that wrapper.
#[test]
fn the_signers_wrappers_parse_to_the_same_events() {
    let keys = CarrierKeys {
        tenant: "org".into(),
        campaign: "blast".into(),
    };
    let event = sample(Provider::Mailgun, EventKind::Click, 7);
    let built = events_of(
        Provider::Mailgun,
        &build(Provider::Mailgun, std::slice::from_ref(&event), &keys).unwrap(),
        &keys,
    );
    let signed = serde_json::json!({
        "signature": {
            "timestamp": "1770920772",
            "token": "e0b5477167110d68991efc6b9f89f0a11066af27834600e123",
            "signature": "12d9",
        },
        "event-data": mailgun_event_data(&event, &keys).unwrap(),
    });
    let wrapped = Payload {
        body: serde_json::to_vec(&signed).unwrap(),
        content_type: "application/json",
    };
    assert_eq!(events_of(Provider::Mailgun, &wrapped, &keys), built);

    let event = sample(Provider::Ses, EventKind::HardBounce, 7);
    let built = events_of(
        Provider::Ses,
        &build(Provider::Ses, std::slice::from_ref(&event), &keys).unwrap(),
        &keys,
    );
    // SNS raw message delivery posts the SES JSON bare; a signed envelope carries it as Message.
    let raw = Payload {
        body: ses_message(&event, &keys).unwrap().into_bytes(),
        content_type: "text/plain; charset=UTF-8",
    };
    assert_eq!(events_of(Provider::Ses, &raw, &keys), built);
    assert_round_trip(Provider::Ses, &[event], &built);
}

fn kind_strategy() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

prop_compose! {
    /// A random event (its id made unique by the caller).
    fn outgoing_event()(
        id in "[A-Za-z0-9_=-]{1,24}",
        message_id in "[A-Za-z0-9.<>@-]{1,30}",
        tenant in "[A-Za-z0-9][A-Za-z0-9 ._-]{0,12}",
        campaign in "[A-Za-z0-9][A-Za-z0-9 ._/:-]{0,20}",
        local in "[a-z0-9][a-z0-9.+_-]{0,15}",
        domain in "[a-z][a-z0-9-]{0,10}\\.(com|org|de|co\\.uk)",
        kind in kind_strategy(),
        micros in 0..END_MICROS,
        url in "https://[a-z]{1,10}\\.example/[A-Za-z0-9/?=&%|._~-]{0,30}",
    ) -> OutgoingEvent {
        OutgoingEvent {
            provider_event_id: id,
            message_id,
            tenant: tenant.trim().to_owned(),
            campaign: campaign.trim().to_owned(),
            recipient: format!("{local}@{domain}"),
            kind,
            occurred_at: EventTime::from_unix_micros(micros).unwrap(),
            url: (kind == EventKind::Click).then_some(url),
        }
    }
}

proptest! {
    #[test]
    fn random_events_round_trip_with_distinct_stable_ids(
        provider in prop::sample::select(Provider::ALL.to_vec()),
        raw_events in prop::collection::vec(outgoing_event(), 1..12),
        batch in 1usize..6,
        custom_keys in any::<bool>(),
    ) {
        let keys = if custom_keys {
            CarrierKeys { tenant: "tenant".into(), campaign: "utm_campaign".into() }
        } else {
            CarrierKeys::default()
        };
        let events: Vec<OutgoingEvent> = raw_events
            .into_iter()
            .filter(|event| supports(provider, event.kind))
            .enumerate()
            .map(|(i, mut event)| {
                // The index after the last '-' makes ids distinct whatever the random part is.
                event.provider_event_id = format!("{}-{i}", event.provider_event_id);
                event
            })
            .collect();
        prop_assume!(!events.is_empty());
        let parsed = post_all(provider, &events, batch, &keys);
        assert_round_trip(provider, &events, &parsed);
        let ids: HashSet<&str> = parsed.iter().map(|event| event.event_id.as_str()).collect();
        prop_assert_eq!(ids.len(), events.len());
        let again = post_all(provider, &events, batch + 1, &keys);
        prop_assert_eq!(parsed, again);
    }
}
