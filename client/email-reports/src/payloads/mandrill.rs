//! Mailchimp Transactional (Mandrill) bodies: `application/x-www-form-urlencoded` with one
//! field, `mandrill_events`, a JSON array of up to 1,000 events.
//!
//! - Kinds: send → processed, deferral → deferred, hard_bounce, soft_bounce, delivered, open,
//!   click (`url`), spam → spam complaint, unsub → unsubscribe, reject → dropped. Mandrill has
//!   no spam-block refinement and no resubscribe event: both unsupported.
//! - Mandrill has no event id; the parser's key is `kind|_id|ts[|url]` with `_id` the message
//!   id, so `_id` (and `msg._id`) is the provider_event_id and the sender's message id has no
//!   place.
//! - `ts` (and `msg.ts`, the send): integer Unix seconds.
//! - Tenant and campaign: `msg.metadata`.

use serde_json::{json, Value};

use super::error::PayloadError;
use super::outgoing::OutgoingEvent;
use super::{carrier_map, timestamps, Payload};
use crate::carrier::CarrierKeys;
use crate::event::{EventKind, Provider};

/// The most events Mandrill posts in one body.
pub(super) const MAX_EVENTS: usize = 1_000;

const EVENTS_FIELD: &str = "mandrill_events";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The `event` name and the message's `state` after it.
fn shape(kind: EventKind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        EventKind::Processed => ("send", "sent"),
        EventKind::Deferred => ("deferral", "deferred"),
        EventKind::HardBounce => ("hard_bounce", "bounced"),
        EventKind::SoftBounce => ("soft_bounce", "soft-bounced"),
        EventKind::Delivered => ("delivered", "sent"),
        EventKind::Open => ("open", "sent"),
        EventKind::Click => ("click", "sent"),
        EventKind::SpamComplaint => ("spam", "sent"),
        EventKind::Unsubscribe => ("unsub", "sent"),
        EventKind::Dropped => ("reject", "rejected"),
        EventKind::SpamBlock | EventKind::Resubscribe => return None,
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
    let events_json = Value::Array(items).to_string();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair(EVENTS_FIELD, &events_json)
        .finish();
    Ok(Payload {
        body: form.into_bytes(),
        content_type: CONTENT_TYPE,
    })
}

fn item(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<Value, PayloadError> {
    let Some((name, state)) = shape(event.kind) else {
        return Err(PayloadError::UnsupportedKind {
            provider: Provider::Mandrill,
            kind: event.kind,
        });
    };
    let ts = timestamps::unix_seconds(event.occurred_at);
    let mut msg = json!({
        "ts": ts,
        "subject": "This week at Example",
        "email": event.recipient,
        "sender": "news@example.com",
        "tags": [event.campaign],
        "opens": [],
        "clicks": [],
        "state": state,
        "metadata": carrier_map(event, keys),
        "_id": event.provider_event_id,
        "_version": "exampleaaaaaaaaaaaaaaa",
    });
    let mut item = json!({
        "event": name,
        "msg": {},
        "_id": event.provider_event_id,
        "ts": ts,
    });
    match event.kind {
        EventKind::HardBounce => {
            msg["bounce_description"] = "bad_mailbox".into();
            msg["diag"] = "smtp;550 5.1.1 The email account that you tried to reach does not exist.".into();
        }
        EventKind::SoftBounce => {
            msg["bounce_description"] = "mailbox_full".into();
            msg["diag"] = "smtp;452 4.2.2 The email account that you tried to reach is over quota.".into();
        }
        EventKind::Deferred => {
            msg["smtp_events"] = json!([{"ts": ts, "type": "deferred", "diag": "451 4.3.5 Temporarily unavailable"}]);
        }
        EventKind::Open => {
            msg["opens"] = json!([{"ts": ts}]);
            item["ip"] = "192.0.2.17".into();
            item["user_agent"] = "Mozilla/5.0".into();
        }
        EventKind::Click => {
            msg["clicks"] = json!([{"ts": ts, "url": event.url}]);
            item["ip"] = "192.0.2.17".into();
            item["user_agent"] = "Mozilla/5.0".into();
            item["url"] = event.url.clone().into();
        }
        _ => {}
    }
    item["msg"] = msg;
    Ok(item)
}
