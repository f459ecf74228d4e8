//! CPU fault service latency: unimem's fault path against the floor measured in the same
//! run, a bare userfaultfd SIGBUS fill of the same size with no runtime around it.
//!
//! The size is the migration block, `UNIMEM_BLOCK_SIZE` (default 64K): run once as is (a
//! whole block) and once with `UNIMEM_BLOCK_SIZE=4K` (a page). Each sample re-arms outside
//! the timed region (`MADV_DONTNEED` for the floor, a prefetch-for-write to the fake device
//! for unimem) and times one read of the absent memory: the signal, the handler, the
//! `UFFDIO_COPY`, and the return.

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unimem::coherence::{self, FakeDevice};
use unimem::faults::protect::FaultMode;
use unimem::faults::uffd_abi::*;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

const BLOCKS: usize = 64;

fn block_size() -> usize {
    unimem::options::block_size().expect("UNIMEM_BLOCK_SIZE")
}

static FLOOR_FD: AtomicI32 = AtomicI32::new(-1);
static FLOOR_SRC: AtomicUsize = AtomicUsize::new(0);
static FLOOR_SIZE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn floor_handler(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let size = FLOOR_SIZE.load(Relaxed);
    // SAFETY: the kernel passes a valid siginfo.
    let addr = unsafe { (*info).si_addr() } as usize & !(size - 1);
    let mut c = UffdioCopy { dst: addr as u64, src: FLOOR_SRC.load(Relaxed) as u64, len: size as u64, mode: 0, copy: 0 };
    // SAFETY: filling our registered, absent block from our source buffer.
    unsafe { libc::ioctl(FLOOR_FD.load(Relaxed), UFFDIO_COPY as _, &mut c) };
}

/// The floor: a userfaultfd in SIGBUS mode over a private region, a handler that fills the
/// faulting block with one UFFDIO_COPY.
fn floor(c: &mut Criterion, size: usize) {
    let len = size * BLOCKS;
    // SAFETY: plain syscalls on our own fresh mappings; see each step.
    unsafe {
        let region = libc::mmap(std::ptr::null_mut(), len + size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as usize;
        let region = (region + size - 1) & !(size - 1);
        let src = libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE, -1, 0) as usize;
        std::ptr::write_bytes(src as *mut u8, 0x5a, size);
        let fd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) as i32;
        assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
        let mut api = UffdioApi { api: UFFD_API, features: FEATURE_SIGBUS, ioctls: 0 };
        assert_eq!(libc::ioctl(fd, UFFDIO_API as _, &mut api), 0);
        let mut reg = UffdioRegister { range: UffdioRange { start: region as u64, len: len as u64 }, mode: REGISTER_MODE_MISSING, ioctls: 0 };
        assert_eq!(libc::ioctl(fd, UFFDIO_REGISTER as _, &mut reg), 0);
        FLOOR_FD.store(fd, Relaxed);
        FLOOR_SRC.store(src, Relaxed);
        FLOOR_SIZE.store(size, Relaxed);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = floor_handler as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        let mut old: libc::sigaction = std::mem::zeroed();
        unimem::faults::handler::real_sigaction(libc::SIGBUS, &act, &mut old);
        c.bench_function(&format!("fault/{}K/bare_uffd_floor", size >> 10), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for i in 0..iters as usize {
                    let blk = region + (i % BLOCKS) * size;
                    libc::madvise(blk as *mut _, size, libc::MADV_DONTNEED);
                    let t0 = Instant::now();
                    let v = std::ptr::read_volatile(blk as *const u8);
                    t += t0.elapsed();
                    assert_eq!(v, 0x5a);
                }
                t
            })
        });
        unimem::faults::handler::real_sigaction(libc::SIGBUS, &old, std::ptr::null_mut());
        libc::close(fd);
    }
}

/// unimem: a Device block of the fake device (host-visible frames, as on lavapipe), read.
fn unimem_fault(c: &mut Criterion, size: usize) {
    let space = {
        let _i = unimem::InternalScope::new();
        unimem::alloc::init();
        let (_, len) = unimem::alloc::managed_range();
        coherence::install(Arc::new(FakeDevice::new(size, BLOCKS * 2, len / size)), Some(FaultMode::Uffd)).expect("install")
    };
    let layout = std::alloc::Layout::from_size_align(size * BLOCKS, size.max(1 << 16)).unwrap();
    // SAFETY: non-zero size.
    let buf = unsafe { std::alloc::alloc(layout) } as usize;
    // SAFETY: filling our buffer.
    unsafe { std::ptr::write_bytes(buf as *mut u8, 0x5a, size * BLOCKS) };
    c.bench_function(&format!("fault/{}K/unimem", size >> 10), |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for i in 0..iters as usize {
                let blk = buf + (i % BLOCKS) * size;
                space.to_device(blk, size, true).unwrap();
                let t0 = Instant::now();
                // SAFETY: reading our own (device-owned) buffer: the fault brings it home.
                let v = unsafe { std::ptr::read_volatile(blk as *const u8) };
                t += t0.elapsed();
                assert_eq!(v, 0x5a);
            }
            t
        })
    });
    let st = space.stats.snapshot();
    eprintln!("unimem fault stats: {} faults, {} ns mean service time in the handler", st.cpu_faults(), st.fault_ns / st.cpu_faults().max(1));
}

fn faults(c: &mut Criterion) {
    let size = block_size();
    floor(c, size);
    unimem_fault(c, size);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = faults
}
criterion_main!(benches);
