//! Replication metrics, recorded through the `metrics` facade (served on the broker's admin
//! endpoint, `/metrics`, when it has one: `crate::metrics`): how long acks=all proposals take
//! to commit. Gauges of replica state are sampled by `crate::partition` from
//! [`ReplicaStatus`](super::ReplicaStatus) instead, so openraft stays inside this module. Also
//! why quiet groups wake ([`WakeReason`]).

use std::time::Duration;

/// An acks=all proposal was committed and applied on this leader `took` after it was proposed.
pub fn commit_latency(took: Duration) {
    metrics::histogram!("broker_raft_commit_duration_seconds").record(took);
}

/// Why a quiet group woke (its Raft timers run again), the `reason` label of
/// `broker_quiet_group_wakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeReason {
    /// A write (produce, leader transfer request) reached its leader.
    Write,
    /// An append with entries, or from another leader, reached a follower.
    Append,
    /// A candidate asked for a vote.
    Candidate,
    /// A leadership transfer.
    Transfer,
    /// The failure detector declared its leader's broker dead (or that broker restarted).
    LeaderDead,
    /// A peer voting in it came back after silence.
    PeerBack,
    /// A follower's broker restarted and a heartbeat found its replica behind, or none was
    /// acknowledged in time.
    RestartedFollower,
    /// A restarted replica heard from no leader within its patience.
    RestartPatience,
    /// Its Raft node no longer matched its quiet state: a quiet leader that stepped down (a
    /// higher vote in a follower's answer to its heartbeat), a quiet follower that lost its
    /// leader. The quiet state would otherwise keep its timers stopped for good.
    Diverged,
}

impl WakeReason {
    const ALL: [WakeReason; 9] = [
        WakeReason::Write,
        WakeReason::Append,
        WakeReason::Candidate,
        WakeReason::Transfer,
        WakeReason::LeaderDead,
        WakeReason::PeerBack,
        WakeReason::RestartedFollower,
        WakeReason::RestartPatience,
        WakeReason::Diverged,
    ];

    fn label(self) -> &'static str {
        match self {
            WakeReason::Write => "write",
            WakeReason::Append => "append",
            WakeReason::Candidate => "candidate",
            WakeReason::Transfer => "transfer",
            WakeReason::LeaderDead => "leader_dead",
            WakeReason::PeerBack => "peer_back",
            WakeReason::RestartedFollower => "restarted_follower",
            WakeReason::RestartPatience => "restart_patience",
            WakeReason::Diverged => "diverged",
        }
    }
}

/// A quiet group woke here, for `reason`.
pub fn quiet_group_woke(reason: WakeReason) {
    metrics::counter!("broker_quiet_group_wakes_total", "reason" => reason.label()).increment(1);
}

/// A quiet group's Raft node went to sleep here (its openraft instance shut down; see
/// `raft_node`).
pub fn dormant_group_slept() {
    metrics::gauge!("broker_dormant_groups").increment(1.0);
}

/// A sleeping Raft node was built again, for a request or a wake.
pub fn dormant_group_woke() {
    metrics::gauge!("broker_dormant_groups").decrement(1.0);
    metrics::counter!("broker_dormant_group_wakes_total").increment(1);
}

/// A sleeping Raft node was shut down with its replica.
pub fn dormant_group_dropped() {
    metrics::gauge!("broker_dormant_groups").decrement(1.0);
}

/// How this broker answered a (pre-)vote request, the `answer` label of
/// `broker_raft_vote_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteAnswer {
    /// openraft granted it.
    Granted,
    /// openraft rejected it (a newer vote here, a log ahead of the candidate's, a live lease).
    Rejected,
    /// This broker refused it before openraft saw it: a quiet group whose leader is alive, or a
    /// replica holding its votes after losing acknowledged entries.
    Refused,
}

impl VoteAnswer {
    const ALL: [VoteAnswer; 3] = [VoteAnswer::Granted, VoteAnswer::Rejected, VoteAnswer::Refused];

    fn label(self) -> &'static str {
        match self {
            VoteAnswer::Granted => "granted",
            VoteAnswer::Rejected => "rejected",
            VoteAnswer::Refused => "refused",
        }
    }
}

/// This broker answered a vote (`pre_vote` false) or pre-vote request.
pub fn vote_answered(pre_vote: bool, answer: VoteAnswer) {
    let kind = if pre_vote { "pre_vote" } else { "vote" };
    metrics::counter!("broker_raft_vote_requests_total", "kind" => kind, "answer" => answer.label()).increment(1);
}

/// This broker's failure detector declared peer `node` dead (`true`) or heard from it again.
pub fn peer_declared_dead(node: u64, dead: bool) {
    metrics::gauge!("broker_peer_dead", "peer" => node.to_string()).set(if dead { 1.0 } else { 0.0 });
}

/// Registers the histogram with its help text (empty until the first commit), so a scrape shows
/// it from the start. Called once by the node after it installs the recorder.
pub fn describe() {
    metrics::describe_histogram!(
        "broker_raft_commit_duration_seconds",
        metrics::Unit::Seconds,
        "Time from proposing an acks=all batch to its commit and apply on this leader."
    );
    let _ = metrics::histogram!("broker_raft_commit_duration_seconds");
    metrics::describe_counter!(
        "broker_quiet_group_wakes_total",
        metrics::Unit::Count,
        "Quiet partition groups woken on this broker (their Raft timers run again), by reason."
    );
    for reason in WakeReason::ALL {
        let _ = metrics::counter!("broker_quiet_group_wakes_total", "reason" => reason.label());
    }
    metrics::describe_gauge!(
        "broker_dormant_groups",
        metrics::Unit::Count,
        "Replicas of quiet groups on this broker whose Raft node sleeps (no openraft instance until a request or a wake)."
    );
    let _ = metrics::gauge!("broker_dormant_groups");
    metrics::describe_counter!(
        "broker_dormant_group_wakes_total",
        metrics::Unit::Count,
        "Sleeping Raft nodes built again on this broker, for a request (a write, a read, an append, a vote) or a wake."
    );
    let _ = metrics::counter!("broker_dormant_group_wakes_total");
    metrics::describe_counter!(
        "broker_raft_vote_requests_total",
        metrics::Unit::Count,
        "Vote and pre-vote requests of partition groups answered by this broker, by kind and answer."
    );
    for kind in ["pre_vote", "vote"] {
        for answer in VoteAnswer::ALL {
            let _ = metrics::counter!("broker_raft_vote_requests_total", "kind" => kind, "answer" => answer.label());
        }
    }
    metrics::describe_gauge!(
        "broker_peer_dead",
        metrics::Unit::Count,
        "1 while this broker's failure detector holds the peer dead (its pings stopped), else 0."
    );
}
