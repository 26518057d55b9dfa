//! The canonical email event: what every provider's webhook entry is normalised to, and the
//! record value written to topic `email-events` (JSON, keyed by campaign).
//!
//! The JSON field names and the kind and provider spellings are a stored format (the topic
//! keeps a year of them): rename nothing; add fields only as optional ones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// One thing that happened to one email for one recipient, as reported by a provider.
///
/// Every field is always present in the JSON; absent optional ones are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalEvent {
    /// Who reported it.
    pub provider: Provider,
    /// The dedup key: `kind|` followed by the provider's id of the event, or by the key
    /// synthesised from the event's content where the provider has none (see the crate README).
    /// Stable across the provider's retries: `(provider, event_id)` identifies the event. The
    /// kind is part of it because providers' documented samples reuse one id across different
    /// events (SendGrid, SparkPost); a retry never changes the kind.
    pub event_id: String,
    /// The provider's own id of the event, verbatim (for support and tracing), when it has one.
    pub provider_event_id: Option<String>,
    /// The tenant, from the provider's metadata carrier under [`crate::CarrierKeys::tenant`].
    pub tenant: Option<String>,
    /// The campaign, from the provider's metadata carrier under [`crate::CarrierKeys::campaign`].
    pub campaign: Option<String>,
    /// The recipient's address, trimmed and lower-cased.
    pub recipient: String,
    /// What happened.
    pub kind: EventKind,
    /// When the provider says it happened (never the POST or signature time).
    pub occurred_at: EventTime,
    /// The clicked link, for [`EventKind::Click`]; `None` for every other kind.
    pub url: Option<String>,
    /// The provider's message id (the join key between a message's events), when it gives one.
    pub message_id: Option<String>,
}

/// What happened to the email. `processed` … `spam_block` are the "sent" kinds of the reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Accepted by the provider for sending (the report denominator).
    Processed,
    /// Accepted by the receiving server.
    Delivered,
    /// Delayed; the provider is still trying.
    Deferred,
    /// Permanent failure (unknown user, bad domain): suppress the address.
    HardBounce,
    /// Temporary failure the provider gave up on or reports per attempt.
    SoftBounce,
    /// Refused as spam or for the sender's reputation (a refinement of a bounce).
    SpamBlock,
    /// The recipient reported it as spam (feedback loop).
    SpamComplaint,
    /// Opened (every open counts).
    Open,
    /// A link was clicked; the event carries the URL.
    Click,
    /// The recipient unsubscribed.
    Unsubscribe,
    /// The recipient subscribed again (undoes an unsubscribe; the fixtures' manifest has it).
    Resubscribe,
    /// Never sent: suppressed, rejected or failed to render at the provider.
    Dropped,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 12] = [
        EventKind::Processed,
        EventKind::Delivered,
        EventKind::Deferred,
        EventKind::HardBounce,
        EventKind::SoftBounce,
        EventKind::SpamBlock,
        EventKind::SpamComplaint,
        EventKind::Open,
        EventKind::Click,
        EventKind::Unsubscribe,
        EventKind::Resubscribe,
        EventKind::Dropped,
    ];

    /// The kind's stored spelling (as in the JSON record).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Processed => "processed",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::HardBounce => "hard_bounce",
            EventKind::SoftBounce => "soft_bounce",
            EventKind::SpamBlock => "spam_block",
            EventKind::SpamComplaint => "spam_complaint",
            EventKind::Open => "open",
            EventKind::Click => "click",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::Resubscribe => "resubscribe",
            EventKind::Dropped => "dropped",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The email providers whose webhooks this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Twilio SendGrid Event Webhook (JSON array).
    SendGrid,
    /// Mailgun webhooks v3 (one JSON object per POST).
    Mailgun,
    /// Amazon SES event publishing or identity notifications, through an SNS subscription.
    Ses,
    /// Postmark (one JSON object per POST).
    Postmark,
    /// SparkPost / Bird (JSON array of `msys` wrappers).
    SparkPost,
    /// Mailchimp Transactional (form field `mandrill_events`, a JSON array).
    Mandrill,
}

impl Provider {
    /// Every provider, in declaration order.
    pub const ALL: [Provider; 6] = [
        Provider::SendGrid,
        Provider::Mailgun,
        Provider::Ses,
        Provider::Postmark,
        Provider::SparkPost,
        Provider::Mandrill,
    ];

    /// The provider's stored spelling, also its webhook path segment (`/webhooks/{name}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::SendGrid => "sendgrid",
            Provider::Mailgun => "mailgun",
            Provider::Ses => "ses",
            Provider::Postmark => "postmark",
            Provider::SparkPost => "sparkpost",
            Provider::Mandrill => "mandrill",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name that is not one of [`Provider::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}; expected one of sendgrid, mailgun, ses, postmark, sparkpost, mandrill")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.as_str() == name)
            .ok_or_else(|| UnknownProvider(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip_through_from_str_and_serde() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
            let json = serde_json::to_string(&provider).unwrap();
            assert_eq!(json, format!("\"{}\"", provider.as_str()));
        }
        assert_eq!("SendGrid".parse::<Provider>(), Err(UnknownProvider("SendGrid".into())));
    }

    #[test]
    fn kind_spellings_are_the_serde_names() {
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
    }

    #[test]
    fn the_record_json_has_stable_field_names() {
        let event = CanonicalEvent {
            provider: Provider::Mailgun,
            event_id: "click|id-1".into(),
            provider_event_id: Some("id-1".into()),
            tenant: Some("t1".into()),
            campaign: None,
            recipient: "a@example.com".into(),
            kind: EventKind::Click,
            occurred_at: EventTime::from_unix_micros(1_534_109_600_089_676).unwrap(),
            url: Some("https://example.com".into()),
            message_id: None,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"provider":"mailgun","event_id":"click|id-1","provider_event_id":"id-1","tenant":"t1","campaign":null,"recipient":"a@example.com","kind":"click","occurred_at":"2018-08-12T21:33:20.089676Z","url":"https://example.com","message_id":null}"#
        );
        assert_eq!(serde_json::from_str::<CanonicalEvent>(&json).unwrap(), event);
    }
}
