//! Mailchimp Transactional (Mandrill): [`SIGNATURE_HEADER`] is base64 of HMAC-SHA1 with the
//! webhook key over the webhook URL exactly as configured at Mandrill, followed by every POST
//! field sorted by name, each as `name ++ value` (decoded values, no separators).
//!
//! The body is `application/x-www-form-urlencoded` (one field, `mandrill_events`). The signed
//! text has no timestamp: a replay repeats authentic events, which their synthesised dedup ids
//! absorb.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha1::Sha1;

use super::config::MandrillConfig;
use super::error::{SignatureConfigError, SignatureError};
use super::header_text;
use crate::event::Provider;

/// The header carrying base64(HMAC-SHA1).
pub const SIGNATURE_HEADER: &str = "X-Mandrill-Signature";

/// The webhook key and URL.
pub(super) struct MandrillVerifier {
    key: Vec<u8>,
    url: String,
}

impl std::fmt::Debug for MandrillVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MandrillVerifier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl MandrillVerifier {
    pub(super) fn new(config: &MandrillConfig) -> Result<Self, SignatureConfigError> {
        let invalid = |field, detail: &str| SignatureConfigError::InvalidValue {
            provider: Provider::Mandrill,
            field,
            detail: detail.into(),
        };
        if config.webhook_key.is_empty() {
            return Err(invalid("webhook_key", "must not be empty"));
        }
        if !(config.url.starts_with("https://") || config.url.starts_with("http://")) {
            return Err(invalid(
                "url",
                "must be the absolute http(s) URL configured at Mandrill",
            ));
        }
        Ok(MandrillVerifier {
            key: config.webhook_key.as_bytes().to_vec(),
            url: config.url.clone(),
        })
    }

    pub(super) fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        let encoded = header_text(headers, SIGNATURE_HEADER)?;
        let signature = BASE64
            .decode(encoded.trim())
            .map_err(|_| SignatureError::MalformedSignature {
                field: SIGNATURE_HEADER,
                detail: "not base64",
            })?;
        signed_mac(&self.key, &self.url, body)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::SignatureMismatch {
                provider: Provider::Mandrill,
            })
    }
}

/// The HMAC over `url ++ Σ sorted(name ++ value)` of a form body, ready to finalise or verify.
fn signed_mac(key: &[u8], url: &str, form_body: &[u8]) -> Hmac<Sha1> {
    let mut fields: Vec<_> = form_urlencoded::parse(form_body).collect();
    // Stable: repeated names keep their body order, as PHP's ksort of Mandrill's reference does
    // for its (single-valued) fields.
    fields.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in &fields {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// base64(HMAC-SHA1) of a form body (the signing side).
pub(crate) fn signature_base64(key: &str, url: &str, form_body: &[u8]) -> String {
    BASE64.encode(signed_mac(key.as_bytes(), url, form_body).finalize().into_bytes())
}
