//! Retention on real broker processes: a topic whose segments roll every second and whose
//! records are kept three seconds. While producers write, every replica's disk stays bounded;
//! once retention stops moving, all replicas report the same log start; a consumer left behind
//! the log start jumps to the earliest record; and a replica that was down while its leader
//! purged past its log end is caught up by a snapshot and then serves the same records; one
//! restarted after purging comes back at the same log start. A quiet
//! partition's last segment is sealed once `segment_ms` old, so its records expire too.

use bytes::Bytes;
use client::{Acks, Admin, ConsumerConfig, OffsetReset};
use cluster_tests::{connect_when_ready, create_topic, describe_on, partition_dir, read_partition, start_cluster_with};
use proto::record_batch::{encode_batch, now_ms, ProducerStamp, Record};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "expiring";
const QUIET_TOPIC: &str = "written-once";
const PARTITIONS: u32 = 2;
const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 10;

fn batch(partition: u32, sequence: u64) -> Bytes {
    let records: Vec<Record> = (0..RECORDS_PER_BATCH)
        .map(|i| {
            let tag = format!("p{partition}-b{sequence}-r{i}-");
            let mut value = tag.into_bytes();
            value.resize(RECORD_BYTES, b'.');
            Record {
                timestamp: now_ms(),
                value: Some(Bytes::from(value)),
                ..Record::default()
            }
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE)
}

/// Writes to every partition for `duration`; returns the bytes written per partition.
async fn write_for(
    cluster: &client::Cluster,
    duration: Duration,
    sequence: &mut u64,
    written: &mut BTreeMap<u32, u64>,
) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        for partition in 0..PARTITIONS {
            let batch = batch(partition, *sequence);
            *written.entry(partition).or_default() += batch.len() as u64;
            cluster
                .produce(TOPIC, partition, Acks::All, batch)
                .await
                .unwrap_or_else(|e| panic!("acks=all to partition {partition}: {e}"));
        }
        *sequence += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("partition directory")
        .map(|e| e.expect("directory entry").metadata().expect("metadata").len())
        .sum()
}

/// Each broker's own view of (log start, high watermark) of `partition` of `topic`.
async fn replica_offsets(addresses: &[String], topic: &str, partition: u32) -> Vec<Option<(u64, u64)>> {
    let mut views = Vec::new();
    for address in addresses {
        let view = describe_on(address, topic).await.and_then(|d| {
            d.partitions
                .into_iter()
                .find(|p| p.partition == partition)
                .and_then(|p| Some((p.log_start_offset?, p.high_watermark?)))
        });
        views.push(view);
    }
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bounds_every_replica_and_all_agree_on_the_log_start() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster_with(root.path(), 3, &["--retention-check-interval-ms", "200"]);
    let addresses: Vec<String> = brokers.iter().map(|b| b.address.clone()).collect();
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(
        &cluster,
        client::NewTopic::new(TOPIC, PARTITIONS, 3)
            .config("segment_ms", "1000")
            .config("retention_ms", "3000"),
    )
    .await;
    create_topic(
        &cluster,
        client::NewTopic::new(QUIET_TOPIC, 1, 3)
            .config("segment_ms", "1000")
            .config("retention_ms", "2000"),
    )
    .await;
    cluster
        .produce(QUIET_TOPIC, 0, Acks::All, batch(0, 0))
        .await
        .expect("write to the quiet topic");
    let mut sequence = 0;
    let mut written = BTreeMap::new();

    // A consumer reads the first records, then falls behind.
    let mut behind = client::Consumer::new(
        Arc::clone(&cluster),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            // Little fetched ahead, so falling behind means being behind.
            max_partition_fetch_bytes: 16 * 1024,
            prefetch_chunks: 1,
            ..ConsumerConfig::default()
        },
    );
    behind.assign(vec![(TOPIC.to_string(), 0)]).await.expect("assign");
    write_for(&cluster, Duration::from_millis(200), &mut sequence, &mut written).await;
    let first = behind.poll(Duration::from_secs(10)).await.expect("first poll");
    assert_eq!(
        first.first().map(|r| r.offset),
        Some(0),
        "the consumer starts at the beginning"
    );

    // Broker 3 misses what its leaders write, and purge, meanwhile.
    brokers[2].kill9();
    write_for(&cluster, Duration::from_secs(8), &mut sequence, &mut written).await;
    brokers[2].restart();
    write_for(&cluster, Duration::from_secs(4), &mut sequence, &mut written).await;

    // Retention stops moving, so the replicas' log starts can be compared.
    Admin::new(Arc::clone(&cluster))
        .alter_topic_config(
            TOPIC,
            HashMap::from([("retention_ms".to_string(), "3600000".to_string())]),
            Vec::new(),
        )
        .await
        .expect("alter retention_ms");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut agreed = BTreeMap::new();
    for partition in 0..PARTITIONS {
        loop {
            let views = replica_offsets(&addresses, TOPIC, partition).await;
            let same = views.windows(2).all(|w| w[0] == w[1]);
            if let (true, Some((log_start, high_watermark))) = (same, views[0]) {
                if log_start > 0 {
                    agreed.insert(partition, (log_start, high_watermark));
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "partition {partition}: replicas never agreed on a moved log start: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    eprintln!("log start and high watermark by partition: {agreed:?}");
    // Every replica kept a bounded part of what was written: about the last retention_ms +
    // segment_ms (+ one check interval) of 12 seconds of writes, a third; without the
    // record-time roll, broker 3 kept over half (its catch-up went into one segment).
    for broker in &brokers {
        for partition in 0..PARTITIONS {
            let kept = dir_bytes(&partition_dir(broker, TOPIC, partition));
            let total = written[&partition];
            eprintln!(
                "broker {} partition {partition}: keeps {kept} of {total} bytes written",
                broker.id
            );
            assert!(
                kept * 2 < total,
                "broker {} partition {partition} keeps {kept} bytes of {total} written",
                broker.id
            );
        }
    }

    // A replica restarted after purging starts from its persisted snapshot at the log start,
    // not from the purged entries.
    brokers[0].stop();
    brokers[0].restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    for partition in 0..PARTITIONS {
        loop {
            let view = replica_offsets(&addresses[..1], TOPIC, partition).await[0];
            if view == Some(agreed[&partition]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partition {partition}: broker 1 restarted at {view:?}, not {:?}",
                agreed[&partition]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The consumer left behind jumps to the earliest record still kept, once it has handed
    // out the little it had fetched ahead before falling behind.
    let (log_start, _) = agreed[&0];
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed_at = loop {
        let records = behind
            .poll(Duration::from_secs(5))
            .await
            .expect("poll after falling behind");
        if let Some(record) = records.iter().find(|r| r.offset >= log_start) {
            break record.offset;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer never got past its prefetched records"
        );
    };
    assert_eq!(resumed_at, log_start, "the consumer resumes at the log start");

    // The partition written once and then left quiet: its only segment was sealed and expired,
    // so every replica's log starts at its end.
    let quiet = replica_offsets(&addresses, QUIET_TOPIC, 0).await;
    let emptied = Some((RECORDS_PER_BATCH as u64, RECORDS_PER_BATCH as u64));
    assert!(
        quiet.iter().all(|view| *view == emptied),
        "the quiet partition's records expire on every replica: {quiet:?}"
    );

    // Broker 3, caught up by snapshot, holds the same records as the leader that purged.
    for partition in 0..PARTITIONS {
        let (log_start, high_watermark) = agreed[&partition];
        let from_leader = read_partition(&cluster, TOPIC, partition).await;
        cluster
            .transfer_leadership(TOPIC, partition, 3)
            .await
            .unwrap_or_else(|e| panic!("partition {partition}: leadership to broker 3: {e}"));
        let from_broker_3 = read_partition(&cluster, TOPIC, partition).await;
        assert_eq!(from_leader.first().map(|r| r.offset), Some(log_start));
        assert_eq!(from_leader.len() as u64, high_watermark - log_start);
        let values = |records: &[client::ConsumerRecord]| -> Vec<(u64, Option<Bytes>)> {
            records.iter().map(|r| (r.offset, r.value.clone())).collect()
        };
        assert_eq!(values(&from_broker_3), values(&from_leader), "partition {partition}");
    }
}
