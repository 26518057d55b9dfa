//! [`GroupConsumer`]: the application-facing shell. It owns the fetching [`Consumer`], the
//! positions of the records it returned, and the rebalance listener; `poll` reconciles the
//! partitions it consumes with what the heartbeat task last heard from the coordinator.

use super::config::GroupConfig;
use super::error::GroupError;
use super::heartbeat::{self, Shared};
use super::listener::{NoListener, RebalanceListener};
use super::membership::{self, reconcile, MemberSettings, Membership, Partition};
use super::offsets::{
    auto_commit_due, commit_needs_heartbeat, offsets_to_commit, remember_committed, start_at, StartAt,
};
use crate::cluster::Cluster;
use crate::consumer::{Consumer, ConsumerRecord, SeekTo};
use crate::retry::Backoff;
use futures_util::Stream;
use proto::v1::{ErrorCode, OffsetCommitRequest, OffsetFetchRequest, PartitionOffset, TopicPartition};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Backoff of heartbeat retries: Kafka's `retry.backoff.ms` (100 ms) doubling to 1 s.
const HEARTBEAT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// The offsets the group holds for the member's partitions, as far as the member knows;
/// shared with asynchronous commits, which record what they committed.
type Committed = Arc<Mutex<BTreeMap<Partition, u64>>>;

/// A member of a consumer group: subscribes to topics and consumes the partitions the group's
/// coordinator assigns it. See the [module doc](crate::group) for auto-commit, revocation and
/// errors.
pub struct GroupConsumer {
    cluster: Arc<Cluster>,
    config: Arc<GroupConfig>,
    consumer: Consumer,
    shared: Arc<Shared>,
    changes: watch::Receiver<()>,
    heartbeat: Option<JoinHandle<()>>,
    listener: Box<dyn RebalanceListener>,
    /// The partitions consumed now (reported to the coordinator in every heartbeat).
    owned: BTreeSet<Partition>,
    /// Per owned partition, the next offset to consume: after the last record returned to the
    /// application, or where consumption started.
    positions: BTreeMap<Partition, u64>,
    committed: Committed,
    /// Fetched records not yet returned (`stream` hands them out one by one).
    pending: VecDeque<ConsumerRecord>,
    last_auto_commit: Instant,
    auto_commit: Option<JoinHandle<Result<(), GroupError>>>,
    closed: bool,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(task) = &self.heartbeat {
            task.abort();
        }
    }
}

/// Resolves when an asynchronous commit is answered; dropping it does not cancel the commit.
pub struct CommitFuture {
    task: JoinHandle<Result<(), GroupError>>,
}

impl Future for CommitFuture {
    type Output = Result<(), GroupError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task)
            .poll(cx)
            .map(|outcome| outcome.unwrap_or(Err(GroupError::Closed)))
    }
}

impl GroupConsumer {
    /// A member of `config.group_id` over `cluster`, not subscribed yet (nothing is sent
    /// before [`subscribe`](Self::subscribe)). Its member id is drawn here and kept for life.
    pub fn new(cluster: Arc<Cluster>, config: GroupConfig) -> Result<GroupConsumer, GroupError> {
        config.validate()?;
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| GroupError::InvalidConfig(format!("no randomness for a member id: {e}")))?;
        let settings = MemberSettings {
            group_id: config.group_id.clone(),
            member_id: membership::member_id_from(bytes),
            group_instance_id: config.group_instance_id.clone(),
            session_timeout: config.session_timeout,
            heartbeat_interval: config.heartbeat_interval,
            assignor: config.assignor.clone(),
        };
        let backoff = Backoff::jittered(HEARTBEAT_BACKOFF.0, HEARTBEAT_BACKOFF.1);
        let shared = Arc::new(Shared::new(Membership::new(settings, backoff, Instant::now())));
        Ok(GroupConsumer {
            consumer: Consumer::new(Arc::clone(&cluster), config.consumer_config()),
            changes: shared.changed.subscribe(),
            cluster,
            config: Arc::new(config),
            shared,
            heartbeat: None,
            listener: Box::new(NoListener),
            owned: BTreeSet::new(),
            positions: BTreeMap::new(),
            committed: Arc::default(),
            pending: VecDeque::new(),
            last_auto_commit: Instant::now(),
            auto_commit: None,
            closed: false,
        })
    }

    /// With `listener` called on rebalances (from inside `poll`).
    pub fn with_listener(mut self, listener: impl RebalanceListener + 'static) -> GroupConsumer {
        self.listener = Box::new(listener);
        self
    }

    /// Joins the group (or changes the subscription) and waits for the coordinator's answer:
    /// a refusal — e.g. UNKNOWN_TOPIC_OR_PARTITION for a topic that does not exist — is
    /// returned here. If the coordinator cannot be reached within `session_timeout` this
    /// returns `Ok` and the member keeps trying in the background (`poll` reports what comes).
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<(), GroupError> {
        self.ensure_open()?;
        if topics.is_empty() {
            return Err(GroupError::InvalidConfig("subscribe to at least one topic".into()));
        }
        let mut answers = self.shared.answers.subscribe();
        let before = *answers.borrow_and_update();
        self.shared.update(|m| m.subscribe(topics, Instant::now()));
        if self.heartbeat.is_none() {
            self.heartbeat = Some(tokio::spawn(heartbeat::run(
                Arc::clone(&self.cluster),
                Arc::clone(&self.shared),
                self.config.group_id.clone(),
            )));
        }
        let answered = tokio::time::timeout(self.config.session_timeout, answers.wait_for(|n| *n > before));
        if answered.await.is_err() {
            tracing::warn!(group = %self.config.group_id, "no answer from the group coordinator yet; still trying");
        }
        match self.shared.membership().view().refused {
            Some((code, message)) => Err(GroupError::Refused { code, message }),
            None => Ok(()),
        }
    }

    /// The member id (chosen by this consumer, kept across rejoins).
    pub fn member_id(&self) -> String {
        self.shared.membership().member_id().to_string()
    }

    /// The member epoch last received (0 while joining or rejoining).
    pub fn member_epoch(&self) -> i32 {
        self.shared.membership().epoch()
    }

    /// The partitions consumed now, sorted.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.owned.iter().cloned().collect()
    }

    /// The next offset to consume of an owned partition (what a commit would store).
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Records of the owned partitions, waiting up to `timeout` for some (an empty vector if
    /// none came). Acts on the group first: loses, revokes and assigns partitions (calling the
    /// listener), and starts an auto-commit if one is due. A rebalance that arrives while
    /// waiting is acted on at once, within the same call.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, GroupError> {
        self.fill(timeout).await?;
        let records: Vec<ConsumerRecord> = self.pending.drain(..).collect();
        for record in &records {
            advance(&mut self.positions, record);
        }
        Ok(records)
    }

    /// The records as a stream (each one counts as returned when the stream yields it, so a
    /// commit covers exactly the records yielded); ends never.
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumerRecord, GroupError>> + '_ {
        futures_util::stream::unfold(self, |consumer| async move {
            loop {
                // Act on a rebalance between records too, not only once the buffer is empty.
                if consumer.changes.has_changed().unwrap_or(false) {
                    if let Err(error) = consumer.rebalance().await {
                        return Some((Err(error), consumer));
                    }
                }
                if let Some(record) = consumer.pending.pop_front() {
                    advance(&mut consumer.positions, &record);
                    return Some((Ok(record), consumer));
                }
                if let Err(error) = consumer.fill(Duration::from_secs(1)).await {
                    return Some((Err(error), consumer));
                }
            }
        })
    }

    /// Waits up to `timeout` until `pending` holds records, acting on the group meanwhile.
    async fn fill(&mut self, timeout: Duration) -> Result<(), GroupError> {
        self.ensure_open()?;
        if self.heartbeat.is_none() {
            return Err(GroupError::NotSubscribed);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        self.maybe_auto_commit();
        loop {
            self.rebalance().await?;
            if !self.pending.is_empty() {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let changes = &mut self.changes;
            let interrupt = async move {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let records = self.consumer.poll_or(remaining, interrupt).await?;
            self.pending.extend(records);
            if !self.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Loses, revokes and adds partitions so that the member consumes its assignment.
    async fn rebalance(&mut self) -> Result<(), GroupError> {
        self.changes.borrow_and_update();
        let view = self.shared.membership().view();
        if view.lost {
            self.lose_all();
        }
        if let Some((code, message)) = view.refused {
            return Err(GroupError::Refused { code, message });
        }
        let plan = reconcile(&self.owned, &view.assignment);
        if !plan.revoke.is_empty() {
            self.revoke(&plan.revoke, view.losses).await;
        }
        if !plan.add.is_empty() {
            self.add(&plan.add, view.losses).await?;
        } else if plan.revoke.is_empty() && view.in_flight {
            // Nothing to do: partitions granted and revoked again before this member took them
            // on are no longer in flight (the heartbeat stops reporting them).
            self.report_owned(view.losses);
        }
        Ok(())
    }

    /// Drops every partition without committing (they may be someone else's already).
    fn lose_all(&mut self) {
        let lost: Vec<Partition> = std::mem::take(&mut self.owned).into_iter().collect();
        tracing::info!(group = %self.config.group_id, partitions = lost.len(), "partitions lost");
        self.consumer.unassign(&lost);
        self.pending.clear();
        self.positions.clear();
        self.committed.lock().expect("committed").clear();
        if let Some(task) = self.auto_commit.take() {
            task.abort();
        }
        self.listener.on_lost(&lost);
        self.shared.update(|m| m.acknowledge_loss(Instant::now()));
    }

    /// Gives up `partitions` in order: stop fetching, commit (auto-commit), `on_revoked`,
    /// release (the next heartbeat, sent at once, no longer lists them).
    async fn revoke(&mut self, partitions: &[Partition], seen_losses: u64) {
        self.consumer.unassign(partitions);
        self.pending
            .retain(|r| !partitions.iter().any(|(t, p)| *t == r.topic && *p == r.partition));
        if self.config.enable_auto_commit {
            self.settle_auto_commit().await;
            if let Err(error) = self.commit_partitions(Some(partitions)).await {
                tracing::warn!(%error, group = %self.config.group_id, "commit before revocation failed");
            }
        }
        self.listener.on_revoked(partitions);
        for tp in partitions {
            self.owned.remove(tp);
            self.positions.remove(tp);
            self.committed.lock().expect("committed").remove(tp);
        }
        self.report_owned(seen_losses);
    }

    /// Takes on `partitions`: committed offsets (or `auto_offset_reset`), seek, `on_assigned`,
    /// fetch; then reports them owned. Nothing is taken on if any start cannot be resolved.
    async fn add(&mut self, partitions: &[Partition], seen_losses: u64) -> Result<(), GroupError> {
        let committed = fetch_committed(&self.cluster, &self.config.group_id, partitions).await?;
        let mut starts = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let offset = match start_at(committed.get(tp).copied(), self.config.auto_offset_reset) {
                StartAt::Committed(offset) => offset,
                StartAt::Reset(to) => self.consumer.resolve(tp, to).await?,
                StartAt::NoPosition => {
                    return Err(GroupError::NoCommittedOffset {
                        topic: tp.0.clone(),
                        partition: tp.1,
                    })
                }
            };
            starts.push((tp.clone(), offset));
        }
        // Fenced while the starts were looked up: the partitions are someone else's already,
        // so none is taken on (the next `rebalance` acts on the loss).
        if self.shared.membership().losses() != seen_losses {
            return Ok(());
        }
        for (tp, offset) in starts {
            self.consumer.assign_at(tp.clone(), offset);
            self.positions.insert(tp.clone(), offset);
            if let Some(done) = committed.get(&tp) {
                self.committed.lock().expect("committed").insert(tp.clone(), *done);
            }
            self.owned.insert(tp);
        }
        self.listener.on_assigned(partitions);
        self.report_owned(seen_losses);
        Ok(())
    }

    /// Tells the membership what is consumed now; if the member was fenced meanwhile, the
    /// partitions are lost at once instead.
    fn report_owned(&mut self, seen_losses: u64) {
        let owned = self.owned.clone();
        let mut lost = false;
        self.shared
            .update(|m| lost = m.set_owned(owned, seen_losses, Instant::now()));
        if lost {
            self.lose_all();
        }
    }

    /// Starts the periodic auto-commit if it is due and none is in flight.
    fn maybe_auto_commit(&mut self) {
        let now = Instant::now();
        if !auto_commit_due(
            self.config.enable_auto_commit,
            self.last_auto_commit,
            now,
            self.config.auto_commit_interval,
        ) {
            return;
        }
        if self.auto_commit.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        self.last_auto_commit = now;
        if let Some(task) = self.commit_in_background(None) {
            self.auto_commit = Some(task);
        }
    }

    /// Waits for an auto-commit in flight (so it cannot land after a revocation's commit).
    async fn settle_auto_commit(&mut self) {
        if let Some(task) = self.auto_commit.take() {
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, group = %self.config.group_id, "auto-commit failed");
            }
        }
    }

    /// Moves an owned partition's position (Kafka's `seek`): records fetched but not yet
    /// returned are dropped, and the next `poll` returns records from the new position, which
    /// auto-commit then commits like any other. Returns the offset moved to.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<u64, GroupError> {
        self.ensure_open()?;
        let tp = (topic.to_string(), partition);
        if !self.owned.contains(&tp) {
            return Err(GroupError::NotAssigned { topic: tp.0, partition });
        }
        self.pending
            .retain(|record| !(record.topic == topic && record.partition == partition));
        let offset = self.consumer.seek(topic, partition, to).await?;
        self.positions.insert(tp, offset);
        Ok(offset)
    }

    /// Commits the positions of the records `poll` (or the stream) returned, for every owned
    /// partition, and waits until the commit is replicated.
    pub async fn commit(&mut self) -> Result<(), GroupError> {
        self.ensure_open()?;
        self.commit_partitions(None).await
    }

    /// Like [`commit`](Self::commit) without waiting: the returned future resolves with the
    /// outcome (drop it to ignore the outcome; the commit still happens). Commits are not
    /// ordered with each other; a later one never moves the known committed offset back.
    pub fn commit_async(&mut self) -> CommitFuture {
        let task = match self.ensure_open() {
            Err(error) => tokio::spawn(async move { Err(error) }),
            Ok(()) => self
                .commit_in_background(None)
                .unwrap_or_else(|| tokio::spawn(async { Ok(()) })),
        };
        CommitFuture { task }
    }

    /// Commits `offsets` (the next offset to consume, per owned partition) and waits until the
    /// commit is replicated.
    pub async fn commit_offsets(&mut self, offsets: HashMap<(String, u32), u64>) -> Result<(), GroupError> {
        self.ensure_open()?;
        if let Some((topic, partition)) = offsets.keys().find(|tp| !self.owned.contains(*tp)) {
            return Err(GroupError::NotAssigned {
                topic: topic.clone(),
                partition: *partition,
            });
        }
        send_commit(self.committer(), offsets.into_iter().collect()).await
    }

    async fn commit_partitions(&mut self, partitions: Option<&[Partition]>) -> Result<(), GroupError> {
        let offsets = self.due_offsets(partitions);
        if offsets.is_empty() {
            return Ok(());
        }
        send_commit(self.committer(), offsets).await
    }

    fn commit_in_background(&self, partitions: Option<&[Partition]>) -> Option<JoinHandle<Result<(), GroupError>>> {
        let offsets = self.due_offsets(partitions);
        if offsets.is_empty() {
            return None;
        }
        let committer = self.committer();
        Some(tokio::spawn(async move {
            let outcome = send_commit(committer, offsets).await;
            if let Err(error) = &outcome {
                tracing::warn!(%error, "asynchronous commit failed");
            }
            outcome
        }))
    }

    fn due_offsets(&self, partitions: Option<&[Partition]>) -> Vec<(Partition, u64)> {
        let committed = self.committed.lock().expect("committed");
        offsets_to_commit(&self.positions, &committed, partitions)
    }

    fn committer(&self) -> Committer {
        Committer {
            cluster: Arc::clone(&self.cluster),
            shared: Arc::clone(&self.shared),
            committed: Arc::clone(&self.committed),
            group_id: self.config.group_id.clone(),
        }
    }

    /// Leaves the group, within `close_timeout` in all: with auto-commit, commits the
    /// positions of the records returned; calls `on_revoked` for the partitions still owned;
    /// stops fetching; sends the leave heartbeat (epoch -1, or -2 for a static member, which
    /// keeps its partitions for `session_timeout`). Returns the final commit's error, if any;
    /// a leave the coordinator did not get is only logged (the session expires anyway).
    pub async fn close(mut self) -> Result<(), GroupError> {
        self.ensure_open()?;
        self.closed = true;
        let deadline = tokio::time::Instant::now() + self.config.close_timeout;
        let Some(heartbeat) = self.heartbeat.take() else {
            return Ok(());
        };
        let mut outcome = Ok(());
        let lost = self.shared.membership().view().lost;
        if lost {
            self.lose_all();
        }
        if self.config.enable_auto_commit && !self.owned.is_empty() {
            let commit = async {
                self.settle_auto_commit().await;
                self.commit_partitions(None).await
            };
            outcome = tokio::time::timeout_at(deadline, commit).await.unwrap_or_else(|_| {
                Err(GroupError::Commit {
                    code: None,
                    message: format!("no answer within close_timeout {:?}", self.config.close_timeout),
                })
            });
        }
        // Heartbeats go on through the final commit: a commit refused for a stale epoch is
        // sent again once a heartbeat brought the newer one (stopped first, that commit waited
        // for an epoch that never came and close timed out — a flaky group test found it).
        // Nothing may be sent for the member after its leave.
        heartbeat.abort();
        let owned: Vec<Partition> = std::mem::take(&mut self.owned).into_iter().collect();
        self.consumer.unassign(&owned);
        if !owned.is_empty() {
            self.listener.on_revoked(&owned);
        }
        let leave = self.shared.membership().leave();
        let cluster = Arc::clone(&self.cluster);
        let sent = tokio::time::timeout_at(
            deadline,
            cluster.on_coordinator(&self.config.group_id, |mut client| {
                let leave = leave.clone();
                async move { client.consumer_group_heartbeat(leave).await }
            }),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, group = %self.config.group_id, "leaving the group failed"),
            Err(_) => tracing::warn!(group = %self.config.group_id, "no answer to the leave within close_timeout"),
        }
        outcome
    }

    fn ensure_open(&self) -> Result<(), GroupError> {
        if self.closed {
            Err(GroupError::Closed)
        } else {
            Ok(())
        }
    }
}

/// The group's committed offsets of `partitions` (only those with one).
async fn fetch_committed(
    cluster: &Cluster,
    group_id: &str,
    partitions: &[Partition],
) -> Result<HashMap<Partition, u64>, GroupError> {
    let request = OffsetFetchRequest {
        group_id: group_id.to_string(),
        partitions: partitions
            .iter()
            .map(|(topic, partition)| TopicPartition {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect(),
    };
    let answer = cluster
        .on_coordinator(group_id, |mut client| {
            let request = request.clone();
            async move { client.offset_fetch(request).await }
        })
        .await?;
    Ok(answer
        .offsets
        .into_iter()
        .map(|c| ((c.topic, c.partition), c.offset))
        .collect())
}

/// Moves a partition's position past a record returned to the application.
fn advance(positions: &mut BTreeMap<Partition, u64>, record: &ConsumerRecord) {
    if let Some(position) = positions.get_mut(&(record.topic.clone(), record.partition)) {
        *position = (*position).max(record.offset + 1);
    }
}

/// What a commit needs, owned, so it can run in its own task.
struct Committer {
    cluster: Arc<Cluster>,
    shared: Arc<Shared>,
    committed: Committed,
    group_id: String,
}

/// How many times a commit refused for a stale epoch is sent again under the newer epoch.
const STALE_EPOCH_RETRIES: u32 = 3;
/// How long a stale-epoch retry waits for the heartbeat that brings the newer epoch.
const NEWER_EPOCH_WAIT: Duration = Duration::from_secs(5);

/// Commits `offsets` under the member's current epoch; records them as committed on success,
/// and asks for a heartbeat at once if the epoch was stale or the member is gone. A commit
/// refused with STALE_MEMBER_EPOCH (the group moved on while it was in flight; the coordinator
/// still checks that the member holds the partitions) is sent again once the heartbeat brought
/// the newer epoch, as Kafka's consumer does.
async fn send_commit(committer: Committer, offsets: Vec<(Partition, u64)>) -> Result<(), GroupError> {
    let mut retries = 0;
    loop {
        let sent_epoch = committer.shared.membership().epoch();
        match send_commit_once(&committer, &offsets).await {
            Err(error) if error.code() == Some(ErrorCode::StaleMemberEpoch) && retries < STALE_EPOCH_RETRIES => {
                retries += 1;
                let deadline = Instant::now() + NEWER_EPOCH_WAIT;
                while committer.shared.membership().epoch() == sent_epoch && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            outcome => return outcome,
        }
    }
}

async fn send_commit_once(committer: &Committer, offsets: &[(Partition, u64)]) -> Result<(), GroupError> {
    let (member_id, member_epoch) = {
        let membership = committer.shared.membership();
        (membership.member_id().to_string(), membership.epoch())
    };
    if member_epoch == 0 {
        // Joining or rejoining: whatever this member owned before is not its own to commit.
        return Err(GroupError::Commit {
            code: None,
            message: "the member is (re)joining the group; nothing it owns can be committed yet".into(),
        });
    }
    let request = OffsetCommitRequest {
        group_id: committer.group_id.clone(),
        member_id,
        member_epoch,
        offsets: offsets
            .iter()
            .map(|((topic, partition), offset)| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect(),
    };
    let answer = committer
        .cluster
        .on_coordinator(&committer.group_id, |mut client| {
            let request = request.clone();
            async move { client.offset_commit(request).await }
        })
        .await;
    match answer {
        Ok(_) => {
            remember_committed(&mut committer.committed.lock().expect("committed"), offsets);
            Ok(())
        }
        Err(error) => {
            if commit_needs_heartbeat(error.code()) {
                committer.shared.update(|m| m.heartbeat_now(Instant::now()));
            }
            Err(GroupError::commit(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applications spawn their consumers on multi-threaded runtimes: every future of the API
    /// must be `Send` (no lock guard or listener borrow held across an await).
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(mut consumer: GroupConsumer) {
        fn send<T: Send>(_: T) {}
        send(consumer.subscribe(Vec::new()));
        send(consumer.poll(Duration::ZERO));
        send(consumer.commit());
        send(consumer.commit_offsets(HashMap::new()));
        send(consumer.commit_async());
        send(consumer.stream());
        send(consumer.close());
    }

    #[test]
    fn positions_advance_past_returned_records_of_owned_partitions_only() {
        let record = |topic: &str, offset| ConsumerRecord {
            topic: topic.into(),
            partition: 0,
            offset,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        let mut positions: BTreeMap<Partition, u64> = [(("a".to_string(), 0), 10)].into();
        advance(&mut positions, &record("a", 12));
        advance(&mut positions, &record("a", 11));
        advance(&mut positions, &record("b", 99));
        assert_eq!(positions, [(("a".to_string(), 0), 13)].into());
    }
}
