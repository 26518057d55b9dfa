//! Why a webhook request was not accepted as authentic ([`SignatureError`], answered 401 with
//! its text), and why a signature config cannot be used ([`SignatureConfigError`], a start-up
//! failure).
//!
//! The texts are precise enough to debug a misconfigured provider from the provider's delivery
//! log, and never carry secret material: no key, no expected signature or MAC, no password.
//! Values a sender chose (a URL, a topic) are quoted, escaped and cut to
//! [`MAX_ECHOED_CHARS`] characters.

use crate::event::Provider;

/// The longest sender-chosen value echoed in an error text.
pub const MAX_ECHOED_CHARS: usize = 200;

/// Why a request's authenticity could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The service has no verification material for this provider (and `allow_unsigned` is off).
    #[error("provider {provider} not configured")]
    ProviderNotConfigured {
        /// The provider of the request.
        provider: Provider,
    },
    /// A header the scheme needs is absent.
    #[error("missing header {header}")]
    MissingHeader {
        /// The header's name.
        header: &'static str,
    },
    /// A header is present but unusable (not text, not a number, not the expected scheme).
    #[error("header {header}: {detail}")]
    InvalidHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// A field of the body the scheme needs is absent (Mailgun's signature block, SNS fields).
    #[error("missing field {field} in the body")]
    MissingField {
        /// The field's path.
        field: &'static str,
    },
    /// The body cannot be read for its signature (not JSON, a field of the wrong type).
    #[error("body: {detail}")]
    InvalidBody {
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The signature's encoding is broken (not base64 or hex, not a DER ECDSA signature).
    #[error("{field}: {detail}")]
    MalformedSignature {
        /// The header or field holding the signature.
        field: &'static str,
        /// Which encoding failed.
        detail: &'static str,
    },
    /// The signature or MAC does not match the signed content: tampered, or signed with
    /// another key.
    #[error("{provider} signature mismatch")]
    SignatureMismatch {
        /// The provider of the request.
        provider: Provider,
    },
    /// The signed timestamp is too old, or too far in the future.
    #[error(
        "timestamp outside window (age {age_secs} s; accepted from {max_future_secs} s ahead \
         to {max_age_secs} s old)"
    )]
    TimestampOutsideWindow {
        /// `now - timestamp`: negative when the timestamp is in the future.
        age_secs: i64,
        /// The oldest accepted age.
        max_age_secs: i64,
        /// The furthest accepted future skew.
        max_future_secs: i64,
    },
    /// A Mailgun token that an accepted request already used.
    #[error("token replayed")]
    TokenReplayed,
    /// An SNS `SignatureVersion` other than 1 or 2.
    #[error("SNS SignatureVersion {version} not supported (1 or 2)")]
    UnsupportedSignatureVersion {
        /// The version sent, quoted.
        version: String,
    },
    /// An SNS `Type` other than Notification, SubscriptionConfirmation, UnsubscribeConfirmation.
    #[error("SNS message Type {message_type} not supported")]
    UnsupportedMessageType {
        /// The type sent, quoted.
        message_type: String,
    },
    /// `SigningCertURL` is not an `https://sns.<region>.amazonaws.com[.cn]/….pem` URL.
    #[error("certificate URL not allowed ({reason}): {url}")]
    CertificateUrlNotAllowed {
        /// The URL sent, quoted.
        url: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `SigningCertURL` is a well-formed SNS URL but not in the configured trust store.
    #[error("certificate not in trust store: {url}")]
    CertificateNotTrusted {
        /// The URL sent, quoted.
        url: String,
    },
    /// The trusted certificate is expired or not yet valid.
    #[error("certificate not valid at this time: {url}")]
    CertificateNotValidNow {
        /// The certificate's URL, quoted.
        url: String,
    },
    /// The SNS `TopicArn` is not in the allow-list.
    #[error("topic not allowed: {topic_arn}")]
    TopicNotAllowed {
        /// The topic sent, quoted.
        topic_arn: String,
    },
    /// An SNS raw message delivery: it has no signature to check.
    #[error("SNS raw message delivery is unsigned (refused unless allow_unsigned)")]
    UnsignedRawDelivery,
    /// Basic credentials absent from `Authorization`, or not the configured ones.
    #[error("bad credentials")]
    BadCredentials,
}

impl SignatureError {
    pub(crate) fn unsupported_signature_version(version: &str) -> Self {
        SignatureError::UnsupportedSignatureVersion {
            version: echoed(version),
        }
    }

    pub(crate) fn unsupported_message_type(message_type: &str) -> Self {
        SignatureError::UnsupportedMessageType {
            message_type: echoed(message_type),
        }
    }

    pub(crate) fn certificate_url_not_allowed(url: &str, reason: &'static str) -> Self {
        SignatureError::CertificateUrlNotAllowed {
            url: echoed(url),
            reason,
        }
    }

    pub(crate) fn certificate_not_trusted(url: &str) -> Self {
        SignatureError::CertificateNotTrusted { url: echoed(url) }
    }

    pub(crate) fn certificate_not_valid_now(url: &str) -> Self {
        SignatureError::CertificateNotValidNow { url: echoed(url) }
    }

    pub(crate) fn topic_not_allowed(topic_arn: &str) -> Self {
        SignatureError::TopicNotAllowed {
            topic_arn: echoed(topic_arn),
        }
    }
}

/// A sender-chosen value made safe to echo: at most [`MAX_ECHOED_CHARS`] characters, quoted
/// and escaped (no control characters or newlines reach a log line or a response).
fn echoed(value: &str) -> String {
    let cut: String = value.chars().take(MAX_ECHOED_CHARS).collect();
    if cut.len() < value.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Why a [`super::SignatureConfig`] cannot be used; the service refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureConfigError {
    /// A provider's value is unusable (a key that does not parse, an empty secret).
    #[error("signatures.{provider}.{field}: {detail}")]
    InvalidValue {
        /// The provider's config section.
        provider: Provider,
        /// The key within it.
        field: &'static str,
        /// What is wrong (never the value itself, which may be a secret).
        detail: String,
    },
    /// A trust-store entry of `signatures.ses.certificates` is unusable.
    #[error("signatures.ses.certificates[{url:?}]: {detail}")]
    Certificate {
        /// The entry's `SigningCertURL`.
        url: String,
        /// What is wrong (unreadable file, not PEM, not an RSA certificate, not an SNS URL).
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_quoted_escaped_and_cut() {
        assert_eq!(echoed("a\nb"), r#""a\nb""#);
        let long = "x".repeat(MAX_ECHOED_CHARS + 50);
        let shown = echoed(&long);
        assert!(shown.ends_with("\"…"));
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), MAX_ECHOED_CHARS);
    }

    #[test]
    fn texts_name_the_reason() {
        let stale = SignatureError::TimestampOutsideWindow {
            age_secs: 900,
            max_age_secs: 600,
            max_future_secs: 60,
        };
        assert_eq!(
            stale.to_string(),
            "timestamp outside window (age 900 s; accepted from 60 s ahead to 600 s old)"
        );
        assert_eq!(
            SignatureError::ProviderNotConfigured {
                provider: Provider::Postmark
            }
            .to_string(),
            "provider postmark not configured"
        );
        assert_eq!(
            SignatureError::certificate_url_not_allowed("http://evil", "scheme is not https").to_string(),
            r#"certificate URL not allowed (scheme is not https): "http://evil""#
        );
    }
}
