//! SendGrid Signed Event Webhook: ECDSA P-256 / SHA-256 over the timestamp header's bytes
//! followed by the raw body, exactly as received (the official test vector's body ends in
//! `\r\n` and does not verify without it).
//!
//! Headers: [`SIGNATURE_HEADER`] (base64 of the DER signature) and [`TIMESTAMP_HEADER`] (Unix
//! seconds). SendGrid documents no replay window; ours is [`super::Freshness`]. The body is
//! signed, so a replay inside the window can only repeat authentic events, which their
//! `sg_event_id` dedups.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderMap;
use p256::ecdsa::signature::DigestVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};

use super::config::SendgridConfig;
use super::error::{SignatureConfigError, SignatureError};
use super::freshness::Freshness;
use super::header_text;
use crate::event::Provider;

/// The header carrying base64(DER ECDSA signature).
pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
/// The header carrying the signed Unix timestamp (seconds).
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// SendGrid's verification key and window, parsed once.
#[derive(Debug)]
pub(super) struct SendgridVerifier {
    key: VerifyingKey,
    freshness: Freshness,
}

impl SendgridVerifier {
    pub(super) fn new(config: &SendgridConfig) -> Result<Self, SignatureConfigError> {
        let invalid = |detail: String| SignatureConfigError::InvalidValue {
            provider: Provider::SendGrid,
            field: "public_key",
            detail,
        };
        let text = config.public_key.trim();
        let key = if text.starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(text)
                .map_err(|error| invalid(format!("not a P-256 public key PEM: {error}")))?
        } else {
            let der = BASE64
                .decode(text)
                .map_err(|_| invalid("not base64 (expected the key as SendGrid shows it)".into()))?;
            VerifyingKey::from_public_key_der(&der)
                .map_err(|error| invalid(format!("not a P-256 SubjectPublicKeyInfo: {error}")))?
        };
        Ok(SendgridVerifier {
            key,
            freshness: Freshness::new(config.max_age_secs),
        })
    }

    pub(super) fn verify(&self, headers: &HeaderMap, body: &[u8], now_unix_secs: i64) -> Result<(), SignatureError> {
        let timestamp_text = header_text(headers, TIMESTAMP_HEADER)?;
        let timestamp: i64 = timestamp_text.parse().map_err(|_| SignatureError::InvalidHeader {
            header: TIMESTAMP_HEADER,
            detail: "not a Unix timestamp",
        })?;
        // The window first: a stale request is refused without the cost of an ECDSA check.
        self.freshness.check(timestamp, now_unix_secs)?;
        let encoded = header_text(headers, SIGNATURE_HEADER)?;
        let der = BASE64
            .decode(encoded.trim())
            .map_err(|_| SignatureError::MalformedSignature {
                field: SIGNATURE_HEADER,
                detail: "not base64",
            })?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::MalformedSignature {
            field: SIGNATURE_HEADER,
            detail: "not a DER ECDSA signature",
        })?;
        let digest = Sha256::new().chain_update(timestamp_text.as_bytes()).chain_update(body);
        self.key
            .verify_digest(digest, &signature)
            .map_err(|_| SignatureError::SignatureMismatch {
                provider: Provider::SendGrid,
            })
    }
}
