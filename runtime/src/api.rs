//! The public runtime API: one lazily created runtime per process (a device plus the
//! coherent space over the managed heap), explicit moves, and statistics. The C API in
//! `libunimem.so` is a thin layer over these functions.
//!
//! The device is chosen by `UNIMEM_DEVICE`: unset, an index or a name picks a Vulkan device
//! (see `device::select`); `fake` picks the CPU-backed [`FakeDevice`], which runs everything
//! without Vulkan (tests, machines without a GPU driver).

use crate::coherence::{self, BlockDevice, CoherenceError, FakeDevice, InstallError, Snapshot, Space};
use crate::device::{DeviceError, VulkanBlockDevice};
use crate::kernel::{CompileError, LaunchError};
use std::sync::{Arc, Mutex, OnceLock};
use unimem_alloc::InternalScope;

/// Where [`prefetch`] moves memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Host RAM: device copies dropped, host copy valid and writable.
    Host,
    /// The device: the memory migrates (as `cudaMemPrefetchAsync` does); the device copy
    /// is the only valid one until the CPU touches it again.
    Device,
}

/// Errors of the runtime API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device could not be opened.
    #[error("unimem: {0}")]
    Device(#[from] DeviceError),
    /// Coherence could not be installed.
    #[error("unimem: {0}")]
    Install(#[from] InstallError),
    /// A migration failed (host data is intact).
    #[error("unimem: {0}")]
    Coherence(#[from] CoherenceError),
    /// An option has an invalid value.
    #[error("unimem: {0}")]
    Config(String),
    /// A kernel did not compile.
    #[error("unimem: {0}")]
    Compile(#[from] CompileError),
    /// A kernel launch failed (the runtime stays usable).
    #[error("unimem: {0}")]
    Launch(#[from] LaunchError),
    /// Kernels need a Vulkan device and the runtime runs without one.
    #[error("unimem: kernels need a Vulkan device, and the runtime runs on {0}; unset UNIMEM_DEVICE=fake or install a Vulkan driver (Mesa's lavapipe runs on any CPU); a CPU fallback comes with the compiler")]
    NoKernels(&'static str),
    /// A call that cannot be carried out as asked (the message says why and what to do).
    #[error("unimem: {0}")]
    Usage(String),
    /// An earlier attempt to start the runtime failed; it is not retried.
    #[error("unimem: the runtime failed to start earlier: {0}")]
    StartFailed(String),
    /// This process is the child of a `fork` taken while the runtime ran: it has the memory,
    /// all of it on the host, but no device. Returned by the calls that need the device.
    #[error("unimem: this process is the child of a fork: it inherited the memory (all of it on the host) but not the Vulkan device, which stays with the parent, so kernels and moves to the device cannot run here; exec a new program to use unimem in it")]
    ForkChild,
    /// This process is the child of a `fork`, and memory it asked for was on the device when
    /// the process forked and could not be brought home: the child has no copy of it.
    #[error("unimem: this process is the child of a fork, and {addr:#x} lies in block {block}, which was on the device when the process forked and could not be brought home (the parent printed why on stderr): this process has no copy of it, and touching it faults")]
    LostInFork {
        /// The block's first address.
        addr: usize,
        /// The block.
        block: usize,
    },
}

static RUNTIME: Mutex<Option<Result<&'static Space, String>>> = Mutex::new(None);

/// The Vulkan engine behind the space, when the runtime runs on one (kernels launch on it).
static VULKAN: OnceLock<Arc<VulkanBlockDevice>> = OnceLock::new();

fn open_device() -> Result<Arc<dyn BlockDevice>, Error> {
    if crate::options::DEVICE.value().is_some_and(|v| v.eq_ignore_ascii_case("fake")) {
        let (_, len) = unimem_alloc::managed_range();
        let bs = crate::options::block_size().map_err(Error::Config)?;
        let frames = crate::options::device_memory().map_err(Error::Config)?.map_or(16384, |b| (b as usize / bs).max(1));
        // The fake device copies with memcpy and runs no kernels, so these two change
        // nothing on it; a bad value is still refused, as on a Vulkan device, and asking
        // for what it cannot do is an error rather than ignored.
        crate::options::device_copy().map_err(Error::Config)?;
        if crate::options::in_place().map_err(Error::Config)? == crate::options::InPlaceMode::On {
            return Err(Error::Config(
                "UNIMEM_IN_PLACE=on: the fake device (UNIMEM_DEVICE=fake) has no in-place mode (it cannot map host memory); unset UNIMEM_IN_PLACE or use a Vulkan device".into(),
            ));
        }
        return Ok(Arc::new(FakeDevice::new(bs, frames, len / bs)));
    }
    let dev = Arc::new(VulkanBlockDevice::open()?);
    let _ = VULKAN.set(Arc::clone(&dev));
    Ok(dev)
}

/// The runtime and the Vulkan engine under it, for kernel launches. Fails with
/// [`Error::NoKernels`] on the fake device (or when coherence was installed by hand).
pub fn vulkan_runtime() -> Result<(&'static Space, &'static Arc<VulkanBlockDevice>), Error> {
    let space = runtime()?;
    match VULKAN.get() {
        Some(dev) => Ok((space, dev)),
        None if crate::options::DEVICE.value().is_some_and(|v| v.eq_ignore_ascii_case("fake")) => {
            Err(Error::NoKernels("the CPU fake device (UNIMEM_DEVICE=fake)"))
        }
        None => Err(Error::NoKernels("a device installed without the runtime's engine")),
    }
}

/// The runtime, started on first use: opens the device and puts the managed heap under
/// coherence. A failure is remembered and reported again by later calls. In the child of a
/// `fork` taken while the runtime ran: [`Error::ForkChild`] (the device stays with the
/// parent; the memory is plain host memory).
pub fn runtime() -> Result<&'static Space, Error> {
    if let Some(s) = coherence::space() {
        return Ok(s);
    }
    // Before the lock, which a thread of the parent may have held at the fork.
    if coherence::is_fork_child() {
        return Err(Error::ForkChild);
    }
    let _internal = InternalScope::new();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    match &*slot {
        Some(Ok(s)) => return Ok(s),
        Some(Err(msg)) => return Err(Error::StartFailed(msg.clone())),
        None => {}
    }
    unimem_alloc::init();
    let started = open_device().and_then(|dev| Ok(coherence::install(dev, None)?));
    // Remembered without the prefix, which `StartFailed`'s message puts before it again.
    *slot = Some(started.as_ref().map(|s| *s).map_err(|e| e.to_string().trim_start_matches("unimem: ").to_owned()));
    started
}

/// Move the blocks overlapping `[p, p+len)` to `loc`. Memory that does not fit on the
/// device (after evicting) stays on the host. Waits for a launch running on another thread
/// (as every `Space` migration does). In the child of a `fork`, moving home succeeds with
/// nothing to do (everything is home, except blocks the device kept at the fork:
/// [`Error::LostInFork`]) and moving to the device is [`Error::ForkChild`].
/// A zero-length range is a successful no-op for any `p` (the runtime is not started).
pub fn prefetch(p: *const u8, len: usize, loc: Location) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    if loc == Location::Host && coherence::is_fork_child() {
        return home_in_fork_child(p, len, true);
    }
    let space = runtime()?;
    match loc {
        Location::Device => space.to_device(p as usize, len, true).map(drop)?,
        Location::Host => space.to_host(p as usize, len)?,
    }
    Ok(())
}

/// Advice for [`advise`] (CUDA's `cudaMemAdvise` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Mostly read by kernels: keep a read-only copy on each side (read duplication).
    ReadMostly,
    /// Keep on the host.
    PreferredHost,
    /// Keep on the device.
    PreferredDevice,
    /// Mirror on both sides (as `ReadMostly`).
    Mirror,
    /// Forget earlier advice.
    Clear,
}

/// Advise where `[p, p+len)` should live. Applied now, and **remembered** for the range
/// (until `Clear` covers it, or the memory is freed; an object freed among advised
/// neighbours keeps it while its block holds live allocations: advice acts on blocks): see
/// [`crate::advice`] for what each launch does. Now: `ReadMostly` and `Mirror` make the
/// blocks resident read-duplicated (Shared), `PreferredDevice` moves them to the device,
/// `PreferredHost` brings them home, `Clear` forgets earlier advice. Memory that does not fit
/// on the device stays on the host. Errors: a range outside the managed heap; more than
/// [`crate::advice::MAX_RANGES`] advised ranges. Waits for a launch running on another
/// thread. In the child of a `fork`, `PreferredHost` and `Clear` succeed with nothing to do
/// (everything is home, and no launch will run there; as for [`prefetch`], a block the
/// device kept at the fork is [`Error::LostInFork`]) and the others are
/// [`Error::ForkChild`]. A zero-length range is a successful no-op for any `p`: nothing is
/// applied or remembered (the runtime is not started).
pub fn advise(p: *const u8, len: usize, advice: Advice) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    if matches!(advice, Advice::PreferredHost | Advice::Clear) && coherence::is_fork_child() {
        return home_in_fork_child(p, len, advice == Advice::PreferredHost);
    }
    let space = runtime()?;
    // Recording the advice and applying it, as one.
    let _no_launch = space.exclusive();
    let _internal = InternalScope::new();
    space.blocks_in(p as usize, len)?;
    crate::advice::set(p as usize, p as usize + len, advice).map_err(|_| {
        Error::Usage(format!(
            "advise({p:p}, {len}): {} address ranges already carry advice; clear some first (Advice::Clear, UNIMEM_ADVISE_CLEAR)",
            crate::advice::MAX_RANGES
        ))
    })?;
    match advice {
        Advice::ReadMostly | Advice::Mirror => space.to_device(p as usize, len, false).map(drop)?,
        Advice::PreferredDevice => space.to_device(p as usize, len, true).map(drop)?,
        Advice::PreferredHost => space.to_host(p as usize, len)?,
        Advice::Clear => {}
    }
    Ok(())
}

/// In the child of a `fork`, where all memory is home: a call that would keep `[p, p+len)`
/// on the host has nothing to do. The range (`len` > 0) is still checked as the parent's
/// runtime checks it (it must lie in the managed heap), and, with `home`, [`Error::LostInFork`]
/// if part of it stayed on the device at the fork (the parent could not bring it home).
fn home_in_fork_child(p: *const u8, len: usize, home: bool) -> Result<(), Error> {
    let (base, heap_len) = unimem_alloc::managed_range();
    let addr = p as usize;
    match addr.checked_add(len) {
        Some(end) if addr >= base && end <= base + heap_len => match coherence::lost_in_fork(addr, len).filter(|_| home) {
            Some((block, addr)) => Err(Error::LostInFork { addr, block }),
            None => Ok(()),
        },
        _ => Err(CoherenceError::NotManaged { addr, len, base, heap_len }.into()),
    }
}

/// Forget the contents of the whole blocks inside `[p, p+len)`: device copies are dropped
/// without copying back, and the memory reads as zero afterwards. Waits for a launch
/// running on another thread. In the child of a `fork`: [`Error::ForkChild`]. A zero-length
/// range is a successful no-op for any `p` (the runtime is not started).
pub fn discard(p: *const u8, len: usize) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    Ok(runtime()?.discard(p as usize, len)?)
}

/// Finish outstanding runtime work: wait until no launch runs on another thread, then drop
/// the device copies that CPU writes made stale (`unimem_sync` in C). Never fails and
/// starts nothing: a no-op before the runtime starts and in the child of a `fork` (no
/// launch runs there).
pub fn sync() {
    if let Some(s) = coherence::space() {
        // Returns once no launch runs (launches hold the launch side of this lock).
        drop(s.exclusive());
        s.reap_stale();
    }
}

/// Counters of the running runtime (all zero before it starts).
pub fn stats() -> Snapshot {
    coherence::space().map(|s| s.stats.snapshot()).unwrap_or_default()
}
