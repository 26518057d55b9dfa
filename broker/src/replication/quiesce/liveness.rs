//! The failure detector of quiescence: every broker pings each peer every [`PING_INTERVAL`], and
//! [`PeerLiveness`] keeps when each peer last pinged us and last answered, with its
//! incarnation (a restart shows as a new one).

use super::groups::{Quiescence, MAX_OPENING};
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
/// How long a peer declared dead must keep pinging us before it counts as back: pings it sent
/// before it died can reach the handler seconds late on a busy broker — all at once — and one
/// of them revived a killed broker, waking every group led here that it votes in (issue 16's
/// crash-restart storm at 10,000 partitions).
pub const REVIVAL_SPAN: Duration = Duration::from_millis(250);
/// A peer is declared dead only once its silence exceeds this many times its recent ping gaps
/// (when that is longer than the dead-after time).
const GAP_TOLERANCE: u32 = 3;
/// The longest silence tolerated however slow the pings have been: detection slows under
/// load, but stays bounded.
const MAX_SILENCE: Duration = Duration::from_secs(5);

/// How long a peer may stay silent before it is declared dead: the dead-after time, stretched
/// when its pings have lately been arriving slowly (`ping_gap`) and by how late this broker's
/// own ping loop runs (`own_lag`), at most [`MAX_SILENCE`]. An idle cluster detects a death in
/// the dead-after time; a busy one — thousands of groups electing at once after a broker died,
/// both sides' runtimes queueing pings behind Raft work — must not read its own slowness as more
/// deaths: each wakes every group the "dead" peer led, which made the brokers busier still
/// (issue 16's restart storm).
pub(crate) fn silence_allowed(dead_after: Duration, ping_gap: Duration, own_lag: Duration) -> Duration {
    (dead_after.max(ping_gap * GAP_TOLERANCE) + own_lag).min(MAX_SILENCE.max(dead_after))
}

/// A decaying maximum: the new sample, or the old value less an eighth.
pub(crate) fn decaying_max(old: Duration, sample: Duration) -> Duration {
    sample.max(old - old / 8)
}

/// A peer whose pings have not reached this broker since it started is declared dead after
/// this long (or the dead-after time, if longer): after a restart the peers' connections to it
/// take a moment to come back, and declaring them dead too soon would wake every replica
/// awaiting them as its leader.
pub const FIRST_CONTACT_GRACE: Duration = Duration::from_secs(3);
/// Whom to wake after a peer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// First heard of since this broker started.
    FirstHeard,
    /// A new incarnation: it restarted.
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
    /// `None` until first heard from.
    incarnation: Option<u64>,
    /// Declared dead: it has not pinged us for the dead-after time.
    dead: bool,
    /// The longest recent gap between two of its pings reaching us (a decaying maximum): how
    /// late its pings come when it, the link or this broker is busy.
    ping_gap: Duration,
    /// Said in its last ping or answer that it is in its controlled shutdown.
    stopping: bool,
    /// Said in its last ping or answer that it is still opening its replicas after its start.
    opening: bool,
    /// What it said in the first ping or answer this broker had from it: whether it was
    /// opening its replicas then — starting with this broker — or had been up before.
    opening_when_first_heard: Option<bool>,
    /// While declared dead: when the first ping since reached us (see [`REVIVAL_SPAN`]).
    pinging_again_since: Option<Instant>,
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
    /// Notified whenever a peer is first heard from, stops opening its replicas or is declared
    /// dead (see [`PeerLiveness::ready_or_gone`], [`PeerLiveness::all_heard_or_dead`]).
    readiness: Arc<tokio::sync::Notify>,
}

/// What a peer said of itself in its last ping or answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerPhase {
    /// In its controlled shutdown.
    pub stopping: bool,
    /// Still opening the replicas it hosts, after its start.
    pub opening: bool,
}

impl PeerLiveness {
    /// Records a sign of life from `node` (running as `incarnation`); returns what changed.
    pub(crate) fn heard(&self, node: u64, incarnation: u64, contact: Contact) -> Option<PeerEvent> {
        self.heard_at(node, incarnation, contact, Instant::now())
    }

    /// [`heard`](Self::heard) at `now`.
    fn heard_at(&self, node: u64, incarnation: u64, contact: Contact, now: Instant) -> Option<PeerEvent> {
        let mut peers = self.peers.lock().expect("peer liveness");
        let state = peers.entry(node).or_insert_with(|| PeerState::unheard(now));
        let previous_ping = state.pinged_us_at;
        match contact {
            Contact::PingedUs => {
                if let Some(previous) = state.pinged_us_at {
                    state.ping_gap = decaying_max(state.ping_gap, now.saturating_duration_since(previous));
                }
                state.pinged_us_at = Some(now);
            }
            Contact::Answered => state.answered_at = Some(now),
        }
        let event = match state.incarnation {
            None => Some(PeerEvent::FirstHeard),
            Some(known) if known != incarnation => Some(PeerEvent::Restarted),
            Some(_) if state.dead && contact == Contact::PingedUs => {
                // Back only once its pings span the revival time without a gap: a burst of
                // stale ones, handled late, does not — nor does one more stale ping later.
                let gap = previous_ping.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
                if gap > REVIVAL_SPAN {
                    state.pinging_again_since = Some(now);
                }
                let since = *state.pinging_again_since.get_or_insert(now);
                if now.saturating_duration_since(since) < REVIVAL_SPAN {
                    state.incarnation = Some(incarnation);
                    return None;
                }
                Some(PeerEvent::BackAlive)
            }
            Some(_) => None,
        };
        if event == Some(PeerEvent::Restarted) {
            // A new process: its previous one's pings — their gaps, the last one's time — say
            // nothing of this one's. Seen in an answer, it has the first-contact grace for its
            // own first ping (its connection to us is new); judged by the old process's last
            // ping instead, it was declared dead at once, and its return from that false death
            // would have woken every group led here that it votes in.
            state.ping_gap = Duration::ZERO;
            if contact == Contact::Answered {
                state.pinged_us_at = None;
                state.known_since = now;
            }
        }
        state.incarnation = Some(incarnation);
        state.pinging_again_since = None;
        if contact == Contact::PingedUs || matches!(event, Some(PeerEvent::FirstHeard | PeerEvent::Restarted)) {
            if state.dead {
                crate::replication::metrics::peer_declared_dead(node, false);
            }
            state.dead = false;
        }
        event
    }

    /// Starts watching `node`: from now on it is declared dead if it stays silent, even if it
    /// is never heard from at all.
    fn watch(&self, node: u64) {
        let mut peers = self.peers.lock().expect("peer liveness");
        peers.entry(node).or_insert_with(|| PeerState::unheard(Instant::now()));
        crate::replication::metrics::peer_declared_dead(node, false);
    }

    /// Records what `node` said of itself in its last ping or answer.
    pub(crate) fn note_phase(&self, node: u64, phase: PeerPhase) {
        let mut peers = self.peers.lock().expect("peer liveness");
        if let Some(state) = peers.get_mut(&node) {
            state.stopping = phase.stopping;
            let first_heard = state.opening_when_first_heard.is_none();
            state.opening_when_first_heard.get_or_insert(phase.opening);
            let opened = state.opening && !phase.opening;
            state.opening = phase.opening;
            if opened || first_heard {
                self.readiness.notify_waiters();
            }
        }
    }

    /// Whether `node` said it is still opening its replicas (its last word on it).
    pub(crate) fn is_opening(&self, node: u64) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node).is_some_and(|state| state.opening)
    }

    /// Whether `node` has been heard from since this broker started (and said what it was
    /// doing), or is declared dead.
    fn heard_or_dead(&self, node: u64) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers
            .get(&node)
            .is_some_and(|state| state.opening_when_first_heard.is_some() || state.dead)
    }

    /// Whether `node` had opened its replicas when this broker first heard from it: it was up
    /// before this broker started, not starting beside it.
    pub(crate) fn was_up_before_us(&self, node: u64) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers
            .get(&node)
            .is_some_and(|state| state.opening_when_first_heard == Some(false))
    }

    /// Returns once `node` is not opening its replicas (as it last said) or is declared dead —
    /// or after [`MAX_OPENING`]: until then, reaching its replicas finds groups it does not
    /// host yet.
    pub(crate) async fn ready_or_gone(&self, node: u64) {
        let _ = tokio::time::timeout(MAX_OPENING, self.ready_or_gone_unbounded(node)).await;
    }

    async fn ready_or_gone_unbounded(&self, node: u64) {
        self.notified_until(|| !self.is_opening(node) || self.is_dead(node))
            .await;
    }

    /// Returns once each of `nodes` has been heard from or declared dead — or after `limit`.
    pub(crate) async fn all_heard_or_dead(&self, nodes: &[u64], limit: Duration) {
        let all = || nodes.iter().all(|node| self.heard_or_dead(*node));
        let _ = tokio::time::timeout(limit, self.notified_until(all)).await;
    }

    /// Returns once `done` holds, checked again at each readiness notification (registered
    /// before each check, so none is lost between the check and the wait).
    async fn notified_until(&self, done: impl Fn() -> bool) {
        loop {
            let notified = self.readiness.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done() {
                return;
            }
            notified.await;
        }
    }

    /// Whether `node` said it is in its controlled shutdown (its last word on it).
    pub fn is_stopping(&self, node: u64) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node).is_some_and(|state| state.stopping)
    }

    /// Whether `node` answered a ping of this broker at or after `at`.
    pub fn answered_since(&self, node: u64, at: Instant) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers
            .get(&node)
            .and_then(|state| state.answered_at)
            .is_some_and(|answered| answered >= at)
    }

    /// How long ago `node` last answered this broker's ping, if ever: how fresh our links to it
    /// are (the ISR of a quiet leader).
    pub fn since_answered(&self, node: u64) -> Option<Duration> {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node)?.answered_at.map(|at| at.elapsed())
    }

    /// Whether the failure detector holds `node` dead now: its pings stopped reaching us.
    pub fn is_dead(&self, node: u64) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node).is_some_and(|state| state.dead)
    }

    /// Whether `node` pinged this broker within `window`: alive as a leader of ours.
    pub fn pinged_us_within(&self, node: u64, window: Duration) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers
            .get(&node)
            .and_then(|state| state.pinged_us_at)
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// Declares `node` dead if it has not pinged us for `dead_after` by `now` — stretched by
    /// its recent ping gaps and this broker's `own_lag` (see [`silence_allowed`]) —, or, if it
    /// never did since this broker started, for [`FIRST_CONTACT_GRACE`] (at least) from when it
    /// became known; true only on the transition.
    fn declare_dead_if_silent(&self, node: u64, dead_after: Duration, own_lag: Duration, now: Instant) -> bool {
        let mut peers = self.peers.lock().expect("peer liveness");
        let Some(state) = peers.get_mut(&node) else {
            return false;
        };
        let dead_after = silence_allowed(dead_after, state.ping_gap, own_lag);
        // (A peer whose pings have not reached us since this broker started may only be
        // reconnecting: its connection to us died with our previous process.)
        let silent = match state.pinged_us_at {
            Some(at) => now.saturating_duration_since(at) >= dead_after,
            None => now.saturating_duration_since(state.known_since) >= dead_after.max(FIRST_CONTACT_GRACE),
        };
        // A peer still opening its replicas leads none of them yet (a restarted replica never
        // resumes leading; it awaits its leader): while it answers our pings, its own may lag
        // behind that work — for at most MAX_OPENING — without its being dead.
        let opening_and_answering = state.opening
            && state
                .answered_at
                .is_some_and(|at| now.saturating_duration_since(at) < dead_after)
            && state
                .pinged_us_at
                .is_none_or(|at| now.saturating_duration_since(at) < MAX_OPENING);
        if state.dead || !silent || opening_and_answering {
            return false;
        }
        state.dead = true;
        state.pinging_again_since = None;
        crate::replication::metrics::peer_declared_dead(node, true);
        self.readiness.notify_waiters();
        true
    }
}

impl PeerState {
    fn unheard(now: Instant) -> Self {
        PeerState {
            known_since: now,
            pinged_us_at: None,
            answered_at: None,
            incarnation: None,
            dead: false,
            ping_gap: Duration::ZERO,
            stopping: false,
            opening: false,
            opening_when_first_heard: None,
            pinging_again_since: None,
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
    groups.liveness().watch(peer);
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // How late this loop runs: a busy runtime also handles the peer's pings late.
    let mut own_lag = Duration::ZERO;
    loop {
        let due = ticker.tick().await;
        own_lag = decaying_max(own_lag, Instant::now().saturating_duration_since(due));
        if let Ok(channel) = channels.channel(&address) {
            let mut request = tonic::Request::new(PingRequest {
                node: me,
                incarnation: groups.incarnation(),
                stopping: groups.is_stopping(),
                opening: groups.is_opening(),
            });
            request.set_timeout(dead_after);
            if let Ok(answer) = RaftClient::new(channel).ping(request).await {
                let answer = answer.into_inner();
                let event = groups.liveness().heard(peer, answer.incarnation, Contact::Answered);
                // (Before the event is handled: a restarted peer still opening its replicas is
                // reached only once it has.)
                groups.liveness().note_phase(
                    peer,
                    PeerPhase {
                        stopping: answer.stopping,
                        opening: answer.opening,
                    },
                );
                if let Some(event) = event {
                    groups.on_peer_event(peer, event);
                }
            }
        }
        if groups
            .liveness()
            .declare_dead_if_silent(peer, dead_after, own_lag, Instant::now())
        {
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
            Some(PeerEvent::FirstHeard),
            "first heard of: not a restart (this broker started)"
        );
        assert_eq!(liveness.heard(2, 7, Contact::PingedUs), None);
        let now = Instant::now();
        assert!(!liveness.declare_dead_if_silent(2, Duration::from_secs(60), Duration::ZERO, now));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO, Duration::ZERO, now));
        assert!(
            !liveness.declare_dead_if_silent(2, Duration::ZERO, Duration::ZERO, now),
            "only the transition"
        );
        assert_eq!(
            liveness.heard(2, 7, Contact::Answered),
            None,
            "answers do not revive a leader whose pings do not reach us"
        );
        // Back only once its pings span the revival time.
        let back = Instant::now();
        assert_eq!(
            liveness.heard_at(2, 7, Contact::PingedUs, back),
            None,
            "one ping may be a stale one"
        );
        assert_eq!(
            liveness.heard_at(2, 7, Contact::PingedUs, back + REVIVAL_SPAN / 2),
            None
        );
        assert_eq!(
            liveness.heard_at(2, 7, Contact::PingedUs, back + REVIVAL_SPAN),
            Some(PeerEvent::BackAlive)
        );
        assert_eq!(liveness.heard(2, 8, Contact::Answered), Some(PeerEvent::Restarted));
        assert!(
            !liveness.pinged_us_within(2, Duration::from_secs(1)),
            "its previous process's pings are not the new one's"
        );
        assert!(liveness.since_answered(2).is_some());
        assert!(!liveness.pinged_us_within(3, Duration::from_secs(1)), "never heard of");
    }

    #[tokio::test]
    async fn a_burst_of_stale_pings_does_not_revive_a_dead_peer() {
        let liveness = PeerLiveness::default();
        let start = Instant::now();
        liveness.heard_at(2, 7, Contact::PingedUs, start);
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO, Duration::ZERO, start));
        // Pings sent before it died, handled late, all at once.
        let late = start + Duration::from_secs(5);
        for i in 0..20 {
            let at = late + Duration::from_millis(5 * i);
            assert_eq!(liveness.heard_at(2, 7, Contact::PingedUs, at), None);
        }
        // One more, long after: still not back (the pings must keep coming).
        let much_later = late + Duration::from_secs(3);
        assert_eq!(liveness.heard_at(2, 7, Contact::PingedUs, much_later), None);
        assert!(liveness.is_dead(2));
        // A live peer's pings, every 100 ms, bring it back within the revival time.
        let events: Vec<Option<PeerEvent>> = (1..=3)
            .map(|i| liveness.heard_at(2, 7, Contact::PingedUs, much_later + PING_INTERVAL * i))
            .collect();
        assert_eq!(events, [None, None, Some(PeerEvent::BackAlive)]);
        assert!(!liveness.is_dead(2));
    }

    #[tokio::test]
    async fn a_peer_that_only_answers_is_dead_as_a_leader() {
        let liveness = PeerLiveness::default();
        liveness.heard(2, 7, Contact::Answered);
        let answered_at = Instant::now();
        assert!(!liveness.pinged_us_within(2, Duration::from_secs(1)));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO, Duration::ZERO, answered_at + FIRST_CONTACT_GRACE));
    }

    #[tokio::test]
    async fn a_watched_peer_never_heard_from_is_dead_after_the_first_contact_grace() {
        let liveness = PeerLiveness::default();
        let dead_after = Duration::from_millis(500);
        liveness.watch(2);
        let watched_at = Instant::now();
        assert!(
            !liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, watched_at + dead_after),
            "connections to peers take a moment at start"
        );
        assert!(liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, watched_at + FIRST_CONTACT_GRACE));
        assert!(
            !liveness.declare_dead_if_silent(3, dead_after, Duration::ZERO, watched_at + FIRST_CONTACT_GRACE),
            "an unwatched peer never heard of is never declared dead"
        );
        assert_eq!(
            liveness.heard(2, 9, Contact::PingedUs),
            Some(PeerEvent::FirstHeard),
            "a peer declared dead before its first contact is first heard of, not restarted"
        );
    }

    #[test]
    fn silence_is_tolerated_longer_while_pings_come_late_or_this_broker_runs_late() {
        let dead_after = Duration::from_millis(500);
        let ms = Duration::from_millis;
        assert_eq!(silence_allowed(dead_after, ms(100), ms(0)), dead_after, "pings on time");
        assert_eq!(silence_allowed(dead_after, ms(400), ms(0)), ms(1200), "three ping gaps");
        assert_eq!(
            silence_allowed(dead_after, ms(100), ms(300)),
            ms(800),
            "plus our own lateness"
        );
        assert_eq!(silence_allowed(dead_after, ms(10_000), ms(0)), MAX_SILENCE, "bounded");
        assert_eq!(
            silence_allowed(ms(8000), ms(0), ms(0)),
            ms(8000),
            "never below the configured time"
        );
    }

    #[test]
    fn a_slow_spell_fades_out_of_the_ping_gap() {
        let mut gap = decaying_max(Duration::ZERO, Duration::from_millis(800));
        assert_eq!(gap, Duration::from_millis(800));
        for _ in 0..20 {
            gap = decaying_max(gap, Duration::from_millis(100));
        }
        assert!(gap < Duration::from_millis(100) * 2, "{gap:?}");
    }

    #[tokio::test]
    async fn late_pings_stretch_the_time_to_declare_a_peer_dead() {
        let liveness = PeerLiveness::default();
        let dead_after = Duration::from_millis(500);
        liveness.heard(2, 7, Contact::PingedUs);
        tokio::time::sleep(Duration::from_millis(300)).await;
        liveness.heard(2, 7, Contact::PingedUs);
        let last = Instant::now();
        assert!(
            !liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, last + dead_after),
            "gaps of ~300 ms: 900 ms of silence are tolerated"
        );
        assert!(liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, last + Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn a_peer_opening_its_replicas_is_ready_once_it_says_so_or_is_declared_dead() {
        let liveness = PeerLiveness::default();
        let opening = PeerPhase {
            stopping: false,
            opening: true,
        };
        liveness.heard(2, 7, Contact::PingedUs);
        liveness.note_phase(2, opening);
        liveness.heard(3, 7, Contact::PingedUs);
        liveness.note_phase(3, opening);
        assert!(liveness.is_opening(2) && liveness.is_opening(3));

        let waiting = |node: u64| {
            let liveness = liveness.clone();
            tokio::spawn(async move { liveness.ready_or_gone(node).await })
        };
        let (for_2, for_3) = (waiting(2), waiting(3));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!for_2.is_finished() && !for_3.is_finished(), "both still opening");

        liveness.note_phase(2, PeerPhase::default());
        tokio::time::timeout(Duration::from_secs(5), for_2)
            .await
            .expect("ready once it said it opened its replicas")
            .unwrap();
        assert!(!for_3.is_finished(), "another peer's readiness is not this one's");

        let silent_since = Instant::now();
        assert!(liveness.declare_dead_if_silent(
            3,
            Duration::from_millis(1),
            Duration::ZERO,
            silent_since + MAX_SILENCE
        ));
        tokio::time::timeout(Duration::from_secs(5), for_3)
            .await
            .expect("gone once declared dead")
            .unwrap();
        liveness.ready_or_gone(2).await;
    }

    #[tokio::test]
    async fn a_restart_seen_in_an_answer_gives_the_new_process_the_first_contact_grace() {
        let liveness = PeerLiveness::default();
        let dead_after = Duration::from_millis(500);
        let start = Instant::now();
        liveness.heard_at(2, 7, Contact::PingedUs, start);
        // Killed, and back 7 s later: its answer to our ping is the first sign of the new one.
        let back = start + Duration::from_secs(7);
        assert_eq!(
            liveness.heard_at(2, 8, Contact::Answered, back),
            Some(PeerEvent::Restarted)
        );
        assert!(
            !liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, back + Duration::from_millis(100)),
            "not judged by its previous process's last ping"
        );
        liveness.heard_at(2, 8, Contact::PingedUs, back + Duration::from_secs(1));
        assert!(!liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, back + Duration::from_millis(1400)));
        assert!(
            liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, back + Duration::from_secs(2)),
            "its own pings count as usual, their gaps not stretched by its downtime"
        );
    }

    #[tokio::test]
    async fn a_peer_opening_its_replicas_is_not_dead_while_it_answers() {
        let liveness = PeerLiveness::default();
        let dead_after = Duration::from_millis(500);
        let start = Instant::now();
        liveness.heard_at(2, 7, Contact::PingedUs, start);
        liveness.note_phase(
            2,
            PeerPhase {
                stopping: false,
                opening: true,
            },
        );
        let later = start + Duration::from_secs(2);
        liveness.heard_at(2, 7, Contact::Answered, later);
        assert!(
            !liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, later + Duration::from_millis(100)),
            "its pings lag, but it answers ours"
        );
        assert!(
            liveness.declare_dead_if_silent(2, dead_after, Duration::ZERO, later + Duration::from_secs(1)),
            "silent both ways: dead, opening or not"
        );
    }

    #[tokio::test]
    async fn waiting_for_peers_to_be_heard_ends_when_the_last_is_heard_or_at_the_limit() {
        let liveness = PeerLiveness::default();
        let waiting = {
            let liveness = liveness.clone();
            tokio::spawn(async move { liveness.all_heard_or_dead(&[2, 3], Duration::from_secs(30)).await })
        };
        liveness.heard(2, 7, Contact::Answered);
        liveness.note_phase(2, PeerPhase::default());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "broker 3 not heard from yet");
        liveness.heard(3, 7, Contact::Answered);
        liveness.note_phase(3, PeerPhase::default());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("ends once the last peer is heard from")
            .unwrap();
        let started = Instant::now();
        liveness.all_heard_or_dead(&[4], Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100), "bounded, not skipped");
    }
}
