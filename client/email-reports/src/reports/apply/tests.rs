use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::event::Provider;
use crate::time::EventTime;

/// The state as a map, with the applier's rule (a record applies only at its `from`).
#[derive(Default)]
struct Memory(BTreeMap<String, Value>);

impl StateRead for Memory {
    fn get(&self, key: &str) -> Option<Value> {
        self.0.get(key).cloned()
    }
    fn entries_after(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)> {
        let start = after.map_or(prefix.to_owned(), |after| format!("{after}\u{0}"));
        self.0
            .range(start..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
    fn keys_between(&self, prefix: &str, before: &str, limit: usize) -> Vec<String> {
        self.0
            .range(prefix.to_owned()..before.to_owned())
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect()
    }
}

impl Memory {
    fn apply(&mut self, record: ChangelogRecord) {
        for (key, value) in record.changes {
            if value.is_null() {
                self.0.remove(&key);
            } else {
                self.0.insert(key, value);
            }
        }
    }

    fn totals(&self, campaign: &str) -> CampaignTotals {
        serde_json::from_value(self.0[&keys::campaign(campaign)].clone()).unwrap()
    }
}

const DAY_MS: i64 = 86_400_000;
const NOW_MS: i64 = 1_760_000_000_000;

fn event(id: &str, recipient: &str, kind: EventKind) -> CanonicalEvent {
    CanonicalEvent {
        provider: Provider::SendGrid,
        event_id: format!("{kind}|{id}"),
        provider_event_id: Some(id.to_owned()),
        tenant: Some("acme".into()),
        campaign: Some("spring".into()),
        recipient: recipient.to_owned(),
        kind,
        occurred_at: EventTime::from_unix_micros(NOW_MS * 1000).unwrap(),
        url: (kind == EventKind::Click).then(|| "https://example.com/offer".to_owned()),
        message_id: None,
    }
}

fn count_all(state: &mut Memory, settings: &CountingSettings, events: &[CanonicalEvent]) -> Vec<Counted> {
    let mut builder = ChangeBuilder::new(&*state, settings, 0, 0);
    let counted = events.iter().map(|event| builder.count(NOW_MS, event)).collect();
    let record = builder.finish(events.len() as u64);
    state.apply(record);
    counted
}

#[test]
fn sent_and_uniques_count_distinct_recipients_and_counts_count_events() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    count_all(
        &mut state,
        &settings,
        &[
            event("1", "a@x.com", EventKind::Processed),
            event("2", "a@x.com", EventKind::Delivered),
            event("3", "b@x.com", EventKind::Delivered),
            event("4", "a@x.com", EventKind::Open),
            event("5", "a@x.com", EventKind::Open),
            event("6", "b@x.com", EventKind::Click),
            event("7", "c@x.com", EventKind::Open),
        ],
    );
    let totals = state.totals("spring");
    assert_eq!(totals.tenant_id, "acme");
    assert_eq!(totals.sent, 2, "a and b had sent kinds; c only opened");
    assert_eq!(totals.count(EventKind::Open), 3, "every open counts");
    assert_eq!(totals.unique_opens, 2);
    assert_eq!(totals.unique_clicks, 1);
    assert_eq!(totals.rates().open, Some(1.0));
}

#[test]
fn a_redelivered_event_is_counted_once_even_in_a_later_batch() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    let delivered = event("1", "a@x.com", EventKind::Delivered);
    assert_eq!(
        count_all(&mut state, &settings, &[delivered.clone(), delivered.clone()]),
        [Counted::New, Counted::Duplicate]
    );
    assert_eq!(count_all(&mut state, &settings, &[delivered]), [Counted::Duplicate]);
    assert_eq!(state.totals("spring").count(EventKind::Delivered), 1);
}

#[test]
fn hard_bounces_and_complaints_suppress_but_unsubscribes_and_soft_bounces_do_not() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    count_all(
        &mut state,
        &settings,
        &[
            event("1", "hard@x.com", EventKind::HardBounce),
            event("2", "spam@x.com", EventKind::SpamComplaint),
            event("3", "soft@x.com", EventKind::SoftBounce),
            event("4", "unsub@x.com", EventKind::Unsubscribe),
        ],
    );
    let suppressed: Vec<&String> = state.0.keys().filter(|key| key.starts_with("supp/")).collect();
    assert_eq!(suppressed.len(), 2, "{suppressed:?}");
    assert!(state.0.contains_key(&keys::suppression("acme", "hard@x.com")));
    assert!(state.0.contains_key(&keys::suppression("acme", "spam@x.com")));
}

#[test]
fn a_spam_alert_is_raised_over_the_threshold_and_cleared_under_it() {
    let settings = CountingSettings {
        spam_alert_threshold: 0.2,
        ..CountingSettings::default()
    };
    let mut state = Memory::default();
    count_all(
        &mut state,
        &settings,
        &[
            event("1", "a@x.com", EventKind::Delivered),
            event("2", "b@x.com", EventKind::Delivered),
            event("3", "a@x.com", EventKind::SpamComplaint),
        ],
    );
    let alert: SpamAlert = serde_json::from_value(state.0[&keys::alert("spring")].clone()).unwrap();
    assert_eq!((alert.complaints, alert.delivered), (1, 2));
    let more: Vec<_> = (10..20)
        .map(|n| event(&n.to_string(), &format!("r{n}@x.com"), EventKind::Delivered))
        .collect();
    count_all(&mut state, &settings, &more);
    assert!(!state.0.contains_key(&keys::alert("spring")), "1/12 is under 0.2");
}

#[test]
fn clickers_are_engaged_with_their_first_and_last_click() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    count_all(
        &mut state,
        &settings,
        &[
            event("1", "a@x.com", EventKind::Click),
            event("2", "a@x.com", EventKind::Click),
        ],
    );
    let engaged: Engaged = serde_json::from_value(state.0[&keys::engaged("spring", "a@x.com")].clone()).unwrap();
    assert_eq!(engaged.clicks, 2);
    assert_eq!(engaged.last_url.as_deref(), Some("https://example.com/offer"));
}

#[test]
fn expiry_forgets_ids_past_the_window_and_buckets_past_retention() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    let mut old = event("1", "a@x.com", EventKind::Delivered);
    old.occurred_at = EventTime::from_unix_micros((NOW_MS - 400 * DAY_MS) * 1000).unwrap();
    let mut builder = ChangeBuilder::new(&state, &settings, 0, 0);
    // Counted at a record time 400 days ago, so its day bucket is kept then.
    builder.count(NOW_MS - 400 * DAY_MS, &old);
    let record = builder.finish(1);
    state.apply(record);
    assert!(state.0.keys().any(|key| key.starts_with("day/")));

    let mut builder = ChangeBuilder::new(&state, &settings, 0, 1);
    builder.expire(NOW_MS, 100, 100);
    let record = builder.finish(1);
    state.apply(record);
    assert!(
        !state
            .0
            .keys()
            .any(|key| key.starts_with("day") || key.starts_with("dd")),
        "{:?}",
        state.0.keys()
    );
    // The totals stay: only the per-day buckets have a retention.
    assert_eq!(state.totals("spring").count(EventKind::Delivered), 1);
    // And the id is forgotten: the same id counts again (a redelivery after 400 days is new).
    assert_eq!(count_all(&mut state, &settings, &[old]), [Counted::New]);
}

#[test]
fn events_without_tenant_or_campaign_are_unattributed() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    let mut bare = event("1", "a@x.com", EventKind::Delivered);
    bare.tenant = None;
    bare.campaign = None;
    count_all(&mut state, &settings, &[bare]);
    assert_eq!(state.totals(UNATTRIBUTED).tenant_id, UNATTRIBUTED);
}

#[test]
fn the_expiry_walk_covers_every_id_in_bounded_steps_and_keeps_recent_ones() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    let old_ms = NOW_MS - 3 * DAY_MS;
    let mut builder = ChangeBuilder::new(&state, &settings, 0, 0);
    for n in 0..5 {
        builder.count(old_ms, &event(&format!("old{n}"), "a@x.com", EventKind::Open));
        builder.count(NOW_MS, &event(&format!("new{n}"), "a@x.com", EventKind::Open));
    }
    state.apply(builder.finish(10));
    let ids = |state: &Memory| state.0.keys().filter(|key| key.starts_with("dd/")).count();
    assert_eq!(ids(&state), 10);
    // Three ids examined per call: four calls walk all ten and wrap.
    for _ in 0..4 {
        let mut builder = ChangeBuilder::new(&state, &settings, 0, 10);
        builder.expire(NOW_MS, 3, 10);
        state.apply(builder.finish(10));
    }
    assert_eq!(ids(&state), 5, "{:?}", state.0.keys().collect::<Vec<_>>());
    assert!(state
        .0
        .keys()
        .filter(|key| key.starts_with("dd/"))
        .all(|key| key.contains("new")));
}

#[test]
fn an_id_seen_longer_ago_than_the_window_counts_again_whether_or_not_it_was_expired() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    let delivered = event("1", "a@x.com", EventKind::Delivered);
    let mut builder = ChangeBuilder::new(&state, &settings, 0, 0);
    builder.count(NOW_MS - 3 * DAY_MS, &delivered);
    state.apply(builder.finish(1));
    // Still stored (no expiry ran), but older than the window at this record's time.
    assert!(state.0.keys().any(|key| key.starts_with("dd/")));
    let mut builder = ChangeBuilder::new(&state, &settings, 0, 1);
    assert_eq!(builder.count(NOW_MS, &delivered), Counted::New);
    // And within the window it is a redelivery.
    assert_eq!(builder.count(NOW_MS + 1000, &delivered), Counted::Duplicate);
}

#[test]
fn a_suppression_goes_to_the_tenant_the_event_names() {
    let settings = CountingSettings::default();
    let mut state = Memory::default();
    let mut other = event("2", "b@x.com", EventKind::HardBounce);
    other.tenant = Some("globex".into());
    count_all(
        &mut state,
        &settings,
        &[event("1", "a@x.com", EventKind::Delivered), other],
    );
    assert!(state.0.contains_key(&keys::suppression("globex", "b@x.com")));
    assert!(!state.0.contains_key(&keys::suppression("acme", "b@x.com")));
    assert!(state.0.contains_key(&keys::tenant("globex")));
}
