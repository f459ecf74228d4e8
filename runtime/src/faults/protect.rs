//! Host-side protection backends: how coherence makes host pages read-only or absent and
//! how it fills them back atomically.
//!
//! Two backends implement [`Protector`]:
//! - [`UffdProtector`]: userfaultfd in SIGBUS mode (`UFFD_USER_MODE_ONLY`,
//!   `UFFD_FEATURE_SIGBUS`). Absent pages are missing pages (`MADV_DONTNEED`), read-only is
//!   uffd write protection, and fills are `UFFDIO_COPY` (atomic per page: no thread can see a
//!   half-filled page). Protection is per page-table entry, so the number of VMAs does not
//!   grow with the number of blocks in different states.
//! - [`MprotectProtector`]: `mprotect` + SIGSEGV, filling through `/proc/self/mem` while the
//!   pages are still inaccessible, then granting access. Works without userfaultfd; each
//!   protection change may split a VMA, which coherence bounds.
//!
//! # Registration granules (uffd)
//! A registered range reports *every* missing page, including never-touched ones, and with
//! `UFFD_USER_MODE_ONLY` a kernel-mode access to a missing page fails with `EFAULT`. So the
//! region is registered lazily, one [`GRANULE`] at a time, the first time a block in it leaves
//! the host, and each granule is populated (`MADV_POPULATE_WRITE`) before it is registered:
//! host-state memory in a registered granule is therefore never missing. The allocator is told
//! not to purge registered granules (`unimem_alloc::set_purge_filter`).
//!
//! # Contract
//! Functions marked *signal-safe* are called from the SIGBUS/SIGSEGV handler: they make
//! system calls only, never allocate, never lock. The others run in normal context with the
//! block's migration bit held by the caller.

use super::uffd_abi::*;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Mutex;

/// Registration granule of the uffd backend.
pub const GRANULE: usize = 4 << 20;

/// Which backend, as `UNIMEM_FAULTS` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// userfaultfd, SIGBUS mode.
    Uffd,
    /// SIGSEGV + mprotect.
    Mprotect,
}

impl FaultMode {
    /// The name used by `UNIMEM_FAULTS` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultMode::Uffd => "uffd",
            FaultMode::Mprotect => "mprotect",
        }
    }
}

/// How host pages of a block are protected and filled.
pub trait Protector: Send + Sync {
    /// The backend.
    fn mode(&self) -> FaultMode;
    /// Prepare `[addr, addr+len)` for protection changes (register its granules).
    fn track(&self, addr: usize, len: usize) -> io::Result<()>;
    /// Writes fault from now on; reads proceed.
    fn make_read_only(&self, addr: usize, len: usize) -> io::Result<()>;
    /// Drop the host pages: every access faults from now on.
    fn make_absent(&self, addr: usize, len: usize) -> io::Result<()>;
    /// Grant write access to present pages. Signal-safe.
    fn make_writable(&self, addr: usize, len: usize) -> Result<(), i32>;
    /// Fill absent pages with `len` bytes from `src` and then grant read (and write, if
    /// `writable`) access, atomically with respect to other threads. Signal-safe.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes; `[addr, addr+len)` must be absent pages of a
    /// block whose migration bit the caller holds.
    unsafe fn fill(&self, addr: usize, src: *const u8, len: usize, writable: bool) -> Result<(), i32>;
    /// Make absent pages read as zero, writable. Signal-safe.
    fn fill_zero(&self, addr: usize, len: usize) -> Result<(), i32>;
    /// Map a zero page at the page holding `addr` if that page is missing, and say whether
    /// it did. Only a program drops a page of a Host block (`madvise` past the shim's, a
    /// kernel reclaiming `MADV_FREE` pages): registered granules are populated first, and
    /// the runtime drops pages only of blocks whose migration bit it holds. Under
    /// userfaultfd the next touch of such a page raises SIGBUS where Linux would read
    /// zeros; the mprotect backend never sees it (the kernel fills it). Signal-safe.
    fn zero_if_missing(&self, addr: usize) -> bool;
    /// Is `addr` inside a range this backend may have protected?
    fn is_tracked(&self, addr: usize) -> bool;
    /// May the allocator return `[start, start+len)` (free memory) to the OS?
    fn may_purge(&self, start: usize, len: usize) -> bool;
}

fn ioctl<T>(fd: i32, req: u64, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is the struct the request expects (see uffd_abi); the kernel reads and
    // writes only within it.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r == 0 {
        Ok(())
    } else {
        // SAFETY: reading this thread's errno.
        Err(unsafe { *libc::__errno_location() })
    }
}

/// Drive a filling ioctl (`UFFDIO_COPY`, `UFFDIO_ZEROPAGE`) over `len` bytes: `step(done)`
/// fills from offset `done` on and returns the ioctl's result and its byte count. A page
/// already present (`EEXIST`, filled earlier) is skipped; `EAGAIN` retries after the partial
/// progress. Signal-safe.
fn fill_pages(len: usize, mut step: impl FnMut(usize) -> (Result<(), i32>, i64)) -> Result<(), i32> {
    let mut done = 0;
    while done < len {
        let (r, n) = step(done);
        let progress = if n > 0 { n as usize } else { 0 };
        match r {
            Ok(()) => done += progress,
            Err(libc::EEXIST) => done += progress + 4096,
            Err(libc::EAGAIN) => done += progress,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The userfaultfd backend.
pub struct UffdProtector {
    fd: i32,
    base: usize,
    len: usize,
    /// One bit per granule of `[base, base+len)`: registered.
    registered: Box<[AtomicU64]>,
    register_lock: Mutex<()>,
}

impl UffdProtector {
    /// Open a user-mode-only uffd in SIGBUS mode with write protection, for the managed
    /// range `[base, base+len)` (`base` aligned to [`GRANULE`] is not required).
    pub fn open(base: usize, len: usize) -> io::Result<UffdProtector> {
        // SAFETY: plain syscall; flags are valid userfaultfd flags.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY) } as i32;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut api = UffdioApi { api: UFFD_API, features: FEATURE_SIGBUS | FEATURE_PAGEFAULT_FLAG_WP, ioctls: 0 };
        if let Err(e) = ioctl(fd, UFFDIO_API, &mut api) {
            // SAFETY: closing the fd we just opened.
            unsafe { libc::close(fd) };
            return Err(io::Error::from_raw_os_error(e));
        }
        let granules = len.div_ceil(GRANULE);
        let registered = (0..granules.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(UffdProtector { fd, base, len, registered, register_lock: Mutex::new(()) })
    }

    fn granule_registered(&self, g: usize) -> bool {
        self.registered[g / 64].load(Acquire) & (1 << (g % 64)) != 0
    }

    fn wp(&self, addr: usize, len: usize, on: bool) -> Result<(), i32> {
        let mut arg = UffdioWriteprotect {
            range: UffdioRange { start: addr as u64, len: len as u64 },
            mode: if on { WRITEPROTECT_MODE_WP } else { 0 },
        };
        ioctl(self.fd, UFFDIO_WRITEPROTECT, &mut arg)
    }
}

impl Drop for UffdProtector {
    fn drop(&mut self) {
        // SAFETY: our fd; closing it unregisters every range.
        unsafe { libc::close(self.fd) };
    }
}

impl Protector for UffdProtector {
    fn mode(&self) -> FaultMode {
        FaultMode::Uffd
    }

    fn track(&self, addr: usize, len: usize) -> io::Result<()> {
        let first = (addr - self.base) / GRANULE;
        let last = (addr + len - 1 - self.base) / GRANULE;
        for g in first..=last {
            if self.granule_registered(g) {
                continue;
            }
            let _guard = self.register_lock.lock().unwrap_or_else(|p| p.into_inner());
            if self.granule_registered(g) {
                continue;
            }
            let start = self.base + g * GRANULE;
            let glen = GRANULE.min(self.base + self.len - start);
            // Populate first so that no host-state page of a registered granule is missing
            // (see the module comment). Uncommitted tails fail with ENOMEM: register only the
            // committed prefix, which is all a block can live in.
            // SAFETY: populating our own committed, read-write arena memory.
            let r = unsafe { unimem_alloc::os::madvise(start, glen, libc::MADV_POPULATE_WRITE) };
            if r != 0 {
                return Err(io::Error::other(format!(
                    "cannot populate granule {start:#x}+{glen:#x} before registering it: {}",
                    io::Error::last_os_error()
                )));
            }
            let mut reg = UffdioRegister {
                range: UffdioRange { start: start as u64, len: glen as u64 },
                mode: REGISTER_MODE_MISSING | REGISTER_MODE_WP,
                ioctls: 0,
            };
            ioctl(self.fd, UFFDIO_REGISTER, &mut reg).map_err(|e| {
                io::Error::other(format!("UFFDIO_REGISTER {start:#x}+{glen:#x}: {}", io::Error::from_raw_os_error(e)))
            })?;
            self.registered[g / 64].fetch_or(1 << (g % 64), Release);
        }
        Ok(())
    }

    fn make_read_only(&self, addr: usize, len: usize) -> io::Result<()> {
        self.wp(addr, len, true).map_err(|e| io::Error::other(format!("UFFDIO_WRITEPROTECT {addr:#x}+{len:#x}: {}", io::Error::from_raw_os_error(e))))
    }

    fn make_absent(&self, addr: usize, len: usize) -> io::Result<()> {
        // SAFETY: the caller holds the block's migration bit; its host copy is stale.
        if unsafe { unimem_alloc::os::madvise(addr, len, libc::MADV_DONTNEED) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn make_writable(&self, addr: usize, len: usize) -> Result<(), i32> {
        self.wp(addr, len, false)
    }

    unsafe fn fill(&self, addr: usize, src: *const u8, len: usize, writable: bool) -> Result<(), i32> {
        fill_pages(len, |done| {
            let mut c = UffdioCopy {
                dst: (addr + done) as u64,
                src: src as u64 + done as u64,
                len: (len - done) as u64,
                mode: if writable { 0 } else { COPY_MODE_WP },
                copy: 0,
            };
            (ioctl(self.fd, UFFDIO_COPY, &mut c), c.copy)
        })
    }

    fn fill_zero(&self, addr: usize, len: usize) -> Result<(), i32> {
        fill_pages(len, |done| {
            let mut z = UffdioZeropage { range: UffdioRange { start: (addr + done) as u64, len: (len - done) as u64 }, mode: 0, zeropage: 0 };
            (ioctl(self.fd, UFFDIO_ZEROPAGE, &mut z), z.zeropage)
        })?;
        // Present pages that were write-protected (Shared) become writable too.
        self.make_writable(addr, len)
    }

    fn zero_if_missing(&self, addr: usize) -> bool {
        let page = addr & !4095;
        let mut z = UffdioZeropage { range: UffdioRange { start: page as u64, len: 4096 }, mode: 0, zeropage: 0 };
        // EEXIST: the page is there, and the fault is something else.
        self.is_tracked(addr) && ioctl(self.fd, UFFDIO_ZEROPAGE, &mut z).is_ok()
    }

    fn is_tracked(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.len && self.granule_registered((addr - self.base) / GRANULE)
    }

    fn may_purge(&self, start: usize, len: usize) -> bool {
        // A purged page of a registered granule would be missing: a kernel-mode access to it
        // would fail with EFAULT instead of reading zeros.
        if len == 0 || start.wrapping_sub(self.base) >= self.len {
            return true;
        }
        let first = (start - self.base) / GRANULE;
        let last = (start + len - 1 - self.base).min(self.len - 1) / GRANULE;
        (first..=last).all(|g| !self.granule_registered(g))
    }
}

/// The `mprotect` + SIGSEGV backend.
///
/// Each block whose protection differs from its neighbours' costs up to two VMAs, and the
/// kernel refuses new mappings past `vm.max_map_count`. So at most `budget` blocks may be
/// protected (read-only or absent) at once — a third of `vm.max_map_count` — and a block
/// over budget stays on the host (`make_read_only` fails with `ENOMEM`, which coherence treats
/// like a full device), leaving the rest of the limit to the program.
pub struct MprotectProtector {
    mem_fd: i32,
    base: usize,
    len: usize,
    protected: std::sync::atomic::AtomicIsize,
    budget: isize,
}

impl MprotectProtector {
    /// Open `/proc/self/mem` for atomic fills of inaccessible pages.
    pub fn open(base: usize, len: usize) -> io::Result<MprotectProtector> {
        // SAFETY: opening a path with a NUL-terminated literal.
        let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|v| v.trim().parse::<isize>().ok()).unwrap_or(65530);
        Ok(MprotectProtector { mem_fd: fd, base, len, protected: std::sync::atomic::AtomicIsize::new(0), budget: max_map_count / 3 })
    }

    /// Blocks currently protected (read-only or absent).
    pub fn protected_blocks(&self) -> isize {
        self.protected.load(Relaxed)
    }

    fn unprotected(&self) {
        self.protected.fetch_sub(1, Relaxed);
    }

    fn protect(&self, addr: usize, len: usize, prot: i32) -> Result<(), i32> {
        // SAFETY: changing the protection of arena memory whose block the caller controls.
        if unsafe { libc::mprotect(addr as *mut _, len, prot) } == 0 {
            Ok(())
        } else {
            // SAFETY: reading errno.
            Err(unsafe { *libc::__errno_location() })
        }
    }
}

impl Drop for MprotectProtector {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.mem_fd) };
    }
}

impl Protector for MprotectProtector {
    fn mode(&self) -> FaultMode {
        FaultMode::Mprotect
    }

    fn track(&self, _addr: usize, _len: usize) -> io::Result<()> {
        Ok(())
    }

    fn make_read_only(&self, addr: usize, len: usize) -> io::Result<()> {
        if self.protected.fetch_add(1, Relaxed) >= self.budget {
            self.unprotected();
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        self.protect(addr, len, libc::PROT_READ).map_err(|e| {
            self.unprotected();
            io::Error::from_raw_os_error(e)
        })
    }

    fn make_absent(&self, addr: usize, len: usize) -> io::Result<()> {
        self.protect(addr, len, libc::PROT_NONE).map_err(io::Error::from_raw_os_error)?;
        // SAFETY: the host copy is stale; dropping it frees the memory.
        unsafe { unimem_alloc::os::madvise(addr, len, libc::MADV_DONTNEED) };
        Ok(())
    }

    fn make_writable(&self, addr: usize, len: usize) -> Result<(), i32> {
        self.protect(addr, len, libc::PROT_READ | libc::PROT_WRITE)?;
        self.unprotected();
        Ok(())
    }

    unsafe fn fill(&self, addr: usize, src: *const u8, len: usize, writable: bool) -> Result<(), i32> {
        // Write through /proc/self/mem while the pages are still PROT_NONE (nobody can see a
        // partial fill), then grant access.
        let mut done = 0;
        while done < len {
            // SAFETY: `src` is readable for `len` bytes (caller); the target is our memory.
            let n = unsafe { libc::pwrite(self.mem_fd, src.add(done) as *const _, len - done, (addr + done) as i64) };
            if n <= 0 {
                // SAFETY: reading errno.
                return Err(unsafe { *libc::__errno_location() });
            }
            done += n as usize;
        }
        if writable {
            self.make_writable(addr, len)
        } else {
            self.protect(addr, len, libc::PROT_READ)
        }
    }

    fn fill_zero(&self, addr: usize, len: usize) -> Result<(), i32> {
        // The pages were dropped when made absent: read-write access makes them read as zero.
        self.make_writable(addr, len)
    }

    fn zero_if_missing(&self, _addr: usize) -> bool {
        false
    }

    fn is_tracked(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base) < self.len
    }

    fn may_purge(&self, _start: usize, _len: usize) -> bool {
        true
    }
}
