//! The metadata and topic RPCs: Metadata and DescribeTopics (brokers, controller, and per
//! partition its replicas and — from the local replica's status — leader and ISR), CreateTopics
//! CreatePartitions, AlterTopicConfig and DeleteTopics (commands submitted to the controller).

use super::acls::check;
use super::answer::{answer, Refusal};
use super::service::BrokerApi;
use crate::controller::metadata::{MetadataCommand, TopicMetadata};
use crate::security::access::Access;
use crate::security::acl::{Operation, ResourceType};
use crate::storage::settings::{log_config_from_map, log_config_to_map};
use proto::v1::{
    AlterTopicConfigRequest, BrokerDescription, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    ErrorCode, MetadataRequest, MetadataResponse, PartitionDescription, TopicDescription, TopicResult, TopicResults,
};

/// The cluster as this broker knows it, for the requested topics (all when none are named);
/// `detailed` (DescribeTopics) adds offsets, quiet state and configs.
pub(super) fn metadata(api: &BrokerApi, access: &Access, request: MetadataRequest, detailed: bool) -> MetadataResponse {
    let metadata = api.controller().metadata();
    let may_describe = |name: &str| access.may(ResourceType::Topic, name, Operation::Describe);
    let names: Vec<String> = if request.topics.is_empty() {
        // Only the topics the caller may describe: the others are not mentioned at all.
        metadata
            .topics
            .keys()
            .filter(|name| may_describe(name))
            .cloned()
            .collect()
    } else {
        request.topics
    };
    let topics = names
        .into_iter()
        .map(|name| match metadata.topics.get(&name) {
            // Named but not describable: the same answer whether or not it exists.
            _ if !may_describe(&name) => TopicDescription {
                name: name.clone(),
                error: ErrorCode::TopicAuthorizationFailed as i32,
                message: access.denial(ResourceType::Topic, &name, Operation::Describe),
                ..TopicDescription::default()
            },
            Some(topic) => describe_topic(api, topic, detailed),
            None => TopicDescription {
                name: name.clone(),
                error: ErrorCode::UnknownTopicOrPartition as i32,
                message: format!("unknown topic {name:?}"),
                ..TopicDescription::default()
            },
        })
        .collect();
    MetadataResponse {
        brokers: metadata
            .brokers
            .values()
            .map(|b| BrokerDescription {
                id: b.id,
                // Empty until the broker has registered where clients reach it.
                address: b.client_address.clone().unwrap_or_default(),
                internal_address: b.address.clone(),
                rack: b.rack.clone(),
                decommissioning: metadata.decommissioning.contains(&b.id),
            })
            .collect(),
        controller: api.controller().leader(),
        topics,
        controller_voters: api.controller().voters(),
    }
}

/// Refuses metadata requests (`UNAVAILABLE`, so clients ask another broker) until this
/// broker's own metadata lists it: a broker that has just joined, or lost its metadata, would
/// otherwise describe a cluster with no brokers and no topics.
pub(super) fn check_caught_up(api: &BrokerApi) -> Result<(), tonic::Status> {
    let controller = api.controller();
    if controller.metadata().brokers.contains_key(&controller.node_id()) {
        Ok(())
    } else {
        Err(tonic::Status::unavailable(format!(
            "broker {} has not caught up with the cluster metadata yet",
            controller.node_id()
        )))
    }
}

fn describe_topic(api: &BrokerApi, topic: &TopicMetadata, detailed: bool) -> TopicDescription {
    let partitions = topic
        .partitions
        .iter()
        .map(|assignment| {
            let mut description = PartitionDescription {
                partition: assignment.partition,
                replicas: assignment.replicas.clone(),
                ..PartitionDescription::default()
            };
            if let Some(replica) = api.partitions().get(&topic.name, assignment.partition) {
                let status = replica.status(api.isr_bounds());
                description.leader = status.leader;
                description.isr = status.isr;
                if detailed {
                    description.high_watermark = Some(status.high_watermark.0);
                    description.log_start_offset = Some(status.log_start_offset.0);
                    description.log_size_bytes = Some(status.log_size_bytes);
                    description.storage_failed = status.storage_failed;
                    description.caught_up = status.caught_up;
                    description.held_from_elections = status.held_from_elections;
                    description.quiescent = status.quiescent;
                }
            }
            description
        })
        .collect();
    TopicDescription {
        name: topic.name.clone(),
        error: ErrorCode::None as i32,
        message: String::new(),
        replication_factor: topic.replication_factor,
        partitions,
        configs: if detailed {
            log_config_to_map(&topic.config)
        } else {
            Default::default()
        },
    }
}

/// Creates each topic, one controller command each.
pub(super) async fn create(api: &BrokerApi, access: &Access, request: CreateTopicsRequest) -> TopicResults {
    let mut results = Vec::new();
    for spec in request.topics {
        let command = check(access, ResourceType::Topic, &spec.name, Operation::Create)
            .and_then(|()| {
                log_config_from_map(&spec.configs).map_err(|message| Refusal::new(ErrorCode::InvalidConfig, message))
            })
            .map(|config| MetadataCommand::CreateTopic {
                name: spec.name.clone(),
                partitions: spec.partitions,
                replication_factor: spec.replication_factor,
                config,
            });
        results.push(topic_command(api, spec.name, command).await);
    }
    TopicResults { results }
}

/// Grows a topic's partition count (one controller command).
pub(super) async fn add_partitions(api: &BrokerApi, access: &Access, request: CreatePartitionsRequest) -> TopicResults {
    let command = check(access, ResourceType::Topic, &request.topic, Operation::AlterConfigs).map(|()| {
        MetadataCommand::AddPartitions {
            name: request.topic.clone(),
            total: request.total,
        }
    });
    TopicResults {
        results: vec![topic_command(api, request.topic, command).await],
    }
}

/// Changes a topic's configs: the controller merges the changes into the topic's settings as
/// it applies the command, so a change never undoes one committed before it.
pub(super) async fn alter_config(api: &BrokerApi, access: &Access, request: AlterTopicConfigRequest) -> TopicResults {
    let command = check(access, ResourceType::Topic, &request.topic, Operation::AlterConfigs).map(|()| {
        MetadataCommand::AlterTopicConfig {
            name: request.topic.clone(),
            set: request.set.into_iter().collect(),
            reset: request.reset,
        }
    });
    TopicResults {
        results: vec![topic_command(api, request.topic, command).await],
    }
}

/// Deletes each topic, one controller command each.
pub(super) async fn delete(api: &BrokerApi, access: &Access, request: DeleteTopicsRequest) -> TopicResults {
    let mut results = Vec::new();
    for name in request.topics {
        let command = check(access, ResourceType::Topic, &name, Operation::Delete)
            .map(|()| MetadataCommand::DeleteTopic { name: name.clone() });
        results.push(topic_command(api, name, command).await);
    }
    TopicResults { results }
}

/// Whether `topic` is internal to the brokers (`__consumer_offsets`).
pub(super) fn is_internal(topic: &str) -> bool {
    topic == proto::OFFSETS_TOPIC
}

/// The refusal of a client's write, create, change or delete of an internal topic.
pub(super) fn internal_topic_refusal(topic: &str) -> Refusal {
    Refusal::new(
        ErrorCode::TopicIsInternal,
        format!("{topic} is internal to the brokers: clients may read it, not write, create, change or delete it"),
    )
}

/// Submits `command` for topic `name` (unless converting the request already failed).
async fn topic_command(api: &BrokerApi, name: String, command: Result<MetadataCommand, Refusal>) -> TopicResult {
    // The brokers create and own the internal topics; clients only read them.
    let command = command.and_then(|command| match is_internal(&name) {
        true => Err(internal_topic_refusal(&name)),
        false => Ok(command),
    });
    let outcome = match command {
        Ok(command) => api
            .controller()
            .submit(command)
            .await
            .map_err(|error| Refusal::controller(&error, api.controller().leader())),
        Err(refusal) => Err(refusal),
    };
    TopicResult {
        name,
        ..answer(outcome.map(|()| TopicResult::default()))
    }
}
