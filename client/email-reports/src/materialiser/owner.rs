//! The owner: the group member that counts the partitions it is given into changelog records.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Cluster, ConsumerRecord, GroupConfig, GroupConsumer, OffsetReset, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, RebalanceListener, SeekTo,
};
use tokio::sync::watch;

use super::applier::{wait_applied, Positions};
use super::MaterialiserConfig;
use crate::event::CanonicalEvent;
use crate::reports::apply::{ChangeBuilder, ChangelogRecord, StateRead};
use crate::reports::mirror::Mirror;
use crate::reports::store::Store;

/// Day buckets forgotten per changelog record at most.
const DAY_EXPIRY_PER_RECORD: usize = 200;

/// Fetched chunks taken into one counting round at most (each is one partition's fetch).
const MAX_CHUNKS_PER_ROUND: usize = 64;

/// Partition changes the rebalance listener saw, for the loop to act on after `poll`.
#[derive(Default)]
struct Changes {
    assigned: BTreeSet<u32>,
    gone: BTreeSet<u32>,
}

struct Listener(Arc<Mutex<Changes>>);

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        let mut changes = self.0.lock().expect("changes");
        for (_, partition) in partitions {
            changes.gone.remove(partition);
            changes.assigned.insert(*partition);
        }
    }

    fn on_revoked(&mut self, partitions: &[(String, u32)]) {
        self.gone(partitions);
    }

    fn on_lost(&mut self, partitions: &[(String, u32)]) {
        self.gone(partitions);
    }
}

impl Listener {
    fn gone(&mut self, partitions: &[(String, u32)]) {
        let mut changes = self.0.lock().expect("changes");
        for (_, partition) in partitions {
            changes.assigned.remove(partition);
            changes.gone.insert(*partition);
        }
    }
}

/// Changelog records are kept under this size (the topic's `max_message_bytes` is 8 MiB).
const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// Counts `records` of `partition` on the state (whose next offset is `next`): the changelog
/// record and its encoding.
fn count_batch<'r, S: StateRead>(
    state: &S,
    config: &MaterialiserConfig,
    partition: u32,
    next: u64,
    records: impl Iterator<Item = &'r ConsumerRecord>,
) -> anyhow::Result<(ChangelogRecord, Vec<u8>)> {
    let mut builder = ChangeBuilder::new(state, &config.counting, partition, next);
    let mut to = next;
    let mut now_ms = 0;
    let mut taken = 0usize;
    for record in records {
        match record.value.as_deref().map(serde_json::from_slice::<CanonicalEvent>) {
            Some(Ok(event)) => {
                builder.count(record.timestamp, &event);
            }
            _ => tracing::warn!(
                partition,
                offset = record.offset,
                "email-events record is not a canonical event; not counted"
            ),
        }
        now_ms = now_ms.max(record.timestamp);
        to = record.offset + 1;
        taken += 1;
    }
    // Examine twice the ids this record adds (see `ChangeBuilder::expire`).
    builder.expire(now_ms, 2 * taken.max(100), DAY_EXPIRY_PER_RECORD);
    let record = builder.finish(to);
    let value = serde_json::to_vec(&record)?;
    Ok((record, value))
}

/// One partition's counting state between polls.
struct Owned {
    /// Caught up: the store has applied the changelog as it was when the partition came.
    synced: bool,
    /// Records polled and not yet counted, in offset order.
    pending: VecDeque<ConsumerRecord>,
    /// The state needs records from this offset, before what was fetched (after a rebuild
    /// reset the state): the loop seeks there.
    seek_to: Option<u64>,
    /// The last offset sought to; a gap that remains after seeking there is records that are
    /// gone (retention), and counting goes on from the first one that exists.
    sought: Option<u64>,
    /// The partition's own keys in memory (see [`Mirror`]).
    mirror: Mirror,
}

impl Owned {
    fn new(partition: u32) -> Owned {
        Owned {
            synced: false,
            pending: VecDeque::new(),
            seek_to: None,
            sought: None,
            mirror: Mirror::new(partition),
        }
    }
}

/// The counting loop of one instance.
pub struct Owner {
    cluster: Arc<Cluster>,
    store: Store,
    config: MaterialiserConfig,
    source_topic: String,
    producer: Producer,
    positions: watch::Receiver<Positions>,
    owned: BTreeMap<u32, Owned>,
    /// What was last committed to the group per partition (commits only when it moved).
    committed: BTreeMap<u32, u64>,
}

impl Owner {
    /// An owner counting `source_topic` into `config.changelog_topic`, seeing its store's
    /// progress through `positions` (the applier's).
    pub fn new(
        cluster: Arc<Cluster>,
        store: Store,
        config: MaterialiserConfig,
        source_topic: String,
        positions: watch::Receiver<Positions>,
    ) -> anyhow::Result<Owner> {
        let producer = Producer::new(
            Arc::clone(&cluster),
            ProducerConfig {
                linger: Duration::from_millis(0),
                batch_size: 1024 * 1024,
                ..ProducerConfig::default()
            },
        )?;
        Ok(Owner {
            cluster,
            store,
            config,
            source_topic,
            producer,
            positions,
            owned: BTreeMap::new(),
            committed: BTreeMap::new(),
        })
    }

    /// Runs until `shutdown` turns true, then leaves the group.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let changes = Arc::new(Mutex::new(Changes::default()));
        let group_config = GroupConfig {
            enable_auto_commit: false,
            auto_offset_reset: OffsetReset::Earliest,
            session_timeout: Duration::from_millis(self.config.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(self.config.heartbeat_interval_ms),
            fetch_max_wait: Duration::from_millis(100),
            ..GroupConfig::new(self.config.group_id.clone())
        };
        let mut group =
            GroupConsumer::new(Arc::clone(&self.cluster), group_config)?.with_listener(Listener(Arc::clone(&changes)));
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            subscribed = group.subscribe(vec![self.source_topic.clone()]) => subscribed?,
        }
        tracing::info!(group = %self.config.group_id, topic = %self.source_topic, "materialiser joined");
        let mut failures = 0u32;
        loop {
            let polled = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                polled = group.poll(Duration::from_millis(200)) => polled,
            };
            // A poll returns one partition's chunk; take every chunk already fetched too, so
            // one round counts all partitions that have records, concurrently.
            let mut polled = polled.map(|records| vec![records]);
            while let Ok(chunks) = &mut polled {
                if chunks.len() >= MAX_CHUNKS_PER_ROUND {
                    break;
                }
                match group.poll(Duration::ZERO).await {
                    Ok(records) if records.is_empty() => break,
                    Ok(records) => chunks.push(records),
                    Err(error) => polled = Err(error),
                }
            }
            self.take_changes(&changes);
            match polled {
                Ok(chunks) => {
                    for record in chunks.into_iter().flatten() {
                        let Some(owned) = self.owned.get_mut(&record.partition) else {
                            continue;
                        };
                        // Pending stays in offset order: after a seek or a re-assignment
                        // between two polls, records already pending are not taken again.
                        if owned.pending.back().is_none_or(|last| record.offset > last.offset) {
                            owned.pending.push_back(record);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "poll failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            // Counting waits on the cluster (writes, the applier); a stop does not wait for it
            // (what was counted is in the changelog, the rest is counted by the next owner).
            let counted = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                counted = self.count_pending() => counted,
            };
            for (partition, owned) in &mut self.owned {
                // Everything returned was counted, so the position equals the state's next
                // offset — unless a rebuild reset the state: then read again from there.
                if owned.synced && owned.pending.is_empty() && owned.seek_to.is_none() {
                    let next = self.store.next_offset(*partition);
                    let position = group.position(&self.source_topic, *partition);
                    if position.is_some_and(|position| position > next) && owned.sought != Some(next) {
                        owned.seek_to = Some(next);
                    }
                }
                let Some(offset) = owned.seek_to.take() else { continue };
                tracing::info!(
                    partition,
                    offset,
                    "the state starts before the records fetched; seeking"
                );
                match group.seek(&self.source_topic, *partition, SeekTo::Offset(offset)).await {
                    Ok(_) => owned.sought = Some(offset),
                    Err(error) => tracing::warn!(partition, %error, "seek failed; retrying"),
                }
            }
            match counted {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "counting failed; retrying from the state's offsets");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20)))).await;
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = self.commit(&mut group) => {}
            }
        }
        if let Err(error) = group.close().await {
            tracing::warn!(%error, "leaving the group");
        }
        // Nothing is left to deliver that matters (an unwritten record is counted again by
        // the next owner), so a cluster that is down does not hold the stop up.
        if tokio::time::timeout(Duration::from_secs(5), self.producer.close())
            .await
            .is_err()
        {
            tracing::warn!("the changelog producer did not close within 5 s");
        }
        Ok(())
    }

    fn take_changes(&mut self, changes: &Mutex<Changes>) {
        let mut changes = changes.lock().expect("changes");
        for partition in std::mem::take(&mut changes.gone) {
            self.owned.remove(&partition);
        }
        for partition in std::mem::take(&mut changes.assigned) {
            // A partition given again starts over: it may have been counted elsewhere since.
            self.owned.insert(partition, Owned::new(partition));
            self.committed.remove(&partition);
        }
    }

    /// Catches up on newly given partitions (their changelog applied as far as it goes), then
    /// counts everything pending, record by record: each changelog record is seen applied
    /// before the next one of its partition is computed.
    async fn count_pending(&mut self) -> anyhow::Result<()> {
        let unsynced: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, owned)| !owned.synced)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in unsynced {
            self.catch_up(partition).await?;
            if let Some(owned) = self.owned.get_mut(&partition) {
                owned.synced = true;
            }
        }
        while self
            .owned
            .values()
            .any(|owned| owned.synced && !owned.pending.is_empty())
        {
            self.count_round().await?;
        }
        Ok(())
    }

    /// Waits until the store has applied changelog `partition` as far as it now goes.
    async fn catch_up(&mut self, partition: u32) -> anyhow::Result<()> {
        let end = self
            .cluster
            .list_offsets(&self.config.changelog_topic, partition, OffsetSpec::Latest, 0)
            .await?
            .unwrap_or(0);
        if end > 0 {
            wait_applied(&mut self.positions, partition, end - 1).await?;
        }
        Ok(())
    }

    /// One changelog record per partition with pending records, written together.
    async fn count_round(&mut self) -> anyhow::Result<()> {
        let mut batches: Vec<(ChangelogRecord, Vec<u8>, Vec<ConsumerRecord>)> = Vec::new();
        for (partition, owned) in &mut self.owned {
            if !owned.synced {
                continue;
            }
            let next = self.store.next_offset(*partition);
            while owned.pending.front().is_some_and(|record| record.offset < next) {
                owned.pending.pop_front();
            }
            let Some(first) = owned.pending.front() else { continue };
            if first.offset > next && owned.sought != Some(next) {
                owned.pending.clear();
                owned.seek_to = Some(next);
                continue;
            }
            // A record must fit the changelog's max_message_bytes: halve the batch until it does
            // (the rest stays pending for the next round).
            let mut count = self.config.max_events_per_record.min(owned.pending.len());
            owned.mirror.align(self.store.generation(), next);
            let state = owned.mirror.over(&self.store);
            let (record, value) = loop {
                let (record, value) =
                    count_batch(&state, &self.config, *partition, next, owned.pending.iter().take(count))?;
                if value.len() <= MAX_RECORD_BYTES || count == 1 {
                    break (record, value);
                }
                count /= 2;
            };
            let taken: Vec<ConsumerRecord> = owned.pending.drain(..count).collect();
            batches.push((record, value, taken));
        }
        let mut deliveries = Vec::with_capacity(batches.len());
        for (record, value, _) in &mut batches {
            let send = ProducerRecord::new(self.config.changelog_topic.clone(), std::mem::take(value))
                .partition(record.partition);
            deliveries.push(self.producer.send(send).await);
        }
        let mut outcome = Ok(());
        for ((record, _, taken), delivery) in batches.into_iter().zip(deliveries) {
            let partition = record.partition;
            let written = match delivery {
                Ok(delivery) => delivery.await.map_err(anyhow::Error::from),
                Err(error) => Err(anyhow::Error::from(error)),
            };
            // Every error leaves the records pending (never dropped): they are counted again
            // from the state, where a copy of a record that did get written is skipped.
            let applied = match written {
                Ok(metadata) => self.wait_for_record(partition, metadata.offset).await,
                Err(error) => Err(error),
            };
            match applied {
                Ok(()) if self.store.next_offset(partition) == record.to => {
                    if let Some(owned) = self.owned.get_mut(&partition) {
                        // Counting moved on: a later gap is a new one, worth a seek again.
                        owned.sought = None;
                        owned.mirror.absorb(&record);
                    }
                }
                Ok(()) => {
                    tracing::info!(
                        partition,
                        from = record.from,
                        to = record.to,
                        next = self.store.next_offset(partition),
                        "our changelog record was not applied (another owner's came first, or a rebuild); counting again from the state"
                    );
                    self.requeue(partition, taken);
                }
                Err(error) => {
                    self.requeue(partition, taken);
                    outcome = Err(error);
                }
            }
        }
        outcome
    }

    /// Waits until the store has applied our record written at `offset` of changelog
    /// `partition` (`None`: the broker knew it as written long ago; wait for the end instead).
    async fn wait_for_record(&mut self, partition: u32, offset: Option<u64>) -> anyhow::Result<()> {
        let offset = match offset {
            Some(offset) => offset,
            None => self
                .cluster
                .list_offsets(&self.config.changelog_topic, partition, OffsetSpec::Latest, 0)
                .await?
                .unwrap_or(1)
                .saturating_sub(1),
        };
        wait_applied(&mut self.positions, partition, offset).await
    }

    fn requeue(&mut self, partition: u32, taken: Vec<ConsumerRecord>) {
        if let Some(owned) = self.owned.get_mut(&partition) {
            for record in taken.into_iter().rev() {
                owned.pending.push_front(record);
            }
        }
    }

    /// Commits the state's next offsets to the group so `group describe` shows lag. Only
    /// informative: counting resumes from the state, never from these.
    async fn commit(&mut self, group: &mut GroupConsumer) {
        let offsets: HashMap<(String, u32), u64> = self
            .owned
            .iter()
            .filter(|(_, owned)| owned.synced)
            .map(|(partition, _)| {
                (
                    (self.source_topic.clone(), *partition),
                    self.store.next_offset(*partition),
                )
            })
            .filter(|((_, partition), next)| {
                *next > 0
                    && self.committed.get(partition) != Some(next)
                    && group.position(&self.source_topic, *partition).is_some()
            })
            .collect();
        if offsets.is_empty() {
            return;
        }
        let moved: Vec<(u32, u64)> = offsets
            .iter()
            .map(|((_, partition), next)| (*partition, *next))
            .collect();
        match group.commit_offsets(offsets).await {
            Ok(()) => self.committed.extend(moved),
            Err(error) => tracing::debug!(%error, "committing the group's offsets"),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::{EventKind, Provider};
    use crate::time::EventTime;

    fn click(offset: u64, url_bytes: usize) -> ConsumerRecord {
        let event = CanonicalEvent {
            provider: Provider::SendGrid,
            event_id: format!("click|{offset}"),
            provider_event_id: Some(offset.to_string()),
            tenant: Some("t".into()),
            campaign: Some("c".into()),
            recipient: format!("r{offset}@x.com"),
            kind: EventKind::Click,
            occurred_at: EventTime::from_unix_micros(1_760_000_000_000_000).unwrap(),
            url: Some(format!("https://x.com/{}", "a".repeat(url_bytes))),
            message_id: None,
        };
        ConsumerRecord {
            topic: "email-events".into(),
            partition: 0,
            offset,
            timestamp: 1_760_000_000_000,
            key: None,
            value: Some(Bytes::from(serde_json::to_vec(&event).unwrap())),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_batch_is_encoded_whole_and_its_range_ends_after_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = MaterialiserConfig::default();
        let records: Vec<ConsumerRecord> = (5..9).map(|offset| click(offset, 10)).collect();
        let (record, value) = count_batch(&store, &config, 0, 5, records.iter()).unwrap();
        assert_eq!((record.from, record.to), (5, 9));
        assert_eq!(serde_json::from_slice::<ChangelogRecord>(&value).unwrap(), record);
        // Clicks with 20 KiB URLs: 1,000 of them would be ~40 MiB of engaged values, over the
        // record limit, which is why the owner halves a batch until it fits.
        let big: Vec<ConsumerRecord> = (0..300).map(|offset| click(offset, 20 * 1024)).collect();
        let (_, value) = count_batch(&store, &config, 0, 0, big.iter()).unwrap();
        assert!(value.len() > MAX_RECORD_BYTES);
        let (_, value) = count_batch(&store, &config, 0, 0, big.iter().take(150)).unwrap();
        assert!(value.len() <= MAX_RECORD_BYTES);
    }
}
