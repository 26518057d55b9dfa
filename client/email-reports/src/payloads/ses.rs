//! Amazon SES bodies, as an SNS HTTP/S subscription posts them: one SNS `Notification`
//! envelope per event whose `Message` is the SES event-publishing JSON as a *string*,
//! `text/plain; charset=UTF-8`.
//!
//! - Every kind: Send → processed, Reject → dropped, Delivery, DeliveryDelay → deferred,
//!   Bounce Permanent/General → hard bounce, Transient/MailboxFull → soft bounce,
//!   Transient/ContentRejected → spam block, Complaint (abuse) → spam complaint, Open, Click
//!   (`click.link`), Subscription with `unsubscribeAll` → unsubscribe, with an OptIn topic and
//!   no unsubscribe-all → resubscribe.
//! - One recipient, `mail.destination`, which is also each per-recipient list; so Open, Click
//!   and Subscription (which name no recipient) are attributed to it.
//! - SES has no event id: the parser's key is `kind|mail.messageId|recipient|event
//!   timestamp[|link]`, so `mail.messageId` (and the envelope's `MessageId`) is the
//!   provider_event_id; the message id goes in `mail.commonHeaders.messageId`, the sender's
//!   `Message-ID` header.
//! - Times: RFC 3339 with milliseconds; `mail.timestamp` (the send, and the event time of
//!   Send and Reject) is the event's time too.
//! - Tenant and campaign: `mail.tags`, each value an array of one.
//! - The envelope [`body`] writes is unsigned (`Signature` empty): the signing side builds and
//!   signs its own around [`super::ses_message`].

use serde_json::{json, Map};

use super::error::PayloadError;
use super::outgoing::OutgoingEvent;
use super::{timestamps, to_json_bytes, Payload};
use crate::carrier::CarrierKeys;
use crate::event::{EventKind, Provider};

/// The topic the unsigned envelopes name.
pub const SES_TOPIC_ARN: &str = "arn:aws:sns:us-east-1:123456789012:email-events";
/// The `SigningCertURL` the unsigned envelopes name (a well-formed SNS URL, never fetched).
pub const SES_SIGNING_CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-dev.pem";

const CONTENT_TYPE: &str = "text/plain; charset=UTF-8";
const SENDER: &str = "news@example.com";

/// SES has an event for every kind.
pub(super) fn supports(kind: EventKind) -> bool {
    event_type(kind).is_some()
}

fn event_type(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::Processed => "Send",
        EventKind::Dropped => "Reject",
        EventKind::Delivered => "Delivery",
        EventKind::Deferred => "DeliveryDelay",
        EventKind::HardBounce | EventKind::SoftBounce | EventKind::SpamBlock => "Bounce",
        EventKind::SpamComplaint => "Complaint",
        EventKind::Open => "Open",
        EventKind::Click => "Click",
        EventKind::Unsubscribe | EventKind::Resubscribe => "Subscription",
    })
}

pub(super) fn body(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<Payload, PayloadError> {
    let envelope = json!({
        "Type": "Notification",
        "MessageId": event.provider_event_id,
        "TopicArn": SES_TOPIC_ARN,
        "Message": message(event, keys)?,
        "Timestamp": timestamps::rfc3339_millis(event.occurred_at),
        "SignatureVersion": "2",
        "Signature": "",
        "SigningCertURL": SES_SIGNING_CERT_URL,
        "UnsubscribeURL": format!(
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={SES_TOPIC_ARN}:dev"
        ),
    });
    Ok(Payload {
        body: to_json_bytes(&envelope),
        content_type: CONTENT_TYPE,
    })
}

pub(super) fn message(event: &OutgoingEvent, keys: &CarrierKeys) -> Result<String, PayloadError> {
    let Some(event_type) = event_type(event.kind) else {
        return Err(PayloadError::UnsupportedKind {
            provider: Provider::Ses,
            kind: event.kind,
        });
    };
    let time = timestamps::rfc3339_millis(event.occurred_at);
    let recipient = event.recipient.as_str();
    let mut tags = Map::new();
    tags.insert("ses:configuration-set".into(), json!(["email-events"]));
    tags.insert("ses:from-domain".into(), json!(["example.com"]));
    tags.insert(keys.tenant.clone(), json!([event.tenant]));
    tags.insert(keys.campaign.clone(), json!([event.campaign]));
    let mut ses = json!({
        "eventType": event_type,
        "mail": {
            "timestamp": time,
            "source": SENDER,
            "sendingAccountId": "123456789012",
            "messageId": event.provider_event_id,
            "destination": [recipient],
            "headersTruncated": false,
            "commonHeaders": {
                "from": [SENDER],
                "to": [recipient],
                "messageId": event.message_id,
                "subject": "This week at Example",
            },
            "tags": tags,
        },
    });
    let (field, detail) = match event.kind {
        EventKind::Processed => ("send", json!({})),
        EventKind::Dropped => ("reject", json!({"reason": "Bad content"})),
        EventKind::Delivered => (
            "delivery",
            json!({
                "timestamp": time,
                "processingTimeMillis": 546,
                "recipients": [recipient],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            }),
        ),
        EventKind::Deferred => (
            "deliveryDelay",
            json!({
                "timestamp": time,
                "delayType": "TransientCommunicationFailure",
                "delayedRecipients": [{
                    "emailAddress": recipient,
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                }],
            }),
        ),
        EventKind::HardBounce | EventKind::SoftBounce | EventKind::SpamBlock => {
            let (bounce_type, sub_type, status) = match event.kind {
                EventKind::HardBounce => ("Permanent", "General", "5.1.1"),
                EventKind::SoftBounce => ("Transient", "MailboxFull", "4.2.2"),
                _ => ("Transient", "ContentRejected", "5.7.1"),
            };
            (
                "bounce",
                json!({
                    "bounceType": bounce_type,
                    "bounceSubType": sub_type,
                    "bouncedRecipients": [{
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": status,
                        "diagnosticCode": format!("smtp; {status}"),
                    }],
                    "timestamp": time,
                    "feedbackId": format!("{}-bounce", event.provider_event_id),
                    "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
                }),
            )
        }
        EventKind::SpamComplaint => (
            "complaint",
            json!({
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": time,
                "feedbackId": format!("{}-complaint", event.provider_event_id),
                "complaintFeedbackType": "abuse",
                "arrivalDate": time,
            }),
        ),
        EventKind::Open => (
            "open",
            json!({"ipAddress": "192.0.2.17", "timestamp": time, "userAgent": "Mozilla/5.0"}),
        ),
        EventKind::Click => (
            "click",
            json!({
                "ipAddress": "192.0.2.17",
                "link": event.url,
                "linkTags": {},
                "timestamp": time,
                "userAgent": "Mozilla/5.0",
            }),
        ),
        EventKind::Unsubscribe | EventKind::Resubscribe => {
            let unsubscribe = event.kind == EventKind::Unsubscribe;
            let status = if unsubscribe { "OptOut" } else { "OptIn" };
            (
                "subscription",
                json!({
                    "contactList": "Newsletter",
                    "timestamp": time,
                    "source": if unsubscribe { "UnsubscribeHeader" } else { "SubscriptionPage" },
                    "newTopicPreferences": {
                        "unsubscribeAll": unsubscribe,
                        "topicSubscriptionStatus": [{"topicName": "News", "subscriptionStatus": status}],
                    },
                }),
            )
        }
    };
    ses[field] = detail;
    Ok(ses.to_string())
}
