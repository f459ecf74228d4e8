//! The launch lock: a running kernel launch excludes whatever would move or drop device
//! copies under its dispatch — explicit migrations and reaping (`Space::to_device`,
//! `to_host`, `evict`, `discard`, `reap_stale`, so `prefetch`, `advise`, `discard` and
//! `unimem_sync` on other threads) and `fork` (whose prepare handler brings every Device
//! block home). CPU faults never take it (`twin.rs` keeps their writes).
//!
//! - **Reentrant per thread**: a thread that holds it (a launch calling `to_device`, the fork
//!   handler calling `all_home`) passes through. One lock per process (one `Space`).
//! - **Launches and `fork` go first**: the mutex underneath (the allocator's futex mutex,
//!   `alloc/src/lock.rs`, which the fork handlers can hold without a guard) is not fair, so
//!   a thread migrating in a loop could re-take it before a woken launch runs; while a
//!   launch or a fork waits, other takers wait for it before locking (at most one that was
//!   already queued slips ahead).
//! - The fork prepare handler holds it across the fork (glibc's atfork lock is held too, so
//!   a launching thread must not call `pthread_atfork` or `fork`; nothing in a launch does).

use super::service::{futex_wait, futex_wake};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use unimem_alloc::lock::Mutex;

thread_local! {
    /// This thread holds the launch lock.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// The lock.
pub struct LaunchLock {
    mutex: Mutex<()>,
    /// Launches and forks waiting for the mutex.
    priority: AtomicU32,
    /// Other takers sleeping until `priority` is 0.
    held_back: AtomicU32,
    /// The fork prepare handler took the lock (rather than finding it held by its thread).
    fork_took: AtomicBool,
}

/// Holds the lock until dropped (or nothing, when this thread held it already).
pub struct Exclusive<'a> {
    lock: Option<&'a LaunchLock>,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.lock {
            l.release();
        }
    }
}

impl LaunchLock {
    /// A free lock.
    pub const fn new() -> LaunchLock {
        LaunchLock { mutex: Mutex::new(()), priority: AtomicU32::new(0), held_back: AtomicU32::new(0), fork_took: AtomicBool::new(false) }
    }

    /// Takes the lock for an explicit migration: after any launch or fork waiting for it.
    pub fn exclusive(&self) -> Exclusive<'_> {
        if HELD.with(Cell::get) {
            return Exclusive { lock: None };
        }
        self.held_back.fetch_add(1, SeqCst);
        loop {
            let p = self.priority.load(SeqCst);
            if p == 0 {
                break;
            }
            futex_wait(&self.priority, p);
        }
        self.held_back.fetch_sub(1, SeqCst);
        self.take();
        Exclusive { lock: Some(self) }
    }

    /// Takes the lock for a launch, ahead of explicit migrations.
    pub fn launch(&self) -> Exclusive<'_> {
        if HELD.with(Cell::get) {
            return Exclusive { lock: None };
        }
        self.take_first();
        Exclusive { lock: Some(self) }
    }

    /// The fork prepare handler: takes the lock ahead of explicit migrations and keeps it
    /// until [`LaunchLock::release_after_fork`].
    pub fn hold_for_fork(&self) {
        if !HELD.with(Cell::get) {
            self.take_first();
            self.fork_took.store(true, Relaxed);
        }
    }

    /// The fork parent and child handlers. In the child the forking thread is the only one:
    /// nobody waits any more.
    pub fn release_after_fork(&self, child: bool) {
        if child {
            self.priority.store(0, Relaxed);
            self.held_back.store(0, Relaxed);
        }
        // Only what `hold_for_fork` took: a thread that forks while holding the lock keeps it.
        if self.fork_took.swap(false, Relaxed) {
            self.release();
        }
    }

    fn take_first(&self) {
        self.priority.fetch_add(1, SeqCst);
        self.take();
        self.priority.fetch_sub(1, SeqCst);
        if self.held_back.load(SeqCst) != 0 {
            futex_wake(&self.priority);
        }
    }

    fn take(&self) {
        self.mutex.force_lock();
        HELD.with(|h| h.set(true));
    }

    fn release(&self) {
        HELD.with(|h| h.set(false));
        // SAFETY: this thread took it (`take`), or, in a fork child, the forking thread did.
        unsafe { self.mutex.force_unlock() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    #[test]
    fn reentrant_exclusive_and_launches_go_first() {
        let lock = LaunchLock::new();
        {
            let _a = lock.exclusive();
            let _b = lock.exclusive(); // reentrant
            let _c = lock.launch();
        }
        // A thread taking and releasing the lock in a loop does not starve a launch.
        let stop = AtomicBool::new(false);
        let inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(Relaxed) {
                        let _g = lock.exclusive();
                        assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        inside.fetch_sub(1, SeqCst);
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            let t = std::time::Instant::now();
            for _ in 0..20 {
                let _g = lock.launch();
                assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                inside.fetch_sub(1, SeqCst);
            }
            stop.store(true, Relaxed);
            // Each launch waits for at most the holder and one queued taker (~0.4 ms).
            assert!(t.elapsed() < std::time::Duration::from_millis(500), "launches starved: {:?}", t.elapsed());
        });
        lock.hold_for_fork();
        lock.release_after_fork(true);
        drop(lock.exclusive());
        // Forking while holding it: the holder keeps it through the fork.
        let g = lock.exclusive();
        lock.hold_for_fork();
        lock.release_after_fork(false);
        assert!(HELD.with(Cell::get));
        drop(g);
        assert!(!HELD.with(Cell::get));
    }
}
