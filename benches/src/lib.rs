//! Allocator workloads shared by the criterion benchmark (`benches/alloc.rs`) and the
//! profiling driver (`examples/alloc_driver.rs`); results and method in docs/PERFORMANCE.md.
//!
//! Each allocator under test is called directly through [`Alloc`] (no `#[global_allocator]`
//! anywhere: the harness keeps the system allocator), so every workload is written once and
//! monomorphised for [`Unimem`], [`Glibc`] and [`Mimalloc`].

#![warn(unsafe_op_in_unsafe_fn)]

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

// The `mimalloc` crate links libmimalloc-sys (mimalloc built from source, statically). Its
// C functions are declared here rather than through a direct libmimalloc-sys dependency so
// the workspace lock file does not change; these are the symbols libmimalloc-sys declares.
extern crate mimalloc;
extern "C" {
    fn mi_malloc(size: usize) -> *mut c_void;
    fn mi_free(p: *mut c_void);
    fn mi_realloc(p: *mut c_void, newsize: usize) -> *mut c_void;
    fn mi_version() -> i32;
}

/// The three operations every workload uses.
pub trait Alloc {
    const NAME: &'static str;
    fn alloc(n: usize) -> *mut u8;
    /// # Safety
    /// `p` is null or a live block of this allocator, not used afterwards.
    unsafe fn free(p: *mut u8);
    /// # Safety
    /// `p` is null or a live block of this allocator; on success it is not used afterwards.
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8;
}

/// unimem-alloc's public functions (the managed heap, as an application thread uses it).
pub struct Unimem;
/// The system allocator: glibc `malloc`/`free`/`realloc`.
pub struct Glibc;
/// mimalloc (the version vendored by libmimalloc-sys): `mi_malloc`/`mi_free`/`mi_realloc`.
pub struct Mimalloc;

impl Alloc for Unimem {
    const NAME: &'static str = "unimem";
    #[inline(always)]
    fn alloc(n: usize) -> *mut u8 {
        unimem_alloc::alloc(n)
    }
    #[inline(always)]
    unsafe fn free(p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { unimem_alloc::free(p) }
    }
    #[inline(always)]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { unimem_alloc::realloc(p, n) }
    }
}

impl Alloc for Glibc {
    const NAME: &'static str = "glibc";
    #[inline(always)]
    fn alloc(n: usize) -> *mut u8 {
        // SAFETY: malloc has no preconditions.
        unsafe { libc::malloc(n) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { libc::free(p as *mut c_void) }
    }
    #[inline(always)]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { libc::realloc(p as *mut c_void, n) as *mut u8 }
    }
}

impl Alloc for Mimalloc {
    const NAME: &'static str = "mimalloc";
    #[inline(always)]
    fn alloc(n: usize) -> *mut u8 {
        // SAFETY: mi_malloc has no preconditions.
        unsafe { mi_malloc(n) as *mut u8 }
    }
    #[inline(always)]
    unsafe fn free(p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { mi_free(p as *mut c_void) }
    }
    #[inline(always)]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { mi_realloc(p as *mut c_void, n) as *mut u8 }
    }
}

/// mimalloc's version as "major.minor.patch".
pub fn mimalloc_version() -> String {
    // SAFETY: a plain query.
    let v = unsafe { mi_version() };
    format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
}

/// Allocate and check: a null would make every later number meaningless.
#[inline(always)]
fn must<A: Alloc>(n: usize) -> *mut u8 {
    let p = A::alloc(n);
    assert!(!p.is_null(), "{}: allocation of {n} bytes failed", A::NAME);
    p
}

/// Write one byte at `p + at` so the block is really used.
#[inline(always)]
fn touch(p: *mut u8, at: usize) {
    // SAFETY: callers pass `at` inside the block `p`.
    unsafe { p.add(at).write_volatile(at as u8) };
}

/// Deterministic xorshift64* generator: the same sequence for every allocator.
pub struct Rng(pub u64);

impl Rng {
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n < 2^32).
    #[inline(always)]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

// ---------------------------------------------------------------------------------------
// 1. Small blocks.

/// `n` times: allocate `size` bytes, write the first byte, free.
#[inline(always)]
pub fn pairs<A: Alloc>(size: usize, n: usize) {
    for _ in 0..n {
        let p = must::<A>(black_box(size));
        touch(p, 0);
        // SAFETY: `p` was just allocated by A.
        unsafe { A::free(black_box(p)) };
    }
}

pub const BATCH: usize = 100;

/// `batches` times: allocate [`BATCH`] blocks of `size` bytes (first byte written), then
/// free them newest first (`lifo`) or oldest first.
#[inline(always)]
pub fn batch<A: Alloc>(size: usize, batches: usize, lifo: bool) {
    let mut ptrs = [std::ptr::null_mut::<u8>(); BATCH];
    for _ in 0..batches {
        for slot in ptrs.iter_mut() {
            let p = must::<A>(black_box(size));
            touch(p, 0);
            *slot = p;
        }
        if lifo {
            for &p in ptrs.iter().rev() {
                // SAFETY: each pointer was allocated by A in this batch.
                unsafe { A::free(black_box(p)) };
            }
        } else {
            for &p in ptrs.iter() {
                // SAFETY: as above.
                unsafe { A::free(black_box(p)) };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. Producer/consumer.

pub const PC_BATCH: usize = 256;

/// A batch of pointers sent by value: the bounded std channel preallocates its slots, so
/// the channel never allocates per message.
struct Batch {
    len: usize,
    ptrs: [usize; PC_BATCH],
}

/// The calling thread allocates `rounds * blocks` blocks of 16..=1024 bytes (mixed, first
/// byte written) and sends them in batches of [`PC_BATCH`] to a consumer thread that reads
/// the first byte and frees them. Returns the time from the first allocation until the
/// consumer has freed the last block (the consumer's spawn is not timed).
pub fn producer_consumer<A: Alloc>(rounds: u64, blocks: usize) -> Duration {
    let (tx, rx) = sync_channel::<Batch>(32);
    let consumer = std::thread::spawn(move || {
        let mut sum = 0usize;
        while let Ok(batch) = rx.recv() {
            for &p in &batch.ptrs[..batch.len] {
                let p = p as *mut u8;
                // SAFETY: the producer allocated `p` with A and gave it up.
                sum += unsafe { p.read_volatile() } as usize;
                // SAFETY: as above.
                unsafe { A::free(p) };
            }
        }
        sum
    });
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let empty = || Batch {
        len: 0,
        ptrs: [0; PC_BATCH],
    };
    let start = Instant::now();
    for _ in 0..rounds {
        let mut batch = empty();
        for _ in 0..blocks {
            let lo = 16usize << rng.below(6); // 16..=512, size lo..=2*lo
            let size = lo + rng.below(lo as u64 + 1) as usize;
            let p = must::<A>(size);
            touch(p, 0);
            batch.ptrs[batch.len] = p as usize;
            batch.len += 1;
            if batch.len == PC_BATCH {
                tx.send(std::mem::replace(&mut batch, empty())).unwrap();
            }
        }
        if batch.len > 0 {
            tx.send(batch).unwrap();
        }
    }
    drop(tx);
    black_box(consumer.join().unwrap());
    start.elapsed()
}

// ---------------------------------------------------------------------------------------
// 3. realloc growth.

/// Vector push pattern: 16 bytes, doubled by realloc up to 16 MiB (20 reallocs), the new
/// last byte written each time; then freed.
#[inline(always)]
pub fn realloc_double<A: Alloc>() {
    let mut n = 16usize;
    let mut p = must::<A>(n);
    touch(p, n - 1);
    while n < 16 << 20 {
        n *= 2;
        // SAFETY: `p` is the live block of A.
        p = unsafe { A::realloc(p, n) };
        assert!(!p.is_null());
        touch(p, n - 1);
    }
    // SAFETY: as above.
    unsafe { A::free(black_box(p)) };
}

/// String append pattern: 16 bytes grown by realloc in steps of 1..=64 bytes (the same
/// sequence every time) up to 1 MiB (about 32k reallocs), the new last byte written each
/// time; then freed.
#[inline(always)]
pub fn realloc_append<A: Alloc>() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut n = 16usize;
    let mut p = must::<A>(n);
    touch(p, n - 1);
    while n < 1 << 20 {
        n += 1 + rng.below(64) as usize;
        // SAFETY: `p` is the live block of A.
        p = unsafe { A::realloc(p, n) };
        assert!(!p.is_null());
        touch(p, n - 1);
    }
    // SAFETY: as above.
    unsafe { A::free(black_box(p)) };
}

// ---------------------------------------------------------------------------------------
// 4. Mixed sizes over a working set.

pub const SLOTS: usize = 10_000;
pub const STEPS: usize = 10_000;

/// Mostly 8-512 B (90%), some 1-64 KiB (9.8%), rare 256 KiB-2 MiB (0.2%), each range
/// log-uniform.
#[inline(always)]
pub fn mixed_size(rng: &mut Rng) -> usize {
    let r = rng.below(1000);
    let (base, octaves) = if r < 900 {
        (8usize, 6) // 8..=512
    } else if r < 998 {
        (1024, 6) // 1 KiB..=64 KiB
    } else {
        (256 << 10, 3) // 256 KiB..=2 MiB
    };
    let lo = base << rng.below(octaves);
    lo + rng.below(lo as u64 + 1) as usize
}

#[inline(always)]
fn alloc_touched<A: Alloc>(rng: &mut Rng) -> *mut u8 {
    let size = mixed_size(rng);
    let p = must::<A>(size);
    touch(p, 0);
    touch(p, size - 1);
    p
}

/// Fill [`SLOTS`] slots with blocks of [`mixed_size`] (untimed), then time `rounds` rounds
/// of [`STEPS`] steps; a step frees a random slot and allocates a new block into it
/// (first and last byte written). The working set is freed afterwards (untimed).
pub fn mixed<A: Alloc>(rounds: u64) -> Duration {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut slots: Vec<*mut u8> = (0..SLOTS).map(|_| alloc_touched::<A>(&mut rng)).collect();
    let start = Instant::now();
    for _ in 0..rounds {
        for _ in 0..STEPS {
            let i = rng.below(SLOTS as u64) as usize;
            // SAFETY: every slot holds a live block of A.
            unsafe { A::free(slots[i]) };
            slots[i] = alloc_touched::<A>(&mut rng);
        }
    }
    let t = start.elapsed();
    for &p in &slots {
        // SAFETY: as above; the working set is dropped.
        unsafe { A::free(p) };
    }
    t
}
