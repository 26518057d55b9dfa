//! Amazon SES, posted by an SNS HTTP/S subscription: an SNS envelope whose `Message` is the SES
//! event as a JSON *string*; with SNS raw message delivery the body is the bare SES event
//! (recognised by its `eventType` / `notificationType`).
//!
//! - SNS `Type`: `SubscriptionConfirmation` → [`ParseOutcome::SubscriptionConfirmation`];
//!   `UnsubscribeConfirmation` and a `Notification` whose message is not an SES event are
//!   ignored; `Notification` → the SES event inside.
//! - kind: `eventType` (event publishing) or `notificationType` (identity notifications).
//!   Bounce: Permanent → hard_bounce, except subtypes `Suppressed` / `OnAccountSuppressionList`
//!   → dropped (SES refused to send); Transient/ContentRejected → spam_block; Transient and
//!   Undetermined → soft_bounce. Complaint → spam_complaint unless its feedback type is
//!   `not-spam` (ignored). Send → processed; Reject and Rendering Failure → dropped;
//!   DeliveryDelay → deferred; Subscription → unsubscribe (unsubscribeAll or an OptOut), else
//!   resubscribe.
//! - recipients: one event per affected recipient — `bounce.bouncedRecipients`,
//!   `complaint.complainedRecipients`, `delivery.recipients`, `deliveryDelay.delayedRecipients`;
//!   Send/Reject/Rendering Failure affect every `mail.destination`. Open, Click and Subscription
//!   name no recipient: attributed to the single `mail.destination`, ignored when there are
//!   several (counting one open per destination would be wrong).
//! - time: the event's own `timestamp` (`bounce.timestamp`, `open.timestamp`, …); Send, Reject
//!   and Rendering Failure have none, so `mail.timestamp` (the send) is their event time.
//! - id: SES has no per-recipient event id (SNS `MessageId` is per notification and absent in
//!   raw delivery): synthesised `kind|mail.messageId|recipient|event timestamp[|link]`, the same
//!   whether the event came raw or in an envelope.
//! - tenant/campaign: `mail.tags` (arrays; the first value), only in event publishing.

use super::json_node::{parse_json, Node};
use super::{event_key, not_counted, Attribution, Entry, Ignored, ParseOutcome, SubscriptionConfirmation};
use crate::carrier::CarrierKeys;
use crate::error::ParseError;
use crate::event::{CanonicalEvent, EventKind, Provider};

pub(super) fn parse(body: &[u8], keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let value = parse_json(body, "$")?;
    let root = Node::root(&value, "$");
    let object = root.object()?;
    if object.contains_key("Type") {
        return parse_envelope(&root, keys);
    }
    if object.contains_key("eventType") || object.contains_key("notificationType") {
        return Ok(ParseOutcome::Entries(parse_ses_event(&root, keys)?));
    }
    Err(root
        .invalid("neither an SNS message (no \"Type\") nor an SES event (no \"eventType\" or \"notificationType\")"))
}

fn parse_envelope(root: &Node<'_>, keys: &CarrierKeys) -> Result<ParseOutcome, ParseError> {
    let message_type = root.get("Type")?;
    match message_type.str()? {
        "SubscriptionConfirmation" => Ok(ParseOutcome::SubscriptionConfirmation(SubscriptionConfirmation {
            topic_arn: root.get("TopicArn")?.text()?.to_owned(),
            subscribe_url: root.get("SubscribeURL")?.text()?.to_owned(),
            token: root.get("Token")?.text()?.to_owned(),
            message_id: root.get("MessageId")?.text()?.to_owned(),
        })),
        "UnsubscribeConfirmation" => Ok(ParseOutcome::Entries(vec![Entry::Ignored(Ignored {
            path: root.path(),
            reason: "SNS UnsubscribeConfirmation is not an email event".to_owned(),
        })])),
        "Notification" => {
            let message = root.get("Message")?;
            let inner = match serde_json::from_str::<super::json::Json<'_>>(message.str()?) {
                Ok(inner) if inner.get("eventType").is_some() || inner.get("notificationType").is_some() => inner,
                _ => {
                    return Ok(ParseOutcome::Entries(vec![Entry::Ignored(Ignored {
                        path: message.path(),
                        reason: "SNS notification whose message is not an SES event".to_owned(),
                    })]))
                }
            };
            let inner_path = message.path();
            let inner_root = Node::root(&inner, &inner_path);
            Ok(ParseOutcome::Entries(parse_ses_event(&inner_root, keys)?))
        }
        other => Err(message_type.invalid(format!("unknown SNS message type {other:?}"))),
    }
}

/// Which recipients an event is about, and when it happened.
struct Affected<'a> {
    recipients: Vec<Node<'a>>,
    time: Node<'a>,
}

fn parse_ses_event(event: &Node<'_>, keys: &CarrierKeys) -> Result<Vec<Entry>, ParseError> {
    let type_node = match event.get_opt("eventType")? {
        Some(node) => node,
        None => event.get("notificationType")?,
    };
    let event_type = type_node.text()?;
    let mail = event.get("mail")?;
    let message_id = mail.get("messageId")?.text()?.to_owned();
    let destinations = || -> Result<Vec<Node<'_>>, ParseError> { mail.get("destination")?.elements() };
    let mut url = None;
    let (kind, affected) = match event_type {
        "Send" | "Reject" | "Rendering Failure" => {
            let kind = if event_type == "Send" {
                EventKind::Processed
            } else {
                EventKind::Dropped
            };
            (
                kind,
                Affected {
                    recipients: destinations()?,
                    time: mail.get("timestamp")?,
                },
            )
        }
        "Bounce" => {
            let bounce = event.get("bounce")?;
            let Some(kind) = bounce_kind(&bounce)? else {
                return Ok(vec![not_counted(
                    &bounce,
                    "bounce type",
                    bounce.get("bounceType")?.str()?,
                )]);
            };
            (
                kind,
                Affected {
                    recipients: addresses(&bounce.get("bouncedRecipients")?)?,
                    time: bounce.get("timestamp")?,
                },
            )
        }
        "Complaint" => {
            let complaint = event.get("complaint")?;
            if let Some(feedback) = complaint.get_opt("complaintFeedbackType")? {
                if feedback.str()? == "not-spam" {
                    return Ok(vec![not_counted(&complaint, "complaint feedback type", "not-spam")]);
                }
            }
            let recipients = addresses(&complaint.get("complainedRecipients")?)?;
            (
                EventKind::SpamComplaint,
                Affected {
                    recipients,
                    time: complaint.get("timestamp")?,
                },
            )
        }
        "Delivery" => {
            let delivery = event.get("delivery")?;
            (
                EventKind::Delivered,
                Affected {
                    recipients: delivery.get("recipients")?.elements()?,
                    time: delivery.get("timestamp")?,
                },
            )
        }
        "DeliveryDelay" => {
            let delay = event.get("deliveryDelay")?;
            let recipients = addresses(&delay.get("delayedRecipients")?)?;
            (
                EventKind::Deferred,
                Affected {
                    recipients,
                    time: delay.get("timestamp")?,
                },
            )
        }
        "Open" | "Click" | "Subscription" => {
            let (kind, detail) = match event_type {
                "Open" => (EventKind::Open, event.get("open")?),
                "Click" => {
                    let click = event.get("click")?;
                    url = Some(click.get("link")?.text()?.to_owned());
                    (EventKind::Click, click)
                }
                _ => {
                    let subscription = event.get("subscription")?;
                    (subscription_kind(&subscription)?, subscription)
                }
            };
            let recipients = destinations()?;
            if recipients.len() != 1 {
                return Ok(vec![Entry::Ignored(Ignored {
                    path: event.path(),
                    reason: format!(
                        "{event_type} of a message to {} recipients names none of them",
                        recipients.len()
                    ),
                })]);
            }
            (
                kind,
                Affected {
                    recipients,
                    time: detail.get("timestamp")?,
                },
            )
        }
        other => return Ok(vec![not_counted(&type_node, "event type", other)]),
    };
    let occurred_at = affected.time.rfc3339()?;
    let time_text = affected.time.str()?;
    let attribution = Attribution::from_carrier(mail.get_opt("tags")?.as_ref(), keys)?;
    affected
        .recipients
        .iter()
        .map(|recipient| {
            let recipient = recipient.email()?;
            Ok(Entry::Event(CanonicalEvent {
                provider: Provider::Ses,
                event_id: event_key(
                    kind,
                    &[message_id.as_str(), recipient.as_str(), time_text],
                    url.as_deref(),
                ),
                provider_event_id: None,
                tenant: attribution.tenant.clone(),
                campaign: attribution.campaign.clone(),
                recipient,
                kind,
                occurred_at,
                url: url.clone(),
                message_id: Some(message_id.clone()),
            }))
        })
        .collect()
}

/// The `emailAddress` of each element of a recipients array.
fn addresses<'a>(list: &Node<'a>) -> Result<Vec<Node<'a>>, ParseError> {
    list.elements()?.iter().map(|item| item.get("emailAddress")).collect()
}

/// `None` for a bounce type SES does not document.
fn bounce_kind(bounce: &Node<'_>) -> Result<Option<EventKind>, ParseError> {
    let sub_type = bounce
        .get_opt("bounceSubType")?
        .map(|node| node.str())
        .transpose()?
        .unwrap_or("");
    Ok(match bounce.get("bounceType")?.str()? {
        "Permanent" if matches!(sub_type, "Suppressed" | "OnAccountSuppressionList") => Some(EventKind::Dropped),
        "Permanent" => Some(EventKind::HardBounce),
        "Transient" if sub_type == "ContentRejected" => Some(EventKind::SpamBlock),
        "Transient" | "Undetermined" => Some(EventKind::SoftBounce),
        _ => None,
    })
}

fn subscription_kind(subscription: &Node<'_>) -> Result<EventKind, ParseError> {
    let preferences = subscription.get("newTopicPreferences")?;
    if let Some(all) = preferences.get_opt("unsubscribeAll")? {
        if all.bool()? {
            return Ok(EventKind::Unsubscribe);
        }
    }
    if let Some(topics) = preferences.get_opt("topicSubscriptionStatus")? {
        for topic in topics.elements()? {
            if topic.get("subscriptionStatus")?.str()? == "OptOut" {
                return Ok(EventKind::Unsubscribe);
            }
        }
    }
    Ok(EventKind::Resubscribe)
}
