//! [`OutgoingEvent`]: one event to post, in the provider-neutral terms a load generator thinks
//! in, and the checks that make its round trip through any provider's body exact.

use super::error::PayloadError;
use crate::event::EventKind;
use crate::time::EventTime;

/// The first time a body may carry: the Unix epoch (providers report no earlier events).
const EARLIEST_MICROS: i64 = 0;
/// 2200-01-01T00:00:00Z, the first time a body may not carry. Below it every notation is exact
/// at its resolution: Mailgun's float seconds keep the microsecond only below 2^33 s
/// (year 2242), and SendGrid's parser reads seconds past year 5138 as milliseconds.
const END_MICROS: i64 = 7_258_118_400 * 1_000_000;

/// One event to post. Built by the caller; checked by [`super::build`].
///
/// Every text field must be non-empty without surrounding whitespace (the parsers trim, and
/// treat an empty carrier value as absent), the recipient lower-case (the parsers lower-case
/// it), `occurred_at` within 1970-01-01 .. 2200-01-01, and a click must have its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// The event's identity, unique per event: the provider's event id where it has one
    /// (SendGrid `sg_event_id`, Mailgun `id`, SparkPost `event_id`, Postmark bounce `ID`), else
    /// the provider's message id that its synthesised key is made of (SES `mail.messageId`,
    /// Postmark `MessageID`, Mandrill `_id`). No `|`: that is the keys' separator, and without
    /// it distinct ids always give distinct keys. Two events with the same id and kind are the
    /// same event (a redelivery), to be built from equal values.
    pub provider_event_id: String,
    /// The sender's message id, where the provider has a place for it besides the key (SendGrid
    /// `sg_message_id`, Mailgun `message-id` header, SparkPost `message_id`, SES
    /// `commonHeaders.messageId`); Postmark and Mandrill have none.
    pub message_id: String,
    /// The tenant id, written in the provider's carrier under [`crate::CarrierKeys::tenant`].
    pub tenant: String,
    /// The campaign id, written under [`crate::CarrierKeys::campaign`].
    pub campaign: String,
    /// The recipient's address, already lower-case.
    pub recipient: String,
    /// What happened; it must be one [`super::supports`] allows for the provider.
    pub kind: EventKind,
    /// When it happened; written at the provider's resolution ([`super::reported_time`]).
    pub occurred_at: EventTime,
    /// The clicked link: required for [`EventKind::Click`], ignored for every other kind.
    pub url: Option<String>,
}

impl OutgoingEvent {
    /// Checks the fields every provider needs (kind support and batch rules are checked by the
    /// caller); `index` is the event's position, for the error.
    pub(super) fn check(&self, index: usize) -> Result<(), PayloadError> {
        let invalid = |field: &'static str, detail: &str| PayloadError::InvalidEvent {
            index,
            field,
            detail: detail.to_owned(),
        };
        let text = |field: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(invalid(field, "empty"))
            } else if value.trim() != value {
                Err(invalid(field, "surrounding whitespace (the parsers trim it)"))
            } else {
                Ok(())
            }
        };
        text("provider_event_id", &self.provider_event_id)?;
        if self.provider_event_id.contains('|') {
            return Err(invalid("provider_event_id", "contains '|', the dedup keys' separator"));
        }
        text("message_id", &self.message_id)?;
        text("tenant", &self.tenant)?;
        text("campaign", &self.campaign)?;
        text("recipient", &self.recipient)?;
        if self.recipient.to_lowercase() != self.recipient {
            return Err(invalid("recipient", "not lower-case (the parsers lower-case it)"));
        }
        if self.kind == EventKind::Click {
            match &self.url {
                Some(url) => text("url", url)?,
                None => return Err(invalid("url", "a click needs its URL")),
            }
        }
        let micros = self.occurred_at.unix_micros();
        if !(EARLIEST_MICROS..END_MICROS).contains(&micros) {
            return Err(invalid(
                "occurred_at",
                &format!("{} is outside 1970-01-01 .. 2200-01-01", self.occurred_at),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> OutgoingEvent {
        OutgoingEvent {
            provider_event_id: "e1".into(),
            message_id: "m1".into(),
            tenant: "t".into(),
            campaign: "c".into(),
            recipient: "a@example.com".into(),
            kind: EventKind::Click,
            occurred_at: EventTime::from_unix_micros(1_700_000_000_000_000).unwrap(),
            url: Some("https://example.com".into()),
        }
    }

    /// Makes a valid event invalid in one field.
    type Spoil = fn(&mut OutgoingEvent);

    fn field_of(event: &OutgoingEvent) -> Option<&'static str> {
        match event.check(3) {
            Ok(()) => None,
            Err(PayloadError::InvalidEvent { index: 3, field, .. }) => Some(field),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn fields_that_would_not_round_trip_are_refused_by_name() {
        assert_eq!(field_of(&valid()), None);
        let cases: [(&str, Spoil); 8] = [
            ("provider_event_id", |e| e.provider_event_id = "a|b".into()),
            ("provider_event_id", |e| e.provider_event_id = " e1".into()),
            ("message_id", |e| e.message_id = String::new()),
            ("tenant", |e| e.tenant = "  ".into()),
            ("recipient", |e| e.recipient = "A@example.com".into()),
            ("url", |e| e.url = None),
            ("occurred_at", |e| {
                e.occurred_at = EventTime::from_unix_micros(-1).unwrap()
            }),
            ("occurred_at", |e| {
                e.occurred_at = EventTime::from_unix_micros(END_MICROS).unwrap()
            }),
        ];
        for (field, spoil) in cases {
            let mut event = valid();
            spoil(&mut event);
            assert_eq!(field_of(&event), Some(field), "{event:?}");
        }
        let mut open = valid();
        open.kind = EventKind::Open;
        open.url = None;
        assert_eq!(field_of(&open), None);
    }
}
