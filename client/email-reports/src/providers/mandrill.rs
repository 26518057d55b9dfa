//! Mailchimp Transactional (Mandrill): `application/x-www-form-urlencoded` with one field,
//! `mandrill_events`, a JSON array of up to 1,000 events.
//!
//! - kind: `event`. send → processed; deferral → deferred; hard_bounce; soft_bounce;
//!   delivered; open; click; spam → spam_complaint; unsub → unsubscribe; reject → dropped
//!   (refused by Mandrill's rejection list before sending). Sync events (allow/deny-list
//!   changes) have `type` instead of `event` and are ignored, as are unknown event types.
//! - recipient `msg.email`; time `ts` (Unix seconds of the event; `msg.ts` is the send);
//!   click URL `url`.
//! - id: Mandrill has none per event (`_id` is the message's): synthesised as the provider
//!   table documents, `kind|_id|ts[|url]` (the event name is in the kind, one to one).
//! - tenant/campaign: `msg.metadata`.

use super::json_node::{parse_json, Node};
use super::{event_key, not_counted, Attribution, Entry, ParseOutcome};
use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};

const EVENTS_FIELD: &str = "mandrill_events";

pub(super) fn parse(body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let events = form_urlencoded::parse(body)
        .find(|(name, _)| name == EVENTS_FIELD)
        .map(|(_, value)| value.into_owned())
        .ok_or(ParseError::MissingFormField { field: EVENTS_FIELD })?;
    let value = parse_json(events.as_bytes(), EVENTS_FIELD)?;
    let root = Node::root(&value, EVENTS_FIELD);
    let entries = root
        .elements()?
        .iter()
        .map(|item| parse_event(item, keys))
        .collect::<Result<_, _>>()?;
    Ok(ParseOutcome::Entries(entries))
}

fn parse_event(item: &Node<'_>, keys: &CarrierKeys) -> Result<Entry, ParseError> {
    let Some(event_node) = item.get_opt("event")? else {
        if let Some(sync_type) = item.get_opt("type")? {
            return Ok(not_counted(item, "sync event", sync_type.str()?));
        }
        return Err(ParseError::Missing {
            path: format!("{}.event", item.path()),
        });
    };
    let event = event_node.text()?;
    let kind = match event {
        "send" => EventKind::Processed,
        "deferral" => EventKind::Deferred,
        "hard_bounce" => EventKind::HardBounce,
        "soft_bounce" => EventKind::SoftBounce,
        "delivered" => EventKind::Delivered,
        "open" => EventKind::Open,
        "click" => EventKind::Click,
        "spam" => EventKind::SpamComplaint,
        "unsub" => EventKind::Unsubscribe,
        "reject" => EventKind::Dropped,
        other => return Ok(not_counted(item, "event type", other)),
    };
    let msg = item.get("msg")?;
    let recipient = msg.get("email")?.email()?;
    let ts = item.get("ts")?;
    let occurred_at = ts.unix_seconds()?;
    let url = match kind {
        EventKind::Click => item
            .get_opt("url")?
            .map(|url| url.text().map(str::to_owned))
            .transpose()?,
        _ => None,
    };
    let message_id = item.get("_id")?.text()?.to_owned();
    let ts_text = ts.raw_text()?;
    let attribution = Attribution::from_carrier(msg.get_opt("metadata")?.as_ref(), keys)?;
    Ok(Entry::Event(CanonicalEvent {
        provider: Provider::Mandrill,
        event_id: event_key(kind, &[message_id.as_str(), ts_text.as_str()], url.as_deref()),
        provider_event_id: None,
        tenant: attribution.tenant,
        campaign: attribution.campaign,
        recipient,
        kind,
        occurred_at,
        url,
        message_id: Some(message_id),
    }))
}
