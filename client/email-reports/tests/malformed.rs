//! Bad input: every parser answers a malformed body with a `ParseError` naming the field, and
//! never panics — on random bytes, on truncated fixtures, or on fixtures with a value replaced
//! by one of another type.

mod common;

use email_reports::{parse, CarrierKeys, ParseError, ParseOutcome, Provider};
use proptest::prelude::*;
use serde_json::Value;

fn parse_str(provider: Provider, body: &str) -> Result<ParseOutcome, ParseError> {
    parse(provider, body.as_bytes(), &CarrierKeys::default())
}

fn mandrill_form(events_json: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("mandrill_events", events_json)
        .finish()
}

#[test]
fn errors_name_the_offending_field() {
    let mandrill_missing_email = mandrill_form(r#"[{"event":"send","msg":{},"_id":"m1","ts":1}]"#);
    let cases: Vec<(Provider, &str, &str)> = vec![
        (
            Provider::SendGrid,
            "not json",
            "$: not valid JSON: expected ident at line 1 column 2",
        ),
        (Provider::SendGrid, "42", "$: expected array of events, found number"),
        (
            Provider::SendGrid,
            r#"[{"event":"delivered","timestamp":1}]"#,
            "$[0].email: missing",
        ),
        (
            Provider::SendGrid,
            r#"[{"event":"open","email":"a@b.c","timestamp":"soon"}]"#,
            r#"$[0].timestamp: "soon" is not a Unix time in seconds"#,
        ),
        (
            Provider::SendGrid,
            r#"[{"event":"open","email":"  ","timestamp":1}]"#,
            "$[0].email: empty",
        ),
        (Provider::Mailgun, r#"{"signature":{}}"#, "$.event-data: missing"),
        (
            Provider::Mailgun,
            r#"{"event-data":{"event":"delivered","recipient":7,"timestamp":1}}"#,
            "$.event-data.recipient: expected string, found number",
        ),
        (
            Provider::Mailgun,
            r#"{"event-data":{"event":"failed","recipient":"a@b.c","timestamp":1}}"#,
            "$.event-data.severity: missing",
        ),
        (
            Provider::Ses,
            "{}",
            r#"$: neither an SNS message (no "Type") nor an SES event (no "eventType" or "notificationType")"#,
        ),
        (Provider::Ses, r#"{"Type":"Notification"}"#, "$.Message: missing"),
        (
            Provider::Ses,
            r#"{"Type":"Surprise"}"#,
            r#"$.Type: unknown SNS message type "Surprise""#,
        ),
        (
            Provider::Ses,
            r#"{"Type":"Notification","Message":"{\"eventType\":\"Send\"}"}"#,
            "$.Message.mail: missing",
        ),
        (
            Provider::Ses,
            r#"{"notificationType":"Bounce","mail":{"messageId":"m"},"bounce":{"bounceType":"Permanent","bouncedRecipients":[{}],"timestamp":"2016-01-27T14:59:38.237Z"}}"#,
            "$.bounce.bouncedRecipients[0].emailAddress: missing",
        ),
        (
            Provider::Ses,
            r#"{"Type":"SubscriptionConfirmation","TopicArn":"t","Token":"x","MessageId":"m"}"#,
            "$.SubscribeURL: missing",
        ),
        (
            Provider::Postmark,
            r#"{"RecordType":"Bounce","Type":"HardBounce","BouncedAt":"2019-11-05T16:33:54Z"}"#,
            "$.Email: missing",
        ),
        (
            Provider::Postmark,
            r#"{"RecordType":"Delivery","Recipient":"a@b.c","DeliveredAt":"yesterday"}"#,
            r#"$.DeliveredAt: "yesterday" is not an RFC 3339 date-time"#,
        ),
        (Provider::Postmark, "[]", "$: expected object, found array"),
        (
            Provider::SparkPost,
            r#"[{"msys":{"message_event":{"type":"delivery","timestamp":"1"}}}]"#,
            "$[0].msys.message_event.rcpt_to: missing",
        ),
        (
            Provider::SparkPost,
            r#"[{"msys":{"message_event":{"type":"bounce","bounce_class":"ten"}}}]"#,
            r#"$[0].msys.message_event.bounce_class: "ten" is not a bounce class number"#,
        ),
        (
            Provider::Mandrill,
            "foo=bar",
            r#"form field "mandrill_events" missing from the body"#,
        ),
        (
            Provider::Mandrill,
            "mandrill_events=%5B",
            "mandrill_events: not valid JSON: EOF while parsing a list at line 1 column 1",
        ),
        (
            Provider::Mandrill,
            &mandrill_missing_email,
            "mandrill_events[0].msg.email: missing",
        ),
    ];
    let mut failures = Vec::new();
    for (provider, body, expected) in cases {
        match parse_str(provider, body) {
            Err(error) if error.to_string() == expected => {}
            other => failures.push(format!(
                "{provider} {body}\n  got      {other:?}\n  expected {expected}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tenant_and_campaign_come_from_each_providers_carrier_by_default() {
    let bodies: Vec<(Provider, String)> = vec![
        (
            Provider::SendGrid,
            r#"[{"event":"delivered","email":"A@Example.com","timestamp":1,"sg_event_id":"e","tenant_id":"t1","campaign_id":"c1"}]"#.into(),
        ),
        (
            Provider::Mailgun,
            r#"{"event-data":{"event":"delivered","recipient":"A@Example.com","timestamp":1,"id":"e","user-variables":{"tenant_id":"t1","campaign_id":"c1"}}}"#.into(),
        ),
        (
            Provider::Ses,
            r#"{"eventType":"Delivery","mail":{"messageId":"m","tags":{"tenant_id":["t1"],"campaign_id":["c1"]}},"delivery":{"timestamp":"1970-01-01T00:00:01Z","recipients":["A@Example.com"]}}"#.into(),
        ),
        (
            Provider::Postmark,
            r#"{"RecordType":"Delivery","Recipient":"A@Example.com","DeliveredAt":"1970-01-01T00:00:01Z","Metadata":{"tenant_id":"t1","campaign_id":"c1"}}"#.into(),
        ),
        (
            Provider::SparkPost,
            r#"[{"msys":{"message_event":{"type":"delivery","event_id":"e","rcpt_to":"A@Example.com","timestamp":"1","rcpt_meta":{"tenant_id":"t1","campaign_id":"c1"}}}}]"#.into(),
        ),
        (
            Provider::Mandrill,
            mandrill_form(r#"[{"event":"delivered","_id":"m","ts":1,"msg":{"email":"A@Example.com","metadata":{"tenant_id":"t1","campaign_id":"c1"}}}]"#),
        ),
    ];
    for (provider, body) in bodies {
        let events = parse_str(provider, &body)
            .unwrap_or_else(|e| panic!("{provider}: {e}"))
            .into_events();
        assert_eq!(events.len(), 1, "{provider}");
        let event = &events[0];
        assert_eq!(
            (event.tenant.as_deref(), event.campaign.as_deref()),
            (Some("t1"), Some("c1")),
            "{provider}"
        );
        assert_eq!(event.recipient, "a@example.com", "{provider}: lower-cased");
        assert_eq!(event.occurred_at.unix_micros(), 1_000_000, "{provider}");
    }
}

#[test]
fn an_unknown_event_type_is_ignored_not_an_error() {
    let body =
        r#"[{"event":"brand_new_event","email":"a@b.c","timestamp":1},{"event":"open","email":"a@b.c","timestamp":1}]"#;
    let outcome = parse_str(Provider::SendGrid, body).unwrap();
    let ParseOutcome::Entries(entries) = &outcome else {
        panic!("entries expected")
    };
    assert_eq!(entries.len(), 2);
    assert!(matches!(&entries[0], email_reports::Entry::Ignored(ignored) if ignored.path == "$[0]"));
    assert_eq!(outcome.events().count(), 1);
}

/// The value at a random JSON pointer of `value`, replaced.
fn replace_at(value: &mut Value, choice: usize, replacement: Value) {
    let mut pointers = Vec::new();
    collect_pointers(value, String::new(), &mut pointers);
    if let Some(target) = value.pointer_mut(&pointers[choice % pointers.len()]) {
        *target = replacement;
    }
}

fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                collect_pointers(
                    child,
                    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(["x", 1])),
        Just(Value::from("2019-11-05T16:33:54.9070259Z")),
        Just(Value::from("99999999999999999999")),
    ]
}

fn any_provider() -> impl Strategy<Value = Provider> {
    prop::sample::select(Provider::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(provider in any_provider(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(provider, &body, &CarrierKeys::default());
    }

    #[test]
    fn truncated_fixtures_never_panic(sample in 0usize..1000, cut in 0usize..4096) {
        let samples = common::sample_bodies();
        let (_, provider, body) = &samples[sample % samples.len()];
        let cut = cut % (body.len() + 1);
        let _ = parse(*provider, &body[..cut], &CarrierKeys::default());
    }

    #[test]
    fn fixtures_with_a_value_of_another_type_never_panic(sample in 0usize..1000, choice in 0usize..10_000, replacement in any_json()) {
        let samples = common::sample_bodies();
        let (file, provider, body) = &samples[sample % samples.len()];
        // Mutate the JSON the parser reads: for Mandrill the form field's value.
        let (mut value, is_form) = match *provider {
            Provider::Mandrill => {
                let (_, events) = form_urlencoded::parse(body).find(|(name, _)| name == "mandrill_events").unwrap();
                (serde_json::from_str::<Value>(&events).unwrap(), true)
            }
            _ => match serde_json::from_slice::<Value>(body) {
                Ok(value) => (value, false),
                Err(_) => return Ok(()),
            },
        };
        replace_at(&mut value, choice, replacement);
        let text = value.to_string();
        let mutated = if is_form { mandrill_form(&text) } else { text };
        if let Err(error) = parse(*provider, mutated.as_bytes(), &CarrierKeys::default()) {
            prop_assert!(!error.to_string().is_empty(), "{file}");
            prop_assert!(!error.path().is_empty(), "{file}: {error}");
        }
    }
}

#[test]
fn an_empty_or_repeated_sendgrid_event_id_is_replaced_by_a_synthesised_key() {
    let body = r#"[{"event":"open","email":"a@b.c","timestamp":1,"sg_event_id":" ","sg_message_id":"m"},
                   {"event":"click","email":"a@b.c","timestamp":2,"sg_event_id":"x","url":"u"},
                   {"event":"click","email":"a@b.c","timestamp":3,"sg_event_id":"x","url":"u"}]"#;
    let ids: Vec<String> = parse_str(Provider::SendGrid, body)
        .unwrap()
        .into_events()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        ids,
        [
            "open|m|open|a@b.c|1",
            "click||click|a@b.c|2|u",
            "click||click|a@b.c|3|u"
        ]
    );
}
