//! The applier: reads every changelog partition into this instance's store, from the
//! position the store recorded, and publishes how far it got.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use client::{Cluster, Consumer, ConsumerConfig, OffsetReset, SeekTo};
use tokio::sync::watch;

use crate::reports::apply::ChangelogRecord;
use crate::reports::store::{Applied, Store};

/// Changelog partition → the next offset the store has not applied.
pub type Positions = BTreeMap<u32, u64>;

/// Runs until `shutdown` turns true. Publishes positions on `positions` after every poll.
pub async fn run(
    cluster: Arc<Cluster>,
    store: Store,
    topic: String,
    partitions: u32,
    positions: watch::Sender<Positions>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Every await of the applier ends when the service stops — also those outside the poll
    // loop (assigning and seeking retry while the brokers are unreachable). Stopping between
    // two awaits is safe: each record is applied in one sled batch with its position.
    let mut stop = shutdown.clone();
    let flush = store.clone();
    tokio::select! {
        _ = stop.wait_for(|stop| *stop) => {}
        outcome = apply_changelog(cluster, store, topic, partitions, positions, shutdown) => outcome?,
    }
    flush.flush()?;
    Ok(())
}

async fn apply_changelog(
    cluster: Arc<Cluster>,
    store: Store,
    topic: String,
    partitions: u32,
    positions: watch::Sender<Positions>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        // The store's position is the truth; a position below the log start (the changelog is
        // kept forever, so only after an operator deleted data) restarts from the earliest.
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(100),
        max_partition_fetch_bytes: 4 * 1024 * 1024,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(cluster, config);
    consumer
        .assign((0..partitions).map(|p| (topic.clone(), p)).collect())
        .await?;
    let mut applied = Positions::new();
    for partition in 0..partitions {
        let position = store.changelog_position(partition);
        consumer.seek(&topic, partition, SeekTo::Offset(position)).await?;
        applied.insert(partition, position);
    }
    positions.send_replace(applied.clone());
    tracing::info!(%topic, partitions, "changelog applier started");
    let mut failures = 0u32;
    loop {
        let records = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            polled = consumer.poll(Duration::from_millis(500)) => polled,
        };
        let records = match records {
            Ok(records) => {
                failures = 0;
                records
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "changelog poll failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20)))).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        for record in &records {
            let decoded: Option<ChangelogRecord> = record
                .value
                .as_deref()
                .and_then(|value| serde_json::from_slice(value).ok());
            let outcome = store.apply(record.partition, record.offset, decoded.as_ref())?;
            match outcome {
                Applied::Accepted => {}
                Applied::Stale { next } => tracing::info!(
                    partition = record.partition,
                    offset = record.offset,
                    next,
                    "changelog record skipped: it does not start at the state's next offset"
                ),
                // Skipping it would make this store diverge from the others (a newer version's
                // record, or damage): stop, loudly, with the store still consistent.
                Applied::Undecodable => anyhow::bail!(
                    "changelog {topic} partition {} offset {} does not decode as a changelog record; \
                     stopping (is an instance of a newer version writing it?)",
                    record.partition,
                    record.offset
                ),
            }
            applied.insert(record.partition, record.offset + 1);
        }
        positions.send_replace(applied.clone());
    }
    Ok(())
}

/// Waits until the store has applied changelog `partition` up to and including `offset`.
pub async fn wait_applied(
    positions: &mut watch::Receiver<Positions>,
    partition: u32,
    offset: u64,
) -> anyhow::Result<()> {
    positions
        .wait_for(|applied| applied.get(&partition).is_some_and(|next| *next > offset))
        .await
        .map_err(|_| anyhow::anyhow!("the changelog applier stopped"))?;
    Ok(())
}
