//! Consumer groups end to end: real broker processes, `client::GroupConsumer` members in this
//! process and `broker consume --group` member processes, records produced throughout.
//!
//! - A group shares a topic, a joiner gets its share while the others keep consuming what they
//!   keep (no stop-the-world), no partition is consumed by two members at once, and a kill -9
//!   of the coordinator's broker loses nothing: every record is consumed at least once.
//! - A member process killed with SIGKILL loses its partitions after its session; a zombie
//!   (SIGSTOP past its session, then SIGCONT) cannot move committed offsets back; nothing is
//!   skipped.
//! - A static member restarted within its session gets the same partitions, and the group
//!   epoch does not move.

use bytes::Bytes;
use client::{Acks, Admin, Cluster, GroupConfig, GroupConsumer, OffsetReset, RebalanceListener};
use cluster_tests::{broker_binary, connect_when_ready, create_topic, start_cluster_with, BrokerProcess};
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

fn start_cluster(root: &std::path::Path) -> Vec<BrokerProcess> {
    start_cluster_with(root, 3, &["--offsets-topic-partitions", "3"])
}

/// What the producer task got acknowledged: partition → offsets.
type Produced = Arc<Mutex<BTreeMap<u32, BTreeSet<u64>>>>;

/// Produces a batch of `per_batch` records to every partition in turn until `stop`.
fn spawn_producer(
    cluster: Arc<Cluster>,
    topic: &'static str,
    partitions: u32,
    per_batch: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> (Produced, tokio::task::JoinHandle<()>) {
    let produced: Produced = Arc::default();
    let log = Arc::clone(&produced);
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for partition in 0..partitions {
                let records: Vec<Record> = (0..per_batch)
                    .map(|i| Record {
                        timestamp: proto::record_batch::now_ms(),
                        value: Some(Bytes::from(format!("r{n}-{i}"))),
                        ..Record::default()
                    })
                    .collect();
                n += 1;
                let batch = encode_batch(&records, ProducerStamp::NONE);
                // A retried batch may be written twice (no idempotence here): that only adds
                // offsets, and every acknowledged one must be consumed.
                if let Ok(Some(base)) = cluster.produce(topic, partition, Acks::All, batch).await {
                    let mut log = log.lock().unwrap();
                    log.entry(partition).or_default().extend(base..base + per_batch as u64);
                }
            }
            tokio::time::sleep(pause).await;
        }
    });
    (produced, task)
}

/// A record as a member consumed it.
#[derive(Debug, Clone)]
struct Consumed {
    member: String,
    partition: u32,
    offset: u64,
    at: Instant,
}

/// Rebalance callbacks as a member saw them.
#[derive(Debug, Clone)]
struct Event {
    member: String,
    kind: &'static str,
    partitions: Vec<u32>,
}

struct Recorder {
    member: String,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn push(&self, kind: &'static str, partitions: &[(String, u32)]) {
        self.events.lock().unwrap().push(Event {
            member: self.member.clone(),
            kind,
            partitions: partitions.iter().map(|(_, p)| *p).collect(),
        });
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        self.push("assigned", partitions);
    }
    fn on_revoked(&mut self, partitions: &[(String, u32)]) {
        self.push("revoked", partitions);
    }
    fn on_lost(&mut self, partitions: &[(String, u32)]) {
        self.push("lost", partitions);
    }
}

fn member_config(group: &str) -> GroupConfig {
    GroupConfig {
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(200),
        auto_commit_interval: Duration::from_millis(300),
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConfig::new(group)
    }
}

/// A member polling in its own task until told to stop, then closing.
struct InProcessMember {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_member(
    cluster: &Arc<Cluster>,
    name: &str,
    config: GroupConfig,
    topic: &str,
    consumed: &Arc<Mutex<Vec<Consumed>>>,
    events: &Arc<Mutex<Vec<Event>>>,
) -> InProcessMember {
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = Recorder {
        member: name.to_string(),
        events: Arc::clone(events),
    };
    let mut consumer = GroupConsumer::new(Arc::clone(cluster), config)
        .unwrap()
        .with_listener(recorder);
    let (name, topic, consumed, stopping) = (
        name.to_string(),
        topic.to_string(),
        Arc::clone(consumed),
        Arc::clone(&stop),
    );
    let task = tokio::spawn(async move {
        consumer.subscribe(vec![topic]).await.expect("subscribe");
        while !stopping.load(Ordering::SeqCst) {
            let records = consumer.poll(Duration::from_millis(200)).await.expect("poll");
            let at = Instant::now();
            let mut log = consumed.lock().unwrap();
            log.extend(records.into_iter().map(|r| Consumed {
                member: name.clone(),
                partition: r.partition,
                offset: r.offset,
                at,
            }));
        }
        consumer.close().await.expect("close");
    });
    InProcessMember { stop, task }
}

impl InProcessMember {
    async fn close(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
    }
}

/// Waits until the group is stable with `members` members owning `counts` partitions each
/// (sorted); returns the assignment by member id.
async fn wait_stable(admin: &Admin, group: &str, counts: &[usize]) -> BTreeMap<String, BTreeSet<u32>> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(described) = admin.describe_group(group).await {
            let mut owned: Vec<usize> = described.members.iter().map(|m| m.assigned.len()).collect();
            owned.sort_unstable();
            if described.state == "stable" && owned == counts {
                return described
                    .members
                    .iter()
                    .map(|m| (m.member_id.clone(), m.assigned.iter().map(|(_, p)| *p).collect()))
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never became stable with {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every produced offset was consumed at least once.
async fn wait_all_consumed(produced: &Produced, consumed: impl Fn() -> BTreeMap<u32, BTreeSet<u64>>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let produced = produced.lock().unwrap().clone();
        let consumed = consumed();
        let missing: Vec<(u32, usize)> = produced
            .iter()
            .map(|(p, offsets)| {
                (
                    *p,
                    offsets.difference(consumed.get(p).unwrap_or(&BTreeSet::new())).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "records never consumed (partition, count): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn by_partition(consumed: &[Consumed]) -> BTreeMap<u32, BTreeSet<u64>> {
    let mut map: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for c in consumed {
        map.entry(c.partition).or_default().insert(c.offset);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_rebalances_without_stopping_and_survives_a_killed_coordinator() {
    const TOPIC: &str = "orders";
    const GROUP: &str = "billing";
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path());
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 12, 3)).await;
    let admin = Admin::new(Arc::clone(&cluster));
    let stop_producing = Arc::new(AtomicBool::new(false));
    let (produced, producer) = spawn_producer(
        Arc::clone(&cluster),
        TOPIC,
        12,
        5,
        Duration::from_millis(20),
        Arc::clone(&stop_producing),
    );

    let consumed: Arc<Mutex<Vec<Consumed>>> = Arc::default();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let mut members: Vec<InProcessMember> = ["a", "b", "c"]
        .iter()
        .map(|name| spawn_member(&cluster, name, member_config(GROUP), TOPIC, &consumed, &events))
        .collect();
    wait_stable(&admin, GROUP, &[4, 4, 4]).await;
    let events_before = events.lock().unwrap().len();

    // A fourth member joins while records keep coming.
    let joined = Instant::now();
    members.push(spawn_member(
        &cluster,
        "d",
        member_config(GROUP),
        TOPIC,
        &consumed,
        &events,
    ));
    wait_stable(&admin, GROUP, &[3, 3, 3, 3]).await;
    let stable = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // No stop-the-world: the old members only gave up the partitions that moved — none was
    // revoked and assigned back — and kept consuming the ones they kept during the rebalance.
    let rebalance: Vec<Event> = events.lock().unwrap()[events_before..].to_vec();
    let revoked: BTreeMap<String, BTreeSet<u32>> =
        rebalance
            .iter()
            .filter(|e| e.kind == "revoked")
            .fold(BTreeMap::new(), |mut map, e| {
                map.entry(e.member.clone()).or_default().extend(&e.partitions);
                map
            });
    for name in ["a", "b", "c"] {
        assert_eq!(
            revoked.get(name).map_or(0, BTreeSet::len),
            1,
            "{name} gave up exactly one: {rebalance:?}"
        );
        assert!(
            !rebalance.iter().any(|e| e.member == name && e.kind == "assigned"),
            "{name} was assigned partitions again: {rebalance:?}"
        );
        assert!(!rebalance.iter().any(|e| e.kind == "lost"), "{rebalance:?}");
    }
    {
        let consumed = consumed.lock().unwrap();
        let window = joined..stable + Duration::from_secs(1);
        for name in ["a", "b", "c"] {
            let moved = &revoked[name];
            let kept_during = consumed
                .iter()
                .filter(|c| c.member == name && !moved.contains(&c.partition) && window.contains(&c.at))
                .count();
            assert!(
                kept_during > 0,
                "{name} consumed nothing of what it kept during the rebalance"
            );
        }
        // No partition was consumed by two members at once: on each partition, the records its
        // old owner consumed since the join all come before the first record of its new owner.
        let mut owners: BTreeMap<u32, Vec<(Instant, String)>> = BTreeMap::new();
        for c in consumed.iter().filter(|c| c.at >= joined) {
            owners.entry(c.partition).or_default().push((c.at, c.member.clone()));
        }
        for (partition, mut seen) in owners {
            seen.sort_by_key(|(at, _)| *at);
            let mut runs: Vec<&str> = Vec::new();
            for (_, member) in &seen {
                if runs.last() != Some(&member.as_str()) {
                    runs.push(member);
                }
            }
            assert!(runs.len() <= 2, "partition {partition} went back and forth: {runs:?}");
        }
    }

    // kill -9 the broker coordinating the group: members find the new coordinator, keep their
    // partitions and consume everything produced before and after.
    let coordinator = admin.find_coordinator(GROUP).await.unwrap().node;
    brokers[coordinator as usize - 1].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_producing.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    wait_all_consumed(&produced, || by_partition(&consumed.lock().unwrap())).await;
    assert_ne!(admin.find_coordinator(GROUP).await.unwrap().node, coordinator);

    // Closing commits every position: the group is empty with nothing left to consume.
    for member in members {
        member.close().await;
    }
    let described = admin.describe_group(GROUP).await.unwrap();
    assert_eq!(described.state, "empty");
    for partition in &described.partitions {
        assert_eq!(partition.lag, Some(0), "{partition:?}");
    }
    brokers[coordinator as usize - 1].restart();
    for broker in &mut brokers {
        broker.stop();
    }
}

/// A `broker consume --group` process whose NDJSON output goes to a file.
struct MemberProcess {
    child: Child,
    output: std::path::PathBuf,
}

impl MemberProcess {
    fn start(dir: &std::path::Path, name: &str, bootstrap: &str, topic: &str, group: &str, extra: &[&str]) -> Self {
        let output = dir.join(format!("{name}.ndjson"));
        let stderr = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(broker_binary())
            .args([
                "--bootstrap",
                bootstrap,
                "--output",
                "json",
                "consume",
                topic,
                "--group",
                group,
            ])
            .args([
                "--from-beginning",
                "--session-timeout-ms",
                "3000",
                "--heartbeat-interval-ms",
                "200",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&output).unwrap())
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting broker consume");
        MemberProcess { child, output }
    }

    /// (partition, offset) of every record it printed.
    fn consumed(&self) -> Vec<(u32, u64)> {
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|v| (v["partition"].as_u64().unwrap() as u32, v["offset"].as_u64().unwrap()))
            .collect()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_zombie_member_processes_lose_their_partitions_and_nothing_is_skipped() {
    const TOPIC: &str = "events";
    const GROUP: &str = "reports";
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path());
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 6, 3)).await;
    let admin = Admin::new(Arc::clone(&cluster));
    let bootstrap = brokers.iter().map(|b| b.address.clone()).collect::<Vec<_>>().join(",");
    let stop_producing = Arc::new(AtomicBool::new(false));
    let (produced, producer) = spawn_producer(
        Arc::clone(&cluster),
        TOPIC,
        6,
        5,
        Duration::from_millis(30),
        Arc::clone(&stop_producing),
    );

    let mut members: Vec<MemberProcess> = (1..=3)
        .map(|i| MemberProcess::start(root.path(), &format!("m{i}"), &bootstrap, TOPIC, GROUP, &[]))
        .collect();
    wait_stable(&admin, GROUP, &[2, 2, 2]).await;

    // Committed offsets never move back, whatever the members do: sampled throughout.
    let regressions: Arc<Mutex<Vec<String>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (admin, regressions, sampling) = (
            Admin::new(Arc::clone(&cluster)),
            Arc::clone(&regressions),
            Arc::clone(&sampling),
        );
        tokio::spawn(async move {
            let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
            while sampling.load(Ordering::SeqCst) {
                if let Ok(described) = admin.describe_group(GROUP).await {
                    for partition in described.partitions {
                        if let Some(committed) = partition.committed {
                            let before = highest.entry(partition.partition).or_insert(committed);
                            if committed < *before {
                                regressions.lock().unwrap().push(format!(
                                    "partition {} went from {before} to {committed}",
                                    partition.partition
                                ));
                            }
                            *before = (*before).max(committed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // kill -9 one member: after its session the other two own everything.
    members[0].kill9();
    wait_stable(&admin, GROUP, &[3, 3]).await;

    // A zombie: frozen past its session, its partitions go to the last member; thawed, it finds
    // itself out of the group, its commits are refused and it rejoins.
    members[1].signal("STOP");
    wait_stable(&admin, GROUP, &[6]).await;
    members[1].signal("CONT");
    wait_stable(&admin, GROUP, &[3, 3]).await;

    stop_producing.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    let all_consumed = || {
        let mut map: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for member in &members {
            for (partition, offset) in member.consumed() {
                map.entry(partition).or_default().insert(offset);
            }
        }
        map
    };
    wait_all_consumed(&produced, all_consumed).await;
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    assert!(
        regressions.lock().unwrap().is_empty(),
        "{:?}",
        regressions.lock().unwrap()
    );
    drop(members);
    for broker in &mut brokers {
        broker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_member_restarted_within_its_session_keeps_its_partitions_and_the_epoch() {
    const TOPIC: &str = "jobs";
    const GROUP: &str = "workers";
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path());
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 4, 3)).await;
    let admin = Admin::new(Arc::clone(&cluster));
    let consumed: Arc<Mutex<Vec<Consumed>>> = Arc::default();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let static_config = || GroupConfig {
        group_instance_id: Some("worker-1".into()),
        ..member_config(GROUP)
    };
    let first = spawn_member(&cluster, "static", static_config(), TOPIC, &consumed, &events);
    let other = spawn_member(&cluster, "other", member_config(GROUP), TOPIC, &consumed, &events);
    let before = wait_stable(&admin, GROUP, &[2, 2]).await;
    let epoch_before = admin.describe_group(GROUP).await.unwrap().group_epoch;
    let static_before = admin
        .describe_group(GROUP)
        .await
        .unwrap()
        .members
        .into_iter()
        .find(|m| m.group_instance_id.is_some())
        .unwrap();

    // Restart: close (leaves for a restart, epoch -2) and come back with the same instance id.
    let events_before = events.lock().unwrap().len();
    first.close().await;
    let described = admin.describe_group(GROUP).await.unwrap();
    assert!(described.members.iter().any(|m| m.left_for_restart), "{described:?}");
    let second = spawn_member(&cluster, "static-again", static_config(), TOPIC, &consumed, &events);
    // The member that left for a restart keeps its partitions, so the group looks stable
    // before the new process has even joined: wait for the new process first.
    let deadline = Instant::now() + WAIT;
    while !admin.describe_group(GROUP).await.is_ok_and(|described| {
        described
            .members
            .iter()
            .any(|m| m.group_instance_id.is_some() && !m.left_for_restart && m.member_id != static_before.member_id)
    }) {
        assert!(Instant::now() < deadline, "the restarted static member never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = wait_stable(&admin, GROUP, &[2, 2]).await;
    let described = admin.describe_group(GROUP).await.unwrap();
    assert_eq!(described.group_epoch, epoch_before, "no rebalance");
    let static_after = described
        .members
        .iter()
        .find(|m| m.group_instance_id.is_some())
        .unwrap();
    assert_ne!(static_after.member_id, static_before.member_id, "a new process");
    assert_eq!(static_after.assigned, static_before.assigned, "the same partitions");
    assert_eq!(
        before.values().collect::<BTreeSet<_>>(),
        after.values().collect::<BTreeSet<_>>()
    );
    let during: Vec<Event> = events.lock().unwrap()[events_before..].to_vec();
    assert!(
        !during.iter().any(|e| e.member == "other"),
        "the other member noticed nothing: {during:?}"
    );
    second.close().await;
    other.close().await;
    for broker in &mut brokers {
        broker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_the_partition_moves_on() {
    use client::group::{DeadLetters, Outcome};
    const TOPIC: &str = "payments";
    const GROUP: &str = "ledger";
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path());
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 1, 3)).await;
    create_topic(&cluster, client::NewTopic::new("payments.dlq", 1, 3)).await;
    let producer = client::Producer::new(Arc::clone(&cluster), client::ProducerConfig::default()).unwrap();
    for value in ["ok-1", "poison", "ok-2"] {
        producer
            .send_and_wait(client::ProducerRecord::new(TOPIC, value).key("k"))
            .await
            .unwrap();
    }

    let mut consumer = GroupConsumer::new(Arc::clone(&cluster), member_config(GROUP)).unwrap();
    consumer.subscribe(vec![TOPIC.into()]).await.unwrap();
    let mut dead_letters = DeadLetters::new(producer, 3);
    let mut processed = Vec::new();
    let mut attempts_of_poison = 0;
    let deadline = Instant::now() + WAIT;
    while processed.len() < 2 {
        assert!(Instant::now() < deadline, "processed only {processed:?}");
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap()).into_owned();
            loop {
                let result = if value == "poison" {
                    attempts_of_poison += 1;
                    Err(format!("cannot parse {value}"))
                } else {
                    Ok(())
                };
                match dead_letters.handle(&record, result).await.unwrap() {
                    Outcome::Retry { .. } => continue,
                    Outcome::Processed => processed.push(value.clone()),
                    Outcome::DeadLettered { topic, .. } => assert_eq!(topic, "payments.dlq"),
                }
                break;
            }
        }
        consumer.commit().await.unwrap();
    }
    assert_eq!(
        processed,
        vec!["ok-1", "ok-2"],
        "the poison record did not block the partition"
    );
    assert_eq!(attempts_of_poison, 3);
    consumer.close().await.unwrap();

    // The dead letter carries where it came from and why; the group committed past it.
    let dead = cluster_tests::read_partition(&cluster, "payments.dlq", 0).await;
    assert_eq!(dead.len(), 1);
    let header = |name: &str| {
        dead[0]
            .headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    assert_eq!(dead[0].value.as_deref(), Some(&b"poison"[..]));
    assert_eq!(header("dlq.source.topic").as_deref(), Some(TOPIC));
    assert_eq!(header("dlq.source.partition").as_deref(), Some("0"));
    assert_eq!(header("dlq.source.offset").as_deref(), Some("1"));
    assert_eq!(header("dlq.attempts").as_deref(), Some("3"));
    assert_eq!(header("dlq.error").as_deref(), Some("cannot parse poison"));
    let admin = Admin::new(Arc::clone(&cluster));
    let described = admin.describe_group(GROUP).await.unwrap();
    assert_eq!(described.partitions[0].committed, Some(3));
    for broker in &mut brokers {
        broker.stop();
    }
}
