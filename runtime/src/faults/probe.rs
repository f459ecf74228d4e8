//! Probing which CPU fault mechanisms this process can use. Every mechanism is *tried*:
//! file descriptors are opened, handshakes made, pages registered and faults actually taken
//! and resolved; nothing is inferred from kernel versions or sysctls alone.
//!
//! Mechanisms (see the brief, "CPU faults"):
//! - userfaultfd with `UFFD_USER_MODE_ONLY` (unprivileged): `UFFDIO_API` handshake,
//!   SIGBUS mode with a real fault resolved in-thread by `UFFDIO_COPY`, write-protect
//!   registration and `UFFDIO_WRITEPROTECT`;
//! - userfaultfd without it (needs CAP_SYS_PTRACE or `vm.unprivileged_userfaultfd = 1`), the
//!   same, plus a *kernel-mode* fault (a `read(2)` into a registered page) served by a
//!   handler thread: what lets syscalls touch non-resident memory;
//! - `/dev/userfaultfd` (`USERFAULTFD_IOC_NEW`), the file-permission route to the above;
//! - SIGSEGV + `mprotect`: a PROT_NONE page made accessible by a temporary handler;
//! - `/proc/self/mem`: `pwrite` into a read-only page of our own (the atomic-fill fallback);
//! - the sysctls `vm.max_map_count` and `vm.unprivileged_userfaultfd`.
//!
//! Probes touch only mappings they create and restore every signal handler they install.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::trap::{self, Resolve};
use super::uffd_abi::*;

/// Why a probe step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// The step that failed (`userfaultfd(UFFD_USER_MODE_ONLY)`, `UFFDIO_API`, ...).
    pub step: String,
    /// The errno, when a system call failed.
    pub errno: Option<i32>,
    /// Extra explanation (what the errno means here, what to do).
    pub detail: String,
}

impl ProbeFailure {
    fn os(step: impl Into<String>, errno: i32, detail: impl Into<String>) -> Self {
        ProbeFailure {
            step: step.into(),
            errno: Some(errno),
            detail: detail.into(),
        }
    }
    fn last_os(step: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::os(
            step,
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            detail,
        )
    }
    fn logic(step: impl Into<String>, detail: impl Into<String>) -> Self {
        ProbeFailure {
            step: step.into(),
            errno: None,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.step)?;
        if let Some(e) = self.errno {
            write!(f, ": {}", std::io::Error::from_raw_os_error(e))?;
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// Result of one probe.
pub type Probe<T = ()> = Result<T, ProbeFailure>;

/// What one way of obtaining a userfaultfd gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UffdReport {
    /// Every `UFFD_FEATURE_*` the kernel offers (`UFFDIO_API` with no features requested).
    pub features: u64,
    /// The ioctls available on the fd (`1 << _UFFDIO_*`).
    pub ioctls: u64,
    /// SIGBUS mode: handshake requesting `UFFD_FEATURE_SIGBUS`, then a missing-page fault
    /// taken and resolved in the faulting thread with `UFFDIO_COPY`.
    pub sigbus: Probe,
    /// Write protection: a page registered with `MODE_WP` and toggled with
    /// `UFFDIO_WRITEPROTECT`.
    pub write_protect: Probe,
    /// A kernel-mode fault (`read(2)` into a registered page) served by a handler thread.
    /// `None` for user-mode-only descriptors, which by definition do not serve them.
    pub kernel_fault: Option<Probe>,
}

impl UffdReport {
    /// True when the kernel offers `feature` (a `UFFD_FEATURE_*` bit).
    pub fn has_feature(&self, feature: u64) -> bool {
        self.features & feature == feature
    }
}

/// The probe results for this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultProbe {
    /// The page size (`sysconf(_SC_PAGESIZE)`).
    pub page_size: usize,
    /// `userfaultfd(UFFD_USER_MODE_ONLY)`.
    pub uffd_user_mode: Probe<UffdReport>,
    /// `userfaultfd(0)`: kernel-mode faults too.
    pub uffd_kernel_mode: Probe<UffdReport>,
    /// `/dev/userfaultfd` + `USERFAULTFD_IOC_NEW` (kernel-mode faults too).
    pub dev_userfaultfd: Probe<UffdReport>,
    /// SIGSEGV handler + `mprotect`.
    pub signal_mprotect: Probe,
    /// `pwrite` to `/proc/self/mem` into a read-only page.
    pub proc_self_mem: Probe,
    /// `vm.max_map_count`, when readable.
    pub max_map_count: Option<u64>,
    /// `vm.unprivileged_userfaultfd`, when readable (absent on kernels without it).
    pub unprivileged_userfaultfd: Option<u64>,
}

impl FaultProbe {
    /// Runs every probe. Takes a few milliseconds; installs and restores signal handlers.
    pub fn run() -> FaultProbe {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let user_flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        let kernel_flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        FaultProbe {
            page_size,
            uffd_user_mode: probe_uffd(page_size, false, || {
                open_uffd_syscall(user_flags, "userfaultfd(UFFD_USER_MODE_ONLY)")
            }),
            uffd_kernel_mode: probe_uffd(page_size, true, || {
                open_uffd_syscall(kernel_flags, "userfaultfd(0)")
            }),
            dev_userfaultfd: probe_uffd(page_size, true, || open_uffd_dev(kernel_flags)),
            signal_mprotect: probe_signal_mprotect(page_size),
            proc_self_mem: probe_proc_self_mem(page_size),
            max_map_count: read_sysctl("/proc/sys/vm/max_map_count"),
            unprivileged_userfaultfd: read_sysctl("/proc/sys/vm/unprivileged_userfaultfd"),
        }
    }

    /// True when some mechanism can resolve CPU faults atomically (fill, then grant):
    /// userfaultfd in SIGBUS mode, or signal + `/proc/self/mem`.
    pub fn has_atomic_fill(&self) -> bool {
        let uffd = |p: &Probe<UffdReport>| p.as_ref().is_ok_and(|r| r.sigbus.is_ok());
        uffd(&self.uffd_user_mode)
            || uffd(&self.uffd_kernel_mode)
            || (self.signal_mprotect.is_ok() && self.proc_self_mem.is_ok())
    }
}

/// Reads an integer sysctl file.
fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    addr: usize,
    len: usize,
}

impl Mapping {
    fn new(len: usize, prot: libc::c_int, step: &str) -> Probe<Mapping> {
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ProbeFailure::last_os(step, "mmap of a probe page"));
        }
        Ok(Mapping {
            addr: p as usize,
            len,
        })
    }
    fn ptr<T>(&self) -> *mut T {
        self.addr as *mut T
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `Mapping::new` and nothing references it now.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

fn open_uffd_syscall(flags: libc::c_int, step: &str) -> Probe<OwnedFd> {
    // SAFETY: userfaultfd takes an int of flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let detail = match errno {
            libc::EPERM if flags & UFFD_USER_MODE_ONLY == 0 => {
                "kernel-mode faults need CAP_SYS_PTRACE or `sysctl vm.unprivileged_userfaultfd=1`"
            }
            libc::EPERM => "denied (seccomp or an LSM policy?)",
            libc::ENOSYS => "the kernel lacks CONFIG_USERFAULTFD, or a seccomp filter blocks it",
            libc::EINVAL => "the kernel predates UFFD_USER_MODE_ONLY (Linux 5.11)",
            _ => "",
        };
        return Err(ProbeFailure::os(step, errno, detail));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn open_uffd_dev(flags: libc::c_int) -> Probe<OwnedFd> {
    let step = "open(/dev/userfaultfd)";
    // SAFETY: the path is a NUL-terminated literal.
    let dev = unsafe { libc::open(c"/dev/userfaultfd".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if dev < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let detail = match errno {
            libc::ENOENT => "no such device (Linux < 6.1, or not created)",
            libc::EACCES => {
                "the device is root-only by default (mode 0600); a udev rule or group can grant access"
            }
            _ => "",
        };
        return Err(ProbeFailure::os(step, errno, detail));
    }
    // SAFETY: `dev` is a fresh descriptor we own.
    let dev = unsafe { OwnedFd::from_raw_fd(dev) };
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its integer argument.
    let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) };
    if fd < 0 {
        return Err(ProbeFailure::last_os(
            "ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW)",
            "",
        ));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `UFFDIO_API` requesting `features`; returns the kernel's answer.
fn handshake(fd: &OwnedFd, features: u64) -> Probe<UffdioApi> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `api` is a valid `struct uffdio_api` for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut api) } != 0 {
        return Err(ProbeFailure::last_os(
            format!(
                "UFFDIO_API requesting [{}]",
                feature_names(features).join(", ")
            ),
            "",
        ));
    }
    Ok(api)
}

fn register(fd: &OwnedFd, map: &Mapping, mode: u64) -> Probe<UffdioRegister> {
    let mut reg = UffdioRegister {
        range: UffdioRange {
            start: map.addr as u64,
            len: map.len as u64,
        },
        mode,
        ioctls: 0,
    };
    // SAFETY: the range is our own anonymous mapping; `reg` is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER as _, &mut reg) } != 0 {
        return Err(ProbeFailure::last_os(
            format!("UFFDIO_REGISTER mode {mode:#x}"),
            "",
        ));
    }
    Ok(reg)
}

fn probe_uffd(
    page: usize,
    kernel_mode: bool,
    open: impl Fn() -> Probe<OwnedFd>,
) -> Probe<UffdReport> {
    // A fd accepts one UFFDIO_API; ask for nothing first to learn what the kernel offers.
    let first = open()?;
    let api = handshake(&first, 0)?;
    let sigbus = if api.features & FEATURE_SIGBUS != 0 {
        open().and_then(|fd| probe_sigbus(&fd, page))
    } else {
        Err(ProbeFailure::logic(
            "UFFD_FEATURE_SIGBUS",
            "not offered by this kernel (Linux < 4.14)",
        ))
    };
    let write_protect = if api.features & FEATURE_PAGEFAULT_FLAG_WP != 0 {
        open().and_then(|fd| probe_write_protect(&fd, page))
    } else {
        Err(ProbeFailure::logic(
            "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
            "not offered by this kernel",
        ))
    };
    // `first` is in message mode (no features requested): right for a handler thread.
    let kernel_fault = kernel_mode.then(|| probe_kernel_fault(first, page));
    Ok(UffdReport {
        features: api.features,
        ioctls: api.ioctls,
        sigbus,
        write_protect,
        kernel_fault,
    })
}

const PATTERN: u64 = 0x756e_696d_656d_2121; // "unimem!!"

/// SIGBUS mode: the faulting thread resolves its own missing-page fault with UFFDIO_COPY.
fn probe_sigbus(fd: &OwnedFd, page: usize) -> Probe {
    handshake(fd, FEATURE_SIGBUS)?;
    let target = Mapping::new(page, libc::PROT_READ | libc::PROT_WRITE, "SIGBUS probe")?;
    let source = Mapping::new(page, libc::PROT_READ | libc::PROT_WRITE, "SIGBUS probe")?;
    // SAFETY: `source` is our own fresh, writable, page-sized mapping.
    unsafe { source.ptr::<u64>().write(PATTERN) };
    register(fd, &target, REGISTER_MODE_MISSING)?;
    let mut seen = 0;
    // SAFETY: `target` is ours, registered for missing faults on `fd` (SIGBUS mode);
    // `source` holds `page` readable bytes; both outlive the call.
    let result = unsafe {
        trap::arm(
            libc::SIGBUS,
            target.addr,
            page,
            Resolve::UffdCopy {
                fd: fd.as_raw_fd(),
                source: source.addr,
            },
            || seen = std::ptr::read_volatile(target.ptr::<u64>()),
        )
    }
    .map_err(|e| ProbeFailure::os("sigaction(SIGBUS)", e.raw_os_error().unwrap_or(0), ""))?;
    check_trap(
        "SIGBUS fault resolved by UFFDIO_COPY",
        result,
        seen,
        PATTERN,
    )
}

fn check_trap(step: &str, result: trap::TrapResult, seen: u64, expected: u64) -> Probe {
    if result.resolve_errno != 0 {
        return Err(ProbeFailure::os(
            step,
            result.resolve_errno,
            "the handler could not resolve the fault",
        ));
    }
    if result.hits != 1 {
        return Err(ProbeFailure::logic(
            step,
            format!("expected 1 fault, saw {}", result.hits),
        ));
    }
    if seen != expected {
        return Err(ProbeFailure::logic(
            step,
            format!("read {seen:#x}, expected {expected:#x}"),
        ));
    }
    Ok(())
}

/// Write protection: register MISSING|WP, fill the page, protect and unprotect it.
fn probe_write_protect(fd: &OwnedFd, page: usize) -> Probe {
    handshake(fd, FEATURE_SIGBUS | FEATURE_PAGEFAULT_FLAG_WP)?;
    let target = Mapping::new(
        page,
        libc::PROT_READ | libc::PROT_WRITE,
        "write-protect probe",
    )?;
    let source = Mapping::new(
        page,
        libc::PROT_READ | libc::PROT_WRITE,
        "write-protect probe",
    )?;
    let reg = register(fd, &target, REGISTER_MODE_MISSING | REGISTER_MODE_WP)?;
    if reg.ioctls & (1 << NR_WRITEPROTECT) == 0 {
        return Err(ProbeFailure::logic(
            "UFFDIO_REGISTER mode WP",
            "UFFDIO_WRITEPROTECT not offered on the range",
        ));
    }
    let mut copy = UffdioCopy {
        dst: target.addr as u64,
        src: source.addr as u64,
        len: page as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: the destination is registered and missing; the source is our readable page.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_COPY as _, &mut copy) } != 0 {
        return Err(ProbeFailure::last_os("UFFDIO_COPY", ""));
    }
    for (mode, step) in [
        (1u64, "UFFDIO_WRITEPROTECT (protect)"),
        (0, "UFFDIO_WRITEPROTECT (unprotect)"),
    ] {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: target.addr as u64,
                len: page as u64,
            },
            mode,
        };
        // SAFETY: the range is registered with MODE_WP and populated.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, &mut wp) } != 0 {
            return Err(ProbeFailure::last_os(step, ""));
        }
    }
    Ok(())
}

/// A kernel-mode fault: `read(2)` from a pipe into a registered, missing page blocks in the
/// kernel until a handler thread (poll + read of the uffd message + UFFDIO_COPY) fills it.
fn probe_kernel_fault(fd: OwnedFd, page: usize) -> Probe {
    let step = "kernel-mode fault (read(2) into a registered page) served by a handler thread";
    let target = Mapping::new(page, libc::PROT_READ | libc::PROT_WRITE, step)?;
    register(&fd, &target, REGISTER_MODE_MISSING)?;
    let mut pipe = [0 as libc::c_int; 2];
    // SAFETY: `pipe` has room for two fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ProbeFailure::last_os("pipe2", ""));
    }
    // SAFETY: both fds are fresh and ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let bytes = PATTERN.to_ne_bytes();
    // SAFETY: writing 8 bytes from a live array into our pipe.
    if unsafe { libc::write(wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) } != 8 {
        return Err(ProbeFailure::last_os("write(pipe)", ""));
    }

    let target_addr = target.addr;
    // The handler thread owns the uffd: if it gives up, dropping the fd releases the
    // userfaultfd, which wakes the blocked read(2) (the range is unregistered on release).
    let handler = std::thread::spawn(move || -> Probe {
        let step = "uffd handler thread";
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = Duration::from_secs(2).as_millis() as libc::c_int;
        // SAFETY: `pfd` is valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n != 1 {
            return Err(ProbeFailure::logic(step, "no fault message within 2 s"));
        }
        let mut msg = UffdMsg::default();
        let want = std::mem::size_of::<UffdMsg>();
        // SAFETY: reading one `struct uffd_msg` into a properly sized, aligned value.
        let got = unsafe { libc::read(fd.as_raw_fd(), (&mut msg as *mut UffdMsg).cast(), want) };
        if got != want as isize {
            return Err(ProbeFailure::last_os("read(uffd)", ""));
        }
        if msg.event != UFFD_EVENT_PAGEFAULT {
            return Err(ProbeFailure::logic(
                step,
                format!("unexpected event {:#x}", msg.event),
            ));
        }
        let source = Mapping::new(page, libc::PROT_READ | libc::PROT_WRITE, step)?;
        let mut copy = UffdioCopy {
            dst: (msg.arg[1] as usize & !(page - 1)) as u64,
            src: source.addr as u64,
            len: page as u64,
            mode: 0,
            copy: 0,
        };
        if copy.dst != target_addr as u64 {
            return Err(ProbeFailure::logic(
                step,
                "fault reported at an unexpected address",
            ));
        }
        // SAFETY: the destination is the registered, missing page; the source is ours.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_COPY as _, &mut copy) } != 0 {
            return Err(ProbeFailure::last_os("UFFDIO_COPY (handler thread)", ""));
        }
        Ok(())
    });

    // SAFETY: reading at most 8 bytes into our own page-sized mapping.
    let got = unsafe { libc::read(rd.as_raw_fd(), target.ptr(), 8) };
    let read_errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let served = handler
        .join()
        .unwrap_or_else(|_| Err(ProbeFailure::logic(step, "handler thread panicked")));
    served?;
    if got != 8 {
        return Err(ProbeFailure::os(
            "read(2) into the registered page",
            read_errno,
            "",
        ));
    }
    // SAFETY: the page is now populated and ours.
    let seen = unsafe { std::ptr::read_volatile(target.ptr::<u64>()) };
    if seen != PATTERN {
        return Err(ProbeFailure::logic(
            step,
            format!("read {seen:#x}, expected {PATTERN:#x}"),
        ));
    }
    Ok(())
}

/// SIGSEGV + mprotect: a PROT_NONE page, touched, made accessible by the handler.
fn probe_signal_mprotect(page: usize) -> Probe {
    let target = Mapping::new(page, libc::PROT_NONE, "signal + mprotect probe")?;
    // SAFETY: `target` is our own PROT_NONE page; the handler only mprotects it.
    let result = unsafe {
        trap::arm(libc::SIGSEGV, target.addr, page, Resolve::Mprotect, || {
            std::ptr::write_volatile(target.ptr::<u64>(), PATTERN)
        })
    }
    .map_err(|e| ProbeFailure::os("sigaction(SIGSEGV)", e.raw_os_error().unwrap_or(0), ""))?;
    // SAFETY: the page is now readable and ours.
    let seen = unsafe { std::ptr::read_volatile(target.ptr::<u64>()) };
    check_trap("SIGSEGV fault resolved by mprotect", result, seen, PATTERN)
}

/// `/proc/self/mem`: pwrite into a PROT_READ page of our own, then read it back.
fn probe_proc_self_mem(page: usize) -> Probe {
    let step = "pwrite(/proc/self/mem) into a read-only page";
    let target = Mapping::new(page, libc::PROT_READ, step)?;
    // SAFETY: the path is a NUL-terminated literal.
    let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(ProbeFailure::last_os(
            "open(/proc/self/mem, O_RDWR)",
            "procfs missing or hidepid/LSM policy",
        ));
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let bytes = PATTERN.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live array to our own mapping through procfs.
    let n = unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            8,
            target.addr as libc::off_t,
        )
    };
    if n != 8 {
        return Err(ProbeFailure::last_os(
            step,
            "the kernel may restrict /proc/pid/mem writes (proc_mem.force_override)",
        ));
    }
    // SAFETY: the page is readable and ours.
    let seen = unsafe { std::ptr::read_volatile(target.ptr::<u64>()) };
    if seen != PATTERN {
        return Err(ProbeFailure::logic(
            step,
            format!("read back {seen:#x}, expected {PATTERN:#x}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_what_and_why() {
        let f = ProbeFailure::os("userfaultfd(0)", libc::EPERM, "needs privilege");
        let s = f.to_string();
        assert!(s.starts_with("userfaultfd(0) failed: "), "{s}");
        assert!(s.contains("needs privilege"), "{s}");
    }

    #[test]
    fn probes_run_and_signal_handlers_are_restored() {
        // SAFETY: querying the current actions only.
        let before = unsafe {
            let mut segv: libc::sigaction = std::mem::zeroed();
            let mut bus: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut segv);
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut bus);
            (segv.sa_sigaction, bus.sa_sigaction)
        };
        let probe = FaultProbe::run();
        assert!(probe.page_size >= 4096);
        // SAFETY: as above.
        let after = unsafe {
            let mut segv: libc::sigaction = std::mem::zeroed();
            let mut bus: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut segv);
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut bus);
            (segv.sa_sigaction, bus.sa_sigaction)
        };
        assert_eq!(before, after);
    }
}
