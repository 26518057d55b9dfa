//! Counting events: the pure step from (state, events) to the changed values.
//!
//! [`ChangeBuilder`] reads the current state through [`StateRead`] and collects every value it
//! changes, whole, in an overlay; [`ChangeBuilder::finish`] turns that into a
//! [`ChangelogRecord`] covering source offsets `[from, to)`. Nothing here does IO or reads a
//! clock: the record time of each event stands in for "now", so the same events on the same
//! state always give the same record.
//!
//! Definitions (the docs state them for users): `sent` counts distinct recipients with an
//! event of a sent kind; `counts[kind]` counts distinct events; `unique_opens` /
//! `unique_clicks` count distinct recipients; an event is the same event when its
//! `(provider, event_id)` is, within the dedup window.

use std::collections::{BTreeMap, HashMap};

use chrono::DateTime;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys;
use super::model::{
    is_sent_kind, CampaignTotals, DailyCounts, Engaged, RecipientFlags, SpamAlert, Suppression, UNATTRIBUTED,
};
use crate::event::{CanonicalEvent, EventKind};

/// Read access to the state the changes are computed against.
pub trait StateRead {
    /// The stored value of `key`, if any.
    fn get(&self, key: &str) -> Option<Value>;
    /// The stored value of `key` decoded as `T` (a store may decode its bytes directly).
    fn get_as<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.get(key).and_then(|value| serde_json::from_value(value).ok())
    }
    /// The record time (ms) an event id key was counted at: [`get_as`](Self::get_as) unless a
    /// state answers it from memory (the owner's [`super::mirror`]).
    fn seen_at(&self, key: &str) -> Option<i64> {
        self.get_as(key)
    }
    /// A recipient's flags, like [`seen_at`](Self::seen_at).
    fn recipient_flags(&self, key: &str) -> Option<RecipientFlags> {
        self.get_as(key)
    }
    /// Keys with `prefix` that sort before `before`, in order, at most `limit`.
    fn keys_between(&self, prefix: &str, before: &str, limit: usize) -> Vec<String>;
    /// Entries with `prefix` whose key sorts after `after` (from the first when `None`), in
    /// order, at most `limit`: the full key and the value.
    fn entries_after(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<(String, Value)>;

    /// Walks [`entries_after`](Self::entries_after) for values that are integers: the keys
    /// whose value is below `below`, how many entries were walked and the last key walked. A
    /// store may do it without decoding every value (the dedup expiry walks thousands of ids
    /// per record and deletes few).
    fn integers_below(&self, prefix: &str, after: Option<&str>, limit: usize, below: i64) -> IntegerScan {
        let entries = self.entries_after(prefix, after, limit);
        IntegerScan {
            below: entries
                .iter()
                .filter(|(_, value)| value.as_i64().is_some_and(|value| value < below))
                .map(|(key, _)| key.clone())
                .collect(),
            walked: entries.len(),
            last: entries.last().map(|(key, _)| key.clone()),
        }
    }
}

/// What [`StateRead::integers_below`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegerScan {
    /// Keys whose value is below the bound, in key order.
    pub below: Vec<String>,
    /// Entries walked.
    pub walked: usize,
    /// The last key walked.
    pub last: Option<String>,
}

/// The materialiser's settings that shape the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CountingSettings {
    /// A campaign raises a spam alert when spam_complaint / delivered exceeds this (0.001 =
    /// 0.1 %).
    pub spam_alert_threshold: f64,
    /// … and it has at least this many deliveries (so one early complaint is not an alert).
    pub spam_alert_min_delivered: u64,
    /// How long an event id is remembered to drop a provider's redelivery (providers retry for
    /// up to 24 h; the window is twice that).
    pub dedup_window_ms: i64,
    /// Day buckets older than this many days are dropped.
    pub daily_retention_days: i64,
}

impl Default for CountingSettings {
    fn default() -> Self {
        CountingSettings {
            spam_alert_threshold: 0.001,
            spam_alert_min_delivered: 1,
            dedup_window_ms: 48 * 3600 * 1000,
            daily_retention_days: 365,
        }
    }
}

/// One changelog record: the values that counting source offsets `[from, to)` of `partition`
/// changed, whole (`null` deletes). Applied only on a state whose next offset is `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangelogRecord {
    /// The `email-events` partition.
    pub partition: u32,
    /// The first source offset this record covers (the state's next offset it was computed on).
    pub from: u64,
    /// The source offset after the last one it covers.
    pub to: u64,
    /// Key → new value, `null` for a deleted key.
    pub changes: BTreeMap<String, Value>,
    /// The state generation it was computed in; a rebuild starts a new one (see
    /// [`super::store`]), and records of an older one are skipped.
    #[serde(default)]
    pub generation: u64,
    /// A rebuild's marker: the first record of `generation`, with no changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl ChangelogRecord {
    /// The record that starts generation `generation`: every instance that applies it starts
    /// from an empty state, and every owner counts its partitions again from their start.
    pub fn reset(generation: u64) -> ChangelogRecord {
        ChangelogRecord {
            partition: 0,
            from: 0,
            to: 0,
            changes: BTreeMap::new(),
            generation,
            reset: true,
        }
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted.
    New,
    /// Seen before within the dedup window: not counted again.
    Duplicate,
}

/// A campaign's alert during one batch.
struct AlertState {
    /// As the batch last left it.
    alert: Option<SpamAlert>,
    /// Raised, updated or cleared by the batch (an unchanged alert is not written).
    changed: bool,
}

/// Collects the changes of one batch of one partition.
pub struct ChangeBuilder<'s, S: StateRead> {
    state: &'s S,
    settings: &'s CountingSettings,
    partition: u32,
    from: u64,
    generation: u64,
    overlay: BTreeMap<String, Value>,
    /// The hot values (a batch touches few campaigns and days, each many times), kept typed
    /// until `finish` so each is decoded and encoded once per record, not once per event.
    campaigns: HashMap<String, CampaignTotals>,
    days: HashMap<String, DailyCounts>,
    /// Each campaign's alert as this batch last left it (read once per record, not per event)
    /// and whether the batch changed it; written once in `finish` (a campaign over the
    /// threshold changes its alert on every event).
    alerts: HashMap<String, AlertState>,
}

impl<'s, S: StateRead> ChangeBuilder<'s, S> {
    /// Starts a batch of `partition` at source offset `from` (the state's next offset).
    pub fn new(state: &'s S, settings: &'s CountingSettings, partition: u32, from: u64) -> Self {
        ChangeBuilder {
            state,
            settings,
            partition,
            from,
            generation: state
                .get(keys::GENERATION)
                .and_then(|value| value.as_u64())
                .unwrap_or(0),
            overlay: BTreeMap::new(),
            campaigns: HashMap::new(),
            days: HashMap::new(),
            alerts: HashMap::new(),
        }
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.get_or(key, S::get_as)
    }

    /// The value of `key` as this batch left it, else as `read` finds it in the state.
    fn get_or<T: DeserializeOwned>(&self, key: &str, read: impl FnOnce(&S, &str) -> Option<T>) -> Option<T> {
        // A value that does not decode is treated as absent: the state is our own output, so
        // this only happens across an incompatible format change, which the rebuild repairs.
        match self.overlay.get(key) {
            Some(Value::Null) => None,
            Some(value) => T::deserialize(value).ok(),
            None => read(self.state, key),
        }
    }

    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        let value = serde_json::to_value(value).expect("report values serialise");
        self.overlay.insert(key, value);
    }

    fn delete(&mut self, key: String) {
        self.overlay.insert(key, Value::Null);
    }

    /// Counts one event read from source offset `offset` with record time `record_ms`.
    pub fn count(&mut self, record_ms: i64, event: &CanonicalEvent) -> Counted {
        let provider = event.provider.as_str();
        let event_id = keys::clean_id(&event.event_id);
        let dedup_key = keys::dedup(self.partition, provider, &event_id);
        // Seen within the window before this record's time: a redelivery. (Checked against
        // the time, not only the key's presence, so whether an id counts never depends on
        // when the expiry walk got to it: a rebuild counts exactly as the live run did.)
        let seen_at = self.get_or(&dedup_key, S::seen_at);
        if seen_at.is_some_and(|seen_at| seen_at >= record_ms - self.settings.dedup_window_ms) {
            return Counted::Duplicate;
        }
        self.put(dedup_key, &record_ms);

        let campaign_id = keys::clean_id(event.campaign.as_deref().unwrap_or(UNATTRIBUTED)).into_owned();
        let recipient = keys::clean_id(&event.recipient).into_owned();
        let at = event.occurred_at.unix_micros();
        let kind = event.kind;

        let campaign_key = keys::campaign(&campaign_id);
        let mut totals = match self.campaigns.remove(&campaign_key) {
            Some(totals) => totals,
            None => self.get(&campaign_key).unwrap_or_default(),
        };
        if totals.tenant_id.is_empty() {
            totals.tenant_id = keys::clean_id(event.tenant.as_deref().unwrap_or(UNATTRIBUTED)).into_owned();
            self.put(keys::tenant(&totals.tenant_id), &true);
            self.put(keys::tenant_campaign(&totals.tenant_id, &campaign_id), &true);
            totals.first_event_at = at;
        }
        let tenant_id = totals.tenant_id.clone();
        *totals.counts.entry(kind).or_default() += 1;
        totals.first_event_at = totals.first_event_at.min(at);
        totals.last_event_at = totals.last_event_at.max(at);

        let recipient_key = keys::recipient(&campaign_id, &recipient);
        let mut flags = self.get_or(&recipient_key, S::recipient_flags).unwrap_or_default();
        let before = flags;
        if is_sent_kind(kind) && !flags.sent {
            flags.sent = true;
            totals.sent += 1;
        }
        if kind == EventKind::Open && !flags.opened {
            flags.opened = true;
            totals.unique_opens += 1;
        }
        if kind == EventKind::Click && !flags.clicked {
            flags.clicked = true;
            totals.unique_clicks += 1;
        }
        if flags != before {
            self.put(recipient_key, &flags);
        }

        self.count_day(&campaign_id, record_ms, at, kind);
        // A suppression belongs to the tenant the event names (campaign ids are expected to be
        // unique across tenants; if two tenants share one, the totals go to the first tenant
        // seen, but neither tenant's suppressions go to the other).
        let event_tenant = event
            .tenant
            .as_deref()
            .map_or_else(|| tenant_id.clone(), |tenant| keys::clean_id(tenant).into_owned());
        if event_tenant != tenant_id && matches!(kind, EventKind::HardBounce | EventKind::SpamComplaint) {
            self.put(keys::tenant(&event_tenant), &true);
        }
        match kind {
            EventKind::HardBounce | EventKind::SpamComplaint => {
                self.suppress(&event_tenant, &campaign_id, &recipient, kind, at)
            }
            EventKind::Click => self.engage(&campaign_id, &recipient, at, event.url.as_deref()),
            _ => {}
        }
        self.check_alert(&campaign_id, &totals, at);
        self.campaigns.insert(campaign_key, totals);
        Counted::New
    }

    fn count_day(&mut self, campaign_id: &str, record_ms: i64, at_micros: i64, kind: EventKind) {
        // Compared as UTC day numbers (what comparing the dates means), formatted only if kept.
        if utc_day(at_micros) < self.oldest_kept_day(record_ms) {
            return;
        }
        let Some(date) = utc_date(at_micros) else { return };
        let day_key = keys::day(campaign_id, &date);
        let mut day = match self.days.remove(&day_key) {
            Some(day) => day,
            None => self.get::<DailyCounts>(&day_key).unwrap_or_default(),
        };
        if day.is_empty() {
            self.put(keys::day_index(self.partition, &date, campaign_id), &true);
        }
        *day.entry(kind).or_default() += 1;
        self.days.insert(day_key, day);
    }

    /// The first UTC day whose bucket is kept, as of record time `now_ms`.
    fn oldest_kept_day(&self, now_ms: i64) -> i64 {
        utc_day(now_ms.saturating_mul(1000) - self.settings.daily_retention_days * DAY_MICROS)
    }

    fn suppress(&mut self, tenant_id: &str, campaign_id: &str, recipient: &str, reason: EventKind, at: i64) {
        let key = keys::suppression(tenant_id, recipient);
        let existing: Option<Suppression> = self.get(&key);
        if existing.is_some_and(|existing| (existing.at, existing.campaign_id.as_str()) <= (at, campaign_id)) {
            return;
        }
        self.put(
            key,
            &Suppression {
                reason,
                at,
                campaign_id: campaign_id.to_owned(),
            },
        );
    }

    fn engage(&mut self, campaign_id: &str, recipient: &str, at: i64, url: Option<&str>) {
        let key = keys::engaged(campaign_id, recipient);
        let engaged = match self.get::<Engaged>(&key) {
            Some(mut engaged) => {
                engaged.clicks += 1;
                engaged.first_click_at = engaged.first_click_at.min(at);
                if at >= engaged.last_click_at {
                    engaged.last_click_at = at;
                    engaged.last_url = url.map(str::to_owned);
                }
                engaged
            }
            None => Engaged {
                first_click_at: at,
                last_click_at: at,
                clicks: 1,
                last_url: url.map(str::to_owned),
            },
        };
        self.put(key, &engaged);
    }

    fn check_alert(&mut self, campaign_id: &str, totals: &CampaignTotals, at: i64) {
        let complaints = totals.count(EventKind::SpamComplaint);
        let delivered = totals.count(EventKind::Delivered);
        let key = keys::alert(campaign_id);
        let mut state = match self.alerts.remove(&key) {
            Some(state) => state,
            None => AlertState {
                alert: self.get(&key),
                changed: false,
            },
        };
        let over = delivered >= self.settings.spam_alert_min_delivered.max(1)
            && complaints as f64 / delivered as f64 > self.settings.spam_alert_threshold;
        if over {
            let raised_at = state.alert.as_ref().map_or(at, |alert| alert.raised_at);
            state.alert = Some(SpamAlert {
                tenant_id: totals.tenant_id.clone(),
                complaints,
                delivered,
                rate: complaints as f64 / delivered as f64,
                threshold: self.settings.spam_alert_threshold,
                raised_at,
            });
            state.changed = true;
        } else if state.alert.take().is_some() {
            state.changed = true;
        }
        self.alerts.insert(key, state);
    }

    /// Forgets event ids older than the dedup window and day buckets past retention, as of
    /// record time `now_ms`, a bounded amount per call so one record stays small.
    ///
    /// Event ids are one key each (half the writes of a second, time-ordered index): a cursor
    /// walks the partition's ids in key order, `dedup_scan` of them per call, wrapping around,
    /// and deletes those older than the window. Called with about twice the ids a record adds,
    /// a pass takes about half a window, so an id lives between one and one and a half windows.
    pub fn expire(&mut self, now_ms: i64, dedup_scan: usize, day_limit: usize) {
        let dedup_prefix = keys::dedup_prefix(self.partition);
        let cursor_key = keys::dedup_cursor(self.partition);
        let cursor: Option<String> = self.get(&cursor_key);
        let oldest_kept = now_ms - self.settings.dedup_window_ms;
        let scan = self
            .state
            .integers_below(&dedup_prefix, cursor.as_deref(), dedup_scan, oldest_kept);
        for key in scan.below {
            self.delete(key);
        }
        let next_cursor = match scan.last {
            Some(last) if scan.walked == dedup_scan => Some(last),
            _ => None,
        };
        if next_cursor != cursor {
            match next_cursor {
                Some(next) => self.put(cursor_key, &next),
                None => self.delete(cursor_key),
            }
        }
        let day_prefix = keys::day_index_prefix(self.partition);
        let Some(oldest_kept) = utc_date(self.oldest_kept_day(now_ms).saturating_mul(DAY_MICROS)) else {
            return;
        };
        let cutoff = format!("{day_prefix}{oldest_kept}");
        for key in self.state.keys_between(&day_prefix, &cutoff, day_limit) {
            if let Some((date, campaign_id)) = keys::suffix(&key, &day_prefix).split_once(keys::SEP) {
                let day_key = keys::day(campaign_id, date);
                self.days.remove(&day_key);
                self.delete(day_key);
            }
            self.delete(key);
        }
    }

    /// The changelog record for source offsets `[from, to)`.
    pub fn finish(mut self, to: u64) -> ChangelogRecord {
        for (key, totals) in std::mem::take(&mut self.campaigns) {
            self.put(key, &totals);
        }
        for (key, day) in std::mem::take(&mut self.days) {
            self.put(key, &day);
        }
        for (key, state) in std::mem::take(&mut self.alerts) {
            match state {
                AlertState { changed: false, .. } => {}
                AlertState { alert: Some(alert), .. } => self.put(key, &alert),
                AlertState { alert: None, .. } => self.delete(key),
            }
        }
        ChangelogRecord {
            partition: self.partition,
            from: self.from,
            to,
            changes: self.overlay,
            generation: self.generation,
            reset: false,
        }
    }
}

const DAY_MICROS: i64 = 86_400_000_000;

/// The UTC day number (days since the epoch) of a time in µs since the epoch.
fn utc_day(micros: i64) -> i64 {
    micros.div_euclid(DAY_MICROS)
}

/// `YYYY-MM-DD` (UTC) of a time in µs since the epoch.
pub fn utc_date(micros: i64) -> Option<String> {
    DateTime::from_timestamp_micros(micros).map(|time| time.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests;
