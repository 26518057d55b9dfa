//! The recorded workload of the history-checked tests (the nemesis, replica moves): idempotent
//! producers writing unique values round-robin over a topic's partitions, and consumers
//! reading every partition, each operation recorded into a [`Recorder`] for the checker.

use crate::history::{Operation, Outcome, Recorder, Seen};
use client::{Cluster, ConsumerConfig, ConsumerRecord, OffsetReset, Producer, ProducerConfig, ProducerRecord, SeekTo};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a recorded producer does.
#[derive(Clone)]
pub struct ProducerPlan {
    /// Its process in the history (its values are `p<process>-<n>`).
    pub process: u32,
    /// The topic and its partition count.
    pub topic: String,
    /// Partitions of the topic (record `n` goes to partition `n % partitions`).
    pub partitions: u32,
    /// A 10 ms pause after every this many sends.
    pub pause_every: u32,
    /// Sends nothing while set (the nemesis's quiet stretches).
    pub silent: Arc<AtomicBool>,
    /// Counts the records handed to the producer (a test waits on it instead of on time).
    pub sent: Arc<AtomicU64>,
}

/// The producer settings of the recorded workload: short linger, a delivery timeout long
/// enough to ride out a failover.
pub fn producer_config() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(2),
        delivery_timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(3),
        ..ProducerConfig::default()
    }
}

/// Runs an idempotent producer until `stop`, then waits for every delivery and records its
/// outcome: `ok` with its offset, `fail` when the send was refused at once, `info` when the
/// delivery timed out (it may or may not have been written).
pub fn spawn_producer(
    client: Arc<Cluster>,
    plan: ProducerPlan,
    history: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = Producer::new(client, producer_config()).unwrap();
        let mut pending = Vec::new();
        let mut n = 0u32;
        let process = plan.process;
        while !stop.load(Ordering::SeqCst) {
            if plan.silent.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let partition = n % plan.partitions;
            let value = format!("p{process}-{n}");
            let send = |offset| Operation::Send {
                partition,
                value: value.clone(),
                offset,
            };
            history.record(process, Outcome::Invoke, send(None));
            let record = ProducerRecord::new(plan.topic.clone(), value.clone()).partition(partition);
            match producer.send(record).await {
                Ok(delivery) => {
                    plan.sent.fetch_add(1, Ordering::SeqCst);
                    pending.push((value.clone(), partition, delivery));
                }
                Err(_) => history.record(process, Outcome::Fail, send(None)),
            }
            n += 1;
            if n.is_multiple_of(plan.pause_every) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for (value, partition, delivery) in pending {
            let (outcome, offset) = match delivery.await {
                Ok(metadata) => (Outcome::Ok, metadata.offset),
                // A delivery timeout may or may not have written the record.
                Err(_) => (Outcome::Info, None),
            };
            history.record(
                process,
                outcome,
                Operation::Send {
                    partition,
                    value,
                    offset,
                },
            );
        }
        producer.close().await;
    })
}

/// A consumer of every partition of `topic` from `from`, recording its seeks and every poll
/// that returned records, until `stop`.
pub fn spawn_consumer(
    client: Arc<Cluster>,
    process: u32,
    (topic, partitions): (&str, u32),
    from: SeekTo,
    history: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let topic = topic.to_string();
    tokio::spawn(async move {
        let config = ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        };
        let mut consumer = client::Consumer::new(client, config);
        consumer
            .assign((0..partitions).map(|p| (topic.clone(), p)).collect())
            .await
            .unwrap();
        for partition in 0..partitions {
            let offset = consumer.seek(&topic, partition, from).await.unwrap();
            history.record(process, Outcome::Ok, Operation::Seek { partition, offset });
        }
        while !stop.load(Ordering::SeqCst) {
            if let Ok(records) = consumer.poll(Duration::from_millis(200)).await {
                if !records.is_empty() {
                    let records = records.iter().map(seen).collect();
                    history.record(process, Outcome::Ok, Operation::Poll { records });
                }
            }
        }
    })
}

/// A consumed record as the history keeps it.
pub fn seen(record: &ConsumerRecord) -> Seen {
    Seen {
        partition: record.partition,
        offset: record.offset,
        value: String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned(),
    }
}

/// Reads every committed record of each partition of `topic` and records it as the final read
/// of process `checker`; returns each partition's offsets.
pub async fn record_final_reads(
    client: &Arc<Cluster>,
    (topic, partitions): (&str, u32),
    checker: u32,
    history: &Recorder,
) -> Vec<(u32, Vec<u64>)> {
    let mut offsets = Vec::new();
    for partition in 0..partitions {
        let records: Vec<(u64, String)> = crate::read_partition(client, topic, partition)
            .await
            .iter()
            .map(|r| {
                let seen = seen(r);
                (seen.offset, seen.value)
            })
            .collect();
        offsets.push((partition, records.iter().map(|(offset, _)| *offset).collect()));
        history.record(checker, Outcome::Ok, Operation::FinalRead { partition, records });
    }
    offsets
}
