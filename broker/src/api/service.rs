//! The `broker.v1` gRPC service: [`BrokerApi`] implements the tonic trait, and each method hands
//! its request to its RPC family's module in one line. What the families share lives here: the
//! subsystems they call and the lookup of the local replica a partition request is for.

use super::answer::{answer, Refusal};
use super::{acls, controller_voters, fetch, leadership, produce, producer_ids, reassignments, topics, users};
use crate::controller::Controller;
use crate::partition::PartitionManager;
use crate::replication::{IsrBounds, PartitionReplica};
use crate::security::access::Access;
use crate::security::acl::{Operation, ResourceType};
use crate::security::identity::AuthSettings;
use crate::storage::DiskSpace;
use proto::v1::broker_server::{Broker, BrokerServer};
use proto::v1::{
    AclsRequest, AlterTopicConfigRequest, BrokerRequest, CancelReassignmentsRequest, ControllerVotersRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DeleteUserRequest, ErrorCode, FetchRequest,
    FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ListAclsRequest, ListAclsResponse,
    ListOffsetsRequest, ListOffsetsResponse, ListReassignmentsRequest, ListReassignmentsResponse, ListUsersRequest,
    ListUsersResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, ReassignPartitionsRequest,
    ReassignmentResult, SetReassignmentThrottleRequest, TopicResults, TransferLeadershipRequest,
    TransferLeadershipResponse, UpsertUserRequest, UserResult,
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

    /// What the caller of `request` may do.
    fn access<T>(&self, request: &Request<T>) -> Access {
        Access::of(request, &self.auth, self.controller.metadata())
    }

    /// The refusal of a cluster operation `request`'s caller may not do, if so.
    fn cluster_refusal<T>(&self, request: &Request<T>, operation: Operation) -> Option<ReassignmentResult> {
        let refusal = acls::check(&self.access(request), ResourceType::Cluster, "cluster", operation).err()?;
        Some(ReassignmentResult {
            error: refusal.code as i32,
            message: refusal.message,
            controller: None,
        })
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
        let access = self.access(&request);
        Ok(Response::new(topics::metadata(
            self,
            &access,
            request.into_inner(),
            false,
        )))
    }

    async fn describe_topics(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        topics::check_caught_up(self)?;
        let access = self.access(&request);
        Ok(Response::new(topics::metadata(
            self,
            &access,
            request.into_inner(),
            true,
        )))
    }

    async fn create_topics(&self, request: Request<CreateTopicsRequest>) -> Result<Response<TopicResults>, Status> {
        let access = self.access(&request);
        Ok(Response::new(topics::create(self, &access, request.into_inner()).await))
    }

    async fn create_partitions(
        &self,
        request: Request<CreatePartitionsRequest>,
    ) -> Result<Response<TopicResults>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            topics::add_partitions(self, &access, request.into_inner()).await,
        ))
    }

    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<TopicResults>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            topics::alter_config(self, &access, request.into_inner()).await,
        ))
    }

    async fn delete_topics(&self, request: Request<DeleteTopicsRequest>) -> Result<Response<TopicResults>, Status> {
        let access = self.access(&request);
        Ok(Response::new(topics::delete(self, &access, request.into_inner()).await))
    }

    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        if let Err(refusal) = acls::check(&access, ResourceType::Topic, &request.topic, Operation::Write) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        Ok(Response::new(answer(produce::produce(self, request).await)))
    }

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        if let Err(refusal) = acls::check(&access, ResourceType::Topic, &request.topic, Operation::Read) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        Ok(Response::new(answer(fetch::fetch(self, request).await)))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        if let Err(refusal) = acls::check(&access, ResourceType::Topic, &request.topic, Operation::Describe) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        Ok(Response::new(answer(fetch::list_offsets(self, request).await)))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let access = self.access(&request);
        if let Err(refusal) = acls::check(&access, ResourceType::Cluster, "cluster", Operation::Alter) {
            return Ok(Response::new(answer(Err(refusal))));
        }
        Ok(Response::new(answer(
            leadership::transfer(self, request.into_inner()).await,
        )))
    }

    async fn init_producer_id(
        &self,
        request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let access = self.access(&request);
        if !access.may_write_somewhere() {
            let refusal = super::answer::Refusal::new(
                ErrorCode::ClusterAuthorizationFailed,
                format!(
                    "{}: a producer id is for writing, and no ACL lets this caller write to any topic",
                    access.denial(ResourceType::Cluster, "cluster", Operation::Write)
                ),
            );
            return Ok(Response::new(answer(Err(refusal))));
        }
        Ok(Response::new(answer(producer_ids::init_producer_id(self).await)))
    }

    async fn reassign_partitions(
        &self,
        request: Request<ReassignPartitionsRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        if let Some(refused) = self.cluster_refusal(&request, Operation::Alter) {
            return Ok(Response::new(refused));
        }
        Ok(Response::new(reassignments::reassign(self, request.into_inner()).await))
    }

    async fn cancel_reassignments(
        &self,
        request: Request<CancelReassignmentsRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        if let Some(refused) = self.cluster_refusal(&request, Operation::Alter) {
            return Ok(Response::new(refused));
        }
        Ok(Response::new(reassignments::cancel(self, request.into_inner()).await))
    }

    async fn decommission_broker(
        &self,
        request: Request<BrokerRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        if let Some(refused) = self.cluster_refusal(&request, Operation::Alter) {
            return Ok(Response::new(refused));
        }
        Ok(Response::new(
            reassignments::decommission(self, request.into_inner()).await,
        ))
    }

    async fn recommission_broker(
        &self,
        request: Request<BrokerRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        if let Some(refused) = self.cluster_refusal(&request, Operation::Alter) {
            return Ok(Response::new(refused));
        }
        Ok(Response::new(
            reassignments::recommission(self, request.into_inner()).await,
        ))
    }

    async fn set_reassignment_throttle(
        &self,
        request: Request<SetReassignmentThrottleRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        if let Some(refused) = self.cluster_refusal(&request, Operation::Alter) {
            return Ok(Response::new(refused));
        }
        Ok(Response::new(
            reassignments::set_throttle(self, request.into_inner()).await,
        ))
    }

    async fn set_controller_voters(
        &self,
        request: Request<ControllerVotersRequest>,
    ) -> Result<Response<ReassignmentResult>, Status> {
        if let Some(refused) = self.cluster_refusal(&request, Operation::Alter) {
            return Ok(Response::new(refused));
        }
        Ok(Response::new(controller_voters::set(self, request.into_inner()).await))
    }

    async fn list_reassignments(
        &self,
        request: Request<ListReassignmentsRequest>,
    ) -> Result<Response<ListReassignmentsResponse>, Status> {
        // The response has no error field: a refusal is the call's status.
        if let Err(refusal) = acls::check(
            &self.access(&request),
            ResourceType::Cluster,
            "cluster",
            Operation::Describe,
        ) {
            return Err(Status::permission_denied(refusal.message));
        }
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

    async fn add_acls(&self, request: Request<AclsRequest>) -> Result<Response<UserResult>, Status> {
        let authorised = self.auth.may_administer(&request);
        Ok(Response::new(
            acls::change(self, authorised, request.into_inner(), true).await,
        ))
    }

    async fn remove_acls(&self, request: Request<AclsRequest>) -> Result<Response<UserResult>, Status> {
        let authorised = self.auth.may_administer(&request);
        Ok(Response::new(
            acls::change(self, authorised, request.into_inner(), false).await,
        ))
    }

    async fn list_acls(&self, request: Request<ListAclsRequest>) -> Result<Response<ListAclsResponse>, Status> {
        let authorised = self.auth.may_administer(&request);
        Ok(Response::new(acls::list(self, authorised, request.into_inner())))
    }
}
