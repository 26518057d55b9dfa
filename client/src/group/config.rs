//! The group consumer's settings: Kafka's names and defaults, and the checks
//! `GroupConsumer::new` runs before anything starts.

use super::error::GroupError;
use crate::consumer::{ConsumerConfig, OffsetReset};
use std::time::Duration;

/// Group consumer settings, named after Kafka's (`session.timeout.ms` is `session_timeout`, and
/// so on).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.id`: the group to join. Required.
    pub group_id: String,
    /// `group.instance.id`: makes the member static. A static member that closes leaves "for a
    /// restart" (epoch -2): the coordinator keeps its partitions for `session_timeout`, and an
    /// instance that comes back with the same id in time gets them back without a rebalance.
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`: the coordinator removes a member it has not heard from for this
    /// long (and the member gives up its partitions itself if it could not heartbeat for this
    /// long). Default 45 s.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`: asked of the coordinator, which has the last word (its answer
    /// sets the interval used). Default 3 s.
    pub heartbeat_interval: Duration,
    /// `enable.auto.commit`: commit the positions of records `poll` returned, see the module
    /// doc for exactly when. Default on.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`. Default 5 s.
    pub auto_commit_interval: Duration,
    /// `auto.offset.reset`: where a newly assigned partition without a committed offset starts
    /// (`None`: `poll` fails with [`GroupError::NoCommittedOffset`]), and what happens when a
    /// position falls out of the log. Default `Latest`.
    pub auto_offset_reset: OffsetReset,
    /// `group.remote.assignor`: the coordinator's assignor, `"uniform"` (sticky, the default) or
    /// `"range"`.
    pub assignor: String,
    /// How long `close` may take in all: the final commit and the leave heartbeat. Default 5 s.
    pub close_timeout: Duration,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: u32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// Fetched chunks buffered ahead of the application, across partitions.
    pub prefetch_chunks: usize,
}

impl GroupConfig {
    /// Defaults, in group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            ..GroupConfig::default()
        }
    }

    /// Checks the settings; `GroupConsumer::new` calls it.
    pub fn validate(&self) -> Result<(), GroupError> {
        let invalid = |why: String| Err(GroupError::InvalidConfig(why));
        if self.group_id.is_empty() {
            return invalid("group_id is empty".into());
        }
        if self.group_instance_id.as_deref() == Some("") {
            return invalid("group_instance_id is empty (use None for a dynamic member)".into());
        }
        let millis = |d: Duration| d.as_millis();
        if millis(self.session_timeout) == 0 || millis(self.session_timeout) > u128::from(u32::MAX) {
            return invalid(format!("session_timeout {:?} is out of range", self.session_timeout));
        }
        if millis(self.heartbeat_interval) == 0 || self.heartbeat_interval >= self.session_timeout {
            return invalid(format!(
                "heartbeat_interval {:?} must be positive and below session_timeout {:?}",
                self.heartbeat_interval, self.session_timeout
            ));
        }
        if self.enable_auto_commit && self.auto_commit_interval.is_zero() {
            return invalid("auto_commit_interval is zero".into());
        }
        if self.prefetch_chunks == 0 {
            return invalid("prefetch_chunks is zero".into());
        }
        Ok(())
    }

    /// The fetch settings of the partitions the member owns.
    pub(crate) fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            max_partition_fetch_bytes: self.max_partition_fetch_bytes,
            fetch_max_wait: self.fetch_max_wait,
            auto_offset_reset: self.auto_offset_reset,
            prefetch_chunks: self.prefetch_chunks,
        }
    }
}

impl Default for GroupConfig {
    /// Kafka's defaults; `group_id` is empty and must be set.
    fn default() -> Self {
        let fetch = ConsumerConfig::default();
        GroupConfig {
            group_id: String::new(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: OffsetReset::Latest,
            assignor: "uniform".into(),
            close_timeout: Duration::from_secs(5),
            max_partition_fetch_bytes: fetch.max_partition_fetch_bytes,
            fetch_max_wait: fetch.fetch_max_wait,
            prefetch_chunks: fetch.prefetch_chunks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid_once_a_group_is_named() {
        let config = GroupConfig::new("reports");
        assert_eq!(config.session_timeout, Duration::from_secs(45));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(3));
        assert!(config.enable_auto_commit);
        assert_eq!(config.auto_commit_interval, Duration::from_secs(5));
        assert_eq!(config.assignor, "uniform");
        assert_eq!(config.validate(), Ok(()));
        assert!(GroupConfig::default().validate().is_err(), "no group id");
    }

    #[test]
    fn refuses_inconsistent_timings() {
        let mut config = GroupConfig::new("g");
        config.heartbeat_interval = config.session_timeout;
        assert!(config.validate().is_err());
        let mut config = GroupConfig::new("g");
        config.session_timeout = Duration::from_secs(u64::from(u32::MAX));
        assert!(config.validate().is_err(), "does not fit the wire's u32 ms");
        let mut config = GroupConfig::new("g");
        config.auto_commit_interval = Duration::ZERO;
        assert!(config.validate().is_err());
        config.enable_auto_commit = false;
        assert_eq!(
            config.validate(),
            Ok(()),
            "the interval does not matter without auto-commit"
        );
        let mut config = GroupConfig::new("g");
        config.group_instance_id = Some(String::new());
        assert!(config.validate().is_err());
    }
}
