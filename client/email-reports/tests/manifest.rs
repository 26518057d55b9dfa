//! The table test over the shared webhook fixtures: every sample in `manifest.json` is parsed
//! with its provider and must yield exactly the manifest's canonical kinds, in order (`other`
//! = an ignored entry or an SNS subscription confirmation), and exactly the events of its
//! golden file `testdata/expected/<sample>.json` (every field).
//!
//! Fixtures are read from `$WEBHOOK_FIXTURES_DIR`, else from `testdata/webhooks` (a copy of the
//! project's `shared/fixtures/webhooks`). To regenerate the golden files after a
//! deliberate mapping change: `UPDATE_GOLDEN=1 cargo test -p email-reports --test manifest`,
//! then review every changed line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

mod common;

use common::{fixtures_dir, request_body};
use email_reports::{parse, CanonicalEvent, CarrierKeys, Entry, ParseError, ParseOutcome, Provider};
use serde_json::{json, Value};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/expected")
}

/// The manifest's labels for an outcome: each event's kind, `other` for anything else.
fn labels(outcome: &ParseOutcome) -> Vec<String> {
    match outcome {
        ParseOutcome::Entries(entries) => entries
            .iter()
            .map(|entry| match entry {
                Entry::Event(event) => event.kind.as_str().to_owned(),
                Entry::Ignored(_) => "other".to_owned(),
            })
            .collect(),
        ParseOutcome::SubscriptionConfirmation(_) => vec!["other".to_owned()],
    }
}

/// The golden-file form of an outcome.
fn golden_form(outcome: &ParseOutcome) -> Value {
    match outcome {
        ParseOutcome::Entries(entries) => Value::Array(
            entries
                .iter()
                .map(|entry| match entry {
                    Entry::Event(event) => serde_json::to_value(event).unwrap(),
                    Entry::Ignored(ignored) => json!({ "ignored": ignored }),
                })
                .collect(),
        ),
        ParseOutcome::SubscriptionConfirmation(confirmation) => json!({ "subscription_confirmation": confirmation }),
    }
}

#[test]
fn every_fixture_maps_as_the_manifest_says() {
    let dir = fixtures_dir();
    let manifest: Value = serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let samples = manifest["samples"].as_array().expect("manifest.samples");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let keys = CarrierKeys::default();
    let mut failures = Vec::new();
    let mut listed = BTreeSet::new();
    let mut files_by_id: BTreeMap<(Provider, String), Vec<String>> = BTreeMap::new();

    for sample in samples {
        let file = sample["file"].as_str().unwrap();
        listed.insert(file.to_owned());
        let provider: Provider = sample["provider"].as_str().unwrap().parse().unwrap();
        let expected: Vec<String> = sample["expected_canonical"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        let text = fs::read_to_string(dir.join("samples").join(file)).unwrap();

        let Some(body) = request_body(provider, &text) else {
            // A signature test vector with no webhook body: it carries no events, and posted
            // as it is it would be a 400 naming what is missing.
            if !expected.is_empty() {
                failures.push(format!("{file}: no body, but the manifest expects {expected:?}"));
            }
            let error = parse(provider, text.as_bytes(), &keys).err();
            if error
                != Some(ParseError::Missing {
                    path: "$.event-data".into(),
                })
            {
                failures.push(format!(
                    "{file}: posted as a body should fail on $.event-data, got {error:?}"
                ));
            }
            continue;
        };

        let outcome = match parse(provider, &body, &keys) {
            Ok(outcome) => outcome,
            Err(error) => {
                failures.push(format!("{file}: parse error: {error}"));
                continue;
            }
        };
        let got = labels(&outcome);
        if got != expected {
            failures.push(format!("{file}: kinds {got:?}, manifest says {expected:?}"));
        }
        for event in outcome.events() {
            files_by_id
                .entry((event.provider, event.event_id.clone()))
                .or_default()
                .push(file.to_owned());
            let json = serde_json::to_string(event).unwrap();
            if serde_json::from_str::<CanonicalEvent>(&json).unwrap() != *event {
                failures.push(format!("{file}: event does not round-trip through JSON: {json}"));
            }
        }

        let golden_path = golden_dir().join(file);
        let actual = golden_form(&outcome);
        if update {
            fs::write(&golden_path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
            continue;
        }
        match fs::read_to_string(&golden_path) {
            Ok(golden) => {
                let golden: Value = serde_json::from_str(&golden).unwrap();
                if golden != actual {
                    failures.push(format!(
                        "{file}: events differ from {}\n  got:      {actual}\n  expected: {golden}",
                        golden_path.display()
                    ));
                }
            }
            Err(_) => failures.push(format!("{file}: no golden file {}", golden_path.display())),
        }
    }

    // Dedup must not merge different events, even where the docs' samples reuse a provider id
    // (SendGrid hard vs blocked bounce, `sendgrid_internal_event_id`, SparkPost's injection vs
    // delivery, the legacy batch's placeholder). The one pair sharing an id is the same SES
    // event, delivered raw and inside an SNS envelope.
    let same_event = [
        "ses_event_bounce_permanent.json",
        "ses_sns_envelope_bounce_ASSEMBLED.json",
    ];
    for ((provider, id), files) in &files_by_id {
        if files.len() > 1 && files.as_slice() != same_event {
            failures.push(format!("{provider} event id {id:?} is shared by {files:?}"));
        }
    }

    let on_disk: BTreeSet<String> = fs::read_dir(dir.join("samples"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    for unlisted in on_disk.difference(&listed) {
        failures.push(format!("{unlisted}: in samples/ but not in manifest.json"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} samples failed:\n{}",
        failures.len(),
        samples.len(),
        failures.join("\n")
    );
}

#[test]
fn carrier_keys_are_configurable() {
    let dir = fixtures_dir();
    let read = |file: &str| fs::read(dir.join("samples").join(file)).unwrap();
    let keys = CarrierKeys {
        tenant: "a_key".into(),
        campaign: "b_key".into(),
    };
    let events = parse(Provider::Postmark, &read("postmark_delivery.json"), &keys)
        .unwrap()
        .into_events();
    assert_eq!(events[0].tenant.as_deref(), Some("a_value"));
    assert_eq!(events[0].campaign.as_deref(), Some("b_value"));

    let keys = CarrierKeys {
        tenant: "cohort".into(),
        campaign: "user_id".into(),
    };
    let events = parse(
        Provider::Mailgun,
        &read("mailgun_opened_user_variables_SIGNED.json"),
        &keys,
    )
    .unwrap()
    .into_events();
    assert_eq!(
        (events[0].tenant.as_deref(), events[0].campaign.as_deref()),
        (Some("2018-08-B"), Some("123456"))
    );

    let keys = CarrierKeys {
        tenant: "myCustomTag1".into(),
        campaign: "ses:configuration-set".into(),
    };
    let events = parse(Provider::Ses, &read("ses_event_delivery.json"), &keys)
        .unwrap()
        .into_events();
    assert_eq!(
        (events[0].tenant.as_deref(), events[0].campaign.as_deref()),
        (Some("myCustomTagValue1"), Some("ConfigSet"))
    );

    let keys = CarrierKeys {
        tenant: "userid".into(),
        campaign: "template".into(),
    };
    let events = parse(Provider::SendGrid, &read("sendgrid_unique_args_click.json"), &keys)
        .unwrap()
        .into_events();
    assert_eq!(
        (events[0].tenant.as_deref(), events[0].campaign.as_deref()),
        (Some("1123"), Some("welcome"))
    );

    let keys = CarrierKeys {
        tenant: "customKey".into(),
        campaign: "campaign_id".into(),
    };
    let events = parse(
        Provider::SparkPost,
        &read("sparkpost_batch_injection_sample_event.json"),
        &keys,
    )
    .unwrap()
    .into_events();
    assert_eq!(
        (events[0].tenant.as_deref(), events[0].campaign.as_deref()),
        (Some("customValue"), None)
    );

    let keys = CarrierKeys {
        tenant: "user_id".into(),
        campaign: "campaign_id".into(),
    };
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "mandrill_events",
            &String::from_utf8(read("mandrill_events_send_and_hard_bounce.json")).unwrap(),
        )
        .finish();
    let events = parse(Provider::Mandrill, form.as_bytes(), &keys).unwrap().into_events();
    assert_eq!(
        events[0].tenant.as_deref(),
        Some("111"),
        "an integer id is kept as text"
    );
}

#[test]
fn the_sns_envelope_and_raw_delivery_of_one_ses_event_yield_the_same_event() {
    let dir = fixtures_dir();
    let read = |file: &str| fs::read(dir.join("samples").join(file)).unwrap();
    let keys = CarrierKeys::default();
    let raw = parse(Provider::Ses, &read("ses_event_bounce_permanent.json"), &keys).unwrap();
    let enveloped = parse(Provider::Ses, &read("ses_sns_envelope_bounce_ASSEMBLED.json"), &keys).unwrap();
    assert_eq!(
        raw, enveloped,
        "same event id, so a raw and an enveloped copy dedup together"
    );
}

#[test]
fn the_subscription_confirmation_is_its_own_outcome() {
    let dir = fixtures_dir();
    let body = fs::read(dir.join("samples/ses_sns_subscription_confirmation.json")).unwrap();
    match parse(Provider::Ses, &body, &CarrierKeys::default()).unwrap() {
        ParseOutcome::SubscriptionConfirmation(confirmation) => {
            assert_eq!(confirmation.topic_arn, "arn:aws:sns:us-west-2:123456789012:MyTopic");
            assert!(confirmation
                .subscribe_url
                .starts_with("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"));
            assert_eq!(confirmation.token, "2336412f37...");
        }
        other => panic!("expected a subscription confirmation, got {other:?}"),
    }
}
