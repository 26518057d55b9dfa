//! The key layout of the report state: one ordered key space (a sled tree), text keys with a
//! family prefix, so every list the API serves is one prefix scan in key order.
//!
//! `SEP` (U+001F, unit separator) joins the parts of a key; ids never contain it (the
//! materialiser replaces control characters in ids before it builds keys, see [`clean_id`]).
//! Partition numbers are zero-padded so they sort numerically.

/// Separator between the parts of a key.
pub const SEP: char = '\u{1f}';

/// `next/{p}`: the next `email-events` offset of partition `p` the state has not counted.
pub fn next_offset(partition: u32) -> String {
    format!("next/{partition:05}")
}

/// `clpos/{p}`: local only, never in the changelog: the next changelog offset of partition `p`
/// this store has not applied.
pub fn changelog_position(partition: u32) -> String {
    format!("clpos/{partition:05}")
}

/// `generation` → the state generation (0 until the first rebuild); kept across a rebuild's
/// clearing, like the changelog positions.
pub const GENERATION: &str = "generation";

/// Prefix of the changelog positions.
pub const CHANGELOG_POSITION_PREFIX: &str = "clpos/";

/// `camp/{campaign}` → campaign totals.
pub fn campaign(campaign: &str) -> String {
    format!("camp/{campaign}")
}

/// `tenant/{tenant}` → `true`: the tenant index.
pub fn tenant(tenant: &str) -> String {
    format!("tenant/{tenant}")
}

/// Prefix of the tenant index.
pub const TENANT_PREFIX: &str = "tenant/";

/// `tc/{tenant}␟{campaign}` → `true`: a tenant's campaigns.
pub fn tenant_campaign(tenant: &str, campaign: &str) -> String {
    format!("tc/{tenant}{SEP}{campaign}")
}

/// Prefix of one tenant's campaigns.
pub fn tenant_campaigns_prefix(tenant: &str) -> String {
    format!("tc/{tenant}{SEP}")
}

/// `day/{campaign}␟{YYYY-MM-DD}` → kind → count.
pub fn day(campaign: &str, date: &str) -> String {
    format!("day/{campaign}{SEP}{date}")
}

/// Prefix of one campaign's days.
pub fn days_prefix(campaign: &str) -> String {
    format!("day/{campaign}{SEP}")
}

/// `dayidx/{p}/{YYYY-MM-DD}␟{campaign}` → `true`: day buckets by date, per source partition,
/// so the owner of a partition finds its buckets past retention with one scan.
pub fn day_index(partition: u32, date: &str, campaign: &str) -> String {
    format!("dayidx/{partition:05}/{date}{SEP}{campaign}")
}

/// Prefix of a partition's day index.
pub fn day_index_prefix(partition: u32) -> String {
    format!("dayidx/{partition:05}/")
}

/// `rcpt/{campaign}␟{recipient}` → recipient flags.
pub fn recipient(campaign: &str, recipient: &str) -> String {
    format!("rcpt/{campaign}{SEP}{recipient}")
}

/// Prefix of one campaign's recipients.
pub fn recipients_prefix(campaign: &str) -> String {
    format!("rcpt/{campaign}{SEP}")
}

/// Prefix of every recipient key.
pub const RECIPIENT_PREFIX: &str = "rcpt/";

/// `supp/{tenant}␟{recipient}` → suppression.
pub fn suppression(tenant: &str, recipient: &str) -> String {
    format!("supp/{tenant}{SEP}{recipient}")
}

/// Prefix of every suppression.
pub const SUPPRESSION_PREFIX: &str = "supp/";

/// Prefix of one tenant's suppressions.
pub fn suppressions_prefix(tenant: &str) -> String {
    format!("supp/{tenant}{SEP}")
}

/// `eng/{campaign}␟{recipient}` → engaged recipient.
pub fn engaged(campaign: &str, recipient: &str) -> String {
    format!("eng/{campaign}{SEP}{recipient}")
}

/// Prefix of one campaign's engaged recipients.
pub fn engaged_prefix(campaign: &str) -> String {
    format!("eng/{campaign}{SEP}")
}

/// `alert/{campaign}` → spam alert.
pub fn alert(campaign: &str) -> String {
    format!("alert/{campaign}")
}

/// Prefix of every alert.
pub const ALERT_PREFIX: &str = "alert/";

/// `dd/{p}/{provider}␟{event id}` → the record time (ms) it was first counted at.
pub fn dedup(partition: u32, provider: &str, event_id: &str) -> String {
    format!("dd/{partition:05}/{provider}{SEP}{event_id}")
}

/// Prefix of a partition's event ids.
pub fn dedup_prefix(partition: u32) -> String {
    format!("dd/{partition:05}/")
}

/// `ddcursor/{p}` → the last event id key the expiry walk examined.
pub fn dedup_cursor(partition: u32) -> String {
    format!("ddcursor/{partition:05}")
}

/// Replaces control characters (the separator among them) in an id from a provider.
pub fn clean_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.chars().any(char::is_control) {
        std::borrow::Cow::Owned(id.chars().map(|c| if c.is_control() { '?' } else { c }).collect())
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

/// The part of `key` after `prefix` (for listing ids out of a prefix scan).
pub fn suffix<'k>(key: &'k str, prefix: &str) -> &'k str {
    key.strip_prefix(prefix).unwrap_or(key)
}
