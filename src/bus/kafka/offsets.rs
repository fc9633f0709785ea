//! Which consumed offsets may be committed. Workers finish messages out of
//! order, so a partition's committable offset is the one below its oldest
//! unfinished message; it never moves backwards, not even when a rebalance
//! hands the same offsets out again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Every partition's bookkeeping, shared by the subscriber (which hands
/// messages out) and their acknowledgements (which finish them).
pub(super) type Offsets = Arc<Mutex<HashMap<i32, PartitionOffsets>>>;

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
