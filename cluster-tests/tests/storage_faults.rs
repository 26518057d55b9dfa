//! Storage that loses the tail of a replica's log, against real broker processes. The nemesis
//! run (seed 4) found both: acknowledged writes lost when a replica whose tail was torn away
//! voted before it had caught up, and one log id holding two different batches when a leader
//! restarted with a torn tail and went on leading its old term. Each schedule is made
//! deterministic here.

use bytes::Bytes;
use client::NewTopic;
use cluster_tests::{
    connect_when_ready, create_topic, leaders, log_digest, partition_dir, partitions_held_from_elections,
    read_partition, start_cluster, stop_all_at_once,
};
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TOPIC: &str = "torn";

fn values(records: Vec<client::ConsumerRecord>) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

fn batch(value: &str) -> Bytes {
    let record = Record {
        timestamp: 1_700_000_000_000,
        value: Some(Bytes::from(value.to_string())),
        ..Record::default()
    };
    encode_batch(&[record], ProducerStamp::NONE)
}

async fn produce(cluster: &client::Cluster, values: std::ops::Range<u32>) {
    produce_to(cluster, TOPIC, values).await
}

async fn produce_to(cluster: &client::Cluster, topic: &str, values: std::ops::Range<u32>) {
    for i in values {
        cluster
            .produce(topic, 0, client::Acks::All, batch(&format!("v{i}")))
            .await
            .expect("acks=all produce");
    }
}

/// The high watermark the broker at `address` itself reports for partition 0 of `topic` (its
/// applied offset), asked directly rather than through the leader.
async fn local_high_watermark_of(address: &str, topic: &str) -> Option<u64> {
    cluster_tests::describe_on(address, topic)
        .await?
        .partitions
        .first()?
        .high_watermark
}

/// Waits until every broker has applied `records` records of partition 0 of `topic`.
async fn wait_applied_everywhere(brokers: &[cluster_tests::BrokerProcess], topic: &str, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for broker in brokers {
        while local_high_watermark_of(&broker.address, topic).await < Some(records) {
            assert!(
                Instant::now() < deadline,
                "broker {} never applied the records",
                broker.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_acknowledged_entries_does_not_vote_until_it_has_them_back() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new(TOPIC, 1, 3)).await;
    let leader = leaders(&cluster, TOPIC).await[&0];
    let index = |id: u64| id as usize - 1;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (torn, behind) = (followers[0], followers[1]);

    produce(&cluster, 0..50).await;
    // `behind` misses the next 50: they are committed by the leader and `torn` alone.
    brokers[index(behind)].kill9();
    produce(&cluster, 50..100).await;
    // Storage then loses the end of `torn`'s log — entries it had acknowledged — and the
    // leader, the only other replica holding them, goes down.
    brokers[index(torn)].kill9();
    cluster_tests::truncate_active_segment(&partition_dir(&brokers[index(torn)], TOPIC, 0), 37);
    brokers[index(leader)].kill9();
    brokers[index(torn)].restart();
    brokers[index(behind)].restart();

    // `torn` knows what it lost.
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions_held_from_elections(&brokers[index(torn)].address, torn, TOPIC).await != Some(vec![0]) {
        assert!(
            Instant::now() < deadline,
            "broker {torn} never reported its lost entries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `torn` and `behind` are a majority, but neither holds the lost entries: no leader may
    // emerge from them. Several election timeouts give one every chance to.
    let window = Instant::now() + Duration::from_secs(4);
    while Instant::now() < window {
        if let Ok(metadata) = cluster.describe_topics(vec![TOPIC.into()]).await {
            // (A broker still loading its metadata describes no partitions yet.)
            let elected = metadata
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .and_then(|p| p.leader);
            assert!(
                elected != Some(torn) && elected != Some(behind),
                "broker {elected:?} was elected without the acknowledged entries"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old leader returns: nothing acknowledged is missing, and `torn` catches up.
    brokers[index(leader)].restart();
    let expected: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    assert_eq!(values(read_partition(&cluster, TOPIC, 0).await), expected);
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions_held_from_elections(&brokers[index(torn)].address, torn, TOPIC).await != Some(vec![]) {
        assert!(Instant::now() < deadline, "broker {torn} never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Caught up, `torn` votes again: without the old leader, `torn` and `behind` elect one.
    brokers[index(leader)].kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    while leaders(&cluster, TOPIC).await[&0] == leader {
        assert!(Instant::now() < deadline, "no leader was elected among the two others");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&cluster, 100..101).await;
    let expected: Vec<String> = (0..101).map(|i| format!("v{i}")).collect();
    assert_eq!(values(read_partition(&cluster, TOPIC, 0).await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_with_a_torn_tail_leads_again_only_after_an_election() {
    const REUSE: &str = "reuse";
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new(REUSE, 1, 3)).await;
    // A clean restart makes every broker's record of the topic durable, so the leader below
    // knows its partition on restart even while no quorum can confirm anything.
    for broker in &mut brokers {
        broker.stop();
    }
    for broker in &mut brokers {
        broker.restart();
    }
    produce_to(&cluster, REUSE, 0..50).await;
    let leader = leaders(&cluster, REUSE).await[&0];
    let index = |id: u64| id as usize - 1;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    // Everyone holds everything before the freeze.
    wait_applied_everywhere(&brokers, REUSE, 50).await;

    // The followers freeze holding every entry; the leader loses the end of its log and comes
    // back while they are frozen, so no one else can have been elected in the meantime.
    for follower in &followers {
        brokers[index(*follower)].signal_pause(true);
    }
    brokers[index(leader)].kill9();
    cluster_tests::truncate_active_segment(&partition_dir(&brokers[index(leader)], REUSE, 0), 37);
    brokers[index(leader)].restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while local_high_watermark_of(&brokers[index(leader)].address, REUSE)
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the restarted leader never served its partition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for follower in &followers {
        brokers[index(*follower)].signal_pause(false);
    }

    // Had it resumed its old term, its next entries would reuse the lost entries' log ids and
    // the followers, holding ids it "matches", would keep different batches under them.
    produce_to(&cluster, REUSE, 50..100).await;
    let expected: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    assert_eq!(values(read_partition(&cluster, REUSE, 0).await), expected);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metadata = cluster.describe_topics(vec![REUSE.into()]).await.unwrap();
        if metadata.topics[0].partitions[0].caught_up.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "replicas never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_all_at_once(&mut brokers);
    let digests: Vec<String> = brokers
        .iter()
        .map(|b| log_digest(&partition_dir(b, REUSE, 0)))
        .collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "replicas diverged: {digests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_that_lost_acknowledged_entries_still_elect_the_one_that_has_them() {
    const TWO: &str = "two-torn";
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new(TWO, 1, 3)).await;
    produce_to(&cluster, TWO, 0..50).await;
    let leader = leaders(&cluster, TWO).await[&0];
    let index = |id: u64| id as usize - 1;
    wait_applied_everywhere(&brokers, TWO, 50).await;

    // Everyone goes down; both followers lose the end of their logs. They are a majority that
    // must not elect one of themselves — but they must let the leader, who has everything, lead.
    for broker in &mut brokers {
        broker.kill9();
    }
    for follower in (1..=3).filter(|id| *id != leader) {
        cluster_tests::truncate_active_segment(&partition_dir(&brokers[index(follower)], TWO, 0), 37);
    }
    for broker in &mut brokers {
        broker.restart();
    }
    produce_to(&cluster, TWO, 50..60).await;
    assert_eq!(
        leaders(&cluster, TWO).await[&0],
        leader,
        "only the intact replica can lead"
    );
    let expected: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    assert_eq!(values(read_partition(&cluster, TWO, 0).await), expected);
}
