//! The parking lot: pending invocations of an unpaced chunk kept off the id list, grouped by
//! the block they wait on (migrating mode).
//!
//! An ordinary round migrates at most half the free pool. When the pending invocations wait
//! on many more blocks than that (a kernel streaming over more than the pool), every round
//! used to dispatch every pending invocation, and all but those whose block had just come
//! stopped again at once on the block they stopped on before: a 64 MiB fill over a 1 MiB
//! pool replayed 1.05 billion invocations (62 times each) in 254 rounds. Testing each
//! pending invocation's block before each round instead (a scan of the whole list) cut that
//! to 3.3 s but made rounds cost the number of pending invocations even where few wait
//! (a C streaming case: 5.6 -> 15 s).
//!
//! So an unpaced round *parks* each invocation that stopped on a fault: off the id list, in
//! the bucket of the block it faulted on. The round's migrations are then chosen from the
//! lot, the blocks whose buckets hold the lowest ids first ([`ParkingLot::first_blocks`]),
//! and each block migrated (prefetched ones included) has its bucket emptied onto the next
//! round's list ([`ParkingLot::unpark`]). A round therefore costs the invocations it runs
//! and those that stop, never the ones that wait: the 64 MiB fill now replays each invocation
//! 0.98 times, in 0.8-1.0 s against 27-32 s (docs/PERFORMANCE.md). Lowest ids first because a
//! streaming kernel advances in the order of its ids: an invocation that needs a source
//! and a destination block gets the second before the first is evicted. The lowest blocks
//! first loaded source blocks before destination blocks, and a 64 MiB copy was paced again
//! (4.4 s against 1.3-1.7 s).
//!
//! Invariants:
//! - every pending ordinary invocation of the chunk is in exactly one place: the id list,
//!   a bucket of the lot, or the spill queue (escalated ones never park);
//! - a parked invocation waits on its bucket's block, which the launch has not migrated
//!   since the invocation parked (the block of every migration is unparked in that round,
//!   before the next dispatch), so running it would stop at that block again;
//! - a bucket is never empty, and `order` holds exactly `(first, block)` of each bucket:
//!   every block of the lot has an invocation waiting, so a round that migrates a block of
//!   [`ParkingLot::first_blocks`] runs at least one invocation (rounds progress);
//! - the lot is used only while the chunk is neither paced nor solo (`launch.rs`): paced
//!   rounds choose by invocation from the list (`pacing.rs`), solo rounds take its first
//!   entry, so the lot is emptied onto the list ([`ParkingLot::drain`]) when either starts.
//!
//! Cost: 4 bytes per parked invocation (plus the buckets' slack), one hash look-up per run
//! of stopped invocations on the same block, and a B-tree of one entry per block waited on.

use std::collections::{BTreeSet, HashMap};

use super::prelude::NO_BLOCK;

/// The invocations waiting on one block.
struct Bucket {
    /// Chunk-local ids, in the order they parked; never empty.
    ids: Vec<u32>,
    /// The lowest of them: the bucket's place in [`ParkingLot::order`].
    first: u32,
}

/// Parked invocations by block; see the module documentation for the invariants.
#[derive(Default)]
pub struct ParkingLot {
    buckets: HashMap<u32, Bucket>,
    /// `(lowest id, block)` of every bucket: the order [`ParkingLot::first_blocks`] loads in.
    order: BTreeSet<(u32, u32)>,
    /// Invocations parked: the sum of the buckets' lengths.
    parked: usize,
}

impl ParkingLot {
    /// Parks the invocations of `stops`, `(chunk-local id, block it stopped on)`, in their
    /// order. Runs of the same block cost one look-up.
    pub fn park(&mut self, stops: impl IntoIterator<Item = (u32, u32)>) {
        let mut run: Option<(u32, &mut Bucket)> = None;
        for (id, block) in stops {
            if run.as_ref().is_none_or(|(b, _)| *b != block) {
                let bucket = self.buckets.entry(block).or_insert_with(|| {
                    self.order.insert((id, block));
                    Bucket { ids: Vec::new(), first: id }
                });
                run = Some((block, bucket));
            }
            let Some((_, bucket)) = run.as_mut() else { unreachable!("set above") };
            if id < bucket.first {
                self.order.remove(&(bucket.first, block));
                self.order.insert((id, block));
                bucket.first = id;
            }
            bucket.ids.push(id);
            self.parked += 1;
        }
    }

    /// Invocations parked.
    pub fn len(&self) -> usize {
        self.parked
    }

    /// True when no invocation is parked.
    pub fn is_empty(&self) -> bool {
        self.parked == 0
    }

    /// The lowest id parked, if any.
    pub fn first_id(&self) -> Option<u32> {
        self.order.first().map(|&(id, _)| id)
    }

    /// Up to `k` blocks waited on, those of the lowest ids first.
    pub fn first_blocks(&self, k: usize) -> impl Iterator<Item = u32> + '_ {
        self.order.iter().take(k).map(|&(_, b)| b)
    }

    /// True when invocations wait on `block`.
    pub fn holds(&self, block: u32) -> bool {
        self.buckets.contains_key(&block)
    }

    /// Takes the invocations waiting on `block` out of the lot, passing each to `out` in the
    /// order they parked. Returns how many.
    pub fn unpark(&mut self, block: u32, mut out: impl FnMut(u32)) -> usize {
        let Some(bucket) = self.buckets.remove(&block) else { return 0 };
        self.order.remove(&(bucket.first, block));
        self.parked -= bucket.ids.len();
        bucket.ids.iter().for_each(|&id| out(id));
        bucket.ids.len()
    }

    /// Empties the lot, passing each invocation with the block it waits on to `out`, in the
    /// order of their ids. Returns how many.
    ///
    /// In id order, not bucket by bucket: paced rounds test the readiness of the list's
    /// first entries, reading the pacer's arrays indexed by id, and in bucket order (ids
    /// scattered over the chunk by random accesses) each read missed the cache (perf: 74% of
    /// the rounds' own samples on that load). Random gathers of 64 MiB over a 1 MiB pool
    /// spent 56 s of the launch migrating and choosing, 25 s before parking and 25 s drained
    /// in id order.
    pub fn drain(&mut self, mut out: impl FnMut(u32, u32)) -> usize {
        let n = self.parked;
        let end = self.buckets.values().flat_map(|k| k.ids.iter()).max().map_or(0, |&id| id as usize + 1);
        let mut waits = vec![NO_BLOCK; end];
        for (block, bucket) in self.buckets.drain() {
            bucket.ids.iter().for_each(|&id| waits[id as usize] = block);
        }
        self.order.clear();
        self.parked = 0;
        for (id, &block) in waits.iter().enumerate().filter(|(_, &b)| b != NO_BLOCK) {
            out(id as u32, block);
        }
        n
    }

    /// Checks the invariants between the buckets, `order` and `parked` (tests, and
    /// `debug_assert!` after rounds with few buckets).
    pub fn check(&self) -> bool {
        self.order.len() == self.buckets.len()
            && self.buckets.iter().all(|(&b, k)| !k.ids.is_empty() && k.ids.iter().min() == Some(&k.first) && self.order.contains(&(k.first, b)))
            && self.buckets.values().map(|k| k.ids.len()).sum::<usize>() == self.parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_in_the_order_of_their_lowest_waiting_id() {
        let mut lot = ParkingLot::default();
        // Block 9 waits for 5 and 3 (the run costs one look-up), 2 for 4, 7 for 1 and 8.
        lot.park([(5, 9), (3, 9), (4, 2), (8, 7), (1, 7)]);
        assert!(lot.check());
        assert_eq!((lot.len(), lot.first_id()), (5, Some(1)));
        assert_eq!(lot.first_blocks(2).collect::<Vec<_>>(), [7, 9]);
        assert_eq!(lot.first_blocks(9).collect::<Vec<_>>(), [7, 9, 2]);
        let mut out = Vec::new();
        assert_eq!(lot.unpark(9, |id| out.push(id)), 2);
        assert_eq!(out, [5, 3], "in the order they parked");
        assert_eq!(lot.unpark(9, |_| panic!("emptied")), 0);
        assert!(lot.check() && !lot.holds(9) && lot.holds(2));
        assert_eq!(lot.first_blocks(9).collect::<Vec<_>>(), [7, 2]);
    }

    #[test]
    fn a_lower_id_moves_its_block_forward() {
        let mut lot = ParkingLot::default();
        lot.park([(10, 1), (20, 2)]);
        lot.park([(5, 2)]);
        assert!(lot.check());
        assert_eq!(lot.first_blocks(1).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn draining_gives_every_invocation_once() {
        let mut lot = ParkingLot::default();
        lot.park((0..100).rev().map(|id| (id, id % 7)));
        let mut seen = Vec::new();
        assert_eq!(lot.drain(|id, b| seen.push((id, b))), 100);
        assert!(lot.is_empty() && lot.check() && lot.first_id().is_none());
        assert_eq!(seen, (0..100).map(|id| (id, id % 7)).collect::<Vec<_>>(), "in id order");
    }
}
