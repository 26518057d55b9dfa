//! The application's hooks into a rebalance: Kafka's `ConsumerRebalanceListener`.

/// Called from inside `poll` (never from the heartbeat task) when the member's partitions
/// change. Partitions are `(topic, partition)`, sorted. The default methods do nothing.
pub trait RebalanceListener: Send {
    /// Partitions the member consumes from now on; their positions are set (committed offset,
    /// or `auto_offset_reset`) and fetching has started.
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }

    /// Partitions the member gives up in an orderly way: fetching has stopped and, with
    /// auto-commit, the positions of the records `poll` returned are committed. Once this
    /// returns the member tells the coordinator, which hands them to their next owner. Also
    /// called by `close` for the partitions still owned.
    fn on_revoked(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }

    /// Partitions the member lost without an orderly hand-over (fenced, session expired,
    /// refused): they may already be another member's, so nothing was committed. Undo or
    /// discard work on them that is not committed.
    fn on_lost(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }
}

/// The listener of a consumer that was given none.
pub(crate) struct NoListener;

impl RebalanceListener for NoListener {}
