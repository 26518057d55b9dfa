//! The client crate against real brokers: typed errors a caller can match on, and the consumer
//! (assign, seek by offset / timestamp / earliest / latest, poll, stream, position and high
//! watermark), with compressed batches and headers end to end.

use bytes::Bytes;
use client::{
    Admin, AdminError, Compression, ConsumeError, Consumer, ConsumerConfig, ErrorCode, NewTopic, OffsetReset,
    ProduceError, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use cluster_tests::{connect_when_ready, create_topic, start_cluster};
use futures_util::StreamExt;
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_unknown_topic_too_large_and_delivery_timeout() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(
        &cluster,
        NewTopic::new("small", 1, 3).config("max_message_bytes", "2048"),
    )
    .await;

    // Admin errors carry the controller's code.
    let admin = Admin::new(Arc::clone(&cluster));
    let exists = admin.create_topic(NewTopic::new("small", 1, 3)).await.unwrap_err();
    assert!(
        matches!(
            exists,
            AdminError::Topic {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }
        ),
        "{exists}"
    );
    let too_many = admin.create_topic(NewTopic::new("wide", 1, 4)).await.unwrap_err();
    assert_eq!(too_many.code(), Some(ErrorCode::InvalidReplicationFactor));

    let config = ProducerConfig {
        max_block: Duration::from_millis(800),
        delivery_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(Arc::clone(&cluster), config).unwrap();

    let unknown = producer
        .send(ProducerRecord::new("no-such-topic", "x"))
        .await
        .err()
        .unwrap();
    assert!(matches!(unknown, ProduceError::UnknownTopic { .. }), "{unknown}");

    let large = producer
        .send(ProducerRecord::new("small", vec![7u8; 4096]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(large, ProduceError::RecordTooLarge { max: 2048, .. }),
        "{large}"
    );
    // The broker checks too, for clients that do not.
    let records = vec![Record {
        value: Some(Bytes::from(vec![7u8; 4096])),
        ..Record::default()
    }];
    let refused = cluster
        .produce_attempt(
            "small",
            0,
            client::Acks::All,
            encode_batch(&records, ProducerStamp::NONE),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RecordTooLarge));

    let bad_partition = producer
        .send(ProducerRecord::new("small", "x").partition(5))
        .await
        .err()
        .unwrap();
    assert!(matches!(
        bad_partition,
        ProduceError::InvalidPartition { partitions: 1, .. }
    ));

    let invalid = Producer::new(
        Arc::clone(&cluster),
        ProducerConfig {
            acks: client::Acks::Leader,
            ..ProducerConfig::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        matches!(invalid, ProduceError::InvalidConfig(_)),
        "idempotence needs acks=all"
    );

    producer
        .send_and_wait(ProducerRecord::new("small", "fits"))
        .await
        .unwrap();

    // The broker's idempotence refusals, each a distinct code (the gap cases wait 1.5 s for a
    // missing predecessor first).
    let (producer_id, producer_epoch) = cluster.init_producer_id().await.unwrap();
    let stamped_in = |producer_epoch, base_sequence| {
        let records = vec![Record {
            value: Some(Bytes::from("stamped")),
            ..Record::default()
        }];
        let stamp = ProducerStamp {
            producer_id,
            producer_epoch,
            base_sequence,
        };
        encode_batch(&records, stamp)
    };
    let stamped = |base_sequence| stamped_in(producer_epoch, base_sequence);
    let attempt = |batch, acks| cluster.produce_attempt("small", 0, acks, batch, Duration::from_secs(5));
    let unknown = attempt(stamped(5), client::Acks::All).await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownProducerId));
    let first = attempt(stamped(0), client::Acks::All).await.unwrap();
    assert!(!first.duplicate);
    let gap = attempt(stamped(3), client::Acks::All).await.unwrap_err();
    assert_eq!(gap.code(), Some(ErrorCode::OutOfOrderSequence));
    let again = attempt(stamped(0), client::Acks::All).await.unwrap();
    assert_eq!((again.duplicate, again.base_offset), (true, first.base_offset));
    let leader_only = attempt(stamped(1), client::Acks::Leader).await.unwrap_err();
    assert_eq!(
        leader_only.code(),
        Some(ErrorCode::InvalidRequest),
        "idempotence needs acks=all"
    );
    // A newer epoch of the same producer id starts its sequences over and fences the old one.
    let bumped = attempt(stamped_in(producer_epoch + 1, 0), client::Acks::All)
        .await
        .unwrap();
    assert!(!bumped.duplicate);
    let fenced = attempt(stamped(1), client::Acks::All).await.unwrap_err();
    assert_eq!(fenced.code(), Some(ErrorCode::InvalidProducerEpoch));
    assert!(!fenced.is_retriable(), "a fenced producer must stop");

    for broker in &mut brokers {
        broker.kill9();
    }
    let started = std::time::Instant::now();
    let lost = producer
        .send_and_wait(ProducerRecord::new("small", "cluster down"))
        .await;
    match lost {
        Err(ProduceError::DeliveryTimeout { .. }) => {}
        other => panic!("expected a delivery timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by delivery_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_assigns_seeks_polls_and_streams() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new("events", 2, 3)).await;

    let base_time = 1_800_000_000_000i64;
    for (partition, compression) in [(0u32, Compression::Zstd), (1, Compression::Lz4)] {
        let producer = Producer::new(
            Arc::clone(&cluster),
            ProducerConfig {
                compression,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..100i64 {
            let record = ProducerRecord::new("events", format!("p{partition}-{i}"))
                .key(format!("k{i}"))
                .partition(partition)
                .header("tenant", "acme")
                .timestamp(base_time + i * 1000);
            deliveries.push(producer.send(record).await.unwrap());
        }
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let metadata = delivery.await.unwrap();
            assert_eq!((metadata.partition, metadata.offset), (partition, Some(i as u64)));
        }
        producer.close().await;
    }

    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(Arc::clone(&cluster), config);
    consumer
        .assign(vec![("events".into(), 0), ("events".into(), 1)])
        .await
        .unwrap();
    let mut seen: HashMap<u32, Vec<client::ConsumerRecord>> = HashMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < 200 {
        for record in consumer.poll(Duration::from_secs(5)).await.unwrap() {
            seen.entry(record.partition).or_default().push(record);
        }
    }
    for partition in 0..2u32 {
        let records = &seen[&partition];
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, i as u64);
            assert_eq!(record.value.as_deref(), Some(format!("p{partition}-{i}").as_bytes()));
            assert_eq!(record.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(record.timestamp, base_time + i as i64 * 1000);
            assert_eq!(record.headers[0].key, "tenant");
        }
        assert_eq!(consumer.position("events", partition), Some(100));
        assert_eq!(consumer.high_watermark("events", partition), Some(100));
    }

    // Seek by offset: the next records of that partition start there.
    assert_eq!(consumer.seek("events", 0, SeekTo::Offset(90)).await.unwrap(), 90);
    let again = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.first().map(|r| (r.partition, r.offset)), Some((0, 90)));
    assert_eq!(consumer.position("events", 0), Some(100));
    // Seek by timestamp: the first record at or after it.
    let at = consumer
        .seek("events", 1, SeekTo::Timestamp(base_time + 41_500))
        .await
        .unwrap();
    assert_eq!(at, 42);
    assert_eq!(consumer.seek("events", 1, SeekTo::Earliest).await.unwrap(), 0);
    assert_eq!(consumer.seek("events", 1, SeekTo::Latest).await.unwrap(), 100);
    assert!(matches!(
        consumer.seek("events", 7, SeekTo::Earliest).await,
        Err(ConsumeError::NotAssigned { .. })
    ));

    // Live tail through the stream: a record produced now arrives.
    let producer = Producer::new(Arc::clone(&cluster), ProducerConfig::default()).unwrap();
    producer
        .send_and_wait(ProducerRecord::new("events", "live").partition(1))
        .await
        .unwrap();
    let mut stream = Box::pin(consumer.stream());
    let live = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the live record arrives")
        .unwrap()
        .unwrap();
    assert_eq!((live.partition, live.offset), (1, 100));
    assert_eq!(live.value, Some(Bytes::from("live")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_replica_an_operator_names() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new("moves", 2, 3)).await;
    let admin = client::Admin::new(Arc::clone(&cluster));
    let leaders = cluster_tests::leaders(&cluster, "moves").await;
    let before = leaders[&0];
    let to = (1..=3).find(|id| *id != before).unwrap();

    admin.transfer_leadership("moves", 0, to).await.expect("transfer");
    // Every broker that answers sees the new leader, and it takes writes at once.
    let described = cluster.describe_topics(vec!["moves".into()]).await.unwrap();
    assert_eq!(described.topics[0].partitions[0].leader, Some(to));
    let record = Record {
        timestamp: 1_700_000_000_000,
        value: Some(Bytes::from_static(b"after the move")),
        ..Record::default()
    };
    let offset = cluster
        .produce(
            "moves",
            0,
            client::Acks::All,
            encode_batch(&[record], ProducerStamp::NONE),
        )
        .await
        .expect("produce on the new leader");
    assert_eq!(offset, Some(0));
    // Moving it to where it already is succeeds; to a broker without a replica is refused.
    admin.transfer_leadership("moves", 0, to).await.expect("no-op transfer");
    let refused = admin.transfer_leadership("moves", 1, 42).await.unwrap_err();
    assert_eq!(refused.code(), Some(client::ErrorCode::InvalidRequest), "{refused}");
}

/// A cluster with a one-partition topic `name`, and a producer that refreshes topic layouts
/// every 300 ms (so it notices a layout change quickly).
async fn one_partition_topic_and_a_producer(
    root: &std::path::Path,
    name: &str,
) -> (Vec<cluster_tests::BrokerProcess>, Arc<client::Cluster>, Producer) {
    let brokers = start_cluster(root, 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(name, 1, 3)).await;
    let config = ProducerConfig {
        metadata_max_age: Duration::from_millis(300),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(Arc::clone(&cluster), config).unwrap();
    (brokers, cluster, producer)
}

/// Sends `record()` until one lands on `partition` (the producer refreshed its layout), for at
/// most a minute.
async fn send_until_it_lands_on(producer: &Producer, record: impl Fn() -> ProducerRecord, partition: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while producer.send_and_wait(record()).await.unwrap().partition != partition {
        assert!(
            std::time::Instant::now() < deadline,
            "keyed records never moved to partition {partition}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A key that lands on another partition than 0 once a topic has `partitions`, and that one.
fn key_off_partition_zero_among(partitions: u32) -> (String, u32) {
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| client::partitioner::partition_for_key(k.as_bytes(), partitions) != 0)
        .unwrap();
    let partition = client::partitioner::partition_for_key(key.as_bytes(), partitions);
    (key, partition)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_picks_up_a_topic_recreated_with_more_partitions_after_metadata_max_age() {
    let root = tempfile::tempdir().unwrap();
    let (_brokers, cluster, producer) = one_partition_topic_and_a_producer(root.path(), "grows").await;
    let (key, expected) = key_off_partition_zero_among(4);
    let keyed = || ProducerRecord::new("grows", "v").key(key.clone());
    let first = producer.send_and_wait(keyed()).await.unwrap();
    assert_eq!(first.partition, 0, "one partition");

    // The topic comes back with four partitions: a layout change a producer must survive, like
    // a topic that grows (the next test).
    let admin = client::Admin::new(Arc::clone(&cluster));
    admin.delete_topic("grows").await.unwrap();
    create_topic(&cluster, client::NewTopic::new("grows", 4, 3)).await;
    send_until_it_lands_on(&producer, keyed, expected).await;
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_gains_partitions_keeps_its_records_and_the_producer_follows() {
    let root = tempfile::tempdir().unwrap();
    let (_brokers, cluster, producer) = one_partition_topic_and_a_producer(root.path(), "widens").await;
    let (key, expected) = key_off_partition_zero_among(4);
    let keyed = |value: &'static str| ProducerRecord::new("widens", value).key(key.clone());
    let first = producer.send_and_wait(keyed("before")).await.unwrap();
    assert_eq!(first.partition, 0, "one partition");

    let admin = client::Admin::new(Arc::clone(&cluster));
    admin.create_partitions("widens", 4).await.unwrap();
    // Partitions only grow; a topic that does not exist cannot grow.
    let shrink = admin.create_partitions("widens", 2).await.unwrap_err();
    assert_eq!(shrink.code(), Some(ErrorCode::InvalidPartitions), "{shrink}");
    assert!(shrink.to_string().contains("can only grow"), "{shrink}");
    let unknown = admin.create_partitions("no-such-topic", 5).await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownTopicOrPartition), "{unknown}");

    // The new partitions elect leaders; keyed records re-hash over four once the producer's
    // layout is refreshed.
    send_until_it_lands_on(&producer, || keyed("after"), expected).await;
    producer.close().await;
    let description = admin.describe_topics(vec!["widens".into()]).await.unwrap();
    assert_eq!(description[0].partitions.len(), 4);

    // The record written before the topic grew is where it was.
    let mut consumer = Consumer::new(Arc::clone(&cluster), ConsumerConfig::default());
    consumer.assign(vec![("widens".into(), 0)]).await.unwrap();
    let offset = first.offset.expect("acks=all answers with the offset");
    consumer.seek("widens", 0, SeekTo::Offset(offset)).await.unwrap();
    let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
    let value = records.first().and_then(|r| r.value.clone());
    assert_eq!(value.as_deref(), Some(&b"before"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_change_on_a_running_cluster_and_its_replicas_apply_them() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(
        &cluster,
        NewTopic::new("tuned", 1, 3).config("max_message_bytes", "2048"),
    )
    .await;
    let admin = Admin::new(Arc::clone(&cluster));
    let producer_config = || ProducerConfig {
        delivery_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    };
    let large = || ProducerRecord::new("tuned", vec![7u8; 4096]);
    let small = Producer::new(Arc::clone(&cluster), producer_config()).unwrap();
    let refused = small.send(large()).await.err().unwrap();
    assert!(matches!(refused, ProduceError::RecordTooLarge { .. }), "{refused}");

    // Bad changes are refused whole, naming what is wrong.
    let unknown_key = admin
        .alter_topic_config("tuned", HashMap::from([("colour".into(), "blue".into())]), vec![])
        .await
        .unwrap_err();
    assert_eq!(unknown_key.code(), Some(ErrorCode::InvalidConfig), "{unknown_key}");
    let bad_value = admin
        .alter_topic_config("tuned", HashMap::from([("segment_bytes".into(), "1".into())]), vec![])
        .await
        .unwrap_err();
    assert_eq!(bad_value.code(), Some(ErrorCode::InvalidConfig), "{bad_value}");
    let unknown_topic = admin
        .alter_topic_config("nope", HashMap::from([("segment_bytes".into(), "1024".into())]), vec![])
        .await
        .unwrap_err();
    assert_eq!(
        unknown_topic.code(),
        Some(ErrorCode::UnknownTopicOrPartition),
        "{unknown_topic}"
    );

    // Larger batches, and segments of 1 KiB so every replica's log rolls often from now on.
    admin
        .alter_topic_config(
            "tuned",
            HashMap::from([
                ("max_message_bytes".into(), "8192".into()),
                ("segment_bytes".into(), "1024".into()),
            ]),
            vec![],
        )
        .await
        .unwrap();
    for broker in &brokers {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let configs = cluster_tests::describe_on(&broker.address, "tuned")
                .await
                .map(|t| t.configs)
                .unwrap_or_default();
            if configs.get("max_message_bytes").map(String::as_str) == Some("8192") {
                assert_eq!(configs.get("segment_bytes").map(String::as_str), Some("1024"));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "broker {} never saw the change",
                broker.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let producer = Producer::new(Arc::clone(&cluster), producer_config()).unwrap();
    producer.send_and_wait(large()).await.unwrap();
    for i in 0..20u32 {
        producer
            .send_and_wait(ProducerRecord::new("tuned", vec![b'a'; 500]).key(i.to_string()))
            .await
            .unwrap();
    }
    producer.close().await;
    // Every replica, followers included, rolled its segments at the new size.
    for broker in &brokers {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let dir = cluster_tests::partition_dir(broker, "tuned", 0);
            let segments = std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
                .count();
            if segments >= 5 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "broker {} has {segments} segments",
                broker.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A reset key goes back to its default.
    admin
        .alter_topic_config("tuned", HashMap::new(), vec!["max_message_bytes".into()])
        .await
        .unwrap();
    // (Brokers apply the controller's change a moment apart: ask until the answering one has.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let described = admin.describe_topics(vec!["tuned".into()]).await.unwrap();
        let configs = &described[0].configs;
        if configs.get("max_message_bytes").map(String::as_str) == Some("1048576") {
            assert_eq!(configs.get("segment_bytes").map(String::as_str), Some("1024"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reset never showed: {configs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker knows the leaders only of partitions it holds a replica of. With single-replica
/// partitions each broker holds one of three, so whichever broker the client asks first for
/// metadata cannot name two of the leaders: the client asks those partitions' replicas (before,
/// it retried the same broker until its retries ran out — a 4-broker nemesis run found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_of_partitions_the_asked_broker_holds_no_replica_of_are_found() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let setup = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&setup, NewTopic::new("spread", 3, 1)).await;

    // A fresh client that knows one broker: its first metadata answer names one leader.
    let client = Arc::new(client::Cluster::new(
        vec![brokers[0].address.clone()],
        client::RetryPolicy::default(),
    ));
    let metadata = client.metadata(vec!["spread".into()]).await.unwrap();
    let partitions = &metadata.topics[0].partitions;
    let hosts: Vec<u64> = partitions.iter().map(|p| p.replicas[0]).collect();
    assert_eq!(
        hosts.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3,
        "one replica per broker: {partitions:?}"
    );
    for partition in partitions {
        assert_eq!(partition.leader, Some(partition.replicas[0]), "{partition:?}");
    }
    // And produce and fetch reach every partition.
    let producer = Producer::new(Arc::clone(&client), ProducerConfig::default()).unwrap();
    for partition in 0..3 {
        let sent = producer
            .send(ProducerRecord::new("spread", format!("to {partition}")).partition(partition))
            .await
            .unwrap()
            .await
            .unwrap();
        let offset = sent.offset.expect("acks=all gives the offset");
        let (batches, high_watermark) = client
            .fetch("spread", partition, offset, 1024 * 1024, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(high_watermark, offset + 1);
        assert_eq!(batches.len(), 1, "partition {partition}");
    }
}

/// A leader that freezes (SIGSTOP: its connections stay open and nothing answers) must not stall
/// a consumer: the fetch parked on it gives up after its long poll plus a margin, and the
/// consumer reads on from the partition's new leader long before the old one thaws (before,
/// the fetch waited for the thaw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_on_from_the_new_leader_while_the_old_one_is_frozen() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new("frozen", 1, 3)).await;
    // (A produce request to the frozen leader gives up after its own request timeout, 30 s by
    // default as in Kafka; shortened here, where the consumer is what is measured.)
    let producer = Producer::new(
        Arc::clone(&cluster),
        ProducerConfig {
            request_timeout: Duration::from_secs(3),
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let send = |value: String| {
        let producer = &producer;
        async move {
            producer
                .send(ProducerRecord::new("frozen", value).partition(0))
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(Arc::clone(&cluster), config);
    consumer.assign(vec![("frozen".into(), 0)]).await.unwrap();
    let mut read = Vec::new();
    for i in 0..10 {
        send(format!("before-{i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(read_until(&mut consumer, &mut read, 10, deadline).await, 10);

    // Freeze the leader: the consumer's next fetch is parked on it now.
    let leader = cluster_tests::leaders(&cluster, "frozen").await[&0];
    let frozen = brokers.iter().find(|b| b.id == leader).unwrap();
    frozen.signal_pause(true);
    let frozen_at = Instant::now();
    for i in 0..10 {
        send(format!("after-{i}")).await;
    }
    let got = read_until(&mut consumer, &mut read, 20, frozen_at + Duration::from_secs(20)).await;
    let waited = frozen_at.elapsed();
    frozen.signal_pause(false);
    assert_eq!(got, 20, "read {read:?} in {waited:?} with broker {leader} frozen");
    println!("read on from the new leader {waited:?} after broker {leader} froze");
}

/// Polls `consumer` into `read` until it holds `count` values or `deadline` passes; how many.
async fn read_until(consumer: &mut Consumer, read: &mut Vec<String>, count: usize, deadline: Instant) -> usize {
    while read.len() < count && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap_or_default() {
            read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    read.len()
}
