//! The consumer-group RPCs (`broker.v1.Groups`): FindCoordinator, ConsumerGroupHeartbeat,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroup and DeleteGroup, each decoded, handed
//! to the [`GroupCoordinator`], and encoded. A broker that does not coordinate the group
//! answers `NOT_COORDINATOR` naming the coordinator if it knows it.

use super::acls::check;
use super::answer::{answer, Refusal};
use crate::coordinator::membership::Heartbeat;
use crate::coordinator::model::Committed;
use crate::coordinator::{GroupCoordinator, GroupDescription};
use crate::partition::TopicPartition;
use crate::security::access::Access;
use crate::security::acl::{Operation, ResourceType};
use crate::security::identity::AuthSettings;
use proto::v1::groups_server::{Groups, GroupsServer};
use proto::v1::{
    CommittedOffset, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupRequest,
    DeleteGroupResponse, DescribeGroupRequest, DescribeGroupResponse, ErrorCode, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupListing, GroupMember, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `broker.v1.Groups` service of this broker.
pub struct GroupsApi {
    coordinator: Arc<GroupCoordinator>,
    auth: AuthSettings,
}

impl GroupsApi {
    /// The service over this broker's coordinator.
    pub fn new(coordinator: Arc<GroupCoordinator>) -> Self {
        GroupsApi {
            coordinator,
            auth: AuthSettings::default(),
        }
    }

    /// The same, checking callers against the ACLs as `auth` says.
    pub fn with_auth(mut self, auth: AuthSettings) -> Self {
        self.auth = auth;
        self
    }

    fn access<T>(&self, request: &Request<T>) -> Access {
        Access::of(request, &self.auth, self.coordinator.metadata())
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> GroupsServer<GroupsApi> {
        GroupsServer::new(self)
    }
}

fn from_wire(partition: &proto::v1::TopicPartition) -> TopicPartition {
    TopicPartition {
        topic: partition.topic.clone(),
        partition: partition.partition,
    }
}

fn to_wire<'a>(partitions: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<proto::v1::TopicPartition> {
    partitions
        .into_iter()
        .map(|p| proto::v1::TopicPartition {
            topic: p.topic.clone(),
            partition: p.partition,
        })
        .collect()
}

fn committed_to_wire<'a>(
    offsets: impl IntoIterator<Item = (&'a TopicPartition, &'a Committed)>,
) -> Vec<CommittedOffset> {
    offsets
        .into_iter()
        .map(|(p, c)| CommittedOffset {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: c.offset,
            metadata: c.metadata.clone(),
            commit_timestamp_ms: c.commit_timestamp_ms,
        })
        .collect()
}

fn find_coordinator(api: &GroupsApi, request: FindCoordinatorRequest) -> Result<FindCoordinatorResponse, Refusal> {
    let (partition, coordinator) = api
        .coordinator
        .find_coordinator(&request.group_id)
        .map_err(|e| Refusal::group(&e))?;
    let (coordinator, address) = coordinator.unzip();
    Ok(FindCoordinatorResponse {
        coordinator,
        address: address.unwrap_or_default(),
        partition,
        ..FindCoordinatorResponse::default()
    })
}

async fn heartbeat(
    api: &GroupsApi,
    request: ConsumerGroupHeartbeatRequest,
) -> Result<ConsumerGroupHeartbeatResponse, Refusal> {
    let heartbeat = Heartbeat {
        group_id: request.group_id,
        member_id: request.member_id.clone(),
        member_epoch: request.member_epoch,
        instance_id: request.group_instance_id,
        subscribed: request.subscribed_topics.into_iter().collect(),
        owned: request.owned_partitions.iter().map(from_wire).collect(),
        session_timeout_ms: request.session_timeout_ms,
        heartbeat_interval_ms: request.heartbeat_interval_ms,
        assignor: request.assignor,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
    };
    let answer = api
        .coordinator
        .heartbeat(heartbeat)
        .await
        .map_err(|e| Refusal::group(&e))?;
    Ok(ConsumerGroupHeartbeatResponse {
        member_id: request.member_id,
        member_epoch: answer.member_epoch,
        heartbeat_interval_ms: answer.heartbeat_interval_ms,
        assignment: to_wire(&answer.assignment),
        ..ConsumerGroupHeartbeatResponse::default()
    })
}

async fn commit(api: &GroupsApi, request: OffsetCommitRequest) -> Result<OffsetCommitResponse, Refusal> {
    let mut seen = BTreeSet::new();
    let mut offsets = Vec::with_capacity(request.offsets.len());
    for offset in request.offsets {
        let partition = TopicPartition {
            topic: offset.topic,
            partition: offset.partition,
        };
        if !seen.insert(partition.clone()) {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{}/{} appears twice in one commit",
                    partition.topic, partition.partition
                ),
            ));
        }
        offsets.push((partition, offset.offset, offset.metadata));
    }
    api.coordinator
        .commit(&request.group_id, &request.member_id, request.member_epoch, offsets)
        .await
        .map_err(|e| Refusal::group(&e))?;
    Ok(OffsetCommitResponse::default())
}

async fn fetch_offsets(api: &GroupsApi, request: OffsetFetchRequest) -> Result<OffsetFetchResponse, Refusal> {
    let partitions: Vec<TopicPartition> = request.partitions.iter().map(from_wire).collect();
    let offsets = api
        .coordinator
        .fetch_offsets(&request.group_id, &partitions)
        .await
        .map_err(|e| Refusal::group(&e))?;
    Ok(OffsetFetchResponse {
        offsets: committed_to_wire(&offsets),
        ..OffsetFetchResponse::default()
    })
}

fn describe_to_wire(description: GroupDescription) -> DescribeGroupResponse {
    let group = description.group;
    let members = group
        .members
        .values()
        .map(|m| GroupMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.instance_id.clone(),
            member_epoch: m.epoch,
            subscribed_topics: m.subscribed.iter().cloned().collect(),
            assigned: to_wire(&m.assigned),
            pending_revocation: to_wire(&m.pending_revocation),
            target: to_wire(&group.target_of(&m.member_id)),
            session_timeout_ms: m.session_timeout_ms,
            left_for_restart: m.left_for_restart,
        })
        .collect();
    DescribeGroupResponse {
        group_id: group.group_id.clone(),
        state: group.phase().name().to_string(),
        group_epoch: group.epoch,
        assignment_epoch: group.target_epoch,
        assignor: group.assignor.name().to_string(),
        coordinator: description.coordinator,
        members,
        offsets: committed_to_wire(&description.offsets),
        ..DescribeGroupResponse::default()
    }
}

#[tonic::async_trait]
impl Groups for GroupsApi {
    async fn find_coordinator(
        &self,
        request: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        let allowed = check(&access, ResourceType::Group, &request.group_id, Operation::Describe);
        Ok(Response::new(answer(
            allowed.and_then(|()| find_coordinator(self, request)),
        )))
    }

    async fn consumer_group_heartbeat(
        &self,
        request: Request<ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<ConsumerGroupHeartbeatResponse>, Status> {
        let access = self.access(&request);
        let mut request = request.into_inner();
        if let Err(refusal) = check(&access, ResourceType::Group, &request.group_id, Operation::Read) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        // A member is assigned only topics it may see (as Kafka's subscription filter): one it
        // may not read would fail at its first fetch instead.
        request
            .subscribed_topics
            .retain(|topic| access.may(ResourceType::Topic, topic, Operation::Describe));
        Ok(Response::new(answer(heartbeat(self, request).await)))
    }

    async fn offset_commit(
        &self,
        request: Request<OffsetCommitRequest>,
    ) -> Result<Response<OffsetCommitResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        // Committing is consuming: the group and every topic committed for.
        let allowed = check(&access, ResourceType::Group, &request.group_id, Operation::Read).and_then(|()| {
            request
                .offsets
                .iter()
                .try_for_each(|offset| check(&access, ResourceType::Topic, &offset.topic, Operation::Read))
        });
        if let Err(refusal) = allowed {
            return Ok(Response::new(answer(Err(refusal))));
        }
        Ok(Response::new(answer(commit(self, request).await)))
    }

    async fn offset_fetch(
        &self,
        request: Request<OffsetFetchRequest>,
    ) -> Result<Response<OffsetFetchResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        let allowed = check(&access, ResourceType::Group, &request.group_id, Operation::Describe).and_then(|()| {
            request
                .partitions
                .iter()
                .try_for_each(|p| check(&access, ResourceType::Topic, &p.topic, Operation::Describe))
        });
        if let Err(refusal) = allowed {
            return Ok(Response::new(answer(Err(refusal))));
        }
        // Asked for all (no partitions named): only those of topics the caller may see.
        let mut answered = fetch_offsets(self, request).await;
        if let Ok(response) = &mut answered {
            response
                .offsets
                .retain(|offset| access.may(ResourceType::Topic, &offset.topic, Operation::Describe));
        }
        Ok(Response::new(answer(answered)))
    }

    async fn list_groups(&self, request: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        let access = self.access(&request);
        // Only the groups the caller may describe.
        let groups = self
            .coordinator
            .list()
            .into_iter()
            .filter(|g| access.may(ResourceType::Group, &g.group_id, Operation::Describe))
            .map(|g| GroupListing {
                group_id: g.group_id,
                state: g.phase.name().to_string(),
                members: g.members as u32,
            })
            .collect();
        Ok(Response::new(ListGroupsResponse {
            groups,
            ..ListGroupsResponse::default()
        }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let access = self.access(&request);
        let group_id = request.into_inner().group_id;
        if let Err(refusal) = check(&access, ResourceType::Group, &group_id, Operation::Describe) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        let described = self.coordinator.describe(&group_id).await;
        // Nothing about topics the caller may not see: their offsets, subscriptions and
        // partitions are left out.
        let visible = |topic: &str| access.may(ResourceType::Topic, topic, Operation::Describe);
        let described = described.map(describe_to_wire).map(|mut response| {
            response.offsets.retain(|offset| visible(&offset.topic));
            for member in &mut response.members {
                member.subscribed_topics.retain(|topic| visible(topic));
                for partitions in [&mut member.assigned, &mut member.pending_revocation, &mut member.target] {
                    partitions.retain(|p| visible(&p.topic));
                }
            }
            response
        });
        Ok(Response::new(answer(described.map_err(|e| Refusal::group(&e)))))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let access = self.access(&request);
        let group_id = request.into_inner().group_id;
        if let Err(refusal) = check(&access, ResourceType::Group, &group_id, Operation::Delete) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        let deleted = self.coordinator.delete(&group_id).await;
        Ok(Response::new(answer(
            deleted
                .map(|()| DeleteGroupResponse::default())
                .map_err(|e| Refusal::group(&e)),
        )))
    }
}
