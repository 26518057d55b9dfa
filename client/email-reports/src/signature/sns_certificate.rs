//! The SNS trust store: which `SigningCertURL`s are accepted and the RSA keys of their
//! certificates.
//!
//! A message names the certificate that verifies it, so a URL is only worth anything if we
//! decide what it points to. Two rules, both required:
//! 1. the URL has the shape of an SNS certificate URL — `https://sns.<region>.amazonaws.com`
//!    (or `.amazonaws.com.cn`) exactly, no userinfo, no port, a plain path ending in `.pem`, no
//!    query or fragment ([`check_url`]; written by hand rather than with a general URL parser
//!    so that no normalisation — case, percent-decoding, `..` — can make two texts equal);
//! 2. the exact URL text is a key of the configured trust store. Certificates are never fetched
//!    (no IO at request time, and no dependence on DNS or on our egress to trust a message).

use std::collections::HashMap;

use rsa::pkcs8::DecodePublicKey;
use rsa::RsaPublicKey;
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

use super::config::{CertificateSource, SnsConfig};
use super::error::{SignatureConfigError, SignatureError};

/// A trusted certificate's key and validity (Unix seconds, inclusive).
#[derive(Debug, Clone)]
pub(super) struct TrustedCertificate {
    pub(super) key: RsaPublicKey,
    not_before: i64,
    not_after: i64,
}

/// `SigningCertURL` → certificate.
#[derive(Debug, Default)]
pub(super) struct TrustStore {
    certificates: HashMap<String, TrustedCertificate>,
}

impl TrustStore {
    /// Reads and parses every configured certificate (the only IO of the signature module,
    /// once, at start-up).
    pub(super) fn load(config: &SnsConfig) -> Result<Self, SignatureConfigError> {
        let mut certificates = HashMap::new();
        for (url, source) in &config.certificates {
            let failed = |detail: String| SignatureConfigError::Certificate {
                url: url.clone(),
                detail,
            };
            check_url(url).map_err(|reason| failed(format!("not an SNS certificate URL: {reason}")))?;
            let pem = match source {
                CertificateSource::Pem(text) => text.clone(),
                CertificateSource::Path(path) => std::fs::read_to_string(path)
                    .map_err(|error| failed(format!("cannot read {}: {error}", path.display())))?,
            };
            certificates.insert(url.clone(), parse_certificate(&pem).map_err(failed)?);
        }
        Ok(TrustStore { certificates })
    }

    /// The certificate for `url`, if the URL is well-formed, trusted and valid at `now`.
    pub(super) fn get(&self, url: &str, now_unix_secs: i64) -> Result<&TrustedCertificate, SignatureError> {
        check_url(url).map_err(|reason| SignatureError::certificate_url_not_allowed(url, reason))?;
        let certificate = self
            .certificates
            .get(url)
            .ok_or_else(|| SignatureError::certificate_not_trusted(url))?;
        if now_unix_secs < certificate.not_before || now_unix_secs > certificate.not_after {
            return Err(SignatureError::certificate_not_valid_now(url));
        }
        Ok(certificate)
    }
}

fn parse_certificate(pem: &str) -> Result<TrustedCertificate, String> {
    let certificate = Certificate::from_pem(pem.trim().as_bytes())
        .map_err(|error| format!("not a PEM X.509 certificate: {error}"))?;
    let tbs = &certificate.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|error| format!("unreadable public key: {error}"))?;
    let key = RsaPublicKey::from_public_key_der(&spki).map_err(|_| "not an RSA certificate".to_string())?;
    let seconds = |time: x509_cert::time::Time| i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    Ok(TrustedCertificate {
        key,
        not_before: seconds(tbs.validity.not_before),
        not_after: seconds(tbs.validity.not_after),
    })
}

/// Whether `url` has the shape of an SNS signing certificate URL; the reason if not.
pub(super) fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url.strip_prefix("https://").ok_or("scheme is not https")?;
    let (authority, path) = rest.split_at(rest.find('/').ok_or("no path")?);
    if authority.contains('@') {
        return Err("userinfo not allowed");
    }
    if authority.contains(':') {
        return Err("port not allowed");
    }
    let region = authority
        .strip_suffix(".amazonaws.com")
        .or_else(|| authority.strip_suffix(".amazonaws.com.cn"))
        .and_then(|host| host.strip_prefix("sns."))
        .ok_or("host is not sns.<region>.amazonaws.com")?;
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if !region_ok {
        return Err("host is not sns.<region>.amazonaws.com");
    }
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        && !path.contains("..")
        && !path.contains("//")
        && path.len() > "/.pem".len()
        && path.ends_with(".pem");
    if !path_ok {
        return Err("path is not a plain /….pem path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sns_certificate_urls() {
        for url in [
            "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn refuses_lookalikes() {
        let cases = [
            ("http://sns.us-east-1.amazonaws.com/a.pem", "scheme is not https"),
            ("HTTPS://sns.us-east-1.amazonaws.com/a.pem", "scheme is not https"),
            ("https://sns.us-east-1.amazonaws.com", "no path"),
            (
                "https://evil.com@sns.us-east-1.amazonaws.com/a.pem",
                "userinfo not allowed",
            ),
            (
                "https://sns.us-east-1.amazonaws.com@evil.com/a.pem",
                "userinfo not allowed",
            ),
            ("https://sns.us-east-1.amazonaws.com:8443/a.pem", "port not allowed"),
            (
                "https://sns.us-east-1.amazonaws.com.evil.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://evilsns.us-east-1.amazonaws.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://s3.us-east-1.amazonaws.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://sns.amazonaws.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://sns.evil.com/x.amazonaws.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://sns.US-EAST-1.amazonaws.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://sns.us.east.1.amazonaws.com/a.pem",
                "host is not sns.<region>.amazonaws.com",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/a.pem?x=1",
                "path is not a plain /….pem path",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/a.pem#x",
                "path is not a plain /….pem path",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/%2e%2e/a.pem",
                "path is not a plain /….pem path",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/../a.pem",
                "path is not a plain /….pem path",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/a.txt",
                "path is not a plain /….pem path",
            ),
            (
                "https://sns.us-east-1.amazonaws.com/.pem",
                "path is not a plain /….pem path",
            ),
        ];
        for (url, reason) in cases {
            assert_eq!(check_url(url), Err(reason), "{url}");
        }
    }

    #[test]
    fn a_bad_trust_store_entry_is_a_start_up_error() {
        let mut config = SnsConfig::default();
        config.certificates.insert(
            "https://sns.us-east-1.amazonaws.com/a.pem".into(),
            CertificateSource::Pem("not a certificate".into()),
        );
        let error = TrustStore::load(&config).unwrap_err().to_string();
        assert!(error.contains("not a PEM X.509 certificate"), "{error}");

        let mut config = SnsConfig::default();
        config.certificates.insert(
            "https://example.com/a.pem".into(),
            CertificateSource::Pem(String::new()),
        );
        let error = TrustStore::load(&config).unwrap_err().to_string();
        assert!(error.contains("not an SNS certificate URL"), "{error}");

        let mut config = SnsConfig::default();
        config.certificates.insert(
            "https://sns.us-east-1.amazonaws.com/a.pem".into(),
            CertificateSource::Path("/nonexistent/sns.pem".into()),
        );
        let error = TrustStore::load(&config).unwrap_err().to_string();
        assert!(error.contains("cannot read /nonexistent/sns.pem"), "{error}");
    }
}
