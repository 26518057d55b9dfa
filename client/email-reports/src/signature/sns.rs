//! Amazon SES through SNS: the SNS message signature. `SignatureVersion` "1" is RSA PKCS#1 v1.5
//! with SHA-1, "2" with SHA-256, over the canonical text `Name\nValue\n` of these fields in
//! this order (a field absent from the message is left out; only `Subject` ever is):
//! - `Notification`: Message, MessageId, Subject, Timestamp, TopicArn, Type;
//! - `SubscriptionConfirmation`, `UnsubscribeConfirmation`: Message, MessageId, SubscribeURL,
//!   Timestamp, Token, TopicArn, Type.
//!
//! The key is that of the certificate `SigningCertURL` names, taken from the configured trust
//! store ([`super::sns_certificate`]), and `TopicArn` must be in the allow-list — checked for
//! confirmations too, so the service never confirms a subscription to someone else's topic.
//!
//! The message's `Timestamp` is not windowed: SNS retries the same signed message for as long
//! as the subscription's delivery policy says (up to hours), the signature covers the whole
//! message, and a replay repeats events their dedup ids absorb.
//!
//! Raw message delivery (header [`RAW_DELIVERY_HEADER`]: `true`) has no envelope and so no
//! signature; the verifier refuses it unless `allow_unsigned`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::Sha256;

use super::config::SnsConfig;
use super::error::{SignatureConfigError, SignatureError};
use super::sns_certificate::TrustStore;

/// The header SNS adds to a raw message delivery.
pub const RAW_DELIVERY_HEADER: &str = "x-amz-sns-rawdelivery";

/// The fields of an SNS HTTP/S message that the signature involves (others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnsEnvelope {
    #[serde(rename = "Type")]
    pub(crate) message_type: Option<String>,
    #[serde(rename = "MessageId")]
    pub(crate) message_id: Option<String>,
    #[serde(rename = "Token", skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    #[serde(rename = "TopicArn")]
    pub(crate) topic_arn: Option<String>,
    #[serde(rename = "Subject", skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    #[serde(rename = "Message")]
    pub(crate) message: Option<String>,
    #[serde(rename = "SubscribeURL", skip_serializing_if = "Option::is_none")]
    pub(crate) subscribe_url: Option<String>,
    #[serde(rename = "Timestamp")]
    pub(crate) timestamp: Option<String>,
    #[serde(rename = "SignatureVersion")]
    pub(crate) signature_version: Option<String>,
    #[serde(rename = "Signature")]
    pub(crate) signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    pub(crate) signing_cert_url: Option<String>,
    #[serde(rename = "UnsubscribeURL", skip_serializing_if = "Option::is_none")]
    pub(crate) unsubscribe_url: Option<String>,
}

/// The signature's hash, from `SignatureVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureVersion {
    /// "1": SHA1withRSA.
    Sha1,
    /// "2": SHA256withRSA.
    Sha256,
}

impl SignatureVersion {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SignatureVersion::Sha1 => "1",
            SignatureVersion::Sha256 => "2",
        }
    }
}

/// The trust store and topic allow-list.
#[derive(Debug)]
pub(super) struct SnsVerifier {
    trust_store: TrustStore,
    allowed_topic_arns: Vec<String>,
}

impl SnsVerifier {
    pub(super) fn new(config: &SnsConfig) -> Result<Self, SignatureConfigError> {
        Ok(SnsVerifier {
            trust_store: TrustStore::load(config)?,
            allowed_topic_arns: config.allowed_topic_arns.clone(),
        })
    }

    pub(super) fn verify(&self, body: &[u8], now_unix_secs: i64) -> Result<(), SignatureError> {
        let envelope: SnsEnvelope = serde_json::from_slice(body).map_err(|_| SignatureError::InvalidBody {
            detail: "not an SNS message (a JSON object of string fields)",
        })?;
        let version = match required(&envelope.signature_version, "SignatureVersion")? {
            "1" => SignatureVersion::Sha1,
            "2" => SignatureVersion::Sha256,
            other => return Err(SignatureError::unsupported_signature_version(other)),
        };
        let url = required(&envelope.signing_cert_url, "SigningCertURL")?;
        let certificate = self.trust_store.get(url, now_unix_secs)?;
        let topic_arn = required(&envelope.topic_arn, "TopicArn")?;
        if !self.allowed_topic_arns.is_empty() && !self.allowed_topic_arns.iter().any(|allowed| allowed == topic_arn) {
            return Err(SignatureError::topic_not_allowed(topic_arn));
        }
        let canonical = canonical_text(&envelope)?;
        let signature_bytes = BASE64
            .decode(required(&envelope.signature, "Signature")?)
            .map_err(|_| SignatureError::MalformedSignature {
                field: "Signature",
                detail: "not base64",
            })?;
        let mismatch = SignatureError::SignatureMismatch {
            provider: crate::event::Provider::Ses,
        };
        let signature = Signature::try_from(signature_bytes.as_slice()).map_err(|_| mismatch.clone())?;
        let key = certificate.key.clone();
        let verified = match version {
            SignatureVersion::Sha1 => VerifyingKey::<Sha1>::new(key).verify(canonical.as_bytes(), &signature),
            SignatureVersion::Sha256 => VerifyingKey::<Sha256>::new(key).verify(canonical.as_bytes(), &signature),
        };
        verified.map_err(|_| mismatch)
    }
}

fn required<'e>(field: &'e Option<String>, name: &'static str) -> Result<&'e str, SignatureError> {
    field.as_deref().ok_or(SignatureError::MissingField { field: name })
}

/// The text SNS signs for `envelope`, per its `Type`.
pub(crate) fn canonical_text(envelope: &SnsEnvelope) -> Result<String, SignatureError> {
    let message_type = required(&envelope.message_type, "Type")?;
    let fields: [(&'static str, &Option<String>); 6] = match message_type {
        "Notification" => [
            ("Message", &envelope.message),
            ("MessageId", &envelope.message_id),
            ("Subject", &envelope.subject),
            ("Timestamp", &envelope.timestamp),
            ("TopicArn", &envelope.topic_arn),
            ("Type", &envelope.message_type),
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            let mut text = String::new();
            for (name, value) in [
                ("Message", &envelope.message),
                ("MessageId", &envelope.message_id),
                ("SubscribeURL", &envelope.subscribe_url),
                ("Timestamp", &envelope.timestamp),
                ("Token", &envelope.token),
                ("TopicArn", &envelope.topic_arn),
                ("Type", &envelope.message_type),
            ] {
                append(&mut text, name, required(value, name)?);
            }
            return Ok(text);
        }
        other => return Err(SignatureError::unsupported_message_type(other)),
    };
    let mut text = String::new();
    for (name, value) in fields {
        match (name, value) {
            // The one optional field: SNS leaves Subject out of the message, and out of the
            // signed text, when the publisher set none.
            ("Subject", None) => {}
            (name, value) => append(&mut text, name, required(value, name)?),
        }
    }
    Ok(text)
}

fn append(text: &mut String, name: &str, value: &str) {
    text.push_str(name);
    text.push('\n');
    text.push_str(value);
    text.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_of_a_notification_leaves_out_an_absent_subject() {
        let mut envelope = SnsEnvelope {
            message_type: Some("Notification".into()),
            message_id: Some("id-1".into()),
            topic_arn: Some("arn:t".into()),
            message: Some("hello\nworld".into()),
            timestamp: Some("2024-01-01T00:00:00.000Z".into()),
            ..SnsEnvelope::default()
        };
        assert_eq!(
            canonical_text(&envelope).unwrap(),
            "Message\nhello\nworld\nMessageId\nid-1\nTimestamp\n2024-01-01T00:00:00.000Z\nTopicArn\narn:t\nType\nNotification\n"
        );
        envelope.subject = Some("S".into());
        assert!(canonical_text(&envelope)
            .unwrap()
            .contains("MessageId\nid-1\nSubject\nS\nTimestamp\n"));
        envelope.message_id = None;
        assert_eq!(
            canonical_text(&envelope),
            Err(SignatureError::MissingField { field: "MessageId" })
        );
    }

    #[test]
    fn canonical_text_of_a_confirmation_needs_token_and_subscribe_url() {
        let envelope = SnsEnvelope {
            message_type: Some("SubscriptionConfirmation".into()),
            message_id: Some("id".into()),
            topic_arn: Some("arn:t".into()),
            message: Some("m".into()),
            timestamp: Some("t".into()),
            subscribe_url: Some("https://sns/confirm".into()),
            token: Some("tok".into()),
            // Not part of a confirmation's signed text.
            subject: Some("ignored".into()),
            ..SnsEnvelope::default()
        };
        assert_eq!(
            canonical_text(&envelope).unwrap(),
            "Message\nm\nMessageId\nid\nSubscribeURL\nhttps://sns/confirm\nTimestamp\nt\nToken\ntok\nTopicArn\narn:t\nType\nSubscriptionConfirmation\n"
        );
        let no_token = SnsEnvelope {
            token: None,
            ..envelope
        };
        assert_eq!(
            canonical_text(&no_token),
            Err(SignatureError::MissingField { field: "Token" })
        );
    }

    #[test]
    fn unknown_types_are_refused() {
        let envelope = SnsEnvelope {
            message_type: Some("Surprise".into()),
            ..SnsEnvelope::default()
        };
        assert_eq!(
            canonical_text(&envelope),
            Err(SignatureError::UnsupportedMessageType {
                message_type: "\"Surprise\"".into()
            })
        );
    }
}
