//! The runtime's environment options: one table, read lazily, printed by `unimem info`.
//!
//! Every `UNIMEM_*` variable the runtime crate reads is declared here, once, with its default
//! and meaning; code reads a variable only through [`EnvOption::value`]. (The allocator and
//! the shim keep their own options; when the project-wide options table lands these entries
//! move into it unchanged.)

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

    /// True when the variable is set to `1`, `true`, `yes` or `on` (case-insensitive).
    pub fn is_enabled(&self) -> bool {
        self.value()
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false)
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

/// Every option of the runtime crate, in the order `unimem info` prints them.
pub const ALL: &[EnvOption] = &[DEVICE, VULKAN_LIBRARY, REQUIRE_DEVICE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.name.starts_with("UNIMEM_"), "{}", a.name);
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }
}
