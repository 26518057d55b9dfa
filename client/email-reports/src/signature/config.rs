//! The `signatures` section of the service config: which providers are accepted, and the public
//! keys, shared secrets and certificates their requests are checked with.
//!
//! Plain serde values with defaults and `deny_unknown_fields`; nothing here is checked until
//! [`super::Verifier::new`], which parses every key and certificate up front so a bad one stops
//! the service at start-up instead of refusing every webhook later. `Debug` never prints a
//! secret (the config is logged at start-up).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How old a signed timestamp may be, by default (SendGrid, Mailgun): ten minutes. See the
/// crate README ("Timestamp windows") for why, and for when to raise it.
pub const DEFAULT_MAX_AGE_SECS: u32 = 600;

/// How many Mailgun tokens the replay cache remembers, by default (a few MB).
pub const DEFAULT_REPLAY_CACHE_CAPACITY: usize = 100_000;

/// Every provider's verification material. A provider left out is refused (401 "provider not
/// configured") unless `allow_unsigned` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// SendGrid's Signed Event Webhook public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendgrid: Option<SendgridConfig>,
    /// Mailgun's HTTP webhook signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailgun: Option<MailgunConfig>,
    /// Amazon SES through SNS: the trusted SNS signing certificates and topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ses: Option<SnsConfig>,
    /// Postmark's Basic credentials (the user and password put in the webhook URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmark: Option<BasicAuthConfig>,
    /// SparkPost's Basic credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparkpost: Option<BasicAuthConfig>,
    /// Mandrill's webhook key and the exact URL the webhook was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandrill: Option<MandrillConfig>,
    /// Let through requests of providers that have no config, and SNS raw deliveries (which
    /// carry no signature). Only for local development: anyone can then post events.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// SendGrid Signed Event Webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendgridConfig {
    /// The verification key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo of a
    /// P-256 key (a `-----BEGIN PUBLIC KEY-----` PEM is accepted too).
    pub public_key: String,
    /// How old `X-Twilio-Email-Event-Webhook-Timestamp` may be.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u32,
}

/// Mailgun webhooks v3.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailgunConfig {
    /// The account's "HTTP webhook signing key".
    pub signing_key: String,
    /// How old `signature.timestamp` may be; tokens are remembered this long.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u32,
    /// At most this many accepted tokens are remembered (oldest forgotten first).
    #[serde(default = "default_replay_cache_capacity")]
    pub replay_cache_capacity: usize,
}

/// Amazon SES notifications delivered by an SNS HTTP/S subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    /// The trust store: each `SigningCertURL` we accept, with its certificate. Certificates are
    /// never fetched: a message naming a URL not listed here is refused.
    pub certificates: BTreeMap<String, CertificateSource>,
    /// The `TopicArn`s accepted (notifications and subscription confirmations alike); empty =
    /// any topic.
    #[serde(default)]
    pub allowed_topic_arns: Vec<String>,
}

/// Where a trusted certificate's PEM text is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum CertificateSource {
    /// A PEM file, read once by [`super::Verifier::new`] (relative paths: from the working
    /// directory).
    Path(PathBuf),
    /// The PEM text itself.
    Pem(String),
}

/// HTTP Basic credentials (Postmark, SparkPost).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name (no `:`).
    pub username: String,
    /// The password (not empty).
    pub password: String,
}

/// Mailchimp Transactional (Mandrill).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MandrillConfig {
    /// The webhook's key, from the Mandrill webhook settings.
    pub webhook_key: String,
    /// The URL exactly as configured at Mandrill (it is part of the signed text, so a proxy
    /// that rewrites host or path does not change what must be written here).
    pub url: String,
}

fn default_max_age_secs() -> u32 {
    DEFAULT_MAX_AGE_SECS
}

fn default_replay_cache_capacity() -> usize {
    DEFAULT_REPLAY_CACHE_CAPACITY
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for MailgunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailgunConfig")
            .field("signing_key", &REDACTED)
            .field("max_age_secs", &self.max_age_secs)
            .field("replay_cache_capacity", &self.replay_cache_capacity)
            .finish()
    }
}

impl fmt::Debug for BasicAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuthConfig")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for MandrillConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MandrillConfig")
            .field("webhook_key", &REDACTED)
            .field("url", &self.url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_unknown_fields_are_refused() {
        let config: SignatureConfig =
            serde_json::from_str(r#"{"mailgun": {"signing_key": "k"}, "sendgrid": {"public_key": "AAAA"}}"#).unwrap();
        let mailgun = config.mailgun.unwrap();
        assert_eq!(mailgun.max_age_secs, DEFAULT_MAX_AGE_SECS);
        assert_eq!(mailgun.replay_cache_capacity, DEFAULT_REPLAY_CACHE_CAPACITY);
        assert_eq!(config.sendgrid.unwrap().max_age_secs, DEFAULT_MAX_AGE_SECS);
        assert!(!config.allow_unsigned);

        let typo = serde_json::from_str::<SignatureConfig>(r#"{"mailgun": {"signing_kye": "k"}}"#);
        assert!(typo.is_err());
        let typo = serde_json::from_str::<SignatureConfig>(r#"{"allow_unsinged": true}"#);
        assert!(typo.is_err());
    }

    #[test]
    fn certificate_sources_are_tagged() {
        let config: SnsConfig =
            serde_json::from_str(r#"{"certificates": {"a": {"path": "/etc/sns.pem"}, "b": {"pem": "-----BEGIN"}}}"#)
                .unwrap();
        assert_eq!(config.certificates["a"], CertificateSource::Path("/etc/sns.pem".into()));
        assert_eq!(config.certificates["b"], CertificateSource::Pem("-----BEGIN".into()));
        assert!(config.allowed_topic_arns.is_empty());
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?} {:?} {:?}",
            MailgunConfig {
                signing_key: "s3cret-mailgun".into(),
                max_age_secs: 1,
                replay_cache_capacity: 1,
            },
            BasicAuthConfig {
                username: "user".into(),
                password: "s3cret-basic".into()
            },
            MandrillConfig {
                webhook_key: "s3cret-mandrill".into(),
                url: "https://x".into()
            },
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("user") && text.contains("https://x"));
    }
}
