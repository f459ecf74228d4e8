//! Coherence tests against the CPU-backed fake device, shared by the `coherence_uffd`,
//! `coherence_mprotect` and `coherence_noview` test binaries (each sets `MODE`, and
//! `HOST_VIEWS`: false hides the device memory from the CPU, so faults go through the
//! service thread as on a discrete GPU). The binaries use unimem as their
//! global allocator, so every Vec/Box below lives in the managed heap and can migrate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, OnceLock};
use unimem::coherence::{self, BlockDevice, FakeDevice, Space, State};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

pub const BLOCK: usize = 64 << 10;

/// The tests compare global counters, so they run one at a time (each is multi-threaded
/// where it matters).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
pub const FRAMES: usize = 1024;
/// Makes the device fail every download (and hide its memory from the CPU): a device
/// copy cannot come home while set.
static FAIL_DOWNLOADS: AtomicBool = AtomicBool::new(false);

pub fn setup() -> (&'static Space, &'static FakeDevice) {
    static S: OnceLock<(&'static Space, &'static FakeDevice)> = OnceLock::new();
    *S.get_or_init(|| {
        // Runtime objects must never migrate: build the device in the internal heap.
        let _internal = unimem::InternalScope::new();
        assert!(unimem::alloc::init());
        let (_, len) = unimem::alloc::managed_range();
        let dev: &'static FakeDevice = Box::leak(Box::new(FakeDevice::new(BLOCK, FRAMES, len / BLOCK)));
        struct Shared(&'static FakeDevice);
        impl BlockDevice for Shared {
            fn block_size(&self) -> usize { self.0.block_size() }
            fn capacity(&self) -> usize { self.0.capacity() }
            fn free_frames(&self) -> usize { self.0.free_frames() }
            unsafe fn upload(&self, b: &[(u32, *const u8)]) -> Result<(), coherence::BackendError> { unsafe { self.0.upload(b) } }
            unsafe fn download(&self, b: &[(u32, *mut u8)]) -> Result<(), coherence::BackendError> {
                if FAIL_DOWNLOADS.load(Relaxed) {
                    return Err(unimem::device::DeviceError::DeviceLost { call: "download (the test's failing device)" }.into());
                }
                unsafe { self.0.download(b) }
            }
            fn host_view(&self, b: u32) -> Option<*const u8> { if super::HOST_VIEWS && !FAIL_DOWNLOADS.load(Relaxed) { self.0.host_view(b) } else { None } }
            fn is_resident(&self, b: u32) -> bool { self.0.is_resident(b) }
            fn discard(&self, b: &[u32]) { self.0.discard(b) }
            fn eviction_candidates(&self, n: usize) -> Vec<u32> { self.0.eviction_candidates(n) }
            fn take_dirty(&self) -> Vec<u32> { self.0.take_dirty() }
        }
        let space = coherence::install(Arc::new(Shared(dev)), Some(super::MODE)).expect("install coherence");
        assert_eq!(space.protector().mode(), super::MODE);
        (space, dev)
    })
}

/// A block-aligned buffer of whole blocks, alone in its blocks (large allocations are
/// slice-aligned runs).
pub fn buffer(blocks: usize) -> Vec<u64> {
    let v: Vec<u64> = (0..(blocks * BLOCK / 8) as u64).map(|i| i * 3 + 1).collect();
    assert_eq!(v.as_ptr() as usize % BLOCK, 0);
    v
}

fn range(v: &[u64]) -> (usize, usize) {
    (v.as_ptr() as usize, std::mem::size_of_val(v))
}

/// Simulate a kernel that adds `delta` to every word of the buffer on the device.
fn kernel_add(space: &Space, dev: &FakeDevice, v: &[u64], delta: u64) {
    let (addr, len) = range(v);
    for b in space.blocks_in(addr, len).unwrap() {
        let mut buf = vec![0u8; BLOCK];
        dev.device_read(b as u32, 0, &mut buf);
        for w in buf.chunks_mut(8) {
            let x = u64::from_ne_bytes(w.try_into().unwrap()) + delta;
            w.copy_from_slice(&x.to_ne_bytes());
        }
        dev.device_write(b as u32, 0, &buf);
    }
    space.device_wrote(&dev.take_dirty()).unwrap();
}

#[test]
fn read_duplication_then_device_write_then_cpu_read_fault() {
    let _s = serial();
    let (space, dev) = setup();
    let v = buffer(4);
    let (addr, len) = range(&v);
    let before = space.stats.snapshot();
    assert_eq!(space.to_device(addr, len, false).unwrap(), 0);
    for b in space.blocks_in(addr, len).unwrap() {
        assert_eq!(space.state(b), State::Shared);
    }
    // Reading Shared memory does not fault.
    assert_eq!(v[1000], 3001);
    assert_eq!(space.stats.snapshot().cpu_faults(), before.cpu_faults());
    kernel_add(space, dev, &v, 7);
    for b in space.blocks_in(addr, len).unwrap() {
        assert_eq!(space.state(b), State::Device);
    }
    // CPU reads fault the blocks home as Shared, with the device's data.
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x, i as u64 * 3 + 8);
    }
    let after = space.stats.snapshot();
    assert!(after.read_faults_device >= before.read_faults_device + 4);
    assert!(after.bytes_to_host >= before.bytes_to_host + (4 * BLOCK) as u64);
    for b in space.blocks_in(addr, len).unwrap() {
        assert_eq!(space.state(b), State::Shared);
    }
}

#[test]
fn cpu_write_to_shared_invalidates_the_device_copy() {
    let _s = serial();
    let (space, dev) = setup();
    let mut v = buffer(2);
    let (addr, len) = range(&v);
    space.to_device(addr, len, false).unwrap();
    let b0 = space.block_of(addr).unwrap();
    let before = space.stats.snapshot();
    v[5] = 99;
    assert_eq!(space.state(b0), State::Host);
    assert_eq!(space.stats.snapshot().write_faults_shared, before.write_faults_shared + 1);
    space.reap_stale();
    assert!(!dev.is_resident(b0 as u32), "stale device copy not dropped");
    // The other block is still duplicated.
    assert_eq!(space.state(b0 + 1), State::Shared);
    assert_eq!(v[5], 99);
}

#[test]
fn cpu_write_fault_on_device_block_brings_it_home_writable() {
    let _s = serial();
    let (space, dev) = setup();
    let mut v = buffer(1);
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    let b = space.block_of(addr).unwrap();
    assert_eq!(space.state(b), State::Device);
    v[10] += 1000; // read-modify-write of device-owned memory
    assert_eq!(v[10], 31 + 1000);
    assert_eq!(v[11], 34);
    assert_eq!(space.state(b), State::Host);
    space.reap_stale();
    assert!(!dev.is_resident(b as u32));
}

/// While a launch runs, the CPU and a kernel write different words of the same block, which
/// was Shared (a write fault), Device (a write fault that fills it), or written through a
/// system call (`make_host_accessible`): the block's content when the CPU started writing is
/// twinned, and the kernel's bytes are merged into the host copy. Nothing is lost.
#[test]
fn cpu_and_kernel_writes_to_one_block_during_a_launch_are_merged() {
    let _s = serial();
    let (space, dev) = setup();
    let mut v = buffer(3);
    let (addr, len) = range(&v);
    let per = BLOCK / 8;
    let b = space.block_of(addr).unwrap();
    let word = |x: u64| x.to_ne_bytes();
    // Block b + 1 was written by an earlier kernel: Device.
    space.to_device(addr, len, false).unwrap();
    dev.device_write(b as u32 + 1, 8 * 4, &word(444));
    space.device_wrote(&dev.take_dirty()).unwrap();
    assert_eq!(space.state(b + 1), State::Device);
    let before = space.stats.snapshot();
    {
        let _launch = space.launch();
        space.reap_stale();
        // The CPU writes word 1 of each block (the third through a system call's path).
        v[1] = 1000;
        v[per + 1] = 1001;
        space.make_host_accessible(addr + 2 * BLOCK, 8, true).unwrap();
        v[2 * per + 1] = 1002;
        for i in 0..3 {
            assert_eq!(space.state(b + i), State::Host, "block {i}");
        }
        // The kernel writes words 0 and 2 of each block.
        for i in 0..3 {
            dev.device_write((b + i) as u32, 0, &word(7 + i as u64));
            dev.device_write((b + i) as u32, 16, &word(70 + i as u64));
        }
        space.device_wrote(&dev.take_dirty()).unwrap();
    }
    let d = space.stats.snapshot().since(&before);
    assert_eq!((d.write_merges, d.write_conflicts), (3, 0), "{d:?}");
    assert_eq!((d.write_faults_shared, d.write_faults_device), (1, 1), "{d:?}");
    for i in 0..3 {
        assert_eq!(space.state(b + i), State::Host, "block {i}");
        assert!(!dev.is_resident((b + i) as u32), "block {i}: the merged device copy is dropped");
        let w = &v[i * per..i * per + 5];
        let fourth = if i == 1 { 444 } else { (i * per + 4) as u64 * 3 + 1 };
        assert_eq!(w, &[7 + i as u64, 1000 + i as u64, 70 + i as u64, (i * per + 3) as u64 * 3 + 1, fourth], "block {i}");
    }
    // Reaping stale copies (`unimem_sync`) from another thread waits for the launch: it
    // would drop the copy the kernel wrote, with its dirty bit.
    let before_sync = space.stats.snapshot();
    space.to_device(addr, BLOCK, false).unwrap();
    let reaped = AtomicBool::new(false);
    std::thread::scope(|s| {
        let launch = space.launch();
        v[1] = 2000;
        s.spawn(|| {
            space.reap_stale();
            reaped.store(true, SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!reaped.load(SeqCst), "reap_stale ran under the launch");
        dev.device_write(b as u32, 0, &word(77));
        space.device_wrote(&dev.take_dirty()).unwrap();
        drop(launch);
    });
    assert!(reaped.load(SeqCst));
    assert_eq!(&v[..2], &[77, 2000]);
    assert_eq!(space.stats.snapshot().since(&before_sync).write_merges, 1);
    // After the launch, a CPU write makes no twin: a kernel write that follows (a data race
    // at block granularity outside any launch) keeps the device's version, as before.
    space.to_device(addr, BLOCK, false).unwrap();
    v[3] = 5;
    dev.device_write(b as u32, 0, &word(8));
    space.device_wrote(&dev.take_dirty()).unwrap();
    let d = space.stats.snapshot().since(&before);
    assert_eq!((d.write_merges, d.write_conflicts), (4, 1), "{d:?}");
    assert_eq!(v[0], 8);
}

#[test]
fn discard_and_free_copy_nothing_back() {
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(3);
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    let before = space.stats.snapshot();
    drop(v); // free of device blocks: discarded
    let after = space.stats.snapshot();
    assert_eq!(after.bytes_to_host, before.bytes_to_host, "free copied device data back");
    assert!(after.discards >= before.discards + 3);
    let w = buffer(2);
    let (addr, len) = range(&w);
    space.to_device(addr, len, true).unwrap();
    space.discard(addr, len).unwrap();
    assert!(w.iter().all(|&x| x == 0), "discarded memory must read as zero");
    assert_eq!(space.stats.snapshot().bytes_to_host, after.bytes_to_host);
}

/// Ranges that run past the memory the allocator has committed (`PROT_NONE` beyond it)
/// stop at its end: a prefetch or a discard there once failed ("cannot populate granule")
/// or brought the process down (zeroing inaccessible pages while holding the block).
#[test]
fn ranges_past_the_committed_heap_stop_at_its_end() {
    let _s = serial();
    let (space, dev) = setup();
    let (base, len) = unimem::alloc::managed_range();
    let committed = base + unimem::alloc::managed_committed();
    // Far beyond the committed end, so that no allocation meanwhile commits it.
    let beyond = committed + (1 << 30);
    assert!(beyond + 64 * BLOCK <= base + len);
    space.discard(beyond, 64 * BLOCK).unwrap();
    // From the last two committed blocks to far beyond.
    let last = committed - 2 * BLOCK;
    let through = beyond + 64 * BLOCK - last;
    assert_eq!(space.to_device(last, through, false).unwrap(), 0);
    for b in [last, last + BLOCK].map(|a| space.block_of(a).unwrap()) {
        assert_eq!(space.state(b), State::Shared);
        assert!(dev.is_resident(b as u32));
    }
    space.to_host(last, through).unwrap();
    space.to_device(beyond, 64 * BLOCK, true).unwrap();
    assert_eq!(space.state(space.block_of(beyond).unwrap()), State::Host);
}

/// A range that leaves the heap, or whose end overflows the address space, is refused
/// before anything happens, even where it covers no whole block; a discard touches only the
/// blocks wholly inside its range. Before: `discard(p, usize::MAX)` wrapped around and
/// returned success having done nothing, `to_device` likewise, and `discard` of a
/// non-heap address shorter than a block succeeded.
#[test]
fn ranges_outside_the_heap_or_overflowing_are_refused() {
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(3);
    let addr = v.as_ptr() as usize;
    fn not_managed<T>(r: Result<T, coherence::CoherenceError>) -> bool {
        matches!(r, Err(coherence::CoherenceError::NotManaged { .. }))
    }
    for l in [usize::MAX, usize::MAX - addr + 1, usize::MAX / 2] {
        assert!(not_managed(space.blocks_in(addr, l)), "blocks_in({addr:#x}, {l:#x})");
        assert!(not_managed(space.discard(addr, l)), "discard({addr:#x}, {l:#x})");
        assert!(not_managed(space.to_device(addr, l, true)), "to_device({addr:#x}, {l:#x})");
        assert!(not_managed(space.to_host(addr, l)), "to_host({addr:#x}, {l:#x})");
    }
    let stack = 0u64;
    for a in [0, 16, &stack as *const u64 as usize] {
        assert!(not_managed(space.discard(a, 16)), "discard({a:#x}, 16)");
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 1), "a refused range changed data");
    // Inside the heap: only whole blocks are forgotten. From the middle of block 0 to the
    // middle of block 2: block 1 alone.
    space.discard(addr + BLOCK / 2, 2 * BLOCK).unwrap();
    let words = BLOCK / 8;
    for (i, &x) in v.iter().enumerate() {
        let expect = if (words..2 * words).contains(&i) { 0 } else { i as u64 * 3 + 1 };
        assert_eq!(x, expect, "word {i} after discarding the middle block");
    }
    // A range ending exactly on a block boundary includes its last block.
    space.discard(addr + 2 * BLOCK, BLOCK).unwrap();
    assert!(v[2 * words..].iter().all(|&x| x == 0));
    assert!(v[..words].iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 1));
}

#[test]
fn prefetch_home_and_eviction_keep_data() {
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(8);
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    space.to_host(addr, len).unwrap();
    for b in space.blocks_in(addr, len).unwrap() {
        assert_eq!(space.state(b), State::Host);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 1));
    // Evict through the LRU: everything resident comes home intact.
    space.to_device(addr, len, true).unwrap();
    let n = space.evict(FRAMES, &[]).unwrap();
    assert!(n >= 8);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 1));
}

#[test]
fn oversubscription_leaves_the_rest_on_the_host() {
    let _s = serial();
    let (space, _dev) = setup();
    // More blocks than frames: uploads evict older blocks; the data survives everything.
    let v = buffer(FRAMES + 64);
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    assert!(v.iter().enumerate().step_by(97).all(|(i, &x)| x == i as u64 * 3 + 1));
}

#[test]
fn memcpy_memcmp_realloc_across_device_blocks() {
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(3);
    let mut w = vec![0u64; v.len()];
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    let (waddr, wlen) = range(&w);
    space.to_device(waddr, wlen, true).unwrap();
    w.copy_from_slice(&v); // memcpy device -> device blocks
    assert!(v == w); // memcmp
    space.to_device(waddr, wlen, true).unwrap();
    w.resize(w.len() * 2, 5); // realloc: moves data out of device-owned blocks
    assert!(w[..v.len()] == v[..]);
    assert!(w[v.len()..].iter().all(|&x| x == 5));
}

#[test]
fn syscalls_on_device_buffers_after_making_them_host_accessible() {
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(2);
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    let mut fds = [0; 2];
    // SAFETY: creating a pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    space.make_host_accessible(addr, 4096, false).unwrap();
    // SAFETY: writing 4096 bytes of a live buffer.
    let n = unsafe { libc::write(fds[1], addr as *const _, 4096) };
    assert_eq!(n, 4096);
    let mut r = buffer(1);
    let (raddr, rlen) = range(&r);
    space.to_device(raddr, rlen, true).unwrap();
    space.make_host_accessible(raddr, 4096, true).unwrap();
    // SAFETY: reading into a live buffer of at least 4096 bytes.
    let n = unsafe { libc::read(fds[0], r.as_mut_ptr() as *mut _, 4096) };
    assert_eq!(n, 4096);
    assert_eq!(r[..512], v[..512]);
    // SAFETY: closing our fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

#[test]
fn fork_child_sees_device_data() {
    let _s = serial();
    let (space, dev) = setup();
    let v = buffer(2);
    let (addr, len) = range(&v);
    space.to_device(addr, len, false).unwrap();
    kernel_add(space, dev, &v, 1);
    // SAFETY: the child only reads memory and calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 2);
        // SAFETY: leaving the child without running the test harness's teardown.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child saw wrong data: status {status:#x}");
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 2));
}

/// N threads read and write their own slots (random allocations, sharing blocks with each
/// other) and check every value against a model, while a migrator moves random blocks to
/// the device and back (prefetches for write put blocks in the Device state).
#[test]
fn stress_threads_and_migrator_never_see_wrong_data() {
    let _s = serial();
    let (space, _dev) = setup();
    const THREADS: usize = 3;
    const SLOTS: usize = 300;
    let ops_per_thread: usize = if cfg!(debug_assertions) { 120_000 } else { 400_000 };
    // Random-sized allocations, interleaved between threads so blocks are shared.
    let mut slots: Vec<Vec<Box<[AtomicU64]>>> = (0..THREADS).map(|_| Vec::new()).collect();
    let mut seed = 0x1234_5678u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..SLOTS * THREADS {
        let words = 1 + (rnd() % 600) as usize;
        slots[i % THREADS].push((0..words).map(|_| AtomicU64::new(0)).collect());
    }
    let lo = slots.iter().flatten().map(|s| s.as_ptr() as usize).min().unwrap();
    let hi = slots.iter().flatten().map(|s| s.as_ptr() as usize + s.len() * 8).max().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let moves = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(slots);
    let migrator = {
        let (stop, moves) = (stop.clone(), moves.clone());
        std::thread::spawn(move || {
            let mut x = 0x9e37_79b9u64;
            while !stop.load(Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let a = lo + (x as usize % (hi - lo));
                let n = BLOCK * (1 + (x >> 40) as usize % 4);
                let n = n.min(hi - a);
                match x % 5 {
                    0 => drop(space.to_device(a, n, false).unwrap()),
                    1 => drop(space.to_device(a, n, true).unwrap()),
                    2 => space.to_host(a, n).unwrap(),
                    3 => space.discard(a, 0).unwrap(), // empty range: a no-op that must stay one
                    _ => drop(space.evict(4, &[]).unwrap()),
                }
                moves.fetch_add(1, Relaxed);
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (slots, moves) = (slots.clone(), moves.clone());
            std::thread::spawn(move || {
                let mine = &slots[t];
                let mut model: Vec<Vec<u64>> = mine.iter().map(|s| vec![0; s.len()]).collect();
                let mut x = 0xdead_beef_u64 + t as u64;
                let mut mismatches = 0;
                // At least `ops_per_thread` operations, and until the migrator has made
                // 2000 moves (bounded by time), so both sides really interleave.
                let t0 = std::time::Instant::now();
                let mut i = 0usize;
                while i < ops_per_thread || (moves.load(Relaxed) < 2000 && t0.elapsed().as_secs() < 60) {
                    i += 1;
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let s = x as usize % mine.len();
                    let w = (x >> 32) as usize % mine[s].len();
                    if x & 1 == 0 {
                        let v = i as u64 ^ x;
                        mine[s][w].store(v, Relaxed);
                        model[s][w] = v;
                    } else if mine[s][w].load(Relaxed) != model[s][w] {
                        mismatches += 1;
                    }
                }
                for (s, m) in mine.iter().zip(&model) {
                    for (a, &b) in s.iter().zip(m) {
                        if a.load(Relaxed) != b {
                            mismatches += 1;
                        }
                    }
                }
                mismatches
            })
        })
        .collect();
    let mismatches: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, Relaxed);
    migrator.join().unwrap();
    let moves = moves.load(Relaxed);
    let st = space.stats.snapshot();
    eprintln!("stress: {} ops, {moves} migrations, {:?}", THREADS * ops_per_thread, st);
    assert_eq!(mismatches, 0);
    assert!(moves >= 2000, "the migrator barely ran ({moves} moves)");
    assert!(st.cpu_faults() > 100, "too few CPU faults for a meaningful stress: {st:?}");
}

fn bytes(v: &[u64]) -> &[u8] {
    // SAFETY: viewing initialised u64s as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn bytes_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// std's file I/O and raw socket/vector calls on device-owned buffers, with no explicit
/// preparation: the interposed entry points make the buffers host-accessible first.
#[test]
fn io_on_device_buffers_works_unchanged() {
    use std::io::{Read, Write};
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(4);
    let (addr, len) = range(&v);
    space.to_device(addr, len, true).unwrap();
    let path = std::env::temp_dir().join(format!("unimem-io-{}-{:?}", std::process::id(), super::MODE));
    std::fs::File::create(&path).unwrap().write_all(bytes(&v)).unwrap(); // write(2) from device memory
    let mut r = vec![7u64; v.len()];
    let (raddr, rlen) = range(&r);
    space.to_device(raddr, rlen, true).unwrap();
    std::fs::File::open(&path).unwrap().read_exact(bytes_mut(&mut r)).unwrap(); // read(2) into it
    assert!(r == v);
    std::fs::remove_file(&path).ok();

    // writev/readv through a pipe, send/recv and sendmsg/recvmsg through a socket pair.
    let mut a = buffer(1);
    let b = buffer(1);
    for x in a.iter_mut() {
        *x ^= 0x5555;
    }
    let mut fds = [0; 2];
    // SAFETY: creating a socket pair.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
    let chunk = 16384;
    space.to_device(range(&a).0, range(&a).1, true).unwrap();
    space.to_device(range(&b).0, range(&b).1, true).unwrap();
    let iov = [libc::iovec { iov_base: a.as_ptr() as *mut _, iov_len: chunk }];
    // SAFETY: valid iovec over a live buffer.
    assert_eq!(unsafe { libc::writev(fds[0], iov.as_ptr(), 1) }, chunk as isize);
    let mut dst = buffer(1);
    space.to_device(range(&dst).0, range(&dst).1, true).unwrap();
    let iov = [libc::iovec { iov_base: dst.as_mut_ptr() as *mut _, iov_len: chunk }];
    // SAFETY: valid iovec over a live buffer; a stream socket may return less, so loop.
    let mut got = 0;
    while got < chunk {
        let iov2 = [libc::iovec { iov_base: (iov[0].iov_base as usize + got) as *mut _, iov_len: chunk - got }];
        // SAFETY: as above.
        let n = unsafe { libc::readv(fds[1], iov2.as_ptr(), 1) };
        assert!(n > 0);
        got += n as usize;
    }
    assert_eq!(bytes(&dst)[..chunk], bytes(&a)[..chunk]);
    space.to_device(range(&dst).0, range(&dst).1, true).unwrap();
    // SAFETY: live buffers of at least `chunk` bytes.
    assert_eq!(unsafe { libc::send(fds[0], b.as_ptr() as *const _, chunk, 0) }, chunk as isize);
    let mut got = 0;
    while got < chunk {
        // SAFETY: as above.
        let n = unsafe { libc::recv(fds[1], (dst.as_mut_ptr() as usize + got) as *mut _, chunk - got, 0) };
        assert!(n > 0);
        got += n as usize;
    }
    assert_eq!(bytes(&dst)[..chunk], bytes(&b)[..chunk]);
    space.to_device(range(&a).0, range(&a).1, true).unwrap();
    space.to_device(range(&dst).0, range(&dst).1, true).unwrap();
    let mut iov = libc::iovec { iov_base: a.as_ptr() as *mut _, iov_len: 4096 };
    // SAFETY: a zeroed msghdr is valid; we point it at one iovec.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: valid msghdr.
    assert_eq!(unsafe { libc::sendmsg(fds[0], &msg, 0) }, 4096);
    let mut riov = libc::iovec { iov_base: dst.as_mut_ptr() as *mut _, iov_len: 4096 };
    msg.msg_iov = &mut riov;
    // SAFETY: valid msghdr.
    assert_eq!(unsafe { libc::recvmsg(fds[1], &mut msg, libc::MSG_WAITALL) }, 4096);
    assert_eq!(bytes(&dst)[..4096], bytes(&a)[..4096]);
    // SAFETY: closing our fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

static PROGRAM_HITS: AtomicU64 = AtomicU64::new(0);
static PROGRAM_PAGE: AtomicU64 = AtomicU64::new(0);

extern "C" fn program_handler(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo.
    let addr = unsafe { (*info).si_addr() } as u64;
    let page = PROGRAM_PAGE.load(Relaxed);
    if addr >= page && addr < page + 4096 {
        PROGRAM_HITS.fetch_add(1, Relaxed);
        // SAFETY: un-protecting the test's own page.
        unsafe { libc::mprotect(page as *mut _, 4096, libc::PROT_READ | libc::PROT_WRITE) };
    }
}

/// A program that installs its own SIGSEGV handler after unimem keeps both working.
#[test]
fn program_signal_handler_is_chained_and_coherence_keeps_working() {
    let _s = serial();
    let (space, _dev) = setup();
    // SAFETY: a private PROT_NONE page outside the arena.
    let page = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    PROGRAM_PAGE.store(page as u64, Relaxed);
    // SAFETY: installing a handler through the (interposed) sigaction.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = program_handler as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    assert_eq!(unsafe { libc::sigaction(libc::SIGSEGV, &act, &mut old) }, 0);
    // Our handler is still the one the kernel calls.
    // SAFETY: querying the kernel's current action.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    unsafe { unimem::faults::handler::real_sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur) };
    assert_ne!(cur.sa_sigaction, program_handler as *const () as usize, "the program's sigaction replaced unimem's handler");
    // The program's own fault reaches the program's handler.
    // SAFETY: writing the test page; the program handler makes it writable.
    unsafe { std::ptr::write_volatile(page as *mut u8, 42) };
    assert_eq!(PROGRAM_HITS.load(Relaxed), 1);
    // Coherence faults still work (in mprotect mode they are SIGSEGVs too).
    let v = buffer(1);
    space.to_device(range(&v).0, range(&v).1, true).unwrap();
    assert_eq!(v[100], 301);
    // Reading back the chained action gives the program's handler.
    // SAFETY: querying through the interposed sigaction.
    let mut q: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut q) };
    assert_eq!(q.sa_sigaction, program_handler as *const () as usize);
    // SAFETY: restoring the previous chained action; unmapping our page.
    unsafe {
        libc::sigaction(libc::SIGSEGV, &old, std::ptr::null_mut());
        libc::munmap(page, 4096);
    }
}

fn child_dies_with(f: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `f` and exits without returning into the harness.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        f();
        // SAFETY: leave the child.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFSIGNALED(status), "child exited normally (status {status:#x})");
    libc::WTERMSIG(status)
}

/// Genuine segfaults still kill the process with SIGSEGV: outside the arena, and in the
/// arena's unused address space.
#[test]
fn genuine_segfaults_still_crash() {
    let _s = serial();
    let (_space, _dev) = setup();
    // SAFETY: the child deliberately writes to an unmapped address.
    assert_eq!(child_dies_with(|| unsafe { std::ptr::write_volatile(16 as *mut u8, 1) }), libc::SIGSEGV);
    let (base, len) = unimem::alloc::managed_range();
    // SAFETY: the child writes to the reserved, never-committed end of the arena.
    assert_eq!(child_dies_with(|| unsafe { std::ptr::write_volatile((base + len - 4096) as *mut u8, 1) }), libc::SIGSEGV);
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: overflow the stack
fn recurse(n: u64) -> u64 {
    let buf = [n; 64];
    std::hint::black_box(&buf);
    recurse(n + 1) + buf[3]
}

#[test]
fn overflow_trampoline() {
    if std::env::var("UNIMEM_TEST_OVERFLOW").is_ok() {
        setup();
        std::thread::Builder::new().stack_size(256 << 10).spawn(|| recurse(0)).unwrap().join().ok();
    }
}

/// Rust's stack-overflow report still appears with unimem's handler in front of it.
#[test]
fn rust_stack_overflow_message_still_appears() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cases::overflow_trampoline", "--nocapture"])
        .env("UNIMEM_TEST_OVERFLOW", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has overflowed its stack"), "no stack overflow report; stderr:\n{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}", out.status);
}

/// A block that cannot come home before a `fork` (the device fails) is lost to the child,
/// which is told so: moving it home is `Error::LostInFork` naming the block, and touching
/// it faults with a message instead of reading zeros; other memory is fine in the child,
/// and the parent keeps the block's data on the device.
#[test]
fn fork_child_is_told_of_blocks_that_could_not_come_home() {
    let _s = serial();
    let (space, dev) = setup();
    let v = buffer(2);
    let (addr, len) = range(&v);
    space.to_device(addr, len, false).unwrap();
    kernel_add(space, dev, &v, 1); // Device: only the device copy is valid
    let lost = space.block_of(addr).unwrap();
    let other = buffer(1);
    let mut pipe = [0; 2];
    // SAFETY: a fresh pipe for the child's stderr.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    FAIL_DOWNLOADS.store(true, Relaxed);
    // SAFETY: the child checks, touches the lost block (and dies of it) or exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the child's stderr becomes the pipe.
        unsafe { libc::dup2(pipe[1], 2) };
        let p = v.as_ptr() as *const u8;
        let told = match unimem::prefetch(p, len, unimem::Location::Host) {
            Err(e @ unimem::Error::LostInFork { block, .. }) => block == lost && e.to_string().contains("could not be brought home"),
            _ => false,
        };
        let advice = matches!(unimem::advise(p, 8, unimem::Advice::PreferredHost), Err(unimem::Error::LostInFork { .. }))
            && unimem::advise(p, 8, unimem::Advice::Clear).is_ok();
        let fine = unimem::prefetch(other.as_ptr().cast(), 8, unimem::Location::Host).is_ok() && other[5] == 16;
        if !(told && advice && fine) {
            // SAFETY: leave the child.
            unsafe { libc::_exit(10 + told as i32 + 2 * advice as i32 + 4 * fine as i32) };
        }
        // SAFETY: a read of the lost block, which must fault.
        let x = unsafe { std::ptr::read_volatile(v.as_ptr()) };
        // SAFETY: leave the child (not reached when the read faults).
        unsafe { libc::_exit(if x == 0 { 2 } else { 3 }) };
    }
    FAIL_DOWNLOADS.store(false, Relaxed);
    // SAFETY: our end of the pipe is closed so the read ends when the child exits.
    unsafe { libc::close(pipe[1]) };
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let mut err = Vec::new();
    use std::io::Read;
    // SAFETY: the pipe's read end, owned here.
    let _ = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(pipe[0]) }.read_to_end(&mut err);
    let err = String::from_utf8_lossy(&err);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV, "child status {status:#x}; stderr: {err}");
    assert!(err.contains("child of a fork") && err.contains(&format!("lies in block {lost} ")), "stderr: {err}");
    assert_eq!(space.state(lost), State::Device, "the parent keeps the block on the device");
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3 + 2), "the parent's data");
}

/// In a fork child, Shared memory is writable (mprotect protections are inherited and
/// must be lifted); what needs the device is refused as the child of a fork
/// (`Error::ForkChild`), and moves home succeed with nothing to do.
#[test]
fn fork_child_can_write_shared_memory() {
    let _s = serial();
    let (space, _dev) = setup();
    let mut v = buffer(2);
    let (addr, len) = range(&v);
    space.to_device(addr, len, false).unwrap(); // Shared: read-only on the host
    let sig = {
        // SAFETY: the child writes its private copy and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            v[3] = 1234;
            let p = v.as_ptr() as *const u8;
            let refused = matches!(unimem::prefetch(p, 8, unimem::Location::Device), Err(unimem::Error::ForkChild))
                && matches!(unimem::advise(p, 8, unimem::Advice::ReadMostly), Err(unimem::Error::ForkChild))
                && matches!(unimem::discard(p, 8), Err(unimem::Error::ForkChild));
            // Home is where everything is: nothing to do.
            let home = unimem::prefetch(p, 8, unimem::Location::Host).is_ok() && unimem::advise(p, 8, unimem::Advice::PreferredHost).is_ok();
            // SAFETY: leave the child.
            unsafe { libc::_exit(if v[3] == 1234 && refused && home { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    };
    assert!(libc::WIFEXITED(sig) && libc::WEXITSTATUS(sig) == 0, "child status {sig:#x}");
    assert_eq!(v[3], 10, "the parent's memory changed");
}

/// A zero-length range is a successful no-op for any pointer (null, the stack, the heap, the
/// end of the address space): prefetch, advise and discard move nothing and record no advice;
/// the block of a managed pointer stays as it was.
#[test]
fn zero_length_ranges_are_no_ops() {
    use unimem::{Advice, Location};
    let _s = serial();
    let (space, _dev) = setup();
    let v = buffer(1);
    let (addr, _) = range(&v);
    let b = space.block_of(addr).unwrap();
    let local = 0u8;
    let advised = unimem::advice::ranges().len();
    for p in [std::ptr::null(), &local as *const u8, addr as *const u8, usize::MAX as *const u8] {
        for loc in [Location::Host, Location::Device] {
            unimem::prefetch(p, 0, loc).unwrap_or_else(|e| panic!("prefetch({p:p}, 0, {loc:?}): {e}"));
            assert_eq!(space.state(b), State::Host, "after prefetch({p:p}, 0, {loc:?})");
        }
        for advice in [Advice::ReadMostly, Advice::PreferredHost, Advice::PreferredDevice, Advice::Mirror, Advice::Clear] {
            unimem::advise(p, 0, advice).unwrap_or_else(|e| panic!("advise({p:p}, 0, {advice:?}): {e}"));
            assert_eq!(space.state(b), State::Host, "after advise({p:p}, 0, {advice:?})");
        }
        unimem::discard(p, 0).unwrap_or_else(|e| panic!("discard({p:p}, 0): {e}"));
    }
    assert_eq!(unimem::advice::ranges().len(), advised);
    assert_eq!(v[7], 22, "the data");
}
