//! Sleeping Raft nodes on real broker processes: a replica quiet for `--dormant-after-ms`, leader
//! or follower, drops its openraft instance (`broker_dormant_groups`). A read wakes a sleeping
//! leader, whose followers answer it asleep; a write wakes the group; its leader's death wakes
//! a follower (it campaigns or votes); a sleeping leader reaches a restarted follower without
//! waking. Everything written reads back throughout.

use client::Acks;
use cluster_tests::{
    assert_read_back, connect_when_ready, create_topic, leaders, metric_where, one_record_batch,
    start_cluster_with_admin, wait_until_quiet, write_each, BrokerProcess,
};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const TOPIC: &str = "sleepy";
const PARTITIONS: u32 = 6;
/// Every broker hosts every partition (RF=3 on three brokers).
const REPLICAS: f64 = (PARTITIONS * 3) as f64;
const QUIET_WAIT: Duration = Duration::from_secs(30);

/// The sum over the running brokers of metric `name`.
async fn total(brokers: &[BrokerProcess], admins: &[String], name: &str) -> f64 {
    let mut sum = 0.0;
    for (broker, admin) in brokers.iter().zip(admins) {
        if broker.is_running() {
            sum += metric_where(admin, name, None).await;
        }
    }
    sum
}

/// Waits until `sleeping` replicas sleep across the running brokers.
async fn await_asleep(brokers: &[BrokerProcess], admins: &[String], sleeping: f64, what: &str) {
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let now = total(brokers, admins, "broker_dormant_groups").await;
        if now == sleeping {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} of {sleeping} replicas asleep after {QUIET_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Quiet groups woken on the brokers at `admins` to reach a restarted follower.
async fn woken_to_reach_a_restarted_follower(admins: &[String]) -> f64 {
    let mut sum = 0.0;
    for admin in admins {
        sum += metric_where(
            admin,
            "broker_quiet_group_wakes_total",
            Some(("reason", "restarted_follower")),
        )
        .await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_replicas_sleep_and_wake_for_reads_writes_a_dead_leader_and_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, _addresses, admins) = start_cluster_with_admin(root.path(), 3, &["--dormant-after-ms", "1000"]);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let mut written = BTreeMap::new();
    write_each(&cluster, TOPIC, PARTITIONS, "before", &mut written).await;
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    await_asleep(&brokers, &admins, REPLICAS, "quiet").await;

    // Reads on quiet partitions wake their sleeping leaders, which renew their leases with one
    // round of appends: the sleeping followers answer it asleep.
    let woken_before_reads = total(&brokers, &admins, "broker_dormant_group_wakes_total").await;
    tokio::time::sleep(Duration::from_secs(1)).await; // (past the lease: the reads renew it)
    for partition in 0..PARTITIONS {
        let latest = cluster
            .list_offsets(TOPIC, partition, client::OffsetSpec::Latest, 0)
            .await
            .expect("ListOffsets on a partition whose followers sleep");
        assert_eq!(latest, Some(1), "partition {partition}");
    }
    assert_read_back(&cluster, TOPIC, &written).await;
    let woken = total(&brokers, &admins, "broker_dormant_group_wakes_total").await - woken_before_reads;
    assert!(
        woken <= f64::from(PARTITIONS),
        "reads woke {woken} sleeping replicas: more than the {PARTITIONS} leaders"
    );
    // (The leaders, unused for `--dormant-after-ms`, sleep again.)
    await_asleep(&brokers, &admins, REPLICAS, "quiet after the reads").await;

    // A write wakes its leader and the followers it reaches: each is built again and takes the
    // entry.
    let woken_before_writes = total(&brokers, &admins, "broker_dormant_group_wakes_total").await;
    write_each(&cluster, TOPIC, PARTITIONS, "after", &mut written).await;
    assert_read_back(&cluster, TOPIC, &written).await;
    // (acks=all answers once a majority has the entry: the last follower may take it after.)
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let woken = total(&brokers, &admins, "broker_dormant_group_wakes_total").await - woken_before_writes;
        if woken >= REPLICAS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{woken} sleeping replicas woke for a write to every partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    await_asleep(&brokers, &admins, REPLICAS, "quiet again after the writes").await;

    // The broker leading partition 0 dies: its groups' sleeping followers wake, one of each
    // campaigns, and the new leaders hold everything written.
    let before = leaders(&cluster, TOPIC).await;
    let victim = before[&0];
    let victim_index = (victim - 1) as usize;
    brokers[victim_index].kill9();
    for (partition, leader) in &before {
        if *leader == victim {
            let value = format!("failed-over-{partition}");
            cluster
                .produce(TOPIC, *partition, Acks::All, one_record_batch(&value))
                .await
                .unwrap_or_else(|e| panic!("partition {partition} after its leader's broker died: {e}"));
            written.entry(*partition).or_default().push(value);
        }
    }
    assert_read_back(&cluster, TOPIC, &written).await;

    await_asleep(&brokers, &admins, 2.0 * f64::from(PARTITIONS), "two brokers quiet").await;

    // Back: the sleeping leaders reach it asleep, except those of the groups written to while
    // it was down (it is behind in those: they wake and catch it up). Everything quiets, and
    // every replica sleeps again.
    let behind = before.values().filter(|leader| **leader == victim).count() as f64;
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != victim_index)
        .map(|i| admins[i].clone())
        .collect();
    let woken_before = woken_to_reach_a_restarted_follower(&survivors).await;
    brokers[victim_index].restart();
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    await_asleep(&brokers, &admins, REPLICAS, "quiet after the restart").await;
    let woken = woken_to_reach_a_restarted_follower(&survivors).await - woken_before;
    assert!(
        woken <= behind,
        "{woken} groups woke to reach the restarted broker; only the {behind} written to while it was down are behind"
    );
    write_each(&cluster, TOPIC, PARTITIONS, "last", &mut written).await;
    assert_read_back(&cluster, TOPIC, &written).await;
}

/// A leader built again probes its followers from the middle of its log, a few hundred entries
/// at a time: on a long log, sleeping followers answer those probes asleep from their logs, so
/// a read on an idle partition wakes its leader only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_long_idle_log_wakes_only_its_leader() {
    const LONG: &str = "long";
    let root = tempfile::tempdir().unwrap();
    let (brokers, _addresses, admins) = start_cluster_with_admin(root.path(), 3, &["--dormant-after-ms", "1000"]);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(LONG, 1, 3)).await;
    // (Each batch is one Raft entry: well past what one probe carries.)
    for n in 0..1_500 {
        cluster
            .produce(LONG, 0, Acks::All, one_record_batch(&format!("r{n}")))
            .await
            .unwrap_or_else(|e| panic!("record {n}: {e}"));
    }
    wait_until_quiet(&brokers, LONG, 1, QUIET_WAIT).await;
    await_asleep(&brokers, &admins, 3.0, "quiet").await;
    let woken_before = total(&brokers, &admins, "broker_dormant_group_wakes_total").await;
    let latest = cluster
        .list_offsets(LONG, 0, client::OffsetSpec::Latest, 0)
        .await
        .expect("ListOffsets on a sleeping partition");
    assert_eq!(latest, Some(1_500));
    let woken = total(&brokers, &admins, "broker_dormant_group_wakes_total").await - woken_before;
    assert_eq!(
        woken, 1.0,
        "a read woke {woken} sleeping replicas: only the leader should wake"
    );
}
