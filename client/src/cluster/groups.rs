//! Routing of `broker.v1.Groups` calls to a group's coordinator.
//!
//! A group's coordinator is the leader of the group's partition of `__consumer_offsets`, so a
//! group call is a partition-leader call on that partition: it shares the leader map, the
//! NOT_COORDINATOR hint (handled like NOT_LEADER) and the retry rule with produce and fetch.
//! Which partition a group has is asked once with FindCoordinator (any broker answers, and
//! asking is what makes the brokers create the offsets topic); when the coordinator is not
//! known — first call, a hint without a leader, a transport failure — FindCoordinator is asked
//! again.

use super::session::SessionChannel;
use super::{Cluster, LeaderAnswer};
use crate::error::ClientError;
use proto::v1::groups_client::GroupsClient;
use proto::v1::{BrokerDescription, ErrorCode, FindCoordinatorRequest, GroupListing, ListGroupsRequest};
use std::future::Future;
use std::time::Duration;

/// A broker that did not answer in this long is reported as unreachable by
/// [`Cluster::list_groups_on`] instead of holding up the answers of the others.
const LIST_GROUPS_TIMEOUT: Duration = Duration::from_secs(5);

/// Which broker coordinates a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    /// The coordinator's node id.
    pub node: u64,
    /// Its client address.
    pub address: String,
    /// The group's partition of `__consumer_offsets` (the coordinator leads it).
    pub partition: u32,
}

fn groups_client(channel: SessionChannel) -> GroupsClient<SessionChannel> {
    GroupsClient::new(channel)
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
}

impl Cluster {
    /// The coordinator of `group_id`, as any broker knows it (retrying while none is available).
    pub async fn find_coordinator(&self, group_id: &str) -> Result<Coordinator, ClientError> {
        self.retrying(|| self.find_coordinator_once(group_id)).await
    }

    /// Asks the known brokers, then the bootstrap ones, until one answers; remembers the answer
    /// as the leader of the group's offsets partition.
    async fn find_coordinator_once(&self, group_id: &str) -> Result<Coordinator, ClientError> {
        let mut candidates: Vec<String> = self.addresses.lock().expect("addresses").values().cloned().collect();
        candidates.extend(self.bootstrap.iter().cloned());
        let mut last = None;
        for address in candidates {
            let mut client = groups_client(self.channel(&address)?);
            let request = FindCoordinatorRequest {
                group_id: group_id.to_string(),
            };
            let response = match client.find_coordinator(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    last = Some(Self::unreachable(&address, status));
                    continue;
                }
            };
            ClientError::check(response.error, &response.message)?;
            let not_available = |why: String| ClientError::Broker {
                code: ErrorCode::CoordinatorNotAvailable,
                message: why,
            };
            let Some(node) = response.coordinator else {
                return Err(not_available(format!("no coordinator for group {group_id:?} yet")));
            };
            // The answer may leave the address out: the broker list has it.
            let address = if response.address.is_empty() {
                match self.address_of(node) {
                    Some(address) => address,
                    None => {
                        self.metadata_once(Vec::new(), false).await?;
                        self.address_of(node)
                            .ok_or_else(|| not_available(format!("coordinator {node} has no known address")))?
                    }
                }
            } else {
                self.addresses
                    .lock()
                    .expect("addresses")
                    .insert(node, response.address.clone());
                response.address
            };
            self.leaders
                .lock()
                .expect("leaders")
                .insert((proto::OFFSETS_TOPIC.to_string(), response.partition), node);
            self.group_partitions
                .lock()
                .expect("group partitions")
                .insert(group_id.to_string(), response.partition);
            return Ok(Coordinator {
                node,
                address,
                partition: response.partition,
            });
        }
        Err(last.unwrap_or(ClientError::Unreachable {
            address: "(no bootstrap address)".into(),
            message: "nothing to connect to".into(),
        }))
    }

    /// The channel to the group's coordinator as last known, and the group's partition.
    async fn coordinator_channel(&self, group_id: &str) -> Result<(SessionChannel, u32), ClientError> {
        let partition = self
            .group_partitions
            .lock()
            .expect("group partitions")
            .get(group_id)
            .copied();
        if let Some(partition) = partition {
            let key = (proto::OFFSETS_TOPIC.to_string(), partition);
            let leader = self.leaders.lock().expect("leaders").get(&key).copied();
            if let Some(address) = leader.and_then(|leader| self.address_of(leader)) {
                return Ok((self.channel(&address)?, partition));
            }
        }
        let found = self.find_coordinator_once(group_id).await?;
        Ok((self.channel(&found.address)?, found.partition))
    }

    /// One call to the group's coordinator as last known, without retries: follows a
    /// NOT_COORDINATOR hint (or forgets the coordinator) for the next call, and returns the
    /// answer's error code as an error. For callers with their own retry rule (heartbeats).
    pub(crate) async fn coordinator_attempt<R, F, Fut>(&self, group_id: &str, call: F) -> Result<R, ClientError>
    where
        R: LeaderAnswer,
        F: Fn(GroupsClient<SessionChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let (channel, partition) = self.coordinator_channel(group_id).await?;
        let response = call(groups_client(channel))
            .await
            .map_err(|status| self.leader_unreachable(proto::OFFSETS_TOPIC, partition, status))?
            .into_inner();
        self.follow_hint(proto::OFFSETS_TOPIC, partition, response.error(), response.leader());
        ClientError::check(response.error(), response.message())?;
        Ok(response)
    }

    /// A call to the group's coordinator, following hints and retrying retriable errors
    /// (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, timeouts, unreachable brokers) by the
    /// client's rule; returns the coordinator's successful answer.
    pub(crate) async fn on_coordinator<R, F, Fut>(&self, group_id: &str, call: F) -> Result<R, ClientError>
    where
        R: LeaderAnswer,
        F: Fn(GroupsClient<SessionChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.retrying(|| self.coordinator_attempt(group_id, &call)).await
    }

    /// The groups `broker` coordinates (one attempt, bounded by a few seconds).
    pub(crate) async fn list_groups_on(&self, broker: &BrokerDescription) -> Result<Vec<GroupListing>, ClientError> {
        let mut client = groups_client(self.channel(&broker.address)?);
        let mut request = tonic::Request::new(ListGroupsRequest {});
        request.set_timeout(LIST_GROUPS_TIMEOUT);
        let response = client
            .list_groups(request)
            .await
            .map_err(|status| Self::unreachable(&broker.address, status))?
            .into_inner();
        ClientError::check(response.error, &response.message)?;
        Ok(response.groups)
    }
}
