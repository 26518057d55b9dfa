//! Quiet partitions on real broker processes: idle groups stop their Raft timers, serve the
//! first request after idling, keep their followers in the ISR, and are failed over by the
//! per-peer failure detector when their leader's broker dies — without a restarted broker
//! deposing the leaders of quiet groups, or even waking them, when it comes back.

use client::{Acks, Admin, Cluster};
use cluster_tests::{
    assert_read_back, connect_when_ready, create_topic, describe_on, leaders, metric_where, one_record_batch,
    quiet_partitions, read_partition, start_cluster, start_cluster_with_admin, wait_until_quiet, write_each,
    ProxiedCluster,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "idle";
const PARTITIONS: u32 = 6;
const QUIET_WAIT: Duration = Duration::from_secs(30);

/// Three brokers serving their admin endpoints, the topic created, one record written to each
/// partition ("before") and every replica quiet: the brokers, their client and admin addresses,
/// a client, and what was written.
async fn quiet_cluster_with_admin(
    root: &std::path::Path,
) -> (
    Vec<cluster_tests::BrokerProcess>,
    Vec<String>,
    Vec<String>,
    Arc<Cluster>,
    BTreeMap<u32, Vec<String>>,
) {
    let (brokers, addresses, admins) = start_cluster_with_admin(root, 3, &[]);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let mut written = BTreeMap::new();
    write_each(&cluster, TOPIC, PARTITIONS, "before", &mut written).await;
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    (brokers, addresses, admins, cluster, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partitions_quiesce_keep_their_isr_and_serve_the_first_request_after_idling() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let mut written = BTreeMap::new();
    write_each(&cluster, TOPIC, PARTITIONS, "before", &mut written).await;

    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    // Quiet followers stay in sync: the leader counts them by their brokers' pings.
    let leaders = leaders(&cluster, TOPIC).await;
    for (partition, leader) in &leaders {
        let broker = &brokers[(*leader - 1) as usize];
        let description = describe_on(&broker.address, TOPIC).await.expect("leader answers");
        let isr = &description.partitions[*partition as usize].isr;
        assert_eq!(isr, &vec![1, 2, 3], "partition {partition}: ISR of a quiet group");
    }

    // The first write after idling is served (the group wakes), and so are reads.
    write_each(&cluster, TOPIC, PARTITIONS, "after", &mut written).await;
    assert_read_back(&cluster, TOPIC, &written).await;
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    for partition in 0..PARTITIONS {
        let latest = cluster
            .list_offsets(TOPIC, partition, client::OffsetSpec::Latest, 0)
            .await
            .expect("ListOffsets on a quiet partition");
        assert_eq!(latest, Some(2), "partition {partition}");
    }
    let (batches, high_watermark) = cluster
        .fetch(TOPIC, 3, 0, 1 << 20, Duration::from_millis(10))
        .await
        .expect("fetch on a quiet partition");
    assert_eq!((batches.len(), high_watermark), (2, 2));
    // Reads renew the leader's lease with a heartbeat round but do not wake the group:
    // consumers polling idle partitions do not keep them ticking.
    let all: Vec<u32> = (0..PARTITIONS).collect();
    for broker in &brokers {
        let quiet = quiet_partitions(&broker.address, broker.id, TOPIC).await;
        assert_eq!(quiet.as_deref(), Some(&all[..]), "broker {} after reads", broker.id);
    }

    // acks=1 and a leader transfer on quiet groups.
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    cluster
        .produce(TOPIC, 0, Acks::Leader, one_record_batch("acks1-0"))
        .await
        .expect("acks=1 on a quiet partition");
    written.entry(0).or_default().push("acks1-0".into());
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    let from = leaders[&1];
    let to = if from == 3 { 1 } else { from + 1 };
    Admin::new(Arc::clone(&cluster))
        .transfer_leadership(TOPIC, 1, to)
        .await
        .expect("leader transfer on a quiet partition");
    assert_read_back(&cluster, TOPIC, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_partitions_of_a_killed_leader_get_new_leaders_and_a_restarted_broker_deposes_nobody() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let mut written = BTreeMap::new();
    write_each(&cluster, TOPIC, PARTITIONS, "first", &mut written).await;
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;

    // Kill -9 the broker leading partition 0 while everything is quiet: its partitions must
    // get new leaders through the failure detector alone (nothing else is ticking).
    let before = leaders(&cluster, TOPIC).await;
    let victim = before[&0];
    let victim_index = (victim - 1) as usize;
    let killed_at = Instant::now();
    brokers[victim_index].kill9();
    let mut failover = Vec::new();
    for (partition, leader) in &before {
        if *leader != victim {
            continue;
        }
        let value = format!("after-kill-{partition}");
        cluster
            .produce(TOPIC, *partition, Acks::All, one_record_batch(&value))
            .await
            .unwrap_or_else(|e| panic!("partition {partition} after its quiet leader died: {e}"));
        failover.push(killed_at.elapsed());
        written.entry(*partition).or_default().push(value);
    }
    println!("quiet-partition failover (kill -9 → acks=all accepted), in partition order: {failover:?}");
    assert_read_back(&cluster, TOPIC, &written).await;

    // Back with its data: it catches up and everything quiesces again, it included.
    brokers[victim_index].restart();
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;

    // Now restart a broker beside quiet groups: its replicas must rejoin as followers, not
    // depose the leaders (Pre-Vote, and quiet voters refuse while their leader is alive).
    let settled = leaders(&cluster, TOPIC).await;
    let restarted = (1..=3u64).find(|b| *b != settled[&0]).expect("another broker");
    brokers[(restarted - 1) as usize].kill9();
    brokers[(restarted - 1) as usize].restart();
    // Wait for its replicas to be back in sync, and the groups quiet again: by then it has
    // been up well past an election timeout.
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    let after = leaders(&cluster, TOPIC).await;
    let moved: Vec<u32> = settled
        .iter()
        .filter(|(p, l)| settled[p] != after[p] && **l != restarted)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        moved.is_empty(),
        "leaders of quiet partitions changed when broker {restarted} restarted: {settled:?} → {after:?}"
    );
    write_each(&cluster, TOPIC, PARTITIONS, "last", &mut written).await;
    assert_read_back(&cluster, TOPIC, &written).await;
}

/// A broker killed and left down. The partitions it led fail over paced: the next voter after
/// it campaigns, the third awaits the new leader with its timers stopped (it does not wake for
/// the death). Then every group quiesces again on the two brokers left, the failed-over ones
/// included, with a replica down — they used to tick until it came back, at 10,000 partitions
/// more timers than two brokers could run. Written to meanwhile, it catches up when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_quiesce_without_a_dead_replica_and_catch_it_up_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, addresses, admins, cluster, mut written) = quiet_cluster_with_admin(root.path()).await;

    let before = leaders(&cluster, TOPIC).await;
    let victim = before[&0];
    let led_by_victim = before.values().filter(|l| **l == victim).count() as f64;
    // Voters 1..=3: the next one after the victim campaigns, the third awaits.
    let campaigner = victim % 3 + 1;
    let awaiter = campaigner % 3 + 1;
    let admin_of = |broker: u64| admins[(broker - 1) as usize].clone();
    let campaigns_before = wakes(&admin_of(campaigner), "leader_dead").await;
    let awaited_before = wakes(&admin_of(awaiter), "leader_dead").await;
    brokers[(victim - 1) as usize].kill9();

    // Accepted with acks=all once its partitions have new leaders; then all quiet again.
    write_each(&cluster, TOPIC, PARTITIONS, "after-kill", &mut written).await;
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    let after = leaders(&cluster, TOPIC).await;
    assert!(
        after.values().all(|l| *l != victim),
        "broker {victim} is down but still leads: {after:?}"
    );
    assert_eq!(
        wakes(&admin_of(campaigner), "leader_dead").await - campaigns_before,
        led_by_victim,
        "broker {campaigner} campaigns for every group broker {victim} led"
    );
    assert_eq!(
        wakes(&admin_of(awaiter), "leader_dead").await,
        awaited_before,
        "broker {awaiter} awaits the new leaders instead of waking for the death"
    );

    // Back, it catches up, and everything is quiet again — its replicas agree to quiesce only
    // once they hold their leader's last entry.
    brokers[(victim - 1) as usize].restart();
    wait_until_quiet(&brokers, TOPIC, PARTITIONS, QUIET_WAIT).await;
    let expected: BTreeMap<u32, Option<u64>> = written
        .iter()
        .map(|(partition, values)| (*partition, Some(values.len() as u64)))
        .collect();
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let on_victim: BTreeMap<u32, Option<u64>> = describe_on(&addresses[(victim - 1) as usize], TOPIC)
            .await
            .map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.high_watermark))
                    .collect()
            })
            .unwrap_or_default();
        if on_victim == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {victim}'s replicas did not catch up: {on_victim:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_read_back(&cluster, TOPIC, &written).await;
}

/// Wakes of quiet groups on the broker whose admin endpoint is `admin`, for `reason`.
async fn wakes(admin: &str, reason: &str) -> f64 {
    metric_where(admin, "broker_quiet_group_wakes_total", Some(("reason", reason))).await
}

/// A broker killed and restarted beside quiet groups it follows: its replicas await their
/// leaders with timers stopped, and one heartbeat from each leader settles them quiet again —
/// the groups never wake. (Waking every group a restarted broker votes in, thousands at once,
/// overloaded the brokers until the failure detector misread their slowness as deaths: issue
/// 16's restart storm.) Its replicas of the groups it led await too: they campaign in none of
/// them — the next voter does — so no candidate of theirs wakes a replica on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_rejoins_quiet_groups_without_waking_them() {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, addresses, admins, cluster, mut written) = quiet_cluster_with_admin(root.path()).await;

    let before = leaders(&cluster, TOPIC).await;
    let restarted: u64 = 3;
    let followed: BTreeMap<u32, u64> = before
        .iter()
        .filter(|(_, l)| **l != restarted)
        .map(|(p, l)| (*p, *l))
        .collect();
    assert!(
        !followed.is_empty(),
        "broker {restarted} leads every partition: {before:?}"
    );
    let unsettled_before = [
        wakes(&admins[0], "restarted_follower").await,
        wakes(&admins[1], "restarted_follower").await,
    ];
    let candidates_before = [
        wakes(&admins[0], "candidate").await,
        wakes(&admins[1], "candidate").await,
    ];

    // While broker 3 is down and comes back, the leaders of the partitions it follows are
    // watched: their groups must stay quiet throughout.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, followed, addresses) = (Arc::clone(&watching), followed.clone(), addresses.clone());
        tokio::spawn(async move {
            let mut woke = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for leader in followed.values().collect::<std::collections::BTreeSet<_>>() {
                    // Each broker describes its own replica's quiescence (the partitions broker
                    // 3 led have no leader meanwhile, so `quiet_partitions` would answer None).
                    let Some(topic) = describe_on(&addresses[(*leader - 1) as usize], TOPIC).await else {
                        continue;
                    };
                    woke.extend(
                        topic
                            .partitions
                            .iter()
                            .filter(|p| followed.get(&p.partition) == Some(leader) && !p.quiescent)
                            .map(|p| p.partition),
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            woke
        })
    };
    let index = (restarted - 1) as usize;
    brokers[index].kill9();
    brokers[index].restart();
    // Its replicas of the followed partitions settle quiet well within the patience after
    // which an unreached replica would run its election timer (10 s).
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let quiet = quiet_partitions(&addresses[index], restarted, TOPIC)
            .await
            .unwrap_or_default();
        if followed.keys().all(|p| quiet.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {restarted}'s replicas of {followed:?} did not settle quiet: {quiet:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let woke = watcher.await.unwrap();
    if !woke.is_empty() {
        // Why, per broker: the wake counters by reason.
        let mut reasons = Vec::new();
        for (broker, admin) in admins.iter().enumerate() {
            for reason in [
                "append",
                "write",
                "transfer",
                "peer_back",
                "restarted_follower",
                "leader_dead",
                "candidate",
                "restart_patience",
                "diverged",
            ] {
                let count = wakes(admin, reason).await;
                if count > 0.0 {
                    reasons.push(format!("broker {}: {reason} {count}", broker + 1));
                }
            }
        }
        panic!("the leaders of partitions {woke:?} woke when their follower restarted; wakes: {reasons:?}");
    }
    assert_eq!(
        wakes(&admins[index], "restart_patience").await,
        0.0,
        "every restarted replica heard from its leader"
    );
    for (admin, before) in admins[..2].iter().zip(unsettled_before) {
        assert_eq!(
            wakes(admin, "restarted_follower").await,
            before,
            "a leader found its restarted follower behind"
        );
    }
    for (admin, before) in admins[..2].iter().zip(candidates_before) {
        assert_eq!(
            wakes(admin, "candidate").await,
            before,
            "a replica of broker {restarted} campaigned after its restart"
        );
    }

    // The partitions it led failed over meanwhile; everything still serves and reads back.
    write_each(&cluster, TOPIC, PARTITIONS, "after", &mut written).await;
    assert_read_back(&cluster, TOPIC, &written).await;
}

/// A broker restarted with replicas slow to open (the `replica-open-delay` fault point, on from
/// its start: 2.5 s each, so opening its seven replicas takes longer than the 10 s a leader
/// keeps trying to reach a restarted follower). It says so in its pings: the leaders of the
/// quiet groups it follows reach its replicas only once it has opened them all, and their
/// patience counts from then — no leader gives up on it, none of its replicas runs its timers
/// for want of a leader, and they settle quiet. (Reached while the broker was still opening
/// its replicas, the leaders woke their groups after 10 s: thousands at once at 10,000
/// partitions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_slow_to_open_its_replicas_is_reached_once_it_has() {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, addresses, admins, cluster, mut written) = quiet_cluster_with_admin(root.path()).await;
    let restarted: u64 = 3;
    let followed: Vec<u32> = leaders(&cluster, TOPIC)
        .await
        .into_iter()
        .filter(|(_, leader)| *leader != restarted)
        .map(|(partition, _)| partition)
        .collect();
    assert!(!followed.is_empty(), "broker {restarted} leads every partition");
    let gave_up_before = [
        wakes(&admins[0], "restarted_follower").await,
        wakes(&admins[1], "restarted_follower").await,
    ];

    let index = (restarted - 1) as usize;
    brokers[index].kill9();
    brokers[index].restart_with_env(&[("FAILPOINTS", "replica-open-delay=return(2500)")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let quiet = quiet_partitions(&addresses[index], restarted, TOPIC)
            .await
            .unwrap_or_default();
        if followed.iter().all(|p| quiet.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {restarted}'s replicas of {followed:?} did not settle quiet: {quiet:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (admin, before) in admins[..2].iter().zip(gave_up_before) {
        assert_eq!(
            wakes(admin, "restarted_follower").await,
            before,
            "a leader gave up reaching its restarted follower, or found it behind"
        );
    }
    assert_eq!(
        wakes(&admins[index], "restart_patience").await,
        0.0,
        "a replica of the restarted broker ran out of patience for its leader"
    );
    write_each(&cluster, TOPIC, PARTITIONS, "after", &mut written).await;
    assert_read_back(&cluster, TOPIC, &written).await;
}

/// A quiet leader cut off one way from a follower (its pings and appends cannot reach it, the
/// follower's pings to it are answered) and both ways from the other: the two followers must
/// elect a new leader. Liveness as a leader is judged by the leader's own pings reaching the
/// follower — answers to the follower's pings prove nothing about the leader's appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_leader_cut_off_one_way_is_replaced() {
    let root = tempfile::tempdir().unwrap();
    let cluster = ProxiedCluster::start(root.path()).await;
    let client = connect_when_ready(&cluster.brokers, cluster.client_overrides()).await;
    create_topic(&client, client::NewTopic::new(TOPIC, 1, 3)).await;
    let mut written = BTreeMap::new();
    let value = "before".to_string();
    client
        .produce(TOPIC, 0, Acks::All, one_record_batch(&value))
        .await
        .expect("first write");
    written.insert(0u32, vec![value]);
    let all: Vec<u32> = vec![0];
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let mut quiet = true;
        for broker in &cluster.brokers {
            quiet &= quiet_partitions(&broker.address, broker.id, TOPIC).await.as_deref() == Some(&all[..]);
        }
        if quiet {
            break;
        }
        assert!(Instant::now() < deadline, "never quiesced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let leader = leaders(&client, TOPIC).await[&0];
    let others: Vec<u64> = (1..=3).filter(|b| *b != leader).collect();
    let (one_way, both_ways) = (others[0], others[1]);
    cluster.links[&(leader, one_way)].cut();
    cluster.links[&(leader, both_ways)].cut();
    cluster.links[&(both_ways, leader)].cut();
    let cut_at = Instant::now();

    // A write succeeds on a new leader (the client retries until one is elected).
    let value = "after".to_string();
    client
        .produce(TOPIC, 0, Acks::All, one_record_batch(&value))
        .await
        .expect("the two followers elect a leader");
    println!(
        "one-way cut quiet leader replaced, write accepted after {:?}",
        cut_at.elapsed()
    );
    written.get_mut(&0).unwrap().push(value);
    let new_leader = leaders(&client, TOPIC).await[&0];
    assert_ne!(new_leader, leader);
    for proxy in cluster.links.values() {
        proxy.heal();
    }
    let read: Vec<String> = read_partition(&client, TOPIC, 0)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(read, written[&0]);
}
