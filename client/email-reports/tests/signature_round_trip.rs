//! What [`DevSecrets`] signs, the [`Verifier`] built from [`DevSecrets::verifier_config`]
//! accepts — and every tampering, stale timestamp, replay, wrong credential, untrusted
//! certificate or foreign topic is refused with its own error.

use std::sync::OnceLock;

use email_reports::signature::{Authenticity, CertificateSource, SENDGRID_TIMESTAMP_HEADER, SNS_RAW_DELIVERY_HEADER};
use email_reports::signing::{mandrill_form_body, DEV_SNS_TOPIC_ARN};
use email_reports::{
    parse, CarrierKeys, DevSecrets, ParseOutcome, Provider, SignatureConfig, SignatureError, Verifier,
};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::json;

const NOW: i64 = 1_760_000_000;

/// One set of secrets per test binary: RSA key generation is the slow part.
fn secrets() -> &'static DevSecrets {
    static SECRETS: OnceLock<DevSecrets> = OnceLock::new();
    SECRETS.get_or_init(|| DevSecrets::generate(&mut ChaCha20Rng::seed_from_u64(7), NOW).unwrap())
}

fn verifier() -> Verifier {
    Verifier::new(&secrets().verifier_config()).unwrap()
}

fn ses_event() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/webhooks/samples/ses_event_delivery.json"
    ))
    .unwrap()
}

#[test]
fn sendgrid_round_trip_and_tampering() {
    let body = br#"[{"email":"a@example.com","event":"delivered","sg_event_id":"e1","sg_message_id":"m1","timestamp":1760000000}]"#;
    let headers = secrets().sign_sendgrid(body, NOW);
    let verified = verifier().verify(Provider::SendGrid, &headers, body, NOW + 1).unwrap();
    assert_eq!(verified.authenticity(), Authenticity::Checked);
    assert_eq!(verified.replay_token(), None);

    let mut tampered = body.to_vec();
    tampered[10] = b'b';
    assert_eq!(
        verifier()
            .verify(Provider::SendGrid, &headers, &tampered, NOW)
            .unwrap_err(),
        SignatureError::SignatureMismatch {
            provider: Provider::SendGrid
        }
    );
    // Moving the timestamp breaks the signature: it is signed.
    let mut moved = headers.clone();
    moved.insert(SENDGRID_TIMESTAMP_HEADER, HeaderValue::from(NOW + 1));
    assert_eq!(
        verifier().verify(Provider::SendGrid, &moved, body, NOW).unwrap_err(),
        SignatureError::SignatureMismatch {
            provider: Provider::SendGrid
        }
    );
    assert!(matches!(
        verifier().verify(Provider::SendGrid, &headers, body, NOW + 3600),
        Err(SignatureError::TimestampOutsideWindow {
            age_secs: 3600,
            max_age_secs: 600,
            ..
        })
    ));
}

#[test]
fn mailgun_round_trip_replay_after_acceptance() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let event = json!({"event": "delivered", "id": "ev1", "timestamp": 1760000000.5, "recipient": "a@example.com"});
    let body = secrets().sign_mailgun(&event, NOW, &mut rng);
    let verifier = verifier();
    let verified = verifier
        .verify(Provider::Mailgun, &HeaderMap::new(), &body, NOW)
        .unwrap();
    assert_eq!(verified.replay_token().map(str::len), Some(50));
    assert_eq!(
        parse(Provider::Mailgun, &body, &CarrierKeys::default())
            .unwrap()
            .events()
            .count(),
        1
    );

    verifier.mark_accepted(&verified, NOW);
    assert_eq!(
        verifier
            .verify(Provider::Mailgun, &HeaderMap::new(), &body, NOW + 1)
            .unwrap_err(),
        SignatureError::TokenReplayed
    );
    // A fresh signature (new token) for the same event is a new request.
    let again = secrets().sign_mailgun(&event, NOW, &mut rng);
    let _verified = verifier
        .verify(Provider::Mailgun, &HeaderMap::new(), &again, NOW + 1)
        .unwrap();

    // The signature block does not cover event-data, but a captured block is spent once used.
    let mut forged: serde_json::Value = serde_json::from_slice(&body).unwrap();
    forged["event-data"]["recipient"] = json!("someone-else@example.com");
    let forged = serde_json::to_vec(&forged).unwrap();
    assert_eq!(
        verifier
            .verify(Provider::Mailgun, &HeaderMap::new(), &forged, NOW + 2)
            .unwrap_err(),
        SignatureError::TokenReplayed
    );
}

#[test]
fn sns_notification_round_trip() {
    let message = ses_event();
    let body = secrets().sign_sns_notification(&message, DEV_SNS_TOPIC_ARN, "msg-1", NOW);
    let _verified = verifier()
        .verify(Provider::Ses, &HeaderMap::new(), &body, NOW + 5)
        .unwrap();
    // The envelope is what the SES parser reads.
    let outcome = parse(Provider::Ses, &body, &CarrierKeys::default()).unwrap();
    assert!(outcome.events().count() >= 1);

    let tampered = String::from_utf8(body.clone()).unwrap().replace("msg-1", "msg-2");
    assert_eq!(
        verifier()
            .verify(Provider::Ses, &HeaderMap::new(), tampered.as_bytes(), NOW)
            .unwrap_err(),
        SignatureError::SignatureMismatch {
            provider: Provider::Ses
        }
    );
}

#[test]
fn sns_subscription_confirmation_round_trip_and_topic_allow_list() {
    let url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok";
    let body = secrets().sign_sns_subscription_confirmation(DEV_SNS_TOPIC_ARN, "m", "tok", url, NOW);
    let _verified = verifier().verify(Provider::Ses, &HeaderMap::new(), &body, NOW).unwrap();
    assert!(matches!(
        parse(Provider::Ses, &body, &CarrierKeys::default()).unwrap(),
        ParseOutcome::SubscriptionConfirmation(_)
    ));

    let foreign = "arn:aws:sns:us-east-1:999999999999:someone-elses-topic";
    let body = secrets().sign_sns_subscription_confirmation(foreign, "m", "tok", url, NOW);
    assert_eq!(
        verifier()
            .verify(Provider::Ses, &HeaderMap::new(), &body, NOW)
            .unwrap_err()
            .to_string(),
        format!("topic not allowed: {foreign:?}")
    );
    let body = secrets().sign_sns_notification("{}", foreign, "m", NOW);
    assert!(matches!(
        verifier().verify(Provider::Ses, &HeaderMap::new(), &body, NOW),
        Err(SignatureError::TopicNotAllowed { .. })
    ));
    // An empty allow-list accepts any topic.
    let mut config = secrets().verifier_config();
    config.ses.as_mut().unwrap().allowed_topic_arns.clear();
    let _verified = Verifier::new(&config)
        .unwrap()
        .verify(Provider::Ses, &HeaderMap::new(), &body, NOW)
        .unwrap();
}

#[test]
fn sns_certificate_url_must_be_sns_and_trusted() {
    let body = secrets().sign_sns_notification(&ses_event(), DEV_SNS_TOPIC_ARN, "m", NOW);
    let with_url = |url: &str| {
        let mut envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
        envelope["SigningCertURL"] = json!(url);
        serde_json::to_vec(&envelope).unwrap()
    };
    let error = verifier()
        .verify(
            Provider::Ses,
            &HeaderMap::new(),
            &with_url("https://sns.us-east-1.amazonaws.com.evil.example/x.pem"),
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(error, SignatureError::CertificateUrlNotAllowed { .. }),
        "{error}"
    );
    let error = verifier()
        .verify(
            Provider::Ses,
            &HeaderMap::new(),
            &with_url("https://evil.example/SimpleNotificationService-dev.pem"),
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(error, SignatureError::CertificateUrlNotAllowed { .. }),
        "{error}"
    );
    let error = verifier()
        .verify(
            Provider::Ses,
            &HeaderMap::new(),
            &with_url("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-other.pem"),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(error, SignatureError::CertificateNotTrusted { .. }), "{error}");

    // The trusted certificate, past its validity.
    let error = verifier()
        .verify(Provider::Ses, &HeaderMap::new(), &body, NOW + 11 * 365 * 86_400)
        .unwrap_err();
    assert!(
        matches!(error, SignatureError::CertificateNotValidNow { .. }),
        "{error}"
    );

    // Another key's certificate under the trusted URL: the signature does not verify.
    let other = DevSecrets::generate(&mut ChaCha20Rng::seed_from_u64(99), NOW).unwrap();
    let mut config = secrets().verifier_config();
    config.ses.as_mut().unwrap().certificates.insert(
        secrets().sns_certificate_url().into(),
        CertificateSource::Pem(other.sns_certificate_pem().into()),
    );
    assert_eq!(
        Verifier::new(&config)
            .unwrap()
            .verify(Provider::Ses, &HeaderMap::new(), &body, NOW)
            .unwrap_err(),
        SignatureError::SignatureMismatch {
            provider: Provider::Ses
        }
    );
}

#[test]
fn sns_certificate_from_a_file() {
    let dir = std::env::temp_dir().join(format!("email-reports-sig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sns-dev.pem");
    std::fs::write(&path, secrets().sns_certificate_pem()).unwrap();
    let mut config = secrets().verifier_config();
    config
        .ses
        .as_mut()
        .unwrap()
        .certificates
        .insert(secrets().sns_certificate_url().into(), CertificateSource::Path(path));
    let body = secrets().sign_sns_notification("{}", DEV_SNS_TOPIC_ARN, "m", NOW);
    let _verified = Verifier::new(&config)
        .unwrap()
        .verify(Provider::Ses, &HeaderMap::new(), &body, NOW)
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sns_raw_delivery_is_refused_unless_unsigned_is_allowed() {
    let mut raw = HeaderMap::new();
    raw.insert(SNS_RAW_DELIVERY_HEADER, HeaderValue::from_static("true"));
    let body = ses_event();
    assert_eq!(
        verifier()
            .verify(Provider::Ses, &raw, body.as_bytes(), NOW)
            .unwrap_err(),
        SignatureError::UnsignedRawDelivery
    );
    let mut config = secrets().verifier_config();
    config.allow_unsigned = true;
    let verified = Verifier::new(&config)
        .unwrap()
        .verify(Provider::Ses, &raw, body.as_bytes(), NOW)
        .unwrap();
    assert_eq!(verified.authenticity(), Authenticity::Unchecked);
}

#[test]
fn basic_auth_round_trip_and_wrong_password() {
    let body = br#"{"RecordType":"Delivery"}"#;
    for provider in [Provider::Postmark, Provider::SparkPost] {
        let headers = secrets().basic_auth_headers(provider).unwrap();
        let _verified = verifier().verify(provider, &headers, body, NOW).unwrap();
        let mut wrong = headers.clone();
        wrong.insert(AUTHORIZATION, HeaderValue::from_static("Basic cG9zdG1hcms6d3Jvbmc=")); // postmark:wrong
        assert_eq!(
            verifier().verify(provider, &wrong, body, NOW).unwrap_err(),
            SignatureError::BadCredentials
        );
    }
    // Each provider has its own credentials.
    let postmark = secrets().basic_auth_headers(Provider::Postmark).unwrap();
    assert_eq!(
        verifier()
            .verify(Provider::SparkPost, &postmark, body, NOW)
            .unwrap_err(),
        SignatureError::BadCredentials
    );
    assert_eq!(secrets().basic_auth_header(Provider::SendGrid), None);
}

#[test]
fn mandrill_round_trip() {
    let secrets = secrets()
        .clone()
        .with_mandrill_url("https://hooks.example.com/webhooks/mandrill");
    let verifier = Verifier::new(&secrets.verifier_config()).unwrap();
    let body = mandrill_form_body(r#"[{"event":"open","ts":1760000000,"_id":"m1","msg":{"email":"a@example.com"}}]"#);
    let _verified = verifier
        .verify(Provider::Mandrill, &secrets.mandrill_headers(&body), &body, NOW)
        .unwrap();
    assert_eq!(
        parse(Provider::Mandrill, &body, &CarrierKeys::default())
            .unwrap()
            .events()
            .count(),
        1
    );
    // Signed for another URL: refused.
    assert!(Verifier::new(&self::secrets().verifier_config())
        .unwrap()
        .verify(Provider::Mandrill, &secrets.mandrill_headers(&body), &body, NOW)
        .is_err());
}

#[test]
fn unconfigured_providers_are_refused_unless_unsigned_is_allowed() {
    let empty = Verifier::new(&SignatureConfig::default()).unwrap();
    for provider in Provider::ALL {
        assert_eq!(
            empty
                .verify(provider, &HeaderMap::new(), b"{}", NOW)
                .unwrap_err()
                .to_string(),
            format!("provider {provider} not configured")
        );
    }
    let open = Verifier::new(&SignatureConfig {
        allow_unsigned: true,
        ..SignatureConfig::default()
    })
    .unwrap();
    let verified = open.verify(Provider::Postmark, &HeaderMap::new(), b"{}", NOW).unwrap();
    assert_eq!(verified.authenticity(), Authenticity::Unchecked);
    // allow_unsigned does not weaken a configured provider.
    let mut config = secrets().verifier_config();
    config.allow_unsigned = true;
    assert_eq!(
        Verifier::new(&config)
            .unwrap()
            .verify(Provider::Postmark, &HeaderMap::new(), b"{}", NOW)
            .unwrap_err(),
        SignatureError::MissingHeader {
            header: "Authorization"
        }
    );
    assert_eq!(
        Verifier::new(&config).unwrap().configured_providers(),
        Provider::ALL.to_vec()
    );
}

#[test]
fn dev_secrets_survive_a_file_round_trip() {
    let text = serde_json::to_string_pretty(secrets()).unwrap();
    let loaded: DevSecrets = serde_json::from_str(&text).unwrap();
    // What the loaded copy signs, the original's config verifies, and the configs agree.
    assert_eq!(loaded.verifier_config(), secrets().verifier_config());
    let body = b"[]";
    let _verified = verifier()
        .verify(Provider::SendGrid, &loaded.sign_sendgrid(body, NOW), body, NOW)
        .unwrap();
    let body = loaded.sign_sns_notification("{}", DEV_SNS_TOPIC_ARN, "m", NOW);
    let _verified = verifier().verify(Provider::Ses, &HeaderMap::new(), &body, NOW).unwrap();
    // The config itself is serde too (it is part of the service's config file).
    let config_text = serde_json::to_string(&secrets().verifier_config()).unwrap();
    let config: SignatureConfig = serde_json::from_str(&config_text).unwrap();
    Verifier::new(&config).unwrap();
    // The Debug form shows no secret.
    let debug = format!("{:?} {:?}", secrets(), secrets().verifier_config());
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn bad_keys_are_start_up_errors_naming_the_config_key() {
    let mut config = secrets().verifier_config();
    config.sendgrid.as_mut().unwrap().public_key = "not base64!".into();
    assert_eq!(
        Verifier::new(&config).unwrap_err().to_string(),
        "signatures.sendgrid.public_key: not base64 (expected the key as SendGrid shows it)"
    );
    let mut config = secrets().verifier_config();
    // Base64, but a truncated SubjectPublicKeyInfo.
    config.sendgrid.as_mut().unwrap().public_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE".into();
    assert!(Verifier::new(&config)
        .unwrap_err()
        .to_string()
        .starts_with("signatures.sendgrid.public_key: not a P-256"));
    let mut config = secrets().verifier_config();
    config.mailgun.as_mut().unwrap().replay_cache_capacity = 0;
    assert!(Verifier::new(&config).is_err());
    let mut config = secrets().verifier_config();
    config.mandrill.as_mut().unwrap().url = "/webhooks/mandrill".into();
    assert!(Verifier::new(&config)
        .unwrap_err()
        .to_string()
        .starts_with("signatures.mandrill.url"));
}

/// `testdata/signature/config.example.json` (also shown in the README) loads and verifies: the
/// SendGrid official vector's key, the fixtures' Mailgun and Mandrill test keys, and an SNS
/// trust store naming a certificate file — the dev certificate of this binary's seeded
/// secrets. To rewrite that file after changing the generator:
/// `UPDATE_SIGNATURE_TESTDATA=1 cargo test -p email-reports --test signature_round_trip`.
#[test]
fn the_example_config_loads_and_verifies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let certificate = dir.join("testdata/signature/sns-dev-certificate.pem");
    if std::env::var_os("UPDATE_SIGNATURE_TESTDATA").is_some() {
        std::fs::write(&certificate, secrets().sns_certificate_pem()).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&certificate).unwrap(),
        secrets().sns_certificate_pem(),
        "the committed dev certificate is not the seeded generator's (see this test's doc)"
    );
    let text = std::fs::read_to_string(dir.join("testdata/signature/config.example.json")).unwrap();
    let config: SignatureConfig = serde_json::from_str(&text).unwrap();
    // Relative certificate paths are read from the working directory: cargo runs tests in the
    // crate's directory, which the example's path is relative to.
    let verifier = Verifier::new(&config).unwrap();
    assert_eq!(verifier.configured_providers(), Provider::ALL.to_vec());

    let body = secrets().sign_sns_notification(&ses_event(), DEV_SNS_TOPIC_ARN, "m", NOW);
    let _verified = verifier.verify(Provider::Ses, &HeaderMap::new(), &body, NOW).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Basic cG9zdG1hcms6Y2hhbmdlLW1lLXBvc3RtYXJr"),
    );
    let _verified = verifier.verify(Provider::Postmark, &headers, b"{}", NOW).unwrap();
}

#[test]
fn the_verifier_is_shared_between_handler_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Verifier>();
    shareable::<DevSecrets>();
}
