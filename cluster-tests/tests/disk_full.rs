//! A full or failing disk on real broker processes, injected through the brokers' fault points
//! (`--features failpoints`, `PUT /failpoints/{name}` on the admin endpoint):
//!
//! - a leader whose free space is below `min_free_bytes` refuses produce requests with the
//!   retriable `STORAGE_UNAVAILABLE`, naming the free space, keeps serving reads, and accepts
//!   writes again once space returns;
//! - a follower whose writes fail with ENOSPC stalls (its Raft group does not stop), the
//!   majority goes on acknowledging, and it catches up when space returns;
//! - a follower whose fsync fails with EIO takes its log out of service, visibly (its broker
//!   describes the replica as `storage_failed` and counts it), acknowledges nothing it could
//!   not make durable and, restarted, recovers and catches up.
//!
//! At the end every acknowledged record is read back from each of those replicas as leader.

use client::{Acks, Cluster};
use cluster_tests::{
    clear_failpoint, connect_when_ready, create_topic, describe_on, http_get, leaders, metric, one_record_batch,
    read_partition, set_failpoint, start_cluster_with_admin,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "disk";

/// Writes `count` records with acks=all (the client retries retriable refusals); returns them.
async fn write(cluster: &Cluster, tag: &str, count: usize) -> Vec<String> {
    let mut written = Vec::new();
    for i in 0..count {
        let value = format!("{tag}-{i}");
        cluster
            .produce(TOPIC, 0, Acks::All, one_record_batch(&value))
            .await
            .unwrap_or_else(|e| panic!("{value}: acks=all: {e}"));
        written.push(value);
    }
    written
}

/// The high watermark broker `address` itself reports for partition 0.
async fn own_high_watermark(address: &str) -> Option<u64> {
    describe_on(address, TOPIC)
        .await
        .and_then(|d| d.partitions.into_iter().next())
        .and_then(|p| p.high_watermark)
}

async fn wait_for_high_watermark(address: &str, at_least: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while own_high_watermark(address).await.is_none_or(|hw| hw < at_least) {
        assert!(Instant::now() < deadline, "{what}: never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the partition with broker `id` leading it.
async fn read_from(cluster: &Arc<Cluster>, id: u64) -> Vec<String> {
    cluster
        .transfer_leadership(TOPIC, 0, id)
        .await
        .unwrap_or_else(|e| panic!("leadership to broker {id}: {e}"));
    read_partition(cluster, TOPIC, 0)
        .await
        .into_iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_failing_disk_refuses_or_stalls_writes_and_loses_nothing_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let (mut brokers, addresses, admins) = start_cluster_with_admin(root.path(), 3, &[]);
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 1, 3)).await;
    let mut acknowledged = write(&cluster, "before", 5).await;

    // 1. The leader's disk is (reported) full: produce is refused with a clear, retriable
    //    error; reads go on.
    let leader = leaders(&cluster, TOPIC).await[&0];
    let (leader_address, leader_admin) = (&addresses[leader as usize - 1], &admins[leader as usize - 1]);
    set_failpoint(leader_admin, "disk-available", "return(0)").await;
    let mut direct = proto::v1::broker_client::BrokerClient::connect(format!("http://{leader_address}"))
        .await
        .expect("connect to the leader");
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let answer = direct
            .produce(proto::v1::ProduceRequest {
                topic: TOPIC.into(),
                partition: 0,
                acks: proto::v1::Acks::All as i32,
                timeout_ms: 5_000,
                records: one_record_batch("refused"),
            })
            .await
            .expect("the leader answers")
            .into_inner();
        if answer.error != proto::v1::ErrorCode::None as i32 {
            break answer;
        }
        acknowledged.push("refused".into());
        assert!(
            Instant::now() < deadline,
            "the leader never refused a write on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        refusal.error,
        proto::v1::ErrorCode::StorageUnavailable as i32,
        "{refusal:?}"
    );
    assert!(
        refusal.message.contains("0 bytes free") && refusal.message.contains("until space returns"),
        "the refusal says why: {}",
        refusal.message
    );
    assert_eq!(
        read_partition(&cluster, TOPIC, 0).await.len(),
        acknowledged.len(),
        "reads go on"
    );
    clear_failpoint(leader_admin, "disk-available").await;
    acknowledged.extend(write(&cluster, "space-returned", 5).await);

    // 2. A follower's writes fail with ENOSPC: it stalls and the majority goes on.
    let follower = (1..=3u64).find(|id| *id != leader).expect("a follower");
    let (follower_address, follower_admin) = (&addresses[follower as usize - 1], &admins[follower as usize - 1]);
    set_failpoint(follower_admin, "segment-write", "return(enospc)").await;
    let stalled_at = own_high_watermark(follower_address)
        .await
        .expect("the follower answers");
    acknowledged.extend(write(&cluster, "follower-full", 10).await);
    assert_eq!(http_get(follower_admin, "/health").await.expect("health").0, 200);
    assert!(
        own_high_watermark(follower_address)
            .await
            .expect("the follower answers")
            <= stalled_at + 1,
        "a follower that cannot write does not advance"
    );
    clear_failpoint(follower_admin, "segment-write").await;
    wait_for_high_watermark(follower_address, acknowledged.len() as u64, "the follower after ENOSPC").await;

    // 3. Another follower's fsync fails with EIO: its log goes out of service; restarted, it
    //    recovers what was durable and catches up.
    let leader = leaders(&cluster, TOPIC).await[&0];
    let failing = (1..=3u64)
        .find(|id| *id != leader && *id != follower)
        .unwrap_or(follower);
    set_failpoint(&admins[failing as usize - 1], "segment-fsync", "return(eio)").await;
    acknowledged.extend(write(&cluster, "follower-eio", 10).await);
    let failing_admin = &admins[failing as usize - 1];
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(failing_admin, "storage_fsync_errors_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "broker {failing} never reported its failed fsync"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replica is visibly out of service: its broker describes it so, and counts it.
    let failing_address = &addresses[failing as usize - 1];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !describe_on(failing_address, TOPIC)
        .await
        .and_then(|d| d.partitions.into_iter().next())
        .is_some_and(|p| p.storage_failed)
    {
        assert!(
            Instant::now() < deadline,
            "broker {failing} never described its replica as failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(failing_admin, "broker_partition_replicas_storage_failed").await >= 1.0);
    brokers[failing as usize - 1].kill9();
    brokers[failing as usize - 1].restart();
    wait_for_high_watermark(
        &addresses[failing as usize - 1],
        acknowledged.len() as u64,
        "the restarted follower",
    )
    .await;

    // Nothing acknowledged was lost, on any of the replicas that went through a fault.
    for id in [follower, failing] {
        assert_eq!(
            read_from(&cluster, id).await,
            acknowledged,
            "read with broker {id} leading"
        );
    }
}
