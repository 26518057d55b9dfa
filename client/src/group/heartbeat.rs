//! The heartbeat task: the async shell around [`Membership`]. It sends the heartbeat the
//! membership asks for when it is due, feeds back the answer, and tells `poll` when what it
//! must act on changed. It never touches partitions itself: revocation, seeks and callbacks
//! happen in `poll`, on the application's task.

use super::membership::Membership;
use crate::cluster::Cluster;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Bounds one heartbeat round trip: a coordinator that does not answer in this long is
/// treated like an unreachable one (retried, and eventually the session is given up).
pub(crate) const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the heartbeat task and `poll` share.
pub(crate) struct Shared {
    /// The membership; locked only briefly, never across an await.
    pub(crate) membership: Mutex<Membership>,
    /// Wakes the heartbeat task to re-check when its next heartbeat is due.
    pub(crate) wake: Notify,
    /// Bumped when the assignment, the epoch, a loss or a refusal changed: interrupts `poll`'s
    /// wait for records so it reconciles at once.
    pub(crate) changed: watch::Sender<()>,
    /// Heartbeat outcomes so far (answers and refusals): `subscribe` waits for the next one.
    pub(crate) answers: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(membership: Membership) -> Shared {
        Shared {
            membership: Mutex::new(membership),
            wake: Notify::new(),
            changed: watch::Sender::new(()),
            answers: watch::Sender::new(0),
        }
    }

    pub(crate) fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().expect("membership")
    }

    /// Applies `change` to the membership and wakes the heartbeat task to look at it.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Membership)) {
        change(&mut self.membership());
        self.wake.notify_one();
    }
}

/// Heartbeats for the member until aborted (when the consumer closes or is dropped).
pub(crate) async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, group_id: String) {
    loop {
        let due = shared.membership().heartbeat_due();
        match due {
            None => {
                shared.wake.notified().await;
                continue;
            }
            Some(at) if at > Instant::now() => {
                tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    () = shared.wake.notified() => {}
                }
                continue;
            }
            Some(_) => {}
        }
        let request = shared.membership().heartbeat();
        let answer = cluster
            .coordinator_attempt(&group_id, |mut client| {
                let mut call = tonic::Request::new(request.clone());
                call.set_timeout(HEARTBEAT_TIMEOUT);
                async move { client.consumer_group_heartbeat(call).await }
            })
            .await;
        let now = Instant::now();
        let (changed, answers) = {
            let mut membership = shared.membership();
            let changed = match answer {
                Ok(answer) => membership.on_answer(answer, now),
                Err(error) => {
                    tracing::debug!(%error, group = %group_id, "heartbeat failed");
                    membership.on_failure(error.code(), error.to_string(), now)
                }
            };
            (changed, membership.answers())
        };
        if changed {
            shared.changed.send_replace(());
        }
        shared
            .answers
            .send_if_modified(|seen| std::mem::replace(seen, answers) != answers);
    }
}
