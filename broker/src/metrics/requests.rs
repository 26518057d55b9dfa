//! Request counts, latencies and requests in flight per gRPC method, measured by a tower layer
//! around the whole server, so no handler has to remember to record them:
//! `broker_requests_total{api}`, `broker_request_duration_seconds{api}` (time until the
//! response's headers, which for a streaming call is its first answer) and
//! `broker_requests_in_flight{api}`.
//!
//! The `api` label is bounded: it is the method name only for the methods of `broker.v1` and
//! `raft.v1` (listed below, checked against the `.proto` files by a test); any other path a
//! caller invents is counted as `unknown`, so a scanner cannot create series.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Every RPC this broker serves, as `/package.Service/Method` → label value.
const KNOWN_METHODS: &[(&str, &str)] = &[
    ("/broker.v1.Broker/Metadata", "Metadata"),
    ("/broker.v1.Broker/CreateTopics", "CreateTopics"),
    ("/broker.v1.Broker/DeleteTopics", "DeleteTopics"),
    ("/broker.v1.Broker/CreatePartitions", "CreatePartitions"),
    ("/broker.v1.Broker/AlterTopicConfig", "AlterTopicConfig"),
    ("/broker.v1.Broker/DescribeTopics", "DescribeTopics"),
    ("/broker.v1.Broker/Produce", "Produce"),
    ("/broker.v1.Broker/Fetch", "Fetch"),
    ("/broker.v1.Broker/ListOffsets", "ListOffsets"),
    ("/broker.v1.Broker/InitProducerId", "InitProducerId"),
    ("/broker.v1.Broker/TransferLeadership", "TransferLeadership"),
    ("/broker.v1.Broker/ReassignPartitions", "ReassignPartitions"),
    ("/broker.v1.Broker/CancelReassignments", "CancelReassignments"),
    ("/broker.v1.Broker/ListReassignments", "ListReassignments"),
    ("/broker.v1.Broker/DecommissionBroker", "DecommissionBroker"),
    ("/broker.v1.Broker/RecommissionBroker", "RecommissionBroker"),
    ("/broker.v1.Broker/SetReassignmentThrottle", "SetReassignmentThrottle"),
    ("/broker.v1.Broker/SetControllerVoters", "SetControllerVoters"),
    ("/broker.v1.Broker/UpsertUser", "UpsertUser"),
    ("/broker.v1.Broker/DeleteUser", "DeleteUser"),
    ("/broker.v1.Broker/ListUsers", "ListUsers"),
    ("/broker.v1.Broker/AddAcls", "AddAcls"),
    ("/broker.v1.Broker/RemoveAcls", "RemoveAcls"),
    ("/broker.v1.Broker/ListAcls", "ListAcls"),
    ("/broker.v1.Auth/Authenticate", "Authenticate"),
    ("/broker.v1.Groups/FindCoordinator", "FindCoordinator"),
    ("/broker.v1.Groups/ConsumerGroupHeartbeat", "ConsumerGroupHeartbeat"),
    ("/broker.v1.Groups/OffsetCommit", "OffsetCommit"),
    ("/broker.v1.Groups/OffsetFetch", "OffsetFetch"),
    ("/broker.v1.Groups/ListGroups", "ListGroups"),
    ("/broker.v1.Groups/DescribeGroup", "DescribeGroup"),
    ("/broker.v1.Groups/DeleteGroup", "DeleteGroup"),
    ("/raft.v1.Raft/Append", "raft.Append"),
    ("/raft.v1.Raft/AppendStream", "raft.AppendStream"),
    ("/raft.v1.Raft/AppendBatch", "raft.AppendBatch"),
    ("/raft.v1.Raft/Vote", "raft.Vote"),
    ("/raft.v1.Raft/PreVote", "raft.PreVote"),
    ("/raft.v1.Raft/Ping", "raft.Ping"),
    ("/raft.v1.Raft/Quiesce", "raft.Quiesce"),
    ("/raft.v1.Raft/InstallSnapshot", "raft.InstallSnapshot"),
    ("/raft.v1.Raft/TransferLeader", "raft.TransferLeader"),
    ("/cluster.v1.Cluster/Propose", "cluster.Propose"),
];

/// The `api` label of a request path.
pub fn api_label(path: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|(known, _)| *known == path)
        .map_or("unknown", |(_, label)| label)
}

/// Registers the request metrics of every known method with their help texts, so each
/// method's series exist (at zero) before its first request.
pub fn describe() {
    metrics::describe_counter!(
        "broker_requests_total",
        metrics::Unit::Count,
        "gRPC requests answered, per method."
    );
    metrics::describe_histogram!(
        "broker_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to its answer's headers, per method."
    );
    metrics::describe_gauge!(
        "broker_requests_in_flight",
        metrics::Unit::Count,
        "Requests being answered, per method (long-poll fetches included)."
    );
    for (_, api) in KNOWN_METHODS {
        metrics::gauge!("broker_requests_in_flight", "api" => *api).set(0.0);
        metrics::counter!("broker_requests_total", "api" => *api).absolute(0);
        let _ = metrics::histogram!("broker_request_duration_seconds", "api" => *api);
    }
}

/// Requests being answered right now, whatever the metrics recorder: a stopping broker drains
/// until none is left (connections that merely stay open do not hold it up).
#[derive(Clone, Debug, Default)]
pub struct RequestsInFlight(Arc<AtomicUsize>);

impl RequestsInFlight {
    /// How many requests are being answered.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// The tower layer that wraps the gRPC server.
#[derive(Clone, Debug, Default)]
pub struct RequestMetricsLayer {
    in_flight: RequestsInFlight,
}

impl RequestMetricsLayer {
    /// A layer that also counts its requests in flight in `in_flight`.
    pub fn counting(in_flight: RequestsInFlight) -> Self {
        RequestMetricsLayer { in_flight }
    }
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> RequestMetrics<S> {
        RequestMetrics {
            inner,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// The service the layer makes: counts and times each request, then answers as `inner` does.
#[derive(Clone, Debug)]
pub struct RequestMetrics<S> {
    inner: S,
    in_flight: RequestsInFlight,
}

impl<S, Body> tower::Service<http::Request<Body>> for RequestMetrics<S>
where
    S: tower::Service<http::Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let api = api_label(request.uri().path());
        let started = Instant::now();
        let in_flight = InFlight::begin(api, self.in_flight.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            metrics::counter!("broker_requests_total", "api" => api).increment(1);
            metrics::histogram!("broker_request_duration_seconds", "api" => api).record(started.elapsed());
            response
        })
    }
}

/// One request being answered, counted in `broker_requests_in_flight{api}` until it is
/// answered or its caller goes away (the guard is dropped either way).
struct InFlight {
    api: &'static str,
    count: RequestsInFlight,
}

impl InFlight {
    fn begin(api: &'static str, count: RequestsInFlight) -> InFlight {
        metrics::gauge!("broker_requests_in_flight", "api" => api).increment(1.0);
        count.0.fetch_add(1, Ordering::AcqRel);
        InFlight { api, count }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("broker_requests_in_flight", "api" => self.api).decrement(1.0);
        self.count.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `rpc` of the served `.proto` files has a label, so none is counted as `unknown`.
    #[test]
    fn every_rpc_of_the_protos_is_known() {
        for (package, text) in [
            (
                "/broker.v1.Broker/",
                include_str!("../../../proto/proto/broker/v1/broker.proto"),
            ),
            (
                "/broker.v1.Groups/",
                include_str!("../../../proto/proto/broker/v1/groups.proto"),
            ),
            (
                "/raft.v1.Raft/",
                include_str!("../../../proto/proto/raft/v1/raft.proto"),
            ),
            (
                "/cluster.v1.Cluster/",
                include_str!("../../../proto/proto/cluster/v1/cluster.proto"),
            ),
        ] {
            let rpcs: Vec<&str> = text
                .lines()
                .filter_map(|line| line.trim().strip_prefix("rpc "))
                .map(|rest| rest.split('(').next().unwrap().trim())
                .collect();
            assert!(!rpcs.is_empty());
            for rpc in rpcs {
                let path = format!("{package}{rpc}");
                assert_ne!(api_label(&path), "unknown", "{path} has no metrics label");
            }
        }
        assert_eq!(api_label("/broker.v1.Broker/NoSuchThing"), "unknown");
        assert_eq!(api_label("/etc/passwd"), "unknown");
    }
}
