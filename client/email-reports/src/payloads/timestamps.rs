//! How each provider writes an event time, and so how much of it survives: SendGrid, SparkPost
//! and Mandrill whole Unix seconds; Mailgun float seconds to the microsecond; SES RFC 3339 with
//! milliseconds; Postmark RFC 3339 with seven fractional digits.
//!
//! Times are within 1970 .. 2200 here (checked by [`super::OutgoingEvent`]), so the arithmetic
//! below never meets a negative time.

use crate::event::Provider;
use crate::time::EventTime;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MILLI: i64 = 1_000;

/// The smallest step of `provider`'s time notation, in µs.
pub(super) fn resolution_micros(provider: Provider) -> i64 {
    match provider {
        Provider::SendGrid | Provider::SparkPost | Provider::Mandrill => MICROS_PER_SECOND,
        Provider::Ses => MICROS_PER_MILLI,
        Provider::Mailgun | Provider::Postmark => 1,
    }
}

/// `time` rounded down to a multiple of `step` µs.
pub(super) fn truncate(time: EventTime, step: i64) -> EventTime {
    let micros = time.unix_micros();
    EventTime::from_unix_micros(micros - micros.rem_euclid(step)).expect("rounding down within the range stays in it")
}

/// Whole Unix seconds (SendGrid, SparkPost, Mandrill).
pub(super) fn unix_seconds(time: EventTime) -> i64 {
    time.unix_micros().div_euclid(MICROS_PER_SECOND)
}

/// Unix seconds as a JSON float, exact to the µs (Mailgun's `1770327118.664867`). The float
/// is the one nearest the six-digit decimal; below 2^33 s its shortest rendering, which
/// serde_json writes, is that decimal again.
pub(super) fn unix_seconds_float(time: EventTime) -> serde_json::Value {
    let micros = time.unix_micros();
    let decimal = format!(
        "{}.{:06}",
        micros.div_euclid(MICROS_PER_SECOND),
        micros.rem_euclid(MICROS_PER_SECOND)
    );
    let seconds: f64 = decimal.parse().expect("digits, a dot and digits are a float");
    serde_json::Number::from_f64(seconds).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// RFC 3339 UTC with milliseconds, as SES writes it: `2017-08-09T23:51:25.570Z`.
pub(super) fn rfc3339_millis(time: EventTime) -> String {
    // EventTime displays as `…:25.570123Z`: drop the last three digits.
    let micros_text = time.to_string();
    let (fraction_end, _) = micros_text.split_at(micros_text.len() - "123Z".len());
    format!("{fraction_end}Z")
}

/// RFC 3339 UTC with seven fractional digits, as Postmark writes it:
/// `2019-11-05T16:33:54.9070250Z` (the seventh is always 0: we keep µs).
pub(super) fn rfc3339_seven_digits(time: EventTime) -> String {
    let micros_text = time.to_string();
    let without_zone = micros_text.strip_suffix('Z').unwrap_or(&micros_text);
    format!("{without_zone}0Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notations_match_the_providers_samples() {
        let t = EventTime::parse_rfc3339("2017-08-09T23:51:25.570123Z").unwrap();
        assert_eq!(rfc3339_millis(t), "2017-08-09T23:51:25.570Z");
        assert_eq!(rfc3339_seven_digits(t), "2017-08-09T23:51:25.5701230Z");
        assert_eq!(unix_seconds(t), 1_502_322_685);
        assert_eq!(unix_seconds_float(t).to_string(), "1502322685.570123");
        let whole = EventTime::from_unix_micros(1_502_322_685_000_000).unwrap();
        assert_eq!(
            EventTime::parse_unix_seconds(&unix_seconds_float(whole).to_string()),
            Some(whole)
        );
        assert_eq!(truncate(t, MICROS_PER_MILLI).to_string(), "2017-08-09T23:51:25.570000Z");
    }
}
