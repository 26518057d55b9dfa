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
//!
//! The files, by concern (the pure cores take `now` and return decisions; no tokio or clock):
//! - `config`, `error`, `record`: the public types.
//! - `routing`: the topic layout cache and the sticky partition choice.
//! - `accumulator` (pure): the open batch, linger and size sealing, buffer admission.
//! - `sequencer` (pure): producer id, sequence numbers, re-stamping and the order barrier.
//! - `delivery` (pure): what may be sent, what expired, what an error means (retry by
//!   [`crate::retry::Backoff`], re-stamp, or fail).
//! - `sender`: the partition task, the async shell around those cores.
//! - this file: [`Producer`], which routes each record to its partition's task.

mod accumulator;
mod config;
mod delivery;
mod error;
mod record;
mod routing;
mod sender;
mod sequencer;

pub use config::ProducerConfig;
pub use error::ProduceError;
pub use record::{DeliveryFuture, ProducerRecord, RecordMetadata};

use crate::cluster::Cluster;
use crate::partitioner::partition_for_key;
use accumulator::{admission, record_size, Admission};
use proto::record_batch::Record;
use routing::{LayoutCache, StickyRouter, TopicLayout};
use sender::{Command, PartitionTask, QueuedRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What a producer's clones and partition tasks share.
struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    layouts: LayoutCache,
    router: StickyRouter,
    /// Each partition's queue, by topic then partition (looked up without allocating).
    partitions: Mutex<HashMap<String, Vec<Option<mpsc::Sender<Command>>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
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

impl Producer {
    /// A producer over `cluster` with `config`.
    pub fn new(cluster: Arc<Cluster>, config: ProducerConfig) -> Result<Producer, ProduceError> {
        config.validate()?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Ok(Producer {
            shared: Arc::new(Shared {
                cluster,
                layouts: LayoutCache::new(),
                router: StickyRouter::new(config.batch_size, seed),
                partitions: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
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
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ProduceError::Closed);
        }
        let layout = shared
            .layouts
            .layout(&shared.cluster, &shared.config, &record.topic)
            .await?;
        let record_bytes = Record {
            offset_delta: 0,
            timestamp: record.timestamp.unwrap_or_else(proto::record_batch::now_ms),
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        let size = record_size(&record_bytes);
        let free = shared.buffer.available_permits();
        let admitted = admission(size, layout.max_message_bytes, shared.config.buffer_memory, free);
        if let Admission::TooLarge { max } = admitted {
            return Err(ProduceError::RecordTooLarge {
                topic: record.topic,
                size,
                max,
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
                None => shared.router.partition(&record.topic, layout.partitions, size),
            },
        };
        let permits = size as u32;
        // Room seen free may be taken by a concurrent send before this one reserves it: then
        // this one waits like any other.
        let ready = match admitted {
            Admission::Reserve => shared.buffer.try_acquire_many(permits).ok(),
            _ => None,
        };
        let reserved = match ready {
            Some(reserved) => reserved,
            None => tokio::time::timeout(shared.config.max_block, shared.buffer.acquire_many(permits))
                .await
                .map_err(|_| ProduceError::BufferFull {
                    waited: shared.config.max_block,
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
            shared.buffer.add_permits(size);
            return Err(ProduceError::Closed);
        }
        Ok(DeliveryFuture::new(receiver))
    }

    /// The cluster this producer sends to.
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
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

    /// The queue of the partition's task, started on first use.
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
