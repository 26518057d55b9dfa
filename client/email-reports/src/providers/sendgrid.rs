//! SendGrid Event Webhook: a JSON array of flat event objects (the docs also show a bare
//! object, accepted as a batch of one).
//!
//! - kind: `event`; `bounce` refined by `type` (`blocked` + `bounce_classification` Content or
//!   Reputation → spam_block, `blocked` → soft_bounce, `bounce` or absent → hard_bounce);
//!   `dropped` with reason `Spam Content` → spam_block; `account_status_change` is ignored.
//! - recipient `email`; time `timestamp` (Unix seconds; values past year 5000 are read as
//!   milliseconds, as in one Marketing Campaigns docs sample); click URL `url`.
//! - id `kind|sg_event_id`. Without one — or when the same `sg_event_id` appears twice in one
//!   POST (the legacy docs batch uses a placeholder), so it cannot name an event — the id is
//!   synthesised: `kind|sg_message_id|event|email|timestamp[|url]`.
//! - tenant/campaign: custom args are flattened into the event's top-level keys.

use std::collections::HashMap;

use super::json::Json;

use super::json_node::{parse_json, Node};
use super::{event_key, not_counted, Attribution, Entry, ParseOutcome};
use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};
use crate::time::EventTime;

/// Seconds beyond this (year ~5138) can only be milliseconds.
const LARGEST_PLAUSIBLE_SECONDS: i64 = 100_000_000_000;

pub(super) fn parse(body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let value = parse_json(body, "$")?;
    let root = Node::root(&value, "$");
    let items = match &value {
        Json::Array(_) => root.elements()?,
        Json::Object(_) => vec![root],
        _ => return Err(root.wrong_type("array of events")),
    };
    let mut id_uses: HashMap<&str, usize> = HashMap::new();
    for item in &items {
        if let Some(id) = item.value().get("sg_event_id").and_then(Json::as_str) {
            *id_uses.entry(id.trim()).or_default() += 1;
        }
    }
    let entries = items
        .iter()
        .map(|item| parse_entry(item, keys, &id_uses))
        .collect::<Result<_, _>>()?;
    Ok(ParseOutcome::Entries(entries))
}

fn parse_entry(item: &Node<'_>, keys: &CarrierKeys, id_uses: &HashMap<&str, usize>) -> Result<Entry, ParseError> {
    let event_node = item.get("event")?;
    let event = event_node.text()?;
    let kind = match event {
        "processed" => EventKind::Processed,
        "delivered" => EventKind::Delivered,
        "deferred" => EventKind::Deferred,
        "bounce" => match bounce_kind(item)? {
            Some(kind) => kind,
            None => return Ok(not_counted(item, "bounce type", item.get("type")?.str()?)),
        },
        "dropped" => match item.get_opt("reason")? {
            Some(reason) if reason.str()? == "Spam Content" => EventKind::SpamBlock,
            _ => EventKind::Dropped,
        },
        "open" => EventKind::Open,
        "click" => EventKind::Click,
        "spamreport" => EventKind::SpamComplaint,
        "unsubscribe" | "group_unsubscribe" => EventKind::Unsubscribe,
        "group_resubscribe" => EventKind::Resubscribe,
        other => return Ok(not_counted(item, "event type", other)),
    };
    let recipient = item.get("email")?.email()?;
    let timestamp = item.get("timestamp")?;
    let occurred_at = event_time(&timestamp)?;
    let url = match kind {
        EventKind::Click => item
            .get_opt("url")?
            .map(|url| url.text().map(str::to_owned))
            .transpose()?,
        _ => None,
    };
    // Ids are optional and loosely typed in SendGrid's own samples: an empty one is no id.
    let message_id = item
        .get_opt("sg_message_id")?
        .map(|id| id.trimmed())
        .transpose()?
        .flatten();
    let provider_event_id = item
        .get_opt("sg_event_id")?
        .map(|id| id.trimmed())
        .transpose()?
        .flatten();
    let event_id = match &provider_event_id {
        Some(id) if id_uses.get(id.as_str()).copied() == Some(1) => event_key(kind, &[id], None),
        _ => {
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
    let attribution = Attribution::from_carrier(Some(item), keys)?;
    Ok(Entry::Event(CanonicalEvent {
        provider: Provider::SendGrid,
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

/// `None` for a bounce `type` SendGrid does not document.
fn bounce_kind(item: &Node<'_>) -> Result<Option<EventKind>, ParseError> {
    let Some(bounce_type) = item.get_opt("type")? else {
        return Ok(Some(EventKind::HardBounce));
    };
    Ok(match bounce_type.str()? {
        "bounce" => Some(EventKind::HardBounce),
        "blocked" => {
            let classification = item.get_opt("bounce_classification")?.map(|c| c.str()).transpose()?;
            Some(match classification {
                Some("Content" | "Reputation") => EventKind::SpamBlock,
                _ => EventKind::SoftBounce,
            })
        }
        _ => None,
    })
}

fn event_time(timestamp: &Node<'_>) -> Result<EventTime, ParseError> {
    if let Some(whole) = timestamp.value().as_i64() {
        if whole > LARGEST_PLAUSIBLE_SECONDS {
            return EventTime::from_unix_millis(whole)
                .ok_or_else(|| timestamp.invalid(format!("{whole} is not a Unix time in milliseconds")));
        }
    }
    timestamp.unix_seconds()
}
