//! Mailgun webhooks v3: one JSON object `{"signature": {…}, "event-data": {…}}` per POST (the
//! signature block is the signature layer's; parsing reads only `event-data`).
//!
//! - kind: `event-data.event`; `failed` is refined by `reason` and `severity`: `espblock` →
//!   spam_block, permanent `suppress-*` → dropped (an existing suppression, not a new bounce),
//!   other permanent → hard_bounce, temporary → soft_bounce; `rejected` → dropped.
//! - recipient `event-data.recipient`; time `event-data.timestamp` (float seconds, read to the
//!   µs from its text); click URL `event-data.url`.
//! - id `kind|event-data.id`; absent in older payloads, then synthesised
//!   `kind|message-id|event|recipient|timestamp[|url]` (message id from
//!   `event-data.message.headers.message-id`).
//! - tenant/campaign: `event-data.user-variables` (`[]` when empty).

use super::json_node::{parse_json, Node};
use super::{event_key, not_counted, Attribution, Entry, ParseOutcome};
use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};

pub(super) fn parse(body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let value = parse_json(body, "$")?;
    let root = Node::root(&value, "$");
    let data = root.get("event-data")?;
    data.object()?;
    Ok(ParseOutcome::Entries(vec![parse_event(&data, keys)?]))
}

fn parse_event(data: &Node<'_>, keys: &CarrierKeys) -> Result<Entry, ParseError> {
    let event = data.get("event")?.text()?;
    let kind = match event {
        "accepted" => EventKind::Processed,
        "rejected" => EventKind::Dropped,
        "delivered" => EventKind::Delivered,
        "failed" => failed_kind(data)?,
        "opened" => EventKind::Open,
        "clicked" => EventKind::Click,
        "unsubscribed" => EventKind::Unsubscribe,
        "complained" => EventKind::SpamComplaint,
        other => return Ok(not_counted(data, "event type", other)),
    };
    let recipient = data.get("recipient")?.email()?;
    let timestamp = data.get("timestamp")?;
    let occurred_at = timestamp.unix_seconds()?;
    let url = match kind {
        EventKind::Click => data
            .get_opt("url")?
            .map(|url| url.text().map(str::to_owned))
            .transpose()?,
        _ => None,
    };
    let message_id = match data.get_opt("message")? {
        Some(message) => match message.get_opt("headers")? {
            Some(headers) => headers
                .get_opt("message-id")?
                .map(|id| id.text().map(str::to_owned))
                .transpose()?,
            None => None,
        },
        None => None,
    };
    let provider_event_id = data.get_opt("id")?.map(|id| id.text().map(str::to_owned)).transpose()?;
    let event_id = match &provider_event_id {
        Some(id) => event_key(kind, &[id], None),
        None => {
            let timestamp_text = timestamp.raw_text()?;
            event_key(
                kind,
                &[
                    message_id.as_deref().unwrap_or(""),
                    event,
                    recipient.as_str(),
                    timestamp_text.as_str(),
                ],
                url.as_deref(),
            )
        }
    };
    let variables = data.get_opt("user-variables")?;
    let attribution = Attribution::from_carrier(variables.as_ref(), keys)?;
    Ok(Entry::Event(CanonicalEvent {
        provider: Provider::Mailgun,
        event_id,
        provider_event_id,
        tenant: attribution.tenant,
        campaign: attribution.campaign,
        recipient,
        kind,
        occurred_at,
        url,
        message_id,
    }))
}

fn failed_kind(data: &Node<'_>) -> Result<EventKind, ParseError> {
    let reason = data
        .get_opt("reason")?
        .map(|reason| reason.str())
        .transpose()?
        .unwrap_or("");
    if reason == "espblock" {
        return Ok(EventKind::SpamBlock);
    }
    let severity = data.get("severity")?;
    match severity.str()? {
        "permanent" if reason.starts_with("suppress-") => Ok(EventKind::Dropped),
        "permanent" => Ok(EventKind::HardBounce),
        "temporary" => Ok(EventKind::SoftBounce),
        other => Err(severity.invalid(format!("{other:?} is neither \"permanent\" nor \"temporary\""))),
    }
}
