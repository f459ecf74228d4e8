//! Coherence: which copy of each block is valid, and every transition between host and
//! device (the HMM mirror, in user space).
//!
//! - `state.rs`   — per-block state words, the migration bit, sequence numbers;
//! - `space.rs`   — [`Space`]: every state transition, the CPU fault service;
//! - `backend.rs` — [`BlockDevice`]: what coherence needs from a device;
//! - `exclusion.rs` — the launch lock: a launch excludes explicit migrations and `fork`;
//! - `fake.rs`    — [`FakeDevice`]: a CPU-backed device for tests;
//! - `stats.rs`   — counters;
//! - `twin.rs`    — twins: merging what the CPU and a running kernel wrote to one block.
//!
//! One [`Space`] per process covers the allocator's managed heap. [`install`] creates it,
//! installs the fault handler, and hooks the allocator (frees discard device copies of
//! blocks left without live data; registered granules are never purged) and `fork` (device
//! blocks come home first: the child has no device).

pub mod backend;
mod exclusion;
mod fake;
mod service;
mod space;
mod state;
mod stats;
mod twin;

pub use backend::{BackendError, BlockDevice, BlockId};
pub use fake::FakeDevice;
pub use exclusion::Exclusive;
pub use space::{now_ns, CoherenceError, FaultOutcome, LaunchScope, Space};
pub use state::{seq_of, state_of, State, BUSY};
pub use stats::{Counters, Snapshot};

use crate::faults::protect::{FaultMode, MprotectProtector, Protector, UffdProtector};
use std::sync::atomic::{AtomicPtr, Ordering::*};
use std::sync::{Arc, Mutex};

static SPACE: AtomicPtr<Space> = AtomicPtr::new(std::ptr::null_mut());
static INSTALL: Mutex<()> = Mutex::new(());
/// Set in the child of a `fork` of a process that had a space.
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// In a fork child, the parent's space if some of its blocks were still on the device at
/// the fork (their `all_home` failed): their state words still say Device. Read-only.
static LOST_IN_FORK: AtomicPtr<Space> = AtomicPtr::new(std::ptr::null_mut());

/// Is this process the child of a `fork` taken while coherence was installed?
pub fn is_fork_child() -> bool {
    FORKED.load(Acquire)
}

/// In the child of a `fork`: the first block overlapping `[addr, addr+len)` (index and
/// address) that was on the device when the process forked and could not be brought home,
/// so this process has no copy of it (its pages are inaccessible). `None` elsewhere.
/// Async-signal-safe (atomic loads only): the fault handler calls it.
pub fn lost_in_fork(addr: usize, len: usize) -> Option<(usize, usize)> {
    let p = LOST_IN_FORK.load(Acquire);
    // SAFETY: a leaked `Space` (never freed), stored by the child handler; no thread
    // changes its states in the child (no service thread, no runtime).
    let s = unsafe { p.as_ref() }?;
    let first = s.block_of(addr)?;
    let last = s.block_of(addr.saturating_add(len.max(1) - 1)).unwrap_or(s.block_count() - 1);
    (first..=last).find(|&b| s.state(b) == State::Device).map(|b| (b, s.block_addr(b)))
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A space already exists (one per process).
    #[error("coherence is already installed in this process (one space per process)")]
    AlreadyInstalled,
    /// The requested fault mechanism is not available.
    #[error("fault mechanism {mode} is not available: {source}{hint}")]
    Faults {
        /// The mode.
        mode: &'static str,
        /// Why.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// `UNIMEM_FAULTS` has a value we do not know (the message names it and the values).
    #[error("{0}")]
    BadMode(String),
    /// The device object lives in the managed heap, where it could migrate while the fault
    /// handler reads it.
    #[error("the device object at {0:#x} is in the managed heap; create it inside an unimem::InternalScope (runtime objects must never migrate)")]
    DeviceInManagedHeap(usize),
    /// The state table could not be created.
    #[error("cannot create the block state table: {0}")]
    Table(std::io::Error),
    /// The fault handler could not be installed.
    #[error("cannot install the SIGBUS/SIGSEGV handler: {0}")]
    Handler(std::io::Error),
}

/// The installed space, if any. Signal-safe.
#[inline]
pub fn space() -> Option<&'static Space> {
    let p = SPACE.load(Acquire);
    // SAFETY: SPACE is only ever set to a leaked Box<Space>, never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The fault mechanism `UNIMEM_FAULTS` asks for (`None` = auto).
pub fn requested_mode() -> Result<Option<FaultMode>, InstallError> {
    crate::options::faults().map_err(InstallError::BadMode)
}

fn open_protector(base: usize, len: usize, mode: Option<FaultMode>) -> Result<Box<dyn Protector>, InstallError> {
    let uffd = || -> Result<Box<dyn Protector>, InstallError> {
        UffdProtector::open(base, len).map(|p| Box::new(p) as Box<dyn Protector>).map_err(|source| InstallError::Faults {
            mode: "uffd",
            source,
            hint: " (userfaultfd with UFFD_USER_MODE_ONLY needs Linux 5.11+; `unimem info` shows what works; UNIMEM_FAULTS=mprotect uses signals instead)",
        })
    };
    let mprotect = || -> Result<Box<dyn Protector>, InstallError> {
        MprotectProtector::open(base, len)
            .map(|p| Box::new(p) as Box<dyn Protector>)
            .map_err(|source| InstallError::Faults { mode: "mprotect", source, hint: " (needs /proc/self/mem to be writable)" })
    };
    match mode {
        Some(FaultMode::Uffd) => uffd(),
        Some(FaultMode::Mprotect) => mprotect(),
        None => uffd().or_else(|_| mprotect()),
    }
}

/// Put the managed heap under coherence with `device`, using fault mechanism `mode`
/// (`None`: `UNIMEM_FAULTS`, default the fastest available). Once per process.
///
/// The device object and everything it allocates must be in the internal heap (create it
/// inside an [`unimem_alloc::InternalScope`]): the fault handler reads it, and it must not
/// be on a block that is migrating.
pub fn install(device: Arc<dyn BlockDevice>, mode: Option<FaultMode>) -> Result<&'static Space, InstallError> {
    let _internal = unimem_alloc::InternalScope::new();
    let dev_addr = Arc::as_ptr(&device) as *const u8;
    if unimem_alloc::contains(dev_addr) {
        return Err(InstallError::DeviceInManagedHeap(dev_addr as usize));
    }
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if space().is_some() {
        return Err(InstallError::AlreadyInstalled);
    }
    unimem_alloc::init();
    let (base, len) = unimem_alloc::managed_range();
    let mode = match mode {
        Some(m) => Some(m),
        None => requested_mode()?,
    };
    let prot = open_protector(base, len, mode)?;
    let new = Space::new(base, len, device, prot).map_err(InstallError::Table)?;
    let leaked: &'static Space = Box::leak(Box::new(new));
    leaked.service.start(leaked).map_err(InstallError::Handler)?;
    SPACE.store(leaked as *const Space as *mut Space, Release);
    crate::faults::handler::install().map_err(InstallError::Handler)?;
    unimem_alloc::set_purge_filter(|start, len| space().is_none_or(|s| s.protector().may_purge(start, len)));
    unimem_alloc::set_free_hook(|p, size| {
        if let Some(s) = space() {
            s.freed(p, size);
            crate::advice::freed(p, size, s.block_size());
        }
    });
    extern "C" fn before_fork() {
        if let Some(s) = space() {
            // A launch on another thread finishes first: its device copies must not come
            // home (and be dropped) under its dispatch. Held until the fork returns.
            s.launch_lock().hold_for_fork();
            if let Err((n, e)) = s.all_home() {
                eprintln!(
                    "unimem: before fork, {n} block(s) could not be brought home from the device (first: {e}); the child has no copy of them and faults if it touches them"
                );
            }
        }
    }
    extern "C" fn in_parent() {
        if let Some(s) = space() {
            s.launch_lock().release_after_fork(false);
        }
    }
    extern "C" fn in_child() {
        // The child has no device (and no service thread): coherence is off in it. Its
        // memory is plain memory (device blocks came home before the fork); mprotect'ed
        // Shared blocks are made writable again (uffd protections are not inherited).
        if let Some(s) = space() {
            s.launch_lock().release_after_fork(true);
            if s.release_protections_in_child() > 0 {
                LOST_IN_FORK.store(s as *const Space as *mut Space, Release);
            }
        }
        SPACE.store(std::ptr::null_mut(), Release);
        FORKED.store(true, Release);
    }
    // SAFETY: registering plain extern "C" functions. Registered after the allocator's
    // handlers, so `before_fork` runs before them (prepare handlers run in reverse order)
    // and may still allocate.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
    Ok(leaked)
}
