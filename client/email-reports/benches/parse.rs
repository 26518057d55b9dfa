//! Webhook parsing throughput per provider: events/s that `email_reports::parse` turns into
//! canonical events, from bodies as each provider posts them (the load generator's, up to 200
//! events per body where the provider batches). Single thread; the median of 7 rounds.
//!
//! `cargo bench -p email-reports --bench parse` (release profile). Figures in
//! `docs/benchmarks.md`.

use email_reports::payloads::{self, OutgoingEvent};
use email_reports::{CarrierKeys, EventKind, EventTime, Provider};
use std::time::{Duration, Instant};

/// A body of `count` delivered/open/click events of one campaign.
fn body(provider: Provider, count: usize, keys: &CarrierKeys) -> Vec<u8> {
    let events: Vec<OutgoingEvent> = (0..count)
        .map(|i| {
            let kind = [EventKind::Delivered, EventKind::Open, EventKind::Click][i % 3];
            OutgoingEvent {
                provider_event_id: format!("bench-event-{i}"),
                message_id: format!("bench-message-{}", i / 3),
                tenant: "tenant-a".into(),
                campaign: "spring-sale".into(),
                recipient: format!("user{}@example.com", i / 3),
                kind,
                occurred_at: EventTime::from_unix_micros(1_765_000_000_000_000 + i as i64).expect("a valid time"),
                url: (kind == EventKind::Click).then(|| "https://shop.example.com/offer/1".to_string()),
            }
        })
        .collect();
    payloads::build(provider, &events, keys).expect("a valid payload").body
}

fn main() {
    let keys = CarrierKeys::default();
    println!("provider    events/body  events/s (median of 7 rounds of ~0.5 s)");
    for provider in Provider::ALL {
        let per_body = payloads::max_events(provider).unwrap_or(200).min(200);
        let body = body(provider, per_body, &keys);
        let mut rates = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            let mut events = 0usize;
            while started.elapsed() < Duration::from_millis(500) {
                let outcome = email_reports::parse(provider, std::hint::black_box(&body), &keys).expect("parses");
                events += match outcome {
                    email_reports::ParseOutcome::Entries(entries) => entries.len(),
                    other => panic!("{provider:?}: unexpected {other:?}"),
                };
            }
            rates.push(events as f64 / started.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        println!("{:<11} {per_body:>11}  {:>10.0}", format!("{provider:?}"), rates[3]);
    }
}
