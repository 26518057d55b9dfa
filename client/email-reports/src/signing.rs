//! # Signing: webhook requests as the providers would sign them
//!
//! **One job:** produce requests that [`crate::signature::Verifier`] accepts — for the load
//! generator (realistic signed traffic) and for tests. It is the mirror of `signature/`, and
//! the round-trip tests between the two are what keep both honest.
//!
//! **Owns:** [`DevSecrets`], the private half of every provider's material (a P-256 key for
//! SendGrid, the Mailgun and Mandrill HMAC keys, an RSA key with a self-signed certificate
//! standing in for SNS's, Basic credentials for Postmark and SparkPost), its file format
//! (serde, PEM inside JSON, so a dev run writes one file that the service and the load
//! generator both read), and [`DevSecrets::verifier_config`], the matching service config.
//!
//! **Invariants:** nothing here is used to *verify*; no real provider secret ever belongs in
//! a `DevSecrets`. Randomness and time are passed in (seeded RNGs in tests). Signing never
//! fails once the secrets are built (keys are parsed when loaded).
//!
//! **Must not depend on:** the HTTP server or the broker.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue};
use p256::ecdsa::signature::DigestSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::CryptoRngCore;
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::signature::Signer as _;
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::event::Provider;
use crate::signature::sns::{canonical_text, SignatureVersion, SnsEnvelope};
use crate::signature::{
    authorization_value, mailgun_mac_hex, mandrill_signature_base64, BasicAuthConfig, CertificateSource, MailgunConfig,
    MandrillConfig, SendgridConfig, SignatureConfig, SnsConfig, DEFAULT_MAX_AGE_SECS, DEFAULT_REPLAY_CACHE_CAPACITY,
    MANDRILL_SIGNATURE_HEADER, SENDGRID_SIGNATURE_HEADER, SENDGRID_TIMESTAMP_HEADER,
};

/// The `SigningCertURL` of the dev certificate: a well-formed SNS URL (the verifier accepts no
/// other shape), which is never fetched.
pub const DEV_SNS_CERTIFICATE_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-dev.pem";
/// The SNS topic the dev notifications come from.
pub const DEV_SNS_TOPIC_ARN: &str = "arn:aws:sns:us-east-1:000000000000:email-events-dev";
/// The Mandrill webhook URL assumed by [`DevSecrets::generate`] (change it with
/// [`DevSecrets::with_mandrill_url`]: it is part of what Mandrill signs).
pub const DEV_MANDRILL_URL: &str = "http://127.0.0.1:8080/webhooks/mandrill";

/// RSA key size of the dev SNS key (SNS's own certificates are 2048-bit).
const RSA_BITS: usize = 2048;
/// How long the dev certificate is valid after `generate`'s `now` (and one day before it).
const CERTIFICATE_DAYS: i64 = 3650;

/// Every provider's private signing material, for development and tests only.
///
/// Serialises as [`DevSecretsFile`]-shaped JSON (keys as PKCS#8 PEM), parsed again on load.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "DevSecretsFile", into = "DevSecretsFile")]
pub struct DevSecrets {
    sendgrid_key: p256::ecdsa::SigningKey,
    mailgun_signing_key: String,
    sns_key: RsaPrivateKey,
    sns_certificate_pem: String,
    sns_certificate_url: String,
    sns_topic_arn: String,
    postmark: BasicAuthConfig,
    sparkpost: BasicAuthConfig,
    mandrill_webhook_key: String,
    mandrill_url: String,
}

/// The file form of [`DevSecrets`] (what `serde_json` reads and writes).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSecretsFile {
    /// SendGrid's P-256 private key, PKCS#8 PEM.
    pub sendgrid_private_key_pem: String,
    /// Mailgun's webhook signing key.
    pub mailgun_signing_key: String,
    /// The SNS stand-in's RSA private key, PKCS#8 PEM.
    pub sns_private_key_pem: String,
    /// Its self-signed certificate, PEM.
    pub sns_certificate_pem: String,
    /// The `SigningCertURL` that names it.
    pub sns_certificate_url: String,
    /// The topic notifications come from.
    pub sns_topic_arn: String,
    /// Postmark's Basic credentials.
    pub postmark: BasicAuthConfig,
    /// SparkPost's Basic credentials.
    pub sparkpost: BasicAuthConfig,
    /// Mandrill's webhook key.
    pub mandrill_webhook_key: String,
    /// The Mandrill webhook URL (signed).
    pub mandrill_url: String,
}

/// Why a secrets file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dev secrets: {field}: {detail}")]
pub struct DevSecretsError {
    /// The field of [`DevSecretsFile`].
    pub field: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl DevSecrets {
    /// Fresh secrets for every provider. Generating the 2048-bit RSA key takes a fraction of
    /// a second with optimised dependencies (the workspace builds them at opt-level 2 even in
    /// dev); tests should generate once per binary.
    pub fn generate(rng: &mut impl CryptoRngCore, now_unix_secs: i64) -> Result<DevSecrets, DevSecretsError> {
        let sns_key = RsaPrivateKey::new(rng, RSA_BITS).map_err(|error| DevSecretsError {
            field: "sns_private_key_pem",
            detail: error.to_string(),
        })?;
        let sns_certificate_pem = self_signed_certificate(&sns_key, rng, now_unix_secs)?;
        Ok(DevSecrets {
            sendgrid_key: p256::ecdsa::SigningKey::random(rng),
            mailgun_signing_key: random_hex(rng, 32),
            sns_key,
            sns_certificate_pem,
            sns_certificate_url: DEV_SNS_CERTIFICATE_URL.into(),
            sns_topic_arn: DEV_SNS_TOPIC_ARN.into(),
            postmark: BasicAuthConfig {
                username: "postmark".into(),
                password: random_hex(rng, 16),
            },
            sparkpost: BasicAuthConfig {
                username: "sparkpost".into(),
                password: random_hex(rng, 16),
            },
            mandrill_webhook_key: random_hex(rng, 16),
            mandrill_url: DEV_MANDRILL_URL.into(),
        })
    }

    /// The same secrets, for a Mandrill webhook at `url` (as it would be configured at Mandrill).
    pub fn with_mandrill_url(mut self, url: impl Into<String>) -> DevSecrets {
        self.mandrill_url = url.into();
        self
    }

    /// The service config that verifies what these secrets sign (every provider configured,
    /// `allow_unsigned` off, the SNS certificate inline and only [`Self::sns_topic_arn`]
    /// allowed).
    pub fn verifier_config(&self) -> SignatureConfig {
        let public_key_der = self
            .sendgrid_key
            .verifying_key()
            .to_public_key_der()
            .expect("a P-256 public key always encodes");
        SignatureConfig {
            sendgrid: Some(SendgridConfig {
                public_key: BASE64.encode(public_key_der.as_bytes()),
                max_age_secs: DEFAULT_MAX_AGE_SECS,
            }),
            mailgun: Some(MailgunConfig {
                signing_key: self.mailgun_signing_key.clone(),
                max_age_secs: DEFAULT_MAX_AGE_SECS,
                replay_cache_capacity: DEFAULT_REPLAY_CACHE_CAPACITY,
            }),
            ses: Some(SnsConfig {
                certificates: [(
                    self.sns_certificate_url.clone(),
                    CertificateSource::Pem(self.sns_certificate_pem.clone()),
                )]
                .into(),
                allowed_topic_arns: vec![self.sns_topic_arn.clone()],
            }),
            postmark: Some(self.postmark.clone()),
            sparkpost: Some(self.sparkpost.clone()),
            mandrill: Some(MandrillConfig {
                webhook_key: self.mandrill_webhook_key.clone(),
                url: self.mandrill_url.clone(),
            }),
            allow_unsigned: false,
        }
    }

    /// The SNS certificate's PEM (to write to a file for a config that names a path).
    pub fn sns_certificate_pem(&self) -> &str {
        &self.sns_certificate_pem
    }

    /// The `SigningCertURL` the SNS envelopes name.
    pub fn sns_certificate_url(&self) -> &str {
        &self.sns_certificate_url
    }

    /// The topic the SNS envelopes come from.
    pub fn sns_topic_arn(&self) -> &str {
        &self.sns_topic_arn
    }

    /// The Mandrill webhook URL signed into [`Self::sign_mandrill`]'s signatures.
    pub fn mandrill_url(&self) -> &str {
        &self.mandrill_url
    }

    /// SendGrid's headers for `body` (the exact bytes to post) at `now`: signature, timestamp,
    /// and `Content-Type: application/json`.
    pub fn sign_sendgrid(&self, body: &[u8], now_unix_secs: i64) -> HeaderMap {
        let timestamp = now_unix_secs.to_string();
        let digest = Sha256::new().chain_update(timestamp.as_bytes()).chain_update(body);
        let signature: p256::ecdsa::Signature = self.sendgrid_key.sign_digest(digest);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("x-twilio-email-event-webhook-signature"),
            header_value(BASE64.encode(signature.to_der().as_bytes())),
        );
        headers.insert(
            HeaderName::from_static("x-twilio-email-event-webhook-timestamp"),
            header_value(timestamp),
        );
        debug_assert!(
            headers.contains_key(SENDGRID_SIGNATURE_HEADER) && headers.contains_key(SENDGRID_TIMESTAMP_HEADER)
        );
        headers
    }

    /// A complete Mailgun body, `{"signature": {…}, "event-data": event_data}`, signed at `now`
    /// with a fresh random 50-character token (as Mailgun's).
    pub fn sign_mailgun(
        &self,
        event_data: &serde_json::Value,
        now_unix_secs: i64,
        rng: &mut impl CryptoRngCore,
    ) -> Vec<u8> {
        let timestamp = now_unix_secs.to_string();
        let token = random_hex(rng, 25);
        let signature = mailgun_mac_hex(&self.mailgun_signing_key, &timestamp, &token);
        let body = serde_json::json!({
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event_data,
        });
        serde_json::to_vec(&body).expect("a JSON value always serialises")
    }

    /// An SNS `Notification` envelope (SignatureVersion 2) carrying `message` (for SES: the
    /// event's JSON text), published at `now`, as the JSON body SNS posts.
    pub fn sign_sns_notification(
        &self,
        message: &str,
        topic_arn: &str,
        message_id: &str,
        now_unix_secs: i64,
    ) -> Vec<u8> {
        let envelope = SnsEnvelope {
            message_type: Some("Notification".into()),
            message_id: Some(message_id.into()),
            topic_arn: Some(topic_arn.into()),
            message: Some(message.into()),
            timestamp: Some(sns_timestamp(now_unix_secs)),
            unsubscribe_url: Some(format!(
                "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:dev"
            )),
            ..SnsEnvelope::default()
        };
        self.sign_sns_envelope(envelope, SignatureVersion::Sha256)
    }

    /// An SNS `SubscriptionConfirmation` envelope (SignatureVersion 2) for `topic_arn`.
    pub fn sign_sns_subscription_confirmation(
        &self,
        topic_arn: &str,
        message_id: &str,
        token: &str,
        subscribe_url: &str,
        now_unix_secs: i64,
    ) -> Vec<u8> {
        let envelope = SnsEnvelope {
            message_type: Some("SubscriptionConfirmation".into()),
            message_id: Some(message_id.into()),
            token: Some(token.into()),
            topic_arn: Some(topic_arn.into()),
            message: Some(format!(
                "You have chosen to subscribe to the topic {topic_arn}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
            )),
            subscribe_url: Some(subscribe_url.into()),
            timestamp: Some(sns_timestamp(now_unix_secs)),
            ..SnsEnvelope::default()
        };
        self.sign_sns_envelope(envelope, SignatureVersion::Sha256)
    }

    /// Signs any envelope with either signature version (tests of version 1 use this).
    pub(crate) fn sign_sns_envelope(&self, mut envelope: SnsEnvelope, version: SignatureVersion) -> Vec<u8> {
        envelope.signature_version = Some(version.as_str().into());
        envelope.signing_cert_url = Some(self.sns_certificate_url.clone());
        envelope.signature = None;
        let text = canonical_text(&envelope).expect("the signing side builds complete envelopes");
        let signature = match version {
            SignatureVersion::Sha1 => RsaSigningKey::<Sha1>::new(self.sns_key.clone()).sign(text.as_bytes()),
            SignatureVersion::Sha256 => RsaSigningKey::<Sha256>::new(self.sns_key.clone()).sign(text.as_bytes()),
        };
        envelope.signature = Some(BASE64.encode(Box::<[u8]>::from(signature)));
        serde_json::to_vec(&envelope).expect("an envelope always serialises")
    }

    /// The `Authorization` header value for Postmark or SparkPost; `None` for the providers
    /// that sign instead.
    pub fn basic_auth_header(&self, provider: Provider) -> Option<HeaderValue> {
        let credentials = match provider {
            Provider::Postmark => &self.postmark,
            Provider::SparkPost => &self.sparkpost,
            _ => return None,
        };
        Some(header_value(authorization_value(credentials)))
    }

    /// Headers for a Postmark or SparkPost body: `Authorization` and JSON content type.
    pub fn basic_auth_headers(&self, provider: Provider) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.basic_auth_header(provider)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Some(headers)
    }

    /// The `X-Mandrill-Signature` value for a form-encoded body posted to [`Self::mandrill_url`].
    pub fn sign_mandrill(&self, form_body: &[u8]) -> HeaderValue {
        header_value(mandrill_signature_base64(
            &self.mandrill_webhook_key,
            &self.mandrill_url,
            form_body,
        ))
    }

    /// Headers for a Mandrill form body: the signature and the form content type.
    pub fn mandrill_headers(&self, form_body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-mandrill-signature"),
            self.sign_mandrill(form_body),
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        debug_assert!(headers.contains_key(MANDRILL_SIGNATURE_HEADER));
        headers
    }
}

/// The form body Mandrill posts for `events_json` (a JSON array of events).
pub fn mandrill_form_body(events_json: &str) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("mandrill_events", events_json)
        .finish()
        .into_bytes()
}

impl fmt::Debug for DevSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevSecrets")
            .field("sns_certificate_url", &self.sns_certificate_url)
            .field("sns_topic_arn", &self.sns_topic_arn)
            .field("mandrill_url", &self.mandrill_url)
            .finish_non_exhaustive()
    }
}

impl From<DevSecrets> for DevSecretsFile {
    fn from(secrets: DevSecrets) -> Self {
        DevSecretsFile {
            sendgrid_private_key_pem: secrets
                .sendgrid_key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("a P-256 key always encodes")
                .to_string(),
            mailgun_signing_key: secrets.mailgun_signing_key,
            sns_private_key_pem: secrets
                .sns_key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("an RSA key always encodes")
                .to_string(),
            sns_certificate_pem: secrets.sns_certificate_pem,
            sns_certificate_url: secrets.sns_certificate_url,
            sns_topic_arn: secrets.sns_topic_arn,
            postmark: secrets.postmark,
            sparkpost: secrets.sparkpost,
            mandrill_webhook_key: secrets.mandrill_webhook_key,
            mandrill_url: secrets.mandrill_url,
        }
    }
}

impl TryFrom<DevSecretsFile> for DevSecrets {
    type Error = DevSecretsError;

    fn try_from(file: DevSecretsFile) -> Result<Self, Self::Error> {
        let sendgrid_key =
            p256::ecdsa::SigningKey::from_pkcs8_pem(&file.sendgrid_private_key_pem).map_err(|error| {
                DevSecretsError {
                    field: "sendgrid_private_key_pem",
                    detail: error.to_string(),
                }
            })?;
        let sns_key = RsaPrivateKey::from_pkcs8_pem(&file.sns_private_key_pem).map_err(|error| DevSecretsError {
            field: "sns_private_key_pem",
            detail: error.to_string(),
        })?;
        Ok(DevSecrets {
            sendgrid_key,
            mailgun_signing_key: file.mailgun_signing_key,
            sns_key,
            sns_certificate_pem: file.sns_certificate_pem,
            sns_certificate_url: file.sns_certificate_url,
            sns_topic_arn: file.sns_topic_arn,
            postmark: file.postmark,
            sparkpost: file.sparkpost,
            mandrill_webhook_key: file.mandrill_webhook_key,
            mandrill_url: file.mandrill_url,
        })
    }
}

/// A self-signed certificate for `key`, valid from a day before `now` for [`CERTIFICATE_DAYS`].
fn self_signed_certificate(
    key: &RsaPrivateKey,
    rng: &mut impl CryptoRngCore,
    now_unix_secs: i64,
) -> Result<String, DevSecretsError> {
    use std::str::FromStr;
    use std::time::Duration;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::asn1::GeneralizedTime;
    use x509_cert::der::EncodePem;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::{Time, Validity};

    let failed = |detail: String| DevSecretsError {
        field: "sns_certificate_pem",
        detail,
    };
    let time = |unix_secs: i64| -> Result<Time, DevSecretsError> {
        let secs = u64::try_from(unix_secs).map_err(|_| failed("time before 1970".into()))?;
        GeneralizedTime::from_unix_duration(Duration::from_secs(secs))
            .map(Time::GeneralTime)
            .map_err(|error| failed(error.to_string()))
    };
    let validity = Validity {
        not_before: time(now_unix_secs - 86_400)?,
        not_after: time(now_unix_secs + CERTIFICATE_DAYS * 86_400)?,
    };
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    // A positive, non-zero INTEGER (RFC 5280 4.1.2.2).
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let serial = SerialNumber::new(&serial).map_err(|error| failed(error.to_string()))?;
    let subject = Name::from_str("CN=sns.amazonaws.com (email-reports dev),O=email-reports dev")
        .map_err(|error| failed(error.to_string()))?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).map_err(|error| failed(error.to_string()))?;
    let signer = RsaSigningKey::<Sha256>::new(key.clone());
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
        .map_err(|error| failed(error.to_string()))?;
    let certificate = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|error| failed(error.to_string()))?;
    certificate
        .to_pem(LineEnding::LF)
        .map_err(|error| failed(error.to_string()))
}

/// SNS's `Timestamp` format: RFC 3339 UTC with milliseconds.
fn sns_timestamp(now_unix_secs: i64) -> String {
    DateTime::from_timestamp(now_unix_secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn random_hex(rng: &mut impl CryptoRngCore, bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rng.fill_bytes(&mut buffer);
    hex::encode(buffer)
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("base64, digits and hex are valid header values")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{SignatureError, Verifier};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::sync::OnceLock;

    const NOW: i64 = 1_760_000_000;

    fn secrets() -> &'static DevSecrets {
        static SECRETS: OnceLock<DevSecrets> = OnceLock::new();
        SECRETS.get_or_init(|| DevSecrets::generate(&mut ChaCha20Rng::seed_from_u64(3), NOW).unwrap())
    }

    fn notification() -> SnsEnvelope {
        SnsEnvelope {
            message_type: Some("Notification".into()),
            message_id: Some("id".into()),
            topic_arn: Some(DEV_SNS_TOPIC_ARN.into()),
            subject: Some("Amazon SES Email Event Notification".into()),
            message: Some("{}".into()),
            timestamp: Some(sns_timestamp(NOW)),
            ..SnsEnvelope::default()
        }
    }

    #[test]
    fn sns_signature_versions_1_and_2_both_verify_and_are_not_interchangeable() {
        let verifier = Verifier::new(&secrets().verifier_config()).unwrap();
        let headers = HeaderMap::new();
        for version in [SignatureVersion::Sha1, SignatureVersion::Sha256] {
            let body = secrets().sign_sns_envelope(notification(), version);
            let _verified = verifier.verify(Provider::Ses, &headers, &body, NOW).unwrap();
        }
        // A SHA-1 signature relabelled as version 2 does not verify.
        let body = secrets().sign_sns_envelope(notification(), SignatureVersion::Sha1);
        let relabelled = String::from_utf8(body)
            .unwrap()
            .replace(r#""SignatureVersion":"1""#, r#""SignatureVersion":"2""#);
        assert_eq!(
            verifier
                .verify(Provider::Ses, &headers, relabelled.as_bytes(), NOW)
                .unwrap_err(),
            SignatureError::SignatureMismatch {
                provider: Provider::Ses
            }
        );
        let version_3 = relabelled.replace(r#""SignatureVersion":"2""#, r#""SignatureVersion":"3""#);
        assert_eq!(
            verifier
                .verify(Provider::Ses, &headers, version_3.as_bytes(), NOW)
                .unwrap_err()
                .to_string(),
            r#"SNS SignatureVersion "3" not supported (1 or 2)"#
        );
    }

    #[test]
    fn the_subject_is_signed_when_present() {
        let verifier = Verifier::new(&secrets().verifier_config()).unwrap();
        let body = secrets().sign_sns_envelope(notification(), SignatureVersion::Sha256);
        let changed = String::from_utf8(body)
            .unwrap()
            .replace("Amazon SES Email", "Amazon SES Mail");
        assert!(verifier
            .verify(Provider::Ses, &HeaderMap::new(), changed.as_bytes(), NOW)
            .is_err());
    }

    #[test]
    fn sns_timestamps_look_like_sns_ones() {
        assert_eq!(sns_timestamp(1_336_006_446), "2012-05-03T00:54:06.000Z");
    }

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let again = DevSecrets::generate(&mut ChaCha20Rng::seed_from_u64(3), NOW).unwrap();
        assert_eq!(again.verifier_config(), secrets().verifier_config());
    }
}
