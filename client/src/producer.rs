//! The batching, idempotent producer.
//!
//! `send` hands a record to its partition's task and returns a [`DeliveryFuture`]. Each
//! partition has one task that owns everything about that partition: the open batch (closed
//! by `batch_size` or `linger`), the sealed batches not yet acknowledged — in sequence order —
//! and up to `max_in_flight` produce requests. Keeping all of it in one task is what makes the
//! ordering rules simple: batches are sent in order, a failed batch is resent before any later
//! batch is sent for the first time, and with idempotence on (the default) the broker answers
//! a retry of a batch already in its log with the original offset instead of appending again.
//!
//! When a batch is refused for good while idempotence is on (too large, invalid), or the
//! broker no longer knows this producer, the batches after it cannot be appended under their
//! sequence numbers (the broker would wait for the missing one). The task then takes a fresh
//! producer id for the partition and re-stamps them from sequence 0: they were refused, so
//! nothing of them is in the log, and no record is lost or written twice.

use crate::cluster::{Cluster, ProduceAck};
use crate::error::ClientError;
use crate::partitioner::{partition_for_key, StickyPartitioner};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use proto::record_batch::{encode_batch_compressed, restamp, Compression, ProducerStamp, Record, RecordHeader};
use proto::v1::{Acks, ErrorCode};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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
    fn validate(&self) -> Result<(), ProduceError> {
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

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose (murmur2 of the key, or sticky).
    pub partition: Option<u32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<RecordHeader>,
    /// Timestamp in ms since the Unix epoch; `None`: the time of `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    /// With a key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// To a given partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// With a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(RecordHeader {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// With a timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared by every record of the batch).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset; `None` with `acks = 0`, or for a batch the broker reports as written long ago
    /// (DUPLICATE_SEQUENCE) whose offset it no longer knows.
    pub offset: Option<u64>,
    /// The record's timestamp.
    pub timestamp: i64,
}

/// Why a record was not (or may not have been) written. Match on the variant; `code()` gives
/// the broker's error code where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// The topic does not exist (the cluster answered, but not with this topic, for `max_block`).
    #[error("unknown topic {topic:?}: not in the cluster's metadata after {waited:?}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// How long `send` waited for it.
        waited: Duration,
    },
    /// The topic's metadata could not be fetched within `max_block` (no broker answered).
    #[error("no metadata for topic {topic:?} after {waited:?}: {last_error}")]
    MetadataUnavailable {
        /// The topic.
        topic: String,
        /// How long `send` waited.
        waited: Duration,
        /// The last error seen.
        last_error: String,
    },
    /// The partition does not exist.
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// The record alone is larger than the topic accepts (`max.message.bytes`).
    #[error("record of about {size} bytes is larger than topic {topic:?} accepts ({max} bytes)")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// Encoded size of the record, about.
        size: usize,
        /// The topic's max.message.bytes.
        max: usize,
    },
    /// No acknowledgement within `delivery_timeout`: the record may or may not be written.
    #[error("delivery timed out after {elapsed:?} (the record may or may not be written); last error: {last_error}")]
    DeliveryTimeout {
        /// Time since `send`.
        elapsed: Duration,
        /// The last error a produce attempt got, if any.
        last_error: String,
    },
    /// The broker refused the batch for good.
    #[error("broker refused the batch: {code:?}: {message}")]
    Broker {
        /// The wire error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// No room in `buffer_memory` within `max_block`: the cluster is not keeping up.
    #[error("no room in the producer's buffer after {waited:?}")]
    BufferFull {
        /// How long `send` waited.
        waited: Duration,
    },
    /// The producer was closed before the record was sent.
    #[error("the producer is closed")]
    Closed,
    /// The producer's configuration is invalid.
    #[error("invalid producer config: {0}")]
    InvalidConfig(String),
}

impl ProduceError {
    /// The broker error code behind this error, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ProduceError::Broker { code, .. } => Some(*code),
            ProduceError::RecordTooLarge { .. } => Some(ErrorCode::RecordTooLarge),
            ProduceError::UnknownTopic { .. } | ProduceError::InvalidPartition { .. } => {
                Some(ErrorCode::UnknownTopicOrPartition)
            }
            _ => None,
        }
    }
}

/// Resolves to where the record was written, or why it was not.
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata, ProduceError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(ProduceError::Closed)))
    }
}

/// A topic's layout as the producer needs it.
#[derive(Debug, Clone, Copy)]
struct TopicLayout {
    partitions: u32,
    max_message_bytes: usize,
    /// Trusted until then: `metadata_max_age` after a fetch, `retry_backoff` after a failed one.
    refresh_at: Instant,
}

/// Unkeyed-record partition choice per topic: sticky until about `batch_size` bytes went to
/// the current partition (Kafka's KIP-794 rule).
#[derive(Default)]
struct StickyState {
    partitioner: StickyPartitioner,
    bytes_on_current: usize,
}

enum Command {
    Record(QueuedRecord),
    Flush(oneshot::Sender<()>),
}

struct QueuedRecord {
    record: Record,
    size: usize,
    enqueued: Instant,
    done: oneshot::Sender<Result<RecordMetadata, ProduceError>>,
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    /// Known topic layouts (read on every send), and a lock held while one is looked up.
    topics: std::sync::RwLock<HashMap<String, TopicLayout>>,
    topic_lookup: tokio::sync::Mutex<()>,
    /// Each partition's queue, by topic then partition (looked up without allocating).
    partitions: Mutex<HashMap<String, Vec<Option<mpsc::Sender<Command>>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    sticky: Mutex<HashMap<String, StickyState>>,
    random: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    /// The producer id and epoch all partitions start with.
    identity: tokio::sync::OnceCell<(i64, i16)>,
    /// Bytes of `buffer_memory` free: taken by `send`, given back when a record's outcome is known.
    buffer: tokio::sync::Semaphore,
}

/// A batching producer; cheap to clone (clones share batches and connections).
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

/// Bytes a record adds to a batch, about: its fields plus varint and attribute overhead.
fn record_size(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 4)
        .sum();
    record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len()) + headers + 16
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Commands a partition task takes per turn of its loop before looking at anything else.
const COMMANDS_PER_TURN: usize = 4096;

/// Room the 61-byte batch header and the request framing take from `max.message.bytes`.
const BATCH_OVERHEAD: usize = 128;

impl Producer {
    /// A producer over `cluster` with `config`.
    pub fn new(cluster: Arc<Cluster>, config: ProducerConfig) -> Result<Producer, ProduceError> {
        config.validate()?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Ok(Producer {
            shared: Arc::new(Shared {
                cluster,
                topics: std::sync::RwLock::new(HashMap::new()),
                topic_lookup: tokio::sync::Mutex::new(()),
                partitions: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
                sticky: Mutex::new(HashMap::new()),
                random: AtomicU64::new(seed),
                closed: std::sync::atomic::AtomicBool::new(false),
                identity: tokio::sync::OnceCell::new(),
                buffer: tokio::sync::Semaphore::new(config.buffer_memory),
                config,
            }),
        })
    }

    /// Queues `record` for sending. Waits only for the topic's metadata (first send to a
    /// topic) and for room in the partition's queue; the returned future resolves once the
    /// record is acknowledged per `acks`, or fails.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(ProduceError::Closed);
        }
        let layout = self.layout(&record.topic).await?;
        let record_bytes = Record {
            offset_delta: 0,
            timestamp: record.timestamp.unwrap_or_else(now_ms),
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        let size = record_size(&record_bytes);
        if size + BATCH_OVERHEAD > layout.max_message_bytes {
            return Err(ProduceError::RecordTooLarge {
                topic: record.topic,
                size,
                max: layout.max_message_bytes,
            });
        }
        if size > self.shared.config.buffer_memory {
            return Err(ProduceError::RecordTooLarge {
                topic: record.topic,
                size,
                max: self.shared.config.buffer_memory,
            });
        }
        let partition = match record.partition {
            Some(partition) if partition >= layout.partitions => {
                return Err(ProduceError::InvalidPartition {
                    topic: record.topic,
                    partition,
                    partitions: layout.partitions,
                })
            }
            Some(partition) => partition,
            None => match &record_bytes.key {
                Some(key) => partition_for_key(key, layout.partitions),
                None => self.sticky_partition(&record.topic, layout.partitions, size),
            },
        };
        let permits = size as u32;
        let reserved = match self.shared.buffer.try_acquire_many(permits) {
            Ok(reserved) => reserved,
            Err(_) => tokio::time::timeout(self.shared.config.max_block, self.shared.buffer.acquire_many(permits))
                .await
                .map_err(|_| ProduceError::BufferFull {
                    waited: self.shared.config.max_block,
                })?
                .map_err(|_| ProduceError::Closed)?,
        };
        // Given back by the partition task when the record's outcome is known.
        reserved.forget();
        let (done, receiver) = oneshot::channel();
        let queue = self.partition_queue(&record.topic, partition, layout);
        let queued = QueuedRecord {
            record: record_bytes,
            size,
            enqueued: Instant::now(),
            done,
        };
        if queue.send(Command::Record(queued)).await.is_err() {
            self.shared.buffer.add_permits(size);
            return Err(ProduceError::Closed);
        }
        Ok(DeliveryFuture { receiver })
    }

    /// Sends `record` and waits for its outcome.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.send(record).await?.await
    }

    /// Sends every queued record now (ignoring `linger`) and waits until each has its outcome.
    pub async fn flush(&self) {
        let queues: Vec<mpsc::Sender<Command>> = self
            .shared
            .partitions
            .lock()
            .expect("partition map")
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect();
        let mut waits = Vec::new();
        for queue in queues {
            let (done, wait) = oneshot::channel();
            if queue.send(Command::Flush(done)).await.is_ok() {
                waits.push(wait);
            }
        }
        for wait in waits {
            let _ = wait.await;
        }
    }

    /// Flushes, then stops: later `send`s fail with [`ProduceError::Closed`].
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.flush().await;
        // Dropping the queues ends each partition task once it has nothing left to send.
        self.shared.partitions.lock().expect("partition map").clear();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.shared.tasks.lock().expect("task list"));
        for task in tasks {
            let _ = task.await;
        }
    }

    fn known_layout(&self, topic: &str) -> Option<TopicLayout> {
        self.shared.topics.read().expect("topic map").get(topic).copied()
    }

    fn remember_layout(&self, topic: &str, layout: TopicLayout) {
        self.shared
            .topics
            .write()
            .expect("topic map")
            .insert(topic.to_string(), layout);
    }

    async fn layout(&self, topic: &str) -> Result<TopicLayout, ProduceError> {
        let fresh = |layout: &TopicLayout| Instant::now() < layout.refresh_at;
        if let Some(layout) = self.known_layout(topic).filter(fresh) {
            return Ok(layout);
        }
        let _one_lookup_at_a_time = self.shared.topic_lookup.lock().await;
        let stale = match self.known_layout(topic) {
            Some(layout) if fresh(&layout) => return Ok(layout),
            known => known,
        };
        let started = Instant::now();
        let mut backoff = self.shared.config.retry_backoff;
        loop {
            match self.shared.cluster.topic_description(topic).await {
                Ok(Some(description)) if !description.partitions.is_empty() => {
                    let max_message_bytes = description
                        .configs
                        .get("max_message_bytes")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1024 * 1024);
                    let layout = TopicLayout {
                        partitions: description.partitions.len() as u32,
                        max_message_bytes,
                        refresh_at: Instant::now() + self.shared.config.metadata_max_age,
                    };
                    self.remember_layout(topic, layout);
                    return Ok(layout);
                }
                other => {
                    // A refresh that fails keeps the layout in use rather than holding up sends;
                    // the next send after `retry_backoff` tries again.
                    if let Some(stale) = stale {
                        let refresh_at = Instant::now() + self.shared.config.retry_backoff;
                        self.remember_layout(topic, TopicLayout { refresh_at, ..stale });
                        return Ok(stale);
                    }
                    if started.elapsed() + backoff >= self.shared.config.max_block {
                        return Err(match other {
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
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.shared.config.retry_backoff_max);
                }
            }
        }
    }

    fn random_below(&self, n: u32) -> u32 {
        // xorshift64: partition choice needs spread, not cryptographic randomness.
        let mut x = self.shared.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.shared.random.store(x, Ordering::Relaxed);
        (x % u64::from(n.max(1))) as u32
    }

    fn sticky_partition(&self, topic: &str, partitions: u32, size: usize) -> u32 {
        let mut sticky = self.shared.sticky.lock().expect("sticky map");
        let state = sticky.entry(topic.to_string()).or_default();
        let partition = state.partitioner.partition(partitions, |n| self.random_below(n));
        state.bytes_on_current += size;
        if state.bytes_on_current >= self.shared.config.batch_size {
            state.bytes_on_current = 0;
            state.partitioner.batch_closed(partitions, |n| self.random_below(n));
        }
        partition
    }

    fn partition_queue(&self, topic: &str, partition: u32, layout: TopicLayout) -> mpsc::Sender<Command> {
        let mut partitions = self.shared.partitions.lock().expect("partition map");
        if let Some(queue) = partitions
            .get(topic)
            .and_then(|queues| queues.get(partition as usize))
            .and_then(Option::as_ref)
        {
            return queue.clone();
        }
        let (queue, commands) = mpsc::channel(self.shared.config.queue_records);
        let task = PartitionTask::new(Arc::clone(&self.shared), Arc::from(topic), partition, layout);
        let handle = tokio::spawn(task.run(commands));
        self.shared.tasks.lock().expect("task list").push(handle);
        let queues = partitions.entry(topic.to_string()).or_default();
        if queues.len() <= partition as usize {
            queues.resize(partition as usize + 1, None);
        }
        queues[partition as usize] = Some(queue.clone());
        queue
    }
}

/// A sealed batch, waiting for its acknowledgement.
struct Batch {
    id: u64,
    bytes: Bytes,
    /// Bytes of `buffer_memory` its records hold.
    reserved: usize,
    records: Vec<(i64, oneshot::Sender<Result<RecordMetadata, ProduceError>>)>,
    /// When its first record was queued: `delivery_timeout` counts from here.
    created: Instant,
    in_flight: bool,
    not_before: Instant,
    attempts: u32,
    /// Whether some attempt may have reached the broker (so the batch may be in the log).
    maybe_written: bool,
    last_error: Option<ClientError>,
}

struct PartitionTask {
    shared: Arc<Shared>,
    topic: Arc<str>,
    partition: u32,
    max_batch_bytes: usize,
    /// Producer id and epoch of this partition's batches (idempotence on).
    identity: Option<(i64, i16)>,
    next_sequence: i32,
    open: Vec<QueuedRecord>,
    open_bytes: usize,
    unacked: VecDeque<Batch>,
    next_batch_id: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Set when batches must be re-stamped under a (new) producer id: the id of the first
    /// batch to re-stamp. Every batch from it on is known not to be in the log (it, or an
    /// earlier batch of the same sequence run, was refused or never sent).
    restamp_from: Option<u64>,
    /// Re-stamped batches (ids from this one on) wait until every batch before them is
    /// acknowledged: the broker orders batches within one producer id, not across two.
    order_barrier: Option<u64>,
    /// Something happened that may let a batch be sent, expire or answer a flush.
    changed: bool,
}

type Attempt = Pin<Box<dyn Future<Output = (u64, Result<ProduceAck, ClientError>)> + Send>>;

impl PartitionTask {
    fn new(shared: Arc<Shared>, topic: Arc<str>, partition: u32, layout: TopicLayout) -> Self {
        let max_batch_bytes = shared
            .config
            .batch_size
            .min(layout.max_message_bytes.saturating_sub(BATCH_OVERHEAD).max(1));
        PartitionTask {
            shared,
            topic,
            partition,
            max_batch_bytes,
            identity: None,
            next_sequence: 0,
            open: Vec::new(),
            open_bytes: 0,
            unacked: VecDeque::new(),
            next_batch_id: 0,
            flush_waiters: Vec::new(),
            restamp_from: None,
            order_barrier: None,
            changed: true,
        }
    }

    fn idempotent(&self) -> bool {
        self.shared.config.enable_idempotence
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut attempts: FuturesUnordered<Attempt> = FuturesUnordered::new();
        let mut open_deadline: Option<tokio::time::Instant> = None;
        let mut commands_open = true;
        // One timer, re-armed only when the next deadline moves: records arrive far more often
        // than deadlines change.
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            if self.changed || (self.restamp_from.is_some() && attempts.is_empty()) {
                self.changed = false;
                let now = Instant::now();
                self.expire_queued(now);
                if let (Some(from), true) = (self.restamp_from, attempts.is_empty()) {
                    self.take_new_identity(from).await;
                }
                if self.restamp_from.is_none() {
                    self.dispatch(&mut attempts, now);
                }
                self.answer_flushes();
            }
            if !commands_open && self.open.is_empty() && self.unacked.is_empty() {
                return;
            }
            // A batch waiting out a backoff needs a timer; one that is due but not sent waits
            // for an answer to free a slot (or for a producer id), which wakes the loop anyway.
            let now = Instant::now();
            let resend_at = self
                .unacked
                .iter()
                .find(|b| !b.in_flight)
                .filter(|b| b.not_before > now)
                .map(|b| tokio::time::Instant::from_std(b.not_before));
            let wake = match (open_deadline, resend_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if wake != armed {
                if let Some(at) = wake {
                    timer.as_mut().reset(at);
                }
                armed = wake;
            }
            tokio::select! {
                command = commands.recv(), if commands_open => {
                    commands_open = self.on_command(command, &mut open_deadline);
                    // Take whatever else is queued in the same turn: one pass of the loop (clock
                    // reads, dispatch) per burst of records rather than per record.
                    for _ in 0..COMMANDS_PER_TURN {
                        match commands.try_recv() {
                            Ok(command) => commands_open = self.on_command(Some(command), &mut open_deadline),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                commands_open = self.on_command(None, &mut open_deadline);
                                break;
                            }
                        }
                    }
                }
                Some((id, outcome)) = attempts.next(), if !attempts.is_empty() => {
                    self.on_outcome(id, outcome);
                    self.changed = true;
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.changed = true;
                    if open_deadline.is_some_and(|at| at <= tokio::time::Instant::now()) {
                        self.seal();
                        open_deadline = None;
                    }
                }
            }
        }
    }

    /// Handles one command; returns whether more may come.
    fn on_command(&mut self, command: Option<Command>, open_deadline: &mut Option<tokio::time::Instant>) -> bool {
        match command {
            Some(Command::Record(record)) => {
                if !self.open.is_empty() && self.open_bytes + record.size > self.max_batch_bytes {
                    self.seal();
                }
                if self.open.is_empty() {
                    *open_deadline = Some(tokio::time::Instant::from_std(record.enqueued) + self.shared.config.linger);
                }
                self.open_bytes += record.size;
                self.open.push(record);
                if self.open_bytes >= self.max_batch_bytes {
                    self.seal();
                    *open_deadline = None;
                }
                true
            }
            Some(Command::Flush(done)) => {
                self.seal();
                *open_deadline = None;
                let last = self.next_batch_id;
                self.flush_waiters.push((last, done));
                self.changed = true;
                true
            }
            None => {
                self.seal();
                *open_deadline = None;
                self.changed = true;
                false
            }
        }
    }

    /// Closes the open batch: encodes and stamps it and queues it for sending.
    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        self.changed = true;
        let queued = std::mem::take(&mut self.open);
        let reserved = self.open_bytes;
        self.open_bytes = 0;
        let created = queued.iter().map(|r| r.enqueued).min().unwrap_or_else(Instant::now);
        let mut records = Vec::with_capacity(queued.len());
        let mut waiters = Vec::with_capacity(queued.len());
        for (delta, queued) in queued.into_iter().enumerate() {
            let mut record = queued.record;
            record.offset_delta = delta as i32;
            waiters.push((record.timestamp, queued.done));
            records.push(record);
        }
        let stamp = self.next_stamp(records.len());
        let bytes = encode_batch_compressed(&records, stamp, self.shared.config.compression);
        self.next_batch_id += 1;
        self.unacked.push_back(Batch {
            id: self.next_batch_id,
            bytes,
            reserved,
            records: waiters,
            created,
            in_flight: false,
            not_before: Instant::now(),
            attempts: 0,
            maybe_written: false,
            last_error: None,
        });
    }

    /// The stamp for the next `count` records, advancing the sequence.
    fn next_stamp(&mut self, count: usize) -> ProducerStamp {
        match (self.idempotent(), self.identity) {
            (true, Some((producer_id, producer_epoch))) => {
                let stamp = ProducerStamp {
                    producer_id,
                    producer_epoch,
                    base_sequence: self.next_sequence,
                };
                self.next_sequence =
                    ((i64::from(self.next_sequence) + count as i64) % (i64::from(i32::MAX) + 1)) as i32;
                stamp
            }
            // Idempotent but no id yet: stamped when the id arrives (dispatch waits for it).
            _ => ProducerStamp::NONE,
        }
    }

    /// Fails batches that waited past the delivery timeout without being sent again. Batches
    /// are kept in creation order, so the scan stops at the first one still in time.
    fn expire_queued(&mut self, now: Instant) {
        let timeout = self.shared.config.delivery_timeout;
        let mut index = 0;
        while index < self.unacked.len() {
            let batch = &self.unacked[index];
            if batch.in_flight {
                index += 1;
                continue;
            }
            if now.duration_since(batch.created) < timeout {
                break;
            }
            let batch = self.unacked.remove(index).expect("index in range");
            if self.idempotent() && !batch.maybe_written {
                // Never reached a broker: the batches after it must not wait for it.
                self.restamp_after_refusal(batch.id);
            }
            let last_error = batch
                .last_error
                .as_ref()
                .map_or("none (not sent yet)".to_string(), |e| e.to_string());
            let elapsed = batch.created.elapsed();
            self.fail_batch(batch, ProduceError::DeliveryTimeout { elapsed, last_error });
        }
    }

    /// Sends queued batches in order, up to `max_in_flight`.
    fn dispatch(&mut self, attempts: &mut FuturesUnordered<Attempt>, now: Instant) {
        if self.idempotent() && self.identity.is_none() {
            self.restamp_from = Some(0);
            return;
        }
        if self
            .order_barrier
            .is_some_and(|barrier| self.unacked.front().is_none_or(|first| first.id >= barrier))
        {
            self.order_barrier = None;
        }
        let barrier = self.order_barrier;
        // While a batch is being retried, no new batch goes out: otherwise five later batches
        // could land behind a retry whose first attempt was written, pushing it out of the five
        // batches the broker remembers, and its retry could no longer be matched to its offset.
        let recovering = self.unacked.iter().any(|b| b.last_error.is_some());
        for batch in self.unacked.iter_mut() {
            if attempts.len() >= self.shared.config.max_in_flight {
                return;
            }
            if batch.in_flight {
                continue;
            }
            let behind_barrier = barrier.is_some_and(|barrier| batch.id >= barrier);
            if batch.not_before > now || (recovering && batch.attempts == 0) || behind_barrier {
                // Keep order: nothing later goes first.
                return;
            }
            batch.in_flight = true;
            batch.attempts += 1;
            batch.maybe_written = true;
            let remaining = self
                .shared
                .config
                .delivery_timeout
                .saturating_sub(batch.created.elapsed());
            let timeout = self
                .shared
                .config
                .request_timeout
                .min(remaining)
                .max(Duration::from_millis(1));
            let cluster = Arc::clone(&self.shared.cluster);
            let topic = Arc::clone(&self.topic);
            let partition = self.partition;
            let acks = self.shared.config.acks;
            let bytes = batch.bytes.clone();
            let id = batch.id;
            attempts.push(Box::pin(async move {
                let outcome = cluster.produce_attempt(&topic, partition, acks, bytes, timeout).await;
                (id, outcome)
            }));
        }
    }

    fn on_outcome(&mut self, id: u64, outcome: Result<ProduceAck, ClientError>) {
        let Some(index) = self.unacked.iter().position(|b| b.id == id) else {
            return;
        };
        let earlier_unacked = index > 0;
        match outcome {
            Ok(ack) => {
                let batch = self.unacked.remove(index).expect("index in range");
                self.complete(batch, ack.base_offset);
            }
            Err(error) if error.code() == Some(ErrorCode::DuplicateSequence) => {
                // Written long ago; the broker no longer knows the offset.
                let batch = self.unacked.remove(index).expect("index in range");
                self.complete(batch, None);
            }
            Err(error) => {
                let code = error.code();
                let sequence_gap = self.idempotent()
                    && matches!(
                        code,
                        Some(ErrorCode::OutOfOrderSequence) | Some(ErrorCode::UnknownProducerId)
                    );
                let retriable = error.is_retriable() || (sequence_gap && earlier_unacked);
                let within_deadline = {
                    let batch = &self.unacked[index];
                    batch.created.elapsed() + self.backoff(batch.attempts) < self.shared.config.delivery_timeout
                };
                if retriable && within_deadline {
                    let backoff = self.backoff(self.unacked[index].attempts);
                    let batch = &mut self.unacked[index];
                    batch.in_flight = false;
                    batch.not_before = Instant::now() + backoff;
                    batch.last_error = Some(error);
                    return;
                }
                if sequence_gap {
                    // Refused, so not in the log, and nothing after it can be: re-stamp this
                    // batch and the later ones under a new producer id and send them again.
                    let batch = &mut self.unacked[index];
                    batch.in_flight = false;
                    batch.not_before = Instant::now();
                    batch.last_error = Some(error);
                    let id = batch.id;
                    self.restamp_after_refusal(id);
                    return;
                }
                let batch = self.unacked.remove(index).expect("index in range");
                if self.idempotent() && !retriable {
                    // A refusal: the batches after this one must not wait for it.
                    self.restamp_after_refusal(batch.id);
                }
                let failure = if retriable {
                    ProduceError::DeliveryTimeout {
                        elapsed: batch.created.elapsed(),
                        last_error: error.to_string(),
                    }
                } else {
                    match error {
                        ClientError::Broker { code, message } => ProduceError::Broker { code, message },
                        other => ProduceError::Broker {
                            code: ErrorCode::InvalidRequest,
                            message: other.to_string(),
                        },
                    }
                };
                self.fail_batch(batch, failure);
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(10);
        (self.shared.config.retry_backoff * factor).min(self.shared.config.retry_backoff_max)
    }

    fn fail_batch(&self, batch: Batch, error: ProduceError) {
        self.shared.buffer.add_permits(batch.reserved);
        for (_, done) in batch.records {
            let _ = done.send(Err(error.clone()));
        }
    }

    fn complete(&self, batch: Batch, base_offset: Option<u64>) {
        self.shared.buffer.add_permits(batch.reserved);
        for (delta, (timestamp, done)) in batch.records.into_iter().enumerate() {
            let _ = done.send(Ok(RecordMetadata {
                topic: Arc::clone(&self.topic),
                partition: self.partition,
                offset: base_offset.map(|base| base + delta as u64),
                timestamp,
            }));
        }
    }

    /// Batches from `id` on (by id) are not in the log: re-stamp them under a new producer id.
    /// Batches before it keep their stamps — some may be in the log, and a re-stamped retry of
    /// one of those could be written twice.
    fn restamp_after_refusal(&mut self, id: u64) {
        self.restamp_from = Some(self.restamp_from.map_or(id, |from| from.min(id)));
    }

    /// Takes the producer's id (first time) or a fresh one (after a refusal) and re-stamps the
    /// unacknowledged batches from id `from` on, from sequence 0. Only called with nothing in
    /// flight.
    async fn take_new_identity(&mut self, from: u64) {
        let identity = match self.identity {
            None => self
                .shared
                .identity
                .get_or_try_init(|| self.shared.cluster.init_producer_id())
                .await
                .copied(),
            Some(_) => self.shared.cluster.init_producer_id().await,
        };
        match identity {
            Ok(identity) => {
                self.identity = Some(identity);
                self.next_sequence = 0;
                let mut batches = std::mem::take(&mut self.unacked);
                for batch in batches.iter_mut().filter(|b| b.id >= from) {
                    let count = batch.records.len();
                    let stamp = self.next_stamp(count);
                    batch.bytes = restamp(&batch.bytes, stamp);
                    batch.maybe_written = false;
                }
                if batches.front().is_some_and(|first| first.id < from) {
                    self.order_barrier = Some(from);
                }
                self.unacked = batches;
                self.restamp_from = None;
            }
            Err(error) => {
                tracing::warn!(%error, topic = %self.topic, partition = self.partition, "no producer id yet");
                // Retried on the next turn of the loop; queued batches expire meanwhile.
                for batch in self.unacked.iter_mut() {
                    batch.not_before = Instant::now() + self.shared.config.retry_backoff_max;
                    batch.last_error = Some(ClientError::Unreachable {
                        address: "controller".into(),
                        message: error.to_string(),
                    });
                }
                tokio::time::sleep(self.shared.config.retry_backoff_max.min(Duration::from_millis(200))).await;
            }
        }
    }

    fn answer_flushes(&mut self) {
        // Batches are kept in id order: a flush is answered once no batch up to its id is left.
        let oldest_unacked = self.unacked.front().map(|b| b.id);
        for (last, done) in std::mem::take(&mut self.flush_waiters) {
            if oldest_unacked.is_none_or(|oldest| oldest > last) {
                let _ = done.send(());
            } else {
                self.flush_waiters.push((last, done));
            }
        }
    }
}
