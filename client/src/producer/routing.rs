//! Where a record goes: the cache of each topic's layout (partition count and size limit,
//! trusted for `metadata_max_age`) and the sticky choice of a partition for unkeyed records.
//!
//! The layout cache is read on every `send` and refreshed by at most one lookup at a time; a
//! refresh that fails keeps the layout in use rather than holding up sends. A first lookup
//! retries by the client's backoff rule up to `max_block`.

use super::config::ProducerConfig;
use super::error::ProduceError;
use crate::cluster::Cluster;
use crate::partitioner::StickyPartitioner;
use crate::retry::Backoff;
use proto::v1::TopicDescription;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

/// `max.message.bytes` of a topic whose description does not say (Kafka's default, 1 MiB).
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A topic's layout as the producer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TopicLayout {
    /// Partitions of the topic.
    pub(super) partitions: u32,
    /// The topic's `max.message.bytes`.
    pub(super) max_message_bytes: usize,
    /// Trusted until then: `metadata_max_age` after a fetch, `retry_backoff` after a failed one.
    pub(super) refresh_at: Instant,
}

impl TopicLayout {
    /// The layout `description` gives, trusted until `refresh_at`; `None` if it lists no
    /// partitions (not usable yet).
    fn from_description(description: &TopicDescription, refresh_at: Instant) -> Option<TopicLayout> {
        if description.partitions.is_empty() {
            return None;
        }
        let max_message_bytes = description
            .configs
            .get("max_message_bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        Some(TopicLayout {
            partitions: description.partitions.len() as u32,
            max_message_bytes,
            refresh_at,
        })
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// Known topic layouts, shared by every `send` of a producer.
pub(super) struct LayoutCache {
    topics: RwLock<HashMap<String, TopicLayout>>,
    /// Held while one layout is looked up, so a burst of sends to a new topic asks once.
    lookup: tokio::sync::Mutex<()>,
}

impl LayoutCache {
    pub(super) fn new() -> Self {
        LayoutCache {
            topics: RwLock::new(HashMap::new()),
            lookup: tokio::sync::Mutex::new(()),
        }
    }

    fn known(&self, topic: &str) -> Option<TopicLayout> {
        self.topics.read().expect("topic map").get(topic).copied()
    }

    fn remember(&self, topic: &str, layout: TopicLayout) {
        self.topics
            .write()
            .expect("topic map")
            .insert(topic.to_string(), layout);
    }

    /// The layout of `topic`: the cached one while fresh, else looked up in `cluster`.
    pub(super) async fn layout(
        &self,
        cluster: &Cluster,
        config: &ProducerConfig,
        topic: &str,
    ) -> Result<TopicLayout, ProduceError> {
        let fresh = |layout: &TopicLayout| layout.is_fresh(Instant::now());
        if let Some(layout) = self.known(topic).filter(fresh) {
            return Ok(layout);
        }
        let _one_lookup_at_a_time = self.lookup.lock().await;
        let stale = match self.known(topic) {
            Some(layout) if fresh(&layout) => return Ok(layout),
            known => known,
        };
        let started = Instant::now();
        let backoff = Backoff::jittered(config.retry_backoff, config.retry_backoff_max);
        let mut failures = 0;
        loop {
            let answer = cluster.topic_description(topic).await;
            let layout = match &answer {
                Ok(Some(description)) => {
                    TopicLayout::from_description(description, Instant::now() + config.metadata_max_age)
                }
                _ => None,
            };
            if let Some(layout) = layout {
                self.remember(topic, layout);
                return Ok(layout);
            }
            // A refresh that fails keeps the layout in use rather than holding up sends; the
            // next send after `retry_backoff` tries again.
            if let Some(stale) = stale {
                let refresh_at = Instant::now() + config.retry_backoff;
                self.remember(topic, TopicLayout { refresh_at, ..stale });
                return Ok(stale);
            }
            failures += 1;
            let Some(wait) = backoff.retry_after(failures, started.elapsed(), config.max_block) else {
                return Err(match answer {
                    Err(error) => ProduceError::MetadataUnavailable {
                        topic: topic.to_string(),
                        waited: started.elapsed(),
                        last_error: error.to_string(),
                    },
                    Ok(_) => ProduceError::UnknownTopic {
                        topic: topic.to_string(),
                        waited: started.elapsed(),
                    },
                });
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Unkeyed-record partition choice per topic: sticky until about `batch_size` bytes went to
/// the current partition (Kafka's KIP-794 rule).
pub(super) struct StickyRouter {
    batch_size: usize,
    topics: Mutex<HashMap<String, StickyState>>,
    random: AtomicU64,
}

#[derive(Default)]
struct StickyState {
    partitioner: StickyPartitioner,
    bytes_on_current: usize,
}

impl StickyRouter {
    /// A router switching partitions after `batch_size` bytes, its choices drawn from `seed`.
    pub(super) fn new(batch_size: usize, seed: u64) -> Self {
        StickyRouter {
            batch_size,
            topics: Mutex::new(HashMap::new()),
            random: AtomicU64::new(seed | 1),
        }
    }

    /// The partition of `topic` (of `partitions`) for an unkeyed record of `size` bytes.
    pub(super) fn partition(&self, topic: &str, partitions: u32, size: usize) -> u32 {
        let mut sticky = self.topics.lock().expect("sticky map");
        let state = sticky.entry(topic.to_string()).or_default();
        let partition = state.partitioner.partition(partitions, |n| self.random_below(n));
        state.bytes_on_current += size;
        if state.bytes_on_current >= self.batch_size {
            state.bytes_on_current = 0;
            state.partitioner.batch_closed(partitions, |n| self.random_below(n));
        }
        partition
    }

    fn random_below(&self, n: u32) -> u32 {
        // xorshift64: partition choice needs spread, not cryptographic randomness.
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        (x % u64::from(n.max(1))) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::PartitionDescription;
    use std::time::Duration;

    fn description(partitions: u32, max_message_bytes: Option<&str>) -> TopicDescription {
        TopicDescription {
            name: "t".into(),
            partitions: (0..partitions)
                .map(|partition| PartitionDescription {
                    partition,
                    ..Default::default()
                })
                .collect(),
            configs: max_message_bytes
                .map(|v| ("max_message_bytes".to_string(), v.to_string()))
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_layout_takes_the_partition_count_and_size_limit() {
        let at = Instant::now();
        let layout = TopicLayout::from_description(&description(3, Some("2048")), at).expect("usable");
        assert_eq!((layout.partitions, layout.max_message_bytes), (3, 2048));
        let layout = TopicLayout::from_description(&description(1, None), at).expect("usable");
        assert_eq!(layout.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        let layout = TopicLayout::from_description(&description(1, Some("lots")), at).expect("usable");
        assert_eq!(layout.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(TopicLayout::from_description(&description(0, None), at), None);
    }

    #[test]
    fn a_layout_is_trusted_until_its_refresh_time() {
        let at = Instant::now();
        let layout = TopicLayout::from_description(&description(1, None), at).expect("usable");
        assert!(layout.is_fresh(at - Duration::from_millis(1)));
        assert!(!layout.is_fresh(at));
    }

    #[test]
    fn unkeyed_records_stick_to_a_partition_for_a_batch() {
        let router = StickyRouter::new(100, 7);
        let first = router.partition("t", 1000, 40);
        assert_eq!(router.partition("t", 1000, 40), first);
        assert!(router.partition("t", 1000, 40) < 1000);
    }
}
