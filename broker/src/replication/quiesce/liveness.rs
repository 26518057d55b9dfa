//! The failure detector of quiescence: every broker pings each peer every [`PING_INTERVAL`], and
//! [`PeerLiveness`] keeps when each peer last pinged us and last answered, with its
//! incarnation (a restart shows as a new one).

use super::groups::Quiescence;
use crate::replication::PeerChannels;
use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::PingRequest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often a broker pings each peer.
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
/// A leader heard from this recently is alive for the vote rule: a quiet group refuses
/// candidates while its leader is. Shorter than the dead-after time, so that once a follower
/// has declared a leader dead (and campaigns), the other followers no longer refuse it.
pub const ALIVE_WINDOW: Duration = Duration::from_millis(250);
/// Whom to wake after a peer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// First heard of, or a new incarnation: it restarted (or this broker did).
    Restarted,
    /// Heard from again after it was declared dead.
    BackAlive,
}

/// Which way a sign of life came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contact {
    /// The peer pinged this broker: its links to us — the way its appends come — work.
    PingedUs,
    /// The peer answered this broker's ping: our links to it work.
    Answered,
}

#[derive(Debug)]
struct PeerState {
    known_since: Instant,
    pinged_us_at: Option<Instant>,
    answered_at: Option<Instant>,
    incarnation: u64,
    /// Declared dead: it has not pinged us for the dead-after time.
    dead: bool,
}

/// When each peer broker last pinged this one and last answered its pings, and its
/// incarnation. Shared by the ping loops, the `Ping` handler, the vote rule and the ISR.
///
/// Whether a peer *as a leader* is alive is judged by its pings reaching us only: they travel
/// its connection to us, like its appends. A peer we can reach but which cannot reach us is
/// dead as a leader here — so a one-way cut from a leader to a follower lets that follower
/// take part in electing another leader, as its election timer would have.
#[derive(Clone, Default)]
pub struct PeerLiveness {
    peers: Arc<Mutex<HashMap<u64, PeerState>>>,
}

impl PeerLiveness {
    /// Records a sign of life from `node` (running as `incarnation`); returns what changed.
    pub(crate) fn heard(&self, node: u64, incarnation: u64, contact: Contact) -> Option<PeerEvent> {
        let mut peers = self.peers.lock().expect("peer liveness");
        let now = Instant::now();
        let first = !peers.contains_key(&node);
        let state = peers.entry(node).or_insert(PeerState {
            known_since: now,
            pinged_us_at: None,
            answered_at: None,
            incarnation,
            dead: false,
        });
        match contact {
            Contact::PingedUs => state.pinged_us_at = Some(now),
            Contact::Answered => state.answered_at = Some(now),
        }
        let event = if first || state.incarnation != incarnation {
            Some(PeerEvent::Restarted)
        } else if state.dead && contact == Contact::PingedUs {
            Some(PeerEvent::BackAlive)
        } else {
            None
        };
        state.incarnation = incarnation;
        if contact == Contact::PingedUs || event == Some(PeerEvent::Restarted) {
            state.dead = false;
        }
        event
    }

    /// How long ago `node` last answered this broker's ping, if ever: how fresh our links to it
    /// are (the ISR of a quiet leader).
    pub fn since_answered(&self, node: u64) -> Option<Duration> {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node)?.answered_at.map(|at| at.elapsed())
    }

    /// Whether `node` pinged this broker within `window`: alive as a leader of ours.
    pub fn pinged_us_within(&self, node: u64, window: Duration) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers
            .get(&node)
            .and_then(|state| state.pinged_us_at)
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// Declares `node` dead if it has not pinged us for `dead_after` (counting from when it
    /// became known if it never did); true only on the transition.
    fn declare_dead_if_silent(&self, node: u64, dead_after: Duration) -> bool {
        let mut peers = self.peers.lock().expect("peer liveness");
        match peers.get_mut(&node) {
            Some(state) if !state.dead && state.pinged_us_at.unwrap_or(state.known_since).elapsed() >= dead_after => {
                state.dead = true;
                true
            }
            _ => false,
        }
    }
}

/// Pings `peer` every [`PING_INTERVAL`] for the life of the task; declares it dead (and wakes
/// the quiet groups it led) once its pings stop reaching us.
pub(super) async fn ping_peer(
    groups: Quiescence,
    channels: PeerChannels,
    me: u64,
    peer: u64,
    address: String,
    dead_after: Duration,
) {
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Ok(channel) = channels.channel(&address) {
            let mut request = tonic::Request::new(PingRequest {
                node: me,
                incarnation: groups.incarnation(),
            });
            request.set_timeout(dead_after);
            if let Ok(answer) = RaftClient::new(channel).ping(request).await {
                let incarnation = answer.into_inner().incarnation;
                if let Some(event) = groups.liveness().heard(peer, incarnation, Contact::Answered) {
                    groups.on_peer_event(peer, event);
                }
            }
        }
        if groups.liveness().declare_dead_if_silent(peer, dead_after) {
            tracing::info!(peer, "peer broker silent: waking the quiet groups it led");
            groups.on_leader_dead(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_incarnation_or_a_return_from_silence_is_reported_once() {
        let liveness = PeerLiveness::default();
        assert_eq!(
            liveness.heard(2, 7, Contact::Answered),
            Some(PeerEvent::Restarted),
            "first heard of"
        );
        assert_eq!(liveness.heard(2, 7, Contact::PingedUs), None);
        assert!(!liveness.declare_dead_if_silent(2, Duration::from_secs(60)));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO));
        assert!(
            !liveness.declare_dead_if_silent(2, Duration::ZERO),
            "only the transition"
        );
        assert_eq!(
            liveness.heard(2, 7, Contact::Answered),
            None,
            "answers do not revive a leader whose pings do not reach us"
        );
        assert_eq!(liveness.heard(2, 7, Contact::PingedUs), Some(PeerEvent::BackAlive));
        assert_eq!(liveness.heard(2, 8, Contact::Answered), Some(PeerEvent::Restarted));
        assert!(liveness.pinged_us_within(2, Duration::from_secs(1)));
        assert!(liveness.since_answered(2).is_some());
        assert!(!liveness.pinged_us_within(3, Duration::from_secs(1)), "never heard of");
    }

    #[tokio::test]
    async fn a_peer_that_only_answers_is_dead_as_a_leader() {
        let liveness = PeerLiveness::default();
        liveness.heard(2, 7, Contact::Answered);
        assert!(!liveness.pinged_us_within(2, Duration::from_secs(1)));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO));
    }
}
