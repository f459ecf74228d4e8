//! Coherence on the Vulkan engine, end to end: the managed heap under `coherence::install`
//! with a `VulkanBlockDevice`, real WGSL kernels writing blocks through the device page table,
//! dirty bits turning blocks Device-owned, CPU faults bringing them back (direct path: from the
//! mapped frame; staging path: through coherence's fault service thread, which downloads), and
//! LRU eviction with write-back when a second buffer does not fit. Shared by `migrate_coherence_direct` and
//! `migrate_coherence_staging` (each sets `COPY`).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::migrate_common::accessors;
use unimem::coherence::{self, BlockDevice, Space, State};
use unimem::device::test_support::{assert_no_validation_errors, or_skip};
use unimem::device::{ComputePipeline, Device, MigrateConfig, VulkanBlockDevice};
use unimem::kernel::compile_wgsl_named;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

const BLOCK: usize = 64 << 10;
/// Frames: 8 in buffers of 4, so two frame buffers and real eviction pressure.
const FRAMES: u32 = 8;

/// The tests share one space and one pool: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

struct Setup {
    space: &'static Space,
    dev: Arc<VulkanBlockDevice>,
    add: ComputePipeline,
}

/// Installs coherence over the engine once; `None` (skip) without a device.
fn setup(test: &str) -> Option<&'static Setup> {
    static S: OnceLock<Option<Setup>> = OnceLock::new();
    S.get_or_init(|| {
        // Runtime objects must never migrate: build them in the internal heap.
        let _internal = unimem::InternalScope::new();
        let device = or_skip(test, Device::open())?;
        let config = MigrateConfig {
            block_size: BLOCK,
            pool_bytes: Some(u64::from(FRAMES) * BLOCK as u64),
            copy: super::COPY,
            frames_per_buffer: Some(4),
            in_place: unimem::options::InPlaceMode::Off,
            ..MigrateConfig::default()
        };
        let dev = Arc::new(or_skip(test, VulkanBlockDevice::new(device, config))?);
        let source = format!("{}{ADD}", accessors(&dev));
        let kernel = compile_wgsl_named("add.wgsl", &source, "add").unwrap();
        let add = dev.device().create_pipeline(&kernel).unwrap();
        let space = coherence::install(Arc::clone(&dev) as Arc<dyn BlockDevice>, None)
            .expect("install coherence");
        Some(Setup { space, dev, add })
    })
    .as_ref()
}

/// Adds `delta` to every `u32` of `words` words starting at block `first`, through the page
/// table (a missing block is recorded as a fault).
const ADD: &str = "
struct Args { first: u32, words: u32, delta: u32 }
var<immediate> args: Args;

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= args.words) {
        return;
    }
    let per_block = UNIMEM_BLOCK_SIZE / 4u;
    let b = args.first + id.x / per_block;
    let f1 = unimem_pt[b] & UNIMEM_PTE_FRAME_MASK;
    if (f1 == 0u) {
        record_fault(b);
        return;
    }
    let w = id.x % per_block;
    frame_store(f1 - 1u, w, frame_load(f1 - 1u, w) + args.delta);
}
";

/// A block-aligned buffer of whole blocks (large allocations are 64 KiB-aligned runs).
fn buffer(blocks: usize, seed: u32) -> Vec<u32> {
    let v: Vec<u32> = (0..(blocks * BLOCK / 4) as u32)
        .map(|i| i * 3 + seed)
        .collect();
    assert_eq!(v.as_ptr() as usize % BLOCK, 0);
    v
}

/// Runs the kernel on `v` (whose blocks must be resident) and tells coherence what it wrote.
fn kernel_add(s: &Setup, v: &[u32], delta: u32) {
    let first = s.space.block_of(v.as_ptr() as usize).unwrap() as u32;
    let args = [first, v.len() as u32, delta];
    let groups = (v.len() as u32).div_ceil(64);
    s.dev
        .dispatch(&s.add, &mut [], bytemuck::cast_slice(&args), [groups, 1, 1])
        .unwrap();
    assert!(
        s.dev.take_faults().blocks.is_empty(),
        "every block was resident"
    );
    let _internal = unimem::InternalScope::new();
    s.space.device_wrote(&s.dev.take_dirty()).unwrap();
}

fn states(s: &Setup, v: &[u32]) -> Vec<State> {
    let range = s
        .space
        .blocks_in(v.as_ptr() as usize, std::mem::size_of_val(v))
        .unwrap();
    range.map(|b| s.space.state(b)).collect()
}

#[test]
fn a_kernel_writes_the_heap_and_the_cpu_reads_it_back() {
    let _s = serial();
    let Some(s) = setup("a_kernel_writes_the_heap_and_the_cpu_reads_it_back") else {
        return;
    };
    let mut v = buffer(4, 1);
    let (addr, len) = (v.as_ptr() as usize, std::mem::size_of_val(&v[..]));
    assert_eq!(s.space.to_device(addr, len, false).unwrap(), 0);
    assert_eq!(states(s, &v), vec![State::Shared; 4]);
    kernel_add(s, &v, 7);
    assert_eq!(states(s, &v), vec![State::Device; 4]);
    let before = s.space.stats.snapshot();
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x, i as u32 * 3 + 1 + 7, "word {i}");
    }
    let after = s.space.stats.snapshot();
    assert_eq!(
        after.read_faults_device - before.read_faults_device,
        4,
        "one CPU read fault per block brought the kernel's writes home"
    );
    assert_eq!(states(s, &v), vec![State::Shared; 4]);
    // A CPU write after the read makes the block the host's again.
    v[0] = 5;
    assert_eq!(states(s, &v)[0], State::Host);
    drop(v); // frees discard the device copies (the stale one of block 0 when reaped)
    s.space.reap_stale();
    assert_eq!(s.dev.free_frames(), FRAMES as usize);
    assert_no_validation_errors("a_kernel_writes_the_heap_and_the_cpu_reads_it_back");
}

#[test]
fn a_second_buffer_evicts_the_first_with_write_back() {
    let _s = serial();
    let Some(s) = setup("a_second_buffer_evicts_the_first_with_write_back") else {
        return;
    };
    let a = buffer(6, 2);
    let b = buffer(6, 9);
    let range = |v: &[u32]| (v.as_ptr() as usize, std::mem::size_of_val(v));
    assert_eq!(
        s.space.to_device(range(&a).0, range(&a).1, false).unwrap(),
        0
    );
    kernel_add(s, &a, 1);
    // 6 + 6 blocks in 8 frames: 4 of `a` (least recently used, dirty) are written back.
    let evictions = s.space.stats.snapshot().evictions;
    assert_eq!(
        s.space.to_device(range(&b).0, range(&b).1, false).unwrap(),
        0
    );
    assert_eq!(s.space.stats.snapshot().evictions - evictions, 4);
    let sa = states(s, &a);
    assert_eq!(
        sa.iter().filter(|&&x| x == State::Host).count(),
        4,
        "{sa:?}"
    );
    assert_eq!(
        sa.iter().filter(|&&x| x == State::Device).count(),
        2,
        "{sa:?}"
    );
    kernel_add(s, &b, 2);
    let before = s.space.stats.snapshot();
    for i in 0..a.len() {
        assert_eq!(a[i], i as u32 * 3 + 2 + 1, "a[{i}]");
        assert_eq!(b[i], i as u32 * 3 + 9 + 2, "b[{i}]");
    }
    let after = s.space.stats.snapshot();
    assert_eq!(
        after.read_faults_device - before.read_faults_device,
        2 + 6,
        "the 2 Device blocks of `a` and the 6 of `b` came home by CPU faults"
    );
    assert_eq!(after.evictions - before.evictions, 0);
    drop((a, b));
    s.space.reap_stale();
    assert_eq!(s.dev.free_frames(), FRAMES as usize);
    assert_no_validation_errors("a_second_buffer_evicts_the_first_with_write_back");
}
