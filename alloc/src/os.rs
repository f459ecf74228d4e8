//! The OS layer: reservation, commit, purge, environment and fatal-error printing.
//!
//! Shared contract for every function here: none of them allocates, none takes a lock,
//! and all are safe to call before `main`, inside `malloc`, and (except `fatal`, which
//! ends the process) from a thread that holds allocator locks. Errors are returned as
//! `errno` values; the callers decide whether an error is fatal.

use core::ptr;

/// The OS page size this allocator assumes. Checked against `sysconf` at init.
pub const OS_PAGE: usize = 4096;

/// A fresh private anonymous mapping of `len` bytes with protection `prot`, never
/// reserving swap. Returns its address or the `errno` of the failure.
fn map_anonymous(len: usize, prot: i32) -> Result<usize, i32> {
    // SAFETY: an anonymous mapping at a kernel-chosen address aliases nothing.
    let p = unsafe {
        libc::mmap(ptr::null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p as usize)
    }
}

/// Reserve `len` bytes of address space with no access and no swap reservation.
pub fn reserve(len: usize) -> Result<usize, i32> {
    map_anonymous(len, libc::PROT_NONE)
}

/// Map `len` bytes of read-write, zero-filled, never-migrated memory for allocator
/// metadata (page map, span descriptors, thread heaps). Pages cost nothing until touched.
pub fn map_metadata(len: usize) -> Result<usize, i32> {
    map_anonymous(len, libc::PROT_READ | libc::PROT_WRITE)
}

/// Make `[addr, addr+len)` of a reservation readable and writable.
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`] and hold no live data
/// that another protection depends on.
pub unsafe fn commit(addr: usize, len: usize) -> Result<(), i32> {
    // SAFETY: the caller guarantees the range is ours (see above).
    let r = unsafe { libc::mprotect(addr as *mut _, len, libc::PROT_READ | libc::PROT_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Give the physical pages of `[addr, addr+len)` back to the OS; the range stays mapped
/// and reads as zero afterwards.
///
/// # Safety
/// The range must be committed memory of ours that holds nothing anyone will read.
pub unsafe fn purge(addr: usize, len: usize) {
    // SAFETY: the caller guarantees the range is ours and dead. MADV_DONTNEED on private
    // anonymous memory cannot fail for a valid range; a failure only keeps the pages.
    unsafe {
        madvise(addr, len, libc::MADV_DONTNEED);
    }
}

/// `madvise(2)` by system call: past the `madvise` that `libunimem.so` exports for programs
/// (which zeroes managed memory instead of dropping its pages), for unimem's own page drops
/// and populations. Returns 0 or -1 with `errno` set. Async-signal-safe.
///
/// # Safety
/// As `madvise(2)`: `advice` must suit the range (dropping pages loses their content).
pub unsafe fn madvise(addr: usize, len: usize, advice: i32) -> i32 {
    // SAFETY: the caller's contract; the system call only changes the range's pages.
    unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) as i32 }
}

/// Monotonic nanoseconds (vDSO `clock_gettime`, no allocation).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writing into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Coarse monotonic nanoseconds (vDSO `clock_gettime(CLOCK_MONOTONIC_COARSE)`: the time of
/// the last timer tick, a memory read without a hardware clock read, a few ns). Behind
/// [`now_ns`] by up to [`coarse_resolution_ns`]. For the page heap's free-run stamps, read
/// on every free of a run while the heap holds more free memory than its purge threshold.
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writing into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The step of [`coarse_now_ns`] (the kernel's tick: 1-10 ms). 10 ms if it cannot be read.
pub fn coarse_resolution_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writing into a local timespec.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return 10_000_000;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// Read an environment variable without allocating: a borrowed view into `environ`.
/// Safe before `main`: the C runtime sets `environ` before any constructor runs.
pub fn getenv(name: &str) -> Option<&'static [u8]> {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings owned by the
    // C runtime for the life of the process; nobody in this process calls setenv while
    // the allocator initialises (it runs before or inside the first malloc).
    unsafe {
        let mut e = environ;
        if e.is_null() {
            return None;
        }
        while !(*e).is_null() {
            let s = core::ffi::CStr::from_ptr(*e).to_bytes();
            if s.len() > name.len() && &s[..name.len()] == name.as_bytes() && s[name.len()] == b'=' {
                return Some(&s[name.len() + 1..]);
            }
            e = e.add(1);
        }
    }
    None
}

/// A fixed-capacity, allocation-free line builder for messages printed from inside
/// the allocator (where formatting through `std` could recurse into `malloc`).
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line { buf: [0; 512], len: 0 }
    }
    pub fn s(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }
    pub fn hex(&mut self, v: usize) -> &mut Self {
        self.s("0x");
        let mut started = false;
        for i in (0..16).rev() {
            let d = (v >> (i * 4)) & 0xf;
            if d != 0 || started || i == 0 {
                started = true;
                let c = b"0123456789abcdef"[d];
                self.s(core::str::from_utf8(&[c]).unwrap_or("?"));
            }
        }
        self
    }
    pub fn dec(&mut self, mut v: usize) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let digits = core::str::from_utf8(&tmp[i..]).unwrap_or("?");
        self.s(digits)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// Write the line (plus a newline) to stderr with one `write(2)`.
    pub fn print(&mut self) {
        self.s("\n");
        // SAFETY: writing our own buffer to fd 2; a short or failed write loses only the
        // message.
        unsafe {
            libc::write(2, self.buf.as_ptr() as *const _, self.len);
        }
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

/// Print `line` to stderr and abort the process. Used for heap corruption caused by the
/// program (double free, invalid free): continuing would corrupt memory silently.
pub fn fatal(line: &mut Line) -> ! {
    line.print();
    // SAFETY: abort is always safe to call; it raises SIGABRT.
    unsafe { libc::abort() }
}
