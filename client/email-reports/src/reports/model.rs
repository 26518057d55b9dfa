//! The stored values of the report state and the figures derived from them.
//!
//! Every value is stored whole (JSON) under a key of [`super::keys`]; the changelog carries
//! these same values, so their field names are a stored format: add fields only with serde
//! defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::EventKind;

/// The tenant or campaign an event is counted under when the provider's carrier has none.
pub const UNATTRIBUTED: &str = "_unattributed";

/// One campaign's running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignTotals {
    /// The campaign's tenant (the first one seen on its events).
    pub tenant_id: String,
    /// Distinct recipients with an event of a sent kind.
    pub sent: u64,
    /// Distinct events per kind (every open counts).
    pub counts: BTreeMap<EventKind, u64>,
    /// Distinct recipients with at least one open.
    pub unique_opens: u64,
    /// Distinct recipients with at least one click.
    pub unique_clicks: u64,
    /// Earliest event time seen (µs since the epoch).
    pub first_event_at: i64,
    /// Latest event time seen (µs since the epoch).
    pub last_event_at: i64,
}

impl CampaignTotals {
    /// The count of one kind (0 when none).
    pub fn count(&self, kind: EventKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// Adds another campaign's totals (a tenant's figures are the sums over its campaigns).
    pub fn add(&mut self, other: &CampaignTotals) {
        self.sent += other.sent;
        for (kind, count) in &other.counts {
            *self.counts.entry(*kind).or_default() += count;
        }
        self.unique_opens += other.unique_opens;
        self.unique_clicks += other.unique_clicks;
        if self.first_event_at == 0 || (other.first_event_at != 0 && other.first_event_at < self.first_event_at) {
            self.first_event_at = other.first_event_at;
        }
        self.last_event_at = self.last_event_at.max(other.last_event_at);
    }

    /// The rates the reports show, from these totals.
    pub fn rates(&self) -> Rates {
        let ratio =
            |numerator: u64, denominator: u64| (denominator != 0).then(|| numerator as f64 / denominator as f64);
        let delivered = self.count(EventKind::Delivered);
        Rates {
            delivered: ratio(delivered, self.sent),
            hard_bounce: ratio(self.count(EventKind::HardBounce), self.sent),
            soft_bounce: ratio(self.count(EventKind::SoftBounce), self.sent),
            spam: ratio(
                self.count(EventKind::SpamComplaint) + self.count(EventKind::SpamBlock),
                self.sent,
            ),
            open: ratio(self.unique_opens, delivered),
            click: ratio(self.unique_clicks, delivered),
        }
    }
}

/// Report rates; `None` (JSON `null`) when the denominator is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// delivered / sent.
    pub delivered: Option<f64>,
    /// hard_bounce / sent.
    pub hard_bounce: Option<f64>,
    /// soft_bounce / sent.
    pub soft_bounce: Option<f64>,
    /// (spam_complaint + spam_block) / sent.
    pub spam: Option<f64>,
    /// unique opens / delivered.
    pub open: Option<f64>,
    /// unique clicks / delivered.
    pub click: Option<f64>,
}

/// What one recipient of one campaign has done so far (what makes counts distinct).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientFlags {
    /// Had an event of a sent kind.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sent: bool,
    /// Opened at least once.
    #[serde(default, skip_serializing_if = "is_false")]
    pub opened: bool,
    /// Clicked at least once.
    #[serde(default, skip_serializing_if = "is_false")]
    pub clicked: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// A tenant's suppressed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// `hard_bounce` or `spam_complaint`.
    pub reason: EventKind,
    /// When the provider reported it (µs since the epoch; the earliest such event).
    pub at: i64,
    /// The campaign whose event caused it.
    pub campaign_id: String,
}

/// A recipient who clicked in a campaign (handed to sales).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engaged {
    /// First click (µs since the epoch).
    pub first_click_at: i64,
    /// Last click (µs since the epoch).
    pub last_click_at: i64,
    /// Number of clicks.
    pub clicks: u64,
    /// The URL of the latest click.
    pub last_url: Option<String>,
}

/// A campaign whose complaint rate is over the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpamAlert {
    /// The campaign's tenant.
    pub tenant_id: String,
    /// spam_complaint count.
    pub complaints: u64,
    /// delivered count.
    pub delivered: u64,
    /// complaints / delivered.
    pub rate: f64,
    /// The threshold it is over.
    pub threshold: f64,
    /// Event time (µs) of the event that took the campaign over the threshold.
    pub raised_at: i64,
}

/// Per UTC day: kind → count.
pub type DailyCounts = BTreeMap<EventKind, u64>;

/// Is `kind` one of the kinds that make a recipient count as sent?
pub fn is_sent_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Processed
            | EventKind::Delivered
            | EventKind::Deferred
            | EventKind::HardBounce
            | EventKind::SoftBounce
            | EventKind::SpamBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_null_when_the_denominator_is_zero() {
        let totals = CampaignTotals::default();
        let rates = totals.rates();
        assert_eq!(rates.delivered, None);
        assert_eq!(rates.open, None);
        let json = serde_json::to_value(rates).unwrap();
        assert!(json["spam"].is_null());
    }

    #[test]
    fn rates_follow_the_documented_definitions() {
        let mut totals = CampaignTotals {
            sent: 200,
            unique_opens: 30,
            unique_clicks: 10,
            ..Default::default()
        };
        totals.counts.insert(EventKind::Delivered, 100);
        totals.counts.insert(EventKind::SpamComplaint, 1);
        totals.counts.insert(EventKind::SpamBlock, 3);
        totals.counts.insert(EventKind::HardBounce, 20);
        let rates = totals.rates();
        assert_eq!(rates.delivered, Some(0.5));
        assert_eq!(rates.spam, Some(0.02));
        assert_eq!(rates.hard_bounce, Some(0.1));
        assert_eq!(rates.open, Some(0.3));
        assert_eq!(rates.click, Some(0.1));
    }
}
