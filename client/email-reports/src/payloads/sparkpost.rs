//! SparkPost (Bird) bodies: a JSON array of `{"msys": {"<class>_event": {…}}}`,
//! `application/json`.
//!
//! - Kinds: injection → processed, delivery, delay → deferred, bounce by `bounce_class`
//!   (10 Invalid Recipient → hard bounce, 20 Soft Bounce → soft bounce, 51 Spam Block → spam
//!   block), policy_rejection (class 25, Admin Failure) → dropped, spam_complaint, open and
//!   click (`target_link_url`) as track events, list_unsubscribe. SparkPost reports no
//!   resubscribe: unsupported.
//! - `event_id` = provider_event_id (the key `kind|event_id`); `message_id` the message id.
//! - `timestamp`: Unix seconds as a string.
//! - Tenant and campaign: `rcpt_meta` (and the campaign in `campaign_id` too, as senders do).

use serde_json::{json, Value};

use super::error::PayloadError;
use super::outgoing::OutgoingEvent;
use super::{carrier_map, timestamps, to_json_bytes, Payload};
use crate::carrier::CarrierKeys;
use crate::event::{EventKind, Provider};

const CONTENT_TYPE: &str = "application/json";

/// The event's class (the `msys` key) and `type`.
fn shape(kind: EventKind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        EventKind::Processed => ("message_event", "injection"),
        EventKind::Delivered => ("message_event", "delivery"),
        EventKind::Deferred => ("message_event", "delay"),
        EventKind::HardBounce | EventKind::SoftBounce | EventKind::SpamBlock => ("message_event", "bounce"),
        EventKind::Dropped => ("message_event", "policy_rejection"),
        EventKind::SpamComplaint => ("message_event", "spam_complaint"),
        EventKind::Open => ("track_event", "open"),
        EventKind::Click => ("track_event", "click"),
        EventKind::Unsubscribe => ("unsubscribe_event", "list_unsubscribe"),
        EventKind::Resubscribe => return None,
    })
}

pub(super) fn supports(kind: EventKind) -> bool {
    shape(kind).is_some()
}

pub(super) fn body(events: &[OutgoingEvent], keys: &CarrierKeys) -> Result<Payload, PayloadError> {
    let items = events
        .iter()
        .map(|event| item(event, keys))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Payload {
        body: to_json_bytes(&Value::Array(items)),
        content_type: CONTENT_TYPE,
    })
}

fn item(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<Value, PayloadError> {
    let Some((class, event_type)) = shape(event.kind) else {
        return Err(PayloadError::UnsupportedKind {
            provider: Provider::SparkPost,
            kind: event.kind,
        });
    };
    let mut fields = json!({
        "type": event_type,
        "event_id": event.provider_event_id,
        "message_id": event.message_id,
        "transmission_id": "84345317650824116",
        "campaign_id": event.campaign,
        "customer_id": "1",
        "rcpt_to": event.recipient,
        "raw_rcpt_to": event.recipient,
        "rcpt_meta": carrier_map(event, keys),
        "rcpt_tags": [],
        "friendly_from": "news@example.com",
        "subject": "This week at Example",
        "timestamp": timestamps::unix_seconds(event.occurred_at).to_string(),
    });
    let details = match event.kind {
        EventKind::Processed => json!({"sending_ip": "198.51.100.4"}),
        EventKind::Delivered => json!({"queue_time": "3004", "num_retries": "0", "sending_ip": "198.51.100.4"}),
        EventKind::Deferred => {
            let mut delay = bounce_fields("21", "454", "454 4.4.4 [internal] no MX or A for domain");
            delay["num_retries"] = "1".into();
            delay
        }
        EventKind::HardBounce => bounce_fields(
            "10",
            "550",
            "550 5.1.1 <recipient>: Recipient address rejected: User unknown",
        ),
        EventKind::SoftBounce => bounce_fields("20", "452", "452 4.2.2 Mailbox full"),
        EventKind::SpamBlock => bounce_fields("51", "554", "554 5.7.1 Message rejected as spam"),
        EventKind::Dropped => bounce_fields(
            "25",
            "554",
            "554 5.7.1 recipient address suppressed due to customer policy",
        ),
        EventKind::SpamComplaint => {
            json!({"fbtype": "abuse", "report_by": "server.isp.com", "report_to": "abuse.example.com"})
        }
        EventKind::Open => json!({"ip_address": "192.0.2.17", "user_agent": "Mozilla/5.0"}),
        EventKind::Click => json!({
            "ip_address": "192.0.2.17",
            "user_agent": "Mozilla/5.0",
            "target_link_name": "Read more",
            "target_link_url": event.url,
        }),
        EventKind::Unsubscribe => json!({"mailfrom": "bounces@example.com"}),
        EventKind::Resubscribe => json!({}),
    };
    if let (Value::Object(fields), Value::Object(details)) = (&mut fields, details) {
        fields.extend(details);
    }
    Ok(json!({ "msys": { class: fields } }))
}

/// The fields of a bounce-like event (bounce, delay, policy rejection).
fn bounce_fields(class: &str, code: &str, reason: &str) -> Value {
    json!({
        "bounce_class": class,
        "error_code": code,
        "reason": reason,
        "raw_reason": reason,
    })
}
