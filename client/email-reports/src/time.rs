//! The event time: microseconds since the Unix epoch, UTC.
//!
//! Microseconds because that is the finest any provider reports that matters (Mailgun's float
//! seconds carry µs; Postmark's seven fractional digits are truncated to µs). Stored in the
//! record as RFC 3339 with exactly six fractional digits and `Z`, so the JSON is readable and
//! sorts as text in time order.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, µs since 1970-01-01T00:00:00Z, within chrono's representable range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTime(i64);

const MICROS_PER_SECOND: i64 = 1_000_000;

impl EventTime {
    /// The time `micros` µs after the epoch; `None` outside the representable range.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        DateTime::<Utc>::from_timestamp_micros(micros).map(|_| EventTime(micros))
    }

    /// Microseconds since the epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 / ISO 8601 date-time with an offset (`Z`, `-04:00`), any number of
    /// fractional digits; digits past the microsecond are truncated.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let parsed = DateTime::parse_from_rfc3339(text).ok()?;
        let seconds = parsed.timestamp();
        let micros = i64::from(parsed.timestamp_subsec_micros());
        seconds
            .checked_mul(MICROS_PER_SECOND)?
            .checked_add(micros)
            .and_then(Self::from_unix_micros)
    }

    /// Parses decimal Unix seconds as written (`1513299569`, `1770146798.372891`,
    /// `"1454442600"`), exactly: digits past the microsecond are truncated, no float rounding.
    /// Exponent notation (which JSON allows) is accepted through `f64`.
    pub fn parse_unix_seconds(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.contains(['e', 'E']) {
            let seconds: f64 = text.parse().ok()?;
            let micros = (seconds * MICROS_PER_SECOND as f64).trunc();
            if !micros.is_finite() || micros.abs() > i64::MAX as f64 / 2.0 {
                return None;
            }
            return Self::from_unix_micros(micros as i64);
        }
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let seconds: i64 = whole.parse().ok()?;
        let mut micros_text: String = fraction.chars().take(6).collect();
        while micros_text.len() < 6 {
            micros_text.push('0');
        }
        let sub: i64 = micros_text.parse().ok()?;
        let magnitude = seconds.checked_mul(MICROS_PER_SECOND)?.checked_add(sub)?;
        Self::from_unix_micros(if negative { -magnitude } else { magnitude })
    }

    /// Parses whole Unix milliseconds.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        millis.checked_mul(1_000).and_then(Self::from_unix_micros)
    }

    fn to_datetime(self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_micros(self.0).expect("EventTime is constructed in range")
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_datetime().to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EventTime::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_seven_fraction_digits_and_offsets() {
        let t = EventTime::parse_rfc3339("2019-11-05T16:33:54.9070259Z").unwrap();
        assert_eq!(t.to_string(), "2019-11-05T16:33:54.907025Z");
        let t = EventTime::parse_rfc3339("2016-04-27T16:28:50.3963933-04:00").unwrap();
        assert_eq!(t.to_string(), "2016-04-27T20:28:50.396393Z");
        assert_eq!(EventTime::parse_rfc3339("2016-04-27"), None);
    }

    #[test]
    fn unix_seconds_are_parsed_from_the_text_without_float_rounding() {
        let t = EventTime::parse_unix_seconds("1770327118.6648676").unwrap();
        assert_eq!(t.unix_micros(), 1_770_327_118_664_867);
        assert_eq!(
            EventTime::parse_unix_seconds("1454442600").unwrap().unix_micros(),
            1_454_442_600_000_000
        );
        assert_eq!(
            EventTime::parse_unix_seconds("1.5e9").unwrap().unix_micros(),
            1_500_000_000_000_000
        );
        for bad in ["", "abc", "1.2.3", "-", ".5", "1e400", "99999999999999999999"] {
            assert_eq!(EventTime::parse_unix_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let t = EventTime::from_unix_micros(1_461_095_246_000_000).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2016-04-19T19:47:26.000000Z\"");
        assert_eq!(serde_json::from_str::<EventTime>(&json).unwrap(), t);
    }
}
