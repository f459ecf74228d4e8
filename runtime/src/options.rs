//! The runtime's environment options: one table, read lazily, printed by `unimem info`.
//!
//! Every `UNIMEM_*` variable the runtime crate reads is declared here, once, with its default
//! and meaning; code reads a variable only through [`EnvOption::value`]. (The allocator and
//! the shim keep their own options; when the project-wide options table lands these entries
//! move into it unchanged.)

use crate::faults::protect::FaultMode;

/// One environment option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvOption {
    /// The variable name, `UNIMEM_...`.
    pub name: &'static str,
    /// What happens when the variable is unset, for people.
    pub default: &'static str,
    /// What the variable does, for people.
    pub help: &'static str,
}

impl EnvOption {
    /// The variable's value, `None` when unset or empty. Non-UTF-8 values are converted
    /// lossily (they can only be paths, and the loader gets them verbatim through
    /// [`EnvOption::value_os`]).
    pub fn value(&self) -> Option<String> {
        self.value_os().map(|v| v.to_string_lossy().into_owned())
    }

    /// The raw value, `None` when unset or empty.
    pub fn value_os(&self) -> Option<std::ffi::OsString> {
        std::env::var_os(self.name).filter(|v| !v.is_empty())
    }
}

/// `UNIMEM_DEVICE`: which Vulkan device to use.
pub const DEVICE: EnvOption = EnvOption {
    name: "UNIMEM_DEVICE",
    default: "a discrete GPU if present, else the first Vulkan 1.2+ device with a compute queue",
    help: "device index (as listed by `unimem info`) or a case-insensitive part of its name",
};

/// `UNIMEM_VULKAN_LIBRARY`: the Vulkan loader to load instead of the system's.
pub const VULKAN_LIBRARY: EnvOption = EnvOption {
    name: "UNIMEM_VULKAN_LIBRARY",
    default: "libvulkan.so.1 from the dynamic linker's search path",
    help: "path of the Vulkan loader library to load at run time",
};

/// `UNIMEM_REQUIRE_DEVICE`: turn "no device" from a skip into a failure in tests.
pub const REQUIRE_DEVICE: EnvOption = EnvOption {
    name: "UNIMEM_REQUIRE_DEVICE",
    default: "0: tests that need a Vulkan device print a notice and pass when there is none",
    help: "1: tests that need a Vulkan device fail when there is none (set this in CI)",
};

/// `UNIMEM_BLOCK_SIZE`: the migration unit.
pub const BLOCK_SIZE: EnvOption = EnvOption {
    name: "UNIMEM_BLOCK_SIZE",
    default: "64K",
    help: "bytes per migration block (= per device frame): a power of two from 4K to 16M",
};

/// `UNIMEM_DEVICE_MEMORY`: the size of the device frame pool.
pub const DEVICE_MEMORY: EnvOption = EnvOption {
    name: "UNIMEM_DEVICE_MEMORY",
    default: "1/4 of the largest DEVICE_LOCAL heap, at most 1G",
    help: "bytes of device memory for block frames (rounded down to whole blocks, at least one)",
};

/// `UNIMEM_DEVICE_COPY`: how blocks move between host and device.
pub const DEVICE_COPY: EnvOption = EnvOption {
    name: "UNIMEM_DEVICE_COPY",
    default: "auto: direct when frames can live in host-visible, host-cached device memory, else staging",
    help: "auto | direct (memcpy into mapped frames) | staging (vkCmdCopyBuffer through a staging ring)",
};

/// `UNIMEM_IN_PLACE`: whether kernels access host memory in place instead of migrating it.
pub const IN_PLACE: EnvOption = EnvOption {
    name: "UNIMEM_IN_PLACE",
    default: "auto: on when the device shares the CPU's memory (a CPU or integrated device) and can import host memory (VK_EXT_external_memory_host)",
    help: "auto | on (kernels read and write host RAM in place; fails without VK_EXT_external_memory_host) | off (blocks migrate into device frames)",
};

/// `UNIMEM_IN_PLACE_ACCESS`: how in-place kernels reach the heap.
pub const IN_PLACE_ACCESS: EnvOption = EnvOption {
    name: "UNIMEM_IN_PLACE_ACCESS",
    default: "auto: windows while the heap needs at most two, then addresses where the device's addresses of imported host memory are the host addresses (lavapipe), else windows",
    help: "auto | addresses (every access loads at the host address itself, through a physical pointer; no limit on the heap's size; fails where the device's addresses differ) | windows (the heap is bound as storage buffers, one per window, as many as a shader may bind)",
};

/// `UNIMEM_DISCOVER`: whether a launch walks its arguments' data for pointers to prefetch.
pub const DISCOVER: EnvOption = EnvOption {
    name: "UNIMEM_DISCOVER",
    default: "on",
    help: "on | off: before a launch in migrating mode, scan the data the pointer arguments point to for pointers into the heap, transitively, and prefetch the blocks they reach (kernel/discover.rs); off: prefetch only the arguments' own allocations",
};

/// `UNIMEM_LOOP_GUARD`: whether kernels count their loop iterations (`kernel/guard.rs`).
pub const LOOP_GUARD: EnvOption = EnvOption {
    name: "UNIMEM_LOOP_GUARD",
    default: "on",
    help: "on | off, read when a kernel is created. on: every loop of the kernel's code counts its iterations against the step limit, so that an endless loop ends the launch with an error naming the invocation instead of hanging the device until the driver declares it lost; off: loops run unguarded (faster tight loops; lavapipe still cuts loops after 65535 iterations, an error naming one of the invocations it runs together, 8 on 256-bit vectors)",
};

/// `UNIMEM_CHECK_OBJECTS`: whether kernels check accesses against live allocations
/// (`kernel/objects.rs`).
pub const CHECK_OBJECTS: EnvOption = EnvOption {
    name: "UNIMEM_CHECK_OBJECTS",
    default: "off",
    help: "on | off, read when a kernel is created. on: every access of the kernel is checked against the allocations live when its launch began, so a pointer into freed memory, or past the end of an allocation into free space, ends the launch with an error even in a block that still holds live objects (off: only blocks holding no live allocation are caught). Costs a bitmap load per access and a pass over the heap's allocations per launch (docs/PERFORMANCE.md)",
};

/// `UNIMEM_FAULTS`: the CPU fault mechanism coherence uses.
pub const FAULTS: EnvOption = EnvOption {
    name: "UNIMEM_FAULTS",
    default: "auto: userfaultfd (SIGBUS mode) if this process can use it, else mprotect + SIGSEGV",
    help: "auto | uffd | mprotect",
};

/// Every option of the runtime crate, in the order `unimem info` prints them.
pub const ALL: &[EnvOption] = &[
    DEVICE,
    VULKAN_LIBRARY,
    REQUIRE_DEVICE,
    BLOCK_SIZE,
    DEVICE_MEMORY,
    DEVICE_COPY,
    IN_PLACE,
    IN_PLACE_ACCESS,
    DISCOVER,
    LOOP_GUARD,
    CHECK_OBJECTS,
    FAULTS,
];

/// Checks the value of `opt` (one of [`ALL`]) as the code that reads it does: `Err` says
/// what is wrong and what is accepted. `UNIMEM_DEVICE` and `UNIMEM_VULKAN_LIBRARY` are
/// checked only when the device is opened (their values name devices and files).
pub fn validate(opt: &EnvOption) -> Result<(), String> {
    let name = opt.name;
    match () {
        _ if name == REQUIRE_DEVICE.name => require_device().map(drop),
        _ if name == BLOCK_SIZE.name => block_size().map(drop),
        _ if name == DEVICE_MEMORY.name => device_memory().map(drop),
        _ if name == DEVICE_COPY.name => device_copy().map(drop),
        _ if name == IN_PLACE.name => in_place().map(drop),
        _ if name == IN_PLACE_ACCESS.name => in_place_access().map(drop),
        _ if name == DISCOVER.name => discover().map(drop),
        _ if name == LOOP_GUARD.name => loop_guard().map(drop),
        _ if name == CHECK_OBJECTS.name => check_objects().map(drop),
        _ if name == FAULTS.name => faults().map(drop),
        _ => Ok(()),
    }
}

/// Smallest accepted `UNIMEM_BLOCK_SIZE` (one host page).
pub const MIN_BLOCK_SIZE: u64 = 4 << 10;
/// Largest accepted `UNIMEM_BLOCK_SIZE`.
pub const MAX_BLOCK_SIZE: u64 = 16 << 20;
/// `UNIMEM_BLOCK_SIZE` when unset.
pub const DEFAULT_BLOCK_SIZE: u64 = 64 << 10;

/// Parses a byte count as the allocator does: decimal with an optional `K`, `M`, `G` or `T`
/// suffix (powers of 1024), within `min..=max`. `None` when malformed or out of range.
pub fn parse_bytes(text: &str, min: u64, max: u64) -> Option<u64> {
    let opt = unimem_alloc::options::Opt {
        name: "",
        kind: unimem_alloc::options::Kind::Bytes,
        default: 0,
        min,
        max,
        doc: "",
    };
    unimem_alloc::options::parse(&opt, text.trim().as_bytes())
}

/// `UNIMEM_BLOCK_SIZE`, validated: `Err` says what is wrong and what is accepted.
pub fn block_size() -> Result<usize, String> {
    let Some(text) = BLOCK_SIZE.value() else {
        return Ok(DEFAULT_BLOCK_SIZE as usize);
    };
    match parse_bytes(&text, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE) {
        Some(v) if v.is_power_of_two() => Ok(v as usize),
        _ => Err(format!(
            "{}={text:?} is not a power of two from 4K to 16M; set it to e.g. 64K, or unset it",
            BLOCK_SIZE.name
        )),
    }
}

/// `UNIMEM_DEVICE_MEMORY`, validated (`Ok(None)`: unset, use the default share).
pub fn device_memory() -> Result<Option<u64>, String> {
    let Some(text) = DEVICE_MEMORY.value() else {
        return Ok(None);
    };
    parse_bytes(&text, 1, u64::MAX).map(Some).ok_or_else(|| {
        format!(
            "{}={text:?} is not a byte count; set it to e.g. 256M or 1G, or unset it",
            DEVICE_MEMORY.name
        )
    })
}

/// The values of `UNIMEM_DEVICE_COPY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Direct when the frames' memory suits it, else staging.
    Auto,
    /// memcpy into persistently mapped frames.
    Direct,
    /// Unmapped frames, a host-visible staging ring and `vkCmdCopyBuffer`.
    Staging,
}

/// `UNIMEM_DEVICE_COPY`, validated.
pub fn device_copy() -> Result<CopyMode, String> {
    choose(
        &DEVICE_COPY,
        CopyMode::Auto,
        &[(&["auto"], CopyMode::Auto), (&["direct"], CopyMode::Direct), (&["staging"], CopyMode::Staging)],
    )
}

/// The value of the keyword option `opt`: the value of the first of `choices` (its accepted
/// spellings, its value) that lists the variable's text, trimmed and compared in lower case;
/// `default` when the variable is unset. `Err` names the variable, its text, and the first
/// spelling of each choice.
fn choose<T: Copy>(opt: &EnvOption, default: T, choices: &[(&[&str], T)]) -> Result<T, String> {
    let Some(text) = opt.value() else {
        return Ok(default);
    };
    let key = text.trim().to_ascii_lowercase();
    if let Some(&(_, v)) = choices.iter().find(|(spellings, _)| spellings.contains(&key.as_str())) {
        return Ok(v);
    }
    let names: Vec<&str> = choices.iter().map(|(spellings, _)| spellings[0]).collect();
    Err(format!("{}={text:?} is not one of {}; set one of those or unset it", opt.name, names.join(", ")))
}

/// The values of `UNIMEM_IN_PLACE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlaceMode {
    /// In place on devices that share the CPU's memory and can import it.
    Auto,
    /// Always in place (an error on devices that cannot import host memory).
    On,
    /// Never: blocks migrate into device frames.
    Off,
}

/// `UNIMEM_IN_PLACE`, validated.
pub fn in_place() -> Result<InPlaceMode, String> {
    choose(
        &IN_PLACE,
        InPlaceMode::Auto,
        &[(&["auto"], InPlaceMode::Auto), (&["on", "1", "yes"], InPlaceMode::On), (&["off", "0", "no"], InPlaceMode::Off)],
    )
}

/// The values of `UNIMEM_IN_PLACE_ACCESS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlaceAccess {
    /// Addresses where the device's addresses of the imported heap are the host's, else
    /// windows.
    Auto,
    /// Always addresses (a launch fails where the device's addresses differ).
    Addresses,
    /// Always windows bound as storage buffers.
    Windows,
}

/// `UNIMEM_IN_PLACE_ACCESS`, validated.
pub fn in_place_access() -> Result<InPlaceAccess, String> {
    choose(
        &IN_PLACE_ACCESS,
        InPlaceAccess::Auto,
        &[(&["auto"], InPlaceAccess::Auto), (&["addresses"], InPlaceAccess::Addresses), (&["windows"], InPlaceAccess::Windows)],
    )
}

/// `UNIMEM_DISCOVER`, validated: whether launches walk their arguments' data (default on).
pub fn discover() -> Result<bool, String> {
    on_off(&DISCOVER, true)
}

/// `UNIMEM_LOOP_GUARD`, validated: whether new kernels guard their loops (default on).
pub fn loop_guard() -> Result<bool, String> {
    on_off(&LOOP_GUARD, true)
}

/// `UNIMEM_CHECK_OBJECTS`, validated: whether new kernels check objects (default off).
pub fn check_objects() -> Result<bool, String> {
    on_off(&CHECK_OBJECTS, false)
}

/// `UNIMEM_REQUIRE_DEVICE`, validated: whether tests fail without a device (default off).
pub fn require_device() -> Result<bool, String> {
    on_off(&REQUIRE_DEVICE, false)
}

/// `UNIMEM_FAULTS`, validated: the fault mechanism asked for (`None`: auto, the fastest
/// this process can use).
pub fn faults() -> Result<Option<FaultMode>, String> {
    choose(&FAULTS, None, &[(&["auto"], None), (&["uffd"], Some(FaultMode::Uffd)), (&["mprotect"], Some(FaultMode::Mprotect))])
}

/// The on/off option `opt` (`on`, `1`, `yes`, `true`; `off`, `0`, `no`, `false`), `default`
/// when unset.
fn on_off(opt: &EnvOption, default: bool) -> Result<bool, String> {
    choose(opt, default, &[(&["on", "1", "yes", "true"], true), (&["off", "0", "no", "false"], false)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_options_accept_their_spellings_and_name_them_when_wrong() {
        let opt = EnvOption { name: "UNIMEM_TEST_KEYWORD_OPTION", default: "", help: "" };
        let choices: &[(&[&str], u8)] = &[(&["auto"], 0), (&["on", "1"], 1), (&["off"], 2)];
        assert_eq!(choose(&opt, 9, choices), Ok(9));
        std::env::set_var(opt.name, " ON ");
        assert_eq!(choose(&opt, 9, choices), Ok(1));
        std::env::set_var(opt.name, "1");
        assert_eq!(choose(&opt, 9, choices), Ok(1));
        std::env::set_var(opt.name, "sometimes");
        assert_eq!(
            choose(&opt, 9, choices),
            Err("UNIMEM_TEST_KEYWORD_OPTION=\"sometimes\" is not one of auto, on, off; set one of those or unset it".into())
        );
        std::env::remove_var(opt.name);
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.name.starts_with("UNIMEM_"), "{}", a.name);
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn byte_counts_parse_like_the_allocator() {
        assert_eq!(parse_bytes("64K", 1, u64::MAX), Some(64 << 10));
        assert_eq!(parse_bytes(" 2m ", 1, u64::MAX), Some(2 << 20));
        assert_eq!(parse_bytes("4096", 1, u64::MAX), Some(4096));
        assert_eq!(parse_bytes("1G", 1, 1 << 20), None);
        assert_eq!(parse_bytes("12Q", 1, u64::MAX), None);
        assert_eq!(parse_bytes("", 1, u64::MAX), None);
    }
}
