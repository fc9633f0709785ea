//! Which consumed offsets may be committed. Workers finish messages out of
//! order, so a partition's committable offset is the one below its oldest
//! unfinished message; it never moves backwards, not even when the same
//! offsets are handed out again.
//!
//! The bookkeeping lasts while the consumer holds the partition. A
//! cooperative rebalance revokes some partitions and leaves the others
//! alone: a revoked partition's bookkeeping is dropped, and a message of
//! it that a worker finishes afterwards stores nothing, even if the
//! partition has come back meanwhile (its new holding reads on from the
//! group's commit, and would otherwise be told that offsets it has not yet
//! processed are done).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The assigned partitions' bookkeeping, shared by the subscriber (which
/// hands messages out), their acknowledgements (which finish them) and the
/// consumer's context (which drops what a rebalance revokes).
pub(super) type Offsets = Arc<Mutex<Held>>;

/// The bookkeeping of each partition the consumer holds.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Per partition: which holding it is, and its offsets.
    partitions: HashMap<i32, (u64, PartitionOffsets)>,
    /// Holdings so far: tells one holding of a partition from the next.
    holdings: u64,
}

impl Held {
    /// Marks `offset` of `partition` handed to the workers; returns the
    /// holding it was handed out in.
    pub(super) fn dispatched(&mut self, partition: i32, offset: i64) -> u64 {
        let holdings = &mut self.holdings;
        let (holding, offsets) = self.partitions.entry(partition).or_insert_with(|| {
            *holdings += 1;
            (*holdings, PartitionOffsets::default())
        });
        offsets.dispatched(offset);
        *holding
    }

    /// Marks `offset` finished if `partition` is still in the holding it
    /// was handed out in; returns the offset to store, if any (see
    /// [`PartitionOffsets::done`]).
    pub(super) fn done(&mut self, partition: i32, holding: u64, offset: i64) -> Option<i64> {
        match self.partitions.get_mut(&partition) {
            Some((current, offsets)) if *current == holding => offsets.done(offset),
            _ => None,
        }
    }

    /// Drops the bookkeeping of partitions the consumer no longer holds.
    pub(super) fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            self.partitions.remove(&partition);
        }
    }
}

/// Per-partition bookkeeping of which consumed offsets are finished.
#[derive(Debug, Default)]
pub(super) struct PartitionOffsets {
    /// Handed to the workers, not yet acknowledged.
    pending: BTreeSet<i64>,
    /// The highest acknowledged offset.
    highest_done: Option<i64>,
    /// The last offset handed to the consumer's offset store.
    stored: Option<i64>,
    /// The lowest offset handed out: where this consumer started reading.
    lowest: Option<i64>,
}

impl PartitionOffsets {
    /// Marks `offset` handed to the workers, not yet finished.
    pub(super) fn dispatched(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.lowest = Some(self.lowest.map_or(offset, |l| l.min(offset)));
    }

    /// Marks `offset` finished; returns the offset to store if the
    /// committable position moved: every offset up to it is finished.
    pub(super) fn done(&mut self, offset: i64) -> Option<i64> {
        self.pending.remove(&offset);
        self.highest_done = self.highest_done.max(Some(offset));
        let committable = match self.pending.first() {
            Some(&oldest_pending) => Some(oldest_pending - 1),
            None => self.highest_done,
        }?;
        // Below where reading started, the position is already committed.
        if self.stored.is_some_and(|s| s >= committable)
            || self.lowest.is_some_and(|l| committable < l)
        {
            return None;
        }
        self.stored = Some(committable);
        Some(committable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committable_offset_waits_for_the_oldest_unfinished_message() {
        let mut partition = PartitionOffsets::default();
        for offset in 10..15 {
            partition.dispatched(offset);
        }
        assert_eq!(partition.done(12), None, "10 and 11 are unfinished");
        assert_eq!(partition.done(10), Some(10));
        assert_eq!(partition.done(11), Some(12), "12 finished earlier");
        assert_eq!(partition.done(14), None, "13 is unfinished");
        assert_eq!(partition.done(13), Some(14));
        partition.dispatched(15);
        assert_eq!(partition.done(15), Some(15));
    }

    #[test]
    fn a_revoked_partition_stores_nothing_for_messages_finished_after() {
        let mut held = Held::default();
        let first = held.dispatched(0, 10);
        let other = held.dispatched(1, 50);
        held.dispatched(0, 11);
        held.revoke([0]);
        // Back again, from the group's commit (10 was never stored).
        let second = held.dispatched(0, 10);
        assert_ne!(first, second);
        assert_eq!(held.done(0, first, 11), None, "finished in the old holding");
        assert_eq!(held.done(0, first, 10), None, "finished in the old holding");
        held.dispatched(0, 11);
        assert_eq!(held.done(0, second, 10), Some(10));
        assert_eq!(held.done(0, second, 11), Some(11));
        assert_eq!(held.done(1, other, 50), Some(50), "partition 1 was kept");
    }

    #[test]
    fn redelivered_offsets_never_move_the_commit_backwards() {
        let mut partition = PartitionOffsets::default();
        partition.dispatched(5);
        assert_eq!(partition.done(5), Some(5));
        // After a rebalance the same offsets come again.
        partition.dispatched(3);
        partition.dispatched(4);
        assert_eq!(partition.done(3), None);
        assert_eq!(partition.done(4), None);
        partition.dispatched(6);
        assert_eq!(partition.done(6), Some(6));
    }
}
