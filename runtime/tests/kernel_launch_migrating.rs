//! Kernels on shared pointers with blocks migrating into device frames (`UNIMEM_IN_PLACE=off`).
//! Cases in `kernel_launch/cases.rs`.
const ACCESS: Option<&str> = None;
const MIGRATING: bool = true;
mod kernel_common;
#[path = "kernel_launch/cases.rs"]
mod cases;
