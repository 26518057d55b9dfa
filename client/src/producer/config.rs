//! The producer's settings: Kafka's names, Kafka's defaults (where this cluster does not differ),
//! and the checks `Producer::new` runs before anything starts.

use super::error::ProduceError;
use proto::record_batch::Compression;
use proto::v1::Acks;
use std::time::Duration;

/// Producer settings, named after Kafka's (`linger.ms` is `linger`, and so on).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`: when the broker answers. Default `all`.
    pub acks: Acks,
    /// `enable.idempotence`: stamp batches so retries never duplicate. Default on; needs
    /// `acks = all` (as in Kafka).
    pub enable_idempotence: bool,
    /// `linger.ms`: how long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// `batch.size`: a batch is sent once it holds about this many bytes of records.
    pub batch_size: usize,
    /// `max.in.flight.requests.per.connection`, per partition here: 1..=5.
    pub max_in_flight: usize,
    /// `compression.type`.
    pub compression: Compression,
    /// `delivery.timeout.ms`: bounds the time from `send` to the record's outcome.
    pub delivery_timeout: Duration,
    /// `request.timeout.ms`: bounds one produce request.
    pub request_timeout: Duration,
    /// `retry.backoff.ms`: first wait before a resend; doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`.
    pub retry_backoff_max: Duration,
    /// `max.block.ms`: how long `send` waits for a topic's metadata.
    pub max_block: Duration,
    /// `buffer.memory`: bytes of records held by the producer (queued, batched, in flight);
    /// `send` waits up to `max_block` for room.
    pub buffer_memory: usize,
    /// Records queued per partition before its task takes them (a second, small bound).
    pub queue_records: usize,
    /// `metadata.max.age.ms`: how long a topic's partition count and limits are trusted before
    /// the next `send` to it fetches them again; a topic that gained partitions gets records on
    /// them (keyed records re-hash over the new count) at most this long after the change.
    pub metadata_max_age: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            enable_idempotence: true,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            max_in_flight: 5,
            compression: Compression::None,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(1000),
            max_block: Duration::from_secs(60),
            buffer_memory: 32 * 1024 * 1024,
            queue_records: 16 * 1024,
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

impl ProducerConfig {
    /// Refuses settings the producer cannot honour.
    pub(super) fn validate(&self) -> Result<(), ProduceError> {
        let invalid = |why: &str| Err(ProduceError::InvalidConfig(why.to_string()));
        if self.enable_idempotence && self.acks != Acks::All {
            return invalid("enable_idempotence needs acks = all; set enable_idempotence = false for acks 0 or 1");
        }
        if !(1..=5).contains(&self.max_in_flight) {
            return invalid("max_in_flight must be within 1..=5");
        }
        if self.batch_size == 0 || self.queue_records == 0 {
            return invalid("batch_size and queue_records must be positive");
        }
        if self.buffer_memory < self.batch_size || self.buffer_memory > u32::MAX as usize {
            return invalid("buffer_memory must be at least batch_size and below 4 GiB");
        }
        if self.delivery_timeout.is_zero() || self.request_timeout.is_zero() {
            return invalid("delivery_timeout and request_timeout must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let config = ProducerConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.retry_backoff, Duration::from_millis(10));
        assert_eq!(config.retry_backoff_max, Duration::from_secs(1));
        assert_eq!(config.max_in_flight, 5);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let refused = |config: ProducerConfig| matches!(config.validate(), Err(ProduceError::InvalidConfig(_)));
        let base = ProducerConfig::default;
        assert!(refused(ProducerConfig {
            acks: Acks::Leader,
            ..base()
        }));
        assert!(!refused(ProducerConfig {
            acks: Acks::Leader,
            enable_idempotence: false,
            ..base()
        }));
        assert!(refused(ProducerConfig {
            max_in_flight: 0,
            ..base()
        }));
        assert!(refused(ProducerConfig {
            max_in_flight: 6,
            ..base()
        }));
        assert!(refused(ProducerConfig {
            batch_size: 0,
            ..base()
        }));
        assert!(refused(ProducerConfig {
            buffer_memory: 1024,
            ..base()
        }));
        assert!(refused(ProducerConfig {
            delivery_timeout: Duration::ZERO,
            ..base()
        }));
    }
}
