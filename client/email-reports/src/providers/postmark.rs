//! Postmark: one JSON object per POST, typed by `RecordType`.
//!
//! - kind: Delivery → delivered; Open → open; Click → click; SpamComplaint → spam_complaint;
//!   Bounce by `Type` (never `TypeCode`, which the docs' complaint sample gets wrong):
//!   SpamNotification/Blocked/DMARCPolicy → spam_block, HardBounce/BadEmailAddress →
//!   hard_bounce, SoftBounce/Transient/DnsError → soft_bounce, the rest (AutoResponder, …)
//!   ignored. SubscriptionChange (broadcast streams' only bounce/complaint signal): with
//!   `SuppressSending` true, `SuppressionReason` HardBounce → hard_bounce, SpamComplaint →
//!   spam_complaint, ManualSuppression by the `Recipient` → unsubscribe (by the customer or an
//!   admin: ignored); with it false → resubscribe.
//! - recipient `Recipient`, but `Email` on Bounce and SpamComplaint; time `DeliveredAt`,
//!   `BouncedAt`, `ReceivedAt` or `ChangedAt` by record type; click URL `OriginalLink`.
//! - id `kind|ID` (`ID` an int64, kept exact) on Bounce and SpamComplaint; otherwise
//!   synthesised `kind|RecordType|MessageID|recipient|time as written[|OriginalLink]`.
//! - tenant/campaign: `Metadata`.

use super::json_node::{parse_json, Node};
use super::{event_key, not_counted, Attribution, Entry, ParseOutcome};
use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};

pub(super) fn parse(body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let value = parse_json(body, "$")?;
    let root = Node::root(&value, "$");
    root.object()?;
    Ok(ParseOutcome::Entries(vec![parse_record(&root, keys)?]))
}

fn parse_record(record: &Node<'_>, keys: &CarrierKeys) -> Result<Entry, ParseError> {
    let record_type = record.get("RecordType")?.text()?;
    let (kind, recipient_field, time_field) = match record_type {
        "Delivery" => (EventKind::Delivered, "Recipient", "DeliveredAt"),
        "Open" => (EventKind::Open, "Recipient", "ReceivedAt"),
        "Click" => (EventKind::Click, "Recipient", "ReceivedAt"),
        "SpamComplaint" => (EventKind::SpamComplaint, "Email", "BouncedAt"),
        "Bounce" => {
            let bounce_type = record.get("Type")?;
            let kind = match bounce_type.str()? {
                "SpamNotification" | "Blocked" | "DMARCPolicy" => EventKind::SpamBlock,
                "HardBounce" | "BadEmailAddress" => EventKind::HardBounce,
                "SoftBounce" | "Transient" | "DnsError" => EventKind::SoftBounce,
                other => return Ok(not_counted(record, "bounce type", other)),
            };
            (kind, "Email", "BouncedAt")
        }
        "SubscriptionChange" => match subscription_kind(record)? {
            Some(kind) => (kind, "Recipient", "ChangedAt"),
            None => {
                let origin = record.get_opt("Origin")?.map(|origin| origin.str()).transpose()?;
                return Ok(not_counted(
                    record,
                    "manual suppression by",
                    origin.unwrap_or("an unknown origin"),
                ));
            }
        },
        other => return Ok(not_counted(record, "record type", other)),
    };
    let recipient = record.get(recipient_field)?.email()?;
    let time = record.get(time_field)?;
    let occurred_at = time.rfc3339()?;
    let url = match kind {
        EventKind::Click => record
            .get_opt("OriginalLink")?
            .map(|url| url.text().map(str::to_owned))
            .transpose()?,
        _ => None,
    };
    let message_id = record
        .get_opt("MessageID")?
        .map(|id| id.text().map(str::to_owned))
        .transpose()?;
    let provider_event_id = match (record_type, record.get_opt("ID")?) {
        ("Bounce" | "SpamComplaint", Some(id)) => Some(id.id_text()?),
        _ => None,
    };
    let event_id = match &provider_event_id {
        Some(id) => event_key(kind, &[id], None),
        None => event_key(
            kind,
            &[
                record_type,
                message_id.as_deref().unwrap_or(""),
                recipient.as_str(),
                time.str()?,
            ],
            url.as_deref(),
        ),
    };
    let attribution = Attribution::from_carrier(record.get_opt("Metadata")?.as_ref(), keys)?;
    Ok(Entry::Event(CanonicalEvent {
        provider: Provider::Postmark,
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

/// `None` for a suppression the recipient did not ask for (customer or admin).
fn subscription_kind(record: &Node<'_>) -> Result<Option<EventKind>, ParseError> {
    if !record.get("SuppressSending")?.bool()? {
        return Ok(Some(EventKind::Resubscribe));
    }
    let reason = record.get("SuppressionReason")?;
    match reason.str()? {
        "HardBounce" => Ok(Some(EventKind::HardBounce)),
        "SpamComplaint" => Ok(Some(EventKind::SpamComplaint)),
        "ManualSuppression" => {
            let by_recipient = record.get_opt("Origin")?.map(|origin| origin.str()).transpose()? == Some("Recipient");
            Ok(by_recipient.then_some(EventKind::Unsubscribe))
        }
        other => Err(reason.invalid(format!("unknown suppression reason {other:?}"))),
    }
}
