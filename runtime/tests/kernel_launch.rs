//! Kernels on shared pointers in the device's default mode (in place where the device shares
//! the CPU's memory, as lavapipe does). Cases in `kernel_launch/cases.rs`.
const ACCESS: Option<&str> = None;
const MIGRATING: bool = false;
mod kernel_common;
#[path = "kernel_launch/cases.rs"]
mod cases;
