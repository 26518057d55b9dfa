//! Growing the cluster and moving replicas while it serves: a broker started with a new id and
//! the cluster's addresses joins on its own; partitions move onto it through Raft membership
//! changes (learner, catch-up, joint consensus) while idempotent producers and a consumer run,
//! and the history checker finds nothing wrong; the replicas dropped delete their data; a move
//! survives the controller leader's kill -9; a cancelled move goes back; bad plans are refused
//! with clear errors and change nothing.

use client::{Admin, ErrorCode, NewTopic, PartitionReplicas, Producer, ProducerConfig, ProducerRecord, SeekTo};
use cluster_tests::checker::check;
use cluster_tests::history::{Operation, Outcome, Recorder};
use cluster_tests::workload::{record_final_reads, spawn_consumer, spawn_producer, ProducerPlan};
use cluster_tests::{
    connect_when_ready, create_topic, free_ports, log_digest, partition_dir, peers_flag, read_partition, replica_sets,
    start_cluster_with, stop_all_at_once, BrokerProcess,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "moving";

/// Three brokers and the address of a fourth that has not started: its `--peers` name the
/// three (its bootstrap addresses) and itself; theirs do not name it.
fn three_brokers_and_room_for_a_fourth(root: &std::path::Path) -> (Vec<BrokerProcess>, String) {
    let brokers = start_cluster_with(root, 3, &[]);
    let fourth = format!("127.0.0.1:{}", free_ports(1)[0]);
    (brokers, fourth)
}

/// Starts broker 4 with the cluster's addresses as its only knowledge of it.
fn start_fourth(root: &std::path::Path, brokers: &[BrokerProcess], address: &str) -> BrokerProcess {
    let mut addresses: Vec<String> = brokers.iter().map(|b| b.address.clone()).collect();
    addresses.push(address.to_string());
    BrokerProcess::start_with(
        4,
        address.to_string(),
        root.join("broker-4"),
        peers_flag(&addresses),
        Vec::new(),
    )
}

/// Waits until the metadata lists `count` brokers.
async fn wait_for_brokers(cluster: &client::Cluster, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if cluster.metadata(Vec::new()).await.map_or(0, |m| m.brokers.len()) >= count {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster never listed {count} brokers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no move is in progress.
async fn wait_until_moved(admin: &Admin, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let moving = admin.list_reassignments().await.unwrap();
        if moving.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "moves still in progress after {timeout:?}: {moving:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `broker` holds a directory for `partition` of the topic.
fn holds_replica(broker: &BrokerProcess, partition: u32) -> bool {
    std::fs::read_dir(broker.data_dir.join("partitions")).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{TOPIC}-{partition}-g"))
        })
    })
}

/// Waits until exactly the brokers in `expected` hold a directory of `partition`.
async fn wait_for_replica_dirs(brokers: &[&BrokerProcess], partition: u32, expected: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holding: Vec<u64> = brokers
            .iter()
            .filter(|b| holds_replica(b, partition))
            .map(|b| b.id)
            .collect();
        let mut wanted = expected.to_vec();
        wanted.sort_unstable();
        if holding == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partition {partition}: data held by {holding:?}, wanted on {wanted:?} only"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the workload, reads every partition to its end and checks the history: no anomaly,
/// and more than `min_acknowledged` sends acknowledged.
async fn stop_and_check(
    workers: Vec<tokio::task::JoinHandle<()>>,
    stop: &AtomicBool,
    client: &Arc<client::Cluster>,
    partitions: u32,
    history: &Arc<Recorder>,
    min_acknowledged: usize,
) {
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    record_final_reads(client, (TOPIC, partitions), 999, history).await;
    let report = check(&history.events());
    assert!(report.is_clean(), "anomalies: {:?}", report.anomalies);
    assert!(report.sends.1 > min_acknowledged, "{:?}", report.sends);
}

/// Two recorded idempotent producers writing round-robin over the topic's `partitions`,
/// counting what they hand over in `sent`, until `stop`.
fn spawn_two_producers(
    client: &Arc<client::Cluster>,
    partitions: u32,
    history: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (1..=2u32)
        .map(|process| {
            let plan = ProducerPlan {
                process,
                topic: TOPIC.into(),
                partitions,
                pause_every: 20,
                silent: Arc::default(),
                sent: Arc::clone(sent),
            };
            spawn_producer(Arc::clone(client), plan, Arc::clone(history), Arc::clone(stop))
        })
        .collect()
}

/// Waits until the producers have handed over `count` records.
async fn wait_for_sends(sent: &AtomicU64, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.load(Ordering::SeqCst) < count {
        assert!(
            Instant::now() < deadline,
            "the producers sent only {} records",
            sent.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `replicas` with `out` replaced by `into` (in its place, so the preferred leader moves too
/// when `out` was first).
fn replaced(replicas: &[u64], out: u64, into: u64) -> Vec<u64> {
    replicas.iter().map(|id| if *id == out { into } else { *id }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_broker_joins_and_half_the_partitions_move_onto_it_while_clients_run() {
    const PARTITIONS: u32 = 4;
    let root = tempfile::tempdir().unwrap();
    let (brokers, fourth_address) = three_brokers_and_room_for_a_fourth(root.path());
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, PARTITIONS, 3)).await;

    // Broker 4 joins: the three were never told of it.
    let fourth = start_fourth(root.path(), &brokers, &fourth_address);
    wait_for_brokers(&client, 4).await;
    let metadata = client.metadata(Vec::new()).await.unwrap();
    assert!(
        metadata
            .brokers
            .iter()
            .any(|b| b.id == 4 && b.address == fourth_address),
        "{:?}",
        metadata.brokers
    );

    // Idempotent producers and a consumer, every operation in the history.
    let (history, stop, sent) = (Arc::new(Recorder::default()), Arc::default(), Arc::default());
    let mut workers = spawn_two_producers(&client, PARTITIONS, &history, &stop, &sent);
    let (consumer_client, consumer_history) = (Arc::clone(&client), Arc::clone(&history));
    workers.push(spawn_consumer(
        consumer_client,
        100,
        (TOPIC, PARTITIONS),
        SeekTo::Offset(0),
        consumer_history,
        Arc::clone(&stop),
    ));
    // Enough written before the move that it copies something, and after it (not timed: a
    // loaded machine writes slower, the test waits for the count).
    wait_for_sends(&sent, 1000).await;

    // Half the partitions move onto broker 4, each giving up its preferred leader (so the
    // leaving replica is usually the leader, which hands over first).
    let admin = Admin::new(Arc::clone(&client));
    let before = replica_sets(&client, TOPIC).await;
    let moves: Vec<PartitionReplicas> = (0..PARTITIONS / 2)
        .map(|partition| PartitionReplicas {
            topic: TOPIC.into(),
            partition,
            replicas: replaced(&before[&partition], before[&partition][0], 4),
        })
        .collect();
    let started = Instant::now();
    admin.reassign_partitions(moves.clone()).await.unwrap();
    wait_until_moved(&admin, Duration::from_secs(60)).await;
    println!("moved {} partitions in {:?} under load", moves.len(), started.elapsed());
    let moved_at = sent.load(Ordering::SeqCst);
    wait_for_sends(&sent, moved_at + 500).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let after = replica_sets(&client, TOPIC).await;
    for planned in &moves {
        assert_eq!(
            after[&planned.partition], planned.replicas,
            "partition {}",
            planned.partition
        );
    }
    for partition in PARTITIONS / 2..PARTITIONS {
        assert_eq!(
            after[&partition], before[&partition],
            "partition {partition} did not move"
        );
    }
    // The replicas dropped deleted their data; broker 4 holds the moved partitions.
    let all: Vec<&BrokerProcess> = brokers.iter().chain(std::iter::once(&fourth)).collect();
    for (partition, replica_set) in &after {
        wait_for_replica_dirs(&all, *partition, replica_set).await;
    }

    // Every replica caught up, then everything read and every replica's log compared.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let described = client.describe_topics(vec![TOPIC.into()]).await.unwrap();
        if described.topics[0].partitions.iter().all(|p| p.caught_up.len() == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never caught up: {:?}",
            described.topics[0].partitions
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    record_final_reads(&client, (TOPIC, PARTITIONS), 999, &history).await;
    let mut processes: Vec<BrokerProcess> = brokers;
    processes.push(fourth);
    stop_all_at_once(&mut processes);
    for (partition, replica_set) in &after {
        for broker in processes.iter().filter(|b| replica_set.contains(&b.id)) {
            let digest = log_digest(&partition_dir(broker, TOPIC, *partition));
            history.record(
                999,
                Outcome::Ok,
                Operation::ReplicaLog {
                    partition: *partition,
                    broker: broker.id,
                    digest,
                },
            );
        }
    }
    let report = check(&history.events());
    assert!(report.is_clean(), "anomalies: {:?}", report.anomalies);
    assert!(
        report.sends.1 > 500,
        "too little was acknowledged to test anything: {:?}",
        report.sends
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_completes_after_the_controller_leader_is_killed_mid_way() {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, fourth_address) = three_brokers_and_room_for_a_fourth(root.path());
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, 1, 3)).await;
    let fourth = start_fourth(root.path(), &brokers, &fourth_address);
    wait_for_brokers(&client, 4).await;
    let producer = Producer::new(Arc::clone(&client), ProducerConfig::default()).unwrap();
    for n in 0..200 {
        producer
            .send(ProducerRecord::new(TOPIC, format!("before-{n}")).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // Broker 4 frozen: the move cannot get past the catch-up until it thaws.
    fourth.signal_pause(true);
    let controller = client
        .metadata(Vec::new())
        .await
        .unwrap()
        .controller
        .expect("a controller");
    let before = replica_sets(&client, TOPIC).await[&0].clone();
    let target = replaced(&before, controller, 4);
    let admin = Admin::new(Arc::clone(&client));
    admin
        .reassign_partitions(vec![PartitionReplicas {
            topic: TOPIC.into(),
            partition: 0,
            replicas: target.clone(),
        }])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(admin.list_reassignments().await.unwrap().len(), 1, "still moving");

    let killed = brokers.iter_mut().find(|b| b.id == controller).unwrap();
    killed.kill9();
    fourth.signal_pause(false);
    wait_until_moved(&admin, Duration::from_secs(60)).await;
    assert_eq!(replica_sets(&client, TOPIC).await[&0], target);
    for n in 0..50 {
        producer
            .send(ProducerRecord::new(TOPIC, format!("after-{n}")).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
    let values: Vec<String> = read_partition(&client, TOPIC, 0)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values.len(), 250, "every acknowledged record, once");

    // The killed broker comes back to find it no longer holds the partition: it deletes it.
    let killed = brokers.iter_mut().find(|b| b.id == controller).unwrap();
    killed.restart();
    let all: Vec<&BrokerProcess> = brokers.iter().chain(std::iter::once(&fourth)).collect();
    wait_for_replica_dirs(&all, 0, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_move_returns_to_its_replicas_and_the_new_replica_deletes_its_copy() {
    let root = tempfile::tempdir().unwrap();
    let (brokers, fourth_address) = three_brokers_and_room_for_a_fourth(root.path());
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, 1, 3)).await;
    let fourth = start_fourth(root.path(), &brokers, &fourth_address);
    wait_for_brokers(&client, 4).await;
    let admin = Admin::new(Arc::clone(&client));
    let before = replica_sets(&client, TOPIC).await[&0].clone();

    // Frozen, broker 4 never catches up: the move stays in progress until cancelled.
    fourth.signal_pause(true);
    let target = replaced(&before, before[2], 4);
    admin
        .reassign_partitions(vec![PartitionReplicas {
            topic: TOPIC.into(),
            partition: 0,
            replicas: target,
        }])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moving = admin.list_reassignments().await.unwrap();
    assert_eq!(moving.len(), 1);
    assert_eq!(
        (moving[0].adding.clone(), moving[0].removing.clone()),
        (vec![4], vec![before[2]])
    );

    admin.cancel_reassignments(vec![(TOPIC.into(), 0)]).await.unwrap();
    wait_until_moved(&admin, Duration::from_secs(30)).await;
    assert_eq!(
        replica_sets(&client, TOPIC).await[&0],
        before,
        "back to the replicas it had"
    );
    fourth.signal_pause(false);
    let all: Vec<&BrokerProcess> = brokers.iter().chain(std::iter::once(&fourth)).collect();
    wait_for_replica_dirs(&all, 0, &before).await;
    // And the partition serves on its old replicas.
    let producer = Producer::new(Arc::clone(&client), ProducerConfig::default()).unwrap();
    producer
        .send(ProducerRecord::new(TOPIC, "after the cancel").partition(0))
        .await
        .unwrap()
        .await
        .unwrap();
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reassignments_are_refused_with_clear_errors_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster_with(root.path(), 3, &[]);
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, 2, 3)).await;
    let admin = Admin::new(Arc::clone(&client));
    let before = replica_sets(&client, TOPIC).await;
    let to = |topic: &str, partition: u32, replicas: &[u64]| PartitionReplicas {
        topic: topic.into(),
        partition,
        replicas: replicas.to_vec(),
    };
    let good = to(TOPIC, 0, &[3, 1, 2]);
    for (plan, code, says) in [
        (
            vec![good.clone(), to(TOPIC, 1, &[1, 2, 9])],
            ErrorCode::InvalidReplicaAssignment,
            "broker 9 is not registered",
        ),
        (
            vec![to(TOPIC, 1, &[1, 1, 2])],
            ErrorCode::InvalidReplicaAssignment,
            "names a broker twice",
        ),
        (
            vec![to(TOPIC, 1, &[])],
            ErrorCode::InvalidReplicaAssignment,
            "at least one replica",
        ),
        (
            vec![good.clone(), to("missing", 0, &[1, 2, 3])],
            ErrorCode::UnknownTopicOrPartition,
            "unknown topic",
        ),
        (
            vec![to(TOPIC, 7, &[1, 2, 3])],
            ErrorCode::UnknownTopicOrPartition,
            "has no partition 7",
        ),
        (vec![], ErrorCode::InvalidRequest, "moves no partition"),
    ] {
        let error = admin.reassign_partitions(plan.clone()).await.unwrap_err();
        assert_eq!(error.code(), Some(code), "{plan:?}: {error}");
        assert!(error.to_string().contains(says), "{error} should say {says:?}");
        assert!(
            admin.list_reassignments().await.unwrap().is_empty(),
            "nothing started by {plan:?}"
        );
        assert_eq!(
            replica_sets(&client, TOPIC).await,
            before,
            "nothing changed by {plan:?}"
        );
    }
    let error = admin.cancel_reassignments(vec![(TOPIC.into(), 0)]).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NoReassignmentInProgress), "{error}");

    // The CLI says the same and exits 1.
    let output = std::process::Command::new(cluster_tests::broker_binary())
        .args(["--bootstrap", &brokers[0].address, "partition", "reassign", TOPIC])
        .args(["--partition", "0", "--replicas", "1,1,2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("names a broker twice"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_broker_is_emptied_under_load_then_stopped_with_nothing_under_replicated() {
    const PARTITIONS: u32 = 6;
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster_with(root.path(), 4, &[]);
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let admin = Admin::new(Arc::clone(&client));
    let before = replica_sets(&client, TOPIC).await;
    assert!(
        before.values().any(|r| r.contains(&4)),
        "broker 4 holds replicas: {before:?}"
    );

    let (history, stop, sent) = (Arc::new(Recorder::default()), Arc::default(), Arc::default());
    let workers = spawn_two_producers(&client, PARTITIONS, &history, &stop, &sent);
    wait_for_sends(&sent, 500).await;

    // Decommission through the CLI, as an operator would: it returns once 4 holds nothing.
    let stdout = cluster_tests::run_cli_ok(
        &brokers[0].address,
        &["cluster", "decommission", "4", "--wait", "--timeout-secs", "120"],
    );
    assert!(stdout.contains("safe to stop"), "{stdout}");
    let metadata = client.metadata(Vec::new()).await.unwrap();
    assert!(metadata.brokers.iter().any(|b| b.id == 4 && b.decommissioning));
    let after = replica_sets(&client, TOPIC).await;
    assert!(after.values().all(|r| r.len() == 3 && !r.contains(&4)), "{after:?}");
    // Nothing new lands on it.
    let refused = admin.create_topic(NewTopic::new("four-wide", 1, 4)).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidReplicationFactor), "{refused}");

    // Zero under-replicated partitions (every replica in sync), then 4 stops and nobody notices.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let described = client.describe_topics(vec![TOPIC.into()]).await.unwrap();
        if described.topics[0].partitions.iter().all(|p| p.isr.len() == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "under-replicated: {:?}",
            described.topics[0].partitions
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fourth = brokers.iter_mut().find(|b| b.id == 4).unwrap();
    for partition in 0..PARTITIONS {
        wait_for_replica_dirs(&[&*fourth], partition, &[]).await;
    }
    fourth.stop();
    let at_stop = sent.load(Ordering::SeqCst);
    wait_for_sends(&sent, at_stop + 300).await;
    stop_and_check(workers, &stop, &client, PARTITIONS, &history, 500).await;

    // Bad input: an unknown broker; a fourth broker's worth of replicas with only three left.
    let unknown = admin.decommission_broker(9).await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownBroker), "{unknown}");
    let too_few = admin.decommission_broker(3).await.unwrap_err();
    assert_eq!(too_few.code(), Some(ErrorCode::InvalidReplicaAssignment), "{too_few}");
    assert!(too_few.to_string().contains("no other broker is free"), "{too_few}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_move_copies_no_faster_than_its_throttle() {
    const RECORDS: usize = 64;
    const RECORD_BYTES: usize = 64 * 1024;
    const RATE: u64 = 1024 * 1024;
    let root = tempfile::tempdir().unwrap();
    let (brokers, fourth_address) = three_brokers_and_room_for_a_fourth(root.path());
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, 2, 3)).await;
    let fourth = start_fourth(root.path(), &brokers, &fourth_address);
    wait_for_brokers(&client, 4).await;
    // 4 MiB in each partition.
    let producer = Producer::new(Arc::clone(&client), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for n in 0..RECORDS {
        for partition in 0..2 {
            let value = vec![b'a' + (n % 26) as u8; RECORD_BYTES];
            let record = ProducerRecord::new(TOPIC, value).partition(partition);
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;
    let admin = Admin::new(Arc::clone(&client));
    let before = replica_sets(&client, TOPIC).await;
    let onto_four = |partition: u32| PartitionReplicas {
        topic: TOPIC.into(),
        partition,
        replicas: replaced(&before[&partition], before[&partition][2], 4),
    };

    // Unthrottled, then at 1 MiB/s: 4 MiB take at least 3 s past the one-second burst.
    let started = Instant::now();
    admin.reassign_partitions(vec![onto_four(0)]).await.unwrap();
    wait_until_moved(&admin, Duration::from_secs(60)).await;
    let unthrottled = started.elapsed();
    cluster_tests::run_cli_ok(&brokers[0].address, &["partition", "throttle", &RATE.to_string()]);
    let started = Instant::now();
    admin.reassign_partitions(vec![onto_four(1)]).await.unwrap();
    wait_until_moved(&admin, Duration::from_secs(60)).await;
    let throttled = started.elapsed();
    println!("moving 4 MiB: {unthrottled:?} unthrottled, {throttled:?} at 1 MiB/s");
    let copied = (RECORDS * RECORD_BYTES) as f64;
    let floor = Duration::from_secs_f64((copied - RATE as f64) / RATE as f64 * 0.9);
    assert!(
        throttled >= floor,
        "{throttled:?} < {floor:?}: the throttle did not hold"
    );
    assert_eq!(replica_sets(&client, TOPIC).await[&1], onto_four(1).replicas);
    admin.set_reassignment_throttle(None).await.unwrap();
    // The copies are whole.
    for partition in 0..2 {
        assert_eq!(read_partition(&client, TOPIC, partition).await.len(), RECORDS);
    }
    drop(fourth);
}

/// Automatic healing (`--heal-dead-brokers-after-ms`): a broker killed for good is
/// decommissioned by the controller once it has been silent for the configured time — not
/// before — and every partition it held gets its third replica back on the live brokers, while
/// idempotent producers keep writing; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_brokers_replicas_are_recreated_on_the_others_when_healing_is_on() {
    const PARTITIONS: u32 = 4;
    const HEAL_AFTER: Duration = Duration::from_secs(10);
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster_with(root.path(), 4, &["--heal-dead-brokers-after-ms", "10000"]);
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&client, NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let before = replica_sets(&client, TOPIC).await;
    // Broker 4 votes in no controller quorum (the three lowest ids do) and holds replicas.
    assert!(before.values().any(|r| r.contains(&4)), "{before:?}");

    let (history, stop, sent) = (Arc::new(Recorder::default()), Arc::default(), Arc::default());
    let workers = spawn_two_producers(&client, PARTITIONS, &history, &stop, &sent);
    wait_for_sends(&sent, 300).await;
    brokers.iter_mut().find(|b| b.id == 4).unwrap().kill9();
    let killed_at = Instant::now();

    // Decommissioned by the controller, once silent for the time.
    let decommissioned_after = loop {
        let metadata = client.metadata(Vec::new()).await.unwrap();
        if metadata.brokers.iter().any(|b| b.id == 4 && b.decommissioning) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "broker 4 was never healed away"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // (It last answered a ping at most one ping interval before it was killed.)
    assert!(
        decommissioned_after >= HEAL_AFTER - Duration::from_secs(1),
        "healed after {decommissioned_after:?}, before the {HEAL_AFTER:?} it was given"
    );
    // Every partition back at three replicas, all on live brokers and in sync.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let moving = Admin::new(Arc::clone(&client)).list_reassignments().await.unwrap();
        let described = client.describe_topics(vec![TOPIC.into()]).await.unwrap();
        let partitions = &described.topics[0].partitions;
        if moving.is_empty()
            && partitions
                .iter()
                .all(|p| p.replicas.len() == 3 && !p.replicas.contains(&4) && p.isr.len() == 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "not healed: {moving:?} {partitions:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "broker 4 decommissioned {decommissioned_after:?} after its kill; healed {:?} after",
        killed_at.elapsed()
    );

    let healed_at = sent.load(Ordering::SeqCst);
    wait_for_sends(&sent, healed_at + 300).await;
    stop_and_check(workers, &stop, &client, PARTITIONS, &history, 600).await;
}
