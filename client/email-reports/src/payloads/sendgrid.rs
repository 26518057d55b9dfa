//! SendGrid Event Webhook bodies: a JSON array of flat event objects, `application/json`.
//!
//! - Every kind: processed, delivered, deferred, `bounce` with `type: bounce` → hard bounce,
//!   `type: blocked` → soft bounce (classification Technical) or spam block (classification
//!   Reputation), dropped (reason Bounced Address), spamreport → spam complaint, open, click
//!   (`url`), unsubscribe, group_resubscribe → resubscribe.
//! - `sg_event_id` = provider_event_id (the dedup key: `kind|sg_event_id`, which is why a batch
//!   must not repeat one); `sg_message_id` and `smtp-id` from the message id.
//! - `timestamp`: integer Unix seconds.
//! - Tenant and campaign are custom args, flattened into top-level keys; a carrier key that is
//!   one of SendGrid's own field names would be shadowed, so it is refused.

use serde_json::{json, Map, Value};

use super::error::PayloadError;
use super::outgoing::OutgoingEvent;
use super::{carrier_map, timestamps, to_json_bytes, Payload};
use crate::carrier::CarrierKeys;
use crate::event::EventKind;

/// SendGrid's own event fields (its reserved custom-arg names plus the fields written here):
/// a custom arg by one of these names cannot come back.
const RESERVED_KEYS: [&str; 26] = [
    "asm_group_id",
    "attempt",
    "bounce_classification",
    "category",
    "cert_err",
    "email",
    "event",
    "ip",
    "marketing_campaign_id",
    "marketing_campaign_name",
    "marketing_campaign_split_id",
    "marketing_campaign_version",
    "pool",
    "reason",
    "response",
    "send_at",
    "sg_event_id",
    "sg_machine_open",
    "sg_message_id",
    "smtp-id",
    "status",
    "timestamp",
    "tls",
    "type",
    "url",
    "useragent",
];

const CONTENT_TYPE: &str = "application/json";

/// SendGrid has an event for every kind.
pub(super) fn supports(kind: EventKind) -> bool {
    match kind {
        EventKind::Processed
        | EventKind::Delivered
        | EventKind::Deferred
        | EventKind::HardBounce
        | EventKind::SoftBounce
        | EventKind::SpamBlock
        | EventKind::SpamComplaint
        | EventKind::Open
        | EventKind::Click
        | EventKind::Unsubscribe
        | EventKind::Resubscribe
        | EventKind::Dropped => true,
    }
}

/// Refuses carrier keys that collide with SendGrid's own fields.
pub(super) fn check_keys(keys: &CarrierKeys) -> Result<(), PayloadError> {
    for key in [&keys.tenant, &keys.campaign] {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(PayloadError::CarrierKeys {
                detail: format!("{key:?} is a SendGrid event field, so a custom arg of that name is shadowed"),
            });
        }
    }
    Ok(())
}

pub(super) fn body(events: &[OutgoingEvent], keys: &CarrierKeys) -> Result<Payload, PayloadError> {
    let items = events.iter().map(|event| item(event, keys)).collect();
    Ok(Payload {
        body: to_json_bytes(&Value::Array(items)),
        content_type: CONTENT_TYPE,
    })
}

fn item(event: &OutgoingEvent, keys: &CarrierKeys) -> Value {
    let (name, details) = event_fields(event);
    let mut item = Map::new();
    item.insert("email".into(), event.recipient.clone().into());
    item.insert("timestamp".into(), timestamps::unix_seconds(event.occurred_at).into());
    item.insert("event".into(), name.into());
    item.insert("sg_event_id".into(), event.provider_event_id.clone().into());
    item.insert("sg_message_id".into(), event.message_id.clone().into());
    item.insert("smtp-id".into(), format!("<{}>", event.message_id).into());
    item.insert("category".into(), json!([event.campaign]));
    if let Value::Object(details) = details {
        item.extend(details);
    }
    // Custom args last: check_keys made sure they shadow nothing written above.
    item.extend(carrier_map(event, keys));
    Value::Object(item)
}

/// The `event` name and the kind's own fields (as SendGrid's samples carry them).
fn event_fields(event: &OutgoingEvent) -> (&'static str, Value) {
    let engagement = json!({
        "ip": "192.0.2.17",
        "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    });
    match event.kind {
        EventKind::Processed => ("processed", json!({"pool": {"name": "transactional", "id": 210}})),
        EventKind::Delivered => (
            "delivered",
            json!({"response": "250 2.0.0 OK", "tls": 1, "ip": "198.51.100.4"}),
        ),
        EventKind::Deferred => (
            "deferred",
            json!({"response": "421 4.7.0 Try again later", "attempt": "3", "tls": 1}),
        ),
        EventKind::HardBounce => (
            "bounce",
            json!({
                "type": "bounce",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist",
                "status": "5.1.1",
                "bounce_classification": "Invalid Address",
            }),
        ),
        EventKind::SoftBounce => (
            "bounce",
            json!({
                "type": "blocked",
                "reason": "452 4.2.2 The email account that you tried to reach is over quota",
                "status": "4.2.2",
                "bounce_classification": "Technical",
            }),
        ),
        EventKind::SpamBlock => (
            "bounce",
            json!({
                "type": "blocked",
                "reason": "554 5.7.1 Service unavailable; client host blocked using a reputation list",
                "status": "5.7.1",
                "bounce_classification": "Reputation",
            }),
        ),
        EventKind::Dropped => ("dropped", json!({"reason": "Bounced Address", "status": "5.0.0"})),
        EventKind::SpamComplaint => ("spamreport", json!({})),
        EventKind::Open => {
            let mut fields = engagement;
            fields["sg_machine_open"] = false.into();
            ("open", fields)
        }
        EventKind::Click => {
            let mut fields = engagement;
            fields["url"] = event.url.clone().into();
            fields["url_offset"] = json!({"index": 0, "type": "html"});
            ("click", fields)
        }
        EventKind::Unsubscribe => ("unsubscribe", json!({})),
        EventKind::Resubscribe => {
            let mut fields = engagement;
            fields["asm_group_id"] = 1.into();
            ("group_resubscribe", fields)
        }
    }
}
