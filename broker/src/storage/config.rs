//! Per-topic log settings (segment size, index density, fsync policy, retention) with Kafka-like
//! defaults. Parsed from TOML with serde, validated once at start-up.

use super::error::{StorageError, StorageResult};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Largest allowed segment: index positions are 32-bit.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Smallest allowed segment, so a segment always holds at least a few frames' headers.
pub const MIN_SEGMENT_BYTES: u64 = 1024;

/// When appended data is fsynced, and so when an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Durable (fdatasync done) before the append is reported durable. The default.
    Always,
    /// Reported durable once written to the page cache; fsynced at most this long afterwards.
    /// Survives a process crash, not a machine crash within the interval.
    Interval(Duration),
    /// Reported durable once written to the page cache; fsynced only when a segment rolls and on
    /// close. Relies on replication for durability.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = StorageError;

    fn from_str(text: &str) -> StorageResult<Self> {
        let invalid = || {
            StorageError::InvalidConfig(format!(
                "fsync policy {text:?}: expected \"always\", \"never\" or \"interval:<ms>\" with ms > 0"
            ))
        };
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => {
                let ms = other.strip_prefix("interval:").ok_or_else(invalid)?;
                let ms: u64 = ms.parse().map_err(|_| invalid())?;
                if ms == 0 {
                    return Err(invalid());
                }
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The settings of one partition log. Names follow Kafka's topic configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would exceed this (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one is this old (`segment.ms`).
    pub segment_ms: u64,
    /// Bytes of log between two sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// When appends become durable (`flush` policy): "always", "interval:<ms>", "never".
    pub fsync: FsyncPolicy,
    /// Delete segments whose newest record is older than this; `None` keeps forever
    /// (`retention.ms`).
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this; `None` is unbounded
    /// (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Largest record batch a producer may send (`max.message.bytes`).
    pub max_message_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::Always,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1024 * 1024,
        }
    }
}

impl LogConfig {
    /// Checks every value is in range; called before a log is opened.
    pub fn validate(&self) -> StorageResult<()> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(StorageError::InvalidConfig(format!(
                "segment_bytes {} must be within [{MIN_SEGMENT_BYTES}, {MAX_SEGMENT_BYTES}]",
                self.segment_bytes
            )));
        }
        if self.segment_ms == 0 {
            return Err(StorageError::InvalidConfig("segment_ms must be > 0".into()));
        }
        if self.index_interval_bytes == 0 {
            return Err(StorageError::InvalidConfig("index_interval_bytes must be > 0".into()));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes as usize > super::frame::MAX_BODY_LEN {
            return Err(StorageError::InvalidConfig(format!(
                "max_message_bytes {} must be within [1, {}]",
                self.max_message_bytes,
                super::frame::MAX_BODY_LEN
            )));
        }
        if self.retention_ms == Some(0) {
            return Err(StorageError::InvalidConfig(
                "retention_ms must be > 0 (omit it to keep data forever)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_prints() {
        for text in ["always", "never", "interval:250"] {
            assert_eq!(text.parse::<FsyncPolicy>().unwrap().to_string(), text);
        }
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:-5", "interval:x"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let zero_segment = LogConfig {
            segment_bytes: 0,
            ..LogConfig::default()
        };
        assert!(matches!(zero_segment.validate(), Err(StorageError::InvalidConfig(_))));
        let zero_interval = LogConfig {
            index_interval_bytes: 0,
            ..LogConfig::default()
        };
        assert!(zero_interval.validate().is_err());
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_uses_defaults_and_refuses_unknown_keys() {
        let config: LogConfig = toml::from_str("fsync = \"interval:100\"\nsegment_bytes = 4096").unwrap();
        assert_eq!(config.fsync, FsyncPolicy::Interval(Duration::from_millis(100)));
        assert_eq!(config.index_interval_bytes, 4096);
        assert!(toml::from_str::<LogConfig>("segment_size = 1").is_err());
    }

    #[test]
    fn example_config_in_deploy_loads_and_equals_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/topic-defaults.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let config: LogConfig = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config, LogConfig::default());
    }
}
