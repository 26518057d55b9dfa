//! Quiescence: idle partition groups stop their Raft timers, and one failure detector per peer
//! broker stands in for their heartbeats.
//!
//! A Raft group ticks — election timer on followers, heartbeats from the leader — whether or not
//! anybody writes; with thousands of partitions that ticking is nearly all of an idle broker's
//! CPU. A leader whose group has been idle for a while, and whose followers have applied every
//! entry it has, asks them to quiesce (the `Quiesce` RPC, batched per peer); once all of them
//! agreed — all but those on brokers the failure detector holds dead, if the rest are a
//! majority with it — it stops its own timers too. A quiet group costs nothing until:
//!
//! - **a client writes to it** (produce, leader transfer): the leader wakes and heartbeats at
//!   once; the write waits for a quorum to answer that heartbeat (the lease), so a deposed
//!   leader cannot take it. An append that carries entries wakes each follower it reaches. A
//!   read (fetch, ListOffsets) renews the lease with one heartbeat round and leaves the group
//!   quiet.
//! - **its leader's broker dies**: every broker pings each peer ([`PeerLiveness`], the `Ping`
//!   RPC). A follower whose leader's pings have not reached it for the dead-after time acts for
//!   the groups that broker led: one follower per group — the next live voter after the leader
//!   — campaigns (with Pre-Vote; paced, so many groups at once do not swamp the brokers), the
//!   others await the new leader with their timers stopped, as restarted replicas do.
//! - **a peer restarts or comes back**: a new incarnation in its pings, or pings after silence,
//!   wakes the groups led here that it belongs to (so it hears from their leaders), and a
//!   restart also counts as the death of the leader it was.
//! - **a replica restarts**: a replica whose log holds a committed vote starts quiet, awaiting
//!   a leader — reached by it once its broker has opened all its replicas (its pings say
//!   `opening` until then) — instead of running its election timer from zero beside thousands
//!   of other replicas doing the same; so does one that led before (after a crash its peers
//!   have elected another leader). A heartbeat finding it in step settles it quiet, one
//!   finding it behind wakes it; appends with entries leave it awaiting, following their
//!   leader. Its leader's death, a candidate while that leader looks dead, or a few seconds
//!   with no word at all wake it too.
//! - **somebody campaigns**: a vote request for a quiet group whose leader is alive is refused
//!   for a while (and wakes the group if it is led here, so the candidate hears from its
//!   leader); if the leader looks dead the group wakes and votes normally.
//!
//! Safety does not depend on any of this: quiescence only stops timers, every vote and append
//! still goes through openraft's rules. What it trades is how a quiet group notices a dead
//! leader — per broker instead of per group — and one round trip on the first request after
//! idling.

//!
//! Parts: [`rules`] (the rules as pure functions: a follower agrees to go quiet, a quiet
//! replica answers a candidate — the refusal window —, which follower campaigns first),
//! [`liveness`] (the per-peer failure detector and its ping loops), [`groups`] ([`Quiescence`]:
//! which groups are quiet on this broker, and every way one wakes), [`leader`] (the leader-side
//! scan that quiesces idle groups).
//!
//! Dependencies: this module owns its state and reaches the Raft nodes through
//! [`HostedGroups`](super::raft_node::HostedGroups); the Raft router (`raft_service`) and the
//! replicas call into it, never the other way round.

pub mod groups;
pub mod leader;
pub mod liveness;
pub mod rules;

pub use groups::Quiescence;
pub(crate) use groups::{ResumeTimers, WriteInFlight};
pub use leader::{spawn, QuiesceConfig};
pub use liveness::PeerLiveness;
pub(crate) use liveness::{Contact, PeerPhase};

use super::raft_node::PartitionRaftNode;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A quiesced group as one replica sees it.
#[derive(Debug, Clone)]
pub(crate) struct Quiet {
    /// The leader the group was quiesced under.
    pub leader: u64,
    /// Whether this replica is that leader.
    pub leading: bool,
    /// The leader's vote as appends carry it (JSON): an append with another vote comes from a
    /// newer leader and wakes the group.
    pub vote_json: Bytes,
    /// The group's voters.
    pub voters: Vec<u64>,
    /// This broker's node id (whether it campaigns first when the leader dies is decided then:
    /// [`rules::successor`]).
    pub me: u64,
    /// When this follower first refused a candidate because the leader looked alive, with no
    /// append from the leader since: refusals stop a while after (see [`rules::REFUSAL_LIMIT`]).
    pub refusing_since: Option<Instant>,
    /// This replica awaits a leader with its timers stopped — it restarted and has heard from
    /// no leader since (`leader` is the one its log last voted for), or its leader died and
    /// another voter campaigns — until a leader's heartbeat settles or wakes it (see
    /// [`Quiescence::await_leader`]).
    pub awaiting_leader: bool,
}

/// Has `raft` (a leader) heartbeat now rather than at its next tick — which a quiet group never
/// has: a woken leader, or a quiet one renewing its lease for a read.
pub(crate) fn heartbeat_now(raft: &PartitionRaftNode) {
    let raft = raft.clone();
    tokio::spawn(async move {
        if let Ok(raft) = raft.live().await {
            let _ = raft.trigger().heartbeat().await;
        }
    });
}

/// A fresh incarnation number for a broker process (or an in-process test node).
pub(crate) fn new_incarnation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}
