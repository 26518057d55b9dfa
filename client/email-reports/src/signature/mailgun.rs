//! Mailgun webhooks v3: the signature is in the body, `{"signature": {"timestamp", "token",
//! "signature"}, "event-data": {…}}`; `signature` is hex HMAC-SHA256 with the account's webhook
//! signing key over `timestamp ++ token` (the texts, no separator).
//!
//! The MAC does not cover `event-data`, so the timestamp window and the replay cache
//! ([`super::replay`]) are what stop a captured signature block from vouching for other
//! events. A verified request yields its token; the token counts as used only once the HTTP
//! layer calls `Verifier::mark_accepted` (see [`super::replay`] for why).
//!
//! Subaccount events may also carry `parent-signature` (the parent account's key); it is
//! ignored: `signature` is the one made with the key configured here.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::config::MailgunConfig;
use super::error::{SignatureConfigError, SignatureError};
use super::freshness::Freshness;
use super::replay::ReplayCache;
use crate::event::Provider;

/// Tokens longer than this are refused: Mailgun's are 50 characters, and each accepted one is
/// kept in memory for the window.
pub const MAX_TOKEN_CHARS: usize = 256;

/// A verified request's token, to record once the request is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReplayToken {
    pub(super) token: String,
    pub(super) timestamp: i64,
}

/// The signing key, window and replay cache.
pub(super) struct MailgunVerifier {
    key: Vec<u8>,
    freshness: Freshness,
    replay: ReplayCache,
}

impl std::fmt::Debug for MailgunVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailgunVerifier")
            .field("freshness", &self.freshness)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl MailgunVerifier {
    pub(super) fn new(config: &MailgunConfig) -> Result<Self, SignatureConfigError> {
        let invalid = |field, detail: &str| SignatureConfigError::InvalidValue {
            provider: Provider::Mailgun,
            field,
            detail: detail.into(),
        };
        if config.signing_key.is_empty() {
            return Err(invalid("signing_key", "must not be empty"));
        }
        if config.replay_cache_capacity == 0 {
            return Err(invalid("replay_cache_capacity", "must be at least 1"));
        }
        let freshness = Freshness::new(config.max_age_secs);
        Ok(MailgunVerifier {
            key: config.signing_key.as_bytes().to_vec(),
            replay: ReplayCache::new(config.replay_cache_capacity, freshness.max_age_secs()),
            freshness,
        })
    }

    pub(super) fn verify(&self, body: &[u8], now_unix_secs: i64) -> Result<ReplayToken, SignatureError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| SignatureError::InvalidBody {
            detail: "not valid JSON",
        })?;
        let block = value
            .get("signature")
            .ok_or(SignatureError::MissingField { field: "signature" })?;
        // Mailgun sends the timestamp as a string; a number is read as its text, which is what
        // was signed.
        let timestamp_text = match block.get("timestamp") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(number)) => number.to_string(),
            Some(_) => {
                return Err(SignatureError::InvalidBody {
                    detail: "signature.timestamp is not a string",
                })
            }
            None => {
                return Err(SignatureError::MissingField {
                    field: "signature.timestamp",
                })
            }
        };
        let token = text_field(block, "token", "signature.token")?;
        let signature = text_field(block, "signature", "signature.signature")?;
        let timestamp: i64 = timestamp_text.parse().map_err(|_| SignatureError::InvalidBody {
            detail: "signature.timestamp is not a Unix timestamp",
        })?;
        if token.is_empty() || token.chars().count() > MAX_TOKEN_CHARS {
            return Err(SignatureError::InvalidBody {
                detail: "signature.token is empty or too long",
            });
        }
        self.freshness.check(timestamp, now_unix_secs)?;
        let mac_bytes = hex::decode(signature).map_err(|_| SignatureError::MalformedSignature {
            field: "signature.signature",
            detail: "not hex",
        })?;
        let mut mac = self.mac();
        mac.update(timestamp_text.as_bytes());
        mac.update(token.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&mac_bytes)
            .map_err(|_| SignatureError::SignatureMismatch {
                provider: Provider::Mailgun,
            })?;
        // Only an authentic request learns whether its token was used.
        if self.replay.contains(token) {
            return Err(SignatureError::TokenReplayed);
        }
        Ok(ReplayToken {
            token: token.to_owned(),
            timestamp,
        })
    }

    pub(super) fn mark_accepted(&self, token: &ReplayToken, now_unix_secs: i64) {
        self.replay.record(&token.token, token.timestamp, now_unix_secs);
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length")
    }
}

fn text_field<'v>(block: &'v Value, key: &str, field: &'static str) -> Result<&'v str, SignatureError> {
    match block.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(SignatureError::InvalidBody {
            detail: "a signature field is not a string",
        }),
        None => Err(SignatureError::MissingField { field }),
    }
}

/// Hex HMAC-SHA256 of `timestamp ++ token` with `key` (the signing side).
pub(crate) fn mac_hex(key: &str, timestamp: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
