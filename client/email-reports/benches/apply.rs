//! The materialiser's counting and applying, without the cluster: loadgen-like events (most
//! delivered to a new recipient, a few opens, clicks and bounces) counted as the owner counts
//! them (on its mirror over the store, 4,000 events per changelog record, the dedup expiry
//! walk), each record encoded and decoded as JSON as it crosses the changelog, and applied to a
//! fresh sled store as every instance's applier applies it. Prints events/s for each step.
//!
//! `cargo bench -p email-reports --bench apply` (release profile). Figures in
//! `docs/benchmarks.md`.

use std::time::{Duration, Instant};

use email_reports::reports::apply::{ChangeBuilder, ChangelogRecord, CountingSettings};
use email_reports::reports::mirror::Mirror;
use email_reports::reports::store::Store;
use email_reports::{CanonicalEvent, EventKind, EventTime, Provider};

// The allocator of the `email-reports` binary, so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS_PER_RECORD: usize = 4_000;
const RECORDS: usize = 100;
const START_MS: i64 = 1_765_000_000_000;

fn event(n: usize) -> CanonicalEvent {
    // ~95 % delivered to a new recipient, then opens, clicks, bounces and rare complaints of
    // recipients already delivered to.
    let kind = match n % 100 {
        0..=94 => EventKind::Delivered,
        95 | 96 => EventKind::Open,
        97 => EventKind::Click,
        98 => EventKind::HardBounce,
        _ => EventKind::SoftBounce,
    };
    let recipient = if kind == EventKind::Delivered {
        n
    } else {
        n.saturating_sub(50)
    };
    let campaign = n % 12;
    CanonicalEvent {
        provider: Provider::SendGrid,
        event_id: format!("sg-event-{n:012}-{:08x}", n.wrapping_mul(2_654_435_761)),
        provider_event_id: Some(format!("sg-event-{n:012}")),
        tenant: Some(format!("tenant-{}", campaign % 3)),
        campaign: Some(format!("campaign-{campaign}")),
        recipient: format!("user{recipient}@example.com"),
        kind,
        occurred_at: EventTime::from_unix_micros((START_MS + n as i64 / 40) * 1000).expect("a valid time"),
        url: (kind == EventKind::Click).then(|| "https://shop.example.com/offer/1".to_string()),
        message_id: None,
    }
}

fn main() {
    let events: Vec<CanonicalEvent> = (0..EVENTS_PER_RECORD * RECORDS).map(event).collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("a store");
    let settings = CountingSettings::default();
    let mut mirror = Mirror::new(0);
    let (mut counting, mut coding, mut applying) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (index, chunk) in events.chunks(EVENTS_PER_RECORD).enumerate() {
        let from = (index * EVENTS_PER_RECORD) as u64;
        let record_ms = START_MS + index as i64 * 100;
        let started = Instant::now();
        mirror.align(store.generation(), store.next_offset(0));
        let record = {
            let state = mirror.over(&store);
            let mut builder = ChangeBuilder::new(&state, &settings, 0, from);
            for event in chunk {
                builder.count(record_ms, event);
            }
            builder.expire(record_ms, 2 * chunk.len(), 200);
            builder.finish(from + chunk.len() as u64)
        };
        let counted = Instant::now();
        let bytes = serde_json::to_vec(&record).expect("a record encodes");
        let decoded: ChangelogRecord = serde_json::from_slice(&bytes).expect("a record decodes");
        let coded = Instant::now();
        store.apply(0, index as u64, Some(&decoded)).expect("the store applies");
        let applied = Instant::now();
        mirror.absorb(&record);
        counting += counted - started;
        coding += coded - counted;
        applying += applied - coded;
    }
    let total = events.len() as f64;
    let rate = |spent: Duration| total / spent.as_secs_f64();
    println!("{} events in {RECORDS} records of {EVENTS_PER_RECORD}", events.len());
    println!("count (owner, on its mirror)  {:>10.0} events/s", rate(counting));
    println!("record JSON encode + decode   {:>10.0} events/s", rate(coding));
    println!("apply to the store (sled)     {:>10.0} events/s", rate(applying));
    println!(
        "all three, one thread         {:>10.0} events/s",
        rate(counting + coding + applying)
    );
}
