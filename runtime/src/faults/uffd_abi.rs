//! The userfaultfd kernel ABI: syscall flags, ioctl numbers, structs and feature bits,
//! transcribed from `<linux/userfaultfd.h>` (the libc crate does not carry them).
//!
//! ioctl numbers use the asm-generic `_IOC` encoding (x86, x86_64, arm, aarch64, riscv,
//! loongarch, s390): `dir << 30 | size << 16 | type << 8 | nr`, with `_IOC_WRITE = 1` and
//! `_IOC_READ = 2`. The test `uffd_abi_matches_the_c_header` (runtime/tests) compiles a C
//! program against the installed header and compares every value and struct size.

/// `UFFD_USER_MODE_ONLY`: the fd only handles faults raised in user mode. Allowed without
/// privilege even when `vm.unprivileged_userfaultfd = 0` (since Linux 5.11).
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;

/// `UFFD_API`: the API version passed to `UFFDIO_API`.
pub const UFFD_API: u64 = 0xAA;

/// `USERFAULTFD_IOC`, the ioctl type of `/dev/userfaultfd` and of uffd file descriptors.
pub const UFFDIO: u64 = 0xAA;

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, type, nr, size)` in the asm-generic encoding.
const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}

/// `struct uffdio_api`: handshake, in: `api`, requested `features`; out: all features the
/// kernel supports and the ioctls available on the fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdioApi {
    /// Must be [`UFFD_API`].
    pub api: u64,
    /// In: features to enable. Out: features supported.
    pub features: u64,
    /// Out: bitmask of `1 << _UFFDIO_*` ioctls usable on the fd.
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdioRange {
    /// Page-aligned start address.
    pub start: u64,
    /// Length in bytes, a multiple of the page size.
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdioRegister {
    /// The range to register.
    pub range: UffdioRange,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// Out: bitmask of `1 << _UFFDIO_*` ioctls usable on the range.
    pub ioctls: u64,
}

/// `struct uffdio_copy`: atomically fill missing pages from a source buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdioCopy {
    /// Destination (registered, page-aligned).
    pub dst: u64,
    /// Source buffer.
    pub src: u64,
    /// Length in bytes, a multiple of the page size.
    pub len: u64,
    /// `UFFDIO_COPY_MODE_*`.
    pub mode: u64,
    /// Out: bytes copied, or a negative errno.
    pub copy: i64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdioWriteprotect {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_WRITEPROTECT_MODE_*`.
    pub mode: u64,
}

/// `struct uffd_msg`: what `read(2)` on a uffd in message mode returns (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdMsg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Reserved.
    pub reserved2: u16,
    /// Reserved.
    pub reserved3: u32,
    /// The event's union; for `UFFD_EVENT_PAGEFAULT`: `[flags, address, ptid]`.
    pub arg: [u64; 3],
}

/// `UFFD_EVENT_PAGEFAULT`.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// ioctl numbers within the `UFFDIO` type (`_UFFDIO_*`), also bit positions in `ioctls` masks.
pub const NR_REGISTER: u64 = 0x00;
/// `_UFFDIO_UNREGISTER`.
pub const NR_UNREGISTER: u64 = 0x01;
/// `_UFFDIO_WAKE`.
pub const NR_WAKE: u64 = 0x02;
/// `_UFFDIO_COPY`.
pub const NR_COPY: u64 = 0x03;
/// `_UFFDIO_ZEROPAGE`.
pub const NR_ZEROPAGE: u64 = 0x04;
/// `_UFFDIO_WRITEPROTECT`.
pub const NR_WRITEPROTECT: u64 = 0x06;
/// `_UFFDIO_CONTINUE`.
pub const NR_CONTINUE: u64 = 0x07;
/// `_UFFDIO_API`.
pub const NR_API: u64 = 0x3F;

/// `UFFDIO_API = _IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api)`.
pub const UFFDIO_API: u64 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    NR_API,
    std::mem::size_of::<UffdioApi>(),
);
/// `UFFDIO_REGISTER = _IOWR(UFFDIO, _UFFDIO_REGISTER, struct uffdio_register)`.
pub const UFFDIO_REGISTER: u64 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    NR_REGISTER,
    std::mem::size_of::<UffdioRegister>(),
);
/// `UFFDIO_UNREGISTER = _IOR(UFFDIO, _UFFDIO_UNREGISTER, struct uffdio_range)`.
pub const UFFDIO_UNREGISTER: u64 = ioc(
    IOC_READ,
    UFFDIO,
    NR_UNREGISTER,
    std::mem::size_of::<UffdioRange>(),
);
/// `UFFDIO_WAKE = _IOR(UFFDIO, _UFFDIO_WAKE, struct uffdio_range)`.
pub const UFFDIO_WAKE: u64 = ioc(
    IOC_READ,
    UFFDIO,
    NR_WAKE,
    std::mem::size_of::<UffdioRange>(),
);
/// `UFFDIO_COPY = _IOWR(UFFDIO, _UFFDIO_COPY, struct uffdio_copy)`.
pub const UFFDIO_COPY: u64 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    NR_COPY,
    std::mem::size_of::<UffdioCopy>(),
);
/// `UFFDIO_WRITEPROTECT = _IOWR(UFFDIO, _UFFDIO_WRITEPROTECT, struct uffdio_writeprotect)`.
pub const UFFDIO_WRITEPROTECT: u64 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    NR_WRITEPROTECT,
    std::mem::size_of::<UffdioWriteprotect>(),
);
/// `USERFAULTFD_IOC_NEW = _IO(USERFAULTFD_IOC, 0x00)`: on `/dev/userfaultfd`, creates a uffd;
/// the argument is the flags `userfaultfd(2)` would take.
pub const USERFAULTFD_IOC_NEW: u64 = ioc(0, UFFDIO, 0x00, 0);

/// `UFFDIO_REGISTER_MODE_MISSING`: report faults on missing pages.
pub const REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_REGISTER_MODE_WP`: report writes to write-protected pages.
pub const REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_REGISTER_MODE_MINOR`: report minor faults (shmem/hugetlbfs).
pub const REGISTER_MODE_MINOR: u64 = 1 << 2;

/// `UFFD_FEATURE_*` bits, with their names, lowest bit first. Bits above 12 are newer than
/// some installed headers (Debian 12 stops at `WP_HUGETLBFS_SHMEM`); their values come from
/// the kernel's `include/uapi/linux/userfaultfd.h`.
pub const FEATURES: &[(u64, &str)] = &[
    (1 << 0, "PAGEFAULT_FLAG_WP"),
    (1 << 1, "EVENT_FORK"),
    (1 << 2, "EVENT_REMAP"),
    (1 << 3, "EVENT_REMOVE"),
    (1 << 4, "MISSING_HUGETLBFS"),
    (1 << 5, "MISSING_SHMEM"),
    (1 << 6, "EVENT_UNMAP"),
    (1 << 7, "SIGBUS"),
    (1 << 8, "THREAD_ID"),
    (1 << 9, "MINOR_HUGETLBFS"),
    (1 << 10, "MINOR_SHMEM"),
    (1 << 11, "EXACT_ADDRESS"),
    (1 << 12, "WP_HUGETLBFS_SHMEM"),
    (1 << 13, "WP_UNPOPULATED"),
    (1 << 14, "POISON"),
    (1 << 15, "WP_ASYNC"),
    (1 << 16, "MOVE"),
];

/// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`: write-protect faults are supported.
pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// `UFFD_FEATURE_SIGBUS`: faults raise SIGBUS in the faulting thread instead of queueing a
/// message, so the thread can resolve its own fault (no handler thread).
pub const FEATURE_SIGBUS: u64 = 1 << 7;
/// `UFFD_FEATURE_THREAD_ID`: messages carry the faulting thread's id.
pub const FEATURE_THREAD_ID: u64 = 1 << 8;
/// `UFFD_FEATURE_WP_UNPOPULATED`: write-protect also applies to never-touched anonymous pages.
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;

/// Names of the feature bits set in `features` (unknown bits as `bit N`).
pub fn feature_names(features: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| features & (1u64 << bit) != 0)
        .map(|bit| {
            FEATURES
                .iter()
                .find(|(v, _)| *v == 1u64 << bit)
                .map(|(_, n)| (*n).to_owned())
                .unwrap_or_else(|| format!("bit {bit}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRange>(), 16);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioWriteprotect>(), 24);
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn ioctl_numbers_match_known_values() {
        // Values as printed by a C program on x86_64 with <linux/userfaultfd.h>.
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_aa01);
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xc018_aa06);
        assert_eq!(USERFAULTFD_IOC_NEW, 0xaa00);
    }

    #[test]
    fn feature_names_cover_unknown_bits() {
        assert_eq!(
            feature_names(FEATURE_SIGBUS | FEATURE_PAGEFAULT_FLAG_WP),
            ["PAGEFAULT_FLAG_WP", "SIGBUS"]
        );
        assert_eq!(feature_names(1 << 40), ["bit 40"]);
    }
}

/// `struct uffdio_zeropage`: map the zero page over missing pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UffdioZeropage {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_ZEROPAGE_MODE_*`.
    pub mode: u64,
    /// Out: bytes mapped, or a negative errno.
    pub zeropage: i64,
}

/// `UFFDIO_ZEROPAGE = _IOWR(UFFDIO, _UFFDIO_ZEROPAGE, struct uffdio_zeropage)`.
pub const UFFDIO_ZEROPAGE: u64 = ioc(
    IOC_READ | IOC_WRITE,
    UFFDIO,
    NR_ZEROPAGE,
    std::mem::size_of::<UffdioZeropage>(),
);

/// `UFFDIO_COPY_MODE_WP`: install the copied pages write-protected.
pub const COPY_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_WRITEPROTECT_MODE_WP`: set write protection (clear it when absent).
pub const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
