//! A small futex mutex for the allocator's few global locks (region page heaps, orphan
//! lists, metadata pools). Never allocates, so it can be used inside `malloc`, and is
//! `const`-constructible so locks can live in statics initialised before `main`. The runtime
//! uses it too where a lock must be held across `fork` (`force_lock` / `force_unlock`).
//!
//! State: 0 = unlocked, 1 = locked, 2 = locked with possible waiters.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering, Ordering::*};

/// The mutex.
pub struct Mutex<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the mutex hands out `&mut T` only to the one thread holding the lock, so a
// `T: Send` may be reached from any thread.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the `T` with it.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Mutex { state: AtomicU32::new(0), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, spinning briefly and then sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        if self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        Guard { m: self }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..64 {
            core::hint::spin_loop();
            if self.state.load(Relaxed) == 0
                && self.state.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
            {
                return;
            }
        }
        // From here on acquire with state 2: after a wake-up there may be other sleepers,
        // and taking the lock as 1 would let the unlock skip their wake-up (Drepper,
        // "Futexes Are Tricky", mutex 3).
        while self.state.swap(2, Acquire) != 0 {
            futex_wait(&self.state, 2);
        }
    }

    /// Release without a guard: the other half of [`Mutex::force_lock`], for fork handlers.
    ///
    /// # Safety
    /// The caller must hold the lock through `force_lock` (or, in a fork child, the
    /// parent's holder is gone and this thread is the only one).
    pub unsafe fn force_unlock(&self) {
        if self.state.swap(0, Ordering::Release) == 2 {
            futex_wake(&self.state);
        }
    }

    /// Take the lock and keep it without a guard (for `pthread_atfork` prepare handlers,
    /// which lock before `fork` and unlock in both parent and child).
    pub fn force_lock(&self) {
        core::mem::forget(self.lock());
    }

    /// The value without locking.
    ///
    /// # Safety
    /// No other thread may use the value concurrently (initialisation, tests).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_unlocked(&self) -> &mut T {
        // SAFETY: exclusivity is the caller's promise.
        unsafe { &mut *self.value.get() }
    }
}

/// Holds the lock until dropped.
pub struct Guard<'a, T> {
    m: &'a Mutex<T>,
}

impl<T> core::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held by this thread.
        unsafe { &*self.m.value.get() }
    }
}

impl<T> core::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held by this thread.
        unsafe { &mut *self.m.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds the lock.
        unsafe { self.m.force_unlock() }
    }
}

// Both futex calls keep `errno` as they found it: they run inside malloc and free, which
// must not change errno when they succeed (programs check errno after calls that allocate).

fn futex_wait(word: &AtomicU32, expected: u32) {
    let saved = crate::os::errno();
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 of this process; returns on wake,
    // mismatch (EAGAIN) or signal (EINTR), all of which the caller's loop handles.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
    crate::os::set_errno(saved);
}

fn futex_wake(word: &AtomicU32) {
    let saved = crate::os::errno();
    // SAFETY: FUTEX_WAKE on a valid, aligned u32 of this process.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
    }
    crate::os::set_errno(saved);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn mutual_exclusion_under_contention() {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 400_000);
    }
}
