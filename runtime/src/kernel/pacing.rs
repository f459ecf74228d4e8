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
//! fault the runtime knows of, or an earlier one, and teach nothing, so the others wait in
//! the paced *backlog*, a queue on the host in the list's order ([`Backlog`]:
//! the id list holds only the invocations that run next, and the ones that stopped go back
//! to the backlog's front). Before, every pending invocation ran every round: when
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
//! once it is paced, and 4 per pending invocation in the backlog; per round, one pass over
//! the output list, a choice that stops once the pool is full, and the readiness test of
//! the invocations it looked at (plus [`READY_MARGIN`]). The invocations that wait beyond
//! those are not touched: when they were carried over from list to list, that copy was
//! most of the host's time with millions pending (random gathers of 64 MiB over a 1 MiB
//! pool: 164 s, 19 s with the backlog).

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

/// The paced list's invocations that do not run next, in the list's order (chunk-local
/// ids): the id list holds only those that run (`launch.rs`). A queue without wrap-around:
/// the live ids are `ids[start..]`, and the room before them takes the ones that stop, so
/// that a round's work is the entries it looks at (the first ones), not the whole queue.
#[derive(Default)]
pub struct Backlog {
    ids: Vec<u32>,
    /// Where the front is; `ids[..start]` is free room.
    start: usize,
}

impl Backlog {
    /// Invocations waiting.
    pub fn len(&self) -> usize {
        self.ids.len() - self.start
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first one.
    pub fn front(&self) -> Option<u32> {
        self.ids.get(self.start).copied()
    }

    /// The waiting ones, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids[self.start..].iter().copied()
    }

    /// Puts `ids` before the others, in their order. When the room in front is too small,
    /// the queue is copied once with as much room as it holds (a round's invocations that
    /// stop are fewer than those it took out, so that is rare).
    pub fn push_front(&mut self, ids: impl ExactSizeIterator<Item = u32>) {
        let n = ids.len();
        if self.start < n {
            let live = self.len();
            let room = n.max(live).max(64);
            let mut grown = Vec::with_capacity(room + live);
            grown.resize(room, 0);
            grown.extend_from_slice(&self.ids[self.start..]);
            self.ids = grown;
            self.start = room;
        }
        self.start -= n;
        for (slot, id) in self.ids[self.start..self.start + n].iter_mut().zip(ids) {
            *slot = id;
        }
    }

    /// Takes the invocations `ready` accepts among the first `tested` out of the queue,
    /// passing each to `run` in order; the others keep their places and order. Returns how
    /// many it took.
    pub fn take_ready(&mut self, tested: usize, ready: impl Fn(u32) -> bool, mut run: impl FnMut(u32)) -> usize {
        let front = &mut self.ids[self.start..][..tested];
        let mut kept = 0;
        for i in 0..tested {
            let id = front[i];
            if ready(id) {
                run(id);
            } else {
                front[kept] = id;
                kept += 1;
            }
        }
        front.copy_within(..kept, tested - kept);
        self.start += tested - kept;
        tested - kept
    }

    /// Empties the queue, yielding the ids in order.
    pub fn drain(&mut self) -> impl Iterator<Item = u32> {
        let start = std::mem::take(&mut self.start);
        std::mem::take(&mut self.ids).into_iter().skip(start)
    }
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
    fn the_backlog_keeps_its_order() {
        let mut q = Backlog::default();
        q.push_front([5, 2, 8, 3, 6, 4].into_iter());
        let mut ran = Vec::new();
        // The first five are tested; even ids are ready.
        assert_eq!(q.take_ready(5, |id| id % 2 == 0, |id| ran.push(id)), 3);
        assert_eq!(ran, [2, 8, 6]);
        assert_eq!(q.iter().collect::<Vec<_>>(), [5, 3, 4], "the others in order, the untested last");
        // Those that stopped go first; the room in front is reused, then grown.
        q.push_front([9, 7].into_iter());
        q.push_front((100..200).rev());
        assert_eq!((q.len(), q.front()), (105, Some(199)));
        assert_eq!(q.iter().skip(100).collect::<Vec<_>>(), [9, 7, 5, 3, 4]);
        assert_eq!(q.take_ready(0, |_| true, |_| panic!("none tested")), 0);
        assert_eq!(q.drain().count(), 105);
        assert!(q.is_empty() && q.front().is_none());
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
