//! A log's settings by name (a string map, Kafka-style: what `topic create --config`,
//! `alter-config` and `topic describe` carry) ⇄ [`LogConfig`]. Pure.

use super::config::{FsyncPolicy, LogConfig};
use std::collections::{BTreeMap, HashMap};

/// Builds a `LogConfig` from defaults plus the given overrides. Unknown keys and unparsable
/// values are errors naming the key.
pub fn log_config_from_map(configs: &HashMap<String, String>) -> Result<LogConfig, String> {
    let mut config = LogConfig::default();
    for (key, value) in configs {
        let number = || {
            value
                .parse::<i64>()
                .map_err(|_| format!("{key}: {value:?} is not a number"))
        };
        let positive = || -> Result<u64, String> {
            let n = number()?;
            u64::try_from(n).map_err(|_| format!("{key}: must not be negative"))
        };
        match key.as_str() {
            "segment_bytes" => config.segment_bytes = positive()?,
            "segment_ms" => config.segment_ms = positive()?,
            "index_interval_bytes" => {
                config.index_interval_bytes = u32::try_from(positive()?).map_err(|_| format!("{key}: too large"))?
            }
            "fsync" => config.fsync = value.parse::<FsyncPolicy>().map_err(|e| e.to_string())?,
            "retention_ms" => config.retention_ms = if number()? < 0 { None } else { Some(positive()?) },
            "retention_bytes" => config.retention_bytes = if number()? < 0 { None } else { Some(positive()?) },
            "max_message_bytes" => {
                config.max_message_bytes = u32::try_from(positive()?).map_err(|_| format!("{key}: too large"))?
            }
            other => return Err(format!("unknown topic config {other:?}")),
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The wire form of a `LogConfig`; `-1` means unbounded.
pub fn log_config_to_map(config: &LogConfig) -> HashMap<String, String> {
    let optional = |value: Option<u64>| value.map_or("-1".to_string(), |v| v.to_string());
    HashMap::from([
        ("segment_bytes".to_string(), config.segment_bytes.to_string()),
        ("segment_ms".to_string(), config.segment_ms.to_string()),
        (
            "index_interval_bytes".to_string(),
            config.index_interval_bytes.to_string(),
        ),
        ("fsync".to_string(), config.fsync.to_string()),
        ("retention_ms".to_string(), optional(config.retention_ms)),
        ("retention_bytes".to_string(), optional(config.retention_bytes)),
        ("max_message_bytes".to_string(), config.max_message_bytes.to_string()),
    ])
}

/// `current` with each key of `set` taking its value and each key of `reset` back at its
/// default; an unknown key or a bad value refuses the whole change, naming it.
pub fn log_config_with_changes(
    current: &LogConfig,
    set: &BTreeMap<String, String>,
    reset: &[String],
) -> Result<LogConfig, String> {
    let mut configs = log_config_to_map(current);
    for key in reset {
        if configs.remove(key).is_none() {
            return Err(format!("unknown topic config {key:?}"));
        }
    }
    configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    log_config_from_map(&configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_set_and_reset_keys_and_refuse_unknown_ones_whole() {
        let current = LogConfig {
            max_message_bytes: 2048,
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        };
        let set = BTreeMap::from([("segment_bytes".to_string(), "4096".to_string())]);
        let changed = log_config_with_changes(&current, &set, &["fsync".to_string()]).unwrap();
        assert_eq!(changed.segment_bytes, 4096);
        assert_eq!(changed.fsync, LogConfig::default().fsync, "reset to the default");
        assert_eq!(changed.max_message_bytes, 2048, "untouched keys stay");
        assert!(log_config_with_changes(&current, &BTreeMap::new(), &["colour".to_string()]).is_err());
        let bad = BTreeMap::from([("segment_bytes".to_string(), "1".to_string())]);
        assert!(log_config_with_changes(&current, &bad, &[]).is_err());
    }

    #[test]
    fn round_trips_and_rejects_unknown_or_bad_values() {
        let config = LogConfig {
            retention_ms: None,
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        };
        assert_eq!(log_config_from_map(&log_config_to_map(&config)).unwrap(), config);
        let bad = |k: &str, v: &str| log_config_from_map(&HashMap::from([(k.to_string(), v.to_string())]));
        assert!(bad("retention.ms", "5").unwrap_err().contains("unknown"));
        assert!(bad("segment_bytes", "0").is_err());
        assert!(bad("segment_bytes", "-5").is_err());
        assert!(bad("fsync", "sometimes").is_err());
        assert_eq!(bad("retention_ms", "-1").unwrap().retention_ms, None);
    }
}
