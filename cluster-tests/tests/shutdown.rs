//! Stopping a broker always ends its process. Here a stop stalls for real: a long-poll fetch is
//! in flight, and the server drains open requests for up to 3 s before it closes its logs. A
//! second SIGTERM then ends the process at once, and `--shutdown-timeout-ms` bounds a stop that
//! nobody hurries. (Regression for brokers that never exited after resource exhaustion.)

use client::NewTopic;
use cluster_tests::{connect_when_ready, create_topic, free_ports, http_get, BrokerProcess};
use proto::v1::broker_client::BrokerClient;
use proto::v1::FetchRequest;
use std::collections::HashMap;
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
