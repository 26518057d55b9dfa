//! The local report store: the state in one sled tree, changed only by applying changelog
//! records, read by the counting step and by the reports API.
//!
//! Each record is applied in one sled batch together with this store's changelog position, so
//! after a crash (sled keeps a prefix of its batches) the store is the state after some whole
//! number of records and resumes reading the changelog right after the last one it kept.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::apply::{ChangelogRecord, IntegerScan, StateRead};
use super::keys;
use super::model::Suppression;

/// A store that could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("report store: {0}")]
pub struct StoreError(#[from] sled::Error);

/// What applying a changelog record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Its changes are in the state; the partition's next source offset is its `to`.
    Accepted,
    /// Skipped: the state's next source offset was not its `from` (another owner's record got
    /// there first, or it is a copy). Only the changelog position moved.
    Stale {
        /// The state's next source offset, which the record did not start at.
        next: u64,
    },
    /// Skipped: the record did not decode.
    Undecodable,
}

/// The report store of one instance.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    state: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(dir).flush_every_ms(Some(200)).open()?;
        let state = db.open_tree("state")?;
        Ok(Store { db, state })
    }

    fn read_u64(&self, key: &str) -> u64 {
        self.get::<u64>(key).unwrap_or(0)
    }

    /// The next `email-events` offset of `partition` the state has not counted.
    pub fn next_offset(&self, partition: u32) -> u64 {
        self.read_u64(&keys::next_offset(partition))
    }

    /// The state generation (0 until the first rebuild).
    pub fn generation(&self) -> u64 {
        self.read_u64(keys::GENERATION)
    }

    /// The next changelog offset of `partition` this store has not applied.
    pub fn changelog_position(&self, partition: u32) -> u64 {
        self.read_u64(&keys::changelog_position(partition))
    }

    /// Applies the changelog record read at `offset` of changelog partition `partition`
    /// (`record` is `None` when it did not decode): its changes and the new position, atomically.
    pub fn apply(&self, partition: u32, offset: u64, record: Option<&ChangelogRecord>) -> Result<Applied, StoreError> {
        let Some(record) = record else {
            // Not applied, and the position does not move past it either.
            return Ok(Applied::Undecodable);
        };
        let mut batch = sled::Batch::default();
        batch.insert(
            keys::changelog_position(partition).as_bytes(),
            encode(&Value::from(offset + 1)),
        );
        let outcome = {
            {
                let generation = self.generation();
                if record.generation > generation {
                    // A rebuild: start over from an empty state (this instance's changelog
                    // positions stay), in the new generation.
                    for key in self.state.iter().keys() {
                        let key = key?;
                        if !key.starts_with(keys::CHANGELOG_POSITION_PREFIX.as_bytes()) {
                            batch.remove(key);
                        }
                    }
                    batch.insert(keys::GENERATION.as_bytes(), encode(&Value::from(record.generation)));
                }
                let next = if record.generation > generation {
                    0
                } else {
                    self.next_offset(record.partition)
                };
                if record.generation < generation || (record.reset && record.generation == generation) {
                    Applied::Stale { next }
                } else if record.reset {
                    Applied::Accepted
                } else if record.from != next {
                    Applied::Stale { next }
                } else {
                    for (key, value) in &record.changes {
                        if value.is_null() {
                            batch.remove(key.as_bytes());
                        } else if key.starts_with(keys::SUPPRESSION_PREFIX)
                            && record.generation == generation
                            && !self.replaces_suppression(key, value)
                        {
                            // Kept: see `replaces_suppression`.
                        } else {
                            batch.insert(key.as_bytes(), encode(value));
                        }
                    }
                    batch.insert(
                        keys::next_offset(record.partition).as_bytes(),
                        encode(&Value::from(record.to)),
                    );
                    Applied::Accepted
                }
            }
        };
        self.state.apply_batch(batch)?;
        Ok(outcome)
    }

    /// Whether `value` should replace the suppression stored at `key`. A tenant's campaigns
    /// live in different partitions, so two owners may write the same suppression; keeping the
    /// earliest event (ties: the smaller campaign id) makes the outcome independent of the
    /// order in which an instance applies the partitions' records, so every instance agrees.
    fn replaces_suppression(&self, key: &str, value: &Value) -> bool {
        let Some(existing) = self.get::<Suppression>(key) else {
            return true;
        };
        let Ok(new) = serde_json::from_value::<Suppression>(value.clone()) else {
            return false;
        };
        (new.at, &new.campaign_id) < (existing.at, &existing.campaign_id)
    }

    /// The value at `key`, decoded.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = self.state.get(key.as_bytes()).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Up to `limit` entries with `prefix`, in key order, starting after the key
    /// `prefix + after` when given: the id after the prefix and the value.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)> {
        let after = after.map(|after| format!("{prefix}{after}"));
        self.scan(prefix, after.as_deref(), limit)
            .into_iter()
            .map(|(key, value)| (keys::suffix(&key, prefix).to_owned(), value))
            .collect()
    }

    /// Every id under `prefix` (the key after the prefix), in order.
    pub fn ids(&self, prefix: &str) -> Vec<String> {
        self.state
            .scan_prefix(prefix.as_bytes())
            .keys()
            .filter_map(Result::ok)
            .filter_map(|key| Some(keys::suffix(std::str::from_utf8(&key).ok()?, prefix).to_owned()))
            .collect()
    }

    /// Every entry under `prefix` whose value decodes as `T`, in key order: the full key and the
    /// value (`None` when one does not decode).
    pub fn entries<T: DeserializeOwned>(&self, prefix: &str) -> Option<Vec<(String, T)>> {
        self.walk(prefix, None, usize::MAX)
            .map(|(key, value)| {
                let key = String::from_utf8(key.to_vec()).ok()?;
                Some((key, serde_json::from_slice(&value).ok()?))
            })
            .collect()
    }

    /// Up to `limit` entries with `prefix` in key order, after the full key `after` when given.
    fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)> {
        self.walk(prefix, after, limit)
            .filter_map(|(key, value)| {
                let key = String::from_utf8(key.to_vec()).ok()?;
                Some((key, serde_json::from_slice(&value).ok()?))
            })
            .collect()
    }

    /// The raw entries [`scan`](Self::scan) decodes.
    fn walk<'s>(
        &'s self,
        prefix: &'s str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Iterator<Item = (sled::IVec, sled::IVec)> + 's {
        let start = match after {
            // The smallest key greater than `after`: append a NUL.
            Some(after) => format!("{after}\u{0}"),
            None => prefix.to_owned(),
        };
        self.state
            .range(start.as_bytes()..)
            .take_while(move |entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(prefix.as_bytes()))
            })
            .filter_map(Result::ok)
            .take(limit)
    }

    /// Writes everything to disk (on a clean shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

impl StateRead for Store {
    fn get(&self, key: &str) -> Option<Value> {
        Store::get(self, key)
    }

    fn get_as<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        Store::get(self, key)
    }

    fn entries_after(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)> {
        self.scan(prefix, after, limit)
    }

    fn integers_below(&self, prefix: &str, after: Option<&str>, limit: usize, below: i64) -> IntegerScan {
        let mut scan = IntegerScan::default();
        let mut last = None;
        let entries = self.walk(prefix, after, limit);
        for (key, value) in entries {
            scan.walked += 1;
            // An integer is stored as its JSON text: digits, no decoding of a JSON value.
            let integer = std::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.parse::<i64>().ok());
            if integer.is_some_and(|integer| integer < below) {
                if let Ok(key) = std::str::from_utf8(&key) {
                    scan.below.push(key.to_owned());
                }
            }
            last = Some(key);
        }
        scan.last = last.and_then(|key| String::from_utf8(key.to_vec()).ok());
        scan
    }

    fn keys_between(&self, prefix: &str, before: &str, limit: usize) -> Vec<String> {
        self.state
            .range(prefix.as_bytes()..before.as_bytes())
            .keys()
            .filter_map(Result::ok)
            .take(limit)
            .filter_map(|key| String::from_utf8(key.to_vec()).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::event::EventKind;

    fn record(partition: u32, from: u64, to: u64, changes: &[(&str, Value)]) -> ChangelogRecord {
        ChangelogRecord {
            partition,
            from,
            to,
            changes: changes
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone()))
                .collect::<BTreeMap<_, _>>(),
            generation: 0,
            reset: false,
        }
    }

    #[test]
    fn the_integer_walk_finds_what_decoding_every_value_finds() {
        /// The trait's default walk, through `entries_after` alone.
        struct Decoding<'a>(&'a Store);
        impl StateRead for Decoding<'_> {
            fn get(&self, key: &str) -> Option<Value> {
                StateRead::get(self.0, key)
            }
            fn keys_between(&self, prefix: &str, before: &str, limit: usize) -> Vec<String> {
                self.0.keys_between(prefix, before, limit)
            }
            fn entries_after(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)> {
                self.0.entries_after(prefix, after, limit)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let changes: Vec<(String, Value)> = (0..50)
            .map(|i| (format!("d/0/id-{i:03}"), json!(1_000 + i * 10)))
            .chain([
                ("d/0/odd".to_string(), json!("not a number")),
                ("e/0/x".to_string(), json!(1)),
            ])
            .collect();
        let changes: Vec<(&str, Value)> = changes.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        store.apply(0, 0, Some(&record(0, 0, 1, &changes))).unwrap();
        for (after, limit, below) in [
            (None, 20, 1_100),
            (Some("d/0/id-010"), 100, 1_300),
            (Some("d/0/id-049"), 5, 2_000),
        ] {
            assert_eq!(
                store.integers_below("d/0/", after, limit, below),
                Decoding(&store).integers_below("d/0/", after, limit, below),
                "after {after:?}, limit {limit}, below {below}"
            );
        }
    }

    #[test]
    fn a_record_applies_only_at_the_states_next_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = record(3, 0, 10, &[("camp/a", json!({"tenant_id": "t", "sent": 1}))]);
        assert_eq!(store.apply(3, 0, Some(&first)).unwrap(), Applied::Accepted);
        assert_eq!(store.next_offset(3), 10);
        // The same record again (a producer retry) and a zombie's overlapping one are skipped.
        assert_eq!(store.apply(3, 1, Some(&first)).unwrap(), Applied::Stale { next: 10 });
        let zombie = record(3, 5, 12, &[("camp/a", json!({"tenant_id": "t", "sent": 99}))]);
        assert_eq!(store.apply(3, 2, Some(&zombie)).unwrap(), Applied::Stale { next: 10 });
        assert_eq!(store.apply(3, 3, None).unwrap(), Applied::Undecodable);
        assert_eq!(store.get::<Value>("camp/a").unwrap()["sent"], 1);
        assert_eq!(
            store.changelog_position(3),
            3,
            "an undecodable record is not passed over"
        );
        store.apply(3, 3, Some(&record(3, 0, 1, &[]))).unwrap();
        assert_eq!(store.changelog_position(3), 4);
        // Deletions and the next record in line.
        let next = record(3, 10, 11, &[("camp/a", Value::Null)]);
        assert_eq!(store.apply(3, 4, Some(&next)).unwrap(), Applied::Accepted);
        assert!(store.get::<Value>("camp/a").is_none());
    }

    #[test]
    fn suppressions_from_two_partitions_agree_whatever_the_order() {
        let suppression = |at: i64, campaign: &str| {
            serde_json::to_value(Suppression {
                reason: EventKind::HardBounce,
                at,
                campaign_id: campaign.into(),
            })
            .unwrap()
        };
        let key = keys::suppression("t", "a@x.com");
        let early = record(0, 0, 1, &[(key.as_str(), suppression(5, "c0"))]);
        let late = record(1, 0, 1, &[(key.as_str(), suppression(9, "c1"))]);
        for order in [[&early, &late], [&late, &early]] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            for record in order {
                store.apply(record.partition, 0, Some(record)).unwrap();
            }
            assert_eq!(store.get::<Suppression>(&key).unwrap().at, 5);
        }
    }

    #[test]
    fn listing_pages_through_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let changes: Vec<(String, Value)> = (0..5).map(|i| (keys::tenant(&format!("t{i}")), json!(true))).collect();
        let changes: Vec<(&str, Value)> = changes
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        store.apply(0, 0, Some(&record(0, 0, 1, &changes))).unwrap();
        let first = store.list(keys::TENANT_PREFIX, None, 2);
        assert_eq!(
            first.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["t0", "t1"]
        );
        let second = store.list(keys::TENANT_PREFIX, Some("t1"), 10);
        assert_eq!(
            second.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["t2", "t3", "t4"]
        );
    }

    #[test]
    fn a_newer_generation_starts_from_an_empty_state_and_older_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let counted = record(0, 0, 5, &[("camp/a", json!({"tenant_id": "t", "sent": 3}))]);
        assert_eq!(store.apply(0, 0, Some(&counted)).unwrap(), Applied::Accepted);
        store.apply(1, 0, Some(&record(1, 0, 7, &[]))).unwrap();

        assert_eq!(
            store.apply(2, 0, Some(&ChangelogRecord::reset(1))).unwrap(),
            Applied::Accepted
        );
        assert_eq!(store.generation(), 1);
        assert!(store.get::<Value>("camp/a").is_none());
        assert_eq!((store.next_offset(0), store.next_offset(1)), (0, 0));
        // This instance's changelog positions survive the clearing.
        assert_eq!((store.changelog_position(0), store.changelog_position(2)), (1, 1));

        // A late record of generation 0 (an owner that had not seen the reset) is skipped …
        let late = record(1, 7, 9, &[("camp/b", json!({"tenant_id": "t", "sent": 1}))]);
        assert_eq!(store.apply(1, 1, Some(&late)).unwrap(), Applied::Stale { next: 0 });
        // … a second reset of the same generation changes nothing …
        assert_eq!(
            store.apply(0, 1, Some(&ChangelogRecord::reset(1))).unwrap(),
            Applied::Stale { next: 0 }
        );
        // … and generation 1 counts from the start.
        let recounted = ChangelogRecord {
            generation: 1,
            ..record(0, 0, 5, &[("camp/a", json!({"tenant_id": "t", "sent": 3}))])
        };
        assert_eq!(store.apply(0, 2, Some(&recounted)).unwrap(), Applied::Accepted);
        assert_eq!(store.next_offset(0), 5);
    }
}
