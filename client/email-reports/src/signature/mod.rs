//! # Signature: is this webhook request really from the provider?
//!
//! **One job:** decide, from a request's headers and raw body bytes, whether a webhook was
//! sent by the provider it claims — before the body is parsed ([`crate::parse`]) or anything
//! is produced. The HTTP layer answers 401 with the [`SignatureError`]'s text when not.
//!
//! **Owns:** each provider's authenticity scheme (one file each: `sendgrid.rs` ECDSA P-256,
//! `mailgun.rs` HMAC-SHA256 in the body, `sns.rs` + `sns_certificate.rs` SNS RSA signatures
//! and the certificate trust store, `basic_auth.rs` Postmark and SparkPost credentials,
//! `mandrill.rs` HMAC-SHA1 over URL and form), the timestamp windows (`freshness.rs`), the
//! Mailgun replay cache (`replay.rs`), and the config ([`SignatureConfig`]) with its parsed form
//! ([`Verifier`]).
//!
//! **Invariants:**
//! - Pure per request: no IO, no clock (`now_unix_secs` is passed in), no randomness. The only
//!   IO is [`Verifier::new`] reading configured certificate files, once, at start-up.
//! - Every key and certificate is parsed by [`Verifier::new`]; a bad one is a start-up error,
//!   never a per-request surprise.
//! - Fail closed: a provider without config is refused unless `allow_unsigned` (local
//!   development only), and so is an SNS raw delivery, which carries no signature.
//! - MACs and credentials are compared in constant time; error texts never carry secrets.
//! - **A Mailgun token is consumed by acceptance, not by verification**: [`Verifier::verify`]
//!   returns a [`Verified`] carrying the token, and the HTTP layer calls
//!   [`Verifier::mark_accepted`] only after the write it answers 2xx for. A request answered
//!   503 (cluster unavailable) is retried by Mailgun with the same body and token; it must not
//!   then be refused as a replay, or the event is lost. Calling `mark_accepted` for the other
//!   providers is harmless (nothing to record), so the HTTP layer calls it for every accepted
//!   request.
//!
//! **Must not depend on:** the broker, the producer, tokio, or the parsers ([`crate::providers`]):
//! verification reads only what the signature covers.
//!
//! The signing side — for the load generator and tests — is [`crate::signing`].

mod basic_auth;
mod config;
mod error;
mod freshness;
mod mailgun;
mod mandrill;
mod replay;
mod sendgrid;
pub(crate) mod sns;
mod sns_certificate;

use http::HeaderMap;

pub(crate) use basic_auth::authorization_value;
pub use config::{
    BasicAuthConfig, CertificateSource, MailgunConfig, MandrillConfig, SendgridConfig, SignatureConfig, SnsConfig,
    DEFAULT_MAX_AGE_SECS, DEFAULT_REPLAY_CACHE_CAPACITY,
};
pub use error::{SignatureConfigError, SignatureError, MAX_ECHOED_CHARS};
pub use freshness::MAX_FUTURE_SKEW_SECS;
pub(crate) use mailgun::mac_hex as mailgun_mac_hex;
pub use mailgun::MAX_TOKEN_CHARS as MAILGUN_MAX_TOKEN_CHARS;
pub(crate) use mandrill::signature_base64 as mandrill_signature_base64;
pub use mandrill::SIGNATURE_HEADER as MANDRILL_SIGNATURE_HEADER;
pub use sendgrid::{SIGNATURE_HEADER as SENDGRID_SIGNATURE_HEADER, TIMESTAMP_HEADER as SENDGRID_TIMESTAMP_HEADER};
pub use sns::RAW_DELIVERY_HEADER as SNS_RAW_DELIVERY_HEADER;

use crate::event::Provider;
use basic_auth::BasicAuthVerifier;
use mailgun::{MailgunVerifier, ReplayToken};
use mandrill::MandrillVerifier;
use sendgrid::SendgridVerifier;
use sns::SnsVerifier;

/// Every configured provider's parsed keys, built once at start-up and shared (`&self`, `Sync`)
/// by all request handlers. The only mutable state is the Mailgun replay cache, behind a mutex
/// held for a hash lookup or insert.
pub struct Verifier {
    sendgrid: Option<SendgridVerifier>,
    mailgun: Option<MailgunVerifier>,
    ses: Option<SnsVerifier>,
    postmark: Option<BasicAuthVerifier>,
    sparkpost: Option<BasicAuthVerifier>,
    mandrill: Option<MandrillVerifier>,
    allow_unsigned: bool,
}

/// A request [`Verifier::verify`] accepted as authentic. Hand it back to
/// [`Verifier::mark_accepted`] once the request's events are written (the 2xx answer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "call Verifier::mark_accepted with it once the request is accepted"]
pub struct Verified {
    provider: Provider,
    authenticity: Authenticity,
    replay_token: Option<ReplayToken>,
}

/// How a [`Verified`] request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticity {
    /// Its signature or credentials were checked.
    Checked,
    /// Let through unchecked by `allow_unsigned` (no config for the provider, or SNS raw
    /// delivery). Worth a log line or a metric label.
    Unchecked,
}

impl Verified {
    /// The provider the request was verified for.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Whether a signature was checked or `allow_unsigned` let the request through.
    pub fn authenticity(&self) -> Authenticity {
        self.authenticity
    }

    /// The Mailgun token that [`Verifier::mark_accepted`] will record (`None` for the others).
    pub fn replay_token(&self) -> Option<&str> {
        self.replay_token.as_ref().map(|token| token.token.as_str())
    }
}

impl Verifier {
    /// Parses every configured key and certificate (reading certificate files named by
    /// [`CertificateSource::Path`]). Any unusable value is an error naming its config key.
    pub fn new(config: &SignatureConfig) -> Result<Verifier, SignatureConfigError> {
        Ok(Verifier {
            sendgrid: config.sendgrid.as_ref().map(SendgridVerifier::new).transpose()?,
            mailgun: config.mailgun.as_ref().map(MailgunVerifier::new).transpose()?,
            ses: config.ses.as_ref().map(SnsVerifier::new).transpose()?,
            postmark: config
                .postmark
                .as_ref()
                .map(|basic| BasicAuthVerifier::new(Provider::Postmark, basic))
                .transpose()?,
            sparkpost: config
                .sparkpost
                .as_ref()
                .map(|basic| BasicAuthVerifier::new(Provider::SparkPost, basic))
                .transpose()?,
            mandrill: config.mandrill.as_ref().map(MandrillVerifier::new).transpose()?,
            allow_unsigned: config.allow_unsigned,
        })
    }

    /// Verifies the raw request of `provider` before its body is parsed. `headers` are the
    /// HTTP request headers, `body` the bytes exactly as received, `now_unix_secs` the
    /// receiver's clock (for the SendGrid and Mailgun windows and certificate validity).
    ///
    /// Does not consume a Mailgun token: call [`Verifier::mark_accepted`] after the write.
    pub fn verify(
        &self,
        provider: Provider,
        headers: &HeaderMap,
        body: &[u8],
        now_unix_secs: i64,
    ) -> Result<Verified, SignatureError> {
        let checked = |replay_token| Verified {
            provider,
            authenticity: Authenticity::Checked,
            replay_token,
        };
        if provider == Provider::Ses && is_raw_delivery(headers) {
            return self.unconfigured(provider, SignatureError::UnsignedRawDelivery);
        }
        let not_configured = SignatureError::ProviderNotConfigured { provider };
        match provider {
            Provider::SendGrid => match &self.sendgrid {
                Some(verifier) => verifier.verify(headers, body, now_unix_secs).map(|()| checked(None)),
                None => self.unconfigured(provider, not_configured),
            },
            Provider::Mailgun => match &self.mailgun {
                Some(verifier) => verifier.verify(body, now_unix_secs).map(|token| checked(Some(token))),
                None => self.unconfigured(provider, not_configured),
            },
            Provider::Ses => match &self.ses {
                Some(verifier) => verifier.verify(body, now_unix_secs).map(|()| checked(None)),
                None => self.unconfigured(provider, not_configured),
            },
            Provider::Postmark => match &self.postmark {
                Some(verifier) => verifier.verify(headers).map(|()| checked(None)),
                None => self.unconfigured(provider, not_configured),
            },
            Provider::SparkPost => match &self.sparkpost {
                Some(verifier) => verifier.verify(headers).map(|()| checked(None)),
                None => self.unconfigured(provider, not_configured),
            },
            Provider::Mandrill => match &self.mandrill {
                Some(verifier) => verifier.verify(headers, body).map(|()| checked(None)),
                None => self.unconfigured(provider, not_configured),
            },
        }
    }

    /// Records that a verified request was accepted (its events written, the answer 2xx): from
    /// now on its Mailgun token is refused as replayed. Call it for every accepted request;
    /// it does nothing for providers without tokens. Idempotent.
    pub fn mark_accepted(&self, verified: &Verified, now_unix_secs: i64) {
        if let (Some(token), Some(mailgun)) = (&verified.replay_token, &self.mailgun) {
            mailgun.mark_accepted(token, now_unix_secs);
        }
    }

    /// The providers that have verification material, in [`Provider::ALL`] order.
    pub fn configured_providers(&self) -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|provider| match provider {
                Provider::SendGrid => self.sendgrid.is_some(),
                Provider::Mailgun => self.mailgun.is_some(),
                Provider::Ses => self.ses.is_some(),
                Provider::Postmark => self.postmark.is_some(),
                Provider::SparkPost => self.sparkpost.is_some(),
                Provider::Mandrill => self.mandrill.is_some(),
            })
            .collect()
    }

    /// A request that cannot be checked: let through only when `allow_unsigned`.
    fn unconfigured(&self, provider: Provider, refusal: SignatureError) -> Result<Verified, SignatureError> {
        if self.allow_unsigned {
            Ok(Verified {
                provider,
                authenticity: Authenticity::Unchecked,
                replay_token: None,
            })
        } else {
            Err(refusal)
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("configured", &self.configured_providers())
            .field("allow_unsigned", &self.allow_unsigned)
            .finish_non_exhaustive()
    }
}

fn is_raw_delivery(headers: &HeaderMap) -> bool {
    headers
        .get(SNS_RAW_DELIVERY_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// A header's value as text; absent or non-visible-ASCII is an error naming the header.
fn header_text<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, SignatureError> {
    headers
        .get(name)
        .ok_or(SignatureError::MissingHeader { header: name })?
        .to_str()
        .map_err(|_| SignatureError::InvalidHeader {
            header: name,
            detail: "not visible ASCII",
        })
}
