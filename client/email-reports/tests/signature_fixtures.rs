//! The signature verifier against the shared fixtures' vectors: SendGrid's official ECDSA
//! vector (and its negative cases), the COMPUTED Mailgun and Mandrill signatures, and the SNS
//! envelope samples, whose signatures are placeholders (no AWS certificate is trusted here).

mod common;

use std::fs;

use common::fixtures_dir;
use email_reports::signature::{
    MailgunConfig, MandrillConfig, SendgridConfig, SnsConfig, MANDRILL_SIGNATURE_HEADER, SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
};
use email_reports::{parse, CarrierKeys, Provider, SignatureConfig, SignatureError, Verifier};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

fn sample(name: &str) -> Value {
    let path = fixtures_dir().join("samples").join(name);
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} missing"))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

fn sendgrid_verifier(public_key: &str) -> Verifier {
    Verifier::new(&SignatureConfig {
        sendgrid: Some(SendgridConfig {
            public_key: public_key.into(),
            max_age_secs: 600,
        }),
        ..SignatureConfig::default()
    })
    .unwrap()
}

fn mailgun_verifier(key: &str) -> Verifier {
    Verifier::new(&SignatureConfig {
        mailgun: Some(MailgunConfig {
            signing_key: key.into(),
            max_age_secs: 600,
            replay_cache_capacity: 100,
        }),
        ..SignatureConfig::default()
    })
    .unwrap()
}

#[test]
fn sendgrid_official_vector_verifies_over_the_raw_bytes() {
    let vector = sample("sendgrid_signed_webhook_test_vector.json");
    let verifier = sendgrid_verifier(text(&vector, "public_key_base64_der_spki"));
    let signature = text(&vector["headers"], SENDGRID_SIGNATURE_HEADER);
    let timestamp = text(&vector["headers"], SENDGRID_TIMESTAMP_HEADER);
    let now: i64 = timestamp.parse::<i64>().unwrap() + 5;
    let body = text(&vector, "raw_body").as_bytes();
    assert!(body.ends_with(b"\r\n"));
    let request = headers(&[
        (SENDGRID_SIGNATURE_HEADER, signature),
        (SENDGRID_TIMESTAMP_HEADER, timestamp),
    ]);

    let verified = verifier.verify(Provider::SendGrid, &request, body, now).unwrap();
    assert_eq!(verified.provider(), Provider::SendGrid);
    // Verified bytes are then parsed (the vector is a `dropped` event).
    assert_eq!(
        parse(Provider::SendGrid, body, &CarrierKeys::default())
            .unwrap()
            .events()
            .count(),
        1
    );

    for case in vector["negative_cases"].as_array().unwrap() {
        let what = text(case, "what");
        let key = case["public_key_base64_der_spki"]
            .as_str()
            .unwrap_or(text(&vector, "public_key_base64_der_spki"));
        let signature = case[SENDGRID_SIGNATURE_HEADER].as_str().unwrap_or(signature);
        let timestamp = case[SENDGRID_TIMESTAMP_HEADER].as_str().unwrap_or(timestamp);
        let body = case["raw_body"].as_str().map(str::as_bytes).unwrap_or(body);
        let request = headers(&[
            (SENDGRID_SIGNATURE_HEADER, signature),
            (SENDGRID_TIMESTAMP_HEADER, timestamp),
        ]);
        let error = sendgrid_verifier(key)
            .verify(Provider::SendGrid, &request, body, now)
            .unwrap_err();
        let expected = match what {
            "timestamp header altered" => SignatureError::InvalidHeader {
                header: SENDGRID_TIMESTAMP_HEADER,
                detail: "not a Unix timestamp",
            },
            _ => SignatureError::SignatureMismatch {
                provider: Provider::SendGrid,
            },
        };
        assert_eq!(error, expected, "{what}");
    }

    let second = &vector["second_vector_sendgrid_nodejs"];
    let timestamp = text(second, "timestamp");
    let request = headers(&[
        (SENDGRID_SIGNATURE_HEADER, text(second, "signature")),
        (SENDGRID_TIMESTAMP_HEADER, timestamp),
    ]);
    let now: i64 = timestamp.parse().unwrap();
    let _verified = sendgrid_verifier(text(second, "public_key_base64_der_spki"))
        .verify(Provider::SendGrid, &request, text(second, "raw_body").as_bytes(), now)
        .unwrap();
}

#[test]
fn sendgrid_vector_outside_the_window_is_refused() {
    let vector = sample("sendgrid_signed_webhook_test_vector.json");
    let verifier = sendgrid_verifier(text(&vector, "public_key_base64_der_spki"));
    let timestamp = text(&vector["headers"], SENDGRID_TIMESTAMP_HEADER);
    let request = headers(&[
        (
            SENDGRID_SIGNATURE_HEADER,
            text(&vector["headers"], SENDGRID_SIGNATURE_HEADER),
        ),
        (SENDGRID_TIMESTAMP_HEADER, timestamp),
    ]);
    let signed_at: i64 = timestamp.parse().unwrap();
    let body = text(&vector, "raw_body").as_bytes();
    let stale = verifier
        .verify(Provider::SendGrid, &request, body, signed_at + 601)
        .unwrap_err();
    assert!(
        matches!(stale, SignatureError::TimestampOutsideWindow { age_secs: 601, .. }),
        "{stale}"
    );
    let future = verifier
        .verify(Provider::SendGrid, &request, body, signed_at - 61)
        .unwrap_err();
    assert!(
        matches!(future, SignatureError::TimestampOutsideWindow { age_secs: -61, .. }),
        "{future}"
    );
    assert_eq!(
        verifier
            .verify(Provider::SendGrid, &HeaderMap::new(), body, signed_at)
            .unwrap_err(),
        SignatureError::MissingHeader {
            header: SENDGRID_TIMESTAMP_HEADER
        }
    );
}

#[test]
fn mailgun_signed_fixture_verifies_and_its_token_is_consumed_only_by_acceptance() {
    let fixture = sample("mailgun_opened_user_variables_SIGNED.json");
    let body = serde_json::to_vec(&fixture).unwrap();
    let now: i64 = text(&fixture["signature"], "timestamp").parse::<i64>().unwrap() + 30;
    let verifier = mailgun_verifier("TEST_WEBHOOK_SIGNING_KEY");

    // A verified request that was answered 503 is retried with the same token: still accepted.
    let first = verifier
        .verify(Provider::Mailgun, &HeaderMap::new(), &body, now)
        .unwrap();
    let retry = verifier
        .verify(Provider::Mailgun, &HeaderMap::new(), &body, now + 5)
        .unwrap();
    assert_eq!(retry.replay_token(), Some("1234567890abcdef1234567890abcdef"));
    verifier.mark_accepted(&retry, now + 5);
    assert_eq!(
        verifier
            .verify(Provider::Mailgun, &HeaderMap::new(), &body, now + 6)
            .unwrap_err(),
        SignatureError::TokenReplayed
    );
    // Marking twice is harmless.
    verifier.mark_accepted(&first, now + 6);

    assert!(matches!(
        verifier.verify(Provider::Mailgun, &HeaderMap::new(), &body, now + 601),
        Err(SignatureError::TimestampOutsideWindow { .. })
    ));
    assert_eq!(
        mailgun_verifier("another key")
            .verify(Provider::Mailgun, &HeaderMap::new(), &body, now)
            .unwrap_err(),
        SignatureError::SignatureMismatch {
            provider: Provider::Mailgun
        }
    );
}

#[test]
fn mailgun_computed_vector_and_its_negative_cases() {
    let vector = sample("mailgun_signature_test_vector_COMPUTED.json");
    let block = vector["signature"].clone();
    let now: i64 = text(&block, "timestamp").parse().unwrap();
    let body = |block: &Value| serde_json::to_vec(&json!({"signature": block, "event-data": {}})).unwrap();
    let key = text(&vector, "webhook_signing_key");
    let _verified = mailgun_verifier(key)
        .verify(Provider::Mailgun, &HeaderMap::new(), &body(&block), now)
        .unwrap();

    for case in vector["negative_cases"].as_array().unwrap() {
        let mut block = block.clone();
        if let Some(signature) = case.get("signature") {
            block["signature"] = signature.clone();
        }
        let key = case["webhook_signing_key"].as_str().unwrap_or(key);
        assert_eq!(
            mailgun_verifier(key)
                .verify(Provider::Mailgun, &HeaderMap::new(), &body(&block), now)
                .unwrap_err(),
            SignatureError::SignatureMismatch {
                provider: Provider::Mailgun
            },
            "{}",
            text(case, "what")
        );
    }

    let mut tampered = block.clone();
    tampered["token"] = json!("e0b5477167110d68991efc6b9f89f0a11066af27834600e124");
    assert!(mailgun_verifier(key)
        .verify(Provider::Mailgun, &HeaderMap::new(), &body(&tampered), now)
        .is_err());
    let no_block = serde_json::to_vec(&json!({"event-data": {}})).unwrap();
    assert_eq!(
        mailgun_verifier(key)
            .verify(Provider::Mailgun, &HeaderMap::new(), &no_block, now)
            .unwrap_err(),
        SignatureError::MissingField { field: "signature" }
    );
    let mut not_hex = block.clone();
    not_hex["signature"] = json!("zz");
    assert!(matches!(
        mailgun_verifier(key).verify(Provider::Mailgun, &HeaderMap::new(), &body(&not_hex), now),
        Err(SignatureError::MalformedSignature { detail: "not hex", .. })
    ));
}

#[test]
fn mandrill_computed_fixture_verifies_and_tampering_does_not() {
    let fixture = sample("mandrill_click_signed_form_COMPUTED.json");
    let verifier = Verifier::new(&SignatureConfig {
        mandrill: Some(MandrillConfig {
            webhook_key: text(&fixture, "webhook_key").into(),
            url: text(&fixture, "webhook_url_as_configured").into(),
        }),
        ..SignatureConfig::default()
    })
    .unwrap();
    let body = text(&fixture, "raw_body").as_bytes();
    let signed = headers(&[(
        MANDRILL_SIGNATURE_HEADER,
        text(&fixture["headers"], MANDRILL_SIGNATURE_HEADER),
    )]);
    let _verified = verifier.verify(Provider::Mandrill, &signed, body, 0).unwrap();
    assert_eq!(
        parse(Provider::Mandrill, body, &CarrierKeys::default())
            .unwrap()
            .events()
            .count(),
        1
    );

    let tampered = String::from_utf8(body.to_vec()).unwrap().replace("click", "clack");
    assert_eq!(
        verifier
            .verify(Provider::Mandrill, &signed, tampered.as_bytes(), 0)
            .unwrap_err(),
        SignatureError::SignatureMismatch {
            provider: Provider::Mandrill
        }
    );
    // The URL is part of the signed text: the same key at another URL does not verify.
    let elsewhere = Verifier::new(&SignatureConfig {
        mandrill: Some(MandrillConfig {
            webhook_key: text(&fixture, "webhook_key").into(),
            url: "https://example.com/webhooks/mandrill/".into(),
        }),
        ..SignatureConfig::default()
    })
    .unwrap();
    assert!(elsewhere.verify(Provider::Mandrill, &signed, body, 0).is_err());
    assert_eq!(
        verifier
            .verify(Provider::Mandrill, &HeaderMap::new(), body, 0)
            .unwrap_err(),
        SignatureError::MissingHeader {
            header: MANDRILL_SIGNATURE_HEADER
        }
    );
}

#[test]
fn sns_samples_name_certificates_nobody_trusts() {
    // The docs' envelopes carry placeholder signatures and name AWS's us-west-2 certificate,
    // which is not in this (empty) trust store: refused before any RSA work.
    let verifier = Verifier::new(&SignatureConfig {
        ses: Some(SnsConfig::default()),
        ..SignatureConfig::default()
    })
    .unwrap();
    for name in [
        "ses_sns_envelope_bounce_ASSEMBLED.json",
        "ses_sns_subscription_confirmation.json",
    ] {
        let body = fs::read(fixtures_dir().join("samples").join(name)).unwrap();
        let error = verifier
            .verify(Provider::Ses, &HeaderMap::new(), &body, 1_700_000_000)
            .unwrap_err();
        assert!(
            matches!(error, SignatureError::CertificateNotTrusted { .. }),
            "{name}: {error}"
        );
    }
    // A bare SES event (raw delivery shape) without the raw-delivery header is not an envelope.
    let raw = fs::read(fixtures_dir().join("samples/ses_event_delivery.json")).unwrap();
    assert_eq!(
        verifier
            .verify(Provider::Ses, &HeaderMap::new(), &raw, 1_700_000_000)
            .unwrap_err(),
        SignatureError::MissingField {
            field: "SignatureVersion"
        }
    );
}
