//! The consumer without groups: the application assigns partitions and seeks; records come
//! from `poll` or a `Stream`.
//!
//! Each assigned partition has a fetch task that keeps the next fetch in flight while the
//! application works through the last one: it fetches, sends the next fetch as soon as the
//! response arrives, decodes, and hands the records over through a bounded channel (the bound
//! is the prefetch limit). A seek bumps the partition's generation, so chunks fetched for the
//! old position are dropped unseen.

use crate::cluster::Cluster;
use crate::error::ClientError;
use bytes::Bytes;
use futures_util::Stream;
use proto::record_batch::{decode_records, BatchHeader, RecordHeader};
use proto::v1::{ErrorCode, OffsetSpec};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

/// What to do when there is no valid position: Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Start at the log start.
    Earliest,
    /// Start at the high watermark (only new records).
    Latest,
    /// Report [`ConsumeError::NoValidPosition`].
    None,
}

/// Consumer settings, named after Kafka's.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `max.partition.fetch.bytes`: bytes asked for per fetch of one partition.
    pub max_partition_fetch_bytes: u32,
    /// `fetch.max.wait.ms`: how long a fetch waits at the broker for new records.
    pub fetch_max_wait: Duration,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// Fetched chunks buffered ahead of the application, across partitions.
    pub prefetch_chunks: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            auto_offset_reset: OffsetReset::Latest,
            prefetch_chunks: 8,
        }
    }
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset.
    Offset(u64),
    /// The first record with a timestamp at or after this (ms); the end if none.
    Timestamp(i64),
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Timestamp (ms since the Unix epoch).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<RecordHeader>,
}

/// Why a consumer call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    /// The partition is not assigned to this consumer.
    #[error("{topic}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// The position is outside the log and `auto_offset_reset` is `None`.
    #[error("{topic}/{partition}: offset {offset} is out of range and auto_offset_reset is none")]
    NoValidPosition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The position that is out of range.
        offset: u64,
    },
    /// A fetched batch does not decode.
    #[error("{topic}/{partition}: batch at offset {offset} does not decode: {reason}")]
    Corrupt {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The batch's base offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The cluster failed the request (after retries for retriable errors).
    #[error("{code:?}: {message}")]
    Cluster {
        /// The broker's code, if the broker answered.
        code: Option<ErrorCode>,
        /// What failed.
        message: String,
    },
}

impl From<ClientError> for ConsumeError {
    fn from(error: ClientError) -> Self {
        ConsumeError::Cluster {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

pub(crate) type TopicPartition = (String, u32);

struct Chunk {
    partition: TopicPartition,
    generation: u64,
    outcome: Result<Fetched, ConsumeError>,
}

struct Fetched {
    records: Vec<ConsumerRecord>,
    next_offset: u64,
    high_watermark: u64,
}

struct Assignment {
    position: u64,
    high_watermark: Option<u64>,
    generation: u64,
    task: JoinHandle<()>,
}

/// A consumer of assigned partitions.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    assignments: HashMap<TopicPartition, Assignment>,
    chunks: mpsc::Sender<Chunk>,
    incoming: mpsc::Receiver<Chunk>,
    ready: VecDeque<ConsumerRecord>,
    next_generation: u64,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for assignment in self.assignments.values() {
            assignment.task.abort();
        }
    }
}

impl Consumer {
    /// A consumer over `cluster` with nothing assigned.
    pub fn new(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        let (chunks, incoming) = mpsc::channel(config.prefetch_chunks.max(1));
        Consumer {
            cluster,
            config,
            assignments: HashMap::new(),
            chunks,
            incoming,
            ready: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Consumes exactly `partitions` from now on. Newly assigned partitions start per
    /// `auto_offset_reset` (use [`seek`](Self::seek) to choose); kept ones keep their position.
    pub async fn assign(&mut self, partitions: Vec<(String, u32)>) -> Result<(), ConsumeError> {
        let removed: Vec<TopicPartition> = self
            .assignments
            .keys()
            .filter(|tp| !partitions.contains(tp))
            .cloned()
            .collect();
        self.unassign(&removed);
        for tp in partitions {
            if self.assignments.contains_key(&tp) {
                continue;
            }
            let start = match self.config.auto_offset_reset {
                OffsetReset::Earliest => SeekTo::Earliest,
                OffsetReset::Latest | OffsetReset::None => SeekTo::Latest,
            };
            let offset = self.resolve(&tp, start).await?;
            self.start_fetching(tp, offset);
        }
        Ok(())
    }

    /// Stops consuming `partitions`: their fetch tasks end and their records not yet returned
    /// are dropped.
    pub(crate) fn unassign(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(assignment) = self.assignments.remove(tp) {
                assignment.task.abort();
            }
            self.ready
                .retain(|r| (r.topic.as_str(), r.partition) != (tp.0.as_str(), tp.1));
        }
    }

    /// Consumes `tp` from `offset` on (assigning it if it is not).
    pub(crate) fn assign_at(&mut self, tp: TopicPartition, offset: u64) {
        self.ready
            .retain(|r| (r.topic.as_str(), r.partition) != (tp.0.as_str(), tp.1));
        self.start_fetching(tp, offset);
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let mut assigned: Vec<TopicPartition> = self.assignments.keys().cloned().collect();
        assigned.sort();
        assigned
    }

    /// Moves a partition's position; records from the old position not yet returned are dropped.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<u64, ConsumeError> {
        let tp = (topic.to_string(), partition);
        if !self.assignments.contains_key(&tp) {
            return Err(ConsumeError::NotAssigned {
                topic: topic.to_string(),
                partition,
            });
        }
        let offset = self.resolve(&tp, to).await?;
        self.ready
            .retain(|r| (r.topic.as_str(), r.partition) != (topic, partition));
        self.start_fetching(tp, offset);
        Ok(offset)
    }

    /// The offset of the next record `poll` will return for the partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.assignments
            .get(&(topic.to_string(), partition))
            .map(|a| a.position)
    }

    /// The partition's high watermark as of the last fetch (`None` before the first). Lag is
    /// `high_watermark - position`.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.assignments
            .get(&(topic.to_string(), partition))
            .and_then(|a| a.high_watermark)
    }

    /// Records from the assigned partitions, waiting up to `timeout` for some; an empty vector
    /// when none arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ConsumeError> {
        self.poll_or(timeout, std::future::pending()).await
    }

    /// Like [`poll`](Self::poll), but returns nothing as soon as `interrupt` completes while
    /// waiting for records (the group consumer interrupts a wait when its assignment changes).
    /// Only the wait for the next chunk is interrupted, never the handling of one, so no
    /// fetched records and no partition reset are lost.
    pub(crate) async fn poll_or(
        &mut self,
        timeout: Duration,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<ConsumerRecord>, ConsumeError> {
        if !self.ready.is_empty() {
            return Ok(self.take_ready());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interrupt = std::pin::pin!(interrupt);
        loop {
            let chunk = tokio::select! {
                received = tokio::time::timeout_at(deadline, self.incoming.recv()) => match received {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) | Err(_) => return Ok(Vec::new()),
                },
                () = &mut interrupt => return Ok(Vec::new()),
            };
            let Some(assignment) = self.assignments.get_mut(&chunk.partition) else {
                continue;
            };
            if assignment.generation != chunk.generation {
                continue;
            }
            match chunk.outcome {
                Ok(fetched) => {
                    assignment.high_watermark = Some(fetched.high_watermark);
                    if fetched.records.is_empty() {
                        continue;
                    }
                    assignment.position = fetched.next_offset;
                    self.ready.extend(fetched.records);
                    return Ok(self.take_ready());
                }
                Err(ConsumeError::NoValidPosition { offset, .. })
                    if self.config.auto_offset_reset != OffsetReset::None =>
                {
                    let to = match self.config.auto_offset_reset {
                        OffsetReset::Earliest => SeekTo::Earliest,
                        _ => SeekTo::Latest,
                    };
                    tracing::info!(topic = %chunk.partition.0, partition = chunk.partition.1, offset, ?to,
                        "position out of range; resetting");
                    let reset = self.resolve(&chunk.partition, to).await?;
                    self.start_fetching(chunk.partition, reset);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The records as a stream (polling with a 1 s timeout under the hood); ends never.
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord, ConsumeError>> + '_ {
        futures_util::stream::unfold(self, |consumer| async move {
            loop {
                if let Some(record) = consumer.ready.pop_front() {
                    return Some((Ok(record), consumer));
                }
                match consumer.poll(Duration::from_secs(1)).await {
                    Ok(records) => consumer.ready.extend(records),
                    Err(error) => return Some((Err(error), consumer)),
                }
            }
        })
    }

    fn take_ready(&mut self) -> Vec<ConsumerRecord> {
        self.ready.drain(..).collect()
    }

    pub(crate) async fn resolve(&self, tp: &TopicPartition, to: SeekTo) -> Result<u64, ConsumeError> {
        let (spec, timestamp) = match to {
            SeekTo::Offset(offset) => return Ok(offset),
            SeekTo::Earliest => (OffsetSpec::Earliest, 0),
            SeekTo::Latest => (OffsetSpec::Latest, 0),
            SeekTo::Timestamp(timestamp) => (OffsetSpec::Timestamp, timestamp),
        };
        match self.cluster.list_offsets(&tp.0, tp.1, spec, timestamp).await? {
            Some(offset) => Ok(offset),
            // A timestamp after every record: the end.
            None => Ok(self
                .cluster
                .list_offsets(&tp.0, tp.1, OffsetSpec::Latest, 0)
                .await?
                .unwrap_or(0)),
        }
    }

    fn start_fetching(&mut self, tp: TopicPartition, offset: u64) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let task = tokio::spawn(fetch_loop(
            Arc::clone(&self.cluster),
            tp.clone(),
            offset,
            generation,
            self.config.clone(),
            self.chunks.clone(),
        ));
        let high_watermark = self.assignments.get(&tp).and_then(|a| a.high_watermark);
        if let Some(old) = self.assignments.insert(
            tp,
            Assignment {
                position: offset,
                high_watermark,
                generation,
                task,
            },
        ) {
            old.task.abort();
        }
    }
}

/// Fetches one partition from `offset` on, forever, one fetch ahead of the application. The
/// next fetch is sent as soon as a response arrives (its start is read from the batch headers
/// alone), so decoding one response overlaps the broker serving the next.
async fn fetch_loop(
    cluster: Arc<Cluster>,
    tp: TopicPartition,
    mut offset: u64,
    generation: u64,
    config: ConsumerConfig,
    chunks: mpsc::Sender<Chunk>,
) {
    let fetch_from = |from: u64| {
        let (cluster, topic, partition) = (Arc::clone(&cluster), tp.0.clone(), tp.1);
        let (max_bytes, max_wait) = (config.max_partition_fetch_bytes, config.fetch_max_wait);
        AbortOnDropHandle::new(tokio::spawn(async move {
            cluster.fetch(&topic, partition, from, max_bytes, max_wait).await
        }))
    };
    let mut last_high_watermark = None;
    // (Dropped — so aborted — when this loop is, on a seek or a revocation.)
    let mut next_fetch = None;
    loop {
        let mut in_flight = match next_fetch.take() {
            Some((from, fetch)) if from == offset => fetch,
            _ => fetch_from(offset),
        };
        let fetched = match (&mut in_flight).await {
            Ok(fetched) => fetched,
            Err(join_error) => match join_error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Cancelled: only by the runtime shutting down.
                Err(_) => return,
            },
        };
        if let Ok((batches, _)) = &fetched {
            if let Some(next) = next_offset_after(batches).filter(|next| *next > offset) {
                next_fetch = Some((next, fetch_from(next)));
            }
        }
        let outcome = match fetched {
            Ok((batches, high_watermark)) => decode_chunk(&tp, offset, batches, high_watermark),
            Err(error) if error.code() == Some(ErrorCode::OffsetOutOfRange) => Err(ConsumeError::NoValidPosition {
                topic: tp.0.clone(),
                partition: tp.1,
                offset,
            }),
            Err(error) => Err(error.into()),
        };
        let stop = matches!(outcome, Err(ConsumeError::NoValidPosition { .. }));
        let failed = outcome.is_err();
        if let Ok(fetched) = &outcome {
            if fetched.records.is_empty() && last_high_watermark == Some(fetched.high_watermark) {
                continue;
            }
            last_high_watermark = Some(fetched.high_watermark);
            offset = fetched.next_offset;
        }
        let chunk = Chunk {
            partition: tp.clone(),
            generation,
            outcome,
        };
        if chunks.send(chunk).await.is_err() || stop {
            return;
        }
        if failed {
            next_fetch = None;
            // The cluster call already retried retriable errors until its deadline.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The offset after the last record of `batches`, from their headers alone (`None` if there
/// are none, or the last header does not parse: decoding then reports why).
fn next_offset_after(batches: &[crate::cluster::FetchedBatch]) -> Option<u64> {
    let last = batches.last()?;
    let header = BatchHeader::parse(&last.records).ok()?;
    Some(last.base_offset + u64::try_from(header.last_offset_delta).ok()? + 1)
}

fn decode_chunk(
    tp: &TopicPartition,
    from: u64,
    batches: Vec<crate::cluster::FetchedBatch>,
    high_watermark: u64,
) -> Result<Fetched, ConsumeError> {
    let mut records = Vec::new();
    let mut next_offset = from;
    for batch in batches {
        let decoded = decode_records(&batch.records).map_err(|e| ConsumeError::Corrupt {
            topic: tp.0.clone(),
            partition: tp.1,
            offset: batch.base_offset,
            reason: e.to_string(),
        })?;
        for record in decoded {
            let offset = batch.base_offset + record.offset_delta as u64;
            next_offset = next_offset.max(offset + 1);
            // A batch that starts before the position is returned whole; skip its head.
            if offset < from {
                continue;
            }
            records.push(ConsumerRecord {
                topic: tp.0.clone(),
                partition: tp.1,
                offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
    }
    Ok(Fetched {
        records,
        next_offset,
        high_watermark,
    })
}
