//! The `broker.v1` gRPC service: [`BrokerApi`] implements the tonic trait, and each method hands
//! its request to its RPC family's module in one line. What the families share lives here: the
//! subsystems they call and the lookup of the local replica a partition request is for.

use super::answer::{answer, Refusal};
use super::{controller_voters, fetch, leadership, produce, producer_ids, reassignments, topics, users};
use crate::controller::Controller;
use crate::partition::PartitionManager;
use crate::replication::{IsrBounds, PartitionReplica};
use crate::security::identity::AuthSettings;
use crate::storage::DiskSpace;
use proto::v1::broker_server::{Broker, BrokerServer};
use proto::v1::{
    AlterTopicConfigRequest, BrokerRequest, CancelReassignmentsRequest, ControllerVotersRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DeleteUserRequest, ErrorCode, FetchRequest,
    FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListReassignmentsRequest, ListReassignmentsResponse, ListUsersRequest, ListUsersResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ReassignPartitionsRequest, ReassignmentResult,
    SetReassignmentThrottleRequest, TopicResults, TransferLeadershipRequest, TransferLeadershipResponse,
    UpsertUserRequest, UserResult,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// What the API needs of the broker: the controller and the local partitions.
pub struct BrokerApi {
    controller: Arc<Controller>,
    partitions: Arc<PartitionManager>,
    isr_bounds: IsrBounds,
    space: Option<DiskSpace>,
    auth: AuthSettings,
}

impl BrokerApi {
    /// The API over this broker's controller replica and partitions.
    pub fn new(controller: Arc<Controller>, partitions: Arc<PartitionManager>, isr_bounds: IsrBounds) -> Self {
        BrokerApi {
            controller,
            partitions,
            isr_bounds,
            space: None,
            auth: AuthSettings::default(),
        }
    }

    /// The same, refusing produce requests while `space` is below its floor.
    pub fn refusing_writes_below(mut self, space: DiskSpace) -> Self {
        self.space = Some(space);
        self
    }

    /// The same, administering users as `auth` says (who may, when authentication is required).
    pub fn with_auth(mut self, auth: AuthSettings) -> Self {
        self.auth = auth;
        self
    }

    /// `Ok` unless the data directory is too full to accept writes.
    pub(super) fn check_writable(&self) -> Result<(), crate::storage::StorageError> {
        self.space.as_ref().map_or(Ok(()), DiskSpace::check_writable)
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> BrokerServer<BrokerApi> {
        BrokerServer::new(self)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
    }

    /// This broker's controller replica.
    pub(super) fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The partition replicas hosted here.
    pub(super) fn partitions(&self) -> &PartitionManager {
        &self.partitions
    }

    /// The bounds of the in-sync replica set reported in metadata.
    pub(super) fn isr_bounds(&self) -> IsrBounds {
        self.isr_bounds
    }

    /// The local replica of a partition, or the refusal to answer with.
    pub(super) fn replica(&self, topic: &str, partition: u32) -> Result<Arc<PartitionReplica>, Refusal> {
        let metadata = self.controller.metadata();
        let known = metadata
            .topics
            .get(topic)
            .is_some_and(|t| (partition as usize) < t.partitions.len());
        if !known {
            return Err(Refusal::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic or partition {topic}/{partition}"),
            ));
        }
        self.partitions.get(topic, partition).ok_or_else(|| {
            Refusal::new(
                ErrorCode::NotLeader,
                format!("this broker hosts no replica of {topic}/{partition}"),
            )
        })
    }
}

#[tonic::async_trait]
impl Broker for BrokerApi {
    async fn metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        topics::check_caught_up(self)?;
        Ok(Response::new(topics::metadata(self, request.into_inner(), false)))
    }

    async fn describe_topics(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        topics::check_caught_up(self)?;
        Ok(Response::new(topics::metadata(self, request.into_inner(), true)))
    }

    async fn create_topics(&self, request: Request<CreateTopicsRequest>) -> Result<Response<TopicResults>, Status> {
        Ok(Response::new(topics::create(self, request.into_inner()).await))
    }

    async fn create_partitions(
        &self,
        request: Request<CreatePartitionsRequest>,
    ) -> Result<Response<TopicResults>, Status> {
        Ok(Response::new(topics::add_partitions(self, request.into_inner()).await))
    }

    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<TopicResults>, Status> {
        Ok(Response::new(topics::alter_config(self, request.into_inner()).await))
    }

    async fn delete_topics(&self, request: Request<DeleteTopicsRequest>) -> Result<Response<TopicResults>, Status> {
        Ok(Response::new(topics::delete(self, request.into_inner()).await))
    }

    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        Ok(Response::new(answer(
            produce::produce(self, request.into_inner()).await,
        )))
    }

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        Ok(Response::new(answer(fetch::fetch(self, request.into_inner()).await)))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        Ok(Response::new(answer(
            fetch::list_offsets(self, request.into_inner()).await,
        )))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        Ok(Response::new(answer(
            leadership::transfer(self, request.into_inner()).await,
        )))
    }

    async fn init_producer_id(
        &self,
        _request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Ok(Response::new(answer(producer_ids::init_producer_id(self).await)))
    }

    async fn reassign_partitions(
        &self,
        request: Request<ReassignPartitionsRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        Ok(Response::new(reassignments::reassign(self, request.into_inner()).await))
    }

    async fn cancel_reassignments(
        &self,
        request: Request<CancelReassignmentsRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        Ok(Response::new(reassignments::cancel(self, request.into_inner()).await))
    }

    async fn decommission_broker(
        &self,
        request: Request<BrokerRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        Ok(Response::new(
            reassignments::decommission(self, request.into_inner()).await,
        ))
    }

    async fn recommission_broker(
        &self,
        request: Request<BrokerRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        Ok(Response::new(
            reassignments::recommission(self, request.into_inner()).await,
        ))
    }

    async fn set_reassignment_throttle(
        &self,
        request: Request<SetReassignmentThrottleRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        Ok(Response::new(
            reassignments::set_throttle(self, request.into_inner()).await,
        ))
    }

    async fn set_controller_voters(
        &self,
        request: Request<ControllerVotersRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        Ok(Response::new(controller_voters::set(self, request.into_inner()).await))
    }

    async fn list_reassignments(
        &self,
        _request: Request<ListReassignmentsRequest>,
    ) -> Result<Response<ListReassignmentsResponse>, Status> {
        Ok(Response::new(reassignments::list(self)))
    }

    async fn upsert_user(&self, request: Request<UpsertUserRequest>) -> Result<Response<UserResult>, Status> {
        let authorised = self.auth.may_administer(&request);
        Ok(Response::new(
            users::upsert(self, authorised, request.into_inner()).await,
        ))
    }

    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Result<Response<UserResult>, Status> {
        let authorised = self.auth.may_administer(&request);
        Ok(Response::new(
            users::delete(self, authorised, request.into_inner()).await,
        ))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        Ok(Response::new(users::list(self, self.auth.may_administer(&request))))
    }
}
