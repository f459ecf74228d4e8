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
//! A chunk becomes *paced* at the first round whose invocations fault on a block the chunk
//! migrated before (it was evicted). From then on, [`Pacer`] remembers the blocks each pending
//! invocation faulted on (its *history*: what it is known to need; an ordinary invocation's
//! fault comes from the output list, an escalated one's from its spill slot), and
//! migrations are chosen by invocation instead of by block ([`Pacer::choose`]): the next
//! spill batch's invocations first (each restarts from scratch, so it needs all its blocks
//! at once, and a spill round is the dearer one to repeat), then the ordinary ones in list
//! order, each adding the blocks of its history not chosen yet, while the chosen blocks fit
//! the pool.
//! The chosen blocks already resident are made the most recently used before the others
//! load, so the loads evict only blocks no chosen invocation needs: every chosen invocation
//! then completes or faults on a block its history did not hold (it learns one). The next
//! round runs the chosen invocations and any other whose history happens to be resident
//! ([`Pacer::ready`]) among the first ones of the list (those the choice looked at, and
//! [`READY_MARGIN`] more): an invocation with a block of its history missing would stop at a
//! fault the runtime knows of, or an earlier one, and teach nothing, so the others wait
//! (carried over to the next list). Before, every pending invocation ran every round: when
//! the pool holds a small part of what they need, most of the device's work was those
//! useless runs (random gathers over 8 times the pool: 220 runs per invocation, 5 after;
//! 1.7 s -> 0.35 s).
//!
//! Invariants: a history lists distinct blocks, newest first, at most `capacity` of them (an
//! invocation needing more at once cannot complete: its rounds stop progressing and fall
//! back to the solo rounds of `launch.rs`, which report it). Histories live in one
//! append-only arena, as linked lists: learning costs no allocation per invocation.
//!
//! Cost: 4 bytes per invocation of the chunk (32 MiB at 2^23) and 8 per block learned, only
//! once it is paced; per round, one pass over the output list, a choice that stops once
//! the pool is full, and the readiness test of the invocations it looked at (plus
//! [`READY_MARGIN`]).

use std::collections::HashSet;

/// Invocations [`Pacer::choose`] passes over, once the pool is nearly full, before it stops
/// looking for ones whose blocks still fit: bounds the host's work per round.
const PASS_OVER: usize = 256;

/// Invocations past those [`Pacer::choose`] looked at whose histories are checked for
/// [`Pacer::ready`] too (an invocation whose blocks are resident by chance runs): bounds the
/// host's work per round when millions are pending. 4 096 was too few: on gathers over an
/// 8-frame pool the ones resident by chance further down did not run, 46-200 rounds against
/// 26-33.
pub const READY_MARGIN: usize = 1 << 16;

/// The end of a history list.
const END: u32 = u32::MAX;

/// The histories of a paced chunk's invocations.
pub struct Pacer {
    /// Indexed by chunk-local invocation id: the arena index of its newest block, or [`END`].
    newest: Vec<u32>,
    /// `(block, arena index of the next older block or END)`, appended only.
    arena: Vec<(u32, u32)>,
    /// The most blocks a history holds: the pool's frames.
    capacity: usize,
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
    /// How many invocations of `pending` the choice looked at: the chosen ones are among
    /// them.
    pub scanned: usize,
}

impl Pacer {
    /// Empty histories for a chunk of `n` invocations and a pool of `capacity` frames.
    pub fn new(n: u32, capacity: usize) -> Pacer {
        Pacer { newest: vec![END; n as usize], arena: Vec::new(), capacity }
    }

    /// Invocation `id`'s history, newest first.
    fn history(&self, id: u32) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.newest[id as usize];
        std::iter::from_fn(move || {
            let (b, next) = *self.arena.get(at as usize)?;
            at = next;
            Some(b)
        })
    }

    /// Records that invocation `id` (chunk-local, below the chunk's `n`) faulted on `block`.
    /// Returns true when its history grew (the round taught something), false when it held
    /// the block already or holds `capacity` blocks.
    pub fn learn(&mut self, id: u32, block: u32) -> bool {
        let mut len = 0;
        for b in self.history(id) {
            if b == block {
                return false;
            }
            len += 1;
        }
        if len >= self.capacity {
            return false;
        }
        let at = self.arena.len() as u32;
        self.arena.push((block, self.newest[id as usize]));
        self.newest[id as usize] = at;
        true
    }

    /// True when every block of invocation `id`'s history is resident (`resident(b)`), so
    /// that running it can complete it or teach a new block; true for an empty history.
    pub fn ready(&self, id: u32, resident: impl Fn(u32) -> bool) -> bool {
        self.history(id).all(resident)
    }

    /// The blocks to make resident for the next round: the histories of the invocations
    /// `pending` lists, in its order, each whole or not at all, while all chosen blocks fit
    /// the pool. `resident(b)`: block `b` has a device copy now. (Choosing in the order of
    /// their ids instead was deterministic but, on random gathers, always as slow as the
    /// slowest runs in list order: 157 rounds against 40-157.)
    pub fn choose(&self, pending: impl Iterator<Item = u32>, resident: impl Fn(u32) -> bool) -> Choice {
        let mut chosen: HashSet<u32> = HashSet::new();
        let mut choice = Choice::default();
        let add = |b: u32, chosen: &mut HashSet<u32>, choice: &mut Choice| {
            if chosen.insert(b) {
                if resident(b) { choice.keep.push(b) } else { choice.load.push(b) }
            }
        };
        let mut passed = 0;
        for id in pending {
            choice.scanned += 1;
            if self.newest[id as usize] == END {
                continue; // nothing known: it runs anyway
            }
            let new = self.history(id).filter(|b| !chosen.contains(b)).count();
            if chosen.len() + new > self.capacity {
                passed += 1;
                if passed > PASS_OVER || chosen.len() == self.capacity {
                    break;
                }
                continue;
            }
            for b in self.history(id) {
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
    fn histories_grow_to_the_pool_then_stop() {
        let mut p = Pacer::new(2, 3);
        assert!(p.learn(1, 10));
        assert!(!p.learn(1, 10), "a block it knew");
        assert!(p.learn(1, 11) && p.learn(1, 12));
        assert!(!p.learn(1, 13), "as many as the pool holds: not progress");
        assert_eq!(p.history(1).collect::<Vec<_>>(), vec![12, 11, 10]);
        assert_eq!(p.history(0).count(), 0);
    }

    #[test]
    fn choices_take_whole_histories_in_order_while_they_fit() {
        let mut p = Pacer::new(4, 3);
        // 0 needs {1, 2}; 1 needs {2, 3, 4}; 2 needs {5}; 3 nothing known.
        for (id, b) in [(0, 1), (0, 2), (1, 2), (1, 3), (1, 4), (2, 5)] {
            p.learn(id, b);
        }
        let resident = |b: u32| b == 2;
        let c = p.choose([3, 0, 1, 2].into_iter(), resident);
        // 0 fits ({1, 2}); 1 would make 4; 2 fits ({5}).
        assert_eq!(c, Choice { keep: vec![2], load: vec![1, 5], invocations: 2, scanned: 4 });
        p.capacity = 4;
        let c = p.choose([0, 1, 2].into_iter(), resident);
        assert_eq!(c, Choice { keep: vec![2], load: vec![1, 4, 3], invocations: 2, scanned: 3 });
    }

    #[test]
    fn the_scan_stops_once_the_pool_is_full() {
        let mut p = Pacer::new(1000, 10);
        for id in 0..1000 {
            p.learn(id, id);
        }
        let c = p.choose(0..1000, |_| false);
        assert_eq!((c.load.len(), c.invocations), (10, 10));
        // The eleventh does not fit and the pool is full: the scan ends there.
        assert_eq!(c.scanned, 11);
    }
}
