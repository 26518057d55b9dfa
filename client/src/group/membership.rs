//! The member's side of the group protocol, as values: what to send in the next heartbeat and
//! when, what an answer (or a failure) means, and which partitions to give up or take on.
//!
//! [`Membership`] is shared by the heartbeat task (which sends what it says and feeds it the
//! answers) and `poll` (which reconciles the partitions it consumes with the assignment and
//! reports them back). It takes `now` and returns decisions: no tokio, no IO, no clock.
//!
//! The rules, as the coordinator's contract (`groups.proto`) asks:
//! - A heartbeat carries the epoch last received (0 to join), the subscription and the
//!   partitions owned now — none while joining. "Owned" includes partitions `poll` may be taking
//!   on: granted by an answer and not yet settled by `poll`'s next report. Taking a partition
//!   on awaits its committed offset, and a revocation that arrives meanwhile must not free it
//!   (the coordinator would give it to another member while this one still starts consuming it).
//! - After a revocation or a new assignment is acted on, the next heartbeat is due at once, so
//!   the coordinator can hand a released partition to its next owner without waiting.
//! - UNKNOWN_MEMBER_ID or FENCED_MEMBER_EPOCH: the member lost its partitions. It sends nothing
//!   until `poll` has dropped them (without committing), then rejoins with epoch 0 under the
//!   same member id. The same happens when no heartbeat succeeded for a whole session timeout:
//!   the coordinator has removed the member by then.
//! - Retriable failures (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, timeouts, unreachable
//!   brokers) are retried by [`Backoff`].
//! - Any other refusal (UNKNOWN_TOPIC_OR_PARTITION for a subscribed topic, INVALID_GROUP_ID,
//!   UNSUPPORTED_ASSIGNOR, ...) is for the application: the member drops its partitions and
//!   stops until it subscribes again.

use crate::retry::Backoff;
use proto::v1::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, ErrorCode, TopicPartition};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A partition, by topic name and index.
pub(crate) type Partition = (String, u32);

/// The epoch a member leaves with: -2 keeps a static member's partitions for its session
/// timeout (it is restarting), -1 gives them up at once.
pub(crate) fn leave_epoch(static_member: bool) -> i32 {
    if static_member {
        -2
    } else {
        -1
    }
}

/// A member id in UUID v4 text form, from 16 random bytes.
pub(crate) fn member_id_from(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What the member must do to consume exactly its assignment: revoke first, then add.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// Owned but no longer assigned: stop fetching, commit, `on_revoked`, release.
    pub(crate) revoke: Vec<Partition>,
    /// Assigned but not owned yet: fetch the committed offset, seek, `on_assigned`, fetch.
    pub(crate) add: Vec<Partition>,
}

/// The partitions to revoke and to add so that `owned` becomes `assignment`.
pub(crate) fn reconcile(owned: &BTreeSet<Partition>, assignment: &BTreeSet<Partition>) -> Reconciliation {
    Reconciliation {
        revoke: owned.difference(assignment).cloned().collect(),
        add: assignment.difference(owned).cloned().collect(),
    }
}

/// What a heartbeat's outcome means for the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatVerdict {
    /// The answer holds the member's epoch and assignment.
    Accepted,
    /// Try again after a backoff (the coordinator moved, is not ready, or was not reached).
    Retry,
    /// The member is no longer in the group: lose everything, rejoin with epoch 0.
    Fenced,
    /// The coordinator refused the member for a reason only the application can fix.
    Refused,
}

/// The verdict on a heartbeat that was answered with `code`, or not answered (`None`: the
/// coordinator was not reached). `new_subscription`: the heartbeat joined (epoch 0) or
/// changed the subscription.
///
/// UNKNOWN_TOPIC_OR_PARTITION is retriable by the shared rule (a restarted broker's metadata
/// may lag), but the coordinator refuses a join or a subscription change that names a topic
/// that does not exist: then it is the application's to fix. On other heartbeats it is
/// retried; if it persists the session runs out and the rejoin reports it.
pub(crate) fn heartbeat_verdict(code: Option<ErrorCode>, new_subscription: bool) -> HeartbeatVerdict {
    match code {
        None => HeartbeatVerdict::Retry,
        Some(ErrorCode::None) => HeartbeatVerdict::Accepted,
        Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch) => HeartbeatVerdict::Fenced,
        Some(ErrorCode::UnknownTopicOrPartition) if new_subscription => HeartbeatVerdict::Refused,
        Some(code) if code.is_retriable() => HeartbeatVerdict::Retry,
        Some(_) => HeartbeatVerdict::Refused,
    }
}

/// What `poll` needs to know of the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    /// The partitions the member may consume now.
    pub(crate) assignment: BTreeSet<Partition>,
    /// The member lost its partitions: drop them without committing, then
    /// [`Membership::acknowledge_loss`].
    pub(crate) lost: bool,
    /// The coordinator's refusal, for the application.
    pub(crate) refused: Option<(ErrorCode, String)>,
    /// Losses so far: [`Membership::set_owned`] tells from it whether one happened since.
    pub(crate) losses: u64,
    /// Granted partitions are reported as owned until `poll` reports again.
    pub(crate) in_flight: bool,
}

/// The fixed part of every heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct MemberSettings {
    pub(crate) group_id: String,
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) assignor: String,
}

/// One member's state in its group. Owned jointly by the heartbeat task and `poll` behind a
/// mutex that is never held across an await.
#[derive(Debug)]
pub(crate) struct Membership {
    settings: MemberSettings,
    backoff: Backoff,
    /// The epoch last received; 0 while (re)joining.
    epoch: i32,
    subscription: Vec<String>,
    /// The subscription the coordinator last accepted.
    accepted_subscription: Vec<String>,
    /// What `poll` consumes now, as it last reported.
    owned: BTreeSet<Partition>,
    /// Granted partitions `poll` may be taking on: reported as owned until `poll` reports again.
    in_flight: BTreeSet<Partition>,
    /// What the coordinator last said the member may consume.
    assignment: BTreeSet<Partition>,
    /// The coordinator's interval (the configured one until it answers).
    interval: Duration,
    lost: bool,
    refused: Option<(ErrorCode, String)>,
    /// When the next heartbeat is due; `None`: nothing to send (not subscribed, lost, refused).
    next: Option<Instant>,
    /// The last accepted heartbeat (or the start of the current join).
    last_accepted: Instant,
    failures: u32,
    /// Heartbeat outcomes so far, accepted or refused (`subscribe` waits for the next one).
    answers: u64,
    losses: u64,
}

impl Membership {
    pub(crate) fn new(settings: MemberSettings, backoff: Backoff, now: Instant) -> Membership {
        Membership {
            interval: settings.heartbeat_interval,
            settings,
            backoff,
            epoch: 0,
            subscription: Vec::new(),
            accepted_subscription: Vec::new(),
            owned: BTreeSet::new(),
            in_flight: BTreeSet::new(),
            assignment: BTreeSet::new(),
            lost: false,
            refused: None,
            next: None,
            last_accepted: now,
            failures: 0,
            answers: 0,
            losses: 0,
        }
    }

    pub(crate) fn member_id(&self) -> &str {
        &self.settings.member_id
    }

    pub(crate) fn epoch(&self) -> i32 {
        self.epoch
    }

    pub(crate) fn answers(&self) -> u64 {
        self.answers
    }

    pub(crate) fn view(&self) -> MemberView {
        MemberView {
            assignment: self.assignment.clone(),
            lost: self.lost,
            refused: self.refused.clone(),
            losses: self.losses,
            in_flight: !self.in_flight.is_empty(),
        }
    }

    /// Consumes `topics` from now on: heartbeats at once (a join, or a subscription change),
    /// and forgets an earlier refusal.
    pub(crate) fn subscribe(&mut self, mut topics: Vec<String>, now: Instant) {
        topics.sort();
        topics.dedup();
        self.subscription = topics;
        self.refused = None;
        if self.epoch == 0 {
            self.last_accepted = now;
        }
        if !self.lost {
            self.next = Some(now);
        }
    }

    /// When the next heartbeat is due (`None`: nothing to send until something changes).
    pub(crate) fn heartbeat_due(&self) -> Option<Instant> {
        if self.subscription.is_empty() || self.lost || self.refused.is_some() {
            return None;
        }
        self.next
    }

    /// The heartbeat to send now.
    pub(crate) fn heartbeat(&self) -> ConsumerGroupHeartbeatRequest {
        let owned = if self.epoch == 0 {
            Vec::new()
        } else {
            wire(&self.reported())
        };
        ConsumerGroupHeartbeatRequest {
            group_id: self.settings.group_id.clone(),
            member_id: self.settings.member_id.clone(),
            member_epoch: self.epoch,
            group_instance_id: self.settings.group_instance_id.clone(),
            subscribed_topics: self.subscription.clone(),
            owned_partitions: owned,
            session_timeout_ms: millis(self.settings.session_timeout),
            assignor: self.settings.assignor.clone(),
            heartbeat_interval_ms: millis(self.settings.heartbeat_interval),
            // Fields the coordinator may add later keep their defaults ("the broker's").
            ..ConsumerGroupHeartbeatRequest::default()
        }
    }

    /// What a heartbeat reports as owned (at a non-zero epoch): consumed or in flight.
    fn reported(&self) -> BTreeSet<Partition> {
        self.owned.union(&self.in_flight).cloned().collect()
    }

    /// Losses so far.
    pub(crate) fn losses(&self) -> u64 {
        self.losses
    }

    /// The heartbeat that leaves the group (when the consumer closes).
    pub(crate) fn leave(&self) -> ConsumerGroupHeartbeatRequest {
        ConsumerGroupHeartbeatRequest {
            member_epoch: leave_epoch(self.settings.group_instance_id.is_some()),
            owned_partitions: Vec::new(),
            ..self.heartbeat()
        }
    }

    /// Applies the answer to a heartbeat; `true` if what `poll` sees changed.
    pub(crate) fn on_answer(&mut self, answer: ConsumerGroupHeartbeatResponse, now: Instant) -> bool {
        self.answers += 1;
        self.accepted_subscription = self.subscription.clone();
        self.failures = 0;
        self.last_accepted = now;
        if !answer.member_id.is_empty() {
            self.settings.member_id = answer.member_id;
        }
        if answer.heartbeat_interval_ms > 0 {
            self.interval = Duration::from_millis(u64::from(answer.heartbeat_interval_ms));
        }
        self.next = Some(now + self.interval);
        let assignment: BTreeSet<Partition> = answer
            .assignment
            .into_iter()
            .map(|tp| (tp.topic, tp.partition))
            .collect();
        let changed = assignment != self.assignment || answer.member_epoch != self.epoch;
        self.in_flight.extend(assignment.difference(&self.owned).cloned());
        self.epoch = answer.member_epoch;
        self.assignment = assignment;
        changed
    }

    /// Applies a failed heartbeat (`code`: the coordinator's refusal; `None`: not reached);
    /// `true` if what `poll` sees changed.
    pub(crate) fn on_failure(&mut self, code: Option<ErrorCode>, message: String, now: Instant) -> bool {
        let new_subscription = self.epoch == 0 || self.subscription != self.accepted_subscription;
        match heartbeat_verdict(code, new_subscription) {
            HeartbeatVerdict::Accepted => false,
            HeartbeatVerdict::Retry => {
                self.failures += 1;
                // The coordinator removes a member it has not heard from for a session timeout;
                // by then its partitions are someone else's, so stop consuming them.
                if self.epoch != 0 && now.saturating_duration_since(self.last_accepted) >= self.settings.session_timeout
                {
                    return self.lose(now);
                }
                self.next = Some(now + self.backoff.delay(self.failures));
                false
            }
            HeartbeatVerdict::Fenced => {
                self.answers += 1;
                self.lose(now)
            }
            HeartbeatVerdict::Refused => {
                self.answers += 1;
                self.refused = Some((code.unwrap_or(ErrorCode::InvalidRequest), message));
                self.lose(now);
                self.next = None;
                true
            }
        }
    }

    /// Gives up every partition: `poll` drops them without committing and acknowledges; a
    /// member that owned nothing rejoins after a backoff (so a coordinator that keeps
    /// refusing is not asked in a busy loop).
    fn lose(&mut self, now: Instant) -> bool {
        self.losses += 1;
        self.epoch = 0;
        self.assignment.clear();
        self.in_flight.clear();
        self.lost = !self.owned.is_empty();
        self.failures += 1;
        self.next = (!self.lost).then(|| now + self.backoff.delay(self.failures));
        true
    }

    /// `poll` dropped every partition after a loss: rejoin with epoch 0 now.
    pub(crate) fn acknowledge_loss(&mut self, now: Instant) {
        self.owned.clear();
        self.in_flight.clear();
        self.lost = false;
        self.last_accepted = now;
        if self.refused.is_none() {
            self.next = Some(now);
        }
    }

    /// `poll` consumes `owned` now (after revoking or adding, having acted on the view with
    /// `seen_losses`): heartbeat at once if that changes what the member reports. Returns `true`
    /// if the member lost its partitions in the meantime — partitions added for the lost epoch
    /// must then be dropped (`poll` loses them and acknowledges) rather than reported under a
    /// later epoch.
    ///
    /// What is in flight is now only what `poll` has yet to take on of the current assignment:
    /// a partition granted earlier and revoked before `poll` took it on is released here.
    pub(crate) fn set_owned(&mut self, owned: BTreeSet<Partition>, seen_losses: u64, now: Instant) -> bool {
        let before = self.reported();
        self.in_flight = self.assignment.difference(&owned).cloned().collect();
        self.owned = owned;
        let changed = self.reported() != before;
        if seen_losses != self.losses && !self.owned.is_empty() {
            self.lost = true;
            self.next = None;
            return true;
        }
        if changed && self.next.is_some() {
            self.next = Some(now);
        }
        false
    }

    /// A commit was refused for a stale epoch or an unknown member: heartbeat at once to learn
    /// the current epoch (or that the partitions are lost).
    pub(crate) fn heartbeat_now(&mut self, now: Instant) {
        if self.next.is_some() {
            self.next = Some(now);
        }
    }
}

fn wire(partitions: &BTreeSet<Partition>) -> Vec<TopicPartition> {
    partitions
        .iter()
        .map(|(topic, partition)| TopicPartition {
            topic: topic.clone(),
            partition: *partition,
        })
        .collect()
}

fn millis(duration: Duration) -> u32 {
    duration.as_millis().min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: u32) -> Partition {
        (topic.to_string(), partition)
    }

    fn set(partitions: &[Partition]) -> BTreeSet<Partition> {
        partitions.iter().cloned().collect()
    }

    fn settings(instance: Option<&str>) -> MemberSettings {
        MemberSettings {
            group_id: "g".into(),
            member_id: "m-1".into(),
            group_instance_id: instance.map(str::to_string),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            assignor: "uniform".into(),
        }
    }

    fn member(now: Instant) -> Membership {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut member = Membership::new(settings(None), backoff, now);
        member.subscribe(vec!["orders".into(), "audit".into(), "orders".into()], now);
        member
    }

    fn answer(epoch: i32, assignment: &[Partition]) -> ConsumerGroupHeartbeatResponse {
        ConsumerGroupHeartbeatResponse {
            member_epoch: epoch,
            heartbeat_interval_ms: 2000,
            assignment: wire(&set(assignment)),
            ..ConsumerGroupHeartbeatResponse::default()
        }
    }

    #[test]
    fn reconcile_revokes_what_is_gone_and_adds_what_is_new() {
        let owned = set(&[tp("a", 0), tp("a", 1), tp("b", 0)]);
        let assignment = set(&[tp("a", 1), tp("b", 0), tp("b", 1)]);
        assert_eq!(
            reconcile(&owned, &assignment),
            Reconciliation {
                revoke: vec![tp("a", 0)],
                add: vec![tp("b", 1)],
            }
        );
        assert_eq!(reconcile(&owned, &owned), Reconciliation::default());
        assert_eq!(reconcile(&owned, &BTreeSet::new()).revoke.len(), 3);
    }

    #[test]
    fn verdicts_follow_the_contract() {
        use HeartbeatVerdict::*;
        for joining in [true, false] {
            assert_eq!(heartbeat_verdict(None, joining), Retry, "transport failure");
            assert_eq!(heartbeat_verdict(Some(ErrorCode::None), joining), Accepted);
            assert_eq!(heartbeat_verdict(Some(ErrorCode::NotCoordinator), joining), Retry);
            assert_eq!(
                heartbeat_verdict(Some(ErrorCode::CoordinatorNotAvailable), joining),
                Retry
            );
            assert_eq!(heartbeat_verdict(Some(ErrorCode::RequestTimedOut), joining), Retry);
            assert_eq!(heartbeat_verdict(Some(ErrorCode::UnknownMemberId), joining), Fenced);
            assert_eq!(heartbeat_verdict(Some(ErrorCode::FencedMemberEpoch), joining), Fenced);
            assert_eq!(heartbeat_verdict(Some(ErrorCode::InvalidGroupId), joining), Refused);
            assert_eq!(
                heartbeat_verdict(Some(ErrorCode::UnsupportedAssignor), joining),
                Refused
            );
            assert_eq!(heartbeat_verdict(Some(ErrorCode::InvalidRequest), joining), Refused);
        }
        // A join naming a topic that does not exist is refused; later it may be stale metadata.
        assert_eq!(
            heartbeat_verdict(Some(ErrorCode::UnknownTopicOrPartition), true),
            Refused
        );
        assert_eq!(
            heartbeat_verdict(Some(ErrorCode::UnknownTopicOrPartition), false),
            Retry
        );
    }

    #[test]
    fn joins_with_epoch_zero_and_no_partitions_then_reports_what_it_owns() {
        let now = Instant::now();
        let mut member = member(now);
        assert_eq!(member.heartbeat_due(), Some(now));
        let join = member.heartbeat();
        assert_eq!(join.member_epoch, 0);
        assert_eq!(join.subscribed_topics, ["audit", "orders"]);
        assert!(join.owned_partitions.is_empty());
        assert_eq!((join.session_timeout_ms, join.heartbeat_interval_ms), (45_000, 3_000));
        assert!(member.on_answer(answer(4, &[tp("orders", 0)]), now));
        // The coordinator's interval wins.
        assert_eq!(member.heartbeat_due(), Some(now + Duration::from_secs(2)));
        assert_eq!(member.view().assignment, set(&[tp("orders", 0)]));
        // Granted, it counts as owned (poll may be taking it on) before poll reports it...
        assert_eq!(member.heartbeat().owned_partitions.len(), 1);
        // ... and when poll reports it, nothing changed for the coordinator: no extra beat.
        let later = now + Duration::from_millis(5);
        assert!(!member.set_owned(set(&[tp("orders", 0)]), 0, later));
        assert_eq!(member.heartbeat_due(), Some(now + Duration::from_secs(2)));
        let beat = member.heartbeat();
        assert_eq!(beat.member_epoch, 4);
        assert_eq!(beat.owned_partitions.len(), 1);
        // The same answer again is no change for poll.
        assert!(!member.on_answer(answer(4, &[tp("orders", 0)]), later));
    }

    #[test]
    fn fenced_member_waits_for_poll_to_drop_its_partitions_then_rejoins_under_the_same_id() {
        let now = Instant::now();
        let mut member = member(now);
        member.on_answer(answer(4, &[tp("orders", 0)]), now);
        assert!(!member.set_owned(set(&[tp("orders", 0)]), 0, now));
        assert!(member.on_failure(Some(ErrorCode::FencedMemberEpoch), "fenced".into(), now));
        let view = member.view();
        assert!(view.lost && view.assignment.is_empty() && view.refused.is_none());
        assert_eq!(member.heartbeat_due(), None, "no rejoin before the loss is acted on");
        let later = now + Duration::from_millis(7);
        member.acknowledge_loss(later);
        assert_eq!(member.heartbeat_due(), Some(later));
        let rejoin = member.heartbeat();
        assert_eq!((rejoin.member_epoch, rejoin.member_id.as_str()), (0, "m-1"));
        assert!(rejoin.owned_partitions.is_empty());
    }

    #[test]
    fn a_partition_revoked_while_poll_takes_it_on_stays_reported_until_poll_reports_again() {
        let now = Instant::now();
        let mut member = member(now);
        member.on_answer(answer(4, &[tp("orders", 0), tp("orders", 1)]), now);
        // poll is taking both on (fetching committed offsets) when a rebalance takes orders/1
        // back: the coordinator must not free it before poll has acted (it may be consuming it).
        member.on_answer(answer(5, &[tp("orders", 0)]), now);
        assert!(member.view().in_flight);
        let reported = |member: &Membership| {
            let mut owned: Vec<u32> = member
                .heartbeat()
                .owned_partitions
                .iter()
                .map(|p| p.partition)
                .collect();
            owned.sort();
            owned
        };
        assert_eq!(reported(&member), [0, 1]);
        // poll took both on (then revokes orders/1 and reports again).
        assert!(!member.set_owned(set(&[tp("orders", 0), tp("orders", 1)]), 0, now));
        assert_eq!(reported(&member), [0, 1]);
        let later = now + Duration::from_millis(3);
        assert!(!member.set_owned(set(&[tp("orders", 0)]), 0, later));
        assert!(!member.view().in_flight);
        assert_eq!(reported(&member), [0], "released");
        assert_eq!(member.heartbeat_due(), Some(later), "and said at once");
        // Granted and revoked before poll ever took it on: released at poll's next report.
        member.on_answer(answer(6, &[tp("orders", 0), tp("orders", 2)]), later);
        member.on_answer(answer(7, &[tp("orders", 0)]), later);
        assert_eq!(reported(&member), [0, 2]);
        assert!(!member.set_owned(set(&[tp("orders", 0)]), 0, later));
        assert_eq!(reported(&member), [0]);
    }

    #[test]
    fn partitions_added_while_the_member_was_fenced_are_lost_not_reported() {
        let now = Instant::now();
        let mut member = member(now);
        member.on_answer(answer(4, &[tp("orders", 0)]), now);
        let seen = member.view().losses;
        // poll is adding orders/0 (fetching its committed offset) when the fence arrives.
        assert!(member.on_failure(Some(ErrorCode::FencedMemberEpoch), String::new(), now));
        assert!(!member.view().lost, "it owned nothing yet");
        assert!(member.set_owned(set(&[tp("orders", 0)]), seen, now));
        assert!(member.view().lost);
        assert_eq!(member.heartbeat_due(), None);
        member.acknowledge_loss(now);
        assert!(member.heartbeat().owned_partitions.is_empty());
        // Releasing partitions after a loss is no loss.
        assert!(!member.set_owned(BTreeSet::new(), seen, now));
    }

    #[test]
    fn retriable_failures_back_off_until_the_session_would_have_expired() {
        let now = Instant::now();
        let mut member = member(now);
        member.on_answer(answer(4, &[tp("orders", 0)]), now);
        assert!(!member.set_owned(set(&[tp("orders", 0)]), 0, now));
        let t1 = now + Duration::from_secs(1);
        assert!(!member.on_failure(Some(ErrorCode::NotCoordinator), String::new(), t1));
        assert_eq!(member.heartbeat_due(), Some(t1 + Duration::from_millis(100)));
        assert!(!member.on_failure(None, String::new(), t1));
        assert_eq!(member.heartbeat_due(), Some(t1 + Duration::from_millis(200)));
        assert!(!member.view().lost);
        // A whole session without an accepted heartbeat: the partitions are someone else's.
        assert!(member.on_failure(None, String::new(), now + Duration::from_secs(45)));
        assert!(member.view().lost);
        assert_eq!(member.epoch(), 0);
    }

    #[test]
    fn a_refusal_is_for_the_application_and_stops_heartbeats_until_it_subscribes_again() {
        let now = Instant::now();
        let mut member = member(now);
        assert!(member.on_failure(Some(ErrorCode::UnknownTopicOrPartition), "no topic audit".into(), now));
        let view = member.view();
        assert_eq!(
            view.refused,
            Some((ErrorCode::UnknownTopicOrPartition, "no topic audit".into()))
        );
        assert!(!view.lost, "it owned nothing");
        assert_eq!(member.heartbeat_due(), None);
        assert_eq!(member.answers(), 1);
        member.subscribe(vec!["orders".into()], now);
        assert_eq!(member.view().refused, None);
        assert_eq!(member.heartbeat_due(), Some(now));
    }

    #[test]
    fn an_unknown_topic_is_refused_on_a_subscription_change_but_retried_otherwise() {
        let now = Instant::now();
        let mut member = member(now);
        member.on_answer(answer(4, &[]), now);
        assert!(!member.on_failure(Some(ErrorCode::UnknownTopicOrPartition), String::new(), now));
        assert_eq!(
            member.view().refused,
            None,
            "same subscription: stale metadata, retried"
        );
        member.subscribe(vec!["orders".into(), "missing".into()], now);
        assert!(member.on_failure(Some(ErrorCode::UnknownTopicOrPartition), "missing".into(), now));
        assert_eq!(
            member.view().refused.map(|(code, _)| code),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
    }

    #[test]
    fn leaves_with_minus_one_or_minus_two_for_a_static_member() {
        let now = Instant::now();
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let dynamic = Membership::new(settings(None), backoff, now);
        assert_eq!(dynamic.leave().member_epoch, -1);
        let fixed = Membership::new(settings(Some("host-1")), backoff, now);
        let leave = fixed.leave();
        assert_eq!(leave.member_epoch, -2);
        assert_eq!(leave.group_instance_id.as_deref(), Some("host-1"));
    }

    #[test]
    fn member_ids_are_uuid_v4_text() {
        let id = member_id_from([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = member_id_from([0; 16]);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
    }
}
