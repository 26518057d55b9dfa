//! The accepted window of a signed timestamp (SendGrid's header, Mailgun's `signature.timestamp`).
//!
//! A signature that covers a timestamp can be replayed until the receiver stops accepting that
//! timestamp; the window is that bound. It is asymmetric: up to `max_age_secs` old (delivery
//! delay, queueing at the provider) but only [`MAX_FUTURE_SKEW_SECS`] ahead, which is all a
//! provider's clock can honestly be ahead of ours.

use super::error::SignatureError;

/// How far in the future a signed timestamp may be: clock skew between the provider and us.
pub const MAX_FUTURE_SKEW_SECS: i64 = 60;

/// `[now - max_age_secs, now + MAX_FUTURE_SKEW_SECS]`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Freshness {
    max_age_secs: i64,
}

impl Freshness {
    pub(super) fn new(max_age_secs: u32) -> Self {
        Freshness {
            max_age_secs: i64::from(max_age_secs),
        }
    }

    pub(super) fn max_age_secs(self) -> i64 {
        self.max_age_secs
    }

    pub(super) fn check(self, timestamp: i64, now_unix_secs: i64) -> Result<(), SignatureError> {
        let age_secs = now_unix_secs.saturating_sub(timestamp);
        if age_secs > self.max_age_secs || age_secs < -MAX_FUTURE_SKEW_SECS {
            return Err(SignatureError::TimestampOutsideWindow {
                age_secs,
                max_age_secs: self.max_age_secs,
                max_future_secs: MAX_FUTURE_SKEW_SECS,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_edges_are_inclusive() {
        let window = Freshness::new(600);
        let now = 1_700_000_000;
        assert!(window.check(now, now).is_ok());
        assert!(window.check(now - 600, now).is_ok());
        assert!(window.check(now + MAX_FUTURE_SKEW_SECS, now).is_ok());
        assert_eq!(
            window.check(now - 601, now),
            Err(SignatureError::TimestampOutsideWindow {
                age_secs: 601,
                max_age_secs: 600,
                max_future_secs: MAX_FUTURE_SKEW_SECS,
            })
        );
        assert!(matches!(
            window.check(now + MAX_FUTURE_SKEW_SECS + 1, now),
            Err(SignatureError::TimestampOutsideWindow { age_secs: -61, .. })
        ));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let window = Freshness::new(600);
        assert!(window.check(i64::MIN, 1_700_000_000).is_err());
        assert!(window.check(i64::MAX, 1_700_000_000).is_err());
    }
}
