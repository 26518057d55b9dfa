//! In-process multi-node tests of partition replication: three Raft replicas of one partition,
//! each behind its own real gRPC server on loopback, talking the `raft.v1` transport.

use broker::replication::{PartitionReplica, PeerChannels, RaftGroups, RaftTimers, ReplicaHost, ReplicationError};
use broker::storage::{FlushWorker, FsyncPolicy, LogConfig, Offset};
use bytes::Bytes;
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const GROUP: u64 = 7;
const WAIT: Duration = Duration::from_secs(20);

/// One broker's worth of Raft plumbing: a gRPC server, its group router and one replica.
struct Node {
    id: u64,
    address: SocketAddr,
    dir: PathBuf,
    replica: Option<PartitionReplica>,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _flush: FlushWorker,
}

fn log_config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        retention_ms: None,
        ..LogConfig::default()
    }
}

impl Node {
    async fn start(id: u64, address: SocketAddr, dir: PathBuf, peers: PeerChannels) -> Node {
        let listener = TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let groups = RaftGroups::default();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = groups.service();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let flush = FlushWorker::start(&format!("node{id}")).unwrap();
        let host = ReplicaHost {
            node_id: id,
            flush: flush.handle(),
            peers,
            groups,
            raft_config: RaftTimers::default().raft_config("test").unwrap(),
        };
        let replica = PartitionReplica::start(&host, GROUP, &dir, log_config(), None)
            .await
            .unwrap();
        Node {
            id,
            address,
            dir,
            replica: Some(replica),
            stop_server: Some(stop_server),
            server: Some(server),
            _flush: flush,
        }
    }

    fn replica(&self) -> &PartitionReplica {
        self.replica.as_ref().expect("running")
    }

    async fn stop(&mut self) {
        if let Some(replica) = self.replica.take() {
            replica.shutdown().await.unwrap();
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

fn batch(seq: u64) -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + seq as i64,
            key: Some(Bytes::from(format!("k{seq}"))),
            value: Some(Bytes::from(format!("value {seq}.{i}"))),
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE)
}

async fn cluster(root: &std::path::Path, peers: &PeerChannels) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        nodes.push(Node::start(id, any_port, root.join(format!("node{id}")), peers.clone()).await);
    }
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id, n.address.to_string())).collect();
    nodes[0].replica().bootstrap(members).await.unwrap();
    nodes
}

async fn leader_of(nodes: &[Node]) -> usize {
    let running = nodes.iter().find(|n| n.replica.is_some()).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = running.replica().wait_for_leader(WAIT).await.unwrap();
        if let Some(position) = nodes
            .iter()
            .position(|n| n.id == leader && n.replica.as_ref().is_some_and(|r| r.is_leader()))
        {
            return position;
        }
        assert!(Instant::now() < deadline, "no running leader elected");
        // Metrics are pushed asynchronously: poll until the chosen node reports itself leader.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every running replica has applied the leader's last entry, then checks that
/// all hold byte-identical logs.
async fn assert_replicas_identical(nodes: &[Node], leader: usize) {
    let last = nodes[leader].replica().last_log_index().unwrap();
    let mut logs = Vec::new();
    for node in nodes.iter().filter(|n| n.replica.is_some()) {
        node.replica().wait_applied(last, WAIT).await.unwrap();
        logs.push((node.id, node.replica().local_entries().unwrap()));
    }
    for (id, log) in &logs[1..] {
        assert_eq!(log.len(), logs[0].1.len(), "node {id} entry count");
        assert_eq!(log, &logs[0].1, "node {id} differs from node {}", logs[0].0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_commit_fail_over_and_catch_up_to_identical_logs() {
    let root = tempfile::tempdir().unwrap();
    let peers = PeerChannels::default();
    let mut nodes = cluster(root.path(), &peers).await;
    let leader = leader_of(&nodes).await;

    for seq in 0..60 {
        let offset = nodes[leader].replica().append_committed(batch(seq)).await.unwrap();
        assert_eq!(offset, Offset(seq * 3), "offsets are dense and assigned in order");
    }
    assert_eq!(nodes[leader].replica().high_watermark(), Offset(180));
    let read = nodes[leader].replica().read_committed(Offset(0), usize::MAX).unwrap();
    assert_eq!(read.len(), 60);
    assert_eq!(read[59].body, batch(59));
    assert_replicas_identical(&nodes, leader).await;

    // A follower refuses writes and names the leader, so clients can re-route.
    let follower = (leader + 1) % 3;
    match nodes[follower].replica().append_committed(batch(999)).await {
        Err(ReplicationError::NotLeader { leader: Some(id), .. }) => assert_eq!(id, nodes[leader].id),
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // The leader goes away; the other two elect a new one and keep committing.
    let old_leader = leader;
    let stopped_at = Instant::now();
    nodes[old_leader].stop().await;
    let leader = leader_of(&nodes).await;
    assert_ne!(leader, old_leader);
    let offset = loop {
        match nodes[leader].replica().append_committed(batch(60)).await {
            Ok(offset) => break offset,
            Err(ReplicationError::NotLeader { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(other) => panic!("write after failover failed: {other}"),
        }
    };
    println!(
        "failover: first committed write {:?} after the leader stopped",
        stopped_at.elapsed()
    );
    assert_eq!(offset, Offset(180));
    for seq in 61..80 {
        let offset = nodes[leader].replica().append_committed(batch(seq)).await.unwrap();
        assert_eq!(offset, Offset(seq * 3));
    }

    // The old leader restarts on its data and catches up to an identical log.
    let (id, address, dir) = (
        nodes[old_leader].id,
        nodes[old_leader].address,
        nodes[old_leader].dir.clone(),
    );
    nodes[old_leader] = Node::start(id, address, dir, peers.clone()).await;
    assert_replicas_identical(&nodes, leader).await;
    let caught_up = nodes[old_leader].replica();
    assert_eq!(caught_up.high_watermark(), Offset(240));
    assert_eq!(
        caught_up.read_committed(Offset(237), 1 << 20).unwrap()[0].body,
        batch(79)
    );

    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_with_one_replica_down_and_never_with_two() {
    let root = tempfile::tempdir().unwrap();
    let peers = PeerChannels::default();
    let mut nodes = cluster(root.path(), &peers).await;
    let leader = leader_of(&nodes).await;
    nodes[leader].replica().append_committed(batch(0)).await.unwrap();

    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    nodes[followers[0]].stop().await;
    let offset = nodes[leader].replica().append_committed(batch(1)).await.unwrap();
    assert_eq!(offset, Offset(3), "a majority (2 of 3) commits");

    nodes[followers[1]].stop().await;
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        nodes[leader].replica().append_committed(batch(2)),
    )
    .await;
    match attempt {
        Err(_elapsed) => {}
        Ok(Err(_refused)) => {}
        Ok(Ok(offset)) => panic!("false ack at {offset:?} with two of three replicas down"),
    }
    assert_eq!(
        nodes[leader].replica().high_watermark(),
        Offset(6),
        "nothing uncommitted is visible"
    );
    assert_eq!(
        nodes[leader]
            .replica()
            .read_committed(Offset(0), usize::MAX)
            .unwrap()
            .len(),
        2
    );

    for node in &mut nodes {
        node.stop().await;
    }
}
