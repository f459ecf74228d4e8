//! Spill logs: how an invocation whose private logs overflowed is still replayed exactly.
//!
//! An invocation normally buffers its stores in a private log of `prelude::STORE_LOG` words
//! and saves its atomics' results in `prelude::ATOMIC_LOG` words of the atomic-log buffer
//! (see `prelude.rs`). When either is full, the invocation does not store through or run an
//! unlogged atomic: it stops *before* the access, like a fault, and is **escalated**: the
//! runtime restarts it from the start in a *spill round*, where its logs live in a slot of
//! the spill buffer, sized for it:
//!
//! ```text
//! slot (SlotLayout::words() u32 words, one per escalated invocation of the batch):
//!   [SLOT_STATUS]   written by the invocation when it ends: STATUS_*
//!   [SLOT_ATOMICS]  atomics whose results are saved below (set from the record, advanced
//!                   by the invocation)
//!   [SLOT_ID]       the invocation's id (written by the runtime)
//!   [SLOT_FAULT]    with STATUS_FAULTED: the block it faulted on (written by the invocation;
//!                   paced rounds learn it, `pacing.rs`)
//!   [SLOT_HEADER..] `atomics` saved results, then a hash table of `stores` entries
//!                   (address lo, address hi, value; address 0 = empty), linear probing of at
//!                   most `PROBES` entries (unrolled: lavapipe cuts long loops short)
//! ```
//!
//! `stores` is 0 (no table) until an invocation of the launch overflowed its private store
//! log: invocations escalated only for their atomics keep the private store log and commit
//! it themselves when they complete, so they need no commit pass. With a table, after the
//! spill round a **commit pass** (the same pipeline, mode `MODE_COMMIT`, one
//! invocation per table entry) writes the tables of the slots whose invocation completed to
//! memory and marks their blocks dirty; nothing is evicted between the two dispatches.
//! Invocations that faulted are requeued with the atomic results they saved; one whose table
//! or atomic log filled (or had a probe sequence of `PROBES` full entries) is requeued and the
//! capacity doubles for the next batch. Nothing of a requeued invocation's stores is kept, so
//! its restart stores again from scratch, and its atomics return the saved results.
//!
//! Invariants:
//! - a record's `atomics` are exactly the results of the invocation's first
//!   `atomics.len()` atomics, in order: they were applied to memory exactly once;
//! - a batch fits `BUDGET_BYTES`; a single slot larger than that is an error
//!   ([`SpillError`]), never a silent truncation;
//! - `stores` is 0 or a power of two (the table index is the top log2(`stores`) bits of a
//!   multiplicative hash of the word address, so words at a fixed stride spread evenly).

use std::collections::VecDeque;

/// Slot word: the status the invocation leaves.
pub const SLOT_STATUS: usize = 0;
/// Slot word: saved atomic results.
pub const SLOT_ATOMICS: usize = 1;
/// Slot word: the invocation id.
pub const SLOT_ID: usize = 2;
/// Slot word: the block a faulted invocation stopped at.
pub const SLOT_FAULT: usize = 3;
/// Words before the atomic results.
pub const SLOT_HEADER: usize = 4;

/// Status: the invocation completed (its table is committed).
pub const STATUS_DONE: u32 = 1;
/// Status: it faulted on a block (restart once migrated).
pub const STATUS_FAULTED: u32 = 2;
/// Status: its store table was full.
pub const STATUS_STORES_FULL: u32 = 3;
/// Status: its atomic log was full.
pub const STATUS_ATOMICS_FULL: u32 = 4;

/// Round mode: ordinary round, private logs.
pub const MODE_NORMAL: u32 = 0;
/// Round mode: escalated invocations, one spill slot each.
pub const MODE_SPILL: u32 = 1;
/// Round mode: commit the tables of completed slots.
pub const MODE_COMMIT: u32 = 2;

/// Table entries probed before a store counts as "table full".
pub const PROBES: u32 = 8;
/// Words per table entry.
pub const ENTRY_WORDS: usize = 3;
/// First table size (entries).
pub const INITIAL_STORES: u32 = 128;
/// First atomic log size (results).
pub const INITIAL_ATOMICS: u32 = 32;
/// Most bytes one spill batch takes (and so the largest slot).
pub const BUDGET_BYTES: usize = 64 << 20;

/// The geometry of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    /// Table entries (a power of two), or 0: no table, the private store log is used.
    pub stores: u32,
    /// Saved atomic results.
    pub atomics: u32,
}

impl SlotLayout {
    /// Words of one slot.
    pub fn words(&self) -> usize {
        SLOT_HEADER + self.atomics as usize + ENTRY_WORDS * self.stores as usize
    }
    /// Word offset of the table within a slot.
    pub fn table_at(&self) -> usize {
        SLOT_HEADER + self.atomics as usize
    }
}

/// An escalated invocation waiting for (or in) a spill round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalated {
    /// The invocation id.
    pub id: u32,
    /// Results of its first atomics, already applied to memory.
    pub atomics: Vec<u32>,
}

/// One invocation's logs outgrew what a spill batch may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpillError {
    /// The invocation.
    pub invocation: u32,
    /// "stores" or "atomics".
    pub what: &'static str,
    /// Entries it had when it overflowed.
    pub entries: u32,
}

impl std::fmt::Display for SpillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invocation {} needs more than {} logged {} in one run; an invocation's stores and atomic results are kept until it completes so that a replay applies nothing twice, and one invocation may keep at most {} MiB of them. Make its data resident before the launch (unimem_prefetch / advise), or split its work over more invocations",
            self.invocation,
            self.entries,
            self.what,
            BUDGET_BYTES >> 20
        )
    }
}

/// What a spill round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Slots whose invocation completed (their tables need the commit pass).
    pub done: u32,
    /// Invocations requeued because they faulted.
    pub faulted: u32,
    /// The faulted invocations and the block each stopped at: (id, block).
    pub faults: Vec<(u32, u32)>,
    /// Invocations requeued because a log was full (capacities grew).
    pub grew: u32,
    /// Requeued invocations that saved more atomic results than they started the round with:
    /// they advanced (those atomics do not run again), though they did not complete.
    pub advanced: u32,
}

/// The escalated invocations of one launch and the slot geometry they run with.
#[derive(Debug)]
pub struct Spill {
    layout: SlotLayout,
    queue: VecDeque<Escalated>,
    /// Slots of the batch laid out last (the queue's first `batch` records).
    batch: usize,
}

impl Default for Spill {
    fn default() -> Spill {
        Spill::new()
    }
}

impl Spill {
    /// No escalated invocations; initial capacities.
    pub fn new() -> Spill {
        Spill { layout: SlotLayout { stores: 0, atomics: INITIAL_ATOMICS }, queue: VecDeque::new(), batch: 0 }
    }

    /// Gives the next batches a store table (an invocation overflowed its private store log).
    pub fn need_table(&mut self) {
        self.layout.stores = self.layout.stores.max(INITIAL_STORES);
    }

    /// The current slot geometry.
    pub fn layout(&self) -> SlotLayout {
        self.layout
    }

    /// Invocations waiting for a spill round.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no invocation waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The invocations the next batch runs, in order (the queue's first
    /// [`Spill::next_batch_len`]).
    pub fn next_batch(&self) -> impl Iterator<Item = u32> + '_ {
        self.queue.iter().take(self.next_batch_len()).map(|e| e.id)
    }

    /// The first waiting invocation.
    pub fn first(&self) -> Option<u32> {
        self.queue.front().map(|e| e.id)
    }

    /// Queues an invocation escalated from an ordinary round (with its saved atomics).
    pub fn push(&mut self, e: Escalated) {
        self.queue.push_back(e);
    }

    /// Slots of the next batch (all waiting invocations, within [`BUDGET_BYTES`]).
    pub fn next_batch_len(&self) -> usize {
        self.queue.len().min((BUDGET_BYTES / (self.layout.words() * 4)).max(1))
    }

    /// Lays out the next batch of `slots` (from [`Spill::next_batch_len`]) into `words`,
    /// which holds at least `slots * layout().words()` words: headers set, saved atomics
    /// copied, tables empty.
    pub fn lay_out(&mut self, words: &mut [u32], slots: usize) {
        let l = self.layout;
        let w = l.words();
        debug_assert!(slots <= self.queue.len() && words.len() >= slots * w);
        for (i, e) in self.queue.iter().take(slots).enumerate() {
            let slot = &mut words[i * w..(i + 1) * w];
            slot.fill(0);
            debug_assert!(e.atomics.len() <= l.atomics as usize, "capacities only grow");
            slot[SLOT_ATOMICS] = e.atomics.len() as u32;
            slot[SLOT_ID] = e.id;
            slot[SLOT_HEADER..SLOT_HEADER + e.atomics.len()].copy_from_slice(&e.atomics);
        }
        self.batch = slots;
    }

    /// Reads the batch's statuses from `words` after the spill round: completed invocations
    /// leave the queue; the others stay at its front, in order, with the atomic results their
    /// slot saved (so the next batch starts with them); a full log doubles that capacity for
    /// the next batch.
    pub fn collect(&mut self, words: &[u32]) -> Result<Collected, SpillError> {
        let l = self.layout;
        let w = l.words();
        let mut c = Collected::default();
        let (mut grow_stores, mut grow_atomics) = (None, None);
        let mut again: Vec<Escalated> = Vec::new();
        for i in 0..self.batch {
            let mut e = self.queue.pop_front().expect("the batch is at the queue's front");
            let slot = &words[i * w..(i + 1) * w];
            debug_assert_eq!(slot[SLOT_ID], e.id);
            let saved = (slot[SLOT_ATOMICS] as usize).min(l.atomics as usize);
            let before = e.atomics.len();
            e.atomics.clear();
            e.atomics.extend_from_slice(&slot[SLOT_HEADER..SLOT_HEADER + saved]);
            match slot[SLOT_STATUS] {
                STATUS_DONE => {
                    c.done += 1;
                    continue;
                }
                STATUS_STORES_FULL => {
                    grow_stores.get_or_insert(e.id);
                    c.grew += 1;
                }
                STATUS_ATOMICS_FULL => {
                    grow_atomics.get_or_insert(e.id);
                    c.grew += 1;
                }
                STATUS_FAULTED => {
                    c.faulted += 1;
                    c.faults.push((e.id, slot[SLOT_FAULT]));
                }
                // Stopped by an error (which ends the launch anyway).
                _ => c.faulted += 1,
            }
            c.advanced += u32::from(e.atomics.len() > before);
            again.push(e);
        }
        for e in again.into_iter().rev() {
            self.queue.push_front(e);
        }
        self.batch = 0;
        let mut next = l;
        if let Some(id) = grow_stores {
            next.stores = if l.stores == 0 {
                INITIAL_STORES
            } else {
                l.stores.checked_mul(2).ok_or(SpillError { invocation: id, what: "stores", entries: l.stores })?
            };
        }
        if let Some(id) = grow_atomics {
            next.atomics = l.atomics.checked_mul(2).ok_or(SpillError { invocation: id, what: "atomics", entries: l.atomics })?;
        }
        if next.words() * 4 > BUDGET_BYTES {
            let (id, what, entries) = match (grow_stores, grow_atomics) {
                (Some(id), _) => (id, "stores", l.stores),
                (_, Some(id)) => (id, "atomics", l.atomics),
                _ => unreachable!("the layout only grows when a log was full"),
            };
            return Err(SpillError { invocation: id, what, entries });
        }
        self.layout = next;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u32, atomics: &[u32]) -> Escalated {
        Escalated { id, atomics: atomics.to_vec() }
    }

    #[test]
    fn lay_out_writes_headers_and_saved_atomics_and_empty_tables() {
        let mut s = Spill::new();
        assert_eq!(s.layout().words(), SLOT_HEADER + INITIAL_ATOMICS as usize, "no table until needed");
        s.need_table();
        s.push(rec(5, &[1, 2, 3]));
        s.push(rec(9, &[]));
        let l = s.layout();
        let mut words = vec![0xdead_beefu32; 2 * l.words()];
        let n = s.next_batch_len();
        assert_eq!(n, 2);
        s.lay_out(&mut words, n);
        let (a, b) = words.split_at(l.words());
        assert_eq!((a[SLOT_STATUS], a[SLOT_ATOMICS], a[SLOT_ID]), (0, 3, 5));
        assert_eq!(&a[SLOT_HEADER..SLOT_HEADER + 3], &[1, 2, 3]);
        assert!(a[l.table_at()..].iter().all(|&w| w == 0), "empty table");
        assert_eq!((b[SLOT_ATOMICS], b[SLOT_ID]), (0, 9));
    }

    #[test]
    fn collect_requeues_with_saved_atomics_and_grows_full_logs() {
        let mut s = Spill::new();
        for id in 0..4 {
            s.push(rec(id, &[]));
        }
        let l = s.layout();
        let mut words = vec![0u32; 4 * l.words()];
        s.lay_out(&mut words, 4);
        let status = [STATUS_DONE, STATUS_FAULTED, STATUS_STORES_FULL, STATUS_ATOMICS_FULL];
        for (i, st) in status.iter().enumerate() {
            let slot = &mut words[i * l.words()..];
            slot[SLOT_STATUS] = *st;
            slot[SLOT_FAULT] = 70 + i as u32;
            slot[SLOT_ATOMICS] = 2;
            slot[SLOT_HEADER] = 10 + i as u32;
            slot[SLOT_HEADER + 1] = 20 + i as u32;
        }
        let c = s.collect(&words).unwrap();
        assert_eq!(c, Collected { done: 1, faulted: 1, faults: vec![(1, 71)], grew: 2, advanced: 3 });
        assert_eq!(s.len(), 3);
        assert_eq!(s.first(), Some(1));
        assert_eq!(s.queue[0].atomics, vec![11, 21], "the atomics it applied are remembered");
        assert_eq!(s.layout(), SlotLayout { stores: INITIAL_STORES, atomics: 2 * INITIAL_ATOMICS }, "a first table");
        let n = s.len();
        let mut words = vec![0u32; n * s.layout().words()];
        s.lay_out(&mut words, n);
        words[SLOT_STATUS] = STATUS_STORES_FULL;
        s.collect(&words).unwrap();
        assert_eq!(s.layout().stores, 2 * INITIAL_STORES, "then doubling");
    }

    #[test]
    fn a_slot_beyond_the_budget_is_an_error_naming_the_invocation() {
        let mut s = Spill::new();
        s.push(rec(77, &[]));
        let mut rounds = 0;
        let e = loop {
            let n = s.next_batch_len();
            let mut words = vec![0u32; n * s.layout().words()];
            s.lay_out(&mut words, n);
            words[SLOT_STATUS] = STATUS_STORES_FULL;
            match s.collect(&words) {
                Ok(_) => rounds += 1,
                Err(e) => break e,
            }
        };
        assert!(rounds > 10);
        assert_eq!((e.invocation, e.what), (77, "stores"));
        assert!(e.to_string().contains("invocation 77") && e.to_string().contains("64 MiB"), "{e}");
    }

    #[test]
    fn batches_stay_within_the_budget() {
        let mut s = Spill::new();
        s.need_table();
        for id in 0..100_000 {
            s.push(rec(id, &[]));
        }
        let n = s.next_batch_len();
        assert!(n < 100_000 && n * s.layout().words() * 4 <= BUDGET_BYTES);
    }
}
