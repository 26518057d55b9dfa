//! HTTP Basic credentials (Postmark, SparkPost): neither signs its webhooks; the credentials put
//! in the webhook URL (`https://user:pass@host/…`) arrive as `Authorization: Basic …`.
//!
//! The comparison is constant-time over SHA-256 digests of `user:password`, so neither the
//! position of the first wrong byte nor the configured length shows in the response time.
//! Credentials do not expire and carry no timestamp: use TLS, and rotate them like any password.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::BasicAuthConfig;
use super::error::{SignatureConfigError, SignatureError};
use super::header_text;
use crate::event::Provider;

/// The digest of the expected `user:password`.
pub(super) struct BasicAuthVerifier {
    expected: [u8; 32],
}

impl std::fmt::Debug for BasicAuthVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuthVerifier")
    }
}

impl BasicAuthVerifier {
    pub(super) fn new(provider: Provider, config: &BasicAuthConfig) -> Result<Self, SignatureConfigError> {
        if config.username.contains(':') {
            return Err(SignatureConfigError::InvalidValue {
                provider,
                field: "username",
                detail: "must not contain ':' (RFC 7617)".into(),
            });
        }
        if config.password.is_empty() {
            return Err(SignatureConfigError::InvalidValue {
                provider,
                field: "password",
                detail: "must not be empty".into(),
            });
        }
        Ok(BasicAuthVerifier {
            expected: digest(format!("{}:{}", config.username, config.password).as_bytes()),
        })
    }

    pub(super) fn verify(&self, headers: &HeaderMap) -> Result<(), SignatureError> {
        const HEADER: &str = "Authorization";
        let value = header_text(headers, HEADER)?;
        let (scheme, encoded) = value.trim().split_once(' ').ok_or(SignatureError::InvalidHeader {
            header: HEADER,
            detail: "expected \"Basic <credentials>\"",
        })?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(SignatureError::InvalidHeader {
                header: HEADER,
                detail: "not the Basic scheme",
            });
        }
        let credentials = BASE64
            .decode(encoded.trim())
            .map_err(|_| SignatureError::InvalidHeader {
                header: HEADER,
                detail: "credentials not base64",
            })?;
        if bool::from(digest(&credentials).ct_eq(&self.expected)) {
            Ok(())
        } else {
            Err(SignatureError::BadCredentials)
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `Basic base64(user:password)`, the `Authorization` value for `config`.
pub(crate) fn authorization_value(config: &BasicAuthConfig) -> String {
    format!(
        "Basic {}",
        BASE64.encode(format!("{}:{}", config.username, config.password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;
    use http::HeaderValue;

    fn config() -> BasicAuthConfig {
        BasicAuthConfig {
            username: "hooks".into(),
            password: "correct horse".into(),
        }
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn accepts_the_configured_credentials_only() {
        let verifier = BasicAuthVerifier::new(Provider::Postmark, &config()).unwrap();
        assert_eq!(
            verifier.verify(&with_authorization(&authorization_value(&config()))),
            Ok(())
        );
        // The scheme is case-insensitive (RFC 7235).
        let lower = authorization_value(&config()).replacen("Basic", "basic", 1);
        assert_eq!(verifier.verify(&with_authorization(&lower)), Ok(()));

        let wrong = BasicAuthConfig {
            password: "wrong".into(),
            ..config()
        };
        assert_eq!(
            verifier.verify(&with_authorization(&authorization_value(&wrong))),
            Err(SignatureError::BadCredentials)
        );
        assert_eq!(
            verifier.verify(&HeaderMap::new()),
            Err(SignatureError::MissingHeader {
                header: "Authorization"
            })
        );
        assert!(matches!(
            verifier.verify(&with_authorization("Bearer abc")),
            Err(SignatureError::InvalidHeader {
                detail: "not the Basic scheme",
                ..
            })
        ));
        assert!(matches!(
            verifier.verify(&with_authorization("Basic %%%")),
            Err(SignatureError::InvalidHeader {
                detail: "credentials not base64",
                ..
            })
        ));
    }

    #[test]
    fn refuses_unusable_credentials_at_start_up() {
        let colon = BasicAuthConfig {
            username: "a:b".into(),
            ..config()
        };
        assert!(BasicAuthVerifier::new(Provider::SparkPost, &colon).is_err());
        let empty = BasicAuthConfig {
            password: String::new(),
            ..config()
        };
        assert!(BasicAuthVerifier::new(Provider::SparkPost, &empty).is_err());
    }
}
