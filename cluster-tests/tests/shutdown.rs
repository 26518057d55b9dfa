//! Stopping a broker always ends its process. Here a stop stalls for real: a long-poll fetch is
//! in flight, and the server drains open requests for up to 3 s before it closes its logs. A
//! second SIGTERM then ends the process at once, and `--shutdown-timeout-ms` bounds a stop that
//! nobody hurries. (Regression for brokers that never exited after resource exhaustion.)
//!
//! And a clean stop is not a crash: the stopping broker hands the leadership of its partitions to
//! its peers first (controlled shutdown), so they lead the moment it is gone; once it is back,
//! the automatic leader balance hands its preferred partitions back to it.

use client::{Acks, NewTopic};
use cluster_tests::{
    connect_when_ready, create_topic, describe_on, free_ports, http_get, leaders, metric_where, one_record_batch,
    read_partition, start_cluster_with, start_cluster_with_admin, wait_until_quiet, BrokerProcess,
};
use proto::v1::broker_client::BrokerClient;
use proto::v1::FetchRequest;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A one-broker cluster (standard input open, as every test broker's) with its admin endpoint
/// and a one-partition topic: the broker and its API and admin addresses.
async fn single_broker(root: &std::path::Path, shutdown_timeout_ms: u64) -> (BrokerProcess, String, String) {
    let ports = free_ports(2);
    let (address, admin) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let broker = BrokerProcess::start_with(
        1,
        address.clone(),
        root.join("broker-1"),
        format!("1={address}"),
        vec![
            "--controller-voters".into(),
            "1".into(),
            "--admin-listen".into(),
            admin.clone(),
            "--shutdown-timeout-ms".into(),
            shutdown_timeout_ms.to_string(),
        ],
    );
    let cluster = connect_when_ready(std::slice::from_ref(&broker), HashMap::new()).await;
    create_topic(&cluster, NewTopic::new("quiet", 1, 1)).await;
    (broker, address, admin)
}

/// [`single_broker`] with a long-poll fetch in flight on it (the broker says so in
/// `broker_requests_in_flight`).
async fn broker_with_a_fetch_in_flight(root: &std::path::Path, shutdown_timeout_ms: u64) -> BrokerProcess {
    let (broker, address, admin) = single_broker(root, shutdown_timeout_ms).await;
    let mut client = BrokerClient::connect(format!("http://{address}")).await.unwrap();
    tokio::spawn(async move {
        // Nothing is ever written: the broker holds this request for its whole wait.
        let _ = client
            .fetch(FetchRequest {
                topic: "quiet".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
                min_bytes: 1,
                max_wait_ms: 30_000,
            })
            .await;
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&admin, "/metrics")
        .await
        .map(|(_, body)| body.contains("broker_requests_in_flight{api=\"Fetch\"} 1"))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the long-poll fetch never reached the broker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker
}

/// Waits until the broker's log says its stop has begun.
async fn wait_until_stopping(broker: &BrokerProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(broker.log_path())
        .unwrap_or_default()
        .contains("stopping: draining requests")
    {
        assert!(Instant::now() < deadline, "the broker never began to stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_a_stalled_stop_at_once() {
    let root = tempfile::tempdir().unwrap();
    let mut broker = broker_with_a_fetch_in_flight(root.path(), 60_000).await;
    broker.signal("TERM");
    wait_until_stopping(&broker).await;
    // The drain holds the stop for up to 3 s while the fetch is open.
    assert!(
        broker.wait_for_exit(Duration::from_millis(500)).is_none(),
        "the stop did not stall"
    );
    let second = Instant::now();
    broker.signal("TERM");
    let status = broker
        .wait_for_exit(Duration::from_secs(2))
        .expect("a second SIGTERM ends the process");
    assert!(second.elapsed() < Duration::from_millis(1500), "{:?}", second.elapsed());
    assert_eq!(status.code(), Some(143), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ctrl_c_stops_gracefully_and_a_second_exits_at_once() {
    // A terminal's Ctrl-C reaches `broker dev` and every broker it started: one must stop each
    // broker cleanly, a second must end it at once.
    let root = tempfile::tempdir().unwrap();
    let mut broker = broker_with_a_fetch_in_flight(root.path(), 60_000).await;
    broker.signal("INT");
    wait_until_stopping(&broker).await;
    assert!(
        broker.wait_for_exit(Duration::from_millis(500)).is_none(),
        "one Ctrl-C must not end the process before its stop"
    );
    broker.signal("INT");
    let status = broker
        .wait_for_exit(Duration::from_secs(2))
        .expect("a second Ctrl-C ends the process");
    assert_eq!(status.code(), Some(130), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_outlasts_the_shutdown_timeout_ends_the_process() {
    let root = tempfile::tempdir().unwrap();
    let mut broker = broker_with_a_fetch_in_flight(root.path(), 500).await;
    let signalled = Instant::now();
    broker.signal("TERM");
    let status = broker
        .wait_for_exit(Duration::from_secs(10))
        .expect("the stop ends within its timeout");
    // The drain alone would have taken 3 s.
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_stops_an_idle_broker_cleanly_with_its_standard_input_open() {
    // Regression: the blocking read of standard input behind `--exit-on-stdin-close` kept the
    // process alive after a SIGTERM stop had finished.
    let root = tempfile::tempdir().unwrap();
    let (mut broker, _, _) = single_broker(root.path(), 60_000).await;
    broker.signal("TERM");
    let status = broker
        .wait_for_exit(Duration::from_secs(20))
        .expect("a SIGTERM ends an idle broker");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// The partitions of `topic` that a broker in `survivors` names itself the leader of, as that
/// broker describes them (no waiting: the answer at this moment).
async fn partitions_led_by(survivors: &[&BrokerProcess], topic: &str) -> BTreeMap<u32, u64> {
    let mut led = BTreeMap::new();
    for broker in survivors {
        let description = describe_on(&broker.address, topic)
            .await
            .unwrap_or_else(|| panic!("broker {} did not describe {topic}", broker.id));
        for partition in description.partitions {
            if partition.leader == Some(broker.id) {
                led.insert(partition.partition, broker.id);
            }
        }
    }
    led
}

/// What the survivors saw of a stopped leader.
struct AfterTheStop {
    /// Partitions the survivors led the moment the stopped broker's process was gone.
    led_at_exit: usize,
    /// Quiet groups the survivors woke because their leader's broker was declared dead,
    /// counted once both had declared it dead and led every partition.
    leader_dead_wakes: f64,
    /// From the SIGTERM until the process was gone.
    stop_took: Duration,
}

const HANDOVER_TOPIC: &str = "handover";
const HANDOVER_PARTITIONS: u32 = 12;

/// Writes `{tag}-{partition}` to `partition` of the handover topic with acks=all.
async fn write_one(cluster: &client::Cluster, partition: u32, tag: &str) {
    cluster
        .produce(
            HANDOVER_TOPIC,
            partition,
            Acks::All,
            one_record_batch(&format!("{tag}-{partition}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{tag}: acks=all to partition {partition}: {e}"));
}

/// Waits until the Raft node of every replica of the handover topic sleeps.
async fn await_all_asleep(admins: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut sleeping = 0.0;
        for admin in admins {
            sleeping += metric_where(admin, "broker_dormant_groups", None).await;
        }
        if sleeping == f64::from(3 * HANDOVER_PARTITIONS) {
            return;
        }
        assert!(Instant::now() < deadline, "{sleeping} replicas asleep");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops (SIGTERM) the broker leading the most partitions of a quiet 12-partition topic,
/// controlled shutdown on or off by `extra_args`, and checks that the survivors serve every
/// partition afterwards with nothing acknowledged lost. With `asleep`, the stop waits until
/// every replica's Raft node sleeps (`extra_args` then set `--dormant-after-ms`).
async fn stop_a_leader(extra_args: &[&str], asleep: bool) -> AfterTheStop {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, _, admins) = start_cluster_with_admin(root.path(), 3, extra_args);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new(HANDOVER_TOPIC, HANDOVER_PARTITIONS, 3)).await;
    for partition in 0..HANDOVER_PARTITIONS {
        write_one(&cluster, partition, "before").await;
    }
    // Quiet groups (timers stopped) are the common case on a broker being restarted.
    wait_until_quiet(&brokers, HANDOVER_TOPIC, HANDOVER_PARTITIONS, Duration::from_secs(30)).await;
    if asleep {
        await_all_asleep(&admins).await;
    }
    let leaders = leaders(&cluster, HANDOVER_TOPIC).await;
    let stopping = (1..=3u64)
        .max_by_key(|id| leaders.values().filter(|leader| *leader == id).count())
        .unwrap();
    let index = brokers.iter().position(|b| b.id == stopping).unwrap();
    let signalled = Instant::now();
    brokers[index].signal("TERM");
    let status = brokers[index]
        .wait_for_exit(Duration::from_secs(20))
        .expect("the stop completes");
    let stop_took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    let survivors: Vec<&BrokerProcess> = brokers.iter().filter(|b| b.id != stopping).collect();
    let led_at_exit = partitions_led_by(&survivors, HANDOVER_TOPIC).await.len();

    // Once both survivors' failure detectors hold it dead and they lead everything, whatever
    // its death was going to wake has woken.
    let survivor_admins: Vec<&String> = admins
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, admin)| admin)
        .collect();
    let peer = stopping.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut declared_dead = 0;
        for admin in &survivor_admins {
            if metric_where(admin, "broker_peer_dead", Some(("peer", &peer))).await == 1.0 {
                declared_dead += 1;
            }
        }
        let led = partitions_led_by(&survivors, HANDOVER_TOPIC).await.len();
        if declared_dead == survivor_admins.len() && led == HANDOVER_PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{declared_dead} survivors declared broker {stopping} dead; they lead {led} partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut leader_dead_wakes = 0.0;
    for admin in &survivor_admins {
        leader_dead_wakes +=
            metric_where(admin, "broker_quiet_group_wakes_total", Some(("reason", "leader_dead"))).await;
    }

    // Either way the survivors serve every partition, and nothing acknowledged is lost.
    for partition in 0..HANDOVER_PARTITIONS {
        write_one(&cluster, partition, "after").await;
        let values: Vec<String> = read_partition(&cluster, HANDOVER_TOPIC, partition)
            .await
            .into_iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(values, [format!("before-{partition}"), format!("after-{partition}")]);
    }
    AfterTheStop {
        led_at_exit,
        leader_dead_wakes,
        stop_took,
    }
}

/// The stopped broker's peers led every partition the moment it was gone, and none was left
/// for their failure detectors to fail over.
fn assert_all_handed_over(after: &AfterTheStop) {
    assert_eq!(
        after.led_at_exit, HANDOVER_PARTITIONS as usize,
        "the moment the stopped broker was gone its peers led only {} of {HANDOVER_PARTITIONS} partitions",
        after.led_at_exit
    );
    assert_eq!(
        after.leader_dead_wakes, 0.0,
        "no group was left for the failure detector to fail over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_hands_its_leaderships_to_its_peers_before_it_exits() {
    let after = stop_a_leader(&[], false).await;
    assert_all_handed_over(&after);
    // The peers keep their connections to it open; the drain ends once no request is in flight
    // instead of waiting its whole 3 s grace for those connections to close.
    assert!(
        after.stop_took < Duration::from_secs(3),
        "the stop took {:?}",
        after.stop_took
    );
}

/// The same with every replica's Raft node asleep: a sleeping leader is built again, leading,
/// and hands over like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_hands_over_its_sleeping_leaderships_too() {
    let after = stop_a_leader(&["--dormant-after-ms", "1000"], true).await;
    assert_all_handed_over(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_controlled_shutdown_a_stopped_leaders_groups_fail_over_as_after_a_crash() {
    // The counterpart that shows the check above can fail: the peers find the stopped
    // broker's groups leaderless only when their failure detector declares it dead.
    let after = stop_a_leader(&["--controlled-shutdown-ms", "0"], false).await;
    assert!(after.leader_dead_wakes >= 1.0, "{}", after.leader_dead_wakes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_leadership_returns_to_the_preferred_replicas_on_its_own() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster_with(root.path(), 3, &["--leader-balance-interval-ms", "500"]);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new(HANDOVER_TOPIC, HANDOVER_PARTITIONS, 3)).await;
    for partition in 0..HANDOVER_PARTITIONS {
        write_one(&cluster, partition, "before").await;
    }
    let preferred: BTreeMap<u32, u64> = describe_on(&brokers[0].address, HANDOVER_TOPIC)
        .await
        .expect("a description")
        .partitions
        .iter()
        .map(|p| (p.partition, p.replicas[0]))
        .collect();
    assert!(preferred.values().any(|id| *id == 2), "{preferred:?}");

    // Broker 2 stops (handing its leaderships over) and comes back leading nothing.
    brokers[1].signal("TERM");
    brokers[1]
        .wait_for_exit(Duration::from_secs(30))
        .expect("the stop completes");
    assert!(
        !leaders(&cluster, HANDOVER_TOPIC)
            .await
            .values()
            .any(|leader| *leader == 2),
        "a stopped broker leads nothing"
    );
    brokers[1].restart();

    // The balancer (every 0.5 s here; 5 min by default) hands each partition back to its
    // preferred replica once that replica has caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = leaders(&cluster, HANDOVER_TOPIC).await;
        if now == preferred {
            break;
        }
        assert!(Instant::now() < deadline, "leaders {now:?}, preferred {preferred:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for partition in 0..HANDOVER_PARTITIONS {
        write_one(&cluster, partition, "after").await;
    }
}
