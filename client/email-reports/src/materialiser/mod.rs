//! # Materialiser: one consumer group turns `email-events` into the report state
//!
//! **Owns:** the two loops every service instance runs:
//! - the **applier** ([`applier`]) reads every partition of the changelog topic and applies
//!   each record to this instance's [`Store`], so every instance holds the state of all
//!   partitions and answers any query;
//! - the **owner** ([`owner`]) is a member of group `email-reports` on `email-events`: for each
//!   partition the group gives it, it waits until its store has applied that partition's whole
//!   changelog, then counts new events into changelog records (acks=all) and waits to see
//!   each applied before counting on.
//!
//! **Why a changelog.** State must follow a partition when it moves (Kafka Streams' state
//! stores and changelog topics are the model): a new owner needs no hand-over from the old
//! one — it reads the changelog, which every instance already does. Exactness comes from the
//! record rule in [`crate::reports::store`]: a record applies only at its `from` offset, so a
//! zombie owner's late record or a producer retry never counts twice, and counting resumes
//! at the state's own next offset, not at the group's committed offset (which is committed
//! after, and only shows lag).
//!
//! **Invariants:** the store changes only through changelog records; the owner never counts
//! a partition it does not own or has not caught up on; kill -9 at any point loses nothing
//! and double-counts nothing (events are re-read from the state's next offset; duplicates
//! within the dedup window are dropped by `(provider, event_id)`).

pub mod applier;
pub mod owner;

use std::sync::Arc;
use std::time::Duration;

use client::{Admin, Cluster, ErrorCode, NewTopic};
use serde::{Deserialize, Serialize};

use crate::reports::apply::CountingSettings;
pub use crate::reports::store::Store;

/// The materialiser's settings (`[materialiser]` in the service config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaterialiserConfig {
    /// The consumer group.
    pub group_id: String,
    /// The changelog topic (same partition count as the events topic; kept forever).
    pub changelog_topic: String,
    /// Events counted into one changelog record at most (keeps records well under the topic's
    /// `max_message_bytes`).
    pub max_events_per_record: usize,
    /// `session.timeout.ms` of the group member: how soon a dead instance's partitions move.
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// What the state counts and keeps.
    pub counting: CountingSettings,
}

impl Default for MaterialiserConfig {
    fn default() -> Self {
        MaterialiserConfig {
            group_id: "email-reports".into(),
            changelog_topic: "email-reports-changelog".into(),
            max_events_per_record: 4000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            counting: CountingSettings::default(),
        }
    }
}

/// The `email-events` topic as the service creates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSettings {
    /// Topic name.
    pub name: String,
    /// Partitions (fixed: events are keyed by campaign, and a campaign's state lives with its
    /// partition, so adding partitions later would split campaigns).
    pub partitions: u32,
    /// Replication factor.
    pub replication_factor: u32,
    /// Retention (default 365 days).
    pub retention_ms: i64,
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            name: "email-events".into(),
            partitions: 12,
            replication_factor: 3,
            retention_ms: 365 * 24 * 3600 * 1000,
        }
    }
}

/// Creates the events topic and the changelog if missing, and checks they agree on the
/// partition count. Returns it.
pub async fn ensure_topics(
    cluster: &Arc<Cluster>,
    events: &TopicSettings,
    changelog_topic: &str,
) -> anyhow::Result<u32> {
    let admin = Admin::new(Arc::clone(cluster));
    let wanted = [
        NewTopic::new(&events.name, events.partitions, events.replication_factor)
            .config("retention_ms", events.retention_ms.to_string()),
        // The changelog is the state's history: kept forever (no retention_ms). Its records
        // carry up to `max_events_per_record` events' values (kept under 4 MiB by the owner).
        NewTopic::new(changelog_topic, events.partitions, events.replication_factor)
            .config("max_message_bytes", (8 * 1024 * 1024).to_string()),
    ];
    for topic in wanted {
        let name = topic.name.clone();
        match admin.create_topic(topic).await {
            Ok(()) => tracing::info!(topic = %name, "created"),
            Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(error) => anyhow::bail!("creating topic {name}: {error}"),
        }
    }
    let partitions_of = |name: String| {
        let cluster = Arc::clone(cluster);
        async move {
            for _ in 0..50 {
                if let Some(topic) = cluster.topic_description(&name).await? {
                    if !topic.partitions.is_empty() {
                        return Ok::<u32, anyhow::Error>(topic.partitions.len() as u32);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::bail!("topic {name} has no partitions after it was created")
        }
    };
    let source = partitions_of(events.name.clone()).await?;
    let changelog = partitions_of(changelog_topic.to_owned()).await?;
    if source != changelog {
        anyhow::bail!(
            "topic {} has {source} partitions but changelog {changelog_topic} has {changelog}: they must match",
            events.name
        );
    }
    Ok(source)
}
