//! The one rule for tests that need a Vulkan device.
//!
//! With `UNIMEM_REQUIRE_DEVICE=1` (CI), a missing device is a test *failure*. Without it, a
//! test on a machine with no usable device prints a notice and returns (counts as passed).
//! Only "no device here" errors ([`DeviceError::is_unavailable`]) may be skipped; a device
//! that exists but fails is always a failure.

use super::{Device, DeviceError};
use crate::options;

/// True when tests must fail rather than skip without a device (`UNIMEM_REQUIRE_DEVICE=1`).
/// Panics on a value that is neither on nor off, naming it: a misspelt `1` must not turn
/// failures back into skips.
pub fn device_required() -> bool {
    options::require_device().unwrap_or_else(|e| panic!("{e}"))
}

/// Applies the rule to any result: `Some(value)` on success; on an "unavailable" error,
/// panics when a device is required, else prints a notice naming `test` and returns `None`.
/// Any other error panics.
#[track_caller]
pub fn or_skip<T>(test: &str, result: Result<T, DeviceError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) if e.is_unavailable() && !device_required() => {
            eprintln!(
                "notice: {test}: skipped, no usable Vulkan device ({e}); set {}=1 to make this a failure",
                options::REQUIRE_DEVICE.name
            );
            None
        }
        Err(e) if e.is_unavailable() => panic!(
            "{test}: {}=1 but there is no usable Vulkan device: {e}",
            options::REQUIRE_DEVICE.name
        ),
        Err(e) => panic!("{test}: the Vulkan device failed: {e}"),
    }
}

/// Opens the default device for `test`, following the rule. Use as
/// `let Some(device) = test_device("my_test") else { return };`.
#[track_caller]
pub fn test_device(test: &str) -> Option<Device> {
    or_skip(test, Device::open())
}

/// Panics when the validation layer reported an error anywhere in this process so far
/// (messages are on stderr). A no-op when validation is off (release builds, layer absent).
#[track_caller]
pub fn assert_no_validation_errors(test: &str) {
    let errors = super::validation_errors();
    assert_eq!(
        errors, 0,
        "{test}: the Vulkan validation layer reported {errors} error(s); see stderr"
    );
}

/// The rule for results of the runtime API (`unimem::Kernel::new`, `unimem::runtime`, ...):
/// `Some(value)` on success; a device error goes through [`or_skip`]; "the runtime failed to
/// start earlier" (a later test in the same process) is re-checked by opening a device, so
/// that it skips exactly when the first failure was "no device". Any other error panics.
#[track_caller]
pub fn runtime_or_skip<T>(test: &str, result: Result<T, crate::Error>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(crate::Error::Device(e)) => or_skip(test, Err(e)),
        Err(e @ crate::Error::StartFailed(_)) => {
            or_skip(test, Device::open())?;
            panic!("{test}: a device opens, but the runtime did not start: {e}")
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// A kernel `spin` that loops `n` times (its immediate) over a 1024-word storage buffer at
/// binding 0: with a large `n` it outlives any dispatch timeout, which is how tests lose a
/// device on purpose (lavapipe never reports a real device loss).
pub const SPIN_WGSL: &str = r#"
var<immediate> n: u32;
@group(0) @binding(0) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(64)
fn spin(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = id.x;
    for (var i = 0u; i < n; i++) {
        acc = o[(acc ^ i) & 1023u] + acc * 1664525u + i;
    }
    o[id.x & 1023u] = acc;
}
"#;
