//! The offsets log does not grow without bound (issue 11): a `__consumer_offsets` partition
//! replica, with the coordinator's `OffsetsPartition` observer, snapshots its groups and purges
//! its log behind the snapshots. Shown on real replicas in-process: commits leave the partition
//! directory's size flat, a restarted replica resumes from its persisted snapshot with the same
//! offsets, and a follower that missed the purged entries is caught up by snapshot and then
//! assigns the same offsets as its leader.

use broker::coordinator::model::{Committed, GroupRecord, GroupsState};
use broker::coordinator::offsets_partition::{OffsetsPartition, OFFSETS_COMPACTION};
use broker::partition::TopicPartition;
use broker::replication::{
    Acks, BatchObserver, Compaction, IsrBounds, PartitionReplica, PeerChannels, RaftGroups, RaftTimers, ReplicaHost,
    ReplicationError,
};
use broker::storage::{FlushWorker, FsyncPolicy, LogConfig, Offset};
use bytes::Bytes;
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const GROUP: u64 = 11;
const GROUP_ID: &str = "billing";
/// Commits are sent in waves, one per partition of the consumed topic, all at once.
const PARTITIONS: u32 = 32;
const WAIT: Duration = Duration::from_secs(20);

fn log_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        retention_ms: None,
        retention_bytes: None,
        // Group commit makes a wave of commits one fdatasync.
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// One commit of offset `wave` for `partitions`, as the coordinator writes it: a batch of one
/// `GroupRecord::Commit`.
fn commit(wave: u64, partitions: std::ops::Range<u32>) -> Bytes {
    let record = GroupRecord::Commit {
        group_id: GROUP_ID.into(),
        offsets: partitions
            .map(|partition| {
                (
                    TopicPartition {
                        topic: "orders".into(),
                        partition,
                    },
                    Committed {
                        offset: wave,
                        metadata: String::new(),
                        commit_timestamp_ms: 1_700_000_000_000 + wave as i64,
                    },
                )
            })
            .collect(),
    };
    encode_batch(
        &[Record {
            timestamp: 1_700_000_000_000 + wave as i64,
            key: Some(Bytes::from_static(GROUP_ID.as_bytes())),
            value: Some(Bytes::from(serde_json::to_vec(&record).unwrap())),
            ..Record::default()
        }],
        ProducerStamp::NONE,
    )
}

/// The record a new coordinator writes first.
fn barrier() -> Bytes {
    encode_batch(
        &[Record {
            value: Some(Bytes::from(serde_json::to_vec(&GroupRecord::Barrier).unwrap())),
            ..Record::default()
        }],
        ProducerStamp::NONE,
    )
}

/// How a wave of commits reaches the partition.
#[derive(Clone, Copy)]
enum Committers {
    /// One member owning every partition commits them all in one request (one record), as
    /// `GroupConsumer::commit` does.
    OneMember,
    /// One member per partition, all committing at once: a record each, concurrently.
    MemberPerPartition,
}

/// Commits waves `waves`: wave `w` commits offset `w` for every partition.
async fn commit_waves(replica: &PartitionReplica, waves: std::ops::Range<u64>) {
    commit_waves_measuring(replica, waves, Committers::MemberPerPartition, None).await;
}

/// [`commit_waves`] by `committers`, returning the largest size of `dir` seen after a wave.
async fn commit_waves_measuring(
    replica: &PartitionReplica,
    waves: std::ops::Range<u64>,
    committers: Committers,
    dir: Option<&Path>,
) -> u64 {
    let mut largest = 0;
    for wave in waves {
        let deadline = tokio::time::Instant::now() + WAIT;
        let records: Vec<Bytes> = match committers {
            Committers::OneMember => vec![commit(wave, 0..PARTITIONS)],
            Committers::MemberPerPartition => (0..PARTITIONS).map(|p| commit(wave, p..p + 1)).collect(),
        };
        let appends = records
            .into_iter()
            .map(|record| replica.append(record.into(), Acks::All, deadline));
        for outcome in futures_util::future::join_all(appends).await {
            outcome.unwrap();
        }
        if let Some(dir) = dir {
            largest = largest.max(dir_size(dir));
        }
    }
    largest
}

/// After wave `last`, every partition's committed offset is `last`.
fn assert_offsets_after_wave(state: &GroupsState, last: u64) {
    let offsets = state.offsets(GROUP_ID).expect("the group has offsets");
    assert_eq!(offsets.len(), PARTITIONS as usize);
    for (partition, committed) in offsets {
        assert_eq!(committed.offset, last, "{partition:?}");
    }
}

/// Bytes of every file in `dir` (segments, indexes, Raft state, snapshot). A file deleted while
/// it is listed (a purge runs concurrently) counts as gone.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn host(node_id: u64, flush: &FlushWorker, peers: PeerChannels, groups: RaftGroups) -> ReplicaHost {
    ReplicaHost {
        node_id,
        logs: flush.handle().into(),
        peers,
        groups,
        raft_config: RaftTimers::default().raft_config("offsets-compaction").unwrap(),
    }
}

/// A single-voter offsets partition in `dir`, leading.
async fn start_single(
    flush: &FlushWorker,
    dir: &Path,
    compaction: Compaction,
    segment_bytes: u64,
) -> (PartitionReplica, Arc<OffsetsPartition>) {
    let offsets = Arc::new(OffsetsPartition::with_compaction(compaction));
    let observer: Arc<dyn BatchObserver> = offsets.clone();
    let host = host(1, flush, PeerChannels::default(), RaftGroups::default());
    let replica = PartitionReplica::start(&host, GROUP, dir, log_config(segment_bytes), Some(observer))
        .await
        .unwrap();
    replica
        .bootstrap([(1, "127.0.0.1:1".to_string())].into())
        .await
        .unwrap();
    // A new coordinator's first write, retried until the new leader takes writes.
    let deadline = Instant::now() + WAIT;
    loop {
        let barrier = barrier();
        match replica
            .append(barrier.into(), Acks::All, tokio::time::Instant::now() + WAIT)
            .await
        {
            Ok(_) => break,
            Err(ReplicationError::NotLeader { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(other) => panic!("the single voter takes no writes: {other}"),
        }
    }
    (replica, offsets)
}

/// Commits `waves` by `committers` to a fresh single-voter offsets partition with the
/// production settings, in two stretches (the first quarter, then the rest): the largest
/// directory size over each, and the size of the groups' state at the end.
struct Stretches {
    largest_first: u64,
    largest_rest: u64,
    live_state: u64,
}

impl Stretches {
    /// The directory stayed under `factor` times the state over both stretches.
    fn assert_under(&self, factor: u64) {
        for (largest, stretch) in [(self.largest_first, "first quarter"), (self.largest_rest, "rest")] {
            assert!(
                largest < factor * self.live_state,
                "{largest} B over the {stretch} of the commits exceeds {factor} × the {} B state",
                self.live_state
            );
        }
    }
}

async fn commit_in_stretches(
    replica: &PartitionReplica,
    offsets: &OffsetsPartition,
    dir: &Path,
    waves: u64,
    committers: Committers,
) -> Stretches {
    let started = Instant::now();
    let largest_first = commit_waves_measuring(replica, 0..waves / 4, committers, Some(dir)).await;
    let largest_rest = commit_waves_measuring(replica, waves / 4..waves, committers, Some(dir)).await;
    let live_state = serde_json::to_vec(&*offsets.state()).unwrap().len() as u64;
    let status = replica.status(IsrBounds::default());
    println!(
        "{waves} waves in {:?}: directory at most {largest_first} B over the first quarter, at most \
         {largest_rest} B over the rest; now {} B; live state {live_state} B; log offsets {:?}..{:?}",
        started.elapsed(),
        dir_size(dir),
        status.log_start_offset,
        status.log_end_offset,
    );
    assert!(status.log_start_offset > Offset(0), "the log was purged");
    assert_offsets_after_wave(&offsets.state(), waves - 1);
    Stretches {
        largest_first,
        largest_rest,
        live_state,
    }
}

/// A member committing its whole assignment in each request, as `GroupConsumer::commit` does:
/// the directory holds the log since the last snapshot (due once it is the snapshot's size, at
/// least 4 KiB), what was committed while that snapshot was sealed, built and purged behind, at
/// most one sealed segment the next purge deletes, the snapshot (and its next version while it
/// is written) and the Raft state — a small multiple of the groups' state, however many
/// commits. Measured on an idle machine: 7.4–8.6× the 3.3 KB state; with two busy loops on its
/// two cores, up to 12.6× (a snapshot cycle then spans more commits). The test allows 20×.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_commits_leave_the_offsets_partition_a_small_multiple_of_its_state_and_a_restart_recovers_them() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("offsets-0");
    let flush = FlushWorker::start("offsets-compaction").unwrap();
    let segment_bytes = 1024 * 1024;
    let (replica, offsets) = start_single(&flush, &dir, OFFSETS_COMPACTION, segment_bytes).await;
    let waves = 2_000;
    let seen = commit_in_stretches(&replica, &offsets, &dir, waves, Committers::OneMember).await;
    seen.assert_under(20);

    let before = offsets.state().clone();
    let high_watermark = replica.high_watermark();
    replica.shutdown().await.unwrap();

    // The restarted replica resumes from its persisted snapshot (the log behind it is gone)
    // and re-applies the log after it.
    let (replica, offsets) = start_single(&flush, &dir, OFFSETS_COMPACTION, segment_bytes).await;
    assert_eq!(*offsets.state(), before, "the restarted replica holds the same groups");
    // Offsets go on from where they were (after the new leader's barrier).
    let outcome = replica
        .append(
            commit(waves, 0..1).into(),
            Acks::All,
            tokio::time::Instant::now() + WAIT,
        )
        .await
        .unwrap();
    assert_eq!(outcome.base_offset, Some(Offset(high_watermark.0 + 1)));
    assert_eq!(
        offsets.state().offsets(GROUP_ID).unwrap()[&TopicPartition {
            topic: "orders".into(),
            partition: 0
        }]
            .offset,
        waves
    );
    replica.shutdown().await.unwrap();
}

/// 32 members committing at once, a record each, 60,000 commits: the partition still does not
/// grow with the commits. The bound is looser than for one member: while one snapshot is
/// sealed, built, persisted and purged behind (a few fsyncs), two or three waves of 32 commits
/// are written — by themselves several times this tiny (3.3 KB) state. Measured: 15–19× the
/// state on an idle machine, up to 27× with two busy loops on its two cores; the test allows
/// 48× (the old count-based policy reached 1,400×).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_committing_at_once_leave_the_offsets_partition_bounded() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("offsets-0");
    let flush = FlushWorker::start("offsets-flood").unwrap();
    let (replica, offsets) = start_single(&flush, &dir, OFFSETS_COMPACTION, 1024 * 1024).await;
    let waves = 60_000 / u64::from(PARTITIONS);
    let seen = commit_in_stretches(&replica, &offsets, &dir, waves, Committers::MemberPerPartition).await;
    seen.assert_under(48);
    replica.shutdown().await.unwrap();
}

/// One broker's worth of Raft plumbing for the three-replica test: a gRPC server, its group
/// router and one offsets partition replica.
struct Node {
    id: u64,
    address: SocketAddr,
    dir: PathBuf,
    replica: Option<PartitionReplica>,
    offsets: Arc<OffsetsPartition>,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _flush: FlushWorker,
}

/// Small enough that a few thousand commits purge past a stopped follower.
const FOLLOWER_TEST: Compaction = Compaction {
    log_per_snapshot: 2,
    min_log_bytes: 16 * 1024,
    keep_behind_snapshot: 20,
};
const FOLLOWER_TEST_SEGMENT_BYTES: u64 = 8 * 1024;

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
        let offsets = Arc::new(OffsetsPartition::with_compaction(FOLLOWER_TEST));
        let observer: Arc<dyn BatchObserver> = offsets.clone();
        let replica = PartitionReplica::start(
            &host(id, &flush, peers, groups),
            GROUP,
            &dir,
            log_config(FOLLOWER_TEST_SEGMENT_BYTES),
            Some(observer),
        )
        .await
        .unwrap();
        Node {
            id,
            address,
            dir,
            replica: Some(replica),
            offsets,
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

async fn leader_of(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = nodes[0].replica().wait_for_leader(WAIT).await.unwrap();
        if let Some(position) = nodes
            .iter()
            .position(|n| n.id == leader && n.replica.as_ref().is_some_and(|r| r.is_leader()))
        {
            return position;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `follower` holds the leader's groups, and — where both logs still hold an entry — the same
/// entry with the same offsets.
async fn assert_follower_matches(leader: &Node, follower: &Node) {
    let last = leader.replica().last_log_index().unwrap();
    follower.replica().wait_applied(last, WAIT).await.unwrap();
    assert_eq!(*follower.offsets.state(), *leader.offsets.state());
    let (leader_status, follower_status) = (
        leader.replica().status(IsrBounds::default()),
        follower.replica().status(IsrBounds::default()),
    );
    assert_eq!(follower_status.log_end_offset, leader_status.log_end_offset);
    let leader_entries = leader.replica().local_entries().unwrap();
    let follower_entries = follower.replica().local_entries().unwrap();
    // A log purged through its last entry behind a snapshot holds none: only the groups
    // (compared above) are left to compare.
    let (Some(leader_first), Some(follower_first)) = (leader_entries.first(), follower_entries.first()) else {
        return;
    };
    let common_from = leader_first.id.index.max(follower_first.id.index);
    let common = |entries: &[broker::storage::StoredEntry]| -> Vec<_> {
        entries
            .iter()
            .filter(|e| e.id.index >= common_from)
            .map(|e| (e.id, e.base_offset, e.record_count))
            .collect()
    };
    let (on_follower, on_leader) = (common(&follower_entries), common(&leader_entries));
    assert!(!on_follower.is_empty(), "the logs overlap");
    assert_eq!(on_follower.len(), on_leader.len());
    if let Some((follower_entry, leader_entry)) = on_follower.iter().zip(&on_leader).find(|(f, l)| f != l) {
        panic!("the follower holds {follower_entry:?} where the leader holds {leader_entry:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_is_caught_up_by_snapshot_and_keeps_the_leaders_offsets() {
    let root = tempfile::tempdir().unwrap();
    let peers = PeerChannels::default();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        nodes.push(Node::start(id, any_port, root.path().join(format!("node{id}")), peers.clone()).await);
    }
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id, n.address.to_string())).collect();
    nodes[0].replica().bootstrap(members).await.unwrap();
    let leader = leader_of(&nodes).await;
    commit_waves(nodes[leader].replica(), 0..5).await;

    // A follower stops; the others commit 15 snapshots' worth and purge behind them.
    let behind = (leader + 1) % 3;
    assert_follower_matches(&nodes[leader], &nodes[behind]).await;
    let stopped_at = nodes[behind].replica().status(IsrBounds::default()).log_end_offset;
    nodes[behind].stop().await;
    commit_waves(nodes[leader].replica(), 5..100).await;
    let leader_start = nodes[leader].replica().status(IsrBounds::default()).log_start_offset;
    assert!(
        leader_start > stopped_at,
        "the leader purged past the stopped follower ({leader_start:?} ≤ {stopped_at:?})"
    );

    // Back, it can only be caught up by a snapshot; then it holds the same groups and, as it
    // appends the leader's later entries, assigns them the same offsets (its log continues at
    // the snapshot's next offset, not at its own old end).
    let (id, address, dir) = (nodes[behind].id, nodes[behind].address, nodes[behind].dir.clone());
    nodes[behind] = Node::start(id, address, dir, peers.clone()).await;
    let leader = leader_of(&nodes).await;
    commit_waves(nodes[leader].replica(), 100..110).await;
    assert_follower_matches(&nodes[leader], &nodes[behind]).await;
    assert!(
        nodes[behind].replica().status(IsrBounds::default()).log_start_offset > stopped_at,
        "the follower's log starts after what it missed: it installed a snapshot"
    );
    assert_offsets_after_wave(&nodes[behind].offsets.state(), 109);

    // And it restarts from the snapshot it installed.
    let before = nodes[behind].offsets.state().clone();
    nodes[behind].stop().await;
    nodes[behind] = Node::start(id, address, nodes[behind].dir.clone(), peers.clone()).await;
    let leader = leader_of(&nodes).await;
    assert_follower_matches(&nodes[leader], &nodes[behind]).await;
    assert_eq!(*nodes[behind].offsets.state(), before);

    for node in &mut nodes {
        node.stop().await;
    }
}

/// The figure quoted in docs/benchmarks.md: a million commits to one group (32 members
/// committing at once, as in `members_committing_at_once_leave_the_offsets_partition_bounded`)
/// with the production settings (`OFFSETS_COMPACTION`: a snapshot once the log since the last is
/// as large as it, at least 4 KiB; none kept behind; the active segment sealed at each
/// snapshot). Run with
/// `cargo test -p broker --test offsets_compaction -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million commits: minutes"]
async fn a_million_commits_leave_the_offsets_partition_bounded() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("offsets-0");
    let flush = FlushWorker::start("offsets-million").unwrap();
    let segment_bytes = 1024 * 1024;
    let (replica, offsets) = start_single(&flush, &dir, OFFSETS_COMPACTION, segment_bytes).await;
    let waves = 1_000_000 / u64::from(PARTITIONS);
    let started = Instant::now();
    let mut largest = 0;
    for chunk in 0..10 {
        let largest_in_chunk = commit_waves_measuring(
            &replica,
            chunk * waves / 10..(chunk + 1) * waves / 10,
            Committers::MemberPerPartition,
            Some(&dir),
        )
        .await;
        largest = largest.max(largest_in_chunk);
        println!(
            "{:>9} commits, {:>5.1} s: directory at most {largest_in_chunk} B since the last line, now {} B",
            (chunk + 1) * waves / 10 * u64::from(PARTITIONS),
            started.elapsed().as_secs_f64(),
            dir_size(&dir)
        );
    }
    let live_state = serde_json::to_vec(&*offsets.state()).unwrap().len();
    let status = replica.status(IsrBounds::default());
    println!(
        "largest directory {largest} B; live state {live_state} B (serialized groups); log offsets {:?}..{:?}",
        status.log_start_offset, status.log_end_offset
    );
    assert!(
        largest < 48 * live_state as u64,
        "{largest} B exceeds 48 × the {live_state} B state"
    );
    assert_offsets_after_wave(&offsets.state(), waves - 1);
    let before = offsets.state().clone();
    replica.shutdown().await.unwrap();
    let restarted_at = Instant::now();
    let (replica, offsets) = start_single(&flush, &dir, OFFSETS_COMPACTION, segment_bytes).await;
    replica.wait_for_high_watermark_above(Offset(0), WAIT).await;
    println!("restarted and leading in {:?}", restarted_at.elapsed());
    assert_eq!(*offsets.state(), before);
    replica.shutdown().await.unwrap();
}
