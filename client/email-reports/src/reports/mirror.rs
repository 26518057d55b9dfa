//! The owner's mirror: an in-memory copy of the state keys that only the owner of one source
//! partition writes — its event ids (`dd/{p}/…`) and the recipient flags of the campaigns it
//! counts (`rcpt/{campaign}␟…`; events are keyed by campaign, so a campaign lives in one
//! partition) — so counting reads them from memory, not from sled.
//!
//! **Why.** Every event looks up its id and its recipient; most are absent (a new event, a
//! new recipient), and only a complete copy can answer "absent" without asking the store. Those
//! point reads were the largest part of the owner's CPU (docs/benchmarks.md).
//!
//! **Why it stays exact.** A mirror is valid for the state at one point: the generation and
//! the partition's next source offset it was filled at. The owner [`align`](Mirror::align)s it
//! with the store before each record (starting over when they differ: another owner's record
//! got in, a rebuild) and [`absorb`](Mirror::absorb)s its own record only once it has seen it
//! applied at that record's `to`. Keys other partitions may write too (suppressions, the tenant
//! index) and values read once per record are read from the store, as before; the records
//! computed are the same as without the mirror.
//!
//! **Memory is bounded:** ids are mirrored up to [`MAX_IDS`] per partition (past that the
//! partition reads them from the store until the mirror starts over); recipients are loaded
//! per campaign on first use and all dropped past [`MAX_RECIPIENTS`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::apply::{ChangelogRecord, IntegerScan, StateRead};
use super::keys;
use super::model::RecipientFlags;
use super::store::Store;

/// Event ids mirrored per partition at most (about 100 bytes each).
pub const MAX_IDS: usize = 2_000_000;

/// Recipient flags mirrored per partition before they are all dropped (loaded again by
/// campaign as counting needs them).
pub const MAX_RECIPIENTS: usize = 1_000_000;

/// The event ids of the partition.
enum Ids {
    /// Not read from the store yet (read whole on first use).
    Unloaded,
    /// Full key → the record time it was counted at.
    Loaded(BTreeMap<String, i64>),
    /// Too many, or a value that is not an integer: read from the store.
    Store,
}

/// The mirror of one source partition's keys.
pub struct Mirror {
    partition: u32,
    ids_prefix: String,
    /// (generation, next source offset) of the state it mirrors; `None` before `align`.
    at: Option<(u64, u64)>,
    ids: Ids,
    /// Full key → flags, for the campaigns in `campaigns`.
    recipients: HashMap<String, RecipientFlags>,
    /// Campaigns whose recipients are loaded (absent from `recipients` = absent in the state).
    campaigns: HashSet<String>,
}

impl Mirror {
    /// An empty mirror of `partition`.
    pub fn new(partition: u32) -> Mirror {
        Mirror {
            partition,
            ids_prefix: keys::dedup_prefix(partition),
            at: None,
            ids: Ids::Unloaded,
            recipients: HashMap::new(),
            campaigns: HashSet::new(),
        }
    }

    /// Makes the mirror that of the state at `generation` and next source offset `next`:
    /// kept when it is, started over (loaded again as used) when not.
    pub fn align(&mut self, generation: u64, next: u64) {
        if self.at != Some((generation, next)) {
            *self = Mirror::new(self.partition);
            self.at = Some((generation, next));
        }
    }

    /// Takes in `record`, seen applied (the state's next offset is its `to`).
    pub fn absorb(&mut self, record: &ChangelogRecord) {
        if self.at != Some((record.generation, record.from)) || record.reset {
            *self = Mirror::new(self.partition);
            return;
        }
        for (key, value) in &record.changes {
            if key.starts_with(&self.ids_prefix) {
                if let Ids::Loaded(ids) = &mut self.ids {
                    match value {
                        Value::Null => {
                            ids.remove(key);
                        }
                        value => match value.as_i64() {
                            Some(time) => {
                                ids.insert(key.clone(), time);
                            }
                            None => self.ids = Ids::Store,
                        },
                    }
                }
            } else if let Some(campaign) = recipient_campaign(key) {
                if self.campaigns.contains(campaign) {
                    match decoded::<RecipientFlags>(value) {
                        Some(flags) => {
                            self.recipients.insert(key.clone(), flags);
                        }
                        None => {
                            self.recipients.remove(key);
                        }
                    }
                }
            }
        }
        if matches!(&self.ids, Ids::Loaded(ids) if ids.len() > MAX_IDS) {
            self.ids = Ids::Store;
        }
        self.at = Some((record.generation, record.to));
    }

    /// The state to count on: this mirror over `store`.
    pub fn over<'m>(&'m mut self, store: &'m Store) -> Mirrored<'m> {
        Mirrored {
            store,
            mirror: RefCell::new(self),
        }
    }

    /// The ids, read from `store` on first use.
    fn ids(&mut self, store: &Store) -> Option<&BTreeMap<String, i64>> {
        if matches!(self.ids, Ids::Unloaded) {
            self.ids = match store.entries::<Value>(&self.ids_prefix) {
                Some(entries) if entries.len() <= MAX_IDS => entries
                    .into_iter()
                    .map(|(key, value)| Some((key, value.as_i64()?)))
                    .collect::<Option<BTreeMap<_, _>>>()
                    .map_or(Ids::Store, Ids::Loaded),
                _ => Ids::Store,
            };
        }
        match &self.ids {
            Ids::Loaded(ids) => Some(ids),
            _ => None,
        }
    }

    /// The flags at `key` of `campaign`, its recipients read from `store` on first use
    /// (`None` when they do not decode: then the store answers).
    fn recipient(&mut self, store: &Store, campaign: &str, key: &str) -> Option<Option<RecipientFlags>> {
        if !self.campaigns.contains(campaign) {
            if self.recipients.len() > MAX_RECIPIENTS {
                self.recipients.clear();
                self.campaigns.clear();
            }
            let loaded = store.entries::<RecipientFlags>(&keys::recipients_prefix(campaign))?;
            self.recipients.extend(loaded);
            self.campaigns.insert(campaign.to_owned());
        }
        Some(self.recipients.get(key).copied())
    }
}

/// The campaign of a recipient key.
fn recipient_campaign(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(keys::RECIPIENT_PREFIX)?;
    rest.split_once(keys::SEP).map(|(campaign, _)| campaign)
}

fn decoded<T: DeserializeOwned>(value: &Value) -> Option<T> {
    if value.is_null() {
        return None;
    }
    T::deserialize(value).ok()
}

/// A [`Mirror`] in front of the store: what the owner counts on.
pub struct Mirrored<'m> {
    store: &'m Store,
    // `StateRead` reads through `&self`; the mirror loads what it lacks on first use.
    mirror: RefCell<&'m mut Mirror>,
}

impl StateRead for Mirrored<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        StateRead::get(self.store, key)
    }

    fn get_as<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.store.get(key)
    }

    fn seen_at(&self, key: &str) -> Option<i64> {
        let mut mirror = self.mirror.borrow_mut();
        if key.starts_with(&mirror.ids_prefix) {
            if let Some(ids) = mirror.ids(self.store) {
                return ids.get(key).copied();
            }
        }
        self.store.get(key)
    }

    fn recipient_flags(&self, key: &str) -> Option<RecipientFlags> {
        if let Some(campaign) = recipient_campaign(key) {
            if let Some(flags) = self.mirror.borrow_mut().recipient(self.store, campaign, key) {
                return flags;
            }
        }
        self.store.get(key)
    }

    fn keys_between(&self, prefix: &str, before: &str, limit: usize) -> Vec<String> {
        self.store.keys_between(prefix, before, limit)
    }

    fn entries_after(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)> {
        self.store.entries_after(prefix, after, limit)
    }

    fn integers_below(&self, prefix: &str, after: Option<&str>, limit: usize, below: i64) -> IntegerScan {
        let mut mirror = self.mirror.borrow_mut();
        if prefix != mirror.ids_prefix {
            return self.store.integers_below(prefix, after, limit, below);
        }
        let Some(ids) = mirror.ids(self.store) else {
            return self.store.integers_below(prefix, after, limit, below);
        };
        // The store's walk, in memory: the keys after `after` (from the prefix), in order.
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut scan = IntegerScan::default();
        for (key, time) in ids
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
        {
            scan.walked += 1;
            if *time < below {
                scan.below.push(key.clone());
            }
            scan.last = Some(key.clone());
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CanonicalEvent, EventKind, Provider};
    use crate::reports::apply::{ChangeBuilder, CountingSettings};
    use crate::reports::store::Applied;
    use crate::time::EventTime;

    const NOW_MS: i64 = 1_760_000_000_000;
    const HOUR_MS: i64 = 3_600_000;

    fn event(id: u64, campaign: &str, kind: EventKind) -> CanonicalEvent {
        CanonicalEvent {
            provider: Provider::SendGrid,
            event_id: format!("{kind}|{id}"),
            provider_event_id: Some(id.to_string()),
            tenant: Some("acme".into()),
            campaign: Some(campaign.into()),
            recipient: format!("r{}@x.com", id % 7),
            kind,
            occurred_at: EventTime::from_unix_micros(NOW_MS * 1000).unwrap(),
            url: (kind == EventKind::Click).then(|| "https://x.com/".to_owned()),
            message_id: None,
        }
    }

    /// Counts `events` at `record_ms` on `state` from source offset `from`, with a small
    /// expiry walk so it wraps around often.
    fn count<S: StateRead>(state: &S, from: u64, record_ms: i64, events: &[CanonicalEvent]) -> ChangelogRecord {
        let settings = CountingSettings {
            dedup_window_ms: 2 * HOUR_MS,
            ..CountingSettings::default()
        };
        let mut builder = ChangeBuilder::new(state, &settings, 0, from);
        for event in events {
            builder.count(record_ms, event);
        }
        builder.expire(record_ms, 5, 10);
        builder.finish(from + events.len() as u64)
    }

    #[test]
    fn counting_on_the_mirror_gives_the_records_counting_on_the_store_gives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut mirror = Mirror::new(0);
        let kinds = [
            EventKind::Delivered,
            EventKind::Open,
            EventKind::Click,
            EventKind::Processed,
        ];
        let mut from = 0;
        for round in 0..12u64 {
            // Ids repeat across rounds (redeliveries, some past the window) and campaigns
            // come and go.
            let events: Vec<CanonicalEvent> = (0..20)
                .map(|i| {
                    let id = (round * 13 + i) % 60;
                    event(id, &format!("c{}", (round + i) % 3), kinds[(id % 4) as usize])
                })
                .collect();
            let record_ms = NOW_MS + round as i64 * HOUR_MS / 2;
            let plain = count(&store, from, record_ms, &events);
            mirror.align(store.generation(), store.next_offset(0));
            let mirrored = count(&mirror.over(&store), from, record_ms, &events);
            assert_eq!(mirrored, plain, "round {round}");
            assert_eq!(store.apply(0, round, Some(&plain)).unwrap(), Applied::Accepted);
            if round != 5 {
                // Round 5's record is "someone else's": not absorbed, so the mirror starts over.
                mirror.absorb(&plain);
            }
            from = plain.to;
        }
    }
}
