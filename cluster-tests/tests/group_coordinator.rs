//! The group coordinator over the wire (`broker.v1.Groups`), driven by hand-written members so
//! each protocol step is visible: real broker processes on loopback, the offsets topic created
//! on the first group request, members balanced revoke-first, commits that survive a kill -9 of
//! the coordinator, session expiry, and bad input refused with clear codes.

use cluster_tests::{connect_when_ready, create_topic, start_cluster_with, BrokerProcess};
use proto::v1::groups_client::GroupsClient;
use proto::v1::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupRequest, DescribeGroupRequest,
    DescribeGroupResponse, ErrorCode, FindCoordinatorRequest, OffsetCommitRequest, OffsetFetchRequest, PartitionOffset,
    TopicPartition,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const GROUP: &str = "billing";
const TOPIC: &str = "orders";
const WAIT: Duration = Duration::from_secs(60);

/// A 3-broker cluster whose offsets topic gets `offsets_partitions` partitions.
fn start_cluster(root: &std::path::Path, offsets_partitions: &str) -> Vec<BrokerProcess> {
    start_cluster_with(root, 3, &["--offsets-topic-partitions", offsets_partitions])
}

/// Whether a group answer says "ask again" (the coordinator moved or is not ready): anything
/// else, an unknown topic included, is the answer under test.
fn ask_again(code: i32) -> bool {
    matches!(
        ErrorCode::try_from(code),
        Ok(ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::RequestTimedOut
            | ErrorCode::NotEnoughReplicas)
    )
}

/// Finds a group's coordinator by asking the brokers in turn, as a client does.
struct Coordinators {
    addresses: BTreeMap<u64, String>,
}

impl Coordinators {
    fn new(brokers: &[BrokerProcess]) -> Coordinators {
        Coordinators {
            addresses: brokers.iter().map(|b| (b.id, b.address.clone())).collect(),
        }
    }

    async fn client(address: &str) -> Option<GroupsClient<Channel>> {
        GroupsClient::connect(format!("http://{address}")).await.ok()
    }

    /// The coordinator's node id and a client of it (waits until one is known).
    async fn find(&self, group: &str) -> (u64, GroupsClient<Channel>) {
        let deadline = Instant::now() + WAIT;
        loop {
            for address in self.addresses.values() {
                let Some(mut client) = Self::client(address).await else {
                    continue;
                };
                let request = FindCoordinatorRequest { group_id: group.into() };
                if let Ok(answer) = client.find_coordinator(request).await {
                    let answer = answer.into_inner();
                    if let Some(id) = answer.coordinator {
                        if let Some(client) = Self::client(&self.addresses[&id]).await {
                            return (id, client);
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no coordinator for {group}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a heartbeat to the coordinator, following NOT_COORDINATOR and retrying retriable
    /// codes (the rule a client follows).
    async fn heartbeat(&self, request: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, mut client) = self.find(&request.group_id).await;
            if let Ok(answer) = client.consumer_group_heartbeat(request.clone()).await {
                let answer = answer.into_inner();
                if !ask_again(answer.error) {
                    return answer;
                }
            }
            assert!(Instant::now() < deadline, "heartbeat never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn describe(&self, group: &str) -> DescribeGroupResponse {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, mut client) = self.find(group).await;
            let request = DescribeGroupRequest { group_id: group.into() };
            if let Ok(answer) = client.describe_group(request).await {
                let answer = answer.into_inner();
                if !ask_again(answer.error) {
                    return answer;
                }
            }
            assert!(Instant::now() < deadline, "describe never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn commit(&self, request: OffsetCommitRequest) -> (ErrorCode, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, mut client) = self.find(&request.group_id).await;
            if let Ok(answer) = client.offset_commit(request.clone()).await {
                let answer = answer.into_inner();
                if !ask_again(answer.error) {
                    return (ErrorCode::try_from(answer.error).unwrap(), answer.message);
                }
            }
            assert!(Instant::now() < deadline, "commit never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn committed(&self, group: &str) -> BTreeMap<u32, u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, mut client) = self.find(group).await;
            let request = OffsetFetchRequest {
                group_id: group.into(),
                partitions: Vec::new(),
            };
            if let Ok(answer) = client.offset_fetch(request).await {
                let answer = answer.into_inner();
                if answer.error == ErrorCode::None as i32 {
                    return answer.offsets.iter().map(|o| (o.partition, o.offset)).collect();
                }
            }
            assert!(Instant::now() < deadline, "offsets never fetched");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A member driven by hand: it consumes exactly the partitions of its last answer (so a revoked
/// partition is released at its next heartbeat).
struct Member {
    id: String,
    epoch: i32,
    owned: BTreeSet<u32>,
    session_timeout_ms: u32,
    /// When its last heartbeat was sent: its session cannot end before this + the timeout.
    last_beat: Instant,
}

impl Member {
    fn new(id: &str) -> Member {
        Member {
            id: id.into(),
            epoch: 0,
            owned: BTreeSet::new(),
            session_timeout_ms: 3_000,
            last_beat: Instant::now(),
        }
    }

    fn request(&self) -> ConsumerGroupHeartbeatRequest {
        ConsumerGroupHeartbeatRequest {
            group_id: GROUP.into(),
            member_id: self.id.clone(),
            member_epoch: self.epoch,
            subscribed_topics: vec![TOPIC.into()],
            owned_partitions: self
                .owned
                .iter()
                .map(|p| TopicPartition {
                    topic: TOPIC.into(),
                    partition: *p,
                })
                .collect(),
            session_timeout_ms: self.session_timeout_ms,
            heartbeat_interval_ms: 200,
            ..ConsumerGroupHeartbeatRequest::default()
        }
    }

    async fn beat(&mut self, coordinators: &Coordinators) {
        self.last_beat = Instant::now();
        let answer = coordinators.heartbeat(self.request()).await;
        assert_eq!(answer.error, ErrorCode::None as i32, "{}: {}", self.id, answer.message);
        self.epoch = answer.member_epoch;
        self.owned = answer.assignment.iter().map(|p| p.partition).collect();
    }
}

/// No partition is consumed by two members, as the members themselves see it.
fn assert_single_owners(members: &[Member]) {
    let mut seen = BTreeMap::new();
    for member in members {
        for partition in &member.owned {
            if let Some(other) = seen.insert(*partition, &member.id) {
                panic!("partition {partition} owned by {other} and {}", member.id);
            }
        }
    }
}

/// Heartbeats every member in turn until the group is stable with every partition owned.
async fn settle(coordinators: &Coordinators, members: &mut [Member]) -> DescribeGroupResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        for member in members.iter_mut() {
            member.beat(coordinators).await;
        }
        assert_single_owners(members);
        let described = coordinators.describe(GROUP).await;
        let owned: usize = members.iter().map(|m| m.owned.len()).sum();
        if described.state == "stable" && owned == 12 {
            return described;
        }
        assert!(Instant::now() < deadline, "never stable: {described:?}");
    }
}

fn counts(members: &[Member]) -> Vec<usize> {
    let mut counts: Vec<usize> = members.iter().map(|m| m.owned.len()).collect();
    counts.sort_unstable();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_balance_revoke_first_and_commits_survive_a_killed_coordinator() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), "3");
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 12, 3)).await;
    let coordinators = Coordinators::new(&brokers);

    // Three members share twelve partitions.
    let mut members: Vec<Member> = ["a", "b", "c"].iter().map(|id| Member::new(id)).collect();
    let described = settle(&coordinators, &mut members).await;
    assert_eq!(counts(&members), vec![4, 4, 4]);
    let epoch_of_three = described.group_epoch;

    // A fourth joins: it gets nothing until the others released what it is to get, and the
    // others keep consuming everything they keep meanwhile.
    let before: Vec<BTreeSet<u32>> = members.iter().map(|m| m.owned.clone()).collect();
    let mut joiner = Member::new("d");
    joiner.beat(&coordinators).await;
    assert!(joiner.owned.is_empty(), "nothing was free: {:?}", joiner.owned);
    members.push(joiner);
    for (member, before) in members.iter_mut().zip(&before) {
        member.beat(&coordinators).await;
        assert!(member.owned.is_subset(before), "{} only gives up partitions", member.id);
        assert_eq!(member.owned.len(), 3, "{} keeps three", member.id);
    }
    let described = settle(&coordinators, &mut members).await;
    assert_eq!(counts(&members), vec![3, 3, 3, 3]);
    assert_eq!(described.group_epoch, epoch_of_three + 1);
    assert_eq!(described.members.len(), 4);

    // Each member commits its partitions; a commit for a partition it does not own is refused.
    for member in &members {
        let request = OffsetCommitRequest {
            group_id: GROUP.into(),
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            offsets: member
                .owned
                .iter()
                .map(|p| PartitionOffset {
                    topic: TOPIC.into(),
                    partition: *p,
                    offset: 100 + u64::from(*p),
                    metadata: String::new(),
                })
                .collect(),
        };
        assert_eq!(coordinators.commit(request).await.0, ErrorCode::None);
    }
    let someone_elses = *members[1].owned.iter().next().unwrap();
    let (code, message) = coordinators
        .commit(OffsetCommitRequest {
            group_id: GROUP.into(),
            member_id: members[0].id.clone(),
            member_epoch: members[0].epoch,
            offsets: vec![PartitionOffset {
                topic: TOPIC.into(),
                partition: someone_elses,
                offset: 5,
                metadata: String::new(),
            }],
        })
        .await;
    assert_eq!(code, ErrorCode::PartitionNotAssigned, "{message}");
    let expected: BTreeMap<u32, u64> = (0..12).map(|p| (p, 100 + u64::from(p))).collect();
    assert_eq!(coordinators.committed(GROUP).await, expected);

    // kill -9 the coordinator: another broker takes over the offsets partition with every
    // group in it; the members keep their epochs and partitions, the commits are there.
    let (coordinator, _) = coordinators.find(GROUP).await;
    brokers[coordinator as usize - 1].kill9();
    let epochs: Vec<i32> = members.iter().map(|m| m.epoch).collect();
    for member in members.iter_mut() {
        member.beat(&coordinators).await;
    }
    let (new_coordinator, _) = coordinators.find(GROUP).await;
    assert_ne!(new_coordinator, coordinator);
    assert_eq!(members.iter().map(|m| m.epoch).collect::<Vec<_>>(), epochs);
    assert_eq!(counts(&members), vec![3, 3, 3, 3]);
    assert_eq!(coordinators.committed(GROUP).await, expected);

    // A member that stops heartbeating is removed after its session; the others take its
    // partitions.
    let silent = members.pop().unwrap();
    let expires = silent.last_beat + Duration::from_millis(u64::from(silent.session_timeout_ms));
    let deadline = Instant::now() + WAIT;
    loop {
        for member in members.iter_mut() {
            member.beat(&coordinators).await;
        }
        assert_single_owners(&members);
        let described = coordinators.describe(GROUP).await;
        if described.members.len() == 3 && described.state == "stable" {
            assert!(Instant::now() >= expires, "removed before its session ended");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent member was never removed: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle(&coordinators, &mut members).await;
    assert_eq!(counts(&members), vec![4, 4, 4]);
    let answer = coordinators.heartbeat(silent.request()).await;
    assert_eq!(answer.error, ErrorCode::UnknownMemberId as i32, "{}", answer.message);

    brokers[coordinator as usize - 1].restart();
    for broker in &mut brokers {
        broker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_group_requests_get_clear_errors_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), "2");
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, 2, 3)).await;
    let coordinators = Coordinators::new(&brokers);

    // An empty group id.
    let (_, mut client) = coordinators.find(GROUP).await;
    let answer = client
        .find_coordinator(FindCoordinatorRequest {
            group_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.error, ErrorCode::InvalidGroupId as i32, "{}", answer.message);

    // A topic that does not exist.
    let mut member = Member::new("a");
    member.session_timeout_ms = 20_000;
    let mut request = member.request();
    request.subscribed_topics.push("no-such-topic".into());
    let answer = coordinators.heartbeat(request).await;
    assert_eq!(answer.error, ErrorCode::UnknownTopicOrPartition as i32);
    assert!(answer.message.contains("no-such-topic"), "{}", answer.message);

    // An unknown group.
    let described = coordinators.describe("nobody").await;
    assert_eq!(
        described.error,
        ErrorCode::GroupIdNotFound as i32,
        "{}",
        described.message
    );

    // An unknown member commits; an unknown assignor.
    member.beat(&coordinators).await;
    let (code, _) = coordinators
        .commit(OffsetCommitRequest {
            group_id: GROUP.into(),
            member_id: "stranger".into(),
            member_epoch: 1,
            offsets: vec![],
        })
        .await;
    assert_eq!(code, ErrorCode::UnknownMemberId);
    let mut request = Member::new("b").request();
    request.assignor = "roundrobin".into();
    let answer = coordinators.heartbeat(request).await;
    assert_eq!(answer.error, ErrorCode::UnsupportedAssignor as i32);

    // Reset and delete need an empty group.
    let reset = OffsetCommitRequest {
        group_id: GROUP.into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![PartitionOffset {
            topic: TOPIC.into(),
            partition: 0,
            offset: 7,
            metadata: String::new(),
        }],
    };
    let (code, message) = coordinators.commit(reset.clone()).await;
    assert_eq!(code, ErrorCode::NonEmptyGroup, "{message}");
    let (_, mut client) = coordinators.find(GROUP).await;
    let deleted = client
        .delete_group(DeleteGroupRequest { group_id: GROUP.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.error, ErrorCode::NonEmptyGroup as i32);

    // A coordinator whose offsets partition went quiet (no writes for longer than the
    // quiescence delay, 1 s: its lease lapsed) still answers, renewing its lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    member.beat(&coordinators).await;
    let (code, message) = coordinators
        .commit(OffsetCommitRequest {
            group_id: GROUP.into(),
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            offsets: vec![],
        })
        .await;
    assert_eq!(code, ErrorCode::None, "{message}");

    // Clients cannot write the offsets topic.
    let produced = cluster
        .produce(
            proto::OFFSETS_TOPIC,
            0,
            client::Acks::All,
            bytes::Bytes::from_static(b"x"),
        )
        .await;
    assert!(
        matches!(
            &produced,
            Err(client::ClientError::Broker {
                code: ErrorCode::TopicIsInternal,
                ..
            })
        ),
        "{produced:?}"
    );

    // Once the member left, the reset and the delete go through.
    let mut leave = member.request();
    leave.member_epoch = -1;
    assert_eq!(coordinators.heartbeat(leave).await.error, ErrorCode::None as i32);
    assert_eq!(coordinators.commit(reset).await.0, ErrorCode::None);
    assert_eq!(coordinators.committed(GROUP).await, BTreeMap::from([(0, 7)]));
    let deleted = client
        .delete_group(DeleteGroupRequest { group_id: GROUP.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.error, ErrorCode::None as i32, "{}", deleted.message);
    assert_eq!(
        coordinators.describe(GROUP).await.error,
        ErrorCode::GroupIdNotFound as i32
    );

    for broker in &mut brokers {
        broker.stop();
    }
}
