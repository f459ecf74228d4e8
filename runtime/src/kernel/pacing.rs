//! Paced rounds: replay when the blocks a launch needs are many times the device pool
//! (migrating mode).
//!
//! An ordinary round migrates the blocks the round faulted on, at most half the free pool, in
//! the order invocations reported them, and a replayed invocation stops at its first missing
//! block. An invocation that needs several blocks is then given them one round at a time,
//! and when the pending invocations' blocks are many times the pool, others' loads evict its
//! first blocks before its last arrives: the rounds thrash (measured: 4 KiB blocks, a
//! 256-frame pool, 64-byte nodes read at random over 8 times the pool, 32 419 rounds and
//! 41 s).
//!
//! A chunk becomes *paced* at the first round whose ordinary invocations fault on a block the
//! chunk migrated before (it was evicted; spill rounds' faults carry no invocation ids and do
//! not count). From then on, [`Pacer`] remembers the blocks each pending
//! invocation faulted on (its *history*: what it is known to need), and migrations are chosen
//! by invocation instead of by block ([`Pacer::choose`]): pending invocations in list order,
//! each adding the blocks of its history not chosen yet, while the chosen blocks fit the pool.
//! The chosen blocks already resident are made the most recently used before the others
//! load, so the loads evict only blocks no chosen invocation needs: every chosen invocation
//! then completes or faults on a block its history did not hold (it learns one). All pending
//! invocations still run each round; any whose blocks happen to be resident completes too.
//!
//! Cost: 16 bytes per invocation of the chunk (128 MiB at 2^23), only once it is paced; per
//! round, one pass over the output list and a choice that stops once the pool is full.
//!
//! Invariants: a history holds at most [`HISTORY`] blocks, distinct, never [`NO_BLOCK`] but
//! as padding at its end; the newest replaces the oldest when it is full (that is not
//! progress: an invocation needing more blocks than that falls back to the solo rounds of
//! `launch.rs`, which need no history).

use std::collections::HashSet;

use super::prelude::NO_BLOCK;

/// Blocks remembered per invocation. Invocations needing more at once fall back to solo rounds.
pub const HISTORY: usize = 4;

/// Invocations [`Pacer::choose`] passes over, once the pool is nearly full, before it stops
/// looking for ones whose blocks still fit: bounds the host's work per round.
const PASS_OVER: usize = 256;

/// The histories of a paced chunk's invocations.
pub struct Pacer {
    /// Indexed by chunk-local invocation id: its history, padded with [`NO_BLOCK`].
    history: Vec<[u32; HISTORY]>,
}

/// What a paced round migrates: every block is in exactly one of the two lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Choice {
    /// Chosen blocks that are resident: to be made the most recently used before `load`.
    pub keep: Vec<u32>,
    /// Chosen blocks that are not: to migrate.
    pub load: Vec<u32>,
    /// Invocations whose whole history was chosen.
    pub invocations: usize,
}

impl Pacer {
    /// Histories for a chunk of `n` invocations, all empty.
    pub fn new(n: u32) -> Pacer {
        Pacer { history: vec![[NO_BLOCK; HISTORY]; n as usize] }
    }

    /// Records that invocation `id` (chunk-local, below the chunk's `n`) faulted on `block`.
    /// Returns true when its history grew (the round taught something), false when it held
    /// the block already or was full (then the oldest block makes room).
    pub fn learn(&mut self, id: u32, block: u32) -> bool {
        debug_assert_ne!(block, NO_BLOCK);
        let h = &mut self.history[id as usize];
        if h.contains(&block) {
            return false;
        }
        match h.iter().position(|&b| b == NO_BLOCK) {
            Some(free) => {
                h[free] = block;
                true
            }
            None => {
                h.rotate_left(1);
                h[HISTORY - 1] = block;
                false
            }
        }
    }

    /// The blocks to make resident for the next round: first `first` (the blocks spill rounds
    /// faulted on, which have no history here; at most half of `capacity`), then the
    /// histories of the invocations `pending` lists, in its order, each whole or not at all,
    /// while all chosen blocks fit in `capacity` frames. `resident(b)`: block `b` has a
    /// device copy now.
    pub fn choose(&self, first: &[u32], pending: impl Iterator<Item = u32>, resident: impl Fn(u32) -> bool, capacity: usize) -> Choice {
        let mut chosen: HashSet<u32> = HashSet::new();
        let mut choice = Choice::default();
        let add = |b: u32, chosen: &mut HashSet<u32>, choice: &mut Choice| {
            if chosen.insert(b) {
                if resident(b) { choice.keep.push(b) } else { choice.load.push(b) }
            }
        };
        for &b in first.iter().take(capacity / 2) {
            add(b, &mut chosen, &mut choice);
        }
        let mut passed = 0;
        for id in pending {
            let h = &self.history[id as usize];
            if h[0] == NO_BLOCK {
                continue; // nothing known: it runs anyway
            }
            let new = h.iter().filter(|&&b| b != NO_BLOCK && !chosen.contains(&b)).count();
            if chosen.len() + new > capacity {
                passed += 1;
                if passed > PASS_OVER || chosen.len() == capacity {
                    break;
                }
                continue;
            }
            for &b in h.iter().take_while(|&&b| b != NO_BLOCK) {
                add(b, &mut chosen, &mut choice);
            }
            choice.invocations += 1;
        }
        choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_grow_to_their_limit_then_keep_the_newest() {
        let mut p = Pacer::new(2);
        assert!(p.learn(1, 10));
        assert!(!p.learn(1, 10), "a block it knew");
        for b in 11..10 + HISTORY as u32 {
            assert!(p.learn(1, b));
        }
        assert!(!p.learn(1, 99), "full: not progress");
        let expect: Vec<u32> = (11..10 + HISTORY as u32).chain([99]).collect();
        assert_eq!(p.history[1].to_vec(), expect);
        assert_eq!(p.history[0], [NO_BLOCK; HISTORY]);
    }

    #[test]
    fn choices_take_whole_histories_in_order_while_they_fit() {
        let mut p = Pacer::new(4);
        // 0 needs {1, 2}; 1 needs {2, 3, 4}; 2 needs {5}; 3 nothing known.
        for (id, b) in [(0, 1), (0, 2), (1, 2), (1, 3), (1, 4), (2, 5)] {
            p.learn(id, b);
        }
        let resident = |b: u32| b == 2;
        let c = p.choose(&[], [3, 0, 1, 2].into_iter(), resident, 3);
        // 0 fits ({1, 2}); 1 would make 4; 2 fits ({5}).
        assert_eq!(c, Choice { keep: vec![2], load: vec![1, 5], invocations: 2 });
        let c = p.choose(&[], [0, 1, 2].into_iter(), resident, 4);
        assert_eq!(c, Choice { keep: vec![2], load: vec![1, 3, 4], invocations: 2 });
    }

    #[test]
    fn spill_faults_come_first_within_half_the_pool() {
        let mut p = Pacer::new(1);
        p.learn(0, 7);
        let c = p.choose(&[20, 21, 22], [0].into_iter(), |_| false, 4);
        assert_eq!(c, Choice { keep: vec![], load: vec![20, 21, 7], invocations: 1 });
    }

    #[test]
    fn the_scan_stops_once_the_pool_is_full() {
        let mut p = Pacer::new(1000);
        for id in 0..1000 {
            p.learn(id, id);
        }
        let c = p.choose(&[], 0..1000, |_| false, 10);
        assert_eq!((c.load.len(), c.invocations), (10, 10));
    }
}
