//! SparkPost (Bird): a JSON array of `{"msys": {"<class>_event": {…}}}`; an empty
//! `{"msys": {}}` is a ping (ignored).
//!
//! - kind: `type`. injection → processed; delivery → delivered; delay → deferred;
//!   bounce / out_of_band by `bounce_class`: 50–52 → spam_block, 10/30/90 → hard_bounce,
//!   1 (undetermined), 20–24, 40, 53, 54, 70 → soft_bounce, the rest (auto-replies 60,
//!   challenge-response 100, admin 25/80) ignored; policy_rejection → spam_block for classes
//!   50–52, else dropped; generation_failure / generation_rejection → dropped; spam_complaint;
//!   open and amp_open → open (initial_open fires besides open for the same open: ignored);
//!   click / amp_click → click; list_unsubscribe / link_unsubscribe → unsubscribe.
//! - recipient `rcpt_to`; time `timestamp` (Unix seconds as a string, or RFC 3339); click URL
//!   `target_link_url`; id `kind|event_id`; message id `message_id`.
//! - tenant/campaign: `rcpt_meta`.

use super::json::Json;

use super::json_node::{parse_json, Node};
use super::{event_key, not_counted, Attribution, Entry, Ignored, ParseOutcome};
use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};
use crate::time::EventTime;

pub(super) fn parse(body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let value = parse_json(body, "$")?;
    let root = Node::root(&value, "$");
    let entries = root
        .elements()?
        .iter()
        .map(|item| parse_item(item, keys))
        .collect::<Result<_, _>>()?;
    Ok(ParseOutcome::Entries(entries))
}

fn parse_item(item: &Node<'_>, keys: &CarrierKeys) -> Result<Entry, ParseError> {
    let msys = item.get("msys")?;
    let classes = msys.object()?;
    let Some((class, _)) = classes.iter().next() else {
        return Ok(Entry::Ignored(Ignored {
            path: msys.path(),
            reason: "SparkPost ping (empty msys)".to_owned(),
        }));
    };
    if classes.len() > 1 {
        return Err(msys.invalid(format!("{} event classes in one entry; expected one", classes.len())));
    }
    parse_event(&msys.get(class)?, keys)
}

fn parse_event(event: &Node<'_>, keys: &CarrierKeys) -> Result<Entry, ParseError> {
    let event_type = event.get("type")?.text()?;
    let kind = match event_type {
        "injection" => EventKind::Processed,
        "delivery" => EventKind::Delivered,
        "delay" => EventKind::Deferred,
        "bounce" | "out_of_band" => match bounce_class(event)? {
            50..=52 => EventKind::SpamBlock,
            10 | 30 | 90 => EventKind::HardBounce,
            1 | 20..=24 | 40 | 53 | 54 | 70 => EventKind::SoftBounce,
            class => return Ok(not_counted(event, "bounce class", &class.to_string())),
        },
        "policy_rejection" => match event.get_opt("bounce_class")? {
            Some(_) if matches!(bounce_class(event)?, 50..=52) => EventKind::SpamBlock,
            _ => EventKind::Dropped,
        },
        "generation_failure" | "generation_rejection" => EventKind::Dropped,
        "spam_complaint" => EventKind::SpamComplaint,
        "open" | "amp_open" => EventKind::Open,
        "click" | "amp_click" => EventKind::Click,
        "list_unsubscribe" | "link_unsubscribe" => EventKind::Unsubscribe,
        other => return Ok(not_counted(event, "event type", other)),
    };
    let recipient = event.get("rcpt_to")?.email()?;
    let occurred_at = event_time(&event.get("timestamp")?)?;
    let url = match kind {
        EventKind::Click => event
            .get_opt("target_link_url")?
            .map(|url| url.text().map(str::to_owned))
            .transpose()?,
        _ => None,
    };
    let message_id = event.get_opt("message_id")?.map(|id| id.id_text()).transpose()?;
    let provider_event_id = event.get("event_id")?.id_text()?;
    let attribution = Attribution::from_carrier(event.get_opt("rcpt_meta")?.as_ref(), keys)?;
    Ok(Entry::Event(CanonicalEvent {
        provider: Provider::SparkPost,
        event_id: event_key(kind, &[&provider_event_id], None),
        provider_event_id: Some(provider_event_id),
        tenant: attribution.tenant,
        campaign: attribution.campaign,
        recipient,
        kind,
        occurred_at,
        url,
        message_id,
    }))
}

/// `bounce_class` is a numeric string (or a number).
fn bounce_class(event: &Node<'_>) -> Result<u32, ParseError> {
    let class = event.get("bounce_class")?;
    let text = class.id_text()?;
    text.parse()
        .map_err(|_| class.invalid(format!("{text:?} is not a bounce class number")))
}

/// Unix seconds (usually a string), or an RFC 3339 string on some event classes.
fn event_time(timestamp: &Node<'_>) -> Result<EventTime, ParseError> {
    match timestamp.value() {
        Json::String(text) if text.contains('T') => timestamp.rfc3339(),
        _ => timestamp.unix_seconds(),
    }
}
