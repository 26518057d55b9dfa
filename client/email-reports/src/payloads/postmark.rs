//! Postmark bodies: one JSON record per POST, typed by `RecordType`, `application/json`.
//!
//! - Kinds: Delivery → delivered; Bounce `HardBounce` → hard bounce, `SoftBounce` → soft
//!   bounce, `Blocked` → spam block; SpamComplaint; Open; Click (`OriginalLink`);
//!   SubscriptionChange suppressing by the recipient's own request → unsubscribe, lifting a
//!   suppression → resubscribe. Postmark reports no send, deferral or drop: processed,
//!   deferred and dropped are unsupported.
//! - Ids: Bounce and SpamComplaint carry an int64 `ID` (the key `kind|ID`): the
//!   provider_event_id, written as a JSON integer when it is one, else as a string (which the
//!   parser reads too). The other records have none and the parser's key is
//!   `kind|RecordType|MessageID|recipient|time[|OriginalLink]`; so `MessageID` is the
//!   provider_event_id on every record (one rule for the canonical `message_id`), and the
//!   sender's message id has no place.
//! - Recipient in `Recipient`, but `Email` on Bounce and SpamComplaint; time in `DeliveredAt`,
//!   `BouncedAt`, `ReceivedAt` or `ChangedAt`, RFC 3339 with seven fractional digits (µs kept).
//! - Tenant and campaign: `Metadata`.

use serde_json::{json, Value};

use super::error::PayloadError;
use super::outgoing::OutgoingEvent;
use super::{carrier_map, timestamps, to_json_bytes, Payload};
use crate::carrier::CarrierKeys;
use crate::event::{EventKind, Provider};

const CONTENT_TYPE: &str = "application/json";

/// A record's type and the fields its kind puts recipient and time in.
struct Shape {
    record_type: &'static str,
    recipient_field: &'static str,
    time_field: &'static str,
}

fn shape(kind: EventKind) -> Option<Shape> {
    let shape = |record_type, recipient_field, time_field| Shape {
        record_type,
        recipient_field,
        time_field,
    };
    Some(match kind {
        EventKind::Delivered => shape("Delivery", "Recipient", "DeliveredAt"),
        EventKind::HardBounce | EventKind::SoftBounce | EventKind::SpamBlock => shape("Bounce", "Email", "BouncedAt"),
        EventKind::SpamComplaint => shape("SpamComplaint", "Email", "BouncedAt"),
        EventKind::Open => shape("Open", "Recipient", "ReceivedAt"),
        EventKind::Click => shape("Click", "Recipient", "ReceivedAt"),
        EventKind::Unsubscribe | EventKind::Resubscribe => shape("SubscriptionChange", "Recipient", "ChangedAt"),
        EventKind::Processed | EventKind::Deferred | EventKind::Dropped => return None,
    })
}

pub(super) fn supports(kind: EventKind) -> bool {
    shape(kind).is_some()
}

pub(super) fn body(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<Payload, PayloadError> {
    let Some(shape) = shape(event.kind) else {
        return Err(PayloadError::UnsupportedKind {
            provider: Provider::Postmark,
            kind: event.kind,
        });
    };
    let mut record = json!({
        "RecordType": shape.record_type,
        "MessageStream": "outbound",
        "MessageID": event.provider_event_id,
        "ServerID": 23,
        "Tag": event.campaign,
        "Metadata": carrier_map(event, keys),
    });
    record[shape.recipient_field] = event.recipient.clone().into();
    record[shape.time_field] = timestamps::rfc3339_seven_digits(event.occurred_at).into();
    let bounce = |type_name: &str, type_code: u32, name: &str, description: &str| {
        json!({
            "ID": int64_or_text(&event.provider_event_id),
            "Type": type_name,
            "TypeCode": type_code,
            "Name": name,
            "Description": description,
            "Details": "smtp;550 5.1.1 unknown or illegal alias",
            "From": "news@example.com",
            "Subject": "This week at Example",
            "DumpAvailable": false,
            "Inactive": type_code == 1 || type_code == 512,
            "CanActivate": true,
        })
    };
    let details = match event.kind {
        EventKind::Delivered => json!({"Details": "Test delivery webhook details"}),
        EventKind::HardBounce => bounce(
            "HardBounce",
            1,
            "Hard bounce",
            "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        ),
        EventKind::SoftBounce => bounce(
            "SoftBounce",
            4096,
            "Soft bounce",
            "Unable to temporarily deliver this email.",
        ),
        EventKind::SpamBlock => bounce(
            "Blocked",
            100_006,
            "ISP block",
            "The ISP has blocked this message for spam-like content or the sender's reputation.",
        ),
        EventKind::SpamComplaint => bounce(
            "SpamComplaint",
            100_001,
            "Spam complaint",
            "The subscriber reported spam.",
        ),
        EventKind::Open => {
            json!({"FirstOpen": true, "Platform": "Desktop", "ReadSeconds": 5, "UserAgent": "Mozilla/5.0"})
        }
        EventKind::Click => json!({
            "ClickLocation": "HTML",
            "OriginalLink": event.url,
            "Platform": "Desktop",
            "UserAgent": "Mozilla/5.0",
        }),
        EventKind::Unsubscribe => json!({
            "Origin": "Recipient",
            "SuppressSending": true,
            "SuppressionReason": "ManualSuppression",
        }),
        EventKind::Resubscribe => json!({
            "Origin": "Customer",
            "SuppressSending": false,
            "SuppressionReason": null,
        }),
        EventKind::Processed | EventKind::Deferred | EventKind::Dropped => json!({}),
    };
    if let (Value::Object(record), Value::Object(details)) = (&mut record, details) {
        record.extend(details);
    }
    Ok(Payload {
        body: to_json_bytes(&record),
        content_type: CONTENT_TYPE,
    })
}

/// Postmark's `ID` is an int64: an id that is the canonical text of one is written as a number
/// (the parser reads it back exactly), anything else as a string.
fn int64_or_text(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(number) if number.to_string() == id => number.into(),
        _ => id.into(),
    }
}
