//! Real broker processes on loopback: 100,000 records produced with acks=all to a 6-partition
//! RF=3 topic while the leader of each partition in turn is killed with SIGKILL and restarted.
//! Batches carry idempotent producer stamps, so the client's retries cannot duplicate: every
//! acknowledged record must be read back exactly once, at its acknowledged offset, in order,
//! and after catch-up all replicas of a partition must hold identical logs.

use broker::storage::{FlushWorker, LogConfig, RaftIndex, SegmentLog};
use bytes::Bytes;
use client::{Acks, Cluster, RetryPolicy, TopicSpec};
use cluster_tests::{start_cluster, stop_all_at_once, BrokerProcess};
use proto::record_batch::{decode_records, encode_batch, ProducerStamp, Record};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 6;
const RECORDS: usize = 100_000;
const PER_BATCH: usize = 100;
const WAIT: Duration = Duration::from_secs(60);

/// An acknowledged batch: where the cluster said it put which values.
#[derive(Debug, Clone)]
struct Acked {
    base_offset: u64,
    values: Vec<String>,
}

fn batch(values: &[String], stamp: ProducerStamp) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            timestamp: 1_700_000_000_000,
            value: Some(Bytes::from(v.clone())),
            ..Record::default()
        })
        .collect();
    encode_batch(&records, stamp)
}

/// An idempotent producer identity with its next sequence.
struct Sequencer {
    producer_id: i64,
    epoch: i16,
    next: i32,
}

impl Sequencer {
    async fn new(cluster: &Cluster) -> Sequencer {
        let (producer_id, epoch) = cluster.init_producer_id().await.expect("a producer id");
        Sequencer {
            producer_id,
            epoch,
            next: 0,
        }
    }

    fn stamp(&mut self, records: usize) -> ProducerStamp {
        let stamp = ProducerStamp {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            base_sequence: self.next,
        };
        self.next += records as i32;
        stamp
    }
}

async fn wait_for_leaders(cluster: &Cluster) -> BTreeMap<u32, u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(metadata) = cluster.describe_topics(vec![TOPIC.into()]).await {
            let leaders: BTreeMap<u32, u64> = metadata
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter_map(|p| p.leader.map(|l| (p.partition, l)))
                .collect();
            if leaders.len() == PARTITIONS as usize {
                return leaders;
            }
        }
        assert!(Instant::now() < deadline, "partitions never all had leaders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every committed record of `partition`: offset → value.
async fn read_all(cluster: &Cluster, partition: u32) -> BTreeMap<u64, String> {
    let mut records = BTreeMap::new();
    let mut offset = 0;
    loop {
        let (batches, high_watermark) = cluster
            .fetch(TOPIC, partition, offset, 4 * 1024 * 1024, Duration::from_millis(0))
            .await
            .expect("fetch");
        for stored in &batches {
            for record in decode_records(&stored.records).expect("decodable batch") {
                let at = stored.base_offset + record.offset_delta as u64;
                assert!(
                    at < high_watermark,
                    "record at {at} is beyond the high watermark {high_watermark}"
                );
                records.insert(at, String::from_utf8(record.value.unwrap().to_vec()).unwrap());
                offset = offset.max(at + 1);
            }
        }
        if offset >= high_watermark {
            return records;
        }
    }
}

fn partition_dir(broker: &BrokerProcess, partition: u32) -> PathBuf {
    let parent = broker.data_dir.join("partitions");
    std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{TOPIC}-{partition}-g"))
        })
        .unwrap_or_else(|| panic!("broker {} has no replica of partition {partition}", broker.id))
}

fn read_log(dir: &Path) -> Vec<broker::storage::StoredEntry> {
    let flush = FlushWorker::start("check").unwrap();
    let (log, _) = SegmentLog::open(dir, LogConfig::default(), flush.handle(), 0).unwrap();
    log.read_entries(RaftIndex(0), RaftIndex(u64::MAX)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9_of_each_partition_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let bootstrap: Vec<String> = brokers.iter().map(|b| b.address.clone()).collect();
    let cluster = Arc::new(Cluster::new(bootstrap, RetryPolicy::default()));

    let deadline = Instant::now() + WAIT;
    while cluster.metadata(Vec::new()).await.map_or(0, |m| m.brokers.len()) < 3 {
        assert!(Instant::now() < deadline, "brokers never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = cluster
        .create_topics(vec![TopicSpec {
            name: TOPIC.into(),
            partitions: PARTITIONS,
            replication_factor: 3,
            configs: HashMap::new(),
        }])
        .await
        .unwrap();
    assert_eq!(created[0].error, 0, "{created:?}");
    wait_for_leaders(&cluster).await;

    // One producer per partition, acks=all, 100 records per batch.
    let acked: Arc<Mutex<BTreeMap<u32, Vec<Acked>>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let first_failure: Arc<Mutex<Option<String>>> = Arc::default();
    let per_partition = RECORDS / PARTITIONS as usize;
    let mut producers = Vec::new();
    for partition in 0..PARTITIONS {
        let (cluster, acked, failed) = (Arc::clone(&cluster), Arc::clone(&acked), Arc::clone(&failed));
        let first_failure = Arc::clone(&first_failure);
        producers.push(tokio::spawn(async move {
            let mut sequencer = Sequencer::new(&cluster).await;
            for first in (0..per_partition).step_by(PER_BATCH) {
                let values: Vec<String> = (first..(first + PER_BATCH).min(per_partition))
                    .map(|seq| format!("{partition}-{seq}"))
                    .collect();
                let stamp = sequencer.stamp(values.len());
                match cluster
                    .produce(TOPIC, partition, Acks::All, batch(&values, stamp))
                    .await
                {
                    Ok(Some(base_offset)) => acked
                        .lock()
                        .unwrap()
                        .entry(partition)
                        .or_default()
                        .push(Acked { base_offset, values }),
                    Ok(None) => unreachable!("acks=all always reports an offset"),
                    Err(error) => {
                        *failed.lock().unwrap() += 1;
                        first_failure
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("partition {partition}: {error}"));
                    }
                }
            }
        }));
    }

    // Nemesis: SIGKILL the leader of each partition in turn, then restart it on its data.
    let mut failovers = Vec::new();
    for partition in 0..PARTITIONS {
        let leaders = wait_for_leaders(&cluster).await;
        let victim = leaders[&partition] as usize - 1;
        brokers[victim].kill9();
        let killed_at = Instant::now();
        // Time to the first committed write on the new leader of that partition.
        let probe = vec![format!("probe-{partition}")];
        let stamp = Sequencer::new(&cluster).await.stamp(1);
        cluster
            .produce(TOPIC, partition, Acks::All, batch(&probe, stamp))
            .await
            .expect("the partition accepts writes after failover");
        failovers.push(killed_at.elapsed());
        acked.lock().unwrap().entry(partition).or_default().push(Acked {
            base_offset: u64::MAX, // checked for presence only, below
            values: probe,
        });
        brokers[victim].restart();
        wait_for_leaders(&cluster).await;
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let failed = *failed.lock().unwrap();
    println!("failover times (SIGKILL of leader -> first acks=all write): {failovers:?}");
    println!("produce calls that failed after retries (not acknowledged): {failed}");
    if let Some(failure) = first_failure.lock().unwrap().as_ref() {
        println!("first failure: {failure}");
    }

    // Every acknowledged record is at its acknowledged offset; order per partition holds.
    let acked = acked.lock().unwrap().clone();
    let mut duplicates = 0;
    for partition in 0..PARTITIONS {
        let stored = read_all(&cluster, partition).await;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for value in stored.values() {
            *seen.entry(value.as_str()).or_default() += 1;
        }
        duplicates += seen.values().filter(|n| **n > 1).count();
        let mut previous_offset = None;
        for batch in &acked[&partition] {
            if batch.base_offset == u64::MAX {
                assert!(
                    seen.contains_key(batch.values[0].as_str()),
                    "acknowledged {} lost",
                    batch.values[0]
                );
                continue;
            }
            for (i, value) in batch.values.iter().enumerate() {
                let at = batch.base_offset + i as u64;
                assert_eq!(stored.get(&at), Some(value), "partition {partition} offset {at}");
            }
            assert!(
                previous_offset < Some(batch.base_offset),
                "acknowledged batches out of order"
            );
            previous_offset = Some(batch.base_offset);
        }
    }
    assert_eq!(duplicates, 0, "idempotent retries stored values more than once");

    // After catch-up (every replica holds the leader's last entry), all replicas of a partition
    // hold identical logs.
    let deadline = Instant::now() + WAIT;
    loop {
        let metadata = cluster.describe_topics(vec![TOPIC.into()]).await.unwrap();
        let caught_up = metadata.topics[0].partitions.iter().all(|p| p.caught_up.len() == 3);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "replicas never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_all_at_once(&mut brokers);
    for partition in 0..PARTITIONS {
        let logs: Vec<_> = brokers.iter().map(|b| read_log(&partition_dir(b, partition))).collect();
        for (i, log) in logs.iter().enumerate().skip(1) {
            assert_eq!(
                log,
                &logs[0],
                "partition {partition}: broker {} differs from broker 1",
                i + 1
            );
        }
        let data_entries = logs[0]
            .iter()
            .filter(|e| e.kind == broker::storage::EntryKind::Data)
            .count();
        assert!(
            data_entries >= acked[&partition].len(),
            "partition {partition} lost entries"
        );
    }
}
