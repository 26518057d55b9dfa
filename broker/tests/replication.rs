//! In-process multi-node tests of partition replication: three Raft replicas of one partition,
//! each behind its own real gRPC server on loopback, talking the `raft.v1` transport.

use broker::replication::{
    Acks, IsrBounds, PartitionReplica, PeerChannels, RaftGroups, RaftTimers, ReplicaHost, ReplicationError,
};
use broker::storage::{FlushWorker, FsyncPolicy, LogConfig, Offset};
use bytes::Bytes;
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
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
        Node::start_on(id, listener, dir, peers).await
    }

    async fn start_on(id: u64, listener: TcpListener, dir: PathBuf, peers: PeerChannels) -> Node {
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
            logs: flush.handle().into(),
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

/// `acks=all`: the batch's offset once committed (giving up after `WAIT`).
async fn append_committed(replica: &PartitionReplica, batch: Bytes) -> Result<Offset, ReplicationError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let outcome = replica.append(batch.into(), Acks::All, deadline).await?;
    Ok(outcome.base_offset.expect("acks=all answers with an offset"))
}

/// `acks=1`: the batch's offset once in the leader's log (giving up after `timeout`).
async fn append_on_leader(
    replica: &PartitionReplica,
    batch: Bytes,
    timeout: Duration,
) -> Result<Offset, ReplicationError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = replica.append(batch.into(), Acks::Leader, deadline).await?;
    Ok(outcome.base_offset.expect("acks=1 answers with an offset"))
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
        let offset = append_committed(nodes[leader].replica(), batch(seq)).await.unwrap();
        assert_eq!(offset, Offset(seq * 3), "offsets are dense and assigned in order");
    }
    assert_eq!(nodes[leader].replica().high_watermark(), Offset(180));
    let read = nodes[leader]
        .replica()
        .read_committed(Offset(0), usize::MAX)
        .unwrap()
        .batches;
    assert_eq!(read.len(), 60);
    assert_eq!(read[59].body, batch(59));
    assert_replicas_identical(&nodes, leader).await;

    // A follower refuses writes and names the leader, so clients can re-route.
    let follower = (leader + 1) % 3;
    match append_committed(nodes[follower].replica(), batch(999)).await {
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
        match append_committed(nodes[leader].replica(), batch(60)).await {
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
        let offset = append_committed(nodes[leader].replica(), batch(seq)).await.unwrap();
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
        caught_up.read_committed(Offset(237), 1 << 20).unwrap().batches[0].body,
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
    append_committed(nodes[leader].replica(), batch(0)).await.unwrap();

    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    nodes[followers[0]].stop().await;
    let offset = append_committed(nodes[leader].replica(), batch(1)).await.unwrap();
    assert_eq!(offset, Offset(3), "a majority (2 of 3) commits");

    nodes[followers[1]].stop().await;
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        append_committed(nodes[leader].replica(), batch(2)),
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
            .batches
            .len(),
        2
    );

    for node in &mut nodes {
        node.stop().await;
    }
}

/// A TCP proxy for one directed link between two nodes, which the test can cut and heal.
struct LinkProxy {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl LinkProxy {
    async fn start(target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_open, accept_connections) = (Arc::clone(&open), Arc::clone(&connections));
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let relay = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                accept_connections.lock().unwrap().push(relay);
            }
        });
        LinkProxy {
            address,
            open,
            connections,
            acceptor,
        }
    }

    /// Drops every connection on the link and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Three nodes whose every directed link `i -> j` (by position) goes through its own proxy, the
/// group bootstrapped.
async fn cluster_behind_proxies(root: &std::path::Path) -> (Vec<Node>, HashMap<(usize, usize), LinkProxy>) {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let servers: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    // Every directed link i -> j goes through its own proxy.
    let mut links: HashMap<(usize, usize), LinkProxy> = HashMap::new();
    for from in 0..3 {
        for to in (0..3).filter(|to| *to != from) {
            links.insert((from, to), LinkProxy::start(servers[to]).await);
        }
    }
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let overrides: HashMap<String, String> = (0..3)
            .filter(|to| *to != i)
            .map(|to| (servers[to].to_string(), links[&(i, to)].address.to_string()))
            .collect();
        let peers = PeerChannels::with_dial_overrides(overrides);
        nodes.push(Node::start_on(i as u64 + 1, listener, root.join(format!("node{}", i + 1)), peers).await);
    }
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id, n.address.to_string())).collect();
    nodes[0].replica().bootstrap(members).await.unwrap();

    (nodes, links)
}

/// Cuts both directions of every link of node `node`.
fn isolate(links: &HashMap<(usize, usize), LinkProxy>, node: usize) {
    for ((from, to), link) in links {
        if *from == node || *to == node {
            link.cut();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_never_exposes_uncommitted_appends_and_drops_them_after_healing() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, links) = cluster_behind_proxies(root.path()).await;

    let old = leader_of(&nodes).await;
    for seq in 0..5 {
        append_committed(nodes[old].replica(), batch(seq)).await.unwrap();
    }
    assert_eq!(nodes[old].replica().high_watermark(), Offset(15));

    // Isolate the leader: both directions of its links.
    isolate(&links, old);
    // It still appends locally (acks=1) but cannot commit (acks=all never succeeds).
    let stale = nodes[old].replica();
    let local = append_on_leader(stale, batch(100), Duration::from_secs(2)).await;
    assert_eq!(local.unwrap(), Offset(15), "appended to the isolated leader's own log");
    let committed = tokio::time::timeout(Duration::from_secs(2), append_committed(stale, batch(101))).await;
    assert!(
        !matches!(committed, Ok(Ok(_))),
        "false ack from an isolated leader: {committed:?}"
    );
    assert_eq!(
        stale.high_watermark(),
        Offset(15),
        "uncommitted appends stay above the high watermark"
    );
    let visible = stale.read_committed(Offset(0), usize::MAX).unwrap().batches;
    assert_eq!(visible.len(), 5, "fetch never returns uncommitted data");
    assert!(stale.local_entries().unwrap().iter().any(|e| e.body == batch(100)));

    // The majority elects a new leader and commits different data at the same offset.
    let deadline = Instant::now() + WAIT;
    let new = loop {
        let candidate = (0..3).filter(|i| *i != old).find(|i| nodes[*i].replica().is_leader());
        if let Some(new) = candidate {
            break new;
        }
        assert!(Instant::now() < deadline, "the majority never elected a leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let offset = append_committed(nodes[new].replica(), batch(200)).await.unwrap();
    assert_eq!(offset, Offset(15));
    // The old leader's lease has lapsed by now: acks=1 is refused as NOT_LEADER (retriable
    // elsewhere), neither acknowledged nor left hanging until the timeout.
    let started = Instant::now();
    let refused = append_on_leader(stale, batch(102), Duration::from_secs(10)).await;
    assert!(
        matches!(refused, Err(ReplicationError::NotLeader { .. })),
        "acks=1 on a leader without a lease: {refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "refused, not timed out");

    // Healed, the old leader steps down, drops its uncommitted tail and converges.
    for link in links.values() {
        link.heal();
    }
    assert_replicas_identical(&nodes, new).await;
    for node in &nodes {
        let entries = node.replica().local_entries().unwrap();
        assert!(
            !entries
                .iter()
                .any(|e| e.body == batch(100) || e.body == batch(101) || e.body == batch(102)),
            "node {} kept uncommitted data",
            node.id
        );
    }
    let healed = nodes[old]
        .replica()
        .read_committed(Offset(15), 1 << 20)
        .unwrap()
        .batches;
    assert_eq!(healed[0].body, batch(200));

    for node in &mut nodes {
        node.stop().await;
    }
}

/// Issue 10, item 8: a leader cut off from its quorum keeps believing it leads, but once its
/// lease has lapsed it stops serving — and its status must say so. Before the fix it went on
/// reporting itself as leader with every follower in sync (their last acknowledgement was
/// still within the ISR's 10 s lag bound), so metadata sent clients to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_lapsed_reports_no_isr_and_no_leadership() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, links) = cluster_behind_proxies(root.path()).await;
    let old = leader_of(&nodes).await;
    append_committed(nodes[old].replica(), batch(0)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let status = nodes[old].replica().status(IsrBounds::default());
        if status.isr.len() == 3 {
            break status;
        }
        assert!(Instant::now() < deadline, "the ISR never reached 3: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.is_leader);
    assert_eq!(status.leader, Some(nodes[old].id));

    isolate(&links, old);
    let stale = nodes[old].replica();
    let deadline = Instant::now() + WAIT;
    while stale.is_leader() {
        assert!(Instant::now() < deadline, "the isolated leader's lease never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = stale.status(IsrBounds::default());
    assert!(!status.is_leader, "a lapsed lease claims leadership: {status:?}");
    assert_eq!(status.leader, None, "a lapsed leader names itself: {status:?}");
    assert!(status.isr.is_empty(), "a lapsed leader reports an ISR: {status:?}");
    assert!(status.caught_up.is_empty(), "{status:?}");

    for link in links.values() {
        link.heal();
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_keeps_taking_writes_after_its_first_lease() {
    // Found by the offsets-compaction test: nothing acknowledges a group's only voter, so
    // openraft never advances its `last_quorum_acked` past the election, and the replica took
    // its lease for lapsed one lease (750 ms) after being elected — every later write and read
    // of an RF=1 partition was refused as NOT_LEADER with no leader.
    let root = tempfile::tempdir().unwrap();
    let node = Node::start(
        1,
        "127.0.0.1:0".parse().unwrap(),
        root.path().join("node1"),
        PeerChannels::default(),
    )
    .await;
    node.replica()
        .bootstrap([(1, node.address.to_string())].into())
        .await
        .unwrap();
    let mut nodes = vec![node];
    let leader = leader_of(&nodes).await;
    append_committed(nodes[leader].replica(), batch(0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let offset = append_committed(nodes[leader].replica(), batch(1)).await.unwrap();
    assert_eq!(offset, Offset(3));
    let status = nodes[leader].replica().status(IsrBounds::default());
    assert!(status.is_leader, "{status:?}");
    assert_eq!(status.leader, Some(1));
    nodes[0].stop().await;
}

/// A follower that comes back far behind a leader of large batches catches up. openraft bounds
/// an append by entry count (300), not bytes: 300 batches of 512 KiB made requests of 150 MiB,
/// which the follower's transport refused (64 MiB) at every retry — the follower never caught
/// up, and with a second replica behind the partition stopped committing. Appends are now sent
/// in chunks of at most 8 MiB of entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_large_batches_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let peers = PeerChannels::default();
    let mut nodes = cluster(root.path(), &peers).await;
    let leader = leader_of(&nodes).await;
    let behind = (0..3).find(|&i| i != leader).unwrap();
    let (address, dir, id) = (nodes[behind].address, nodes[behind].dir.clone(), nodes[behind].id);
    nodes[behind].stop().await;

    let value = Bytes::from(vec![b'x'; 512 * 1024]);
    for seq in 0..160 {
        let record = Record {
            timestamp: 1_700_000_000_000 + seq,
            value: Some(value.clone()),
            ..Record::default()
        };
        append_committed(nodes[leader].replica(), encode_batch(&[record], ProducerStamp::NONE))
            .await
            .unwrap();
    }

    nodes[behind] = Node::start(id, address, dir, peers.clone()).await;
    assert_replicas_identical(&nodes, leader).await;
    for node in &mut nodes {
        node.stop().await;
    }
}
