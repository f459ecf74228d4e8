//! Kernels on shared pointers: [`Kernel`] (user WGSL on the prelude of `prelude.rs`, compiled
//! once and cached) and its launch protocol, the device-fault replay loop.
//!
//! # Launch protocol ([`Kernel::launch`])
//!
//! 1. Stale device copies are reaped; the allocations the pointer arguments point into, and
//!    the blocks earlier launches of this kernel faulted on, are made resident (`to_device`,
//!    read duplication: Host -> Shared), up to the pool's capacity.
//! 2. Round 0 dispatches all `n` invocations. An invocation that meets a block without a
//!    device copy records a device fault, stops, and appends its id to the control buffer's
//!    output list (see `prelude.rs`).
//! 3. After each round: the dirty blocks become Device-owned (`Space::device_wrote`, so that
//!    evicting them later writes them back); faulted blocks holding no live allocation are
//!    put on the poison list (the replay then reports the exact invocation and address);
//!    the others are migrated with a prefetch of the blocks that follow them; only the
//!    faulted invocations are dispatched again.
//! 4. Bounded: a kernel error ends the launch at once; so do three consecutive rounds that
//!    complete no invocation and fault on no new block (one invocation needs more blocks
//!    than the pool holds), and [`MAX_ROUNDS`] rounds.
//!
//! Launches are serialised (one fault buffer and dirty bitmap per engine). Everything the
//! runtime allocates here is in the internal heap.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::compile::compile_wgsl_named;
use super::prelude::{self, Round, CTL_LISTS_AT, CTL_PENDING_COUNT, CTL_POISON_AT, CTL_POISON_CAPACITY, CTL_POISON_COUNT};
use crate::api::{vulkan_runtime, Error};
use crate::coherence::backend::BlockDevice;
use crate::coherence::Space;
use crate::device::{Buffer, ComputePipeline, VulkanBlockDevice};
use std::sync::atomic::Ordering::Relaxed;
use unimem_alloc::InternalScope;

/// Rounds after which a launch gives up.
pub const MAX_ROUNDS: u32 = 100_000;
/// Default accessor calls one invocation may make in one round ([`Kernel::set_max_steps`]).
pub const DEFAULT_MAX_STEPS: u32 = 1 << 24;
/// The default on lavapipe (llvmpipe), which runs at most 65535 loop iterations per shader
/// invocation and silently cuts loops short after that: a loop that accesses memory in each
/// iteration fails as a runaway here, clearly, before lavapipe would truncate it.
pub const LAVAPIPE_MAX_STEPS: u32 = 60_000;
/// Blocks after a faulted one that the prefetcher migrates with it (when they hold live data).
pub const PREFETCH_BLOCKS: usize = 7;
/// Most invocations per launch (two id lists of `n` words must fit one storage buffer).
pub const MAX_INVOCATIONS: u32 = 1 << 24;

/// Why a launch failed. The runtime stays usable; blocks written by invocations that
/// completed keep their writes (they are Device-owned and come home on CPU access).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// An invocation made a bad access or ran away.
    #[error("kernel `{kernel}`: invocation {invocation} {what} (address {address:#x}{place}); {errors} invocation(s) failed this round. Invocations that completed kept their stores; the failed ones stored nothing")]
    Kernel {
        /// The kernel's entry function.
        kernel: String,
        /// The first failing invocation's id.
        invocation: u32,
        /// The address it accessed.
        address: u64,
        /// `KERNEL_ERROR_*` kind.
        kind: u32,
        /// What happened, in words.
        what: &'static str,
        /// Where the address is (allocation or not).
        place: String,
        /// Invocations that failed in that round.
        errors: u32,
    },
    /// Rounds stopped making progress: one invocation needs more blocks than the pool holds.
    #[error("kernel `{kernel}`: invocation {invocation} cannot complete: after round {round} it keeps faulting on blocks already migrated this launch (e.g. the block at {address:#x}), so it needs more memory at once than the device pool holds ({frames} blocks of {block_size} bytes). Raise UNIMEM_DEVICE_MEMORY, or split the invocation's work")]
    NoProgress {
        /// The kernel's entry function.
        kernel: String,
        /// An invocation still pending.
        invocation: u32,
        /// The round.
        round: u32,
        /// Address of a block it faulted on.
        address: usize,
        /// Frames of the pool.
        frames: usize,
        /// Bytes per block.
        block_size: usize,
    },
    /// The round limit was reached.
    #[error("kernel `{kernel}`: still {pending} invocation(s) pending (e.g. invocation {invocation}) after {rounds} replay rounds; giving up")]
    TooManyRounds {
        /// The kernel's entry function.
        kernel: String,
        /// Invocations pending.
        pending: u32,
        /// One of them.
        invocation: u32,
        /// Rounds run.
        rounds: u32,
    },
    /// Bad launch parameters.
    #[error("kernel `{kernel}`: {what}")]
    Usage {
        /// The kernel's entry function.
        kernel: String,
        /// What is wrong and what to do.
        what: String,
    },
}

/// What one launch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchReport {
    /// Dispatches (1 + replay rounds).
    pub rounds: u32,
    /// Device faults (blocks, once per round).
    pub device_faults: u64,
    /// Invocations replayed, summed over rounds.
    pub replayed: u64,
    /// Blocks made resident before the first dispatch.
    pub prefetched_blocks: u64,
    /// Wall time of the launch.
    pub time: Duration,
    /// Of which: waiting for dispatches.
    pub dispatch_time: Duration,
    /// Of which: migrating (prefetch before the first round and faulted blocks between rounds).
    pub migrate_time: Duration,
}

/// Launch arguments: `u32` words, as the kernel reads them with `unimem_arg_u32(i)` /
/// `unimem_arg_u64(i)` / `unimem_arg_ptr(i)` (`i` is the word index, i.e. the byte offset
/// over 4, as in a C struct: 64-bit values are aligned to an even word). Pointers added with
/// [`Args::ptr`] are also prefetched before the launch.
#[derive(Clone, Debug, Default)]
pub struct Args {
    words: Vec<u32>,
    pointers: Vec<u64>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }
    /// Appends a `u32` (one word).
    pub fn u32(mut self, v: u32) -> Args {
        self.words.push(v);
        self
    }
    /// Appends an `i32`.
    pub fn i32(self, v: i32) -> Args {
        self.u32(v as u32)
    }
    /// Appends an `f32`.
    pub fn f32(self, v: f32) -> Args {
        self.u32(v.to_bits())
    }
    /// Appends a `u64` at the next even word.
    pub fn u64(mut self, v: u64) -> Args {
        if self.words.len() % 2 == 1 {
            self.words.push(0);
        }
        self.words.extend_from_slice(&[v as u32, (v >> 32) as u32]);
        self
    }
    /// Appends a pointer to `r` (the address of its first byte) at the next even word; the
    /// allocation it points into is made resident before the launch.
    pub fn ptr<T: ?Sized>(self, r: &T) -> Args {
        self.raw_ptr(r as *const T as *const u8 as u64)
    }
    /// Appends a pointer to `r` that the kernel writes through (an output). Same as
    /// [`Args::ptr`], but takes `&mut` so the program states the write: the kernel's stores
    /// land after the launch returns, like DMA, and the borrow ends with the `Args`.
    pub fn ptr_mut<T: ?Sized>(self, r: &mut T) -> Args {
        self.raw_ptr(r as *mut T as *mut u8 as u64)
    }
    /// Appends a pointer given as an address (prefetched like [`Args::ptr`]).
    pub fn raw_ptr(mut self, p: u64) -> Args {
        self.pointers.push(p);
        self.u64(p)
    }
    /// Appends a plain value's bytes, padded to whole words.
    pub fn pod<T: bytemuck::Pod>(mut self, v: &T) -> Args {
        let bytes = bytemuck::bytes_of(v);
        for chunk in bytes.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words.push(u32::from_ne_bytes(w));
        }
        self
    }
    /// The words.
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}

/// Buffers and history of one kernel, reused across launches. Protected by `Inner::state`.
struct State {
    args: Option<Buffer>,
    ctl: Option<Buffer>,
    alog: Option<Buffer>,
    /// Blocks earlier launches faulted on (prefetched next time), at most the pool's size.
    touched: Vec<u32>,
    max_steps: u32,
}

struct Inner {
    name: String,
    pipeline: Arc<ComputePipeline>,
    atomics: bool,
    state: Mutex<State>,
}

/// A compiled kernel. Cheap to clone; the pipeline is cached per (source, entry).
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// Serialises launches (one fault buffer, one dirty bitmap).
static LAUNCH: Mutex<()> = Mutex::new(());

/// Compiled pipelines by (user source, entry).
type Cache = Vec<((String, String), Arc<ComputePipeline>)>;
static CACHE: Mutex<Cache> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The WGSL module the runtime compiles for `user`'s `entry` on `dev` (for inspection).
pub fn generated_source(dev: &VulkanBlockDevice, space: &Space, user: &str, entry: &str) -> String {
    let (base, _) = unimem_alloc::managed_range();
    let arena = u64::from(dev.layout().blocks) * space.block_size() as u64;
    prelude::module(&dev.wgsl_constants(), dev.geometry().buffers(), base as u64, arena, user, entry)
}

impl Kernel {
    /// Compiles `wgsl`, which defines `fn <entry>(id: u32)`, on the prelude. Starts the
    /// runtime if needed. Errors: no Vulkan device, WGSL errors (with the line).
    pub fn new(wgsl: &str, entry: &str) -> Result<Kernel, Error> {
        let _internal = InternalScope::new();
        let (space, dev) = vulkan_runtime()?;
        let valid_name = !entry.is_empty()
            && entry.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !entry.starts_with("unimem_");
        if !valid_name || !wgsl.contains(&format!("fn {entry}(")) {
            return Err(LaunchError::Usage {
                kernel: entry.into(),
                what: format!(
                    "the source must define `fn {entry}(id: u32)` (an identifier not starting with `unimem_`), called once per invocation"
                ),
            }
            .into());
        }
        let key = (wgsl.to_owned(), entry.to_owned());
        let cached = lock(&CACHE).iter().find(|(k, _)| *k == key).map(|(_, p)| Arc::clone(p));
        let pipeline = match cached {
            Some(p) => p,
            None => {
                let source = generated_source(dev, space, wgsl, entry);
                let compiled = compile_wgsl_named(&format!("kernel `{entry}`"), &source, "unimem_main")?;
                let p = Arc::new(dev.device().create_pipeline(&compiled)?);
                warm_up(dev, &p, prelude::uses_atomics(wgsl))?;
                lock(&CACHE).push((key, Arc::clone(&p)));
                p
            }
        };
        Ok(Kernel {
            inner: Arc::new(Inner {
                name: entry.to_owned(),
                pipeline,
                atomics: prelude::uses_atomics(wgsl),
                state: Mutex::new(State { args: None, ctl: None, alog: None, touched: Vec::new(), max_steps: default_max_steps(dev) }),
            }),
        })
    }

    /// The entry function's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Sets how many accessor calls one invocation may make in one round before the launch
    /// fails as a runaway (default [`DEFAULT_MAX_STEPS`]).
    pub fn set_max_steps(&self, steps: u32) {
        lock(&self.inner.state).max_steps = steps.max(1);
    }

    /// Runs invocations `0..n` with `args`; returns when all completed.
    pub fn launch(&self, n: u32, args: &Args) -> Result<LaunchReport, Error> {
        self.launch_words(n, &args.words, Some(&args.pointers))
    }

    /// Runs invocations `0..n` with arguments given as raw bytes (the C API). Every aligned
    /// 8-byte word that points into a live allocation is prefetched.
    pub fn launch_bytes(&self, n: u32, bytes: &[u8]) -> Result<LaunchReport, Error> {
        let _internal = InternalScope::new();
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let pointers: Vec<u64> = words.chunks_exact(2).map(|w| u64::from(w[0]) | u64::from(w[1]) << 32).collect();
        self.launch_words(n, &words, Some(&pointers))
    }

    fn launch_words(&self, n: u32, words: &[u32], pointers: Option<&[u64]>) -> Result<LaunchReport, Error> {
        let _internal = InternalScope::new();
        let start = Instant::now();
        let (space, dev) = vulkan_runtime()?;
        let _serial = lock(&LAUNCH);
        space.stats.launches.fetch_add(1, Relaxed);
        if n > MAX_INVOCATIONS {
            return Err(LaunchError::Usage { kernel: self.inner.name.clone(), what: format!("{n} invocations; at most {MAX_INVOCATIONS} per launch (loop inside the kernel, or launch several times)") }.into());
        }
        let mut report = LaunchReport::default();
        if n == 0 {
            return Ok(report);
        }
        let mut state = lock(&self.inner.state);
        space.reap_stale();
        let t = Instant::now();
        let pinned = self.prefetch(space, dev, pointers.unwrap_or(&[]), &state.touched, &mut report)?;
        report.migrate_time += t.elapsed();
        let r = self.rounds(space, dev, &mut state, n, words, &pinned, &mut report);
        report.time = start.elapsed();
        r.map(|()| report)
    }

    /// Makes the arguments' allocations and the blocks of earlier launches resident.
    /// Returns the arguments' blocks (at most half the pool), which replay rounds keep most
    /// recently used so that migrating faulted blocks evicts other blocks first.
    fn prefetch(&self, space: &Space, dev: &VulkanBlockDevice, pointers: &[u64], touched: &[u32], report: &mut LaunchReport) -> Result<Vec<u32>, Error> {
        let bs = space.block_size();
        let mut blocks: Vec<u32> = Vec::new();
        for &p in pointers {
            if space.block_of(p as usize).is_none() {
                continue;
            }
            if let Some((base, size)) = unimem_alloc::lookup(p as *const u8) {
                if let Ok(r) = space.blocks_in(base, size) {
                    blocks.extend(r.map(|b| b as u32));
                }
            }
        }
        blocks.sort_unstable();
        blocks.dedup();
        let mut pinned = blocks.clone();
        pinned.truncate(dev.capacity() / 2);
        for &b in touched {
            if has_live(space, b) {
                blocks.push(b);
            }
        }
        blocks.sort_unstable();
        blocks.dedup();
        blocks.truncate(dev.capacity());
        report.prefetched_blocks = blocks.len() as u64;
        for (first, count) in runs(&blocks) {
            space.to_device(space.block_addr(first as usize), count * bs, false)?;
        }
        Ok(pinned)
    }

    /// The dispatch / replay loop.
    #[allow(clippy::too_many_arguments)]
    fn rounds(&self, space: &Space, dev: &VulkanBlockDevice, state: &mut State, n: u32, words: &[u32], pinned: &[u32], report: &mut LaunchReport) -> Result<(), Error> {
        let kernel = &self.inner.name;
        let device = dev.device();
        let bs = space.block_size();
        // Buffers, reused when large enough.
        let need_args = (words.len().max(1) * 4) as u64;
        if state.args.as_ref().is_none_or(|b| b.len() < need_args) {
            state.args = Some(device.create_host_buffer(need_args)?);
        }
        let need_ctl = (prelude::ctl_words(n) * 4) as u64;
        if state.ctl.as_ref().is_none_or(|b| b.len() < need_ctl) {
            state.ctl = Some(device.create_host_buffer(need_ctl)?);
        }
        let alog_words = n as usize * (prelude::ATOMIC_LOG as usize + 1);
        if self.inner.atomics && state.alog.as_ref().is_none_or(|b| b.len() < alog_words as u64 * 4) {
            state.alog = Some(device.create_host_buffer(alog_words as u64 * 4)?);
        }
        let max_steps = state.max_steps;
        let State { args, ctl, alog, touched, .. } = state;
        let (args, ctl) = (args.as_mut().expect("created"), ctl.as_mut().expect("created"));
        args.as_mut_slice::<u32>()[..words.len()].copy_from_slice(words);
        if let Some(a) = alog.as_mut().filter(|_| self.inner.atomics) {
            a.as_mut_slice::<u32>()[..alog_words].fill(0);
        }
        let lists = [CTL_LISTS_AT as u32, CTL_LISTS_AT as u32 + n];
        let mut round = Round { count: n, in_at: 0, out_at: lists[0], max_steps };
        let mut seen: HashSet<u32> = HashSet::new();
        let mut poison: Vec<u32> = Vec::new();
        let mut stalls = 0;
        let capacity = dev.capacity().max(1);
        loop {
            {
                let c = ctl.as_mut_slice::<u32>();
                c[CTL_PENDING_COUNT] = 0;
                c[CTL_POISON_COUNT] = poison.len() as u32;
                c[CTL_POISON_AT..CTL_POISON_AT + poison.len()].copy_from_slice(&poison);
            }
            let total_groups = round.count.div_ceil(64);
            let gx = total_groups.min(65535);
            let groups = [gx, total_groups.div_ceil(gx), 1];
            {
                let mut bufs: Vec<&mut Buffer> = vec![&mut *args, &mut *ctl];
                if let Some(a) = alog.as_mut().filter(|_| self.inner.atomics) {
                    bufs.push(a);
                }
                let t = Instant::now();
                dev.dispatch(&self.inner.pipeline, &mut bufs, bytemuck::bytes_of(&round), groups)?;
                report.dispatch_time += t.elapsed();
            }
            report.rounds += 1;
            if report.rounds > 1 {
                space.stats.replay_rounds.fetch_add(1, Relaxed);
                report.replayed += u64::from(round.count);
            }
            let faults = dev.take_faults();
            let pending = ctl.as_slice::<u32>()[CTL_PENDING_COUNT];
            // Written blocks become Device-owned now, so that an eviction writes them back.
            space.device_wrote(&dev.take_dirty())?;
            let nf = faults.blocks.len() as u64 + u64::from(faults.overflowed);
            report.device_faults += nf;
            space.stats.device_faults.fetch_add(nf, Relaxed);
            if let Some(e) = faults.first_error {
                let place = match unimem_alloc::lookup(e.address as *const u8) {
                    Some((b, s)) if space.block_of(e.address as usize).is_some() => format!(", inside the live allocation {b:#x}+{s}"),
                    _ if space.block_of(e.address as usize).is_some() => ", in the managed heap but in no live allocation".into(),
                    _ => String::new(),
                };
                return Err(LaunchError::Kernel { kernel: kernel.clone(), invocation: e.invocation, address: e.address, kind: e.kind, what: prelude::error_kind_text(e.kind), place, errors: faults.errors }.into());
            }
            remember(touched, &faults.blocks, capacity);
            if pending == 0 {
                return Ok(());
            }
            let first_pending = ctl.as_slice::<u32>()[round.out_at as usize];
            if report.rounds >= MAX_ROUNDS {
                return Err(LaunchError::TooManyRounds { kernel: kernel.clone(), pending, invocation: first_pending, rounds: report.rounds }.into());
            }
            let completed = round.count - pending;
            let mut new_blocks = 0;
            let mut load: Vec<u32> = Vec::new();
            let mut new_poison = false;
            for &b in &faults.blocks {
                if seen.insert(b) {
                    new_blocks += 1;
                }
                if has_live(space, b) {
                    load.push(b);
                } else if !poison.contains(&b) && poison.len() < CTL_POISON_CAPACITY {
                    poison.push(b);
                    new_poison = true;
                }
            }
            if completed == 0 && new_blocks == 0 && !new_poison && faults.overflowed == 0 {
                stalls += 1;
                if stalls >= 3 {
                    let b = faults.blocks.first().copied().unwrap_or(0);
                    return Err(LaunchError::NoProgress { kernel: kernel.clone(), invocation: first_pending, round: report.rounds, address: space.block_addr(b as usize), frames: capacity, block_size: bs }.into());
                }
            } else {
                stalls = 0;
            }
            let t = Instant::now();
            dev.touch(pinned);
            self.migrate(space, capacity - pinned.len(), &mut load)?;
            report.migrate_time += t.elapsed();
            round = Round { count: pending, in_at: round.out_at, out_at: if round.out_at == lists[0] { lists[1] } else { lists[0] }, max_steps };
        }
    }

    /// Migrates faulted blocks, at most half of `room` (the frames not pinned) per round so
    /// that the invocations whose blocks arrive can complete, plus, within that budget, the
    /// live blocks that follow each of them.
    fn migrate(&self, space: &Space, room: usize, faulted: &mut Vec<u32>) -> Result<(), Error> {
        let budget = (room / 2).max(1);
        faulted.truncate(budget);
        faulted.sort_unstable();
        faulted.dedup();
        let mut all = faulted.clone();
        'outer: for &b in faulted.iter() {
            for k in 1..=PREFETCH_BLOCKS as u32 {
                if all.len() >= budget {
                    break 'outer;
                }
                let nb = b + k;
                if space.block_of(space.block_addr(nb as usize)).is_none() || !has_live(space, nb) {
                    break;
                }
                all.push(nb);
            }
        }
        all.sort_unstable();
        all.dedup();
        for (first, count) in runs(&all) {
            space.to_device(space.block_addr(first as usize), count * space.block_size(), false)?;
        }
        Ok(())
    }
}

/// Runs `pipeline` once with no invocations: drivers that compile lazily (lavapipe JITs on
/// the first dispatch, ~0.8 s for the demo's kernel) do it here, in `Kernel::new`, rather
/// than in the first launch.
fn warm_up(dev: &VulkanBlockDevice, pipeline: &ComputePipeline, atomics: bool) -> Result<(), Error> {
    let _serial = lock(&LAUNCH);
    let mut bufs: Vec<Buffer> = Vec::new();
    for _ in 0..if atomics { 3 } else { 2 } {
        bufs.push(dev.device().create_host_buffer((prelude::ctl_words(0) * 4) as u64)?);
    }
    let mut refs: Vec<&mut Buffer> = bufs.iter_mut().collect();
    let round = Round { count: 0, in_at: 0, out_at: CTL_LISTS_AT as u32, max_steps: 0 };
    dev.dispatch(pipeline, &mut refs, bytemuck::bytes_of(&round), [1, 1, 1])?;
    Ok(())
}

/// [`LAVAPIPE_MAX_STEPS`] on lavapipe, else [`DEFAULT_MAX_STEPS`].
fn default_max_steps(dev: &VulkanBlockDevice) -> u32 {
    if dev.device().report().name.contains("llvmpipe") {
        LAVAPIPE_MAX_STEPS
    } else {
        DEFAULT_MAX_STEPS
    }
}

/// True when block `b` holds a live allocation.
fn has_live(space: &Space, b: u32) -> bool {
    let mut live = false;
    unimem_alloc::for_each_live(space.block_addr(b as usize), space.block_size(), |_, _| live = true);
    live
}

/// Runs of consecutive blocks in sorted `blocks`: (first, count).
fn runs(blocks: &[u32]) -> Vec<(u32, usize)> {
    let mut out: Vec<(u32, usize)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((f, c)) if *f + *c as u32 == b => *c += 1,
            _ => out.push((b, 1)),
        }
    }
    out
}

/// Adds `blocks` to the kernel's history, keeping at most `cap` (the newest).
fn remember(touched: &mut Vec<u32>, blocks: &[u32], cap: usize) {
    if blocks.is_empty() {
        return;
    }
    let mut known: HashSet<u32> = touched.iter().copied().collect();
    for &b in blocks {
        if known.insert(b) {
            touched.push(b);
        }
    }
    if touched.len() > cap {
        let drop = touched.len() - cap;
        touched.drain(..drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_coalesce_consecutive_blocks() {
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 1), (9, 2)]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn args_align_64_bit_values_like_c() {
        let a = Args::new().u32(7).u64(0x1_0000_0002).f32(1.0);
        assert_eq!(a.words(), &[7, 0, 2, 1, 1.0f32.to_bits()]);
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut t = vec![1, 2];
        remember(&mut t, &[2, 3, 4], 3);
        assert_eq!(t, vec![2, 3, 4]);
    }
}
