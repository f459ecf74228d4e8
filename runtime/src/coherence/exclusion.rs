//! The launch lock: a running kernel launch excludes whatever would move or drop device
//! copies under its dispatch from other threads — explicit migrations (`prefetch`,
//! `advise`, `discard`) and `fork` (which brings every Device block home first). CPU faults
//! never take it (they wait for nothing a launch holds; `twin.rs` keeps their writes).
//!
//! A futex lock rather than a `std::sync::Mutex` because `fork` needs it held across the
//! fork (taken in the `pthread_atfork` prepare handler, released in the parent's handler,
//! reset in the child's, where the thread that took it is the only one left) without a
//! guard object. States: 0 free, 1 held, 2 held with waiters (the waker makes the system
//! call only then).

use super::service::{futex_wait, futex_wake};
use std::sync::atomic::{AtomicU32, Ordering::*};

/// The lock word.
pub struct LaunchLock {
    word: AtomicU32,
}

/// Holds the lock until dropped.
pub struct Exclusive<'a> {
    lock: &'a LaunchLock,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

impl LaunchLock {
    /// A free lock.
    pub const fn new() -> LaunchLock {
        LaunchLock { word: AtomicU32::new(0) }
    }

    /// Takes the lock, sleeping while another thread holds it.
    pub fn lock(&self) -> Exclusive<'_> {
        self.acquire();
        Exclusive { lock: self }
    }

    /// Takes the lock without a guard (the fork prepare handler); release with
    /// [`LaunchLock::unlock`] or, in a fork child, [`LaunchLock::reset`].
    pub fn acquire(&self) {
        if self.word.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
        // Contended: announce a waiter (2) and sleep until the word is free.
        while self.word.swap(2, Acquire) != 0 {
            futex_wait(&self.word, 2);
        }
    }

    /// Releases the lock, waking a waiter if there is one.
    pub fn unlock(&self) {
        if self.word.swap(0, Release) == 2 {
            futex_wake(&self.word);
        }
    }

    /// In a fork child: the lock is free (the forking thread, the only one left, took it in
    /// the prepare handler and holds nothing else of it).
    pub fn reset(&self) {
        self.word.store(0, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn the_lock_excludes_and_wakes_waiters() {
        let lock = LaunchLock::new();
        let inside = AtomicUsize::new(0);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        let _g = lock.lock();
                        assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                        total.fetch_add(1, Relaxed);
                        inside.fetch_sub(1, SeqCst);
                    }
                });
            }
        });
        assert_eq!(total.load(Relaxed), 8000);
        lock.acquire();
        lock.reset();
        drop(lock.lock());
    }
}
