//! Mailgun webhooks v3 bodies: one `{"signature": {…}, "event-data": {…}}` per POST,
//! `application/json`.
//!
//! - Kinds: accepted → processed, rejected → dropped, delivered, `failed` permanent → hard
//!   bounce, temporary → soft bounce, reason `espblock` → spam block, opened, clicked (`url`),
//!   unsubscribed, complained → spam complaint. Mailgun has no deferral event (a temporary
//!   failure is retried and reported as `failed`) and no resubscribe: both unsupported.
//! - `event-data.id` = provider_event_id (the dedup key `kind|id`); the message id goes in
//!   `message.headers.message-id`.
//! - `timestamp`: float Unix seconds, exact to the µs.
//! - Tenant and campaign: `user-variables`.
//! - The `signature` block [`body`] writes is a placeholder, `{"timestamp": "0", "token": "",
//!   "signature": ""}`: the signing side computes the real one (it signs a timestamp and a
//!   fresh token, not the event) and writes `{"signature": …, "event-data": event_data}`
//!   around [`super::mailgun_event_data`]'s value.

use serde_json::{json, Value};

use super::error::PayloadError;
use super::outgoing::OutgoingEvent;
use super::{carrier_map, domain_of, timestamps, to_json_bytes, Payload};
use crate::carrier::CarrierKeys;
use crate::event::{EventKind, Provider};

const CONTENT_TYPE: &str = "application/json";

/// The event name, and for `failed` its severity and reason.
struct Shape {
    event: &'static str,
    log_level: &'static str,
    failure: Option<(&'static str, &'static str)>,
}

fn shape(kind: EventKind) -> Option<Shape> {
    let plain = |event, log_level| Shape {
        event,
        log_level,
        failure: None,
    };
    let failed = |severity, reason| Shape {
        event: "failed",
        log_level: if severity == "permanent" { "error" } else { "warn" },
        failure: Some((severity, reason)),
    };
    Some(match kind {
        EventKind::Processed => plain("accepted", "info"),
        EventKind::Dropped => plain("rejected", "warn"),
        EventKind::Delivered => plain("delivered", "info"),
        EventKind::HardBounce => failed("permanent", "bounce"),
        EventKind::SoftBounce => failed("temporary", "generic"),
        EventKind::SpamBlock => failed("temporary", "espblock"),
        EventKind::Open => plain("opened", "info"),
        EventKind::Click => plain("clicked", "info"),
        EventKind::Unsubscribe => plain("unsubscribed", "info"),
        EventKind::SpamComplaint => plain("complained", "warn"),
        EventKind::Deferred | EventKind::Resubscribe => return None,
    })
}

pub(super) fn supports(kind: EventKind) -> bool {
    shape(kind).is_some()
}

pub(super) fn body(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<Payload, PayloadError> {
    let body = json!({
        "signature": {"timestamp": "0", "token": "", "signature": ""},
        "event-data": event_data(event, keys)?,
    });
    Ok(Payload {
        body: to_json_bytes(&body),
        content_type: CONTENT_TYPE,
    })
}

pub(super) fn event_data(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<Value, PayloadError> {
    let Some(shape) = shape(event.kind) else {
        return Err(PayloadError::UnsupportedKind {
            provider: Provider::Mailgun,
            kind: event.kind,
        });
    };
    let mut data = json!({
        "event": shape.event,
        "id": event.provider_event_id,
        "timestamp": timestamps::unix_seconds_float(event.occurred_at),
        "log-level": shape.log_level,
        "recipient": event.recipient,
        "recipient-domain": domain_of(&event.recipient),
        "message": {
            "headers": {
                "message-id": event.message_id,
                "from": "News <news@mg.example.com>",
                "to": event.recipient,
                "subject": "This week at Example",
            },
        },
        "tags": [event.campaign],
        "campaigns": [],
        "user-variables": carrier_map(event, keys),
        "flags": {"is-test-mode": false},
    });
    match event.kind {
        EventKind::Processed => {
            data["method"] = "HTTP".into();
            data["envelope"] =
                json!({"sender": "bounce@mg.example.com", "targets": event.recipient, "transport": "smtp"});
        }
        EventKind::Dropped => {
            data["reject"] = json!({"reason": "Sending to this address is not allowed", "description": ""});
        }
        EventKind::Delivered => {
            data["delivery-status"] =
                json!({"code": 250, "message": "OK", "description": "", "attempt-no": 1, "tls": true});
        }
        EventKind::Open | EventKind::Click => {
            data["ip"] = "192.0.2.17".into();
            data["client-info"] = json!({
                "client-name": "Chrome",
                "client-os": "Windows",
                "client-type": "browser",
                "device-type": "desktop",
            });
            data["geolocation"] = json!({"city": "Unknown", "country": "GB", "region": "Unknown"});
            if event.kind == EventKind::Click {
                data["url"] = event.url.clone().into();
            }
        }
        _ => {}
    }
    if let Some((severity, reason)) = shape.failure {
        data["severity"] = severity.into();
        data["reason"] = reason.into();
        data["delivery-status"] = if severity == "permanent" {
            json!({
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
                "attempt-no": 1,
            })
        } else {
            json!({
                "code": 452,
                "message": "4.2.2 The email account that you tried to reach is over quota.",
                "attempt-no": 1,
                "retry-seconds": 600,
            })
        };
    }
    Ok(data)
}
